//! Rate budgets: a client's forced refreshes of one entry, and names made
//! up under patterns, each of which costs an AWS call.

use std::sync::{Arc, PoisonError};
use std::time::Duration;

use tokio::time::Instant;

use super::key::Key;
use super::{CacheError, CacheStatus, Inner};
use crate::domain::Arn;
use crate::domain::Secret;
use crate::domain::Version;

/// Forced refreshes of one entry allowed at once before
/// `min-refresh-interval` applies: a refresh right after an update of the
/// secret, and a retry or two, always reach AWS.
pub(super) const REFRESH_BURST: u32 = 3;

/// A budget of `burst` at once, then one per interval (a generic cell rate
/// algorithm): forced refreshes of one entry, new names under patterns.
#[derive(Default)]
pub(super) struct Budget {
    /// When the budget would be back to one; `None` when full.
    next: Option<Instant>,
}

impl Budget {
    /// Takes one from the budget, if there is one left.
    pub(super) fn take(&mut self, now: Instant, interval: Duration, burst: u32) -> bool {
        let next = self.next.map_or(now, |next| next.max(now));
        if next - now > interval * burst.saturating_sub(1) {
            return false;
        }
        self.next = Some(next + interval);
        true
    }
}

impl Inner {
    /// [`super::Cache::admit_new_name`].
    pub(super) fn admit_new_name(&self, arn: &Arn, version: &Version) -> bool {
        let key = Key::new(arn, version);
        if self.slots.contains_key(&key) {
            return true;
        }
        let per_second = self.settings().new_names_per_second;
        if per_second == 0 {
            return true;
        }
        let interval = Duration::from_secs(1) / per_second;
        let admitted = self
            .new_names
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take(Instant::now(), interval, per_second.saturating_mul(2));
        if admitted {
            // Registered now: other readers of the name join its fetch
            // instead of taking from the budget too.
            self.slot(&key);
        }
        admitted
    }

    /// [`super::Cache::refresh`], uncounted.
    pub(super) async fn force(
        self: &Arc<Self>,
        arn: &Arn,
        version: &Version,
    ) -> Result<(Arc<Secret>, CacheStatus), CacheError> {
        let key = Key::new(arn, version);
        let slot = self.slot(&key);
        let fetch = {
            let interval = self.settings.load().min_refresh_interval;
            let mut state = slot.state();
            if let Some(fetch) = &state.inflight {
                Some(fetch.clone())
            } else if state
                .refreshes
                .take(Instant::now(), interval, REFRESH_BURST)
            {
                Some(self.start_fetch_locked(&key, &slot, &mut state))
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
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cache::testing::*;
    use crate::config::CacheConfig;

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
}
