//! The one read path every front end (HTTP, the Aerospike protocol) takes
//! once it knows which configured resource a client asked for: the serving
//! gate, new-name admission for names under patterns, the cache, the
//! warning throttle and the redaction of client input, ending in one
//! [`ReadError`]. Neither front end knows the other.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use tokio::time::Instant;

use arc_swap::ArcSwap;
use dashmap::DashMap;
use dashmap::mapref::entry::Entry;

use crate::access::Access;
use crate::cache::{Cache, CacheError, CacheStatus};
use crate::config::Config;
use crate::domain::ResourceName;
use crate::domain::Secret;
use crate::domain::Version;
use crate::resources::{Found, Resources};
use crate::roles::Roles;
use crate::text;
use crate::upstream::UpstreamError;

/// What a config reload replaces, all at once.
#[derive(Debug)]
pub(crate) struct Snapshot {
    pub(crate) resources: Resources,
    pub(crate) access: Access,
    /// `secret-manager.aws.convert-to-base64`: the Aerospike protocol
    /// encodes text secrets in base64 (binary ones always are).
    pub(crate) convert_to_base64: bool,
}

impl Snapshot {
    /// The one place a config becomes what requests read: at start and on
    /// every reload.
    pub(crate) fn of(config: &Config) -> Snapshot {
        Snapshot {
            resources: config.aws.resources.clone(),
            access: Access::of(config),
            convert_to_base64: config.aws.convert_to_base64,
        }
    }
}

/// Whether secrets are served yet: from the start, unless the agent was
/// started with `-l` (the AWS agent's Lambda mode), where nothing is served
/// or fetched until `GET /start_serving`, so that a Lambda SnapStart
/// snapshot taken during init holds no secret.
#[derive(Clone)]
pub(crate) struct Gate(Arc<GateInner>);

struct GateInner {
    open: AtomicBool,
    opened: tokio::sync::Notify,
}

impl Gate {
    pub(crate) fn new(open: bool) -> Gate {
        Gate(Arc::new(GateInner {
            open: AtomicBool::new(open),
            opened: tokio::sync::Notify::new(),
        }))
    }

    pub(crate) fn is_open(&self) -> bool {
        self.0.open.load(Ordering::Acquire)
    }

    /// Opens the gate; true when this call opened it.
    pub(crate) fn open(&self) -> bool {
        let was_closed = !self.0.open.swap(true, Ordering::AcqRel);
        if was_closed {
            self.0.opened.notify_waiters();
        }
        was_closed
    }

    /// Returns once the gate is open.
    pub(crate) async fn opened(&self) {
        loop {
            // Created before the check, so an `open` in between wakes it.
            let opened = self.0.opened.notified();
            if self.is_open() {
                return;
            }
            opened.await;
        }
    }
}

/// How often a resource's failed reads may be logged at warn level.
const WARN_EVERY: Duration = Duration::from_secs(10);

/// Failed reads are logged at warn level once per configured entry and
/// [`WARN_EVERY`], the rest at debug: clients cannot flood the log.
#[derive(Default)]
struct WarnThrottle(DashMap<ResourceName, Instant>);

impl WarnThrottle {
    /// Whether a failed read of `entry` gets a warn line now.
    fn warn_now(&self, entry: &ResourceName) -> bool {
        let now = Instant::now();
        match self.0.entry(entry.clone()) {
            Entry::Occupied(last) if now.duration_since(*last.get()) < WARN_EVERY => false,
            Entry::Occupied(mut last) => {
                last.insert(now);
                true
            }
            Entry::Vacant(first) => {
                first.insert(now);
                true
            }
        }
    }
}

/// Why a read of a configured resource failed. Messages never carry secret
/// material, and repeat client input only as a short echo.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ReadError {
    #[error(
        "not serving yet: the agent was started with -l and serves once GET /start_serving is called"
    )]
    NotServingYet,
    #[error(
        "too many names under patterns asked for the first time; try again shortly (cache.new-names-per-second)"
    )]
    NewNamesLimited,
    /// A name under a pattern that AWS does not have: a name nobody
    /// configured, which each front end answers as it answers any unknown
    /// name. Holds what AWS said.
    #[error("{0}")]
    NotConfigured(UpstreamError),
    #[error("{0}")]
    Upstream(UpstreamError),
    /// AWS failed and the cached value is older than `cache.max-stale`.
    #[error("{0}")]
    StaleLimit(UpstreamError),
}

impl From<CacheError> for ReadError {
    fn from(err: CacheError) -> Self {
        match err {
            CacheError::Upstream(e) => ReadError::Upstream(e),
            CacheError::StaleLimit(e) => ReadError::StaleLimit(e),
        }
    }
}

impl ReadError {
    /// The stable, snake_case code every front end shows.
    pub(crate) fn code(&self) -> &'static str {
        match self {
            ReadError::NotServingYet => "not_serving_yet",
            ReadError::NewNamesLimited => "new_names_rate_limited",
            ReadError::StaleLimit(_) => "upstream_unavailable",
            ReadError::Upstream(e) | ReadError::NotConfigured(e) => upstream_code(e),
        }
    }
}

/// The code of a failed AWS call.
fn upstream_code(e: &UpstreamError) -> &'static str {
    use UpstreamError as U;
    match e {
        U::Timeout => "upstream_timeout",
        U::Unreachable(_) => "upstream_unreachable",
        U::Credentials { .. } => "credentials_unavailable",
        U::AccessDenied { .. } => "upstream_access_denied",
        U::SecretNotFound(_) => "upstream_secret_not_found",
        U::VersionNotFound(_) => "version_not_found",
        U::InvalidParameter(_) => "invalid_version",
        U::DecryptionFailure(_) => "upstream_decryption_failure",
        U::InvalidRequest(_) => "upstream_invalid_request",
        U::Throttled(_) => "upstream_throttled",
        U::Busy => "upstream_busy",
        U::Service { .. } => "upstream_service_error",
        U::Other { .. } => "upstream_error",
        U::BadAnswer(_) => "upstream_bad_answer",
    }
}

/// AWS repeats what a client asked for (a name under a pattern, a version)
/// in some messages: that is client input, so only its echo stays.
fn redact(e: &mut UpstreamError, asked: &str) {
    use UpstreamError as U;
    let short = text::echo(asked);
    if short == asked {
        return;
    }
    match e {
        U::Unreachable(m)
        | U::SecretNotFound(m)
        | U::VersionNotFound(m)
        | U::InvalidParameter(m)
        | U::DecryptionFailure(m)
        | U::InvalidRequest(m)
        | U::Throttled(m)
        | U::Credentials { message: m, .. }
        | U::AccessDenied { message: m, .. }
        | U::Service { message: m, .. }
        | U::Other { message: m, .. } => *m = m.replace(asked, &short),
        _ => {}
    }
}

/// The read path's state; cheap to clone.
#[derive(Clone)]
pub(crate) struct Reader {
    /// Swapped atomically on reload; readers never lock.
    pub(crate) current: Arc<ArcSwap<Snapshot>>,
    pub(crate) cache: Cache,
    /// The roles clients read as, each with its own cache.
    pub(crate) roles: Roles,
    /// Closed until `GET /start_serving` in Lambda mode (`-l`).
    pub(crate) serving: Gate,
    /// Set once AWS credentials have resolved (or a value came back).
    pub(crate) credentials_ready: Arc<AtomicBool>,
    warned: Arc<WarnThrottle>,
}

impl Reader {
    pub(crate) fn new(snapshot: Snapshot, cache: Cache, roles: Roles, serving: Gate) -> Reader {
        Reader {
            current: Arc::new(ArcSwap::from_pointee(snapshot)),
            cache,
            roles,
            serving,
            credentials_ready: Arc::new(AtomicBool::new(false)),
            warned: Arc::default(),
        }
    }

    /// The hot path of [`Reader::read`]: `f` applied to the fresh cached
    /// value, with nothing to await; `None` when the read needs
    /// [`Reader::read`].
    pub(crate) fn fresh<R>(
        &self,
        found: &Found<'_>,
        version: &Version,
        f: impl FnOnce(&Arc<Secret>) -> R,
    ) -> Option<R> {
        if !self.serving.is_open() {
            return None;
        }
        self.cache.fresh(&found.arn, version, f)
    }

    /// Reads a configured resource the client may read: from the cache, or
    /// fetched now with `refresh`. A failure is logged here, once per
    /// [`WARN_EVERY`] at warn level, with client input redacted.
    pub(crate) async fn read(
        &self,
        found: &Found<'_>,
        version: &Version,
        refresh: bool,
    ) -> Result<(Arc<Secret>, CacheStatus), ReadError> {
        self.read_from(&self.cache, found, version, refresh).await
    }

    /// [`Reader::read`] from `cache`: the agent's own, or a role's
    /// ([`crate::roles`]).
    pub(crate) async fn read_from(
        &self,
        cache: &Cache,
        found: &Found<'_>,
        version: &Version,
        refresh: bool,
    ) -> Result<(Arc<Secret>, CacheStatus), ReadError> {
        if !self.serving.is_open() {
            return Err(ReadError::NotServingYet);
        }
        let arn = &found.arn;
        if found.by_pattern() && !cache.admit_new_name(arn, version) {
            return Err(ReadError::NewNamesLimited);
        }
        let read = if refresh {
            cache.refresh(arn, version).await
        } else {
            cache.get(arn, version).await
        };
        match read {
            Ok(answer) => {
                // An answer from the cache means credentials worked at some point.
                if !self.credentials_ready.load(Ordering::Relaxed) {
                    self.credentials_ready.store(true, Ordering::Relaxed);
                }
                Ok(answer)
            }
            Err(e) => Err(self.failed(found, version, ReadError::from(e))),
        }
    }

    /// Redacts and logs a failed read; under a pattern, a secret AWS does
    /// not have becomes [`ReadError::NotConfigured`].
    fn failed(&self, found: &Found<'_>, version: &Version, mut e: ReadError) -> ReadError {
        // Warnings are counted per configured entry: names under a
        // pattern are the client's to make up.
        let entry = found.entry;
        let level = if self.warned.warn_now(entry) {
            log::Level::Warn
        } else {
            log::Level::Debug
        };
        // The encrypted form of a parameter is logged as its version.
        let version = match version {
            Version::Encrypted(version) => version,
            version => version,
        };
        // What the client wrote: a name under a pattern (AWS may repeat
        // it, in its own spelling too: the ARN, `/app/x`), a version.
        // The log says only the kind of failure, the answer a short echo.
        let mut asked: Vec<String> = Vec::new();
        if found.by_pattern() {
            asked.push(found.name.to_string());
            asked.push(found.arn.as_str().to_owned());
            asked.extend(found.arn.parameter_name().map(str::to_owned));
        }
        match version {
            Version::Stage(text) | Version::Id(text) | Version::Label(text) => {
                asked.push(text.clone());
            }
            Version::IdAndStage { id, stage } => asked.extend([id.clone(), stage.clone()]),
            Version::Number(number) => asked.push(number.to_string()),
            Version::Current | Version::Encrypted(_) => {}
        }
        // The longest first: one text may hold another.
        asked.sort_by_key(|text| std::cmp::Reverse(text.len()));
        if let ReadError::Upstream(upstream) | ReadError::StaleLimit(upstream) = &mut e {
            for text in &asked {
                redact(upstream, text);
            }
        }
        match (found.by_pattern(), version) {
            (false, Version::Current) => log::log!(level, "{entry}: {e}"),
            (true, Version::Current) => {
                log::log!(level, "{entry}, a name asked for by a client: {}", e.code())
            }
            _ => log::log!(
                level,
                "{entry}, a version asked for by a client: {}",
                e.code()
            ),
        }
        match e {
            ReadError::Upstream(e @ UpstreamError::SecretNotFound(_)) if found.by_pattern() => {
                ReadError::NotConfigured(e)
            }
            e => e,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redact_keeps_only_an_echo_of_the_version() {
        let asked = format!("v-{}", "x".repeat(200));
        let mut e = UpstreamError::VersionNotFound(format!("can't find VersionId: {asked}"));
        redact(&mut e, &asked);
        let text = e.to_string();
        assert!(
            !text.contains(&asked) && text.contains(&text::echo(&asked)),
            "{text}"
        );
        // A short version is already its own echo; nothing else changes.
        let mut e = UpstreamError::VersionNotFound("v: a".into());
        redact(&mut e, "a");
        assert_eq!(
            e.to_string(),
            "no such version of the secret or parameter: v: a"
        );
    }

    #[test]
    fn warnings_are_throttled_per_entry() {
        let throttle = WarnThrottle::default();
        let (a, b) = (
            ResourceName::parse("a").unwrap(),
            ResourceName::parse("b").unwrap(),
        );
        assert!(throttle.warn_now(&a));
        assert!(!throttle.warn_now(&a));
        assert!(throttle.warn_now(&b));
    }

    #[tokio::test]
    async fn the_gate_wakes_its_waiters_once() {
        let gate = Gate::new(false);
        let waiter = tokio::spawn({
            let gate = gate.clone();
            async move { gate.opened().await }
        });
        assert!(!gate.is_open());
        assert!(gate.open());
        assert!(!gate.open());
        waiter.await.unwrap();
        gate.opened().await;
    }
}
