//! The in-memory secret cache.
//!
//! Each (secret ARN, version) has a [`Slot`]. Readers of a fresh value touch
//! only atomics (no lock on the hot path). A miss starts one fetch, spawned
//! so that it finishes even if its reader goes away, and every concurrent
//! reader of the same slot awaits that same fetch (single flight).
//!
//! When a fetch completes, the slot decides its next background step:
//! - success: a timer at `ttl - refresh_ahead` refreshes the value if it was
//!   read since it was fetched; idle values just expire;
//! - transient failure with a value in hand: retry with exponential backoff
//!   and jitter, serving the old value (marked stale) until `max_stale` past
//!   its expiry, after which the value is dropped and reads fail closed;
//! - any other failure (access denied, deleted secret, ...): the value is
//!   dropped at once, so a revoked permission stops reads.
//!
//! The prefetch and refreshes ahead fetch the current versions of up to
//! [`BATCH_LIMIT`] secrets of one region per BatchGetSecretValue call
//! ([`Inner::start_batch`]); refreshes due within a short window are
//! gathered, with read values due soon after them. Each secret's part is
//! an ordinary fetch of its slot that readers join; a refused batch call
//! falls back to single calls.
//!
//! A reader of an expired value that is still within `max_stale` waits at
//! most `stale_wait` for its refresh (stale while revalidate), then gets
//! that value, marked stale, while the fetch goes on; a reader with no
//! value in hand waits for the fetch, up to `fetch_timeout`.
//!
//! What a client can make the agent spend is bounded, since AWS bills each
//! call and any local process may be a client:
//! - forced refreshes of one entry: a burst of [`REFRESH_BURST`], then one
//!   call per `min-refresh-interval`; concurrent ones join the call in
//!   flight, and refused ones are served from the cache;
//! - a not-found answer is remembered for `negative-ttl`;
//! - calls in flight at once: at most `max-concurrent-calls` (a semaphore);
//!   others wait for their turn until the fetch deadline;
//! - memory: at most `max-entries` values holding at most `max-bytes` in
//!   all, and separately at most `max-entries` entries without one (first
//!   fetches, failures, not-found answers), so lookups that fail never
//!   evict a value others read. Bytes are counted when a value is stored
//!   or dropped, never on a read.
//!
//! Every task the cache spawns (fetches, timers, prefetches and their
//! retries) belongs to it: they end when the last [`Cache`] handle is
//! dropped, and an entry's timer stops when the entry leaves the cache
//! (evicted, or its resource removed by a reload).
//!
//! What it counts goes to the [`CacheMetrics`] it is given.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, Weak};
use std::time::Duration;

use arc_swap::{ArcSwap, ArcSwapOption};
use dashmap::DashMap;
use futures_util::StreamExt;
use futures_util::future::{BoxFuture, FutureExt, Shared};
use tokio::runtime::Handle;
use tokio::sync::{Semaphore, oneshot};
use tokio::task::{AbortHandle, JoinHandle};
use tokio::time::Instant;
use tokio_util::sync::{CancellationToken, DropGuard};

use crate::config::CacheConfig;
use crate::resources::SecretArn;
use crate::secret::Secret;
use crate::upstream::{BATCH_LIMIT, BatchAnswer, Upstream, UpstreamError, Version, with_deadline};

/// Where values come from. [`Upstream`] in the agent; a fake in unit tests.
pub trait Fetch: Send + Sync + 'static {
    fn fetch(
        &self,
        arn: SecretArn,
        version: Version,
    ) -> BoxFuture<'static, Result<Secret, UpstreamError>>;

    /// The current versions of `arns` (one region, at most [`BATCH_LIMIT`])
    /// in one call; see [`Upstream::batch_get_secret_value`].
    fn fetch_batch(
        &self,
        arns: Vec<SecretArn>,
    ) -> BoxFuture<'static, Result<BatchAnswer, UpstreamError>>;
}

impl Fetch for Upstream {
    fn fetch(
        &self,
        arn: SecretArn,
        version: Version,
    ) -> BoxFuture<'static, Result<Secret, UpstreamError>> {
        let upstream = self.clone();
        async move { upstream.get_value(&arn, &version).await }.boxed()
    }

    fn fetch_batch(
        &self,
        arns: Vec<SecretArn>,
    ) -> BoxFuture<'static, Result<BatchAnswer, UpstreamError>> {
        let upstream = self.clone();
        async move { upstream.batch_get_secret_value(&arns).await }.boxed()
    }
}

/// The upstream actions, as metrics label them.
pub const GET_SECRET_VALUE: &str = "GetSecretValue";
pub const GET_PARAMETER: &str = "GetParameter";
pub const BATCH_GET_SECRET_VALUE: &str = "BatchGetSecretValue";

/// Where the cache reports what it does; the agent's is
/// [`crate::metrics::Metrics`], tests use their own.
pub trait CacheMetrics: Send + Sync + 'static {
    /// A read was served. On the hot path: must neither lock nor allocate.
    fn read(&self, status: CacheStatus);
    /// A call to AWS ([`GET_SECRET_VALUE`] or [`BATCH_GET_SECRET_VALUE`])
    /// ended, after `latency` (the wait for a turn among
    /// `max-concurrent-calls` not included).
    fn upstream_call(
        &self,
        action: &'static str,
        result: Result<(), &UpstreamError>,
        latency: Duration,
    );
}

/// How a read was served; sent to clients as `Secret-Agent-Cache`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CacheStatus {
    /// A fresh cached value.
    Hit,
    /// Fetched from AWS for this read.
    Miss,
    /// Past its TTL, served because a refresh is under way or AWS is failing.
    Stale,
}

impl CacheStatus {
    /// Every status, in declaration order, so that `ALL[s as usize] == s`
    /// (checked when compiling): metrics keep a counter per status.
    pub const ALL: [CacheStatus; 3] = [CacheStatus::Hit, CacheStatus::Miss, CacheStatus::Stale];

    pub fn as_str(self) -> &'static str {
        match self {
            CacheStatus::Hit => "hit",
            CacheStatus::Miss => "miss",
            CacheStatus::Stale => "stale",
        }
    }
}

const _: () = {
    let mut i = 0;
    while i < CacheStatus::ALL.len() {
        assert!(CacheStatus::ALL[i] as usize == i);
        i += 1;
    }
};

/// What the cache knows of one secret's current version, for per-resource
/// metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct SecretStats {
    /// Time since the cached value was fetched; `None` without one.
    pub age: Option<Duration>,
    /// `ok`, or the [`UpstreamError::kind`] of the last fetch; `None`
    /// before the first ends.
    pub last_outcome: Option<&'static str>,
    /// Fetches that brought a version other than the one cached.
    pub version_changes: u64,
}

/// A read that could not be served.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CacheError {
    #[error(transparent)]
    Upstream(UpstreamError),
    /// AWS has been failing for longer than `max-stale`; the old value is no
    /// longer served.
    #[error("the cached value is older than max-stale allows and AWS still fails: {0}")]
    StaleLimit(UpstreamError),
}

/// How many prefetches run at once.
pub const PREFETCH_CONCURRENCY: usize = 8;

/// Progress of a start-up prefetch.
#[derive(Debug)]
pub struct Prefetch {
    /// Resources not yet tried once.
    pending: AtomicUsize,
    /// ARNs whose fetches have failed and are being retried.
    failing: Mutex<BTreeSet<String>>,
}

impl Prefetch {
    /// Every resource has been fetched, or tried once and is being retried.
    pub fn is_done(&self) -> bool {
        self.pending.load(Ordering::SeqCst) == 0
    }

    /// ARNs still failing, in order.
    pub fn failing(&self) -> Vec<String> {
        self.lock_failing().iter().cloned().collect()
    }

    fn lock_failing(&self) -> MutexGuard<'_, BTreeSet<String>> {
        self.failing.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// An ARN listed in [`Prefetch::failing`] while its retries run; taken
/// off when they end, whether they succeeded or were stopped.
struct Failing {
    progress: Arc<Prefetch>,
    arn: String,
}

impl Failing {
    fn new(progress: &Arc<Prefetch>, arn: &SecretArn) -> Failing {
        progress.lock_failing().insert(arn.to_string());
        Failing {
            progress: Arc::clone(progress),
            arn: arn.to_string(),
        }
    }
}

impl Drop for Failing {
    fn drop(&mut self) {
        self.progress.lock_failing().remove(&self.arn);
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct Key {
    arn: SecretArn,
    version: Version,
}

/// A [`Key`] seen through its parts, so that the hot path looks a slot up
/// by borrowed parts without building a `Key` (which takes a reference on
/// the ARN that every worker thread shares). Hashes and compares as `Key`'s
/// derived impls do: the ARN, then the version.
trait KeyParts {
    fn arn(&self) -> &SecretArn;
    fn version(&self) -> &Version;
}

impl KeyParts for Key {
    fn arn(&self) -> &SecretArn {
        &self.arn
    }
    fn version(&self) -> &Version {
        &self.version
    }
}

impl KeyParts for (&SecretArn, &Version) {
    fn arn(&self) -> &SecretArn {
        self.0
    }
    fn version(&self) -> &Version {
        self.1
    }
}

impl<'a> std::borrow::Borrow<dyn KeyParts + 'a> for Key {
    fn borrow(&self) -> &(dyn KeyParts + 'a) {
        self
    }
}

impl std::hash::Hash for dyn KeyParts + '_ {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.arn().hash(state);
        self.version().hash(state);
    }
}

impl PartialEq for dyn KeyParts + '_ {
    fn eq(&self, other: &Self) -> bool {
        self.arn() == other.arn() && self.version() == other.version()
    }
}

impl Eq for dyn KeyParts + '_ {}

impl Key {
    fn new(arn: &SecretArn, version: &Version) -> Key {
        Key {
            arn: arn.clone(),
            version: version.clone(),
        }
    }

    /// For log lines: which version, never one a client wrote.
    fn version_note(&self) -> &'static str {
        match self.version {
            Version::Current => "",
            Version::Stage(_) => " (a version stage asked for by a client)",
            Version::Id(_) => " (a version id asked for by a client)",
            Version::IdAndStage { .. } => " (a version id and stage asked for by a client)",
            Version::Number(_) | Version::Label(_) | Version::Encrypted(_) => {
                " (a parameter version, label or encrypted form asked for by a client)"
            }
        }
    }

    /// For log lines: AWS's message, or only the kind of failure where AWS
    /// may repeat a version a client wrote.
    fn error_note(&self, err: &UpstreamError) -> String {
        if self.version.chosen_by_client() {
            err.kind().to_owned()
        } else {
            err.to_string()
        }
    }
}

type SharedFetch = Shared<BoxFuture<'static, Result<Arc<Secret>, UpstreamError>>>;

/// A cheap-to-clone handle; clones share one cache.
#[derive(Clone)]
pub struct Cache {
    inner: Arc<Inner>,
    /// Cancels `Inner::tasks` when the last handle is dropped. The tasks
    /// hold `Inner`, never a `Cache`, so they cannot keep themselves going.
    _stop: Arc<DropGuard>,
}

struct Inner {
    fetcher: Arc<dyn Fetch>,
    metrics: Arc<dyn CacheMetrics>,
    /// Replaced as a whole on config reload.
    settings: ArcSwap<CacheConfig>,
    /// `settings.ttl` in nanoseconds, for the hot path.
    ttl_nanos: AtomicU64,
    /// foldhash: keys are ARNs from the config, and SipHash over them was
    /// a visible share of a cache hit.
    slots: DashMap<Key, Arc<Slot>, foldhash::fast::RandomState>,
    /// Logical clock for least-recently-used eviction.
    clock: AtomicU64,
    /// What the values of the slots in `slots` cost ([`cost`]), in bytes,
    /// against `max-bytes`. Each slot's share is its `SlotState::counted`,
    /// changed under that slot's lock.
    bytes: AtomicUsize,
    /// One permit per call to AWS in flight (`max-concurrent-calls`).
    calls: Semaphore,
    /// Fetches and timers run here, not on the reader's task (nor on the
    /// reader's runtime: each HTTP worker thread has its own).
    runtime: Handle,
    /// Every task the cache spawns runs until this is cancelled.
    tasks: CancellationToken,
    /// Prefetch work (first attempts and retries) by ARN, children of
    /// `tasks`: a reload that removes the resource cancels its work. Also
    /// held while that work creates the ARN's slot, and by `retain`, so a
    /// removed resource's slot is never re-created. Entries stay while
    /// their ARN is configured: one per resource at most.
    prefetching: Mutex<HashMap<SecretArn, CancellationToken>>,
    /// Until when BatchGetSecretValue is not tried, after AWS refused it
    /// (e.g. the policy lacks the permission): single calls instead.
    batch_refused_until: Mutex<Option<Instant>>,
    /// Values due a refresh ahead, gathered for [`GATHER_WINDOW`] so that
    /// one BatchGetSecretValue refreshes those due together.
    due: Mutex<Vec<(Key, Arc<Slot>)>>,
    /// New names under patterns (`cache.new-names-per-second`).
    new_names: Mutex<Budget>,
}

struct Slot {
    /// The last good value. Swapped atomically so readers never lock.
    value: ArcSwapOption<Cached>,
    /// Set by reads of a fresh value; a refresh-ahead only happens if set.
    read_since_fetch: AtomicBool,
    /// `Inner::clock` at the last read, for eviction.
    last_used: AtomicU64,
    /// Fetches that replaced the value with another version.
    version_changes: AtomicU64,
    /// The value was dropped for being past `max-stale`; until a fetch
    /// succeeds, failures are reported as [`CacheError::StaleLimit`].
    lapsed: AtomicBool,
    /// Coordination of fetches and timers; held briefly, never across an await.
    state: Mutex<SlotState>,
}

struct Cached {
    secret: Arc<Secret>,
    fetched_at: Instant,
}

#[derive(Default)]
struct SlotState {
    inflight: Option<SharedFetch>,
    /// Consecutive transient failures since the last good fetch.
    failures: u32,
    /// The pending refresh or retry timer.
    timer: Option<AbortHandle>,
    /// The slot has left the cache (evicted, or its resource removed): no
    /// timer is set any more.
    retired: bool,
    /// The budget of forced refreshes.
    refreshes: Budget,
    /// The last not-found answer, repeated to reads until it expires.
    not_found: Option<(UpstreamError, Instant)>,
    /// This slot's share of `Inner::bytes`: its value's [`cost`], or 0
    /// without a value or once retired.
    counted: usize,
    /// `ok` or the error kind of the last fetch, for metrics.
    last_outcome: Option<&'static str>,
}

/// A budget of `burst` at once, then one per interval (a generic cell rate
/// algorithm): forced refreshes of one entry, new names under patterns.
#[derive(Default)]
struct Budget {
    /// When the budget would be back to one; `None` when full.
    next: Option<Instant>,
}

impl Budget {
    /// Takes one from the budget, if there is one left.
    fn take(&mut self, now: Instant, interval: Duration, burst: u32) -> bool {
        let next = self.next.map_or(now, |next| next.max(now));
        if next - now > interval * burst.saturating_sub(1) {
            return false;
        }
        self.next = Some(next + interval);
        true
    }
}

impl Slot {
    fn state(&self) -> MutexGuard<'_, SlotState> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl SlotState {
    fn stop_timer(&mut self) {
        if let Some(timer) = self.timer.take() {
            timer.abort();
        }
    }

    /// Called once the slot is out of the map: a fetch under way still
    /// answers its readers, but nothing is scheduled after it, and its
    /// value no longer counts against `max-bytes` (of `bytes`).
    fn retire(&mut self, bytes: &AtomicUsize) {
        self.retired = true;
        self.stop_timer();
        self.count(bytes, 0);
    }

    /// Makes this slot's share of `bytes` `cost`, unless it is retired.
    fn count(&mut self, bytes: &AtomicUsize, cost: usize) {
        let cost = if self.retired { 0 } else { cost };
        bytes.fetch_add(cost, Ordering::Relaxed);
        bytes.fetch_sub(self.counted, Ordering::Relaxed);
        self.counted = cost;
    }
}

impl Drop for SlotState {
    fn drop(&mut self) {
        self.stop_timer();
    }
}

/// Forced refreshes of one entry allowed at once before
/// `min-refresh-interval` applies: a refresh right after an update of the
/// secret, and a retry or two, always reach AWS.
pub const REFRESH_BURST: u32 = 3;

/// First retry delay after a transient failure; doubles up to [`MAX_BACKOFF`].
const FIRST_BACKOFF: Duration = Duration::from_millis(500);
const MAX_BACKOFF: Duration = Duration::from_secs(30);

/// Wait before retrying a prefetch that failed for a reason that lasts
/// (access denied, a deleted secret, a key it cannot decrypt): someone has
/// to fix it, so asking more often only adds calls. Not configurable.
const LASTING_FAILURE_RETRY: Duration = Duration::from_secs(60);

/// Refreshes ahead due within this long of the first (and a quarter of
/// `refresh-ahead` at most) share BatchGetSecretValue calls.
const GATHER_WINDOW: Duration = Duration::from_secs(1);

/// How long single calls replace BatchGetSecretValue after AWS refused it.
const BATCH_REFUSED_RETRY: Duration = Duration::from_secs(600);

impl Cache {
    /// Must be called within a tokio runtime; background work runs on it
    /// until the last handle is dropped. At most `max_concurrent_calls`
    /// fetches call AWS at once.
    pub fn new(
        fetcher: Arc<dyn Fetch>,
        metrics: Arc<dyn CacheMetrics>,
        settings: CacheConfig,
        max_concurrent_calls: usize,
    ) -> Cache {
        let tasks = CancellationToken::new();
        Cache {
            _stop: Arc::new(tasks.clone().drop_guard()),
            inner: Arc::new(Inner {
                fetcher,
                metrics,
                ttl_nanos: AtomicU64::new(nanos(settings.ttl)),
                settings: ArcSwap::from_pointee(settings),
                slots: DashMap::with_hasher(foldhash::fast::RandomState::default()),
                clock: AtomicU64::new(0),
                bytes: AtomicUsize::new(0),
                calls: Semaphore::new(max_concurrent_calls),
                runtime: Handle::current(),
                tasks,
                prefetching: Mutex::new(HashMap::new()),
                batch_refused_until: Mutex::new(None),
                due: Mutex::new(Vec::new()),
                new_names: Mutex::new(Budget::default()),
            }),
        }
    }

    /// Applies new settings (on reload); entries keep their values, and the
    /// new TTL and bounds apply from their next read or refresh.
    pub fn set_settings(&self, settings: CacheConfig) {
        self.inner
            .ttl_nanos
            .store(nanos(settings.ttl), Ordering::Relaxed);
        self.inner.settings.store(Arc::new(settings));
    }

    /// A handle for metrics that does not keep the cache (and its tasks)
    /// going.
    pub fn downgrade(&self) -> WeakCache {
        WeakCache {
            inner: Arc::downgrade(&self.inner),
        }
    }

    /// Fetches the current versions of those of `arns` the cache holds, in
    /// batch calls, and the staging labels it holds of them (`AWSPREVIOUS`,
    /// say: a rotation moves labels), after any fetch already under way
    /// (which may have started before the change that prompted this): for
    /// event-driven refreshes, the agent's own, not limited like a
    /// client's. Versions held by id never change.
    pub async fn refresh_cached(&self, arns: Vec<SecretArn>) {
        let slots: Vec<_> = arns
            .iter()
            .filter_map(|arn| {
                let key = Key::new(arn, &Version::Current);
                let slot = Arc::clone(&*self.inner.slots.get(&key)?);
                Some((key, slot))
            })
            .collect();
        let wanted: HashSet<&str> = arns.iter().map(SecretArn::as_str).collect();
        let staged: Vec<_> = self
            .inner
            .slots
            .iter()
            .filter(|entry| {
                matches!(
                    entry.key().version,
                    Version::Stage(_) | Version::IdAndStage { .. }
                )
            })
            .filter(|entry| wanted.contains(entry.key().arn.as_str()))
            .map(|entry| (entry.key().clone(), Arc::clone(entry.value())))
            .collect();
        let under_way: Vec<_> = slots
            .iter()
            .chain(&staged)
            .filter_map(|(_, slot)| slot.state().inflight.clone())
            .collect();
        futures_util::future::join_all(under_way).await;
        let mut fetches = self.inner.start_batch(slots);
        fetches.extend(
            staged
                .iter()
                .map(|(key, slot)| self.inner.start_fetch(key, slot)),
        );
        futures_util::future::join_all(fetches).await;
    }

    /// Whether a read of `arn` at `version` may go ahead, for a name a
    /// client made up under a pattern: always when the cache has an entry
    /// for it (a value, a fetch under way, a remembered failure), else only
    /// within `cache.new-names-per-second` (a burst of twice that first),
    /// over all such names: each new one costs an AWS call.
    pub fn admit_new_name(&self, arn: &SecretArn, version: &Version) -> bool {
        let key = Key::new(arn, version);
        if self.inner.slots.contains_key(&key) {
            return true;
        }
        let per_second = self.inner.settings().new_names_per_second;
        if per_second == 0 {
            return true;
        }
        let interval = Duration::from_secs(1) / per_second;
        let admitted = self
            .inner
            .new_names
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take(Instant::now(), interval, per_second.saturating_mul(2));
        if admitted {
            // Registered now: other readers of the name join its fetch
            // instead of taking from the budget too.
            self.inner.slot(&key);
        }
        admitted
    }

    /// Number of cached entries (including those whose first fetch is under
    /// way, and remembered failures).
    pub(crate) fn len(&self) -> usize {
        self.inner.slots.len()
    }

    /// What the cached values cost, in bytes (see [`cost`]).
    #[cfg(test)]
    fn bytes(&self) -> usize {
        self.inner.bytes.load(Ordering::Relaxed)
    }

    /// A client's forced refresh: fetches `arn` at `version` now, joining a
    /// fetch already under way, and past a not-found answer. On a transient
    /// failure the cached value is kept for later reads; on any other it is
    /// dropped, as at a scheduled refresh.
    ///
    /// Beyond the entry's budget ([`REFRESH_BURST`], then one per
    /// `min-refresh-interval`) it is an ordinary read: the value the last
    /// fetch brought, or its not-found answer.
    pub async fn refresh(
        &self,
        arn: &SecretArn,
        version: &Version,
    ) -> Result<(Arc<Secret>, CacheStatus), CacheError> {
        self.counted(self.force(arn, version).await)
    }

    /// Reads `arn` at `version`, from the cache when it can.
    pub async fn get(
        &self,
        arn: &SecretArn,
        version: &Version,
    ) -> Result<(Arc<Secret>, CacheStatus), CacheError> {
        if let Some(secret) = self.fresh(arn, version, Arc::clone) {
            return Ok((secret, CacheStatus::Hit));
        }
        self.counted(self.read(arn, version).await)
    }

    /// The hot path: `f` applied to the fresh value of `arn` at `version`
    /// (a hit, counted as one), or `None` when the cache holds none, for
    /// [`Cache::get`] to serve. Takes no lock beyond the map's shard read
    /// lock, clones nothing and writes nothing shared unless it changes.
    pub fn fresh<R>(
        &self,
        arn: &SecretArn,
        version: &Version,
        f: impl FnOnce(&Arc<Secret>) -> R,
    ) -> Option<R> {
        let slot = self.inner.slots.get(&(arn, version) as &dyn KeyParts)?;
        let cached = slot.value.load();
        let cached = cached.as_ref()?;
        let ttl = Duration::from_nanos(self.inner.ttl_nanos.load(Ordering::Relaxed));
        if cached.fetched_at.elapsed() >= ttl {
            return None;
        }
        self.inner.touch(&slot);
        if !slot.read_since_fetch.load(Ordering::Relaxed) {
            slot.read_since_fetch.store(true, Ordering::Relaxed);
        }
        self.inner.metrics.read(CacheStatus::Hit);
        Some(f(&cached.secret))
    }

    /// Reports how a read was served.
    fn counted(
        &self,
        read: Result<(Arc<Secret>, CacheStatus), CacheError>,
    ) -> Result<(Arc<Secret>, CacheStatus), CacheError> {
        if let Ok((_, status)) = &read {
            self.inner.metrics.read(*status);
        }
        read
    }

    /// Fetches the current version of every ARN in the background, in
    /// BatchGetSecretValue calls of up to [`BATCH_LIMIT`] secrets of one
    /// region, at most [`PREFETCH_CONCURRENCY`] calls at a time; the rest go on regardless of a
    /// failed one, which is logged and retried until it succeeds or a reload
    /// removes it ([`Cache::retain`]): with backoff when the failure may pass
    /// by itself, else once every [`LASTING_FAILURE_RETRY`].
    #[cfg(test)]
    pub fn prefetch(&self, arns: Vec<SecretArn>) -> Arc<Prefetch> {
        self.prefetch_after(arns, std::future::ready(()))
    }

    /// [`Cache::prefetch`], started once `start` completes (serving starts).
    pub fn prefetch_after(
        &self,
        arns: Vec<SecretArn>,
        start: impl Future<Output = ()> + Send + 'static,
    ) -> Arc<Prefetch> {
        let progress = Arc::new(Prefetch {
            pending: AtomicUsize::new(arns.len()),
            failing: Mutex::new(BTreeSet::new()),
        });
        // Registered now, so that a reload before an ARN's turn stops it too.
        let work: Vec<_> = {
            let mut prefetching = self.inner.lock_prefetching();
            arns.into_iter()
                .map(|arn| {
                    let work = prefetching
                        .entry(arn.clone())
                        .or_insert_with(|| self.inner.tasks.child_token())
                        .clone();
                    (arn, work)
                })
                .collect()
        };
        let (inner, tracker) = (Arc::clone(&self.inner), Arc::clone(&progress));
        self.inner.spawn(async move {
            start.await;
            let started = Instant::now();
            let total = work.len();
            futures_util::stream::iter(batches(work, |(arn, _)| arn.batch_group()))
                .for_each_concurrent(PREFETCH_CONCURRENCY, |batch| {
                    inner.prefetch_batch(batch, &tracker)
                })
                .await;
            log::info!(
                "prefetched {total} resource(s) in {}ms; {} failing, retried in the background",
                started.elapsed().as_millis(),
                tracker.failing().len()
            );
        });
        progress
    }

    /// Drops every entry whose ARN is not in `keep` (resources removed by a
    /// reload) and stops their prefetches and timers; their values are wiped
    /// once no reader holds them.
    pub fn retain(&self, keep: &HashSet<&str>) {
        self.inner.lock_prefetching().retain(|arn, work| {
            let kept = keep.contains(arn.as_str());
            if !kept {
                work.cancel();
            }
            kept
        });
        let mut removed = Vec::new();
        self.inner.slots.retain(|key, slot| {
            let kept = keep.contains(key.arn.as_str());
            if !kept {
                removed.push(Arc::clone(slot));
            }
            kept
        });
        for slot in removed {
            slot.state().retire(&self.inner.bytes);
        }
    }

    /// [`Cache::refresh`], uncounted.
    async fn force(
        &self,
        arn: &SecretArn,
        version: &Version,
    ) -> Result<(Arc<Secret>, CacheStatus), CacheError> {
        let key = Key::new(arn, version);
        let slot = self.inner.slot(&key);
        let fetch = {
            let interval = self.inner.settings.load().min_refresh_interval;
            let mut state = slot.state();
            if let Some(fetch) = &state.inflight {
                Some(fetch.clone())
            } else if state
                .refreshes
                .take(Instant::now(), interval, REFRESH_BURST)
            {
                Some(self.inner.start_fetch_locked(&key, &slot, &mut state))
            } else {
                None
            }
        };
        match fetch {
            Some(fetch) => fetch
                .await
                .map(|secret| (secret, CacheStatus::Miss))
                .map_err(CacheError::Upstream),
            None => {
                log::debug!(
                    "forced refresh of {} served from the cache (cache.min-refresh-interval)",
                    key.arn
                );
                self.read(arn, version).await
            }
        }
    }

    /// [`Cache::get`], uncounted.
    async fn read(
        &self,
        arn: &SecretArn,
        version: &Version,
    ) -> Result<(Arc<Secret>, CacheStatus), CacheError> {
        let key = Key::new(arn, version);
        let settings = self.inner.settings.load();
        let slot = self.inner.slot(&key);
        // Until when an expired value in hand may be served, stale.
        let mut stale_until = None;
        if let Some(cached) = slot.value.load_full() {
            let age = cached.fetched_at.elapsed();
            if age < settings.ttl {
                slot.read_since_fetch.store(true, Ordering::Relaxed);
                return Ok((cached.secret.clone(), CacheStatus::Hit));
            }
            if age < settings.ttl + settings.max_stale {
                let state = slot.state();
                if state.inflight.is_some() || state.failures > 0 {
                    return Ok((cached.secret.clone(), CacheStatus::Stale));
                }
                stale_until = Some((cached, settings.ttl + settings.max_stale - age));
            }
        } else if let Some((err, until)) = &slot.state().not_found
            && Instant::now() < *until
        {
            return Err(CacheError::Upstream(err.clone()));
        }

        let fetch = if stale_until.is_some() && key.version == Version::Current {
            // An expired value that is being read: refreshed together with
            // the read values due with it, in shared batch calls, as the
            // refresh ahead would (with `refresh-ahead: 0`, the first reader
            // after an expiry often comes before the refresh timer).
            let mut due = vec![(key.clone(), Arc::clone(&slot))];
            due.extend(self.inner.due_soon(&due));
            self.inner.start_batch(due).swap_remove(0)
        } else {
            self.inner.start_fetch(&key, &slot)
        };
        // Stale while revalidate: with a value in hand, wait at most
        // `stale-wait` (and never past `max-stale`) for the fetch, then
        // serve that value while the fetch goes on.
        let fetched = match stale_until {
            Some((cached, left)) => {
                match tokio::time::timeout(settings.stale_wait.min(left), fetch).await {
                    Ok(fetched) => fetched,
                    Err(_) => return Ok((cached.secret.clone(), CacheStatus::Stale)),
                }
            }
            None => fetch.await,
        };
        match fetched {
            Ok(secret) => Ok((secret, CacheStatus::Miss)),
            Err(err) if err.is_transient() => match slot.value.load_full() {
                Some(c) if c.fetched_at.elapsed() < settings.ttl + settings.max_stale => {
                    Ok((c.secret.clone(), CacheStatus::Stale))
                }
                Some(_) => Err(CacheError::StaleLimit(err)),
                None if slot.lapsed.load(Ordering::Relaxed) => Err(CacheError::StaleLimit(err)),
                None => Err(CacheError::Upstream(err)),
            },
            Err(err) => Err(CacheError::Upstream(err)),
        }
    }
}

/// See [`Cache::downgrade`].
#[derive(Clone)]
pub struct WeakCache {
    inner: Weak<Inner>,
}

impl WeakCache {
    /// What the cache holds of the current version of `arn`; `None` when
    /// it has no entry for it (never asked for, or evicted) or is gone.
    pub fn stats(&self, arn: &SecretArn) -> Option<SecretStats> {
        let inner = self.inner.upgrade()?;
        // Cloned out of the map: no shard lock is held under the slot's.
        let slot = Arc::clone(&*inner.slots.get(&Key::new(arn, &Version::Current))?);
        let age = slot.value.load().as_ref().map(|c| c.fetched_at.elapsed());
        let last_outcome = slot.state().last_outcome;
        Some(SecretStats {
            age,
            last_outcome,
            version_changes: slot.version_changes.load(Ordering::Relaxed),
        })
    }
}

impl Inner {
    fn settings(&self) -> Arc<CacheConfig> {
        self.settings.load_full()
    }

    /// Spawns background work that ends with the cache.
    fn spawn<F>(&self, task: F) -> JoinHandle<Option<F::Output>>
    where
        F: Future + Send + 'static,
        F::Output: Send + 'static,
    {
        self.runtime
            .spawn(self.tasks.clone().run_until_cancelled_owned(task))
    }

    fn lock_prefetching(&self) -> MutexGuard<'_, HashMap<SecretArn, CancellationToken>> {
        self.prefetching
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// The first attempt, one batch call, runs within the concurrency
    /// bound; retries of a failure run on their own, one call per ARN, so
    /// they never hold up the others. All of it stops when `work` is
    /// cancelled (a reload removed the resource).
    async fn prefetch_batch(
        self: &Arc<Self>,
        batch: Vec<(SecretArn, CancellationToken)>,
        progress: &Arc<Prefetch>,
    ) {
        let (live, slots): (Vec<_>, Vec<_>) = {
            // `retain` cancels under this lock, then drops the slots.
            let _prefetching = self.lock_prefetching();
            batch
                .iter()
                .filter(|(_, work)| !work.is_cancelled())
                .map(|(arn, work)| {
                    let key = Key::new(arn, &Version::Current);
                    let slot = self.slot(&key);
                    ((arn.clone(), work.clone()), (key, slot))
                })
                .unzip()
        };
        let fetches = self.start_batch(slots);
        let results = futures_util::future::join_all(fetches).await;
        progress.pending.fetch_sub(batch.len(), Ordering::SeqCst);
        for ((arn, work), result) in live.into_iter().zip(results) {
            if let Err(err) = result {
                self.retry_prefetch(arn, work, err, progress);
            }
        }
    }

    /// Retries a failed prefetch until it succeeds or `work` is cancelled.
    fn retry_prefetch(
        self: &Arc<Self>,
        arn: SecretArn,
        work: CancellationToken,
        err: UpstreamError,
        progress: &Arc<Prefetch>,
    ) {
        let failing = Failing::new(progress, &arn);
        let inner = Arc::clone(self);
        self.spawn(work.clone().run_until_cancelled_owned(async move {
            let _failing = failing;
            let (mut err, mut failures) = (err, 1);
            loop {
                let delay = if err.is_transient() {
                    backoff(failures).max(Duration::from_secs(1))
                } else {
                    LASTING_FAILURE_RETRY
                };
                log::warn!(
                    "prefetch of {arn} failed ({err}); retrying in {}ms",
                    delay.as_millis()
                );
                tokio::time::sleep(delay).await;
                match inner.prefetch_fetch(&arn, &work).await {
                    Some(Ok(())) => break,
                    Some(Err(e)) => (err, failures) = (e, failures + 1),
                    None => return,
                }
            }
            log::info!("prefetch of {arn} succeeded after {failures} failure(s)");
        }));
    }

    /// Fetches the current version of `arn` now, joining a fetch already
    /// under way: the agent's own refreshes, not limited like a client's.
    /// `None` once `work` is cancelled: the resource is no longer configured.
    async fn prefetch_fetch(
        self: &Arc<Self>,
        arn: &SecretArn,
        work: &CancellationToken,
    ) -> Option<Result<(), UpstreamError>> {
        let key = Key::new(arn, &Version::Current);
        let slot = {
            // `retain` cancels under this lock, then drops the slots.
            let _prefetching = self.lock_prefetching();
            if work.is_cancelled() {
                return None;
            }
            self.slot(&key)
        };
        Some(self.start_fetch(&key, &slot).await.map(drop))
    }

    /// Marks a slot as used now. The clock only moves when a slot is
    /// created, so steady hits write nothing: entries read since the last
    /// insertion tie as the most recent, which is all eviction needs.
    fn touch(&self, slot: &Slot) {
        let now = self.clock.load(Ordering::Relaxed);
        if slot.last_used.load(Ordering::Relaxed) != now {
            slot.last_used.store(now, Ordering::Relaxed);
        }
    }

    /// The slot for `key`, created when missing. A new slot holds no value
    /// yet: to make room it evicts the least recently used slot without a
    /// value, never a value.
    fn slot(&self, key: &Key) -> Arc<Slot> {
        if let Some(slot) = self.slots.get(key) {
            self.touch(&slot);
            return slot.clone();
        }
        // The new slot takes the clock's current value and the clock moves
        // on, so a read after this insertion ranks above it.
        let now = self.clock.fetch_add(1, Ordering::Relaxed);
        let max_entries = self.settings().max_entries;
        // Neither kind can be over its bound while the whole map is under it.
        if self.slots.len() >= max_entries {
            self.evict(false, max_entries - 1, None);
        }
        self.slots
            .entry(key.clone())
            .or_insert_with(|| {
                Arc::new(Slot {
                    value: ArcSwapOption::empty(),
                    read_since_fetch: AtomicBool::new(false),
                    last_used: AtomicU64::new(now),
                    version_changes: AtomicU64::new(0),
                    lapsed: AtomicBool::new(false),
                    state: Mutex::new(SlotState::default()),
                })
            })
            .clone()
    }

    /// Evicts the least recently used slots that hold a value (`valued`) or
    /// do not, until at most `keep` of that kind are left, and for values,
    /// until they cost at most `max-bytes`; `spare` stays.
    /// Slots of the other kind are never touched, so failed lookups cannot
    /// push values out, and values only push out other values.
    fn evict(&self, valued: bool, keep: usize, spare: Option<&Key>) {
        let kind = |slot: &Slot| slot.value.load().is_some() == valued;
        let max_bytes = self.settings().max_bytes;
        let mut count = self.slots.iter().filter(|entry| kind(entry)).count();
        let over = |count: usize| {
            count > keep || (valued && self.bytes.load(Ordering::Relaxed) > max_bytes)
        };
        // Each round removes a slot or ends.
        while over(count) {
            count = count.saturating_sub(1);
            let oldest = self
                .slots
                .iter()
                .filter(|entry| kind(entry) && Some(entry.key()) != spare)
                .min_by_key(|entry| entry.last_used.load(Ordering::Relaxed))
                .map(|entry| entry.key().clone());
            let Some(key) = oldest else { return };
            if let Some((key, slot)) = self.slots.remove_if(&key, |_, slot| kind(slot)) {
                slot.state().retire(&self.bytes);
                log::debug!(
                    "cache full; evicted {}{} ({})",
                    key.arn,
                    key.version_note(),
                    if valued { "a value" } else { "no value" }
                );
            }
        }
    }

    /// Joins the fetch under way for this slot, or starts one.
    fn start_fetch(self: &Arc<Self>, key: &Key, slot: &Arc<Slot>) -> SharedFetch {
        let mut state = slot.state();
        self.start_fetch_locked(key, slot, &mut state)
    }

    /// [`Inner::start_fetch`] with the slot's state already locked.
    fn start_fetch_locked(
        self: &Arc<Self>,
        key: &Key,
        slot: &Arc<Slot>,
        state: &mut SlotState,
    ) -> SharedFetch {
        if let Some(fetch) = &state.inflight {
            return fetch.clone();
        }
        let inner = Arc::clone(self);
        let (key, task_slot) = (key.clone(), Arc::clone(slot));
        let task = self.spawn(async move {
            let result = inner.call(&key).await.map(Arc::new);
            inner.complete(&key, &task_slot, &result);
            result
        });
        let fetch = async move {
            let ended = |message: String| UpstreamError::Other {
                code: "InternalError".into(),
                message,
            };
            match task.await {
                Ok(Some(result)) => result,
                Ok(None) => Err(ended("the cache was dropped".into())),
                Err(e) => Err(ended(format!("the fetch task ended: {e}"))),
            }
        }
        .boxed()
        .shared();
        state.inflight = Some(fetch.clone());
        fetch
    }

    /// One GetSecretValue within the fetch deadline, which covers the wait
    /// for a turn among `max-concurrent-calls`. A fetch that had to wait and
    /// then ran out of time failed for want of a turn: [`UpstreamError::Busy`].
    async fn call(&self, key: &Key) -> Result<Secret, UpstreamError> {
        let deadline = Instant::now() + self.settings().fetch_timeout;
        let (_permit, waited) = match self.calls.try_acquire() {
            Ok(permit) => (permit, false),
            Err(_) => match tokio::time::timeout_at(deadline, self.calls.acquire()).await {
                Ok(Ok(permit)) => (permit, true),
                Ok(Err(_)) | Err(_) => return Err(UpstreamError::Busy),
            },
        };
        let started = Instant::now();
        let left = deadline.saturating_duration_since(started);
        if left.is_zero() {
            return Err(UpstreamError::Busy);
        }
        let fetch = self.fetcher.fetch(key.arn.clone(), key.version.clone());
        let result = with_deadline(left, fetch).await;
        let action = if key.arn.is_parameter() {
            GET_PARAMETER
        } else {
            GET_SECRET_VALUE
        };
        self.metrics
            .upstream_call(action, result.as_ref().map(drop), started.elapsed());
        match result {
            Err(UpstreamError::Timeout) if waited => Err(UpstreamError::Busy),
            result => result,
        }
    }

    /// Fetches the current version of each slot: joins the fetch under way
    /// for a slot that has one; the others are fetched together, in
    /// BatchGetSecretValue calls of up to [`BATCH_LIMIT`] secrets of one
    /// region. Each reader of a slot joins its part as it would a single
    /// fetch. Returns one fetch per slot, in order.
    fn start_batch(self: &Arc<Self>, slots: Vec<(Key, Arc<Slot>)>) -> Vec<SharedFetch> {
        let mut fetches = Vec::with_capacity(slots.len());
        let mut todo = Vec::new();
        for (key, slot) in slots {
            let mut state = slot.state();
            if let Some(fetch) = &state.inflight {
                fetches.push(fetch.clone());
                continue;
            }
            let (tx, rx) = oneshot::channel();
            let fetch = async move {
                rx.await.unwrap_or_else(|_| {
                    Err(UpstreamError::Other {
                        code: "InternalError".into(),
                        message: "the fetch task ended".into(),
                    })
                })
            }
            .boxed()
            .shared();
            state.inflight = Some(fetch.clone());
            fetches.push(fetch);
            drop(state);
            todo.push(Part { key, slot, tx });
        }
        for batch in batches(todo, |part| part.key.arn.batch_group()) {
            let inner = Arc::clone(self);
            self.spawn(async move { inner.run_batch(batch).await });
        }
        fetches
    }

    /// One BatchGetSecretValue for `batch` (one call is a GetSecretValue);
    /// when AWS refuses the batch call, or leaves a secret out of its
    /// answer, single calls. Each secret's outcome is its own.
    async fn run_batch(self: &Arc<Self>, mut batch: Vec<Part>) {
        // Parameters have no BatchGetSecretValue: one call each.
        if batch.len() > 1 && !batch[0].key.arn.is_parameter() && self.batch_allowed() {
            let arns = batch.iter().map(|p| p.key.arn.clone()).collect();
            match self.call_batch(arns).await {
                Ok(answer) => {
                    for (arn, result) in answer {
                        if let Some(i) = batch.iter().position(|p| p.key.arn == arn) {
                            self.finish(batch.swap_remove(i), result);
                        }
                    }
                }
                Err(err) if err.is_transient() => {
                    for part in batch {
                        self.finish(part, Err(err.clone()));
                    }
                    return;
                }
                Err(err) => {
                    log::warn!(
                        "BatchGetSecretValue was refused ({err}); fetching one secret per call, and trying it again in {}",
                        humantime::format_duration(BATCH_REFUSED_RETRY)
                    );
                    *self.lock_batch_refused() = Some(Instant::now() + BATCH_REFUSED_RETRY);
                }
            }
        }
        futures_util::stream::iter(batch)
            .for_each_concurrent(PREFETCH_CONCURRENCY, |part| async move {
                let result = self.call(&part.key).await;
                self.finish(part, result);
            })
            .await;
    }

    fn finish(self: &Arc<Self>, part: Part, result: Result<Secret, UpstreamError>) {
        let result = result.map(Arc::new);
        self.complete(&part.key, &part.slot, &result);
        // Nobody waiting is fine.
        let _ = part.tx.send(result);
    }

    fn lock_batch_refused(&self) -> MutexGuard<'_, Option<Instant>> {
        self.batch_refused_until
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    fn batch_allowed(&self) -> bool {
        self.lock_batch_refused()
            .is_none_or(|until| Instant::now() >= until)
    }

    /// One BatchGetSecretValue within the fetch deadline, as [`Inner::call`].
    async fn call_batch(&self, arns: Vec<SecretArn>) -> Result<BatchAnswer, UpstreamError> {
        let deadline = Instant::now() + self.settings().fetch_timeout;
        let (_permit, waited) = match self.calls.try_acquire() {
            Ok(permit) => (permit, false),
            Err(_) => match tokio::time::timeout_at(deadline, self.calls.acquire()).await {
                Ok(Ok(permit)) => (permit, true),
                Ok(Err(_)) | Err(_) => return Err(UpstreamError::Busy),
            },
        };
        let started = Instant::now();
        let left = deadline.saturating_duration_since(started);
        if left.is_zero() {
            return Err(UpstreamError::Busy);
        }
        let result = with_deadline(left, self.fetcher.fetch_batch(arns)).await;
        self.metrics.upstream_call(
            BATCH_GET_SECRET_VALUE,
            result.as_ref().map(drop),
            started.elapsed(),
        );
        match result {
            Err(UpstreamError::Timeout) if waited => Err(UpstreamError::Busy),
            result => result,
        }
    }

    /// Refreshes the slot's value within [`GATHER_WINDOW`], together with
    /// the others due meanwhile.
    fn refresh_soon(self: &Arc<Self>, key: Key, slot: Arc<Slot>) {
        if key.version != Version::Current {
            drop(self.start_fetch(&key, &slot));
            return;
        }
        let first = {
            let mut due = self.lock_due();
            due.push((key, slot));
            due.len() == 1
        };
        if first {
            let window = (self.settings().refresh_ahead / 4).min(GATHER_WINDOW);
            let inner = Arc::clone(self);
            self.spawn(async move {
                tokio::time::sleep(window).await;
                let due = std::mem::take(&mut *inner.lock_due());
                let settings = inner.settings();
                let now = Instant::now();
                let mut live: Vec<_> = due
                    .into_iter()
                    .filter(|(_, slot)| !slot.state().retired)
                    // Not one a reader had refreshed meanwhile.
                    .filter(|(_, slot)| {
                        slot.value.load().as_ref().is_none_or(|cached| {
                            cached.fetched_at + settings.ttl - settings.refresh_ahead <= now
                        })
                    })
                    .collect();
                live.extend(inner.due_soon(&live));
                drop(inner.start_batch(live));
            });
        }
    }

    /// Read values, other than `taken`, whose refresh ahead is due within
    /// `refresh-ahead` from now (so before they expire), or within a fifth
    /// of the TTL when that is longer:
    /// refreshed a little early with those due now, they share their calls,
    /// and from then on their refreshes fall due together.
    fn due_soon(&self, taken: &[(Key, Arc<Slot>)]) -> Vec<(Key, Arc<Slot>)> {
        let settings = self.settings();
        // With a shorter `refresh-ahead` (or 0) too, values due within a
        // fifth of the TTL are taken early, once: from then on they fall
        // due together.
        let reach = settings.refresh_ahead.max(settings.ttl / 5);
        let horizon = Instant::now() + reach;
        let taken: HashSet<&Key> = taken.iter().map(|(key, _)| key).collect();
        let soon: Vec<_> = self
            .slots
            .iter()
            .filter(|entry| entry.key().version == Version::Current)
            .filter(|entry| !taken.contains(entry.key()))
            .filter(|entry| entry.read_since_fetch.load(Ordering::Relaxed))
            .filter(|entry| {
                entry.value.load().as_ref().is_some_and(|cached| {
                    cached.fetched_at + settings.ttl - settings.refresh_ahead <= horizon
                })
            })
            .map(|entry| (entry.key().clone(), Arc::clone(entry.value())))
            .collect();
        // Not those retrying a failure: they keep their backoff.
        soon.into_iter()
            .filter(|(_, slot)| {
                let state = slot.state();
                state.failures == 0 && state.inflight.is_none()
            })
            .collect()
    }

    fn lock_due(&self) -> MutexGuard<'_, Vec<(Key, Arc<Slot>)>> {
        self.due.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Records a fetch's outcome and schedules the slot's next background step.
    fn complete(
        self: &Arc<Self>,
        key: &Key,
        slot: &Arc<Slot>,
        result: &Result<Arc<Secret>, UpstreamError>,
    ) {
        let settings = self.settings();
        let mut state = slot.state();
        state.inflight = None;
        state.stop_timer();
        state.last_outcome = Some(result.as_ref().map_or_else(UpstreamError::kind, |_| "ok"));
        let evict = match result {
            Ok(secret) => {
                state.failures = 0;
                state.not_found = None;
                slot.lapsed.store(false, Ordering::Relaxed);
                if settings.ttl.is_zero() {
                    return;
                }
                let fetched_at = Instant::now();
                let old = slot.value.swap(Some(Arc::new(Cached {
                    secret: Arc::clone(secret),
                    fetched_at,
                })));
                state.count(&self.bytes, cost(key, secret));
                if old
                    .as_ref()
                    .is_some_and(|old| old.secret.version_id != secret.version_id)
                {
                    slot.version_changes.fetch_add(1, Ordering::Relaxed);
                }
                let had_value = old.is_some();
                slot.read_since_fetch.store(false, Ordering::Relaxed);
                let refresh_at = fetched_at + settings.ttl - settings.refresh_ahead;
                if !state.retired {
                    state.timer = Some(self.spawn_refresh(key, slot, refresh_at));
                }
                (!had_value && self.slots.len() > settings.max_entries)
                    || self.bytes.load(Ordering::Relaxed) > settings.max_bytes
            }
            Err(err) if err.is_transient() => {
                let Some(cached) = slot.value.load_full() else {
                    return;
                };
                state.failures += 1;
                let stale_until = cached.fetched_at + settings.ttl + settings.max_stale;
                let delay = backoff(state.failures);
                log::warn!(
                    "refresh of {}{} failed ({}); serving the cached value for up to {} more, retrying in {}ms",
                    key.arn,
                    key.version_note(),
                    key.error_note(err),
                    humantime::format_duration(round_secs(
                        stale_until.saturating_duration_since(Instant::now())
                    )),
                    delay.as_millis()
                );
                if !state.retired {
                    state.timer =
                        Some(self.spawn_retry(key, slot, Instant::now() + delay, stale_until));
                }
                false
            }
            Err(err) => {
                state.failures = 0;
                state.not_found = (err.is_not_found() && !settings.negative_ttl.is_zero())
                    .then(|| (err.clone(), Instant::now() + settings.negative_ttl));
                let dropped = slot.value.swap(None).is_some();
                state.count(&self.bytes, 0);
                if dropped {
                    log::warn!(
                        "{}{} is no longer served: {}",
                        key.arn,
                        key.version_note(),
                        key.error_note(err)
                    );
                }
                false
            }
        };
        // Not under this slot's lock: eviction locks the slots it evicts.
        drop(state);
        if evict {
            self.evict(true, settings.max_entries, Some(key));
        }
    }

    /// At `at`, refreshes the value if it was read since it was fetched.
    fn spawn_refresh(self: &Arc<Self>, key: &Key, slot: &Arc<Slot>, at: Instant) -> AbortHandle {
        let inner = Arc::downgrade(self);
        let (key, slot) = (key.clone(), Arc::clone(slot));
        self.spawn(async move {
            tokio::time::sleep_until(at).await;
            if !slot.read_since_fetch.load(Ordering::Relaxed) {
                return; // idle: let it expire
            }
            if let Some(inner) = inner.upgrade() {
                inner.refresh_soon(key, slot);
            }
        })
        .abort_handle()
    }

    /// At `at`, tries again, unless the value has gone past `stale_until`,
    /// in which case it is dropped and reads fail closed.
    fn spawn_retry(
        self: &Arc<Self>,
        key: &Key,
        slot: &Arc<Slot>,
        at: Instant,
        stale_until: Instant,
    ) -> AbortHandle {
        let inner = Arc::downgrade(self);
        let (key, slot) = (key.clone(), Arc::clone(slot));
        self.spawn(async move {
            if at >= stale_until {
                tokio::time::sleep_until(stale_until).await;
                slot.lapsed.store(true, Ordering::Relaxed);
                let mut state = slot.state();
                let dropped = slot.value.swap(None).is_some();
                if let Some(inner) = inner.upgrade() {
                    state.count(&inner.bytes, 0);
                }
                drop(state);
                if dropped {
                    log::warn!(
                        "{} is past max-stale and AWS still fails; no longer served",
                        key.arn
                    );
                }
                return;
            }
            tokio::time::sleep_until(at).await;
            if let Some(inner) = inner.upgrade() {
                drop(inner.start_fetch(&key, &slot));
            }
        })
        .abort_handle()
    }
}

/// What a cached value costs against `max-bytes`: its value, its
/// metadata and key, and the fixed size of a slot holding it.
fn cost(key: &Key, secret: &Secret) -> usize {
    let text = [
        secret.arn.len(),
        secret.name.len(),
        secret.version_id.as_ref().map_or(0, String::len),
        key.arn.as_str().len(),
    ];
    let stages: usize = secret.version_stages.iter().map(String::len).sum();
    secret.value.len()
        + text.iter().sum::<usize>()
        + stages
        + size_of::<Secret>()
        + size_of::<Cached>()
        + size_of::<Slot>()
}

/// One secret's share of a batch: its slot, and where its outcome goes.
struct Part {
    key: Key,
    slot: Arc<Slot>,
    tx: oneshot::Sender<Result<Arc<Secret>, UpstreamError>>,
}

/// `items` in groups of at most [`BATCH_LIMIT`] of one batch group (service
/// and region, [`SecretArn::batch_group`]) each.
fn batches<T>(items: Vec<T>, region: impl Fn(&T) -> &str) -> Vec<Vec<T>> {
    let mut by_region: Vec<(String, Vec<Vec<T>>)> = Vec::new();
    for item in items {
        let i = match by_region.iter().position(|(r, _)| r == region(&item)) {
            Some(i) => i,
            None => {
                by_region.push((region(&item).to_owned(), vec![Vec::new()]));
                by_region.len() - 1
            }
        };
        let groups = &mut by_region[i].1;
        if groups.last().is_none_or(|g| g.len() == BATCH_LIMIT) {
            groups.push(Vec::new());
        }
        if let Some(group) = groups.last_mut() {
            group.push(item);
        }
    }
    by_region.into_iter().flat_map(|(_, g)| g).collect()
}

fn nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

/// Exponential backoff with full jitter in its upper half.
fn backoff(failures: u32) -> Duration {
    let base = FIRST_BACKOFF
        .saturating_mul(1 << failures.saturating_sub(1).min(16))
        .min(MAX_BACKOFF);
    base / 2 + base.mul_f64(fastrand::f64() / 2.0)
}

fn round_secs(d: Duration) -> Duration {
    Duration::from_secs(d.as_secs())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::secret::{Kind, secret_bytes};
    use std::sync::atomic::AtomicUsize;

    /// A scripted upstream: counts calls, answers after `delay` with the
    /// next scripted outcome (or a value naming the call number). It knows
    /// no version ids: asking for one is `VersionNotFound`.
    #[derive(Default)]
    struct FakeUpstream {
        calls: AtomicUsize,
        delay: Mutex<Duration>,
        failure: Mutex<Option<UpstreamError>>,
        /// Calls under way now, and the most there ever were at once.
        in_flight: AtomicUsize,
        max_in_flight: AtomicUsize,
        /// BatchGetSecretValue calls (also counted in `calls`).
        batch_calls: AtomicUsize,
        /// Batch calls are refused as a whole (access denied).
        batch_refused: AtomicBool,
        /// ARNs a batch answer reports as not found, on their own.
        missing: Mutex<HashSet<String>>,
        /// ARNs a batch answer leaves out.
        omitted: Mutex<HashSet<String>>,
        /// Bytes of each value; 0 for a short text naming the call.
        value_size: AtomicUsize,
    }

    /// Counts a call out of `in_flight` when it ends, or is dropped at its deadline.
    struct InFlight(Arc<FakeUpstream>);

    impl Drop for InFlight {
        fn drop(&mut self) {
            self.0.in_flight.fetch_sub(1, Ordering::SeqCst);
        }
    }

    impl FakeUpstream {
        fn calls(&self) -> usize {
            self.calls.load(Ordering::SeqCst)
        }
        fn max_in_flight(&self) -> usize {
            self.max_in_flight.load(Ordering::SeqCst)
        }
        fn fail_with(&self, err: Option<UpstreamError>) {
            *self.failure.lock().unwrap() = err;
        }
        fn set_delay(&self, d: Duration) {
            *self.delay.lock().unwrap() = d;
        }
        fn batch_calls(&self) -> usize {
            self.batch_calls.load(Ordering::SeqCst)
        }
        /// Starts a call: its number, and its share of `in_flight`.
        fn begin(self: &Arc<Self>) -> (usize, InFlight) {
            let n = self.calls.fetch_add(1, Ordering::SeqCst) + 1;
            let now = self.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
            self.max_in_flight.fetch_max(now, Ordering::SeqCst);
            (n, InFlight(Arc::clone(self)))
        }
    }

    fn fake_secret(arn: &SecretArn, n: usize) -> Secret {
        Secret {
            arn: arn.to_string(),
            name: "n".into(),
            version_id: Some(format!("v{n}")),
            version_stages: vec!["AWSCURRENT".into()],
            created_date: None,
            kind: Kind::Text,
            value: secret_bytes(format!("value-{n}").into_bytes()),
            parameter: None,
        }
    }

    impl Fetch for Arc<FakeUpstream> {
        fn fetch(
            &self,
            arn: SecretArn,
            version: Version,
        ) -> BoxFuture<'static, Result<Secret, UpstreamError>> {
            let (n, in_flight) = self.begin();
            let delay = *self.delay.lock().unwrap();
            let failure = self.failure.lock().unwrap().clone();
            let size = self.value_size.load(Ordering::SeqCst);
            async move {
                let _in_flight = in_flight;
                tokio::time::sleep(delay).await;
                if let Some(err) = failure {
                    return Err(err);
                }
                if let Version::Id(id) = version {
                    return Err(UpstreamError::VersionNotFound(format!("no version {id}")));
                }
                let mut secret = fake_secret(&arn, n);
                if size > 0 {
                    secret.value = secret_bytes(vec![b'x'; size]);
                }
                Ok(secret)
            }
            .boxed()
        }

        /// One call; a transient failure fails it as a whole, any other is
        /// each secret's own.
        fn fetch_batch(
            &self,
            arns: Vec<SecretArn>,
        ) -> BoxFuture<'static, Result<BatchAnswer, UpstreamError>> {
            let (n, in_flight) = self.begin();
            self.batch_calls.fetch_add(1, Ordering::SeqCst);
            let delay = *self.delay.lock().unwrap();
            let failure = self.failure.lock().unwrap().clone();
            let refused = self.batch_refused.load(Ordering::SeqCst);
            let missing = self.missing.lock().unwrap().clone();
            let omitted = self.omitted.lock().unwrap().clone();
            async move {
                let _in_flight = in_flight;
                tokio::time::sleep(delay).await;
                if refused {
                    return Err(denied());
                }
                if let Some(err) = failure.as_ref().filter(|e| e.is_transient()) {
                    return Err(err.clone());
                }
                Ok(arns
                    .into_iter()
                    .filter(|arn| !omitted.contains(arn.as_str()))
                    .map(|arn| {
                        let result = if missing.contains(arn.as_str()) {
                            Err(UpstreamError::SecretNotFound("gone".into()))
                        } else if let Some(err) = &failure {
                            Err(err.clone())
                        } else {
                            Ok(fake_secret(&arn, n))
                        };
                        (arn, result)
                    })
                    .collect())
            }
            .boxed()
        }
    }

    fn settings() -> CacheConfig {
        CacheConfig {
            ttl: Duration::from_secs(100),
            refresh_ahead: Duration::from_secs(20),
            max_stale: Duration::from_secs(60),
            max_entries: 10,
            max_bytes: 1 << 30,
            prefetch: false,
            fetch_timeout: Duration::from_secs(5),
            min_refresh_interval: Duration::from_secs(1),
            negative_ttl: Duration::from_secs(30),
            stale_wait: Duration::from_millis(200),
            new_names_per_second: 10,
        }
    }

    /// `max-concurrent-calls` in tests that do not test it.
    const CALLS: usize = 32;

    fn arn(n: usize) -> SecretArn {
        SecretArn::parse(&format!(
            "arn:aws:secretsmanager:us-west-1:999999999999:secret:s{n}"
        ))
        .unwrap()
    }

    fn setup(settings: CacheConfig) -> (Arc<FakeUpstream>, Cache) {
        setup_with_calls(settings, CALLS)
    }

    fn setup_with_calls(settings: CacheConfig, calls: usize) -> (Arc<FakeUpstream>, Cache) {
        let (fake, _, cache) = setup_recorded(settings, calls);
        (fake, cache)
    }

    fn setup_recorded(
        settings: CacheConfig,
        calls: usize,
    ) -> (Arc<FakeUpstream>, Arc<Recorder>, Cache) {
        let fake = Arc::new(FakeUpstream::default());
        let recorder = Arc::new(Recorder::default());
        let cache = Cache::new(Arc::new(fake.clone()), recorder.clone(), settings, calls);
        (fake, recorder, cache)
    }

    /// What the cache reported.
    #[derive(Default)]
    struct Recorder {
        /// By [`CacheStatus`].
        reads: [AtomicUsize; CacheStatus::ALL.len()],
        /// Calls to AWS, and those of them that failed.
        calls: AtomicUsize,
        failed_calls: AtomicUsize,
    }

    impl Recorder {
        fn reads(&self) -> [usize; CacheStatus::ALL.len()] {
            CacheStatus::ALL.map(|s| self.reads[s as usize].load(Ordering::SeqCst))
        }
    }

    impl CacheMetrics for Recorder {
        fn read(&self, status: CacheStatus) {
            self.reads[status as usize].fetch_add(1, Ordering::SeqCst);
        }
        fn upstream_call(&self, _: &'static str, result: Result<(), &UpstreamError>, _: Duration) {
            self.calls.fetch_add(1, Ordering::SeqCst);
            if result.is_err() {
                self.failed_calls.fetch_add(1, Ordering::SeqCst);
            }
        }
    }

    async fn read(cache: &Cache, n: usize) -> Result<(String, CacheStatus), CacheError> {
        text(cache.get(&arn(n), &Version::Current).await)
    }

    async fn refresh(cache: &Cache, n: usize) -> Result<(String, CacheStatus), CacheError> {
        text(cache.refresh(&arn(n), &Version::Current).await)
    }

    fn text(
        read: Result<(Arc<Secret>, CacheStatus), CacheError>,
    ) -> Result<(String, CacheStatus), CacheError> {
        read.map(|(s, status)| (String::from_utf8(s.value.to_vec()).unwrap(), status))
    }

    fn version_id(n: usize) -> Version {
        Version::Id(format!("unknown-{n}"))
    }

    /// Lets spawned tasks run without moving the paused clock.
    async fn settle() {
        for _ in 0..10 {
            tokio::task::yield_now().await;
        }
    }

    const UNAVAILABLE: UpstreamError = UpstreamError::Timeout;

    fn denied() -> UpstreamError {
        UpstreamError::AccessDenied {
            code: "AccessDeniedException".into(),
            message: "no".into(),
        }
    }

    #[tokio::test(start_paused = true)]
    async fn hit_within_ttl_and_miss_after() {
        let (fake, cache) = setup(settings());
        assert_eq!(
            read(&cache, 1).await.unwrap(),
            ("value-1".into(), CacheStatus::Miss)
        );
        tokio::time::sleep(Duration::from_secs(99)).await;
        // Not read during its TTL (the fetching read does not count): no refresh.
        assert_eq!(fake.calls(), 1);
        assert_eq!(
            read(&cache, 1).await.unwrap(),
            ("value-1".into(), CacheStatus::Hit)
        );
        tokio::time::sleep(Duration::from_secs(2)).await;
        assert_eq!(
            read(&cache, 1).await.unwrap(),
            ("value-2".into(), CacheStatus::Miss)
        );
        assert_eq!(fake.calls(), 2);
    }

    #[tokio::test(start_paused = true)]
    async fn concurrent_misses_share_one_fetch() {
        let (fake, cache) = setup(settings());
        fake.set_delay(Duration::from_millis(1500));
        let reads: Vec<_> = (0..200)
            .map(|_| {
                let cache = cache.clone();
                tokio::spawn(async move { read(&cache, 1).await })
            })
            .collect();
        for r in reads {
            assert_eq!(
                r.await.unwrap().unwrap(),
                ("value-1".into(), CacheStatus::Miss)
            );
        }
        assert_eq!(fake.calls(), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn read_entries_refresh_ahead_without_waiting() {
        let (fake, cache) = setup(settings());
        fake.set_delay(Duration::from_secs(1));
        read(&cache, 1).await.unwrap();
        tokio::time::sleep(Duration::from_secs(10)).await;
        assert_eq!(read(&cache, 1).await.unwrap().1, CacheStatus::Hit);
        // The refresh is due at 81 s (fetched at 1 s), starts at the end
        // of its gathering window, 82 s, and takes 1 s.
        tokio::time::sleep(Duration::from_millis(71_500)).await;
        settle().await;
        assert_eq!(fake.calls(), 2);
        // While it is in flight the old value is served at once.
        assert_eq!(
            read(&cache, 1).await.unwrap(),
            ("value-1".into(), CacheStatus::Hit)
        );
        tokio::time::sleep(Duration::from_secs(2)).await;
        assert_eq!(
            read(&cache, 1).await.unwrap(),
            ("value-2".into(), CacheStatus::Hit)
        );
    }

    #[tokio::test(start_paused = true)]
    async fn stale_within_bound_then_fail_closed_then_recover() {
        let (fake, cache) = setup(settings());
        read(&cache, 1).await.unwrap();
        read(&cache, 1).await.unwrap(); // marks it read: it will be refreshed
        fake.fail_with(Some(UNAVAILABLE));
        tokio::time::sleep(Duration::from_secs(81)).await;
        settle().await;
        assert!(fake.calls() >= 2, "refresh ahead was attempted");
        // Past the TTL, within max-stale: the old value, marked stale.
        tokio::time::sleep(Duration::from_secs(30)).await;
        assert_eq!(
            read(&cache, 1).await.unwrap(),
            ("value-1".into(), CacheStatus::Stale)
        );
        let retries = fake.calls();
        assert!(retries >= 4, "retried with backoff: {retries}");
        // Past ttl + max-stale: fail closed.
        tokio::time::sleep(Duration::from_secs(50)).await;
        settle().await;
        assert!(matches!(
            read(&cache, 1).await,
            Err(CacheError::StaleLimit(_))
        ));
        // Recovery.
        assert!(matches!(
            read(&cache, 1).await,
            Err(CacheError::StaleLimit(_))
        ));
        fake.fail_with(None);
        let (value, status) = read(&cache, 1).await.unwrap();
        assert_eq!(status, CacheStatus::Miss);
        assert_ne!(value, "value-1");
    }

    #[tokio::test(start_paused = true)]
    async fn expired_value_is_served_stale_after_stale_wait_while_the_fetch_goes_on() {
        let (fake, cache) = setup(settings());
        read(&cache, 1).await.unwrap();
        tokio::time::sleep(Duration::from_secs(101)).await;
        fake.set_delay(Duration::from_secs(3));
        let started = Instant::now();
        assert_eq!(
            read(&cache, 1).await.unwrap(),
            ("value-1".into(), CacheStatus::Stale)
        );
        assert_eq!(started.elapsed(), Duration::from_millis(200));
        // Others joining the fetch under way do not wait at all.
        let started = Instant::now();
        assert_eq!(read(&cache, 1).await.unwrap().1, CacheStatus::Stale);
        assert_eq!(started.elapsed(), Duration::ZERO);
        assert_eq!(fake.calls(), 2);
        // The fetch went on and brought the new value.
        tokio::time::sleep(Duration::from_secs(3)).await;
        assert_eq!(
            read(&cache, 1).await.unwrap(),
            ("value-2".into(), CacheStatus::Hit)
        );
        assert_eq!(fake.calls(), 2);
        // A fetch that answers within stale-wait is waited for.
        let (first, _) = read(&cache, 2).await.unwrap();
        tokio::time::sleep(Duration::from_secs(101)).await;
        fake.set_delay(Duration::from_millis(150));
        let started = Instant::now();
        let (value, status) = read(&cache, 2).await.unwrap();
        assert_eq!(status, CacheStatus::Miss);
        assert_ne!(value, first, "a new value");
        assert_eq!(started.elapsed(), Duration::from_millis(150));
    }

    #[tokio::test(start_paused = true)]
    async fn stale_wait_never_serves_past_max_stale_nor_without_a_value() {
        let (fake, cache) = setup(settings());
        read(&cache, 1).await.unwrap();
        fake.set_delay(Duration::from_secs(3));
        // 100 ms short of ttl + max-stale: served stale at the bound.
        tokio::time::sleep(Duration::from_millis(159_900)).await;
        let started = Instant::now();
        assert_eq!(read(&cache, 1).await.unwrap().1, CacheStatus::Stale);
        assert_eq!(started.elapsed(), Duration::from_millis(100));
        tokio::time::sleep(Duration::from_secs(3)).await;
        // Past ttl + max-stale: the reader waits for the fetch.
        let (fake, cache) = setup(settings());
        read(&cache, 1).await.unwrap();
        tokio::time::sleep(Duration::from_secs(161)).await;
        fake.set_delay(Duration::from_secs(3));
        let started = Instant::now();
        assert_eq!(
            read(&cache, 1).await.unwrap(),
            ("value-2".into(), CacheStatus::Miss)
        );
        assert_eq!(started.elapsed(), Duration::from_secs(3));
        // No value in hand: the reader waits for the fetch too.
        let started = Instant::now();
        assert_eq!(read(&cache, 2).await.unwrap().1, CacheStatus::Miss);
        assert_eq!(started.elapsed(), Duration::from_secs(3));
    }

    #[tokio::test(start_paused = true)]
    async fn stale_wait_zero_serves_an_expired_value_at_once() {
        let (fake, cache) = setup(CacheConfig {
            stale_wait: Duration::ZERO,
            ..settings()
        });
        read(&cache, 1).await.unwrap();
        tokio::time::sleep(Duration::from_secs(101)).await;
        fake.set_delay(Duration::from_millis(10));
        let started = Instant::now();
        assert_eq!(read(&cache, 1).await.unwrap().1, CacheStatus::Stale);
        assert_eq!(started.elapsed(), Duration::ZERO);
        tokio::time::sleep(Duration::from_millis(20)).await;
        settle().await;
        assert_eq!(
            read(&cache, 1).await.unwrap(),
            ("value-2".into(), CacheStatus::Hit)
        );
    }

    #[tokio::test(start_paused = true)]
    async fn idle_expired_value_served_stale_when_fetch_fails() {
        let (fake, cache) = setup(settings());
        read(&cache, 1).await.unwrap();
        tokio::time::sleep(Duration::from_secs(101)).await;
        fake.fail_with(Some(UNAVAILABLE));
        assert_eq!(
            read(&cache, 1).await.unwrap(),
            ("value-1".into(), CacheStatus::Stale)
        );
        tokio::time::sleep(Duration::from_secs(60)).await;
        assert!(matches!(
            read(&cache, 1).await,
            Err(CacheError::Upstream(_) | CacheError::StaleLimit(_))
        ));
    }

    #[tokio::test(start_paused = true)]
    async fn access_denied_stops_serving_at_next_refresh() {
        let (fake, cache) = setup(settings());
        read(&cache, 1).await.unwrap();
        read(&cache, 1).await.unwrap();
        fake.fail_with(Some(denied()));
        tokio::time::sleep(Duration::from_secs(81)).await;
        settle().await;
        // Still within the TTL, but the refresh said no: not served.
        assert_eq!(read(&cache, 1).await, Err(CacheError::Upstream(denied())));
    }

    #[tokio::test(start_paused = true)]
    async fn lru_eviction() {
        let mut s = settings();
        s.max_entries = 3;
        let (_, cache) = setup(s);
        for n in 0..3 {
            read(&cache, n).await.unwrap();
        }
        read(&cache, 0).await.unwrap(); // 1 is now the least recently used
        read(&cache, 3).await.unwrap();
        // A hit after the latest insertion outranks that insertion.
        read(&cache, 0).await.unwrap();
        read(&cache, 4).await.unwrap(); // evicts 2, not 0 or 3
        assert_eq!(read(&cache, 0).await.unwrap().1, CacheStatus::Hit);
        assert_eq!(read(&cache, 3).await.unwrap().1, CacheStatus::Hit);
        assert_eq!(read(&cache, 2).await.unwrap().1, CacheStatus::Miss);
        // Back to the first scenario's checks, from a clean cache.
        let (fake, cache) = setup(CacheConfig {
            max_entries: 3,
            ..settings()
        });
        for n in 0..3 {
            read(&cache, n).await.unwrap();
        }
        read(&cache, 0).await.unwrap();
        read(&cache, 3).await.unwrap();
        assert_eq!(cache.len(), 3);
        assert_eq!(fake.calls(), 4);
        assert_eq!(read(&cache, 0).await.unwrap().1, CacheStatus::Hit);
        assert_eq!(read(&cache, 1).await.unwrap().1, CacheStatus::Miss);
    }

    #[tokio::test(start_paused = true)]
    async fn values_are_bounded_in_bytes_least_recently_used_first() {
        const VALUE: usize = 100_000;
        let (fake, cache) = setup(CacheConfig {
            max_entries: 100,
            max_bytes: 3 * VALUE + VALUE / 2,
            ..settings()
        });
        fake.value_size.store(VALUE, Ordering::SeqCst);
        for n in 0..3 {
            read(&cache, n).await.unwrap();
        }
        let three = cache.bytes();
        assert!(
            three > 3 * VALUE && three < 3 * VALUE + VALUE / 2,
            "{three}"
        );
        // A hit counts nothing.
        read(&cache, 0).await.unwrap();
        assert_eq!(cache.bytes(), three);
        // 1 is now the least recently used; a fourth value pushes it out.
        read(&cache, 3).await.unwrap();
        settle().await;
        assert_eq!(cache.len(), 3);
        assert_eq!(cache.bytes(), three);
        for n in [0, 2, 3] {
            assert_eq!(read(&cache, n).await.unwrap().1, CacheStatus::Hit, "{n}");
        }
        assert_eq!(read(&cache, 1).await.unwrap().1, CacheStatus::Miss);
        assert!(cache.bytes() <= 3 * VALUE + VALUE / 2);
        // Small values fit many more: the bound is in bytes, not entries.
        fake.value_size.store(0, Ordering::SeqCst);
        for n in 10..40 {
            read(&cache, n).await.unwrap();
        }
        assert!(cache.len() > 30, "{}", cache.len());
        assert!(cache.bytes() <= 3 * VALUE + VALUE / 2);
        // A value dropped on a lasting failure, or by a reload, counts no more.
        let before = cache.bytes();
        fake.fail_with(Some(denied()));
        cache
            .refresh(&arn(10), &Version::Current)
            .await
            .unwrap_err();
        assert!(cache.bytes() < before);
        cache.retain(&HashSet::new());
        assert_eq!((cache.len(), cache.bytes()), (0, 0));
    }

    #[tokio::test(start_paused = true)]
    async fn ttl_zero_always_fetches_but_coalesces() {
        let mut s = settings();
        s.ttl = Duration::ZERO;
        s.refresh_ahead = Duration::ZERO;
        let (fake, cache) = setup(s);
        fake.set_delay(Duration::from_millis(100));
        assert_eq!(read(&cache, 1).await.unwrap().1, CacheStatus::Miss);
        assert_eq!(read(&cache, 1).await.unwrap().1, CacheStatus::Miss);
        assert_eq!(fake.calls(), 2);
        let (a, b) = tokio::join!(read(&cache, 1), read(&cache, 1));
        assert_eq!(a.unwrap().0, b.unwrap().0);
        assert_eq!(fake.calls(), 3);
    }

    #[tokio::test(start_paused = true)]
    async fn fetch_deadline() {
        let (fake, cache) = setup(settings());
        fake.set_delay(Duration::from_secs(60));
        let started = Instant::now();
        assert_eq!(
            read(&cache, 1).await,
            Err(CacheError::Upstream(UpstreamError::Timeout))
        );
        assert_eq!(started.elapsed(), Duration::from_secs(5));
    }

    #[tokio::test(start_paused = true)]
    async fn forced_refresh_fetches_now_and_keeps_value_on_transient_failure() {
        let (fake, cache) = setup(settings());
        read(&cache, 1).await.unwrap();
        let (fresh, status) = cache.refresh(&arn(1), &Version::Current).await.unwrap();
        assert_eq!(
            (fresh.value.as_ref(), status),
            (&b"value-2"[..], CacheStatus::Miss)
        );
        assert_eq!(
            read(&cache, 1).await.unwrap(),
            ("value-2".into(), CacheStatus::Hit)
        );
        fake.fail_with(Some(UNAVAILABLE));
        assert!(cache.refresh(&arn(1), &Version::Current).await.is_err());
        assert_eq!(
            read(&cache, 1).await.unwrap(),
            ("value-2".into(), CacheStatus::Hit)
        );
    }

    #[tokio::test(start_paused = true)]
    async fn prefetch_fetches_everything_and_retries_failures() {
        let (fake, cache) = setup(CacheConfig {
            max_entries: 100,
            ..settings()
        });
        fake.fail_with(Some(UNAVAILABLE));
        let progress = cache.prefetch((0..20).map(arn).collect());
        tokio::time::sleep(Duration::from_millis(10)).await;
        assert!(progress.is_done(), "every resource was tried once");
        assert_eq!(progress.failing().len(), 20);
        fake.fail_with(None);
        tokio::time::sleep(Duration::from_secs(2)).await;
        assert!(progress.failing().is_empty());
        let calls = fake.calls();
        for n in 0..20 {
            assert_eq!(read(&cache, n).await.unwrap().1, CacheStatus::Hit);
        }
        assert_eq!(fake.calls(), calls);
    }

    #[tokio::test(start_paused = true)]
    async fn prefetch_batches_twenty_secrets_per_call_and_reports_each_failure() {
        let (fake, cache) = setup(CacheConfig {
            max_entries: 2000,
            ..settings()
        });
        fake.missing
            .lock()
            .unwrap()
            .extend([arn(7).to_string(), arn(993).to_string()]);
        fake.set_delay(Duration::from_millis(100));
        let progress = cache.prefetch((0..1000).map(arn).collect());
        // Eight calls at a time: seven turns.
        tokio::time::sleep(Duration::from_millis(701)).await;
        assert!(progress.is_done());
        assert_eq!((fake.calls(), fake.batch_calls()), (50, 50));
        assert_eq!(fake.max_in_flight(), PREFETCH_CONCURRENCY);
        // A secret the answer reports as not found fails on its own.
        assert_eq!(
            progress.failing(),
            [arn(7).to_string(), arn(993).to_string()]
        );
        for n in (0..1000).filter(|n| ![7, 993].contains(n)) {
            assert_eq!(read(&cache, n).await.unwrap().1, CacheStatus::Hit);
        }
        assert!(matches!(
            read(&cache, 7).await,
            Err(CacheError::Upstream(UpstreamError::SecretNotFound(_)))
        ));
    }

    #[tokio::test(start_paused = true)]
    async fn a_secret_the_batch_answer_leaves_out_is_fetched_on_its_own() {
        let (fake, cache) = setup(settings());
        fake.omitted.lock().unwrap().insert(arn(2).to_string());
        let progress = cache.prefetch((0..5).map(arn).collect());
        settle().await;
        assert!(progress.is_done() && progress.failing().is_empty());
        assert_eq!((fake.calls(), fake.batch_calls()), (2, 1));
        for n in 0..5 {
            assert_eq!(read(&cache, n).await.unwrap().1, CacheStatus::Hit);
        }
    }

    #[tokio::test(start_paused = true)]
    async fn parameters_are_never_batched() {
        let (fake, cache) = setup(settings());
        let parameter = |n: usize| {
            SecretArn::parse(&format!(
                "arn:aws:ssm:us-west-1:999999999999:parameter/p{n}"
            ))
            .unwrap()
        };
        let arns: Vec<_> = (0..3).map(arn).chain((0..3).map(parameter)).collect();
        let progress = cache.prefetch(arns);
        settle().await;
        assert!(progress.is_done() && progress.failing().is_empty());
        // One batch call for the secrets, one call per parameter.
        assert_eq!((fake.calls(), fake.batch_calls()), (4, 1));
        for n in 0..3 {
            let (_, status) = cache.get(&parameter(n), &Version::Current).await.unwrap();
            assert_eq!(status, CacheStatus::Hit);
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_refused_batch_call_falls_back_to_single_calls() {
        let (fake, recorder, cache) = setup_recorded(
            CacheConfig {
                max_entries: 100,
                ..settings()
            },
            CALLS,
        );
        fake.batch_refused.store(true, Ordering::SeqCst);
        let progress = cache.prefetch((0..40).map(arn).collect());
        tokio::time::sleep(Duration::from_millis(10)).await;
        assert!(progress.is_done() && progress.failing().is_empty());
        // One refused batch call (both batches were under way at once at
        // most), then one call per secret.
        let batches = fake.batch_calls();
        assert!((1..=2).contains(&batches), "{batches}");
        assert_eq!(fake.calls(), batches + 40);
        assert_eq!(recorder.calls.load(Ordering::SeqCst), fake.calls());
        for n in 0..40 {
            assert_eq!(read(&cache, n).await.unwrap().1, CacheStatus::Hit);
        }
        // Not tried again for a while: single calls.
        cache.prefetch((40..60).map(arn).collect());
        tokio::time::sleep(Duration::from_millis(10)).await;
        assert_eq!(fake.batch_calls(), batches);
        // Then tried again.
        fake.batch_refused.store(false, Ordering::SeqCst);
        tokio::time::sleep(BATCH_REFUSED_RETRY).await;
        let calls = fake.calls();
        cache.prefetch((60..80).map(arn).collect());
        tokio::time::sleep(Duration::from_millis(10)).await;
        assert_eq!((fake.calls(), fake.batch_calls()), (calls + 1, batches + 1));
    }

    #[tokio::test(start_paused = true)]
    async fn new_names_under_patterns_are_admitted_at_a_bounded_rate() {
        let (fake, cache) = setup(CacheConfig {
            new_names_per_second: 5,
            max_entries: 1000,
            ..settings()
        });
        // A burst of twice the rate, then one per 200 ms.
        let admitted = (0..100)
            .filter(|n| cache.admit_new_name(&arn(*n), &Version::Current))
            .count();
        assert_eq!(admitted, 10);
        // An admitted name, asked again, needs no budget; nor does a cached one.
        assert!(cache.admit_new_name(&arn(0), &Version::Current));
        read(&cache, 0).await.unwrap();
        assert!(cache.admit_new_name(&arn(0), &Version::Current));
        assert!(!cache.admit_new_name(&arn(500), &Version::Current));
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert!(cache.admit_new_name(&arn(500), &Version::Current));
        assert!(!cache.admit_new_name(&arn(501), &Version::Current));
        assert_eq!(fake.calls(), 1);
        // 0: no limit.
        cache.set_settings(CacheConfig {
            new_names_per_second: 0,
            max_entries: 1000,
            ..settings()
        });
        assert!((600..700).all(|n| cache.admit_new_name(&arn(n), &Version::Current)));
    }

    #[tokio::test(start_paused = true)]
    async fn event_refreshes_refetch_the_current_version_and_cached_stages() {
        let (fake, cache) = setup(settings());
        let (one, other) = (arn(1), arn(2));
        let previous = Version::Stage("AWSPREVIOUS".into());
        let (current_before, _) = cache.get(&one, &Version::Current).await.unwrap();
        let (previous_before, _) = cache.get(&one, &previous).await.unwrap();
        cache.get(&other, &previous).await.unwrap();
        let calls = fake.calls();
        cache.refresh_cached(vec![one.clone()]).await;
        // One call for the current version, one for the stage; the other
        // secret's stage is left alone.
        assert_eq!(fake.calls(), calls + 2);
        for (version, before) in [
            (Version::Current, current_before),
            (previous, previous_before),
        ] {
            let (after, status) = cache.get(&one, &version).await.unwrap();
            assert_eq!(status, CacheStatus::Hit);
            assert_ne!(after.value, before.value, "{version:?}");
        }
        assert_eq!(fake.calls(), calls + 2);
    }

    #[tokio::test(start_paused = true)]
    async fn refreshed_at_expiry_hot_secrets_cost_one_round_per_ttl() {
        let (fake, cache) = setup(CacheConfig {
            max_entries: 200,
            refresh_ahead: Duration::ZERO,
            ..settings()
        });
        // First reads spread over half a second: they expire apart, but
        // the first refresh takes them all, and from then on they expire
        // together.
        for n in 0..100 {
            read(&cache, n).await.unwrap();
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        assert_eq!(fake.calls(), 100);
        // Read steadily for five and a half TTLs (of 100 s), every 250 ms.
        let mut statuses = [0usize; CacheStatus::ALL.len()];
        for _ in 0..2200 {
            for n in 0..100 {
                statuses[read(&cache, n).await.unwrap().1 as usize] += 1;
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
        // Refreshed at each expiry, all together: five rounds of five
        // calls, the least BatchGetSecretValue's 20 ids a call allow.
        assert_eq!(fake.calls() - 100, 5 * 5);
        assert_eq!(fake.batch_calls(), 5 * 5);
        // The first reader after an expiry started the round and waited
        // for it (a miss); no one was served a stale value.
        assert_eq!(statuses[CacheStatus::Stale as usize], 0);
        assert!(statuses[CacheStatus::Miss as usize] <= 5, "{statuses:?}");
    }

    #[tokio::test(start_paused = true)]
    async fn refreshes_ahead_due_together_share_batch_calls() {
        let (fake, cache) = setup(CacheConfig {
            max_entries: 200,
            ..settings()
        });
        // 100 hot secrets, first read within half a second.
        for n in 0..100 {
            read(&cache, n).await.unwrap();
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        assert_eq!(fake.calls(), 100);
        // Read steadily for five TTLs.
        for _ in 0..500 {
            for n in 0..100 {
                assert_eq!(read(&cache, n).await.unwrap().1, CacheStatus::Hit);
            }
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
        // Refreshed every 81 s (ttl - refresh-ahead, and the gathering
        // window): six times in 500 s, in five calls each.
        assert_eq!(fake.calls() - 100, 6 * 5);
        assert_eq!(fake.batch_calls(), 6 * 5);

        // First reads spread over 20 s: due at different times at first,
        // the refreshes are soon gathered into one group of five calls.
        let (fake, cache) = setup(CacheConfig {
            max_entries: 200,
            ..settings()
        });
        for n in 0..100 {
            read(&cache, n).await.unwrap();
            read(&cache, n).await.unwrap();
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        let read_for = async |seconds| {
            for _ in 0..seconds {
                for n in 0..100 {
                    assert_eq!(read(&cache, n).await.unwrap().1, CacheStatus::Hit);
                }
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        };
        read_for(200).await;
        let before = fake.calls();
        read_for(800).await;
        // About ten refreshes (every 81 s) in 800 s, five calls each.
        let calls = fake.calls() - before;
        assert!((45..=50).contains(&calls), "{calls}");
        assert_eq!(calls % 5, 0, "{calls}");

        // A transient failure of the batch is each secret's own: served
        // stale, retried one by one.
        fake.fail_with(Some(UNAVAILABLE));
        tokio::time::sleep(Duration::from_secs(100)).await;
        assert_eq!(read(&cache, 3).await.unwrap().1, CacheStatus::Stale);
        assert!(fake.calls() - fake.batch_calls() > 100, "single retries");
    }

    #[tokio::test(start_paused = true)]
    async fn stats_say_the_age_last_outcome_and_version_changes() {
        let (fake, cache) = setup(settings());
        let weak = cache.downgrade();
        assert_eq!(weak.stats(&arn(1)), None);
        read(&cache, 1).await.unwrap();
        tokio::time::sleep(Duration::from_secs(3)).await;
        assert_eq!(
            weak.stats(&arn(1)),
            Some(SecretStats {
                age: Some(Duration::from_secs(3)),
                last_outcome: Some("ok"),
                version_changes: 0
            })
        );
        // The fake answers each call with a new version.
        refresh(&cache, 1).await.unwrap();
        refresh(&cache, 1).await.unwrap();
        fake.fail_with(Some(UNAVAILABLE));
        assert!(refresh(&cache, 1).await.is_err());
        assert_eq!(
            weak.stats(&arn(1)),
            Some(SecretStats {
                age: Some(Duration::ZERO),
                last_outcome: Some("timeout"),
                version_changes: 2
            })
        );
        // It does not keep the cache going.
        drop(cache);
        assert_eq!(weak.stats(&arn(1)), None);
    }

    #[tokio::test(start_paused = true)]
    async fn forced_refreshes_burst_then_one_per_interval() {
        let (fake, cache) = setup(settings());
        read(&cache, 1).await.unwrap();
        // The burst: each forced refresh right away calls AWS.
        for n in 2..=4 {
            assert_eq!(
                refresh(&cache, 1).await.unwrap(),
                (format!("value-{n}"), CacheStatus::Miss)
            );
        }
        // Beyond it: the value the last refresh fetched, no call.
        for _ in 0..100 {
            assert_eq!(
                refresh(&cache, 1).await.unwrap(),
                ("value-4".into(), CacheStatus::Hit)
            );
        }
        assert_eq!(fake.calls(), 4);
        tokio::time::sleep(Duration::from_millis(999)).await;
        assert_eq!(refresh(&cache, 1).await.unwrap().1, CacheStatus::Hit);
        tokio::time::sleep(Duration::from_millis(1)).await;
        assert_eq!(
            refresh(&cache, 1).await.unwrap(),
            ("value-5".into(), CacheStatus::Miss)
        );
        // A steady loop for 10 s on an empty budget: one call per interval,
        // at 1 s (just above), 2 s, ..., 10 s.
        let (started, before) = (Instant::now(), fake.calls());
        while started.elapsed() < Duration::from_secs(10) {
            refresh(&cache, 1).await.unwrap();
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert_eq!(fake.calls() - before, 9);
        // Each entry has its own budget.
        for _ in 0..3 {
            assert_eq!(refresh(&cache, 2).await.unwrap().1, CacheStatus::Miss);
        }
        // A refused refresh of an expired value reads as usual: one fetch.
        tokio::time::sleep(Duration::from_secs(101)).await;
        let calls = fake.calls();
        for _ in 0..3 {
            refresh(&cache, 1).await.unwrap();
        }
        assert_eq!(refresh(&cache, 1).await.unwrap().1, CacheStatus::Hit);
        assert_eq!(fake.calls(), calls + 3);
    }

    #[tokio::test(start_paused = true)]
    async fn concurrent_forced_refreshes_join_one_call() {
        let (fake, cache) = setup(settings());
        read(&cache, 1).await.unwrap();
        fake.set_delay(Duration::from_secs(1));
        let refreshes: Vec<_> = (0..200)
            .map(|_| {
                let cache = cache.clone();
                tokio::spawn(async move { refresh(&cache, 1).await })
            })
            .collect();
        for r in refreshes {
            assert_eq!(
                r.await.unwrap().unwrap(),
                ("value-2".into(), CacheStatus::Miss)
            );
        }
        assert_eq!(fake.calls(), 2);
        // Those that joined took nothing from the budget: a second on, it
        // is full again (one taken, one back), and three more fetch.
        fake.set_delay(Duration::ZERO);
        for _ in 0..3 {
            assert_eq!(refresh(&cache, 1).await.unwrap().1, CacheStatus::Miss);
        }
        assert_eq!(refresh(&cache, 1).await.unwrap().1, CacheStatus::Hit);
        assert_eq!(fake.calls(), 5);
    }

    #[tokio::test(start_paused = true)]
    async fn not_found_answers_are_remembered_for_negative_ttl() {
        let (fake, cache) = setup(settings());
        let unknown = |cache: &Cache| {
            let cache = cache.clone();
            async move { cache.get(&arn(1), &version_id(7)).await.map(drop) }
        };
        let not_found = Err(CacheError::Upstream(UpstreamError::VersionNotFound(
            "no version unknown-7".into(),
        )));
        for _ in 0..100 {
            assert_eq!(unknown(&cache).await, not_found);
        }
        assert_eq!(fake.calls(), 1);
        tokio::time::sleep(Duration::from_millis(29_999)).await;
        assert_eq!(unknown(&cache).await, not_found);
        assert_eq!(fake.calls(), 1);
        tokio::time::sleep(Duration::from_millis(1)).await;
        assert_eq!(unknown(&cache).await, not_found);
        assert_eq!(fake.calls(), 2);

        // A secret that does not exist: the same, and a forced refresh asks
        // AWS again within its budget, after which the answer is remembered.
        let missing = UpstreamError::SecretNotFound("no such secret".into());
        fake.fail_with(Some(missing.clone()));
        for _ in 0..100 {
            assert_eq!(
                read(&cache, 2).await,
                Err(CacheError::Upstream(missing.clone()))
            );
        }
        assert_eq!(fake.calls(), 3);
        for _ in 0..100 {
            assert_eq!(
                refresh(&cache, 2).await,
                Err(CacheError::Upstream(missing.clone()))
            );
        }
        assert_eq!(fake.calls(), 3 + REFRESH_BURST as usize);
        // Once it exists, a forced refresh finds it and the answer is forgotten.
        fake.fail_with(None);
        tokio::time::sleep(Duration::from_secs(1)).await;
        assert_eq!(refresh(&cache, 2).await.unwrap().1, CacheStatus::Miss);
        assert_eq!(read(&cache, 2).await.unwrap().1, CacheStatus::Hit);

        // Transient failures are not remembered: each read tries again.
        fake.fail_with(Some(UNAVAILABLE));
        let calls = fake.calls();
        for _ in 0..3 {
            assert!(read(&cache, 3).await.is_err());
        }
        assert_eq!(fake.calls(), calls + 3);
    }

    #[tokio::test(start_paused = true)]
    async fn negative_ttl_zero_remembers_nothing() {
        let (fake, cache) = setup(CacheConfig {
            negative_ttl: Duration::ZERO,
            ..settings()
        });
        for _ in 0..3 {
            assert!(cache.get(&arn(1), &version_id(1)).await.is_err());
        }
        assert_eq!(fake.calls(), 3);
    }

    #[tokio::test(start_paused = true)]
    async fn calls_in_flight_are_bounded() {
        let (fake, cache) = setup_with_calls(
            CacheConfig {
                max_entries: 100,
                ..settings()
            },
            4,
        );
        fake.set_delay(Duration::from_millis(500));
        let started = Instant::now();
        let reads: Vec<_> = (0..18)
            .map(|n| {
                let cache = cache.clone();
                tokio::spawn(async move { read(&cache, n).await })
            })
            .collect();
        for r in reads {
            assert_eq!(r.await.unwrap().unwrap().1, CacheStatus::Miss);
        }
        // Four at a time, the others waiting their turn within the deadline.
        assert_eq!(fake.max_in_flight(), 4);
        assert_eq!(fake.calls(), 18);
        assert_eq!(started.elapsed(), Duration::from_millis(2500));
    }

    #[tokio::test(start_paused = true)]
    async fn fetches_that_wait_past_the_deadline_are_busy_and_serve_stale() {
        let (fake, cache) = setup_with_calls(settings(), 1);
        read(&cache, 1).await.unwrap();
        tokio::time::sleep(Duration::from_secs(101)).await; // 1 is past its TTL
        fake.set_delay(Duration::from_secs(60));
        let started = Instant::now();
        let holder = {
            let cache = cache.clone();
            tokio::spawn(async move { read(&cache, 2).await })
        };
        settle().await;
        let (stale, busy) = tokio::join!(read(&cache, 1), read(&cache, 3));
        assert_eq!(stale.unwrap(), ("value-1".into(), CacheStatus::Stale));
        assert_eq!(busy, Err(CacheError::Upstream(UpstreamError::Busy)));
        assert_eq!(
            holder.await.unwrap(),
            Err(CacheError::Upstream(UpstreamError::Timeout))
        );
        assert_eq!(started.elapsed(), Duration::from_secs(5));
        assert_eq!(fake.max_in_flight(), 1);
        assert_eq!(fake.calls(), 2, "the waiting fetches made no call");

        // A fetch whose turn comes too late to finish is busy, not a timeout.
        fake.set_delay(Duration::from_secs(3));
        let (first, second) = tokio::join!(read(&cache, 4), read(&cache, 5));
        assert_eq!(first.unwrap().1, CacheStatus::Miss);
        assert_eq!(second, Err(CacheError::Upstream(UpstreamError::Busy)));
    }

    #[tokio::test(start_paused = true)]
    async fn failed_lookups_never_evict_values() {
        let (fake, cache) = setup(settings());
        for n in 0..5 {
            read(&cache, n).await.unwrap();
        }
        // One client asks for 2,000 versions that do not exist.
        for v in 0..2000 {
            assert!(cache.get(&arn(0), &version_id(v)).await.is_err());
        }
        assert_eq!(fake.calls(), 2005);
        assert!(cache.len() <= 2 * 10, "{}", cache.len());
        // The values others read stay, and stay hits while AWS is down.
        fake.fail_with(Some(UNAVAILABLE));
        for n in 0..5 {
            assert_eq!(
                read(&cache, n).await.unwrap(),
                (format!("value-{}", n + 1), CacheStatus::Hit)
            );
        }
        assert_eq!(fake.calls(), 2005);
        // Failures displace other failures, least recently used first.
        fake.fail_with(None);
        assert!(cache.get(&arn(0), &version_id(1999)).await.is_err());
        assert_eq!(fake.calls(), 2005, "recent not-found answers are kept");
        assert!(cache.get(&arn(0), &version_id(0)).await.is_err());
        assert_eq!(fake.calls(), 2006, "old ones were evicted");
        // Values displace values: the bound on them holds too.
        for n in 5..20 {
            read(&cache, n).await.unwrap();
        }
        let hits = futures_util::future::join_all((0..20).map(|n| read(&cache, n))).await;
        let hits = hits
            .into_iter()
            .filter(|r| r.as_ref().is_ok_and(|(_, s)| *s == CacheStatus::Hit))
            .count();
        assert_eq!(hits, 10);
    }

    #[tokio::test(start_paused = true)]
    async fn reads_and_calls_are_reported_to_the_metrics_sink() {
        let (fake, recorder, cache) = setup_recorded(settings(), CALLS);
        read(&cache, 1).await.unwrap();
        tokio::time::sleep(Duration::from_secs(101)).await;
        fake.fail_with(Some(UNAVAILABLE));
        assert_eq!(read(&cache, 1).await.unwrap().1, CacheStatus::Stale);
        // A forced refresh that fails is not a read served; one refused by
        // the budget is, once.
        assert!(refresh(&cache, 1).await.is_err());
        fake.fail_with(None);
        for _ in 0..REFRESH_BURST {
            refresh(&cache, 2).await.unwrap();
        }
        assert_eq!(refresh(&cache, 2).await.unwrap().1, CacheStatus::Hit);
        // hit, miss, stale
        assert_eq!(recorder.reads(), [1, 4, 1]);
        assert_eq!(recorder.calls.load(Ordering::SeqCst), fake.calls());
        assert_eq!(recorder.failed_calls.load(Ordering::SeqCst), 2);
    }

    #[tokio::test(start_paused = true)]
    async fn a_prefetch_that_cannot_succeed_is_retried_once_a_minute() {
        let (fake, cache) = setup(settings());
        fake.fail_with(Some(UpstreamError::SecretNotFound("deleted".into())));
        let progress = cache.prefetch(vec![arn(1)]);
        settle().await;
        assert_eq!(fake.calls(), 1);
        assert_eq!(progress.failing(), [arn(1).to_string()]);
        tokio::time::sleep(Duration::from_secs(60)).await;
        settle().await;
        assert!(fake.calls() <= 2, "{} calls in a minute", fake.calls());
        tokio::time::sleep(Duration::from_secs(10 * 60)).await;
        settle().await;
        assert_eq!(fake.calls(), 12, "one a minute, and still retried");
        // The same for a refusal.
        let (fake, cache) = setup(settings());
        fake.fail_with(Some(denied()));
        let progress = cache.prefetch(vec![arn(1)]);
        tokio::time::sleep(Duration::from_secs(60)).await;
        settle().await;
        assert!(fake.calls() <= 2, "{} calls in a minute", fake.calls());
        // Once it can succeed, it does, and the retries stop.
        fake.fail_with(None);
        tokio::time::sleep(Duration::from_secs(60)).await;
        settle().await;
        assert!(progress.failing().is_empty());
        let calls = fake.calls();
        assert_eq!(read(&cache, 1).await.unwrap().1, CacheStatus::Hit);
        tokio::time::sleep(Duration::from_secs(10 * 60)).await;
        assert_eq!(
            fake.calls(),
            calls + 1,
            "only the refresh ahead of the read value"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn retain_stops_the_prefetches_and_timers_of_removed_resources() {
        let (fake, cache) = setup(settings());
        // A resource whose prefetch fails (retried within a second or two),
        // one whose value is due a refresh, and one kept.
        fake.fail_with(Some(UNAVAILABLE));
        let progress = cache.prefetch(vec![arn(1)]);
        settle().await;
        fake.fail_with(None);
        read(&cache, 2).await.unwrap();
        read(&cache, 2).await.unwrap();
        read(&cache, 3).await.unwrap();
        let calls = fake.calls();
        cache.retain(&HashSet::from([arn(3).as_str()]));
        settle().await;
        assert!(progress.failing().is_empty(), "{:?}", progress.failing());
        tokio::time::sleep(Duration::from_secs(10 * 60)).await;
        settle().await;
        assert_eq!(fake.calls(), calls, "no call after retain");
        assert_eq!(cache.len(), 1, "no slot re-created");

        // Removed while its first fetch is in flight: that fetch answers,
        // nothing follows it.
        let (fake, cache) = setup(settings());
        fake.set_delay(Duration::from_secs(1));
        fake.fail_with(Some(UNAVAILABLE));
        cache.prefetch(vec![arn(1), arn(2)]);
        tokio::time::sleep(Duration::from_millis(500)).await;
        cache.retain(&HashSet::new());
        tokio::time::sleep(Duration::from_secs(10 * 60)).await;
        settle().await;
        assert_eq!((fake.calls(), fake.batch_calls()), (1, 1));
        assert_eq!(cache.len(), 0);

        // Prefetched again after it comes back: retried again.
        cache.prefetch(vec![arn(1)]);
        tokio::time::sleep(Duration::from_secs(10)).await;
        assert!(fake.calls() >= 3, "{}", fake.calls());

        // Removed before its turn came: never fetched.
        let per_turn = PREFETCH_CONCURRENCY * BATCH_LIMIT;
        let (fake, cache) = setup(CacheConfig {
            max_entries: 1000,
            ..settings()
        });
        fake.set_delay(Duration::from_secs(1));
        cache.prefetch((0..per_turn + 40).map(arn).collect());
        settle().await;
        assert_eq!(fake.batch_calls(), PREFETCH_CONCURRENCY);
        let kept: Vec<_> = (0..per_turn).map(arn).collect();
        cache.retain(&kept.iter().map(SecretArn::as_str).collect());
        tokio::time::sleep(Duration::from_secs(10 * 60)).await;
        assert_eq!(fake.calls(), PREFETCH_CONCURRENCY);
        assert_eq!(cache.len(), per_turn);
    }

    #[tokio::test(start_paused = true)]
    async fn dropping_the_cache_stops_its_tasks() {
        let (fake, cache) = setup(settings());
        read(&cache, 1).await.unwrap();
        read(&cache, 1).await.unwrap(); // due a refresh ahead
        fake.fail_with(Some(UNAVAILABLE));
        cache.prefetch(vec![arn(2)]); // retried
        settle().await;
        fake.fail_with(None);
        fake.set_delay(Duration::from_secs(1));
        cache.prefetch(vec![arn(3)]); // in flight
        settle().await;
        let calls = fake.calls();
        drop(cache);
        settle().await;
        assert_eq!(Arc::strong_count(&fake), 1, "every task let go of it");
        tokio::time::sleep(Duration::from_secs(10 * 60)).await;
        settle().await;
        assert_eq!(fake.calls(), calls);
    }

    #[test]
    fn backoff_grows_and_is_capped() {
        for failures in 1..40 {
            let d = backoff(failures);
            assert!(d <= MAX_BACKOFF, "{d:?}");
            assert!(d >= FIRST_BACKOFF / 2, "{d:?}");
        }
        assert!(backoff(5) >= FIRST_BACKOFF * 4);
    }
}
