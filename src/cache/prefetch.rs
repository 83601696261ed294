//! The start-up prefetch: every configured resource fetched in batch calls,
//! its progress for readiness, and the retries of those that failed.

use std::collections::{BTreeSet, HashMap};
use std::future::Future;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use futures_util::StreamExt;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::batch::batches;
use super::key::Key;
use super::schedule::RETRY_BACKOFF;
use super::{Inner, PREFETCH_CONCURRENCY};
use crate::domain::Arn;
use crate::domain::Version;
use crate::upstream::UpstreamError;

/// Wait before retrying a prefetch that failed for a reason that lasts
/// (access denied, a deleted secret, a key it cannot decrypt): someone has
/// to fix it, so asking more often only adds calls. Not configurable.
const LASTING_FAILURE_RETRY: Duration = Duration::from_secs(60);

/// Progress of a start-up prefetch.
#[derive(Debug)]
pub(crate) struct Prefetch {
    /// Resources not yet tried once.
    pending: AtomicUsize,
    /// ARNs whose fetches have failed and are being retried.
    failing: Mutex<BTreeSet<String>>,
}

impl Prefetch {
    /// Every resource has been fetched, or tried once and is being retried.
    pub(crate) fn is_done(&self) -> bool {
        self.pending.load(Ordering::SeqCst) == 0
    }

    /// ARNs still failing, in order.
    pub(crate) fn failing(&self) -> Vec<String> {
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
    fn new(progress: &Arc<Prefetch>, arn: &Arn) -> Failing {
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

impl Inner {
    /// [`super::Cache::prefetch_after`].
    pub(super) fn prefetch_after(
        self: &Arc<Self>,
        arns: Vec<Arn>,
        start: impl Future<Output = ()> + Send + 'static,
    ) -> Arc<Prefetch> {
        let progress = Arc::new(Prefetch {
            pending: AtomicUsize::new(arns.len()),
            failing: Mutex::new(BTreeSet::new()),
        });
        // Registered now, so that a reload before an ARN's turn stops it too.
        let work: Vec<_> = {
            let mut prefetching = self.lock_prefetching();
            arns.into_iter()
                .map(|arn| {
                    let work = prefetching
                        .entry(arn.clone())
                        .or_insert_with(|| self.tasks.child_token())
                        .clone();
                    (arn, work)
                })
                .collect()
        };
        let (inner, tracker) = (Arc::clone(self), Arc::clone(&progress));
        self.spawn(async move {
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

    pub(super) fn lock_prefetching(&self) -> MutexGuard<'_, HashMap<Arn, CancellationToken>> {
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
        batch: Vec<(Arn, CancellationToken)>,
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
        arn: Arn,
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
                    RETRY_BACKOFF.delay(failures).max(Duration::from_secs(1))
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
        arn: &Arn,
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
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cache::CacheStatus;
    use crate::cache::testing::*;
    use crate::config::CacheConfig;

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
}
