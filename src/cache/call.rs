//! One call to AWS: a turn among `max-concurrent-calls` and the fetch
//! deadline, the same for a single fetch and a batch; and [`Fetch`], where
//! the calls go.

use std::future::Future;

use futures_util::future::{BoxFuture, FutureExt};
use tokio::time::Instant;

use super::key::Key;
use super::{BATCH_GET_SECRET_VALUE, GET_PARAMETER, GET_SECRET_VALUE, Inner};
use crate::domain::Arn;
use crate::domain::Secret;
use crate::domain::Version;
use crate::upstream::{BatchAnswer, Upstream, UpstreamError, with_deadline};

/// Where values come from. [`Upstream`] in the agent; a fake in unit tests.
pub(crate) trait Fetch: Send + Sync + 'static {
    fn fetch(
        &self,
        arn: Arn,
        version: Version,
    ) -> BoxFuture<'static, Result<Secret, UpstreamError>>;

    /// The current versions of `arns` (one region, at most
    /// [`BATCH_LIMIT`](crate::upstream::BATCH_LIMIT)) in one call; see
    /// [`Upstream::batch_get_secret_value`].
    fn fetch_batch(&self, arns: Vec<Arn>)
    -> BoxFuture<'static, Result<BatchAnswer, UpstreamError>>;
}

impl Fetch for Upstream {
    fn fetch(
        &self,
        arn: Arn,
        version: Version,
    ) -> BoxFuture<'static, Result<Secret, UpstreamError>> {
        let upstream = self.clone();
        async move { upstream.get_value(&arn, &version).await }.boxed()
    }

    fn fetch_batch(
        &self,
        arns: Vec<Arn>,
    ) -> BoxFuture<'static, Result<BatchAnswer, UpstreamError>> {
        let upstream = self.clone();
        async move { upstream.batch_get_secret_value(&arns).await }.boxed()
    }
}

impl Inner {
    /// One GetSecretValue (or GetParameter) for `key`, see [`Inner::within_deadline`].
    pub(super) async fn call(&self, key: &Key) -> Result<Secret, UpstreamError> {
        let action = if key.arn.is_parameter() {
            GET_PARAMETER
        } else {
            GET_SECRET_VALUE
        };
        self.within_deadline(action, || {
            self.fetcher.fetch(key.arn.clone(), key.version.clone())
        })
        .await
    }

    /// One BatchGetSecretValue, see [`Inner::within_deadline`].
    pub(super) async fn call_batch(&self, arns: Vec<Arn>) -> Result<BatchAnswer, UpstreamError> {
        self.within_deadline(BATCH_GET_SECRET_VALUE, || self.fetcher.fetch_batch(arns))
            .await
    }

    /// The call `start` makes, within the fetch deadline, which covers the
    /// wait for a turn among `max-concurrent-calls`; reported to the
    /// metrics as `action`. A call that had to wait and then ran out of
    /// time failed for want of a turn: [`UpstreamError::Busy`].
    async fn within_deadline<T, F>(
        &self,
        action: &'static str,
        start: impl FnOnce() -> F,
    ) -> Result<T, UpstreamError>
    where
        F: Future<Output = Result<T, UpstreamError>>,
    {
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
        // Made only once it has a turn: one that never gets one never starts.
        let result = with_deadline(left, start()).await;
        self.metrics
            .upstream_call(action, result.as_ref().map(drop), started.elapsed());
        match result {
            Err(UpstreamError::Timeout) if waited => Err(UpstreamError::Busy),
            result => result,
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::cache::testing::*;
    use crate::cache::{CacheError, CacheStatus};
    use crate::config::CacheConfig;

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
}
