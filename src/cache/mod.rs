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
//! [`BATCH_LIMIT`](crate::upstream::BATCH_LIMIT) secrets of one region per
//! BatchGetSecretValue call ([`Inner::start_batch`]); refreshes due within
//! a short window are gathered, with read values due soon after them. Each
//! secret's part is an ordinary fetch of its slot that readers join; a
//! refused batch call falls back to single calls.
//!
//! A reader of an expired value that is still within `max_stale` waits at
//! most `stale_wait` for its refresh (stale while revalidate), then gets
//! that value, marked stale, while the fetch goes on; a reader with no
//! value in hand waits for the fetch, up to `fetch_timeout`.
//!
//! What a client can make the agent spend is bounded, since AWS bills each
//! call and any local process may be a client:
//! - forced refreshes of one entry: a burst of
//!   [`REFRESH_BURST`](budget::REFRESH_BURST), then one call per
//!   `min-refresh-interval`; concurrent ones join the call in flight, and
//!   refused ones are served from the cache;
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
//!
//! This file holds the [`Cache`] handle and the read path; the rest, one
//! concern a file:
//! - [`key`]: an entry's key, (ARN, version), and its borrowed lookup;
//! - [`slot`]: an entry's state, and single flight;
//! - [`call`]: one call to AWS (a turn, the deadline), and [`Fetch`];
//! - [`batch`]: BatchGetSecretValue, and single calls when it is refused;
//! - [`schedule`]: after a fetch: refresh ahead, retries, the gather window;
//! - [`timers`]: every entry's pending refresh or retry, in one queue;
//! - [`prefetch`]: the start-up prefetch, its progress and retries;
//! - [`evict`]: least recently used eviction, `max-bytes`, reload's removals;
//! - [`budget`]: rate budgets (forced refreshes, new names under patterns);
//! - [`negative`]: not-found answers remembered for `negative-ttl`.

mod batch;
mod budget;
mod call;
mod evict;
mod key;
mod negative;
mod prefetch;
mod schedule;
mod slot;
#[cfg(test)]
mod testing;
mod timers;

use std::collections::{HashMap, HashSet};
use std::future::Future;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use arc_swap::ArcSwap;
use dashmap::DashMap;
use tokio::runtime::Handle;
use tokio::sync::Semaphore;
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_util::sync::{CancellationToken, DropGuard};

use crate::config::CacheConfig;
use crate::domain::Arn;
use crate::domain::Secret;
use crate::domain::Version;
use crate::upstream::UpstreamError;

use self::budget::Budget;
use self::key::{Key, KeyParts};
use self::slot::Slot;
use self::timers::Timers;

pub(crate) use self::call::Fetch;
pub(crate) use self::prefetch::Prefetch;

/// The upstream actions, as metrics label them.
pub(crate) const GET_SECRET_VALUE: &str = "GetSecretValue";
pub(crate) const GET_PARAMETER: &str = "GetParameter";
pub(crate) const BATCH_GET_SECRET_VALUE: &str = "BatchGetSecretValue";

/// Where the cache reports what it does; the agent's is
/// [`crate::metrics::Metrics`], tests use their own.
pub(crate) trait CacheMetrics: Send + Sync + 'static {
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
pub(crate) enum CacheStatus {
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
    pub(crate) const ALL: [CacheStatus; 3] =
        [CacheStatus::Hit, CacheStatus::Miss, CacheStatus::Stale];

    pub(crate) fn as_str(self) -> &'static str {
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
pub(crate) struct SecretStats {
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
pub(crate) enum CacheError {
    #[error(transparent)]
    Upstream(UpstreamError),
    /// AWS has been failing for longer than `max-stale`; the old value is no
    /// longer served.
    #[error("the cached value is older than max-stale allows and AWS still fails: {0}")]
    StaleLimit(UpstreamError),
}

/// How many prefetches run at once, and single calls of a batch that AWS
/// refused.
pub(crate) const PREFETCH_CONCURRENCY: usize = 8;

/// A cheap-to-clone handle; clones share one cache.
#[derive(Clone)]
pub(crate) struct Cache {
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
    /// What the values of the slots in `slots` cost ([`slot::cost`]), in
    /// bytes, against `max-bytes`. Each slot's share is its
    /// `SlotState::counted`, changed under that slot's lock.
    bytes: AtomicUsize,
    /// One permit per call to AWS in flight (`max-concurrent-calls`).
    calls: Semaphore,
    /// Fetches and timers run here, not on the reader's task (nor on the
    /// reader's runtime: each HTTP worker thread has its own).
    runtime: Handle,
    /// Every task the cache spawns runs until this is cancelled.
    tasks: CancellationToken,
    /// Every entry's pending refresh or retry, run by one task.
    timers: Arc<Timers>,
    /// Prefetch work (first attempts and retries) by ARN, children of
    /// `tasks`: a reload that removes the resource cancels its work. Also
    /// held while that work creates the ARN's slot, and by `retain`, so a
    /// removed resource's slot is never re-created. Entries stay while
    /// their ARN is configured: one per resource at most.
    prefetching: Mutex<HashMap<Arn, CancellationToken>>,
    /// Until when BatchGetSecretValue is not tried, after AWS refused it
    /// (e.g. the policy lacks the permission): single calls instead.
    batch_refused_until: Mutex<Option<Instant>>,
    /// Values due a refresh ahead, gathered for a short window
    /// ([`schedule`]) so that one BatchGetSecretValue refreshes those due
    /// together.
    due: Mutex<Vec<(Key, Arc<Slot>)>>,
    /// New names under patterns (`cache.new-names-per-second`).
    new_names: Mutex<Budget>,
    /// Bumped each time a fetch stores a value whose bytes differ from the
    /// entry's before (or that is its first): see [`Cache::changes`].
    changes: tokio::sync::watch::Sender<u64>,
}

impl Cache {
    /// Must be called within a tokio runtime; background work runs on it
    /// until the last handle is dropped. At most `max_concurrent_calls`
    /// fetches call AWS at once.
    pub(crate) fn new(
        fetcher: Arc<dyn Fetch>,
        metrics: Arc<dyn CacheMetrics>,
        settings: CacheConfig,
        max_concurrent_calls: usize,
    ) -> Cache {
        let tasks = CancellationToken::new();
        let cache = Cache {
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
                timers: Arc::default(),
                prefetching: Mutex::new(HashMap::new()),
                batch_refused_until: Mutex::new(None),
                due: Mutex::new(Vec::new()),
                new_names: Mutex::new(Budget::default()),
                changes: tokio::sync::watch::Sender::new(0),
            }),
        };
        let inner = &cache.inner;
        drop(inner.spawn(timers::run(
            Arc::clone(&inner.timers),
            Arc::downgrade(inner),
        )));
        cache
    }

    /// Applies new settings (on reload); entries keep their values, and the
    /// new TTL and bounds apply from their next read or refresh.
    pub(crate) fn set_settings(&self, settings: CacheConfig) {
        self.inner
            .ttl_nanos
            .store(nanos(settings.ttl), Ordering::Relaxed);
        self.inner.settings.store(Arc::new(settings));
    }

    /// A handle for metrics that does not keep the cache (and its tasks)
    /// going.
    pub(crate) fn downgrade(&self) -> WeakCache {
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
    pub(crate) async fn refresh_cached(&self, arns: Vec<Arn>) {
        self.inner.refresh_cached(arns).await;
    }

    /// Whether a read of `arn` at `version` may go ahead, for a name a
    /// client made up under a pattern: always when the cache has an entry
    /// for it (a value, a fetch under way, a remembered failure), else only
    /// within `cache.new-names-per-second` (a burst of twice that first),
    /// over all such names: each new one costs an AWS call.
    pub(crate) fn admit_new_name(&self, arn: &Arn, version: &Version) -> bool {
        self.inner.admit_new_name(arn, version)
    }

    /// A counter bumped each time a fetch stores a value whose bytes
    /// differ from the ones its entry held (or its first value): after a
    /// refresh, a rotation event or a forced refresh. Whoever keeps
    /// something derived from values (rendered files) waits on it rather
    /// than polling; several changes in a row may be seen as one.
    pub(crate) fn changes(&self) -> tokio::sync::watch::Receiver<u64> {
        self.inner.changes.subscribe()
    }

    /// Number of cached entries (including those whose first fetch is under
    /// way, and remembered failures).
    pub(crate) fn len(&self) -> usize {
        self.inner.slots.len()
    }

    /// What the cached values cost, in bytes (see [`slot::cost`]).
    #[cfg(test)]
    fn bytes(&self) -> usize {
        self.inner.bytes.load(Ordering::Relaxed)
    }

    /// A client's forced refresh: fetches `arn` at `version` now, joining a
    /// fetch already under way, and past a not-found answer. On a transient
    /// failure the cached value is kept for later reads; on any other it is
    /// dropped, as at a scheduled refresh.
    ///
    /// Beyond the entry's budget ([`REFRESH_BURST`](budget::REFRESH_BURST),
    /// then one per `min-refresh-interval`) it is an ordinary read: the
    /// value the last fetch brought, or its not-found answer.
    pub(crate) async fn refresh(
        &self,
        arn: &Arn,
        version: &Version,
    ) -> Result<(Arc<Secret>, CacheStatus), CacheError> {
        self.counted(self.inner.force(arn, version).await)
    }

    /// Reads `arn` at `version`, from the cache when it can.
    pub(crate) async fn get(
        &self,
        arn: &Arn,
        version: &Version,
    ) -> Result<(Arc<Secret>, CacheStatus), CacheError> {
        if let Some(secret) = self.fresh(arn, version, Arc::clone) {
            return Ok((secret, CacheStatus::Hit));
        }
        self.counted(self.inner.read(arn, version).await)
    }

    /// The hot path: `f` applied to the fresh value of `arn` at `version`
    /// (a hit, counted as one), or `None` when the cache holds none, for
    /// [`Cache::get`] to serve. Takes no lock beyond the map's shard read
    /// lock, clones nothing and writes nothing shared unless it changes.
    pub(crate) fn fresh<R>(
        &self,
        arn: &Arn,
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

    /// [`Cache::prefetch_after`], started at once.
    #[cfg(test)]
    pub(crate) fn prefetch(&self, arns: Vec<Arn>) -> Arc<Prefetch> {
        self.prefetch_after(arns, std::future::ready(()))
    }

    /// Once `start` completes (serving starts), fetches the current version
    /// of every ARN in the background, in BatchGetSecretValue calls of up
    /// to [`BATCH_LIMIT`](crate::upstream::BATCH_LIMIT) secrets of one
    /// region, at most [`PREFETCH_CONCURRENCY`] calls at a time; the rest
    /// go on regardless of a failed one, which is logged and retried until
    /// it succeeds or a reload removes it ([`Cache::retain`]): with backoff
    /// when the failure may pass by itself, else once a minute
    /// ([`prefetch`]).
    pub(crate) fn prefetch_after(
        &self,
        arns: Vec<Arn>,
        start: impl Future<Output = ()> + Send + 'static,
    ) -> Arc<Prefetch> {
        self.inner.prefetch_after(arns, start)
    }

    /// Drops every entry whose ARN is not in `keep` (resources removed by a
    /// reload) and stops their prefetches and timers; their values are wiped
    /// once no reader holds them.
    pub(crate) fn retain(&self, keep: &HashSet<&str>) {
        self.inner.retain(keep);
    }
}

/// See [`Cache::downgrade`].
#[derive(Clone)]
pub(crate) struct WeakCache {
    inner: Weak<Inner>,
}

impl WeakCache {
    /// What the cache holds of the current version of `arn`; `None` when
    /// it has no entry for it (never asked for, or evicted) or is gone.
    pub(crate) fn stats(&self, arn: &Arn) -> Option<SecretStats> {
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

    /// [`Cache::get`] past the hot path, uncounted.
    async fn read(
        self: &Arc<Self>,
        arn: &Arn,
        version: &Version,
    ) -> Result<(Arc<Secret>, CacheStatus), CacheError> {
        let key = Key::new(arn, version);
        let settings = self.settings.load();
        let slot = self.slot(&key);
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
        } else if let Some(err) = slot.state().not_found.answer() {
            return Err(CacheError::Upstream(err.clone()));
        }

        let fetch = if stale_until.is_some() && key.version == Version::Current {
            // An expired value that is being read: refreshed together with
            // the read values due with it, in shared batch calls, as the
            // refresh ahead would (with `refresh-ahead: 0`, the first reader
            // after an expiry often comes before the refresh timer).
            let mut due = vec![(key.clone(), Arc::clone(&slot))];
            due.extend(self.due_soon(&due));
            self.start_batch(due).swap_remove(0)
        } else {
            self.start_fetch(&key, &slot)
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

fn nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cache::budget::REFRESH_BURST;
    use crate::cache::testing::*;

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
    async fn changes_are_signalled_when_the_bytes_change() {
        let (fake, cache) = setup(settings());
        let mut changes = cache.changes();
        assert!(!changes.has_changed().unwrap());
        // A first value is a change.
        read(&cache, 1).await.unwrap();
        assert!(changes.has_changed().unwrap());
        let first = *changes.borrow_and_update();
        // The fake answers each call with new bytes: a forced refresh changes it.
        refresh(&cache, 1).await.unwrap();
        assert!(changes.has_changed().unwrap());
        assert!(*changes.borrow_and_update() > first);
        // A hit changes nothing.
        read(&cache, 1).await.unwrap();
        assert!(!changes.has_changed().unwrap());
        // A new version with the same bytes is no change; a failure neither.
        fake.value_size.store(64, Ordering::SeqCst);
        refresh(&cache, 2).await.unwrap();
        changes.borrow_and_update();
        refresh(&cache, 2).await.unwrap();
        assert!(!changes.has_changed().unwrap(), "same bytes, new version");
        fake.fail_with(Some(UNAVAILABLE));
        assert!(refresh(&cache, 2).await.is_err());
        assert!(!changes.has_changed().unwrap());
        // A refresh ahead that brings new bytes wakes a waiter.
        fake.fail_with(None);
        fake.value_size.store(0, Ordering::SeqCst);
        read(&cache, 3).await.unwrap();
        read(&cache, 3).await.unwrap(); // read since fetched: refreshed ahead
        changes.borrow_and_update();
        let waited = tokio::time::timeout(Duration::from_secs(90), changes.changed()).await;
        assert!(waited.is_ok(), "the refresh ahead at 81 s signalled");
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
}
