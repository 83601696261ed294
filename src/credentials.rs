//! Where the agent's AWS credentials come from.
//!
//! The credential mode is resolved once, at start-up, into one
//! [`SharedCredentialsProvider`]:
//!
//! - keys in the config file, if present;
//! - else the seed's lookup order: environment variables, then the shared
//!   credentials file and profile (re-read when the file changes), then the
//!   EC2 instance role through IMDSv2; before IMDS, as in aws-config's own
//!   chain, a web identity token (EKS IRSA) and container credentials (ECS,
//!   EKS Pod Identity), so the agent works as a sidecar there too;
//! - optionally an STS assume-role layer over either, signed with them.
//!
//! The aws-config providers do the work (IMDS, profile files, STS). What is
//! ours: the ordered chain, so a failure can say which sources were tried;
//! noticing that the shared credentials file changed; and one cache that
//! keeps temporary credentials until shortly before they expire.

use std::fmt;
use std::hash::{Hash, Hasher};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, SystemTime};

use aws_config::SdkConfig;
use aws_config::ecs::EcsCredentialsProvider;
use aws_config::environment::EnvironmentVariableCredentialsProvider;
use aws_config::imds::credentials::ImdsCredentialsProvider;
use aws_config::profile::ProfileFileCredentialsProvider;
use aws_config::provider_config::ProviderConfig;
use aws_config::sts::AssumeRoleProvider;
use aws_config::web_identity_token::WebIdentityTokenCredentialsProvider;
use aws_credential_types::Credentials;
use aws_credential_types::provider::error::CredentialsError;
use aws_credential_types::provider::{self, ProvideCredentials, SharedCredentialsProvider, future};
use aws_sdk_secretsmanager::config::Region;
use secrecy::ExposeSecret;
use zeroize::Zeroize;

use crate::config::{AssumeRole, CredentialsConfig};
use crate::metrics::METRICS;

/// Time an IMDS request may take before the chain gives up on it.
const IMDS_TIMEOUT: Duration = Duration::from_secs(1);

/// Temporary credentials are replaced this long before they expire (or at
/// three quarters of their lifetime, when that is shorter).
const REFRESH_BUFFER: Duration = Duration::from_secs(300);

/// The credential provider the agent signs with, and what it is, in words.
#[derive(Clone)]
pub struct AgentCredentials {
    provider: SharedCredentialsProvider,
    /// The role and the provider that signs its AssumeRole calls, kept apart
    /// so the start-up line can say where the source keys came from.
    assume_role: Option<(String, SharedCredentialsProvider)>,
    /// How credentials are obtained, e.g. "static keys from config".
    mode: String,
    refreshes: Arc<AtomicU64>,
}

impl fmt::Debug for AgentCredentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AgentCredentials")
            .field("mode", &self.mode)
            .finish()
    }
}

impl AgentCredentials {
    /// Builds the provider for `config`. `base` carries region, timeouts and
    /// the standard endpoint variables for the STS client.
    pub async fn build(config: &CredentialsConfig, base: &SdkConfig) -> AgentCredentials {
        let refreshes = Arc::new(AtomicU64::new(0));
        let (source, source_mode): (SharedCredentialsProvider, String) = match &config.static_keys {
            Some(keys) => {
                let mut creds = Credentials::new(
                    keys.access_key_id.clone(),
                    keys.secret_access_key.expose_secret().to_owned(),
                    keys.session_token
                        .as_ref()
                        .map(|t| t.expose_secret().to_owned()),
                    None,
                    "config",
                );
                creds.set_property(Source("static keys from config".into()));
                (
                    SharedCredentialsProvider::new(creds),
                    "static keys from config".into(),
                )
            }
            None => {
                let chain = Chain::standard(config.profile.clone(), base.region().cloned());
                let mode = chain.describe();
                (
                    SharedCredentialsProvider::new(Refreshing::new(chain, refreshes.clone())),
                    mode,
                )
            }
        };
        let (provider, assume_role, mode) = match &config.assume_role {
            None => (source, None, source_mode),
            Some(role) => {
                let assumed = assume_role(role, base, source.clone()).await;
                let mode = format!("assume role {} over {source_mode}", role.role_arn);
                let name = format!("assume role {}", role.role_arn);
                let cached = Refreshing::new(Named::new(name, assumed), refreshes.clone());
                (
                    SharedCredentialsProvider::new(cached),
                    Some((role.role_arn.clone(), source)),
                    mode,
                )
            }
        };
        AgentCredentials {
            provider,
            assume_role,
            mode,
            refreshes,
        }
    }

    pub fn provider(&self) -> SharedCredentialsProvider {
        self.provider.clone()
    }

    /// Describes the mode, e.g. "assume role arn:... over static keys from config".
    pub fn mode(&self) -> &str {
        &self.mode
    }

    /// How many times temporary credentials were fetched or refreshed.
    pub fn refreshes(&self) -> u64 {
        self.refreshes.load(Ordering::Relaxed)
    }

    /// Resolves credentials once and says where they came from, without the
    /// keys, e.g. "assume role arn:... over environment keys": for the
    /// start-up log line.
    pub async fn probe(&self) -> Result<String, String> {
        match &self.assume_role {
            None => source_of(&self.provider).await,
            Some((role_arn, base)) => {
                let base = source_of(base).await?;
                self.provider
                    .provide_credentials()
                    .await
                    .map_err(|e| describe_error(&e))?;
                Ok(format!("assume role {role_arn} over {base}"))
            }
        }
    }
}

/// Where the credentials of `provider` come from, in words.
async fn source_of(provider: &SharedCredentialsProvider) -> Result<String, String> {
    let creds = provider
        .provide_credentials()
        .await
        .map_err(|e| describe_error(&e))?;
    Ok(creds
        .get_property::<Source>()
        .map_or_else(|| "an unnamed source".to_owned(), |s| s.0.clone()))
}

/// An IMDS client that gives up quickly, so an agent off EC2 falls through
/// to "no credentials" (or no region) within about two seconds. Honours
/// `AWS_EC2_METADATA_SERVICE_ENDPOINT`.
pub fn imds_client() -> aws_config::imds::Client {
    aws_config::imds::Client::builder()
        .connect_timeout(IMDS_TIMEOUT)
        .read_timeout(IMDS_TIMEOUT)
        .max_attempts(2)
        .build()
}

async fn assume_role(
    role: &AssumeRole,
    base: &SdkConfig,
    source: SharedCredentialsProvider,
) -> AssumeRoleProvider {
    let mut sts = base.to_builder();
    if let Some(endpoint) = &role.sts_endpoint {
        sts.set_endpoint_url(Some(endpoint.clone()));
    }
    let mut builder = AssumeRoleProvider::builder(role.role_arn.clone())
        .session_name(
            role.session_name
                .clone()
                .unwrap_or_else(|| "secret-agent".to_owned()),
        )
        .configure(&sts.build());
    if let Some(region) = role
        .sts_region
        .clone()
        .or_else(|| base.region().map(|r| r.to_string()))
    {
        builder = builder.region(Region::new(region));
    }
    if let Some(id) = &role.external_id {
        builder = builder.external_id(id.expose_secret());
    }
    if let Some(duration) = role.duration {
        builder = builder.session_length(duration);
    }
    builder.build_from_provider(source).await
}

/// The error of a credential provider and its causes, for people.
pub fn describe_error(err: &CredentialsError) -> String {
    let mut source = std::error::Error::source(err);
    // The variants' own words ("the credential provider was not enabled",
    // "an error occurred while loading credentials") say less than their cause.
    let mut text = match source {
        Some(cause) => {
            source = cause.source();
            cause.to_string()
        }
        None => err.to_string(),
    };
    while let Some(e) = source {
        let part = e.to_string();
        if !text.contains(&part) {
            text.push_str(": ");
            text.push_str(&part);
        }
        source = e.source();
    }
    text
}

/// Which source produced a set of credentials, in words; attached to them
/// as a property.
#[derive(Debug, Clone)]
struct Source(String);

/// Names the credentials of an inner provider, so the chain can tell sources apart.
struct Named<P> {
    name: String,
    inner: P,
}

impl<P: ProvideCredentials> Named<P> {
    fn new(name: impl Into<String>, inner: P) -> Self {
        Named {
            name: name.into(),
            inner,
        }
    }
}

impl<P: ProvideCredentials> fmt::Debug for Named<P> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.name)
    }
}

impl<P: ProvideCredentials> ProvideCredentials for Named<P> {
    fn provide_credentials<'a>(&'a self) -> future::ProvideCredentials<'a>
    where
        Self: 'a,
    {
        future::ProvideCredentials::new(async move {
            match self.inner.provide_credentials().await {
                Ok(mut creds) => {
                    creds.set_property(Source(self.name.clone()));
                    Ok(creds)
                }
                // A source with nothing to offer: the chain moves on.
                Err(err @ CredentialsError::CredentialsNotLoaded(_)) => Err(err),
                Err(err) => Err(labelled(&self.name, err)),
            }
        })
    }
}

/// `err`, of the same kind, its message starting with the source that failed.
fn labelled(name: &str, err: CredentialsError) -> CredentialsError {
    let message = format!("{name}: {}", describe_error(&err));
    match err {
        CredentialsError::InvalidConfiguration(_) => {
            CredentialsError::invalid_configuration(message)
        }
        CredentialsError::Unhandled(_) => CredentialsError::unhandled(message),
        CredentialsError::ProviderTimedOut(_) => err,
        _ => CredentialsError::provider_error(message),
    }
}

/// The seed's lookup order, tried in turn; a source that has nothing moves
/// on to the next, and the final error lists what was tried.
#[derive(Debug)]
struct Chain {
    sources: Vec<(String, SharedCredentialsProvider)>,
}

impl Chain {
    fn standard(profile: Option<String>, region: Option<Region>) -> Chain {
        // Region and environment for the providers that call STS themselves
        // (web identity; profiles with role_arn).
        let provider_config = ProviderConfig::default().with_region(region.clone());
        let file = SharedFile::new(profile, region);
        let web_identity = WebIdentityTokenCredentialsProvider::builder()
            .configure(&provider_config)
            .build();
        let container = EcsCredentialsProvider::builder()
            .configure(&provider_config)
            .build();
        let imds = ImdsCredentialsProvider::builder()
            .imds_client(imds_client())
            .build();
        Chain {
            sources: vec![
                (
                    "environment variables (AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY)".into(),
                    SharedCredentialsProvider::new(Named::new(
                        "environment keys (AWS_ACCESS_KEY_ID)",
                        EnvironmentVariableCredentialsProvider::new(),
                    )),
                ),
                (
                    format!(
                        "shared credentials file {} (profile {})",
                        file.credentials_path().display(),
                        file.profile_name()
                    ),
                    SharedCredentialsProvider::new(file),
                ),
                (
                    "web identity token (AWS_WEB_IDENTITY_TOKEN_FILE, AWS_ROLE_ARN)".into(),
                    SharedCredentialsProvider::new(Named::new(
                        "web identity token (IRSA)",
                        web_identity,
                    )),
                ),
                (
                    "container credentials (AWS_CONTAINER_CREDENTIALS_*_URI)".into(),
                    SharedCredentialsProvider::new(Named::new(
                        "container credentials (ECS, EKS Pod Identity)",
                        container,
                    )),
                ),
                (
                    "EC2 instance metadata (IMDSv2)".into(),
                    SharedCredentialsProvider::new(Named::new("instance role via IMDSv2", imds)),
                ),
            ],
        }
    }

    fn describe(&self) -> String {
        "default chain: environment, shared credentials file, web identity, container credentials, instance role (IMDSv2)".into()
    }
}

impl ProvideCredentials for Chain {
    fn provide_credentials<'a>(&'a self) -> future::ProvideCredentials<'a>
    where
        Self: 'a,
    {
        future::ProvideCredentials::new(async move {
            let mut tried = Vec::new();
            for (name, source) in &self.sources {
                match source.provide_credentials().await {
                    Ok(creds) => return Ok(creds),
                    Err(CredentialsError::CredentialsNotLoaded(e)) => {
                        log::debug!("no credentials from {name}: {e:?}");
                        tried.push(name.as_str());
                    }
                    Err(other) => return Err(other),
                }
            }
            Err(CredentialsError::not_loaded(format!(
                "credentials could not be found; tried {}",
                tried.join(", then ")
            )))
        })
    }
}

/// The shared credentials file, re-read when it changes: the seed's agent
/// "fetches the latest credentials from the shared credentials file".
#[derive(Debug)]
struct SharedFile {
    profile: Option<String>,
    /// For profiles that assume a role through STS.
    region: Option<Region>,
    /// The provider for the file as last seen, and that file's fingerprint.
    current: Mutex<Option<(Fingerprint, Arc<ProfileFileCredentialsProvider>)>>,
}

/// A hash of each file's contents (`None`: absent). Contents rather than
/// modification times: two writes within one timer tick can share an mtime.
type Fingerprint = Vec<Option<u64>>;

impl SharedFile {
    fn new(profile: Option<String>, region: Option<Region>) -> SharedFile {
        SharedFile {
            profile,
            region,
            current: Mutex::new(None),
        }
    }

    fn profile_name(&self) -> String {
        self.profile
            .clone()
            .or_else(|| std::env::var("AWS_PROFILE").ok())
            .unwrap_or_else(|| "default".into())
    }

    fn credentials_path(&self) -> PathBuf {
        aws_file("AWS_SHARED_CREDENTIALS_FILE", "credentials")
    }

    fn fingerprint(&self) -> Fingerprint {
        [
            self.credentials_path(),
            aws_file("AWS_CONFIG_FILE", "config"),
        ]
        .iter()
        .map(|p| {
            let mut contents = std::fs::read(p).ok()?;
            let mut hasher = std::hash::DefaultHasher::new();
            contents.hash(&mut hasher);
            contents.zeroize();
            Some(hasher.finish())
        })
        .collect()
    }

    fn provider(&self) -> Arc<ProfileFileCredentialsProvider> {
        let fingerprint = self.fingerprint();
        let mut current = self.current.lock().unwrap_or_else(PoisonError::into_inner);
        match &*current {
            Some((seen, provider)) if *seen == fingerprint => provider.clone(),
            _ => {
                // A fresh ProviderConfig: it caches the parsed files.
                let provider_config = ProviderConfig::default().with_region(self.region.clone());
                let mut builder =
                    ProfileFileCredentialsProvider::builder().configure(&provider_config);
                if let Some(profile) = &self.profile {
                    builder = builder.profile_name(profile);
                }
                let provider = Arc::new(builder.build());
                if current.is_some() {
                    log::info!("the shared AWS credentials or config file changed; re-reading it");
                }
                *current = Some((fingerprint, provider.clone()));
                provider
            }
        }
    }
}

impl ProvideCredentials for SharedFile {
    fn provide_credentials<'a>(&'a self) -> future::ProvideCredentials<'a>
    where
        Self: 'a,
    {
        future::ProvideCredentials::new(async move {
            let mut creds = self.provider().provide_credentials().await?;
            creds.set_property(Source(format!(
                "shared credentials file {} (profile {})",
                self.credentials_path().display(),
                self.profile_name()
            )));
            Ok(creds)
        })
    }
}

/// `$VAR`, else `~/.aws/<name>`.
fn aws_file(var: &str, name: &str) -> PathBuf {
    if let Some(path) = std::env::var_os(var) {
        return PathBuf::from(path);
    }
    let home = std::env::var_os("HOME").unwrap_or_default();
    PathBuf::from(home).join(".aws").join(name)
}

/// Keeps credentials that expire until shortly before they do; credentials
/// without an expiry (environment, shared file) are looked up on every call,
/// which is cheap and picks up changes at once.
struct Refreshing<P> {
    inner: P,
    /// The last temporary credentials. An async mutex: one refresh at a time.
    current: tokio::sync::Mutex<Option<(Credentials, SystemTime)>>,
    refreshes: Arc<AtomicU64>,
}

impl<P> fmt::Debug for Refreshing<P> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Refreshing")
    }
}

impl<P: ProvideCredentials> Refreshing<P> {
    fn new(inner: P, refreshes: Arc<AtomicU64>) -> Self {
        Refreshing {
            inner,
            current: tokio::sync::Mutex::new(None),
            refreshes,
        }
    }

    async fn credentials(&self) -> provider::Result {
        let mut current = self.current.lock().await;
        let now = SystemTime::now();
        if let Some((creds, refresh_at)) = &*current
            && now < *refresh_at
        {
            return Ok(creds.clone());
        }
        match self.inner.provide_credentials().await {
            Ok(creds) => {
                let Some(expiry) = creds.expiry() else {
                    *current = None;
                    return Ok(creds);
                };
                self.refreshes.fetch_add(1, Ordering::Relaxed);
                METRICS.credential_refreshes.inc();
                let lifetime = expiry.duration_since(now).unwrap_or_default();
                let refresh_at = expiry - REFRESH_BUFFER.min(lifetime / 4);
                *current = Some((creds.clone(), refresh_at));
                Ok(creds)
            }
            // A failed refresh keeps credentials that have not expired yet.
            Err(err) => match &*current {
                Some((creds, _)) if creds.expiry().is_some_and(|e| now < e) => {
                    log::warn!(
                        "credential refresh failed, using the current ones until they expire: {}",
                        describe_error(&err)
                    );
                    Ok(creds.clone())
                }
                _ => Err(err),
            },
        }
    }
}

impl<P: ProvideCredentials> ProvideCredentials for Refreshing<P> {
    fn provide_credentials<'a>(&'a self) -> future::ProvideCredentials<'a>
    where
        Self: 'a,
    {
        future::ProvideCredentials::new(self.credentials())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicUsize;

    /// Hands out credentials that expire `lifetime` from now, numbered.
    #[derive(Debug)]
    struct Expiring {
        lifetime: Duration,
        calls: AtomicUsize,
        fail: std::sync::atomic::AtomicBool,
    }

    impl ProvideCredentials for Expiring {
        fn provide_credentials<'a>(&'a self) -> future::ProvideCredentials<'a>
        where
            Self: 'a,
        {
            let n = self.calls.fetch_add(1, Ordering::SeqCst);
            if self.fail.load(Ordering::SeqCst) {
                return future::ProvideCredentials::ready(Err(CredentialsError::provider_error(
                    "down",
                )));
            }
            future::ProvideCredentials::ready(Ok(Credentials::new(
                format!("AKID{n}"),
                "secret",
                Some("token".into()),
                Some(SystemTime::now() + self.lifetime),
                "test",
            )))
        }
    }

    fn expiring(lifetime: Duration) -> Expiring {
        Expiring {
            lifetime,
            calls: AtomicUsize::new(0),
            fail: false.into(),
        }
    }

    #[tokio::test]
    async fn temporary_credentials_are_reused_until_near_expiry() {
        let cache = Refreshing::new(expiring(Duration::from_secs(3600)), Default::default());
        let a = cache.credentials().await.unwrap();
        let b = cache.credentials().await.unwrap();
        assert_eq!(a.access_key_id(), b.access_key_id());
        assert_eq!(cache.inner.calls.load(Ordering::SeqCst), 1);
        assert_eq!(cache.refreshes.load(Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn short_lived_credentials_refresh_before_expiry() {
        let cache = Refreshing::new(expiring(Duration::from_millis(400)), Default::default());
        let a = cache.credentials().await.unwrap();
        tokio::time::sleep(Duration::from_millis(320)).await;
        // Past three quarters of the lifetime, still before expiry: new keys.
        let b = cache.credentials().await.unwrap();
        assert_ne!(a.access_key_id(), b.access_key_id());
        assert!(b.expiry().unwrap() > SystemTime::now());
    }

    #[tokio::test]
    async fn failed_refresh_keeps_unexpired_credentials() {
        let cache = Refreshing::new(expiring(Duration::from_millis(800)), Default::default());
        let a = cache.credentials().await.unwrap();
        cache.inner.fail.store(true, Ordering::SeqCst);
        tokio::time::sleep(Duration::from_millis(650)).await;
        assert_eq!(
            cache.credentials().await.unwrap().access_key_id(),
            a.access_key_id()
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert!(cache.credentials().await.is_err());
    }

    #[tokio::test]
    async fn chain_error_names_every_source_tried() {
        let chain = Chain {
            sources: vec![
                ("first".into(), SharedCredentialsProvider::new(Nothing)),
                ("second".into(), SharedCredentialsProvider::new(Nothing)),
            ],
        };
        let err = describe_error(&chain.provide_credentials().await.unwrap_err());
        assert_eq!(
            err,
            "credentials could not be found; tried first, then second"
        );
    }

    #[tokio::test]
    async fn failures_name_the_source_and_keep_their_kind() {
        let failing = Named::new("assume role arn:aws:iam::123456789012:role/R", {
            let e = expiring(Duration::from_secs(60));
            e.fail.store(true, Ordering::SeqCst);
            e
        });
        let err = failing.provide_credentials().await.unwrap_err();
        assert!(matches!(err, CredentialsError::ProviderError(_)), "{err:?}");
        assert_eq!(
            describe_error(&err),
            "assume role arn:aws:iam::123456789012:role/R: down"
        );
        let nothing = Named::new("environment keys", Nothing);
        assert!(matches!(
            nothing.provide_credentials().await,
            Err(CredentialsError::CredentialsNotLoaded(_))
        ));
    }

    #[derive(Debug)]
    struct Nothing;
    impl ProvideCredentials for Nothing {
        fn provide_credentials<'a>(&'a self) -> future::ProvideCredentials<'a>
        where
            Self: 'a,
        {
            future::ProvideCredentials::ready(Err(CredentialsError::not_loaded("none here")))
        }
    }
}
