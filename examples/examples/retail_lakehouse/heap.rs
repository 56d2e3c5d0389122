//! The example's global allocator: the system allocator, counting the bytes that are
//! allocated and not yet freed, so that the progress line and the report can set the
//! live heap beside the resident set size.
//!
//! At 200 K events/s the live heap held at 300-400 MB while the resident set grew to
//! three times that with glibc's default arenas (flat at 760 MB with
//! `GLIBC_TUNABLES=glibc.malloc.arena_max=2`; mimalloc held more still): see
//! BENCHMARKS.md, soak. [`limit_arenas`] sets that cap from the program itself.
//!
//! Counting costs one relaxed atomic add per allocation and per free, on one of a few
//! counters picked by the thread, so that two cores rarely share one.
#![allow(unsafe_code)]

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::sync::atomic::{AtomicIsize, AtomicUsize, Ordering};

/// Counters threads spread over (a power of two).
const SLOTS: usize = 16;

/// One counter on its own cache line.
#[repr(align(128))]
struct Slot(AtomicIsize);

#[allow(clippy::declare_interior_mutable_const)]
const ZERO: Slot = Slot(AtomicIsize::new(0));
static LIVE: [Slot; SLOTS] = [ZERO; SLOTS];
static NEXT_SLOT: AtomicUsize = AtomicUsize::new(0);

thread_local! {
    /// This thread's counter, picked on its first allocation.
    static SLOT: Cell<usize> = const { Cell::new(usize::MAX) };
}

fn slot() -> &'static AtomicIsize {
    // `try_with` fails only while the thread's locals are torn down: count those
    // (few) frees on slot 0.
    let i = SLOT
        .try_with(|s| {
            let mut i = s.get();
            if i == usize::MAX {
                i = NEXT_SLOT.fetch_add(1, Ordering::Relaxed) % SLOTS;
                s.set(i);
            }
            i
        })
        .unwrap_or(0);
    &LIVE[i].0
}

/// The system allocator, counting live bytes.
#[derive(Debug)]
pub(crate) struct Counting;

// SAFETY: every method forwards to `System` with the caller's arguments unchanged and
// only adds bookkeeping that neither allocates nor touches the memory.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: the caller's contract for `alloc` is passed on as it is.
        let p = unsafe { System.alloc(layout) };
        if !p.is_null() {
            slot().fetch_add(layout.size() as isize, Ordering::Relaxed);
        }
        p
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        // SAFETY: as for `alloc`.
        let p = unsafe { System.alloc_zeroed(layout) };
        if !p.is_null() {
            slot().fetch_add(layout.size() as isize, Ordering::Relaxed);
        }
        p
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: `ptr` and `layout` come from this allocator, that is from `System`.
        unsafe { System.dealloc(ptr, layout) };
        slot().fetch_sub(layout.size() as isize, Ordering::Relaxed);
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: as for `dealloc`; `new_size` is the caller's.
        let p = unsafe { System.realloc(ptr, layout, new_size) };
        if !p.is_null() {
            slot().fetch_add(
                new_size as isize - layout.size() as isize,
                Ordering::Relaxed,
            );
        }
        p
    }
}

/// Bytes allocated and not freed, over every thread, in megabytes.
pub(crate) fn live_mb() -> f64 {
    let bytes: isize = LIVE.iter().map(|s| s.0.load(Ordering::Relaxed)).sum();
    bytes.max(0) as f64 / (1024.0 * 1024.0)
}

/// Arenas glibc's malloc may make: each thread that allocates under contention gets an
/// arena of its own, and memory freed into one arena is not reused by another, so a
/// pipeline whose stages hand buffers across a dozen threads keeps several times its
/// live heap resident. Two arenas (one per core of the machine the example is sized
/// for) keep the resident set near the live heap.
pub(crate) const ARENA_MAX: i32 = 2;

/// Caps glibc's malloc arenas at [`ARENA_MAX`], unless the environment already sets
/// `glibc.malloc.arena_max` (`GLIBC_TUNABLES`) or `MALLOC_ARENA_MAX`. Call it first
/// in `main`, before other threads allocate. Returns whether the cap was set.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
pub(crate) fn limit_arenas() -> bool {
    let tuned = std::env::var("GLIBC_TUNABLES").is_ok_and(|t| t.contains("arena_max"))
        || std::env::var_os("MALLOC_ARENA_MAX").is_some();
    if tuned {
        return false;
    }
    // SAFETY: `mallopt` takes two integers and changes the allocator's settings; glibc
    // documents M_ARENA_MAX as settable at any time (it bounds arenas made later).
    unsafe { libc::mallopt(libc::M_ARENA_MAX, ARENA_MAX) == 1 }
}

/// Other allocators and C libraries: nothing to cap.
#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
pub(crate) fn limit_arenas() -> bool {
    false
}

/// Hands the free memory at the top of and inside glibc's arenas back to the system
/// (`malloc_trim(0)`): with two arenas the freed buffers of a compaction stay resident
/// until malloc reuses them, and the resident set creeps above the live heap. The
/// progress ticker calls it every [`TRIM_EVERY`], on a blocking thread (it walks the
/// arenas; its cost was not measured apart). Returns whether memory was released.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
pub(crate) fn trim() -> bool {
    // SAFETY: `malloc_trim` takes a byte count to keep at the top of the heap and only
    // releases pages malloc holds free; no pointer is handed over.
    unsafe { libc::malloc_trim(0) == 1 }
}

/// Other allocators and C libraries: nothing to trim.
#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
pub(crate) fn trim() -> bool {
    false
}

/// How often the progress ticker trims the heap (see [`trim`]).
pub(crate) const TRIM_EVERY: std::time::Duration = std::time::Duration::from_secs(10);
