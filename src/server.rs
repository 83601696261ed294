//! Builds the agent from a [`Config`] and runs it until a signal: the TCP
//! (optionally TLS) and Unix socket listeners, connection limits and timeouts.

use std::net::{SocketAddr, TcpListener};
use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use actix_web::dev::Server;
use actix_web::http::KeepAlive;
use actix_web::middleware::from_fn;
use actix_web::{App, HttpServer, web};
use anyhow::{Context, bail};
use arc_swap::ArcSwap;
use aws_config::identity::IdentityCache;
use aws_config::retry::RetryConfig;
use aws_config::timeout::TimeoutConfig;
use aws_config::{BehaviorVersion, Region, SdkConfig};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio::signal::unix::{SignalKind, signal};

use crate::cache::Cache;
use crate::config::{Config, TlsConfig, UdsConfig};
use crate::credentials::{self, AgentCredentials};
use crate::http::{self, AppState, Authorizer, Snapshot};
use crate::metrics::METRICS;
use crate::upstream::Upstream;

/// Time to connect to an AWS endpoint before trying the next attempt.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);

/// A bound, ready-to-run agent.
pub struct Application {
    server: Server,
    tcp_addr: Option<SocketAddr>,
    /// Removed when the server stops.
    socket_path: Option<PathBuf>,
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
        let cache = Cache::new(
            Arc::new(upstream),
            config.cache.clone(),
            config.aws.max_concurrent_calls,
        );
        let prefetch = config.cache.prefetch.then(|| {
            cache.prefetch(
                config
                    .aws
                    .resources
                    .iter()
                    .map(|(_, arn)| arn.clone())
                    .collect(),
            )
        });
        let auth = Authorizer::new(config.auth.clone());
        let open = auth.is_open();
        let state = AppState {
            current: Arc::new(ArcSwap::from_pointee(Snapshot {
                resources: config.aws.resources.clone(),
                auth,
            })),
            cache,
            prefetch,
            credentials_ready: Arc::new(AtomicBool::new(false)),
        };
        let reloader = Reloader {
            state: state.clone(),
            applied: std::sync::Mutex::new(config.clone()),
        };

        let ready = state.credentials_ready.clone();
        let service = &config.service;
        let workers = std::thread::available_parallelism().map_or(2, |n| n.get());
        let mut server = HttpServer::new(move || {
            App::new()
                .wrap(from_fn(http::guard))
                .configure(http::configure(state.clone()))
                .default_service(web::to(http::not_found))
        })
        .workers(workers)
        // actix counts connections per worker.
        .max_connections(service.max_connections.div_ceil(workers))
        .client_request_timeout(service.request_timeout)
        .keep_alive(KeepAlive::Timeout(service.request_timeout))
        .client_disconnect_timeout(Duration::from_secs(1))
        .shutdown_timeout(service.shutdown_timeout.as_secs().max(1));

        let mut tcp_addr = None;
        if let Some(tcp) = &service.tcp {
            let listener = TcpListener::bind(tcp.addr)
                .with_context(|| format!("cannot listen on {} (service.tcp.endpoint)", tcp.addr))?;
            let bound = listener.local_addr()?;
            let scheme = match &tcp.tls {
                Some(tls) => {
                    server = server.listen_rustls_0_23(listener, tls_config(tls)?)?;
                    "https"
                }
                None => {
                    server = server.listen(listener)?;
                    "http"
                }
            };
            log::info!("listening on {scheme}://{bound}");
            if open && !bound.ip().is_loopback() {
                log::warn!(
                    "{bound} is reachable from other hosts and no client tokens are configured (auth.tokens): anyone who can connect can read every configured secret"
                );
            }
            tcp_addr = Some(bound);
        }
        let mut socket_path = None;
        if let Some(uds) = &service.uds {
            server = server.listen_uds(bind_socket(uds)?)?;
            log::info!(
                "listening on unix:{} (mode {:04o})",
                uds.socket_path.display(),
                uds.mode
            );
            socket_path = Some(uds.socket_path.clone());
        }
        for warning in &config.warnings {
            log::warn!("{warning}");
        }
        log::info!(
            "serving {} resource(s) from {}; client auth: {}",
            config.aws.resources.len(),
            config.source.display(),
            if open {
                "open".to_owned()
            } else {
                format!("{} token(s)", config.auth.len())
            }
        );
        // One line that says where the keys come from; resolving them may
        // take IMDS or STS round trips, so it does not hold up serving.
        tokio::spawn(probe_credentials(credentials, ready));
        let mut hangups = signal(SignalKind::hangup()).context("cannot watch for SIGHUP")?;
        tokio::spawn(async move {
            while hangups.recv().await.is_some() {
                reloader.reload();
            }
        });

        Ok(Application {
            server: server.run(),
            tcp_addr,
            socket_path,
        })
    }

    /// The bound TCP address (useful with port 0).
    pub fn tcp_addr(&self) -> Option<SocketAddr> {
        self.tcp_addr
    }

    /// Serves until SIGTERM or SIGINT, drains in-flight requests, then
    /// removes the Unix socket.
    pub async fn run_until_stopped(self) -> std::io::Result<()> {
        let result = self.server.await;
        if let Some(path) = &self.socket_path {
            if let Err(e) = std::fs::remove_file(path) {
                log::warn!("could not remove {}: {e}", path.display());
            }
        }
        result
    }
}

/// Resolves credentials once, for the start-up log line and readiness;
/// retried with backoff until it works.
async fn probe_credentials(credentials: AgentCredentials, ready: Arc<AtomicBool>) {
    let mut delay = Duration::from_secs(1);
    let mut warned = false;
    loop {
        match credentials.probe().await {
            Ok(found) => {
                log::info!("credentials: {found}");
                ready.store(true, Ordering::Relaxed);
                return;
            }
            Err(e) => {
                if !warned {
                    log::warn!("credentials: none yet ({e}); reads fail until some are available");
                    warned = true;
                }
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(Duration::from_secs(30));
            }
        }
    }
}

/// Re-reads the config file on SIGHUP and applies what can change while
/// running: resources, tokens, cache settings and the log level.
struct Reloader {
    state: AppState,
    /// The config in effect, to tell what changed.
    applied: std::sync::Mutex<Config>,
}

impl Reloader {
    fn reload(&self) {
        let mut applied = self.applied.lock().unwrap_or_else(|e| e.into_inner());
        let path = applied.source.clone();
        let new = match Config::load(&path) {
            Ok(new) => new,
            Err(e) => {
                METRICS.reloads.with_label_values(&["error"]).inc();
                log::error!("reload refused, the running config stays in effect: {e}");
                return;
            }
        };
        let needs_restart = restart_only_changes(&applied, &new);
        if !needs_restart.is_empty() {
            log::warn!(
                "{} changed; that takes effect only after a restart",
                needs_restart.join(", ")
            );
        }
        let (added, removed) = {
            let old = &applied.aws.resources;
            let added: Vec<_> = new
                .aws
                .resources
                .iter()
                .filter(|(n, a)| old.get(n.as_str()).map(|(_, o)| o) != Some(a))
                .map(|(n, a)| (n.clone(), a.clone()))
                .collect();
            let removed = old
                .iter()
                .filter(|(n, _)| new.aws.resources.get(n.as_str()).is_none())
                .count();
            (added, removed)
        };
        self.state.current.store(Arc::new(Snapshot {
            resources: new.aws.resources.clone(),
            auth: Authorizer::new(new.auth.clone()),
        }));
        self.state.cache.set_settings(new.cache.clone());
        let keep = new
            .aws
            .resources
            .iter()
            .map(|(_, arn)| arn.as_str())
            .collect();
        self.state.cache.retain(&keep);
        if std::env::var_os("RUST_LOG").is_none() {
            log::set_max_level(new.log_level);
        }
        if new.cache.prefetch && !added.is_empty() {
            self.state
                .cache
                .prefetch(added.iter().map(|(_, arn)| arn.clone()).collect());
        }
        for warning in &new.warnings {
            log::warn!("{warning}");
        }
        METRICS.reloads.with_label_values(&["ok"]).inc();
        log::info!(
            "reloaded {}: {} resource(s) ({} new or changed, {} removed), {} client token(s)",
            path.display(),
            new.aws.resources.len(),
            added.len(),
            removed,
            new.auth.len()
        );
        *applied = new;
    }
}

/// Settings a reload cannot apply to a running process.
fn restart_only_changes(old: &Config, new: &Config) -> Vec<&'static str> {
    let mut changed = Vec::new();
    let (o, n) = (&old.service, &new.service);
    if format!("{:?}{:?}", o.tcp, o.uds) != format!("{:?}{:?}", n.tcp, n.uds) {
        changed.push("the listeners (service.tcp, service.uds)");
    }
    if (o.max_connections, o.request_timeout, o.shutdown_timeout)
        != (n.max_connections, n.request_timeout, n.shutdown_timeout)
    {
        changed
            .push("connection limits (service.max-connections, request-timeout, shutdown-timeout)");
    }
    let aws = |c: &Config| {
        format!(
            "{:?}{:?}{:?}",
            c.aws.region, c.aws.endpoint, c.aws.credentials
        )
    };
    if aws(old) != aws(new) {
        changed.push("AWS settings (region, endpoint, credentials)");
    }
    if old.aws.max_concurrent_calls != new.aws.max_concurrent_calls {
        changed.push("secret-manager.aws.max-concurrent-calls");
    }
    changed
}

/// Binds the Unix socket: a stale socket file from an earlier run is
/// removed, but never a live one or anything that is not a socket.
fn bind_socket(uds: &UdsConfig) -> anyhow::Result<UnixListener> {
    let path = &uds.socket_path;
    remove_stale_socket(path)?;
    let listener = UnixListener::bind(path).with_context(|| {
        format!(
            "cannot listen on {} (service.uds.socket-path)",
            path.display()
        )
    })?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(uds.mode))
        .with_context(|| format!("cannot set the mode of {}", path.display()))?;
    Ok(listener)
}

fn remove_stale_socket(path: &Path) -> anyhow::Result<()> {
    let Ok(meta) = std::fs::symlink_metadata(path) else {
        return Ok(());
    };
    if !meta.file_type().is_socket() {
        bail!(
            "{} exists and is not a socket; refusing to replace it (service.uds.socket-path)",
            path.display()
        );
    }
    if UnixStream::connect(path).is_ok() {
        bail!(
            "{} is in use by a running process (service.uds.socket-path)",
            path.display()
        );
    }
    log::info!("removing stale socket {}", path.display());
    std::fs::remove_file(path).with_context(|| format!("cannot remove {}", path.display()))
}

/// The rustls server settings: the certificate chain and key, and with a
/// CA file, required client certificates signed by it.
fn tls_config(tls: &TlsConfig) -> anyhow::Result<rustls::ServerConfig> {
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let certs = read_certs(&tls.cert_file, "service.tcp.tls.cert-file")?;
    let key = PrivateKeyDer::from_pem_file(&tls.key_file).with_context(|| {
        format!(
            "no private key in {} (service.tcp.tls.key-file)",
            tls.key_file.display()
        )
    })?;
    let builder = rustls::ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()?;
    let builder = match &tls.ca_file {
        Some(ca_file) => {
            let mut roots = rustls::RootCertStore::empty();
            for cert in read_certs(ca_file, "service.tcp.tls.ca-file")? {
                roots.add(cert).with_context(|| {
                    format!(
                        "bad CA certificate in {} (service.tcp.tls.ca-file)",
                        ca_file.display()
                    )
                })?;
            }
            let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
                Arc::new(roots),
                provider,
            )
            .build()?;
            builder.with_client_cert_verifier(verifier)
        }
        None => builder.with_no_client_auth(),
    };
    builder.with_single_cert(certs, key).with_context(|| {
        format!(
            "the key in {} does not fit the certificate in {}",
            tls.key_file.display(),
            tls.cert_file.display()
        )
    })
}

fn read_certs(path: &Path, key: &str) -> anyhow::Result<Vec<CertificateDer<'static>>> {
    let certs = CertificateDer::pem_file_iter(path)
        .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
        .with_context(|| format!("cannot read certificates from {} ({key})", path.display()))?;
    if certs.is_empty() {
        bail!("no certificate in {} ({key})", path.display());
    }
    Ok(certs)
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
