//! The SDK settings every AWS client shares: region, timeouts, retries and
//! the standard `AWS_*` variables; and the credentials that sign with them.

use std::sync::Arc;
use std::time::Duration;

use aws_config::identity::IdentityCache;
use aws_config::retry::RetryConfig;
use aws_config::timeout::TimeoutConfig;
use aws_config::{BehaviorVersion, Region, SdkConfig};

use crate::config::CredentialSource;
use crate::config::{AwsAgentFile, Config};
use crate::credentials::{self, AgentCredentials, CredentialMetrics};
use crate::upstream::Endpoints;

/// Time to connect to an AWS endpoint before trying the next attempt.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);

/// What decides how the agent talks to AWS, taken from a config; a reload
/// that changes it builds new clients and credentials.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct AwsSettings {
    region: Option<String>,
    endpoints: Endpoints,
    credentials: CredentialSource,
    /// `profile`, also where the region may come from.
    profile: Option<String>,
    /// The SDK's operation timeout.
    fetch_timeout: Duration,
    /// The last-resort region: the smallest resource name's ARN's.
    fallback_region: Option<String>,
}

impl AwsSettings {
    pub(crate) fn of(config: &Config) -> AwsSettings {
        let resources = &config.aws.resources;
        AwsSettings {
            region: config.aws.region.clone(),
            endpoints: Endpoints {
                secrets_manager: config.aws.endpoint.clone(),
                ssm: config.aws.ssm_endpoint.clone(),
            },
            credentials: config.aws.credentials.clone(),
            profile: config.aws.profile.clone(),
            fetch_timeout: config.cache.fetch_timeout,
            fallback_region: resources
                .names()
                .first()
                .and_then(|name| resources.get(name.as_str()))
                .map(|(_, arn)| arn.region().to_owned())
                .or_else(|| resources.patterns().first().map(|p| p.region().to_owned())),
        }
    }

    /// `secret-manager.aws.endpoint` and `ssm-endpoint`.
    pub(crate) fn endpoint(&self) -> Endpoints {
        self.endpoints.clone()
    }

    /// The SDK config, credentials included, and the credentials alone (for
    /// the probe); `metrics` counts the temporary credentials they fetch.
    /// May take IMDS round trips when the region is not set.
    pub(crate) async fn build(
        &self,
        metrics: Arc<dyn CredentialMetrics>,
    ) -> (SdkConfig, AgentCredentials) {
        let (region, from) = self.default_region().await;
        log::info!("region: {region} (from {from})");
        let mut loader = aws_config::defaults(BehaviorVersion::latest());
        // Every client built from this config (Secrets Manager, SSM, STS,
        // SQS) shares the one HTTP client, its answer bodies capped.
        if let Some(client) = crate::aws_http::default_client() {
            loader = loader.http_client(crate::aws_http::capped(client));
        }
        let base = loader
            .region(region)
            .no_credentials()
            .identity_cache(IdentityCache::no_cache())
            .retry_config(RetryConfig::standard().with_max_attempts(3))
            .timeout_config(
                TimeoutConfig::builder()
                    .connect_timeout(CONNECT_TIMEOUT)
                    .operation_timeout(self.fetch_timeout)
                    .build(),
            )
            .load()
            .await;
        let credentials = AgentCredentials::build(&self.credentials, &base, metrics).await;
        let sdk = base
            .to_builder()
            .credentials_provider(credentials.provider())
            .build();
        (sdk, credentials)
    }

    /// The region STS is called in (unless `sts-region` says otherwise);
    /// each Secrets Manager call goes to the region of its resource's ARN.
    /// It is the config's `region`, else the environment's (`AWS_REGION`),
    /// the profile's, the instance's (IMDS), and as a last resort that of
    /// the resource whose name sorts first.
    async fn default_region(&self) -> (Region, &'static str) {
        use aws_config::environment::region::EnvironmentVariableRegionProvider;
        use aws_config::imds::region::ImdsRegionProvider;
        use aws_config::meta::region::ProvideRegion;
        use aws_config::profile::region::ProfileFileRegionProvider;

        if let Some(region) = &self.region {
            return (Region::new(region.clone()), "config");
        }
        if let Some(region) = EnvironmentVariableRegionProvider::new().region().await {
            return (region, "the environment");
        }
        let mut profile = ProfileFileRegionProvider::builder();
        if let Some(name) = &self.profile {
            profile = profile.profile_name(name);
        }
        if let Some(region) = profile.build().region().await {
            return (region, "the AWS config file");
        }
        let imds = ImdsRegionProvider::builder()
            .imds_client(credentials::imds_client())
            .build();
        if let Some(region) = imds.region().await {
            return (region, "instance metadata (IMDSv2)");
        }
        let fallback = self.fallback_region.as_deref().unwrap_or("us-east-1");
        (Region::new(fallback.to_owned()), "the first resource's ARN")
    }
}

/// The configuration of an agent started the AWS Secrets Manager Agent's
/// way: its TOML `file` (its defaults when `None`) converted in memory.
/// "Any secret its identity may read" becomes the `"*"` pattern of the
/// identity's own account (`caller`, learnt at start: see
/// [`crate::resolve_caller_account`]), in the file's region or else the
/// environment's (`AWS_REGION`, the profile, IMDS).
pub async fn aws_agent_config(file: Option<&std::path::Path>) -> anyhow::Result<Config> {
    use anyhow::Context as _;

    let agent_file = AwsAgentFile::read(file)?;
    let region = match agent_file.region()? {
        Some(region) => region,
        None => aws_config::default_provider::region::DefaultRegionChain::builder()
            .build()
            .region()
            .await
            .map(|r| r.to_string())
            .context("no AWS region: set `region` in the TOML file, or AWS_REGION")?,
    };
    Ok(agent_file.config(None, &region)?)
}
