//! Builds the agent from a [`Config`] and runs it until a signal: wiring
//! only. The parts: [`crate::aws`] (SDK settings and credentials),
//! [`crate::upstream`], [`crate::cache`], [`crate::http`] on the
//! [`crate::listen`] listeners, and [`crate::reload`] on SIGHUP.

use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::Arc;

use actix_server::Server;
use tokio::signal::unix::{Signal, SignalKind, signal};
use tokio::task::JoinSet;

use crate::aws::AwsSettings;
use crate::cache::Cache;
use crate::config::Config;
use crate::credentials::probe_credentials;
use crate::domain::Arn;
use crate::events::{self, EventsStatus};
use crate::http::AppState;
use crate::listen;
use crate::metrics::Metrics;
use crate::notify::{self, State};
use crate::read::{Gate, Reader, Snapshot};
use crate::reload::Reloader;
use crate::roles::{RoleSettings, Roles};
use crate::upstream::Upstream;

/// The signals the agent answers, watched from the start of `main` so that
/// none of them kills the process with its default action while it starts.
pub struct Signals {
    /// SIGHUP: reload the config file.
    hangup: Signal,
    /// SIGTERM or SIGINT: stop accepting, drain, exit.
    stop: Pin<Box<dyn Future<Output = ()> + Send>>,
}

impl Signals {
    /// Installs the handlers. Needs a tokio runtime.
    pub fn install() -> std::io::Result<Signals> {
        let hangup = signal(SignalKind::hangup())?;
        let mut terminate = signal(SignalKind::terminate())?;
        let mut interrupt = signal(SignalKind::interrupt())?;
        let stop = Box::pin(async move {
            let name = tokio::select! {
                _ = terminate.recv() => "SIGTERM",
                _ = interrupt.recv() => "SIGINT",
            };
            log::info!("{name}: draining in-flight requests, then stopping");
            notify::notify(State::Stopping);
        });
        Ok(Signals { hangup, stop })
    }
}

/// When the agent starts serving secrets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Serving {
    /// As soon as it listens.
    Now,
    /// On `GET /start_serving` (`-l`, the AWS agent's Lambda mode); nothing
    /// is fetched before, so a Lambda SnapStart snapshot holds no secret.
    OnStartServing,
}

/// A bound, ready-to-run agent.
pub struct Application {
    server: Server,
    tcp_addr: Option<SocketAddr>,
    /// Removed when the server stops.
    socket_path: Option<PathBuf>,
    /// The credential probe and the SIGHUP loop (which owns the reloader);
    /// aborted when the application stops or is dropped.
    tasks: JoinSet<()>,
}

impl Application {
    /// Binds the listeners and wires credentials, upstream and cache. Must
    /// run inside a tokio runtime.
    pub async fn build(
        config: Config,
        signals: Signals,
        serving: Serving,
    ) -> anyhow::Result<Application> {
        let gate = Gate::new(serving == Serving::Now);
        let aws = AwsSettings::of(&config);
        let metrics = Arc::new(Metrics::new());
        let (sdk, credentials) = aws.build(metrics.clone()).await;
        let events_client = config
            .aws
            .events
            .as_ref()
            .map(|events| (events::client(&sdk, events), events.queue_url.clone()));
        let roles = Roles::new(
            RoleSettings::new(&config, sdk.clone(), aws.endpoint()),
            metrics.clone(),
        );
        let upstream = Upstream::new(sdk, aws.endpoint());
        let cache = Cache::new(
            Arc::new(upstream.clone()),
            metrics.clone(),
            config.cache.clone(),
            config.aws.max_concurrent_calls,
        );
        let prefetch = config.cache.prefetch.then(|| {
            let gate = gate.clone();
            cache.prefetch_after(
                config
                    .aws
                    .resources
                    .iter()
                    .map(|(_, arn)| arn.clone())
                    .collect(),
                async move { gate.opened().await },
            )
        });
        let warmup = (!config.prefetch.is_empty()).then(|| config.prefetch.clone());
        let snapshot = Snapshot::of(&config);
        let open = snapshot.access.is_open();
        let state = AppState {
            reader: Reader::new(snapshot, cache, roles, gate.clone()),
            prefetch,
            events: events_client
                .as_ref()
                .map(|_| Arc::new(EventsStatus::default())),
            metrics: metrics.clone(),
            connections: Arc::default(),
        };
        let reader = &state.reader;
        let (current, cache) = (Arc::clone(&reader.current), reader.cache.downgrade());
        metrics.set_resources(Box::new(move || {
            current
                .load()
                .resources
                .iter()
                .map(|(name, arn)| (name.as_str().to_owned(), cache.stats(arn)))
                .collect()
        }));
        let mut reloader = Reloader::new(
            state.reader.clone(),
            metrics.clone(),
            upstream.clone(),
            config.clone(),
        );

        let ready = state.reader.credentials_ready.clone();
        let listeners = listen::bind(&config.service, &state, signals.stop)?;
        if let Some(bound) = listeners.tcp_addr
            && open
            && !bound.ip().is_loopback()
        {
            log::warn!(
                "{bound} is reachable from other hosts and no client tokens are configured (auth.tokens): anyone who can connect can read every configured secret"
            );
        }
        let socket_path = config
            .service
            .uds
            .as_ref()
            .map(|uds| uds.socket_path.clone());
        announce(&config, listeners.tcp_addr);
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
        let mut tasks = JoinSet::new();
        tasks.spawn(probe_credentials(credentials, ready));
        if let Some(plan) = warmup {
            tasks.spawn(crate::warmup::run(plan, state.reader.clone(), upstream));
        }
        if let (Some((client, queue_url)), Some(status)) = (events_client, state.events.clone()) {
            let current = Arc::clone(&state.reader.current);
            let resolve = move |id: &str| {
                let mut arns: Vec<Arn> = Vec::new();
                for (_, arn) in current.load().resources.iter() {
                    if events::names_secret(arn, id) && !arns.contains(arn) {
                        arns.push(arn.clone());
                    }
                }
                arns
            };
            let events = events::run(
                client,
                queue_url,
                state.reader.cache.clone(),
                resolve,
                status,
                metrics,
            );
            tasks.spawn(async move {
                gate.opened().await;
                events.await;
            });
        }
        let mut hangups = signals.hangup;
        tasks.spawn(async move {
            while hangups.recv().await.is_some() {
                notify::notify(State::Reloading);
                reloader.reload().await;
                notify::notify(State::Ready);
            }
        });
        // The listeners are bound: a connection from now on is answered.
        notify::notify(State::Ready);

        Ok(Application {
            server: listeners.server,
            tcp_addr: listeners.tcp_addr,
            socket_path,
            tasks,
        })
    }

    /// The bound TCP address (useful with port 0).
    pub fn tcp_addr(&self) -> Option<SocketAddr> {
        self.tcp_addr
    }

    /// Serves until SIGTERM or SIGINT, drains in-flight requests, then
    /// removes the Unix socket.
    pub async fn run_until_stopped(mut self) -> std::io::Result<()> {
        let result = self.server.await;
        self.tasks.shutdown().await;
        if let Some(path) = &self.socket_path
            && let Err(e) = std::fs::remove_file(path)
        {
            log::warn!("could not remove {}: {e}", path.display());
        }
        result
    }
}

/// One line per listener on standard output, `secret-agent/<version>
/// listening on http://127.0.0.1:2773`, as the AWS agent prints it: its test
/// harness and wrappers wait for that line. A closed standard output is
/// not an error.
fn announce(config: &Config, tcp_addr: Option<SocketAddr>) {
    use std::io::Write;
    let agent = concat!("secret-agent/", env!("CARGO_PKG_VERSION"));
    let mut lines = String::new();
    if let (Some(addr), Some(tcp)) = (tcp_addr, &config.service.tcp) {
        let scheme = if tcp.tls.is_some() { "https" } else { "http" };
        lines.push_str(&format!("{agent} listening on {scheme}://{addr}\n"));
    }
    if let Some(uds) = &config.service.uds {
        lines.push_str(&format!(
            "{agent} listening on unix:{}\n",
            uds.socket_path.display()
        ));
    }
    let mut out = std::io::stdout().lock();
    out.write_all(lines.as_bytes())
        .and_then(|()| out.flush())
        .ok();
}
