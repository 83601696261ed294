//! The negative cache: an entry's last not-found answer, repeated to its
//! reads for `negative-ttl` rather than asked of AWS again.

use std::time::Duration;

use tokio::time::Instant;

use crate::upstream::UpstreamError;

/// An entry's remembered not-found answer, if any.
#[derive(Default)]
pub(super) struct NotFound(Option<(UpstreamError, Instant)>);

impl NotFound {
    /// After a fetch that failed for a lasting reason: remembers `err` for
    /// `ttl` when it says not found (and `ttl` is not zero), else forgets.
    pub(super) fn record(&mut self, err: &UpstreamError, ttl: Duration) {
        self.0 =
            (err.is_not_found() && !ttl.is_zero()).then(|| (err.clone(), Instant::now() + ttl));
    }

    /// After a fetch that succeeded.
    pub(super) fn forget(&mut self) {
        self.0 = None;
    }

    /// The answer for a read now, while it holds.
    pub(super) fn answer(&self) -> Option<&UpstreamError> {
        self.0
            .as_ref()
            .filter(|(_, until)| Instant::now() < *until)
            .map(|(err, _)| err)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cache::budget::REFRESH_BURST;
    use crate::cache::testing::*;
    use crate::cache::{Cache, CacheError, CacheStatus};
    use crate::config::CacheConfig;

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
}
