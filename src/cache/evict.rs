//! How entries leave the cache: least recently used eviction within
//! `max-entries` and `max-bytes`, and the removals of a reload.

use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use super::Inner;
use super::key::Key;
use super::slot::Slot;

impl Inner {
    /// Marks a slot as used now. The clock only moves when a slot is
    /// created, so steady hits write nothing: entries read since the last
    /// insertion tie as the most recent, which is all eviction needs.
    pub(super) fn touch(&self, slot: &Slot) {
        let now = self.clock.load(Ordering::Relaxed);
        if slot.last_used.load(Ordering::Relaxed) != now {
            slot.last_used.store(now, Ordering::Relaxed);
        }
    }

    /// Evicts the least recently used slots that hold a value (`valued`) or
    /// do not, until at most `keep` of that kind are left, and for values,
    /// until they cost at most `max-bytes`; `spare` stays.
    /// Slots of the other kind are never touched, so failed lookups cannot
    /// push values out, and values only push out other values.
    pub(super) fn evict(&self, valued: bool, keep: usize, spare: Option<&Key>) {
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
                if let Some(timer) = slot.state().retire(&self.bytes) {
                    self.timers.stop(timer);
                }
                log::debug!(
                    "cache full; evicted {}{} ({})",
                    key.arn,
                    key.version_note(),
                    if valued { "a value" } else { "no value" }
                );
            }
        }
    }

    /// [`super::Cache::retain`].
    pub(super) fn retain(&self, keep: &HashSet<&str>) {
        // Cancelled under the lock the prefetch holds while it checks for
        // that and creates slots: a removed resource's slot is never
        // re-created.
        self.lock_prefetching().retain(|arn, work| {
            let kept = keep.contains(arn.as_str());
            if !kept {
                work.cancel();
            }
            kept
        });
        let mut removed = Vec::new();
        self.slots.retain(|key, slot| {
            let kept = keep.contains(key.arn.as_str());
            if !kept {
                removed.push(Arc::clone(slot));
            }
            kept
        });
        for slot in removed {
            if let Some(timer) = slot.state().retire(&self.bytes) {
                self.timers.stop(timer);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::cache::testing::*;
    use crate::cache::{CacheStatus, PREFETCH_CONCURRENCY};
    use crate::config::CacheConfig;
    use crate::domain::Arn;
    use crate::domain::Version;
    use crate::upstream::BATCH_LIMIT;

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
        cache.retain(&kept.iter().map(Arn::as_str).collect());
        tokio::time::sleep(Duration::from_secs(10 * 60)).await;
        assert_eq!(fake.calls(), PREFETCH_CONCURRENCY);
        assert_eq!(cache.len(), per_turn);
    }
}
