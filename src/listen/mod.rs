//! The listeners: TCP (plain or TLS) and a Unix socket, accepted by
//! actix-server. A connection's first bytes choose the secret agent
//! protocol or HTTP, which actix-http's HTTP/1 dispatcher serves over a
//! [`Paced`] stream.
//!
//! A connection has one `service.request-timeout` from accept to its first
//! complete request (an HTTP head, or a secret agent protocol request): the
//! TLS handshake, the sniff of the first bytes and the first request share
//! that one window.
//!
//! - `mod.rs`: [`bind`] builds and runs the servers; each connection is
//!   opened, sniffed and handed to its protocol here.
//! - [`sniff`]: the first bytes decide the protocol.
//! - [`stream`]: the [`Stream`] enum over TCP, TLS and Unix sockets.
//! - [`paced`]: [`Paced`], one request head at a time, with the deadlines
//!   of heads and of answers the client does not take.
//! - [`tls`]: certificates and keys into the rustls server config.
//! - [`uds`]: the Unix-socket bind (private directory, then a hard link).

mod paced;
mod sniff;
mod stream;
mod tls;
mod uds;

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use actix_http::{HttpService, KeepAlive};
use actix_server::{GracefulShutdownSignal, Server};
use actix_service::{
    IntoServiceFactory, Service, ServiceFactory, ServiceFactoryExt, fn_factory, fn_service,
    map_config,
};
use actix_web::dev::AppConfig;
use anyhow::Context as _;
use tokio::net::{TcpStream, UnixStream};
use tokio::time::{Instant, timeout_at};
use tokio_rustls::TlsAcceptor;
use tokio_util::task::AbortOnDropHandle;

use crate::aerospike;
use crate::config::{OVER_LIMIT_HEADROOM, OverLimit, ServiceConfig};
use crate::http::{self, AppState, ConnectionLimit};
use paced::Paced;
use sniff::Protocol;
use stream::Stream;

/// Kernel buffer sizes of a client connection (Linux doubles them). Set
/// rather than left to autotuning, which grows each socket's buffers to
/// megabytes: a client that pipelines and never reads would otherwise park
/// that much kernel memory per connection in the agent's sockets.
const SOCKET_BUFFER: usize = 64 * 1024;

/// Time a client has to read the rest of an answer once the agent has
/// decided to close its connection.
const DISCONNECT_TIMEOUT: Duration = Duration::from_secs(1);

/// The bound listeners, not yet running.
pub(crate) struct Listeners {
    pub(crate) server: Server,
    /// The bound TCP address (useful with port 0).
    pub(crate) tcp_addr: Option<SocketAddr>,
}

/// Binds every listener in `service` and serves `state` on them until
/// `shutdown` resolves; then stops accepting, closes idle connections and
/// lets in-flight requests finish within `service.shutdown-timeout`.
pub(crate) fn bind(
    service: &ServiceConfig,
    state: &AppState,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<Listeners> {
    let workers = service.workers;
    let mut builder = Server::build()
        .workers(workers)
        // actix-server counts connections per worker.
        .max_concurrent_connections(accepted_connections(service).div_ceil(workers))
        .shutdown_timeout(service.shutdown_timeout.as_secs().max(1))
        .shutdown_signal(shutdown);
    let conn = Connections {
        state: state.clone(),
        request_timeout: service.request_timeout,
        stopping: builder.graceful_shutdown_signal(),
        refuse_over: (service.over_limit == OverLimit::Refuse).then_some(service.max_connections),
    };

    let mut tcp_addr = None;
    if let Some(tcp) = &service.tcp {
        let listener = std::net::TcpListener::bind(tcp.addr)
            .with_context(|| format!("cannot listen on {} (service.tcp.endpoint)", tcp.addr))?;
        // Accepted sockets inherit the receive buffer of the listener.
        socket2::SockRef::from(&listener).set_recv_buffer_size(SOCKET_BUFFER)?;
        let bound = listener.local_addr()?;
        let scheme = match &tcp.tls {
            Some(tls) => {
                let acceptor = TlsAcceptor::from(Arc::new(tls::server_config(tls)?));
                // The runtime `bind` runs on: the agent's multi-thread one.
                let handshakes = tokio::runtime::Handle::current();
                let conn = conn.clone();
                builder = builder.listen("tls", listener, move || {
                    let acceptor = acceptor.clone();
                    let handshakes = handshakes.clone();
                    // The handshake is bounded by the first request's window
                    // (see `Connections::factory`).
                    conn.factory(move |io: TcpStream| {
                        let acceptor = acceptor.clone();
                        let handshakes = handshakes.clone();
                        async move {
                            let peer = tcp_setup(&io)?;
                            let tls = handshake(&handshakes, &acceptor, io).await?;
                            Ok((Stream::Tls(Box::new(tls)), peer))
                        }
                    })
                })?;
                "https"
            }
            None => {
                let conn = conn.clone();
                builder = builder.listen("tcp", listener, move || {
                    conn.factory(|io: TcpStream| async move {
                        let peer = tcp_setup(&io)?;
                        Ok((Stream::Tcp(io), peer))
                    })
                })?;
                "http"
            }
        };
        log::info!("listening on {scheme}://{bound}");
        tcp_addr = Some(bound);
    }
    if let Some(uds) = &service.uds {
        builder = builder.listen_uds("uds", uds::bind(uds)?, move || {
            conn.factory(|io: UnixStream| async move { Ok((Stream::Unix(io), None)) })
        })?;
        log::info!(
            "listening on unix:{} (mode {:04o})",
            uds.socket_path.display(),
            uds.mode
        );
    }
    Ok(Listeners {
        server: builder.run(),
        tcp_addr,
    })
}

/// Connections accepted at once: `max-connections`, and with `over-limit:
/// refuse` some more, to be answered 429 (see [`OverLimit`]).
fn accepted_connections(service: &ServiceConfig) -> usize {
    match service.over_limit {
        OverLimit::Queue => service.max_connections,
        OverLimit::Refuse => service.max_connections + OVER_LIMIT_HEADROOM,
    }
}

/// Holds the count of open connections, [`AppState::connections`], with
/// this connection in it until dropped.
struct OpenConnectionsGuard(Arc<AtomicUsize>);

impl OpenConnectionsGuard {
    /// Also returns how many are open, this one included.
    fn new(connections: &Arc<AtomicUsize>) -> (OpenConnectionsGuard, usize) {
        let open = connections.fetch_add(1, Ordering::Relaxed) + 1;
        (OpenConnectionsGuard(Arc::clone(connections)), open)
    }
}

impl Drop for OpenConnectionsGuard {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

/// A TLS handshake, run on `handshakes` (the agent's multi-thread runtime)
/// rather than on the worker that accepted the connection: a handshake is a
/// burst of CPU (the key exchange and the certificate signature), and on the
/// worker it would stall every kept-alive connection that worker serves. The
/// socket stays with the worker's reactor; the finished stream comes back to
/// the worker. Dropped (the connection's deadline, a shutdown), the
/// handshake is aborted.
async fn handshake(
    handshakes: &tokio::runtime::Handle,
    acceptor: &TlsAcceptor,
    io: TcpStream,
) -> io::Result<tokio_rustls::server::TlsStream<TcpStream>> {
    let task = AbortOnDropHandle::new(handshakes.spawn(acceptor.accept(io)));
    match task.await {
        Ok(result) => result,
        Err(e) => Err(io::Error::other(format!(
            "the TLS handshake did not finish: {e}"
        ))),
    }
}

fn tcp_setup(io: &TcpStream) -> io::Result<Option<SocketAddr>> {
    // Answers are small and written whole: send them at once.
    io.set_nodelay(true)?;
    socket2::SockRef::from(io).set_send_buffer_size(SOCKET_BUFFER)?;
    Ok(io.peer_addr().ok())
}

/// What every connection of every listener shares.
#[derive(Clone)]
struct Connections {
    state: AppState,
    request_timeout: Duration,
    /// Resolves when a graceful shutdown starts: idle keep-alive
    /// connections close, busy ones after their current answer.
    stopping: GracefulShutdownSignal,
    /// With `over-limit: refuse`: `max-connections`, above which requests
    /// are answered 429 ([`ConnectionLimit`]).
    refuse_over: Option<usize>,
}

impl Connections {
    /// One worker's service for a listener: `open` turns an accepted
    /// stream into a [`Stream`] (the TLS handshake, say), then the HTTP/1
    /// dispatcher serves it, paced. From accept, `open`, the sniff of the
    /// first bytes and the first request together have one
    /// `request-timeout`.
    fn factory<I, O, F>(
        &self,
        open: O,
    ) -> impl ServiceFactory<I, Config = (), Response = (), Error = (), InitError = ()> + use<I, O, F>
    where
        I: 'static,
        O: Fn(I) -> F + Clone + 'static,
        F: Future<Output = io::Result<(Stream, Option<SocketAddr>)>> + 'static,
    {
        let stopping = self.stopping.clone();
        let refuse_over = self.refuse_over;
        let h1 = HttpService::build()
            .keep_alive(KeepAlive::Timeout(self.request_timeout))
            .client_request_timeout(self.request_timeout)
            .client_disconnect_timeout(DISCONNECT_TIMEOUT)
            .on_connect_ext(move |io: &Paced<Stream>, ext| {
                if let Some(max_connections) = refuse_over {
                    ext.insert(ConnectionLimit {
                        open_at_accept: io.open_at_accept(),
                        max_connections,
                    });
                }
            })
            .graceful_shutdown_signal(move || {
                let stopping = stopping.clone();
                async move { stopping.notified().await }
            })
            .h1(map_config(
                http::app(self.state.clone())
                    .into_factory()
                    .map_err(|err: actix_web::Error| err.error_response()),
                |_| AppConfig::default(),
            ));
        let timeout = self.request_timeout;
        let state = self.state.clone();
        let stopping = self.stopping.clone();
        fn_factory(move || {
            let handler = h1.new_service(());
            let open = open.clone();
            let state = state.clone();
            let stopping = stopping.clone();
            async move {
                let handler = Rc::new(handler.await?);
                Ok(fn_service(move |io: I| {
                    let handler = handler.clone();
                    let open = open.clone();
                    let state = state.clone();
                    let stopping = stopping.clone();
                    async move {
                        let (_open, open_at_accept) = OpenConnectionsGuard::new(&state.connections);
                        let first_request_by = Instant::now() + timeout;
                        let (mut stream, peer) = match timeout_at(first_request_by, open(io)).await
                        {
                            Ok(Ok(opened)) => opened,
                            Ok(Err(e)) => {
                                log::debug!("connection closed before its first request: {e}");
                                return Ok(());
                            }
                            Err(_) => {
                                log::debug!(
                                    "connection closed: not opened within service.request-timeout"
                                );
                                return Ok(());
                            }
                        };
                        let Some((protocol, first)) =
                            sniff::sniff(&mut stream, first_request_by).await
                        else {
                            return Ok(()); // closed or silent
                        };
                        match protocol {
                            Protocol::Aerospike => {
                                let limits = aerospike::Limits {
                                    timeout,
                                    first_request_by,
                                };
                                aerospike::serve(
                                    stream,
                                    first,
                                    state.reader.clone(),
                                    state.metrics.clone(),
                                    limits,
                                    stopping,
                                )
                                .await;
                            }
                            Protocol::Http => {
                                let paced = Paced::with_pending(stream, timeout, first)
                                    .first_head_by(first_request_by)
                                    .opened_with(open_at_accept);
                                if let Err(e) = handler.call((paced, peer)).await {
                                    log::debug!("connection closed: {e}");
                                }
                            }
                        }
                        Ok(())
                    }
                }))
            }
        })
    }
}
