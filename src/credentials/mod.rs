//! Where the agent's AWS credentials come from.
//!
//! The configured [`CredentialSource`] is resolved once, at start-up, into
//! one [`SharedCredentialsProvider`]:
//!
//! - keys in the config file, if present;
//! - else the Aerospike Secret Agent's lookup order: environment variables, then the shared
//!   credentials file and profile (re-read when the file changes), then the
//!   EC2 instance role through IMDSv2; before IMDS, as in aws-config's own
//!   chain, a web identity token (EKS IRSA) and container credentials (ECS,
//!   EKS Pod Identity), so the agent works as a sidecar there too;
//! - or, with `credentials-file`, keys from that file only, re-read when it
//!   changes ([`file`](mod@file));
//! - optionally an STS assume-role layer over any of them, signed with them.
//!
//! The aws-config providers do the work (IMDS, profile files, STS). What is
//! ours: the ordered chain, so a failure can say which sources were tried
//! ([`chain`]); noticing that the shared credentials file changed
//! ([`shared_file`]); one cache that keeps temporary credentials until
//! shortly before they expire ([`refresh`]); and the probe that says where
//! the keys came from ([`probe`]). This file builds the provider of a source.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use aws_config::SdkConfig;
use aws_config::sts::AssumeRoleProvider;
use aws_credential_types::Credentials;
use aws_credential_types::provider::SharedCredentialsProvider;
use aws_credential_types::provider::error::CredentialsError;
use aws_sdk_secretsmanager::config::Region;
use secrecy::ExposeSecret;

use crate::config::{AssumeRole, CredentialSource, STATIC_KEYS};
use crate::text::chain_text;

mod chain;
mod file;
mod probe;
mod refresh;
mod shared_file;

pub(crate) use probe::probe_credentials;

use chain::{Chain, Named};
use refresh::Refreshing;

/// Time an IMDS request may take before the chain gives up on it.
const IMDS_TIMEOUT: Duration = Duration::from_secs(1);

/// What the credentials count; the agent's is [`crate::metrics::Metrics`],
/// tests use their own.
pub(crate) trait CredentialMetrics: Send + Sync + 'static {
    /// Temporary credentials were fetched or refreshed.
    fn credential_refresh(&self);
}

/// The credential provider the agent signs with, built from a
/// [`CredentialSource`].
#[derive(Clone)]
pub(crate) struct AgentCredentials {
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
    /// Builds the provider of `source`. `sdk` carries region, timeouts and
    /// the standard endpoint variables for the STS client; `metrics` counts
    /// the temporary credentials fetched.
    pub(crate) async fn build(
        source: &CredentialSource,
        sdk: &SdkConfig,
        metrics: Arc<dyn CredentialMetrics>,
    ) -> AgentCredentials {
        let (provider, base) = match source {
            CredentialSource::AssumeRole { role, base } => {
                let base = provider_of(base, sdk, &metrics);
                let assumed = assume_role(role, sdk, base.clone()).await;
                let name = format!("assume role {}", role.role_arn);
                let provider = SharedCredentialsProvider::new(Refreshing::new(
                    Named::new(name, assumed),
                    metrics,
                ));
                (provider, Some(base))
            }
            source => (provider_of(source, sdk, &metrics), None),
        };
        AgentCredentials {
            source: source.clone(),
            provider,
            base,
        }
    }

    pub(crate) fn provider(&self) -> SharedCredentialsProvider {
        self.provider.clone()
    }
}

/// Credentials of `role_arn` (a role a client reads as), assumed over what
/// `sdk` signs with and kept until shortly before they expire; STS at
/// `sts_endpoint` in `sts_region` when set, as the assume-role layer's.
pub(crate) async fn assumed(
    role_arn: &str,
    sdk: &SdkConfig,
    base: SharedCredentialsProvider,
    sts_endpoint: Option<String>,
    sts_region: Option<String>,
    metrics: Arc<dyn CredentialMetrics>,
) -> SharedCredentialsProvider {
    let role = AssumeRole {
        role_arn: role_arn.to_owned(),
        external_id: None,
        session_name: None,
        duration: None,
        sts_endpoint,
        sts_region,
    };
    let assumed = assume_role(&role, sdk, base).await;
    SharedCredentialsProvider::new(Refreshing::new(
        Named::new(format!("assume role {role_arn}"), assumed),
        metrics,
    ))
}

/// The provider of a source that is not an assumed role.
fn provider_of(
    source: &CredentialSource,
    sdk: &SdkConfig,
    metrics: &Arc<dyn CredentialMetrics>,
) -> SharedCredentialsProvider {
    match source {
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
            Arc::clone(metrics),
        )),
        CredentialSource::File(file) => SharedCredentialsProvider::new(file::FileCredentials::new(
            file.clone(),
            sdk.region().cloned(),
            sdk.http_client(),
        )),
        // Roles over roles are not configurable.
        CredentialSource::AssumeRole { base, .. } => provider_of(base, sdk, metrics),
    }
}

/// An IMDS client that gives up quickly, so an agent off EC2 falls through
/// to "no credentials" (or no region) within about two seconds. Honours
/// `AWS_EC2_METADATA_SERVICE_ENDPOINT`.
pub(crate) fn imds_client() -> aws_config::imds::Client {
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
pub(crate) fn describe_error(err: &CredentialsError) -> String {
    // The variants' own words ("the credential provider was not enabled",
    // "an error occurred while loading credentials") say less than their cause.
    match std::error::Error::source(err) {
        Some(cause) => chain_text(cause.to_string(), cause.source()),
        None => err.to_string(),
    }
}

/// Which source produced a set of credentials, in words; attached to them
/// as a property.
#[derive(Debug, Clone)]
struct Source(String);
