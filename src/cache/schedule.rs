//! What follows a fetch: its outcome recorded in the slot, then a refresh
//! ahead of expiry, a retry with backoff, or nothing; refreshes due within
//! the gather window share batch calls.

use std::collections::HashSet;
use std::sync::atomic::Ordering;
use std::sync::{Arc, MutexGuard, PoisonError};
use std::time::Duration;

use tokio::time::Instant;

use super::Inner;
use super::key::Key;
use super::slot::{Cached, Slot, TimerId, cost};
use super::timers::Due;
use crate::backoff::Backoff;
use crate::domain::Secret;
use crate::domain::Version;
use crate::upstream::UpstreamError;

/// First retry delay after a transient failure; doubles up to [`MAX_BACKOFF`].
const FIRST_BACKOFF: Duration = Duration::from_millis(500);
const MAX_BACKOFF: Duration = Duration::from_secs(30);
/// Retries of a transient failure: refreshes, and prefetches.
pub(super) const RETRY_BACKOFF: Backoff = Backoff::new(FIRST_BACKOFF, MAX_BACKOFF);

/// Refreshes ahead due within this long of the first (and a quarter of
/// `refresh-ahead` at most) share BatchGetSecretValue calls.
const GATHER_WINDOW: Duration = Duration::from_secs(1);

impl Inner {
    /// Records a fetch's outcome and schedules the slot's next background step.
    pub(super) fn complete(
        self: &Arc<Self>,
        key: &Key,
        slot: &Arc<Slot>,
        result: &Result<Arc<Secret>, UpstreamError>,
    ) {
        let settings = self.settings();
        let mut state = slot.state();
        state.inflight = None;
        if let Some(timer) = state.timer.take() {
            self.timers.stop(timer);
        }
        state.last_outcome = Some(result.as_ref().map_or_else(UpstreamError::kind, |_| "ok"));
        let mut changed = false;
        let evict = match result {
            Ok(secret) => {
                state.failures = 0;
                state.not_found.forget();
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
                changed = old.as_ref().is_none_or(|old| {
                    old.secret.value != secret.value || old.secret.kind != secret.kind
                });
                let had_value = old.is_some();
                slot.read_since_fetch.store(false, Ordering::Relaxed);
                let refresh_at = fetched_at + settings.ttl - settings.refresh_ahead;
                if !state.retired {
                    state.timer = Some(self.timers.set(key, slot, refresh_at, Due::Refresh));
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
                let delay = RETRY_BACKOFF.delay(state.failures.into());
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
                    // Unless the value would be past `max-stale` by then: it
                    // is dropped at that point, and reads fail closed.
                    let retry_at = Instant::now() + delay;
                    state.timer = Some(if retry_at >= stale_until {
                        self.timers.set(key, slot, stale_until, Due::Lapse)
                    } else {
                        self.timers.set(key, slot, retry_at, Due::Retry)
                    });
                }
                false
            }
            Err(err) => {
                state.failures = 0;
                state.not_found.record(err, settings.negative_ttl);
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
        if changed {
            self.changes.send_modify(|n| *n = n.wrapping_add(1));
        }
        if evict {
            self.evict(true, settings.max_entries, Some(key));
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
    pub(super) fn due_soon(&self, taken: &[(Key, Arc<Slot>)]) -> Vec<(Key, Arc<Slot>)> {
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

    /// Runs the timer `id` of `slot`, due now, unless it was stopped or
    /// replaced since it left the queue.
    pub(super) fn fire(self: &Arc<Self>, id: TimerId, key: Key, slot: Arc<Slot>, due: Due) {
        let mut state = slot.state();
        if state.timer != Some(id) {
            return;
        }
        state.timer = None;
        match due {
            Due::Refresh => {
                drop(state);
                if !slot.read_since_fetch.load(Ordering::Relaxed) {
                    return; // idle: let it expire
                }
                self.refresh_soon(key, slot);
            }
            Due::Retry => {
                drop(self.start_fetch_locked(&key, &slot, &mut state));
            }
            Due::Lapse => {
                slot.lapsed.store(true, Ordering::Relaxed);
                let dropped = slot.value.swap(None).is_some();
                state.count(&self.bytes, 0);
                drop(state);
                if dropped {
                    log::warn!(
                        "{} is past max-stale and AWS still fails; no longer served",
                        key.arn
                    );
                }
            }
        }
    }
}

fn round_secs(d: Duration) -> Duration {
    Duration::from_secs(d.as_secs())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cache::CacheStatus;
    use crate::cache::testing::*;
    use crate::config::CacheConfig;

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

    #[test]
    fn backoff_grows_and_is_capped() {
        for failures in 1..40 {
            let d = RETRY_BACKOFF.delay(failures);
            assert!(d <= MAX_BACKOFF, "{d:?}");
            assert!(d >= FIRST_BACKOFF / 2, "{d:?}");
        }
        assert!(RETRY_BACKOFF.delay(5) >= FIRST_BACKOFF * 4);
    }
}
