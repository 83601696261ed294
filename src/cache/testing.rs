//! The fake upstream and helpers the cache's unit tests share.

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::future::{BoxFuture, FutureExt};

use super::{Cache, CacheError, CacheMetrics, CacheStatus, Fetch};
use crate::config::CacheConfig;
use crate::domain::Arn;
use crate::domain::Version;
use crate::domain::{Kind, Secret, secret_bytes};
use crate::upstream::{BatchAnswer, UpstreamError};

/// A scripted upstream: counts calls, answers after `delay` with the
/// next scripted outcome (or a value naming the call number). It knows
/// no version ids: asking for one is `VersionNotFound`.
#[derive(Default)]
pub(super) struct FakeUpstream {
    calls: AtomicUsize,
    delay: Mutex<Duration>,
    failure: Mutex<Option<UpstreamError>>,
    /// Calls under way now, and the most there ever were at once.
    in_flight: AtomicUsize,
    max_in_flight: AtomicUsize,
    /// BatchGetSecretValue calls (also counted in `calls`).
    batch_calls: AtomicUsize,
    /// Batch calls are refused as a whole (access denied).
    pub(super) batch_refused: AtomicBool,
    /// ARNs a batch answer reports as not found, on their own.
    pub(super) missing: Mutex<HashSet<String>>,
    /// ARNs a batch answer leaves out.
    pub(super) omitted: Mutex<HashSet<String>>,
    /// Bytes of each value; 0 for a short text naming the call.
    pub(super) value_size: AtomicUsize,
}

/// Counts a call out of `in_flight` when it ends, or is dropped at its deadline.
struct InFlight(Arc<FakeUpstream>);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::SeqCst);
    }
}

impl FakeUpstream {
    pub(super) fn calls(&self) -> usize {
        self.calls.load(Ordering::SeqCst)
    }
    pub(super) fn max_in_flight(&self) -> usize {
        self.max_in_flight.load(Ordering::SeqCst)
    }
    pub(super) fn fail_with(&self, err: Option<UpstreamError>) {
        *self.failure.lock().unwrap() = err;
    }
    pub(super) fn set_delay(&self, d: Duration) {
        *self.delay.lock().unwrap() = d;
    }
    pub(super) fn batch_calls(&self) -> usize {
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

fn fake_secret(arn: &Arn, n: usize) -> Secret {
    Secret {
        arn: arn.to_string(),
        name: "n".into(),
        version_id: Some(format!("v{n}")),
        version_stages: vec!["AWSCURRENT".into()],
        created_date: None,
        kind: Kind::Text,
        value: secret_bytes(format!("value-{n}").into_bytes()),
        parameter: None,
        compat_answer: crate::domain::BuiltOnce::default(),
    }
}

impl Fetch for Arc<FakeUpstream> {
    fn fetch(
        &self,
        arn: Arn,
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
        arns: Vec<Arn>,
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

pub(super) fn settings() -> CacheConfig {
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
pub(super) const CALLS: usize = 32;

pub(super) fn arn(n: usize) -> Arn {
    Arn::parse(&format!(
        "arn:aws:secretsmanager:us-west-1:999999999999:secret:s{n}"
    ))
    .unwrap()
}

pub(super) fn setup(settings: CacheConfig) -> (Arc<FakeUpstream>, Cache) {
    setup_with_calls(settings, CALLS)
}

pub(super) fn setup_with_calls(settings: CacheConfig, calls: usize) -> (Arc<FakeUpstream>, Cache) {
    let (fake, _, cache) = setup_recorded(settings, calls);
    (fake, cache)
}

pub(super) fn setup_recorded(
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
pub(super) struct Recorder {
    /// By [`CacheStatus`].
    reads: [AtomicUsize; CacheStatus::ALL.len()],
    /// Calls to AWS, and those of them that failed.
    pub(super) calls: AtomicUsize,
    pub(super) failed_calls: AtomicUsize,
}

impl Recorder {
    pub(super) fn reads(&self) -> [usize; CacheStatus::ALL.len()] {
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

pub(super) async fn read(cache: &Cache, n: usize) -> Result<(String, CacheStatus), CacheError> {
    text(cache.get(&arn(n), &Version::Current).await)
}

pub(super) async fn refresh(cache: &Cache, n: usize) -> Result<(String, CacheStatus), CacheError> {
    text(cache.refresh(&arn(n), &Version::Current).await)
}

fn text(
    read: Result<(Arc<Secret>, CacheStatus), CacheError>,
) -> Result<(String, CacheStatus), CacheError> {
    read.map(|(s, status)| (String::from_utf8(s.value.to_vec()).unwrap(), status))
}

pub(super) fn version_id(n: usize) -> Version {
    Version::Id(format!("unknown-{n}"))
}

/// Lets spawned tasks run without moving the paused clock.
pub(super) async fn settle() {
    for _ in 0..10 {
        tokio::task::yield_now().await;
    }
}

pub(super) const UNAVAILABLE: UpstreamError = UpstreamError::Timeout;

pub(super) fn denied() -> UpstreamError {
    UpstreamError::AccessDenied {
        code: "AccessDeniedException".into(),
        message: "no".into(),
    }
}
