use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Barrier};
use std::thread;
use std::time::Duration;

use lakehouse_cache::{Cache, ErrorKind};
use lakehouse_core::ManualClock;

#[test]
fn concurrent_misses_run_the_loader_once() {
    let cache: Cache<u32, u64> = Cache::new(100).unwrap();
    let calls = Arc::new(AtomicU32::new(0));
    let barrier = Arc::new(Barrier::new(8));
    let threads: Vec<_> = (0..8)
        .map(|_| {
            let (cache, calls, barrier) = (cache.clone(), calls.clone(), barrier.clone());
            thread::spawn(move || {
                barrier.wait();
                cache.get_or_load(7, |k| {
                    calls.fetch_add(1, Ordering::SeqCst);
                    thread::sleep(Duration::from_millis(50));
                    Ok::<_, std::io::Error>(u64::from(*k) * 10)
                })
            })
        })
        .collect();
    for t in threads {
        assert_eq!(t.join().unwrap().unwrap(), 70);
    }
    assert_eq!(
        calls.load(Ordering::SeqCst),
        1,
        "one loader for eight misses"
    );
    let s = cache.stats();
    assert_eq!(s.loads, 1);
    assert_eq!(s.hits + s.misses, 8, "each call counts one lookup");
    assert!(s.misses >= 1);
    assert_eq!(cache.get(&7), Some(70));
}

#[test]
fn loader_errors_reach_every_waiter_and_are_not_cached() {
    let cache: Cache<u32, u64> = Cache::new(100).unwrap();
    let barrier = Arc::new(Barrier::new(4));
    let threads: Vec<_> = (0..4)
        .map(|_| {
            let (cache, barrier) = (cache.clone(), barrier.clone());
            thread::spawn(move || {
                barrier.wait();
                cache.get_or_load(1, |_| {
                    thread::sleep(Duration::from_millis(50));
                    Err::<u64, _>(std::io::Error::other("database down"))
                })
            })
        })
        .collect();
    for t in threads {
        let err = t.join().unwrap().unwrap_err();
        assert_eq!(err.kind(), ErrorKind::External);
        assert!(err.to_string().contains("database down"));
        assert!(std::error::Error::source(&err).is_some());
    }
    // Not cached: the next call loads again.
    assert_eq!(
        cache
            .get_or_load(1, |_| Ok::<_, std::io::Error>(5))
            .unwrap(),
        5
    );
    assert_eq!(cache.stats().load_failures, 1);
}

#[test]
fn negative_caching_remembers_failures_for_a_while() {
    let clock = ManualClock::at_millis(0);
    let cache: Cache<u32, u64> = Cache::builder()
        .max_entries(10)
        .negative_ttl(Duration::from_secs(2))
        .clock(Arc::new(clock.clone()))
        .build()
        .unwrap();
    let calls = AtomicU32::new(0);
    let load = |_: &u32| {
        calls.fetch_add(1, Ordering::SeqCst);
        Err::<u64, _>(std::io::Error::other("nope"))
    };
    assert!(cache.get_or_load(1, load).is_err());
    assert!(cache.get_or_load(1, load).is_err());
    assert_eq!(calls.load(Ordering::SeqCst), 1, "the failure is remembered");
    clock.advance_millis(2_000);
    assert!(cache.get_or_load(1, load).is_err());
    assert_eq!(
        calls.load(Ordering::SeqCst),
        2,
        "and forgotten after the negative ttl"
    );
}

#[test]
fn a_panicking_loader_releases_its_waiters() {
    let cache: Cache<u32, u64> = Cache::new(10).unwrap();
    let c = cache.clone();
    let leader = thread::spawn(move || {
        let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            c.get_or_load(3, |_| -> Result<u64, std::io::Error> {
                thread::sleep(Duration::from_millis(100));
                panic!("loader bug")
            })
        }));
    });
    thread::sleep(Duration::from_millis(20));
    let waiter = cache.get_or_load(3, |_| Ok::<_, std::io::Error>(9));
    leader.join().unwrap();
    // The waiter either joined the doomed load (and is told) or loaded itself.
    match waiter {
        Ok(v) => assert_eq!(v, 9),
        Err(e) => assert_eq!(e.kind(), ErrorKind::Abandoned),
    }
    assert_eq!(
        cache
            .get_or_load(3, |_| Ok::<_, std::io::Error>(9))
            .unwrap(),
        9
    );
}

#[test]
fn async_misses_share_one_load() {
    let cache: Cache<u32, u64> = Cache::new(10).unwrap();
    let calls = Arc::new(AtomicU32::new(0));
    let (tx, rx) = futures::channel::oneshot::channel::<u64>();
    let c1 = calls.clone();
    let first = cache.get_or_load_async(5, move |_| {
        c1.fetch_add(1, Ordering::SeqCst);
        async move {
            rx.await
                .map_err(|_| std::io::Error::other("sender dropped"))
        }
    });
    let c2 = calls.clone();
    let second = cache.get_or_load_async(5, move |_| {
        c2.fetch_add(1, Ordering::SeqCst);
        async { Ok::<u64, std::io::Error>(0) }
    });
    let both = futures::future::join(first, second);
    tx.send(55).unwrap();
    let (a, b) = futures::executor::block_on(both);
    assert_eq!((a.unwrap(), b.unwrap()), (55, 55));
    assert_eq!(calls.load(Ordering::SeqCst), 1);
    assert_eq!(cache.get(&5), Some(55));
}

#[test]
fn a_panicking_async_loader_fails_its_waiters_and_the_next_get_loads_again() {
    let cache: Cache<u32, u64> = Cache::new(10).unwrap();
    let (tx, rx) = futures::channel::oneshot::channel::<()>();
    let first = cache.get_or_load_async(4, move |_| async move {
        let _ = rx.await;
        if true {
            panic!("loader bug");
        }
        Ok::<u64, std::io::Error>(1)
    });
    // Joins the load in flight: its loader never runs.
    let second = cache.get_or_load_async(4, |_| async { Ok::<u64, std::io::Error>(2) });
    // Both callers wait on the load before it goes on (and panics).
    let release = async move { tx.send(()).unwrap() };
    let all = futures::future::join3(first, second, release);
    let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        futures::executor::block_on(all)
    }));
    let (a, b, ()) = outcome.expect("a loader's panic does not reach the callers");
    for r in [a, b] {
        assert_eq!(r.unwrap_err().kind(), ErrorKind::Abandoned);
    }
    assert_eq!(cache.stats().load_failures, 1);
    // The key is not poisoned: the next get runs its own loader.
    let v = futures::executor::block_on(
        cache.get_or_load_async(4, |_| async { Ok::<u64, std::io::Error>(3) }),
    );
    assert_eq!(v.unwrap(), 3);
    assert_eq!(cache.get(&4), Some(3));
}

#[test]
fn a_panicking_async_loader_is_not_remembered_as_a_failure() {
    let clock = ManualClock::at_millis(0);
    let cache: Cache<u32, u64> = Cache::builder()
        .max_entries(10)
        .negative_ttl(Duration::from_secs(60))
        .clock(Arc::new(clock))
        .build()
        .unwrap();
    let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        futures::executor::block_on(cache.get_or_load_async(8, |_| async {
            if true {
                panic!("loader bug");
            }
            Ok::<u64, std::io::Error>(0)
        }))
    }));
    assert_eq!(
        r.expect("no panic reaches the caller").unwrap_err().kind(),
        ErrorKind::Abandoned
    );
    let v = futures::executor::block_on(
        cache.get_or_load_async(8, |_| async { Ok::<u64, std::io::Error>(5) }),
    );
    assert_eq!(v.unwrap(), 5, "a panic is not a result to remember");
}
