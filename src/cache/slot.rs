//! An entry's state, and single flight: one fetch at a time per entry,
//! spawned so that it finishes even if its reader goes away, which every
//! reader of the entry joins.

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use arc_swap::ArcSwapOption;
use futures_util::future::{BoxFuture, FutureExt, Shared};
use tokio::time::Instant;

use super::Inner;
use super::budget::Budget;
use super::key::Key;
use super::negative::NotFound;
use crate::domain::Secret;
use crate::upstream::UpstreamError;

/// A fetch under way, which every reader of its slot awaits.
pub(super) type SharedFetch = Shared<BoxFuture<'static, Result<Arc<Secret>, UpstreamError>>>;

pub(super) struct Slot {
    /// The last good value. Swapped atomically so readers never lock.
    pub(super) value: ArcSwapOption<Cached>,
    /// Set by reads of a fresh value; a refresh-ahead only happens if set.
    pub(super) read_since_fetch: AtomicBool,
    /// `Inner::clock` at the last read, for eviction.
    pub(super) last_used: AtomicU64,
    /// Fetches that replaced the value with another version.
    pub(super) version_changes: AtomicU64,
    /// The value was dropped for being past `max-stale`; until a fetch
    /// succeeds, failures are reported as [`super::CacheError::StaleLimit`].
    pub(super) lapsed: AtomicBool,
    /// Coordination of fetches and timers; held briefly, never across an await.
    state: Mutex<SlotState>,
}

/// A pending timer in `Inner::timers` (see [`super::timers`]): when it is
/// due, and a ticket that is never reused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(super) struct TimerId {
    pub(super) at: Instant,
    pub(super) ticket: u64,
}

pub(super) struct Cached {
    pub(super) secret: Arc<Secret>,
    pub(super) fetched_at: Instant,
}

#[derive(Default)]
pub(super) struct SlotState {
    pub(super) inflight: Option<SharedFetch>,
    /// Consecutive transient failures since the last good fetch.
    pub(super) failures: u32,
    /// The pending refresh or retry timer, in `Inner::timers`.
    pub(super) timer: Option<TimerId>,
    /// The slot has left the cache (evicted, or its resource removed): no
    /// timer is set any more.
    pub(super) retired: bool,
    /// The budget of forced refreshes.
    pub(super) refreshes: Budget,
    /// The last not-found answer, repeated to reads until it expires.
    pub(super) not_found: NotFound,
    /// This slot's share of `Inner::bytes`: its value's [`cost`], or 0
    /// without a value or once retired.
    counted: usize,
    /// `ok` or the error kind of the last fetch, for metrics.
    pub(super) last_outcome: Option<&'static str>,
}

impl Slot {
    /// An empty slot, last used at `clock`.
    pub(super) fn new(clock: u64) -> Slot {
        Slot {
            value: ArcSwapOption::empty(),
            read_since_fetch: AtomicBool::new(false),
            last_used: AtomicU64::new(clock),
            version_changes: AtomicU64::new(0),
            lapsed: AtomicBool::new(false),
            state: Mutex::new(SlotState::default()),
        }
    }

    pub(super) fn state(&self) -> MutexGuard<'_, SlotState> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl SlotState {
    /// Called once the slot is out of the map: a fetch under way still
    /// answers its readers, but nothing is scheduled after it, and its
    /// value no longer counts against `max-bytes` (of `bytes`). Returns the
    /// pending timer, for the caller to stop in `Inner::timers`.
    #[must_use]
    pub(super) fn retire(&mut self, bytes: &AtomicUsize) -> Option<TimerId> {
        self.retired = true;
        self.count(bytes, 0);
        self.timer.take()
    }

    /// Makes this slot's share of `bytes` `cost`, unless it is retired.
    pub(super) fn count(&mut self, bytes: &AtomicUsize, cost: usize) {
        let cost = if self.retired { 0 } else { cost };
        bytes.fetch_add(cost, Ordering::Relaxed);
        bytes.fetch_sub(self.counted, Ordering::Relaxed);
        self.counted = cost;
    }
}

/// What a cached value costs against `max-bytes`: its value, its
/// metadata and key, and the fixed size of a slot holding it.
pub(super) fn cost(key: &Key, secret: &Secret) -> usize {
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

impl Inner {
    /// The slot for `key`, created when missing. A new slot holds no value
    /// yet: to make room it evicts the least recently used slot without a
    /// value, never a value.
    pub(super) fn slot(&self, key: &Key) -> Arc<Slot> {
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
            .or_insert_with(|| Arc::new(Slot::new(now)))
            .clone()
    }

    /// Joins the fetch under way for this slot, or starts one.
    pub(super) fn start_fetch(self: &Arc<Self>, key: &Key, slot: &Arc<Slot>) -> SharedFetch {
        let mut state = slot.state();
        self.start_fetch_locked(key, slot, &mut state)
    }

    /// [`Inner::start_fetch`] with the slot's state already locked.
    pub(super) fn start_fetch_locked(
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
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use crate::cache::testing::*;
    use crate::cache::{CacheError, CacheStatus};

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
}
