//! Fault injection (feature `fault-injection`): an [`ObjectStore`] that wraps another
//! and makes its operations fail the ways remote stores fail.
//!
//! [`FaultStore`] forwards every call to the store it wraps, and before (or after) it
//! may inject, per [`FaultConfig`]:
//!
//! * **an error before the operation** ([`Fault::ErrorBefore`]): nothing was applied;
//! * **an error after the operation was applied** ([`Fault::ErrorAfter`]): the store
//!   committed the write, the client saw a 500 or a timeout (the ambiguous commit);
//! * **an applied operation retried by the client** ([`Fault::RetriedAfterApply`]): the
//!   store applied the request, the answer was lost and the client sent it again, so
//!   the caller sees the answer to the retry (a put-if-absent then sees `AlreadyExists`
//!   for its own write, a delete sees `NotFound` on stores that report it);
//! * **latency** before an operation;
//! * **failed multipart uploads** ([`Fault::MultipartFailed`]: a part upload fails) and
//!   **partial ones** ([`Fault::MultipartPartial`]: parts were uploaded, the completion
//!   fails and the object never appears);
//! * **listings that miss fresh objects** ([`Fault::StaleListing`]: the objects written
//!   most recently through this store are left out of a listing, as an eventually
//!   consistent listing would).
//!
//! Faults come from a seeded random schedule: the n-th operation of the store gets the
//! n-th decision of a generator seeded with the `u64` given to [`FaultStore::new`], so
//! a schedule is reproducible whenever its operations come in the same order (one task;
//! with concurrent tasks the order of operations, and so the pairing, may vary). One-shot
//! faults can also be scripted ([`FaultStore::inject_next`]) for tests of one path.
//!
//! ```
//! use std::sync::Arc;
//!
//! use lakehouse_storage::Location;
//! use lakehouse_storage::faults::{FaultConfig, FaultStore};
//! use object_store::memory::InMemory;
//!
//! let faults = FaultStore::new(
//!     Arc::new(InMemory::new()),
//!     42,
//!     FaultConfig::new().error_before(0.05).error_after(0.05),
//! );
//! let location = Location::from_store(Arc::new(faults.clone()), "t", "faults:///t")?;
//! // ... run a workload on `location`, then check the table with faults off:
//! faults.set_enabled(false);
//! assert_eq!(faults.stats().total(), 0);
//! # Ok::<(), lakehouse_storage::Error>(())
//! ```
//!
//! # Power loss (Unix)
//!
//! [`run_power_loss`] runs one seeded schedule of concurrent appends, checkpoints and
//! compaction on a local table whose writes go through a simulated volatile page
//! cache, cuts the power at a random file system step, drops what the cache held
//! (unsynced directory entries undone, unsynced files left empty, cut or garbled) and
//! checks the table a new process opens:
//!
//! ```
//! # #[cfg(unix)]
//! # #[tokio::main]
//! # async fn main() -> lakehouse_storage::Result<()> {
//! use lakehouse_storage::faults::{PowerLossOptions, run_power_loss};
//!
//! let report = run_power_loss(7, &PowerLossOptions::new().writers(2).appends(3)).await?;
//! assert!(report.is_clean(), "{report:?}");
//! # Ok(())
//! # }
//! # #[cfg(not(unix))]
//! # fn main() {}
//! ```

use std::collections::{HashSet, VecDeque};
use std::fmt;
use std::ops::Range;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use futures::stream::BoxStream;
use futures::{StreamExt, TryStreamExt};
use object_store::path::Path;
use object_store::{
    CopyOptions, GetOptions, GetResult, ListResult, MultipartUpload, ObjectMeta, ObjectStore,
    PutMultipartOptions, PutOptions, PutPayload, PutResult, RenameOptions, UploadPart,
};
use parking_lot::Mutex;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

mod campaign;
#[cfg(unix)]
pub(crate) mod power;
#[cfg(unix)]
mod power_campaign;

pub use self::campaign::{ScheduleOptions, ScheduleReport, run_schedule};
#[cfg(unix)]
pub use self::power_campaign::{PowerLossOptions, PowerLossReport, run_power_loss};

/// One injected fault.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Fault {
    /// The operation fails before it reaches the store: nothing is applied.
    ErrorBefore,
    /// The operation is applied, then the client sees an error (the ambiguous commit).
    ErrorAfter,
    /// The operation is applied, its answer lost, and the client's retry of the same
    /// request is answered instead.
    RetriedAfterApply,
    /// The operation is delayed.
    Latency,
    /// A part of a multipart upload fails; the upload cannot complete.
    MultipartFailed,
    /// Every part of a multipart upload was sent, the completion fails: the object
    /// never appears.
    MultipartPartial,
    /// A listing leaves out the objects written most recently.
    StaleListing,
}

impl Fault {
    fn describe(self) -> &'static str {
        match self {
            Fault::ErrorBefore => "the request failed before reaching the store",
            Fault::ErrorAfter => "the store applied the request, the answer was an error",
            Fault::RetriedAfterApply => "the store applied the request, the client retried it",
            Fault::Latency => "the request was delayed",
            Fault::MultipartFailed => "a part of the multipart upload failed",
            Fault::MultipartPartial => "the multipart upload failed to complete",
            Fault::StaleListing => "the listing missed fresh objects",
        }
    }
}

/// The kinds of operation a fault can be scripted for ([`FaultStore::inject_next`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum FaultOp {
    /// `put_opts`.
    Put,
    /// `put_multipart_opts` and its parts.
    Multipart,
    /// `get_opts` and `get_ranges` (and heads).
    Get,
    /// Deletes.
    Delete,
    /// Listings.
    List,
    /// Copies and renames.
    Copy,
}

/// The error [`FaultStore`] returns for an injected fault (the source of an
/// `object_store::Error::Generic`).
#[derive(Debug, Clone)]
pub struct InjectedFault {
    /// What was injected.
    pub fault: Fault,
    /// The operation.
    pub op: FaultOp,
    /// The object.
    pub path: String,
}

impl fmt::Display for InjectedFault {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "injected fault on {:?} {}: {}",
            self.op,
            self.path,
            self.fault.describe()
        )
    }
}

impl std::error::Error for InjectedFault {}

/// Fault probabilities of a [`FaultStore`] (all zero by default: no faults).
///
/// Each probability is per operation, clamped to `0..=1`. The error faults of one
/// operation are exclusive (their probabilities add up, capped at 1); latency is drawn
/// separately.
#[derive(Debug, Clone)]
#[must_use]
pub struct FaultConfig {
    error_before: f64,
    error_after: f64,
    retried_after_apply: f64,
    read_errors: bool,
    latency: f64,
    max_latency: Duration,
    multipart_fail: f64,
    multipart_partial: f64,
    stale_list: f64,
    stale_window: usize,
    only_paths_containing: Option<String>,
}

impl Default for FaultConfig {
    fn default() -> Self {
        FaultConfig {
            error_before: 0.0,
            error_after: 0.0,
            retried_after_apply: 0.0,
            read_errors: false,
            latency: 0.0,
            max_latency: Duration::from_millis(2),
            multipart_fail: 0.0,
            multipart_partial: 0.0,
            stale_list: 0.0,
            stale_window: 4,
            only_paths_containing: None,
        }
    }
}

fn prob(p: f64) -> f64 {
    if p.is_nan() { 0.0 } else { p.clamp(0.0, 1.0) }
}

impl FaultConfig {
    /// No faults.
    pub fn new() -> Self {
        Self::default()
    }

    /// Probability that an operation fails before it reaches the store (writes; reads
    /// too with [`FaultConfig::read_errors`]).
    pub fn error_before(mut self, p: f64) -> Self {
        self.error_before = prob(p);
        self
    }

    /// Probability that a write is applied and then answered with an error.
    pub fn error_after(mut self, p: f64) -> Self {
        self.error_after = prob(p);
        self
    }

    /// Probability that a write is applied, its answer lost and the request sent again
    /// (the caller sees the answer to the second request).
    pub fn retried_after_apply(mut self, p: f64) -> Self {
        self.retried_after_apply = prob(p);
        self
    }

    /// Reads (gets, heads, listings) fail too, with the probability of
    /// [`FaultConfig::error_before`].
    pub fn read_errors(mut self, on: bool) -> Self {
        self.read_errors = on;
        self
    }

    /// Probability that an operation is delayed, by up to `max` (uniformly).
    pub fn latency(mut self, p: f64, max: Duration) -> Self {
        self.latency = prob(p);
        self.max_latency = max;
        self
    }

    /// Probabilities that a multipart upload fails in a part, and that it sends every
    /// part and fails to complete.
    pub fn multipart(mut self, fail: f64, partial: f64) -> Self {
        self.multipart_fail = prob(fail);
        self.multipart_partial = prob(partial);
        self
    }

    /// Probability that a listing leaves out the (up to) `window` objects written most
    /// recently through this store.
    pub fn stale_listings(mut self, p: f64, window: usize) -> Self {
        self.stale_list = prob(p);
        self.stale_window = window;
        self
    }

    /// Inject faults only into operations on objects whose path contains `part` (such
    /// as `_delta_log/`); other operations pass untouched (and draw no decision).
    pub fn only_paths_containing(mut self, part: impl Into<String>) -> Self {
        self.only_paths_containing = Some(part.into());
        self
    }
}

/// How many faults of each kind a [`FaultStore`] injected.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct FaultStats {
    /// Operations seen (with faults enabled).
    pub operations: u64,
    /// [`Fault::ErrorBefore`] faults.
    pub error_before: u64,
    /// [`Fault::ErrorAfter`] faults.
    pub error_after: u64,
    /// [`Fault::RetriedAfterApply`] faults.
    pub retried_after_apply: u64,
    /// [`Fault::Latency`] faults.
    pub latency: u64,
    /// [`Fault::MultipartFailed`] faults.
    pub multipart_failed: u64,
    /// [`Fault::MultipartPartial`] faults.
    pub multipart_partial: u64,
    /// [`Fault::StaleListing`] faults.
    pub stale_listings: u64,
}

impl FaultStats {
    /// Faults of every kind.
    pub fn total(&self) -> u64 {
        self.error_before
            + self.error_after
            + self.retried_after_apply
            + self.latency
            + self.multipart_failed
            + self.multipart_partial
            + self.stale_listings
    }

    fn count(&mut self, fault: Fault) {
        match fault {
            Fault::ErrorBefore => self.error_before += 1,
            Fault::ErrorAfter => self.error_after += 1,
            Fault::RetriedAfterApply => self.retried_after_apply += 1,
            Fault::Latency => self.latency += 1,
            Fault::MultipartFailed => self.multipart_failed += 1,
            Fault::MultipartPartial => self.multipart_partial += 1,
            Fault::StaleListing => self.stale_listings += 1,
        }
    }
}

/// What happens to one operation.
#[derive(Debug, Default)]
struct Decision {
    delay: Option<Duration>,
    fault: Option<Fault>,
}

struct Scripted {
    op: FaultOp,
    path_part: String,
    fault: Fault,
}

struct State {
    rng: StdRng,
    stats: FaultStats,
    scripted: VecDeque<Scripted>,
    /// Objects written most recently (newest last), for stale listings.
    recent: VecDeque<Path>,
}

struct Shared {
    inner: Arc<dyn ObjectStore>,
    config: FaultConfig,
    enabled: AtomicBool,
    stale_listings: AtomicBool,
    state: Mutex<State>,
}

/// An [`ObjectStore`] that injects faults into the operations of another (see the
/// [module docs](self)). Cheap to clone: clones share the schedule and the statistics.
#[derive(Clone)]
pub struct FaultStore {
    shared: Arc<Shared>,
}

impl fmt::Debug for FaultStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FaultStore")
            .field("inner", &self.shared.inner)
            .field("config", &self.shared.config)
            .field("enabled", &self.shared.enabled.load(Ordering::Relaxed))
            .finish()
    }
}

impl fmt::Display for FaultStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "FaultStore({})", self.shared.inner)
    }
}

fn injected(fault: Fault, op: FaultOp, path: &Path) -> object_store::Error {
    object_store::Error::Generic {
        store: "FaultStore",
        source: Box::new(InjectedFault {
            fault,
            op,
            path: path.to_string(),
        }),
    }
}

impl FaultStore {
    /// Wraps `inner`; faults are drawn from a generator seeded with `seed`. Faults are
    /// enabled from the start.
    pub fn new(inner: Arc<dyn ObjectStore>, seed: u64, config: FaultConfig) -> FaultStore {
        FaultStore {
            shared: Arc::new(Shared {
                inner,
                config,
                enabled: AtomicBool::new(true),
                stale_listings: AtomicBool::new(true),
                state: Mutex::new(State {
                    rng: StdRng::seed_from_u64(seed),
                    stats: FaultStats::default(),
                    scripted: VecDeque::new(),
                    recent: VecDeque::new(),
                }),
            }),
        }
    }

    /// The wrapped store (operations on it see no faults).
    pub fn inner(&self) -> &Arc<dyn ObjectStore> {
        &self.shared.inner
    }

    /// Turns faults on or off (off: every operation passes untouched, scripted faults
    /// stay queued).
    pub fn set_enabled(&self, on: bool) {
        self.shared.enabled.store(on, Ordering::SeqCst);
    }

    /// Turns stale listings on or off (on by default; the other faults are unchanged).
    /// A vacuum with a retention shorter than the listing lag deletes files of commits
    /// its listing missed: turn them off around such a vacuum.
    pub fn set_stale_listings(&self, on: bool) {
        self.shared.stale_listings.store(on, Ordering::SeqCst);
    }

    /// The faults injected so far.
    pub fn stats(&self) -> FaultStats {
        self.shared.state.lock().stats.clone()
    }

    /// Scripts `fault` for the next `op` on an object whose path contains `path_part`
    /// (before any random decision). Scripted faults are used once each, in order.
    pub fn inject_next(&self, op: FaultOp, path_part: impl Into<String>, fault: Fault) {
        self.shared.state.lock().scripted.push_back(Scripted {
            op,
            path_part: path_part.into(),
            fault,
        });
    }

    /// Scripted faults not used yet.
    pub fn pending_scripted(&self) -> usize {
        self.shared.state.lock().scripted.len()
    }

    fn decide(&self, op: FaultOp, path: &Path) -> Decision {
        let shared = &self.shared;
        if !shared.enabled.load(Ordering::SeqCst) {
            return Decision::default();
        }
        let mut st = shared.state.lock();
        if let Some(i) = st
            .scripted
            .iter()
            .position(|s| s.op == op && path.as_ref().contains(&s.path_part))
        {
            let s = st.scripted.remove(i).expect("index from position");
            st.stats.operations += 1;
            st.stats.count(s.fault);
            return Decision {
                delay: None,
                fault: Some(s.fault),
            };
        }
        let cfg = &shared.config;
        if let Some(part) = &cfg.only_paths_containing
            && !path.as_ref().contains(part.as_str())
        {
            return Decision::default();
        }
        st.stats.operations += 1;
        let mut d = Decision::default();
        if cfg.latency > 0.0 && st.rng.random_bool(cfg.latency) {
            let max = cfg.max_latency.as_micros().max(1) as u64;
            d.delay = Some(Duration::from_micros(st.rng.random_range(0..=max)));
            st.stats.count(Fault::Latency);
        }
        let roll: f64 = st.rng.random();
        let table: Vec<(f64, Fault)> = match op {
            FaultOp::Put | FaultOp::Delete | FaultOp::Copy => vec![
                (cfg.error_before, Fault::ErrorBefore),
                (cfg.error_after, Fault::ErrorAfter),
                (cfg.retried_after_apply, Fault::RetriedAfterApply),
            ],
            FaultOp::Multipart => vec![
                (cfg.error_before, Fault::ErrorBefore),
                (cfg.multipart_fail, Fault::MultipartFailed),
                (cfg.multipart_partial, Fault::MultipartPartial),
                (cfg.error_after, Fault::ErrorAfter),
            ],
            FaultOp::Get => {
                if cfg.read_errors {
                    vec![(cfg.error_before, Fault::ErrorBefore)]
                } else {
                    vec![]
                }
            }
            FaultOp::List => {
                let stale = if shared.stale_listings.load(Ordering::SeqCst) {
                    cfg.stale_list
                } else {
                    0.0
                };
                if cfg.read_errors {
                    vec![
                        (stale, Fault::StaleListing),
                        (cfg.error_before, Fault::ErrorBefore),
                    ]
                } else {
                    vec![(stale, Fault::StaleListing)]
                }
            }
        };
        let mut acc = 0.0;
        for (p, fault) in &table {
            acc += p;
            if roll < acc {
                d.fault = Some(*fault);
                st.stats.count(*fault);
                break;
            }
        }
        d
    }

    fn wrote(&self, path: &Path) {
        let window = self.shared.config.stale_window;
        if window == 0 {
            return;
        }
        let mut st = self.shared.state.lock();
        st.recent.push_back(path.clone());
        while st.recent.len() > window {
            st.recent.pop_front();
        }
    }

    /// The objects a stale listing leaves out.
    fn hidden(&self) -> HashSet<Path> {
        self.shared.state.lock().recent.iter().cloned().collect()
    }

    async fn before(&self, op: FaultOp, path: &Path) -> Option<Fault> {
        let d = self.decide(op, path);
        if let Some(delay) = d.delay {
            tokio::time::sleep(delay).await;
        }
        d.fault
    }

    async fn delete_one(&self, path: Path) -> object_store::Result<Path> {
        let fault = self.before(FaultOp::Delete, &path).await;
        if fault == Some(Fault::ErrorBefore) {
            return Err(injected(Fault::ErrorBefore, FaultOp::Delete, &path));
        }
        let once = || {
            self.shared
                .inner
                .delete_stream(futures::stream::iter([Ok(path.clone())]).boxed())
        };
        let first = once().next().await.unwrap_or(Ok(path.clone()));
        match fault {
            Some(Fault::ErrorAfter) if first.is_ok() => {
                Err(injected(Fault::ErrorAfter, FaultOp::Delete, &path))
            }
            Some(Fault::RetriedAfterApply) if first.is_ok() => {
                once().next().await.unwrap_or(Ok(path.clone()))
            }
            _ => first,
        }
    }

    fn list_stream(
        &self,
        fault: Option<Fault>,
        prefix: Option<&Path>,
        inner: BoxStream<'static, object_store::Result<ObjectMeta>>,
    ) -> BoxStream<'static, object_store::Result<ObjectMeta>> {
        match fault {
            Some(Fault::ErrorBefore) => {
                let p = prefix.cloned().unwrap_or_default();
                futures::stream::iter([Err(injected(Fault::ErrorBefore, FaultOp::List, &p))])
                    .boxed()
            }
            Some(Fault::StaleListing) => {
                let hidden = self.hidden();
                inner
                    .try_filter(move |m| futures::future::ready(!hidden.contains(&m.location)))
                    .boxed()
            }
            _ => inner,
        }
    }
}

#[async_trait]
impl ObjectStore for FaultStore {
    async fn put_opts(
        &self,
        location: &Path,
        payload: PutPayload,
        opts: PutOptions,
    ) -> object_store::Result<PutResult> {
        let fault = self.before(FaultOp::Put, location).await;
        if fault == Some(Fault::ErrorBefore) {
            return Err(injected(Fault::ErrorBefore, FaultOp::Put, location));
        }
        let inner = &self.shared.inner;
        let first = inner
            .put_opts(location, payload.clone(), opts.clone())
            .await?;
        self.wrote(location);
        match fault {
            Some(Fault::ErrorAfter) => Err(injected(Fault::ErrorAfter, FaultOp::Put, location)),
            Some(Fault::RetriedAfterApply) => inner.put_opts(location, payload, opts).await,
            _ => Ok(first),
        }
    }

    async fn put_multipart_opts(
        &self,
        location: &Path,
        opts: PutMultipartOptions,
    ) -> object_store::Result<Box<dyn MultipartUpload>> {
        let fault = self.before(FaultOp::Multipart, location).await;
        if fault == Some(Fault::ErrorBefore) {
            return Err(injected(Fault::ErrorBefore, FaultOp::Multipart, location));
        }
        let inner = self.shared.inner.put_multipart_opts(location, opts).await?;
        Ok(Box::new(FaultUpload {
            store: self.clone(),
            path: location.clone(),
            inner,
            fault,
            parts: 0,
        }))
    }

    async fn get_opts(
        &self,
        location: &Path,
        options: GetOptions,
    ) -> object_store::Result<GetResult> {
        if self.before(FaultOp::Get, location).await == Some(Fault::ErrorBefore) {
            return Err(injected(Fault::ErrorBefore, FaultOp::Get, location));
        }
        self.shared.inner.get_opts(location, options).await
    }

    async fn get_ranges(
        &self,
        location: &Path,
        ranges: &[Range<u64>],
    ) -> object_store::Result<Vec<Bytes>> {
        if self.before(FaultOp::Get, location).await == Some(Fault::ErrorBefore) {
            return Err(injected(Fault::ErrorBefore, FaultOp::Get, location));
        }
        self.shared.inner.get_ranges(location, ranges).await
    }

    fn delete_stream(
        &self,
        locations: BoxStream<'static, object_store::Result<Path>>,
    ) -> BoxStream<'static, object_store::Result<Path>> {
        let this = self.clone();
        locations
            .then(move |p| {
                let this = this.clone();
                async move { this.delete_one(p?).await }
            })
            .boxed()
    }

    fn list(&self, prefix: Option<&Path>) -> BoxStream<'static, object_store::Result<ObjectMeta>> {
        let key = prefix.cloned().unwrap_or_default();
        // Listings are not delayed: `list` is not async.
        let fault = self.decide(FaultOp::List, &key).fault;
        self.list_stream(fault, prefix, self.shared.inner.list(prefix))
    }

    fn list_with_offset(
        &self,
        prefix: Option<&Path>,
        offset: &Path,
    ) -> BoxStream<'static, object_store::Result<ObjectMeta>> {
        let key = prefix.cloned().unwrap_or_default();
        let fault = self.decide(FaultOp::List, &key).fault;
        self.list_stream(
            fault,
            prefix,
            self.shared.inner.list_with_offset(prefix, offset),
        )
    }

    async fn list_with_delimiter(&self, prefix: Option<&Path>) -> object_store::Result<ListResult> {
        let key = prefix.cloned().unwrap_or_default();
        match self.before(FaultOp::List, &key).await {
            Some(Fault::ErrorBefore) => Err(injected(Fault::ErrorBefore, FaultOp::List, &key)),
            Some(Fault::StaleListing) => {
                let hidden = self.hidden();
                let mut r = self.shared.inner.list_with_delimiter(prefix).await?;
                r.objects.retain(|m| !hidden.contains(&m.location));
                Ok(r)
            }
            _ => self.shared.inner.list_with_delimiter(prefix).await,
        }
    }

    async fn copy_opts(
        &self,
        from: &Path,
        to: &Path,
        options: CopyOptions,
    ) -> object_store::Result<()> {
        let fault = self.before(FaultOp::Copy, to).await;
        if fault == Some(Fault::ErrorBefore) {
            return Err(injected(Fault::ErrorBefore, FaultOp::Copy, to));
        }
        let inner = &self.shared.inner;
        inner.copy_opts(from, to, options.clone()).await?;
        self.wrote(to);
        match fault {
            Some(Fault::ErrorAfter) => Err(injected(Fault::ErrorAfter, FaultOp::Copy, to)),
            Some(Fault::RetriedAfterApply) => inner.copy_opts(from, to, options).await,
            _ => Ok(()),
        }
    }

    async fn rename_opts(
        &self,
        from: &Path,
        to: &Path,
        options: RenameOptions,
    ) -> object_store::Result<()> {
        let fault = self.before(FaultOp::Copy, to).await;
        if fault == Some(Fault::ErrorBefore) {
            return Err(injected(Fault::ErrorBefore, FaultOp::Copy, to));
        }
        let inner = &self.shared.inner;
        inner.rename_opts(from, to, options.clone()).await?;
        self.wrote(to);
        match fault {
            Some(Fault::ErrorAfter) => Err(injected(Fault::ErrorAfter, FaultOp::Copy, to)),
            // The source is gone: the retry fails as the store would answer it.
            Some(Fault::RetriedAfterApply) => inner.rename_opts(from, to, options).await,
            _ => Ok(()),
        }
    }
}

/// A multipart upload through a [`FaultStore`].
struct FaultUpload {
    store: FaultStore,
    path: Path,
    inner: Box<dyn MultipartUpload>,
    fault: Option<Fault>,
    parts: usize,
}

impl fmt::Debug for FaultUpload {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FaultUpload")
            .field("path", &self.path)
            .field("fault", &self.fault)
            .field("parts", &self.parts)
            .finish()
    }
}

#[async_trait]
impl MultipartUpload for FaultUpload {
    fn put_part(&mut self, data: PutPayload) -> UploadPart {
        self.parts += 1;
        // A failed upload fails in its second part (its first when it has one).
        if self.fault == Some(Fault::MultipartFailed) && self.parts >= 2 {
            let err = injected(Fault::MultipartFailed, FaultOp::Multipart, &self.path);
            return Box::pin(futures::future::ready(Err(err)));
        }
        self.inner.put_part(data)
    }

    async fn complete(&mut self) -> object_store::Result<PutResult> {
        match self.fault {
            Some(f @ (Fault::MultipartFailed | Fault::MultipartPartial)) => {
                let _ = self.inner.abort().await;
                Err(injected(f, FaultOp::Multipart, &self.path))
            }
            Some(Fault::ErrorAfter) => {
                self.inner.complete().await?;
                self.store.wrote(&self.path);
                Err(injected(Fault::ErrorAfter, FaultOp::Multipart, &self.path))
            }
            _ => {
                let r = self.inner.complete().await?;
                self.store.wrote(&self.path);
                Ok(r)
            }
        }
    }

    async fn abort(&mut self) -> object_store::Result<()> {
        self.inner.abort().await
    }
}
