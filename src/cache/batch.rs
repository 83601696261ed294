//! BatchGetSecretValue: the current versions of up to [`BATCH_LIMIT`]
//! secrets of one region in one call, each secret's part an ordinary fetch
//! of its slot; single calls when AWS refuses the batch call.

use std::collections::HashSet;
use std::sync::{Arc, MutexGuard, PoisonError};
use std::time::Duration;

use futures_util::StreamExt;
use futures_util::future::FutureExt;
use tokio::sync::oneshot;
use tokio::time::Instant;

use super::key::Key;
use super::slot::{SharedFetch, Slot};
use super::{Inner, PREFETCH_CONCURRENCY};
use crate::domain::Arn;
use crate::domain::Secret;
use crate::domain::Version;
use crate::upstream::{BATCH_LIMIT, UpstreamError};

/// How long single calls replace BatchGetSecretValue after AWS refused it.
const BATCH_REFUSED_RETRY: Duration = Duration::from_secs(600);

/// One secret's share of a batch: its slot, and where its outcome goes.
struct Part {
    key: Key,
    slot: Arc<Slot>,
    tx: oneshot::Sender<Result<Arc<Secret>, UpstreamError>>,
}

/// `items` in groups of at most [`BATCH_LIMIT`] of one batch group (service
/// and region, [`Arn::batch_group`]) each.
pub(super) fn batches<T>(items: Vec<T>, region: impl Fn(&T) -> &str) -> Vec<Vec<T>> {
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

impl Inner {
    /// [`super::Cache::refresh_cached`].
    pub(super) async fn refresh_cached(self: &Arc<Self>, arns: Vec<Arn>) {
        let slots: Vec<_> = arns
            .iter()
            .filter_map(|arn| {
                let key = Key::new(arn, &Version::Current);
                let slot = Arc::clone(&*self.slots.get(&key)?);
                Some((key, slot))
            })
            .collect();
        let wanted: HashSet<&str> = arns.iter().map(Arn::as_str).collect();
        let staged: Vec<_> = self
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
        let mut fetches = self.start_batch(slots);
        fetches.extend(staged.iter().map(|(key, slot)| self.start_fetch(key, slot)));
        futures_util::future::join_all(fetches).await;
    }

    /// Fetches the current version of each slot: joins the fetch under way
    /// for a slot that has one; the others are fetched together, in
    /// BatchGetSecretValue calls of up to [`BATCH_LIMIT`] secrets of one
    /// region. Each reader of a slot joins its part as it would a single
    /// fetch. Returns one fetch per slot, in order.
    pub(super) fn start_batch(self: &Arc<Self>, slots: Vec<(Key, Arc<Slot>)>) -> Vec<SharedFetch> {
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
        part.tx.send(result).ok();
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
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::Ordering;

    use super::*;
    use crate::cache::testing::*;
    use crate::cache::{CacheError, CacheStatus};
    use crate::config::CacheConfig;

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
            Arn::parse(&format!(
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
}
