//! Builds the agent from a [`Config`] and runs it until a signal.

use std::net::{SocketAddr, TcpListener};
use std::sync::Arc;
use std::time::Duration;

use actix_web::dev::Server;
use actix_web::{App, HttpServer, web};
use anyhow::Context;
use aws_config::identity::IdentityCache;
use aws_config::retry::RetryConfig;
use aws_config::timeout::TimeoutConfig;
use aws_config::{BehaviorVersion, Region, SdkConfig};

use crate::cache::Cache;
use crate::config::Config;
use crate::credentials::{self, AgentCredentials};
use crate::http::{self, AppState};
use crate::upstream::Upstream;

/// Time to connect to an AWS endpoint before trying the next attempt.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);

/// A bound, ready-to-run agent.
pub struct Application {
    server: Server,
    tcp_addr: Option<SocketAddr>,
}

impl Application {
    /// Binds the listeners and wires credentials, upstream and cache. Must
    /// run inside a tokio runtime.
    pub async fn build(config: Config) -> anyhow::Result<Application> {
        let base = base_sdk_config(&config).await;
        let credentials = AgentCredentials::build(&config.aws.credentials, &base).await;
        let sdk = base
            .to_builder()
            .credentials_provider(credentials.provider())
            .build();
        let upstream = Upstream::new(sdk, config.aws.endpoint.clone());
        let cache = Cache::new(Arc::new(upstream), config.cache.clone());
        let state = AppState {
            resources: Arc::new(config.aws.resources.clone()),
            cache,
        };

        let mut server = HttpServer::new(move || {
            App::new()
                .configure(http::configure(state.clone()))
                .default_service(web::to(http::not_found))
        })
        .shutdown_timeout(10);

        let mut tcp_addr = None;
        if let Some(addr) = config.service.tcp {
            let listener = TcpListener::bind(addr)
                .with_context(|| format!("cannot listen on {addr} (service.tcp.endpoint)"))?;
            let bound = listener.local_addr()?;
            server = server.listen(listener)?;
            log::info!("listening on http://{bound}");
            if !bound.ip().is_loopback() {
                log::warn!(
                    "{bound} is reachable from other hosts and no client auth is configured: anyone who can connect can read every configured secret"
                );
            }
            tcp_addr = Some(bound);
        }
        log::info!(
            "serving {} resource(s) from {}",
            config.aws.resources.len(),
            config.source.display()
        );
        // One line that says where the keys come from; resolving them may
        // take IMDS or STS round trips, so it does not hold up serving.
        tokio::spawn(async move {
            match credentials.probe().await {
                Ok(found) => log::info!("credentials: {found}"),
                Err(e) => {
                    log::warn!("credentials: none yet ({e}); reads fail until some are available")
                }
            }
        });

        Ok(Application {
            server: server.run(),
            tcp_addr,
        })
    }

    /// The bound TCP address (useful with port 0).
    pub fn tcp_addr(&self) -> Option<SocketAddr> {
        self.tcp_addr
    }

    /// Serves until SIGTERM or SIGINT, then drains in-flight requests.
    pub async fn run_until_stopped(self) -> std::io::Result<()> {
        self.server.await
    }
}

/// Region, timeouts, retries and the standard `AWS_*` variables, without
/// credentials: those come from [`AgentCredentials`].
async fn base_sdk_config(config: &Config) -> SdkConfig {
    let (region, from) = default_region(config).await;
    log::info!("region: {region} (from {from})");
    aws_config::defaults(BehaviorVersion::latest())
        .region(region)
        .no_credentials()
        .identity_cache(IdentityCache::no_cache())
        .retry_config(RetryConfig::standard().with_max_attempts(3))
        .timeout_config(
            TimeoutConfig::builder()
                .connect_timeout(CONNECT_TIMEOUT)
                .operation_timeout(config.cache.fetch_timeout)
                .build(),
        )
        .load()
        .await
}

/// The region STS is called in (unless `sts-region` says otherwise); each
/// Secrets Manager call goes to the region of its resource's ARN. It is the
/// config's `region`, else the environment's (`AWS_REGION`), the profile's,
/// the instance's (IMDS), and as a last resort that of the first resource.
async fn default_region(config: &Config) -> (Region, &'static str) {
    use aws_config::environment::region::EnvironmentVariableRegionProvider;
    use aws_config::imds::region::ImdsRegionProvider;
    use aws_config::meta::region::ProvideRegion;
    use aws_config::profile::region::ProfileFileRegionProvider;

    if let Some(region) = &config.aws.region {
        return (Region::new(region.clone()), "config");
    }
    if let Some(region) = EnvironmentVariableRegionProvider::new().region().await {
        return (region, "the environment");
    }
    let mut profile = ProfileFileRegionProvider::builder();
    if let Some(name) = &config.aws.credentials.profile {
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
    let first = config
        .aws
        .resources
        .iter()
        .next()
        .map(|(_, arn)| arn.region());
    (
        Region::new(first.unwrap_or("us-east-1").to_owned()),
        "the first resource's ARN",
    )
}
