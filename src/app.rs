//! Builds the agent from a [`Config`] and runs it until a signal: wiring
//! only. The parts: [`crate::aws`] (SDK settings and credentials),
//! [`crate::upstream`], [`crate::cache`], [`crate::http`] on the
//! [`crate::listen`] listeners, and [`crate::reload`] on SIGHUP; or, for
//! `secret-agent exec`, the program [`crate::exec`] runs.

use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use actix_server::Server;
use tokio::signal::unix::{Signal, SignalKind, signal};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::account::AccountGate;
use crate::aws::AwsSettings;
use crate::cache::Cache;
use crate::config::{CallerAccount, Config};
use crate::credentials::probe_credentials;
use crate::domain::Arn;
use crate::events::{self, EventsStatus};
use crate::exec::{Exec, ExecSignals};
use crate::http::AppState;
use crate::listen;
use crate::metrics::Metrics;
use crate::notify::{self, State};
use crate::read::{Gate, Reader, Snapshot};
use crate::reload::Reloader;
use crate::render::Render;
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
    /// The listeners; none for `exec` without `--listen`.
    server: Option<Server>,
    tcp_addr: Option<SocketAddr>,
    /// Removed when the server stops.
    socket_path: Option<PathBuf>,
    /// The credential probe, the events poll, the rendered files' keeper
    /// and the SIGHUP loop (which owns the reloader); aborted when the
    /// application stops or is dropped.
    tasks: JoinSet<()>,
    /// The read path, for `exec`.
    reader: Reader,
    /// Stops the listeners of `exec --listen` when the program has exited.
    stop_listeners: CancellationToken,
    shutdown_timeout: Duration,
}

/// What both modes wire: AWS, the cache, the read path, the credential
/// probe and the events poll; everything but the listeners and SIGHUP.
struct Core {
    state: AppState,
    reloader: Reloader,
    tasks: JoinSet<()>,
    /// No client tokens are configured.
    open: bool,
    /// `caller` ARNs whose account STS has not told yet: the gate that
    /// holds AWS calls back, and the learning that ends with the config
    /// to apply before opening it.
    account: Option<(AccountGate, LearnAccount)>,
}

/// Learns the `caller` account; ends with the config that names it.
type LearnAccount = Pin<Box<dyn Future<Output = Config> + Send>>;

impl Core {
    async fn build(config: &Config, serving: Serving) -> Core {
        let gate = Gate::new(serving == Serving::Now);
        let aws = AwsSettings::of(config);
        let metrics = Arc::new(Metrics::new());
        let (sdk, credentials) = aws.build(metrics.clone()).await;
        // `caller` ARNs whose account STS has not told yet (the credentials
        // file holds no working keys): no call goes out until it has.
        let account_gate = (config.caller_account == CallerAccount::Pending).then(AccountGate::new);
        let account = account_gate.map(|gate| {
            let learn: LearnAccount = Box::pin(AccountGate::learn(sdk.clone(), config.clone()));
            (gate, learn)
        });
        let sdk = match &account {
            Some((gate, _)) => gate.sdk(&sdk),
            None => sdk,
        };
        let events_client = config
            .aws
            .events
            .as_ref()
            .map(|events| (events::client(&sdk, events), events.queue_url.clone()));
        let roles = Roles::new(
            RoleSettings::new(config, sdk.clone(), aws.endpoint()),
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
        let snapshot = Snapshot::of(config);
        let open = snapshot.access.is_open();
        let reader = Reader::new(snapshot, cache, roles, gate.clone());
        let (render, rendering) =
            Render::start(reader.clone(), config.render.clone(), metrics.clone());
        let state = AppState {
            reader,
            render: Arc::clone(&render.status),
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
        let reloader = Reloader::new(
            state.reader.clone(),
            metrics.clone(),
            upstream.clone(),
            config.clone(),
        )
        .with_render(render);
        for warning in &config.warnings {
            log::warn!("{warning}");
        }
        // One line that says where the keys come from; resolving them may
        // take IMDS or STS round trips, so it does not hold up serving.
        let mut tasks = JoinSet::new();
        tasks.spawn(probe_credentials(
            credentials,
            state.reader.credentials_ready.clone(),
        ));
        // The rendered files, kept until the agent stops.
        tasks.spawn(rendering);
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
        if account.is_some() {
            log::warn!(
                "the AWS account (`caller`) is not known yet: STS GetCallerIdentity did not accept the credentials; AWS calls fail until {} holds keys it accepts",
                config
                    .aws
                    .credentials
                    .file()
                    .map_or_else(|| "the credentials source".to_owned(), |f| f.label())
            );
        }
        Core {
            state,
            reloader,
            tasks,
            open,
            account,
        }
    }
}

/// Binds the listeners of `config`, serving `state` until `stop` resolves.
fn bind(
    config: &Config,
    state: &AppState,
    open: bool,
    stop: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<listen::Listeners> {
    let listeners = listen::bind(&config.service, state, stop)?;
    if let Some(bound) = listeners.tcp_addr
        && open
        && !bound.ip().is_loopback()
    {
        log::warn!(
            "{bound} is reachable from other hosts and no client tokens are configured (auth.tokens): anyone who can connect can read every configured secret"
        );
    }
    announce(config, listeners.tcp_addr);
    Ok(listeners)
}

impl Application {
    /// Binds the listeners and wires credentials, upstream and cache. Must
    /// run inside a tokio runtime.
    pub async fn build(
        config: Config,
        signals: Signals,
        serving: Serving,
    ) -> anyhow::Result<Application> {
        let Core {
            state,
            mut reloader,
            mut tasks,
            open,
            account,
        } = Core::build(&config, serving).await;
        let listeners = bind(&config, &state, open, signals.stop)?;
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
        let mut hangups = signals.hangup;
        let (account_gate, mut learn_account) = account.unzip();
        tasks.spawn(async move {
            loop {
                let learnt = async {
                    match learn_account.as_mut() {
                        Some(learning) => learning.await,
                        None => std::future::pending().await,
                    }
                };
                tokio::select! {
                    hangup = hangups.recv() => {
                        if hangup.is_none() {
                            break;
                        }
                        notify::notify(State::Reloading);
                        reloader.reload().await;
                        notify::notify(State::Ready);
                    }
                    config = learnt => {
                        learn_account = None;
                        reloader.apply(config).await;
                        if let Some(gate) = &account_gate {
                            gate.open();
                        }
                    }
                }
            }
        });
        // The listeners are bound: a connection from now on is answered.
        notify::notify(State::Ready);

        Ok(Application {
            server: Some(listeners.server),
            tcp_addr: listeners.tcp_addr,
            socket_path: socket_path(&config),
            tasks,
            reader: state.reader,
            stop_listeners: CancellationToken::new(),
            shutdown_timeout: config.service.shutdown_timeout,
        })
    }

    /// The agent for `secret-agent exec`: wired as [`Application::build`]
    /// wires it, serving at once, but with listeners only when `listen` is
    /// set; the config is read once (SIGHUP is the program's) and nothing
    /// is told to systemd (`NOTIFY_SOCKET` is the program's too). Run it
    /// with [`Application::exec`].
    pub async fn build_for_exec(config: Config, listen: bool) -> anyhow::Result<Application> {
        let mut core = Core::build(&config, Serving::Now).await;
        if let Some((gate, learn)) = core.account.take() {
            // Once STS names the account, the config that names it applies
            // and the calls held back go out.
            let mut reloader = core.reloader;
            core.tasks.spawn(async move {
                let config = learn.await;
                reloader.apply(config).await;
                gate.open();
            });
        }
        let stop_listeners = CancellationToken::new();
        let listeners = if listen {
            let stop = stop_listeners.clone();
            Some(bind(&config, &core.state, core.open, async move {
                stop.cancelled().await
            })?)
        } else {
            None
        };
        log::info!(
            "exec: resources from {}; listeners: {}",
            config.source.display(),
            if listen {
                "as configured (--listen)"
            } else {
                "none"
            }
        );
        let tcp_addr = listeners.as_ref().and_then(|l| l.tcp_addr);
        Ok(Application {
            server: listeners.map(|l| l.server),
            tcp_addr,
            socket_path: listen.then(|| socket_path(&config)).flatten(),
            tasks: core.tasks,
            reader: core.state.reader,
            stop_listeners,
            shutdown_timeout: config.service.shutdown_timeout,
        })
    }

    /// Runs `exec`'s program to its end (see [`crate::exec`]), then stops
    /// the listeners, if any; returns the exit code for exec.
    pub async fn exec(mut self, exec: Exec, signals: ExecSignals) -> u8 {
        let server = self.server.take();
        let stop = self.stop_listeners.clone();
        let program = async {
            let code =
                crate::exec::run(exec, self.reader.clone(), signals, self.shutdown_timeout).await;
            stop.cancel();
            code
        };
        let served = async {
            match server {
                Some(server) => server.await,
                None => Ok(()),
            }
        };
        let (code, served) = tokio::join!(program, served);
        if let Err(e) = served {
            log::error!("exec: the listeners failed: {e}");
        }
        self.stop().await;
        code
    }

    /// The bound TCP address (useful with port 0).
    pub fn tcp_addr(&self) -> Option<SocketAddr> {
        self.tcp_addr
    }

    /// Serves until SIGTERM or SIGINT, drains in-flight requests, then
    /// removes the Unix socket.
    pub async fn run_until_stopped(mut self) -> std::io::Result<()> {
        let result = match self.server.take() {
            Some(server) => server.await,
            None => Ok(()),
        };
        self.stop().await;
        result
    }

    /// Ends the tasks and removes the Unix socket.
    async fn stop(&mut self) {
        self.tasks.shutdown().await;
        if let Some(path) = &self.socket_path
            && let Err(e) = std::fs::remove_file(path)
        {
            log::warn!("could not remove {}: {e}", path.display());
        }
    }
}

fn socket_path(config: &Config) -> Option<PathBuf> {
    config
        .service
        .uds
        .as_ref()
        .map(|uds| uds.socket_path.clone())
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
