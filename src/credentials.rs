//! Where the agent's AWS credentials come from.
//!
//! The credential mode is resolved once, at start-up, into one
//! [`SharedCredentialsProvider`]:
//!
//! - keys in the config file, if present;
//! - else the Aerospike Secret Agent's lookup order: environment variables, then the shared
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
use std::path::PathBuf;
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
use aws_smithy_runtime_api::client::http::SharedHttpClient;
use secrecy::{ExposeSecret, SecretString};

use crate::config::file;
use crate::metrics::METRICS;

/// Time an IMDS request may take before the chain gives up on it.
const IMDS_TIMEOUT: Duration = Duration::from_secs(1);

/// Temporary credentials are replaced this long before they expire (or at
/// three quarters of their lifetime, when that is shorter).
const REFRESH_BUFFER: Duration = Duration::from_secs(300);

/// Where the agent's AWS credentials come from, as configured: the one type
/// that says what the agent will try (`--check`, the start-up log,
/// `/readyz`) and that builds the provider, so the two never disagree.
#[derive(Debug, Clone, PartialEq)]
pub enum CredentialSource {
    /// Keys written in the config file.
    Static(StaticKeys),
    /// The default chain, tried in [`ChainSource::ALL`] order; `profile`
    /// picks the shared file's profile (else `AWS_PROFILE`, else `default`).
    Chain { profile: Option<String> },
    /// Temporary credentials from STS AssumeRole, signed with `base`'s.
    AssumeRole {
        role: AssumeRole,
        base: Box<CredentialSource>,
    },
}

/// Access keys from the config file. `Debug` never shows the secret parts.
#[derive(Debug, Clone)]
pub struct StaticKeys {
    pub access_key_id: String,
    pub secret_access_key: SecretString,
    pub session_token: Option<SecretString>,
}

impl PartialEq for StaticKeys {
    fn eq(&self, other: &Self) -> bool {
        self.access_key_id == other.access_key_id
            && self.secret_access_key.expose_secret() == other.secret_access_key.expose_secret()
            && same_secret(&self.session_token, &other.session_token)
    }
}

/// The STS assume-role layer.
#[derive(Debug, Clone)]
pub struct AssumeRole {
    pub role_arn: String,
    pub external_id: Option<SecretString>,
    pub session_name: Option<String>,
    /// Lifetime asked of STS; STS's default (1h) when absent.
    pub duration: Option<Duration>,
    /// Where AssumeRole calls go (`sts-endpoint`); the regional STS endpoint when absent.
    pub sts_endpoint: Option<String>,
    /// Region for STS calls (`sts-region`); `region` when absent.
    pub sts_region: Option<String>,
}

impl PartialEq for AssumeRole {
    fn eq(&self, other: &Self) -> bool {
        (
            &self.role_arn,
            &self.session_name,
            self.duration,
            &self.sts_endpoint,
            &self.sts_region,
        ) == (
            &other.role_arn,
            &other.session_name,
            other.duration,
            &other.sts_endpoint,
            &other.sts_region,
        ) && same_secret(&self.external_id, &other.external_id)
    }
}

/// Compares secret values, for telling whether a reload changed them.
fn same_secret(a: &Option<SecretString>, b: &Option<SecretString>) -> bool {
    match (a, b) {
        (Some(a), Some(b)) => a.expose_secret() == b.expose_secret(),
        (None, None) => true,
        _ => false,
    }
}

impl CredentialSource {
    /// What the agent tries, in words, never the keys.
    pub fn describe(&self) -> String {
        match self {
            CredentialSource::Static(_) => STATIC_KEYS.to_owned(),
            CredentialSource::Chain { profile } => {
                let sources: Vec<String> = ChainSource::ALL
                    .iter()
                    .map(|s| s.label(profile.as_deref()))
                    .collect();
                format!("default chain: {}", sources.join(", then "))
            }
            CredentialSource::AssumeRole { role, base } => {
                format!("assume role {} over {}", role.role_arn, base.describe())
            }
        }
    }

    /// Builds the provider. `sdk` carries region, timeouts and the standard
    /// endpoint variables for the STS client.
    pub async fn build(&self, sdk: &SdkConfig) -> AgentCredentials {
        let (provider, base) = match self {
            CredentialSource::AssumeRole { role, base } => {
                let base = base.provider(sdk);
                let assumed = assume_role(role, sdk, base.clone()).await;
                let name = format!("assume role {}", role.role_arn);
                let provider =
                    SharedCredentialsProvider::new(Refreshing::new(Named::new(name, assumed)));
                (provider, Some(base))
            }
            source => (source.provider(sdk), None),
        };
        AgentCredentials {
            source: self.clone(),
            provider,
            base,
        }
    }

    /// The provider of a source that is not an assumed role.
    fn provider(&self, sdk: &SdkConfig) -> SharedCredentialsProvider {
        match self {
            CredentialSource::Static(keys) => {
                let mut creds = Credentials::new(
                    keys.access_key_id.clone(),
                    keys.secret_access_key.expose_secret().to_owned(),
                    keys.session_token
                        .as_ref()
                        .map(|t| t.expose_secret().to_owned()),
                    None,
                    "config",
                );
                creds.set_property(Source(STATIC_KEYS.into()));
                SharedCredentialsProvider::new(creds)
            }
            CredentialSource::Chain { profile } => SharedCredentialsProvider::new(Refreshing::new(
                Chain::standard(profile.clone(), sdk.region().cloned(), sdk.http_client()),
            )),
            // Roles over roles are not configurable.
            CredentialSource::AssumeRole { base, .. } => base.provider(sdk),
        }
    }
}

const STATIC_KEYS: &str = "static keys from config";

/// The credential provider the agent signs with, built from a
/// [`CredentialSource`].
#[derive(Clone)]
pub struct AgentCredentials {
    source: CredentialSource,
    provider: SharedCredentialsProvider,
    /// For an assumed role: the provider that signs its AssumeRole calls,
    /// so the start-up line can say where the source keys came from.
    base: Option<SharedCredentialsProvider>,
}

impl fmt::Debug for AgentCredentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AgentCredentials")
            .field("source", &self.source.describe())
            .finish()
    }
}

impl AgentCredentials {
    pub fn provider(&self) -> SharedCredentialsProvider {
        self.provider.clone()
    }

    /// Resolves credentials once and says where they came from, without the
    /// keys, e.g. "assume role arn:... over environment keys": for the
    /// start-up log line.
    pub async fn probe(&self) -> Result<String, String> {
        match (&self.source, &self.base) {
            (CredentialSource::AssumeRole { role, .. }, Some(base)) => {
                let base = source_of(base).await?;
                self.provider
                    .provide_credentials()
                    .await
                    .map_err(|e| describe_error(&e))?;
                Ok(format!("assume role {} over {base}", role.role_arn))
            }
            _ => source_of(&self.provider).await,
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
    // The variants' own words ("the credential provider was not enabled",
    // "an error occurred while loading credentials") say less than their cause.
    match std::error::Error::source(err) {
        Some(cause) => chain_text(cause.to_string(), cause.source()),
        None => err.to_string(),
    }
}

/// `first`, then each error of the chain from `source` on whose words are
/// not already in the text, joined by `: `: the SDK's errors often repeat
/// their cause's message in their own.
pub(crate) fn chain_text(
    first: String,
    mut source: Option<&(dyn std::error::Error + 'static)>,
) -> String {
    let mut text = first;
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

/// The sources of the default chain: the Aerospike Secret Agent's lookup
/// order (environment, shared file, instance role) with, before IMDS as in
/// aws-config's own chain, web identity and container credentials.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChainSource {
    Environment,
    SharedFile,
    WebIdentity,
    Container,
    InstanceRole,
}

impl ChainSource {
    /// In the order they are tried.
    pub const ALL: [ChainSource; 5] = [
        ChainSource::Environment,
        ChainSource::SharedFile,
        ChainSource::WebIdentity,
        ChainSource::Container,
        ChainSource::InstanceRole,
    ];

    /// The source in words, as `--check` and "credentials could not be
    /// found; tried ..." name it.
    fn label(self, profile: Option<&str>) -> String {
        match self {
            ChainSource::Environment => {
                "environment variables (AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY)".into()
            }
            ChainSource::SharedFile => format!(
                "shared credentials file {} (profile {})",
                shared_credentials_path().display(),
                profile_name(profile)
            ),
            ChainSource::WebIdentity => {
                "web identity token (AWS_WEB_IDENTITY_TOKEN_FILE, AWS_ROLE_ARN)".into()
            }
            ChainSource::Container => {
                "container credentials (AWS_CONTAINER_CREDENTIALS_*_URI)".into()
            }
            ChainSource::InstanceRole => "EC2 instance metadata (IMDSv2)".into(),
        }
    }

    fn provider(
        self,
        profile: Option<&str>,
        region: Option<&Region>,
        http: Option<&SharedHttpClient>,
    ) -> SharedCredentialsProvider {
        // Region and environment for the providers that call STS themselves
        // (web identity; profiles with role_arn).
        // The agent's HTTP client too, answer bodies capped (src/aws_http.rs).
        let provider_config = || {
            let config = ProviderConfig::default().with_region(region.cloned());
            match http {
                Some(client) => config.with_http_client(client.clone()),
                None => config,
            }
        };
        match self {
            ChainSource::Environment => SharedCredentialsProvider::new(Named::new(
                "environment keys (AWS_ACCESS_KEY_ID)",
                EnvironmentVariableCredentialsProvider::new(),
            )),
            ChainSource::SharedFile => SharedCredentialsProvider::new(SharedFile::new(
                profile.map(str::to_owned),
                region.cloned(),
                http.cloned(),
            )),
            ChainSource::WebIdentity => SharedCredentialsProvider::new(Named::new(
                "web identity token (IRSA)",
                WebIdentityTokenCredentialsProvider::builder()
                    .configure(&provider_config())
                    .build(),
            )),
            ChainSource::Container => SharedCredentialsProvider::new(Named::new(
                "container credentials (ECS, EKS Pod Identity)",
                EcsCredentialsProvider::builder()
                    .configure(&provider_config())
                    .build(),
            )),
            ChainSource::InstanceRole => SharedCredentialsProvider::new(Named::new(
                "instance role via IMDSv2",
                ImdsCredentialsProvider::builder()
                    .imds_client(imds_client())
                    .build(),
            )),
        }
    }
}

/// The default chain, tried in turn; a source that has nothing moves on to
/// the next, and the final error lists what was tried. Ours rather than
/// aws-config's `CredentialsProviderChain` for that error, and for the
/// shared file that is re-read when it changes.
#[derive(Debug)]
struct Chain {
    sources: Vec<(String, SharedCredentialsProvider)>,
}

impl Chain {
    fn standard(
        profile: Option<String>,
        region: Option<Region>,
        http: Option<SharedHttpClient>,
    ) -> Chain {
        let profile = profile.as_deref();
        Chain {
            sources: ChainSource::ALL
                .iter()
                .map(|s| {
                    let provider = s.provider(profile, region.as_ref(), http.as_ref());
                    (s.label(profile), provider)
                })
                .collect(),
        }
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

/// The shared credentials file, re-read when it changes: the Aerospike agent
/// "fetches the latest credentials from the shared credentials file".
/// aws-config's `ProfileFileCredentialsProvider` parses the files once per
/// `ProviderConfig` and keeps them, so this builds a new one whenever the
/// files change (their metadata tells: see [`Stamp`]).
#[derive(Debug)]
struct SharedFile {
    profile: Option<String>,
    /// For profiles that assume a role through STS.
    region: Option<Region>,
    /// The agent's HTTP client, answer bodies capped, for those STS calls.
    http: Option<SharedHttpClient>,
    /// The provider for the file as last seen, and that file's fingerprint.
    current: Mutex<Option<(Fingerprint, Arc<ProfileFileCredentialsProvider>)>>,
}

/// Largest shared credentials or config file: 1 MiB, far more than any
/// real one; a larger one (or a FIFO, a device) is refused, since the SDK
/// reads it whole.
const SHARED_FILE_BYTES: u64 = 1024 * 1024;

/// Each file's [`Stamp`] (`None`: absent).
type Fingerprint = Vec<Option<Stamp>>;

/// What tells that a file changed, from its metadata alone: its identity
/// (device, inode: a file renamed onto it), size, and modification and
/// change times to the nanosecond. Two writes of the same size within one
/// tick of the kernel's file clock (a few ms) can share a stamp.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Stamp {
    device: u64,
    inode: u64,
    size: u64,
    modified: (i64, i64),
    changed: (i64, i64),
}

impl Stamp {
    fn of(meta: &std::fs::Metadata) -> Stamp {
        use std::os::unix::fs::MetadataExt;
        Stamp {
            device: meta.dev(),
            inode: meta.ino(),
            size: meta.size(),
            modified: (meta.mtime(), meta.mtime_nsec()),
            changed: (meta.ctime(), meta.ctime_nsec()),
        }
    }
}

impl SharedFile {
    fn new(
        profile: Option<String>,
        region: Option<Region>,
        http: Option<SharedHttpClient>,
    ) -> SharedFile {
        SharedFile {
            profile,
            region,
            http,
            current: Mutex::new(None),
        }
    }

    /// The files' stamps; an error when one is not a regular file of at
    /// most [`SHARED_FILE_BYTES`]. Asks `stat` only: no file is opened.
    fn fingerprint(&self) -> Result<Fingerprint, CredentialsError> {
        [
            (shared_credentials_path(), "credentials"),
            (aws_file("AWS_CONFIG_FILE", "config"), "config"),
        ]
        .iter()
        .map(
            |(path, what)| match file::regular(path, SHARED_FILE_BYTES) {
                Ok(meta) => Ok(Some(Stamp::of(&meta))),
                Err(e) if file::refusal(&e).is_some() => {
                    Err(CredentialsError::invalid_configuration(format!(
                        "{} (the shared AWS {what} file) is refused: {e}",
                        path.display()
                    )))
                }
                // Absent or unreadable: the SDK finds nothing there, or says why.
                Err(_) => Ok(None),
            },
        )
        .collect()
    }

    /// The provider for the files as they are now: the one of the last
    /// call while their stamps are unchanged, else a new one, which reads
    /// them again.
    fn provider(&self) -> Result<Arc<ProfileFileCredentialsProvider>, CredentialsError> {
        let fingerprint = self.fingerprint()?;
        let mut current = self.current.lock().unwrap_or_else(PoisonError::into_inner);
        Ok(match &*current {
            Some((seen, provider)) if *seen == fingerprint => provider.clone(),
            _ => {
                log::debug!("reading the shared AWS credentials and config files");
                // A fresh ProviderConfig: it caches the parsed files.
                let mut provider_config =
                    ProviderConfig::default().with_region(self.region.clone());
                if let Some(http) = &self.http {
                    provider_config = provider_config.with_http_client(http.clone());
                }
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
        })
    }
}

impl ProvideCredentials for SharedFile {
    fn provide_credentials<'a>(&'a self) -> future::ProvideCredentials<'a>
    where
        Self: 'a,
    {
        future::ProvideCredentials::new(async move {
            let mut creds = self.provider()?.provide_credentials().await?;
            let label = ChainSource::SharedFile.label(self.profile.as_deref());
            creds.set_property(Source(label));
            Ok(creds)
        })
    }
}

/// The profile the shared file is read for.
fn profile_name(configured: Option<&str>) -> String {
    configured
        .map(str::to_owned)
        .or_else(|| std::env::var("AWS_PROFILE").ok())
        .unwrap_or_else(|| "default".into())
}

fn shared_credentials_path() -> PathBuf {
    aws_file("AWS_SHARED_CREDENTIALS_FILE", "credentials")
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
///
/// Ours rather than the SDK's `IdentityCache`: that one drops credentials
/// when a refresh fails, where the agent keeps serving with credentials that
/// have not expired yet, and it cannot let the shared file's changes through
/// at once.
struct Refreshing<P> {
    inner: P,
    /// The last temporary credentials. An async mutex: one refresh at a time.
    current: tokio::sync::Mutex<Option<(Credentials, SystemTime)>>,
}

impl<P> fmt::Debug for Refreshing<P> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Refreshing")
    }
}

impl<P: ProvideCredentials> Refreshing<P> {
    fn new(inner: P) -> Self {
        Refreshing {
            inner,
            current: tokio::sync::Mutex::new(None),
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
    use std::sync::atomic::{AtomicUsize, Ordering};

    #[test]
    fn a_stamp_changes_with_the_file_not_with_a_read() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("credentials");
        let stamp = || Stamp::of(&std::fs::metadata(&path).unwrap());
        std::fs::write(&path, "[default]\n").unwrap();
        let first = stamp();
        std::fs::read(&path).unwrap();
        assert_eq!(stamp(), first);
        std::fs::write(&path, "[default]\nx = 1\n").unwrap();
        let rewritten = stamp();
        assert_ne!(rewritten, first);
        // Same size, renamed onto it: another inode.
        let other = dir.path().join("new");
        std::fs::write(&other, "[default]\nx = 2\n").unwrap();
        std::fs::rename(&other, &path).unwrap();
        assert_ne!(stamp(), rewritten);
    }

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
        let cache = Refreshing::new(expiring(Duration::from_secs(3600)));
        let a = cache.credentials().await.unwrap();
        let b = cache.credentials().await.unwrap();
        assert_eq!(a.access_key_id(), b.access_key_id());
        assert_eq!(cache.inner.calls.load(Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn short_lived_credentials_refresh_before_expiry() {
        let cache = Refreshing::new(expiring(Duration::from_millis(400)));
        let a = cache.credentials().await.unwrap();
        tokio::time::sleep(Duration::from_millis(320)).await;
        // Past three quarters of the lifetime, still before expiry: new keys.
        let b = cache.credentials().await.unwrap();
        assert_ne!(a.access_key_id(), b.access_key_id());
        assert!(b.expiry().unwrap() > SystemTime::now());
    }

    #[tokio::test]
    async fn failed_refresh_keeps_unexpired_credentials() {
        let cache = Refreshing::new(expiring(Duration::from_millis(800)));
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
    async fn the_description_lists_what_the_chain_tries() {
        let source = CredentialSource::Chain {
            profile: Some("ops".into()),
        };
        let chain = Chain::standard(Some("ops".into()), None, None);
        let tried: Vec<&str> = chain
            .sources
            .iter()
            .map(|(name, _)| name.as_str())
            .collect();
        assert_eq!(tried.len(), ChainSource::ALL.len());
        assert_eq!(
            source.describe(),
            format!("default chain: {}", tried.join(", then "))
        );
        assert!(tried[1].contains("(profile ops)"), "{tried:?}");
        let role = CredentialSource::AssumeRole {
            role: AssumeRole {
                role_arn: "arn:aws:iam::123456789012:role/R".into(),
                external_id: None,
                session_name: None,
                duration: None,
                sts_endpoint: None,
                sts_region: None,
            },
            base: Box::new(source.clone()),
        };
        assert_eq!(
            role.describe(),
            format!(
                "assume role arn:aws:iam::123456789012:role/R over {}",
                source.describe()
            )
        );
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
