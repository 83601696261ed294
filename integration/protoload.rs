//! The benchmark's load generator for what wrk cannot drive: the secret
//! agent protocol (docs/aerospike.md), a new connection per request, and
//! TLS handshakes. Run by `integration/bench.sh`:
//!
//!     protoload <addr> <resource> <key|-> <connections> <seconds> <mode> [<cert-file>]
//!
//! One thread per connection, blocking sockets; each sends its next
//! request once it has the answer to the last, for `seconds`. Modes:
//!
//! - `per-request`: a secret agent protocol request (`Resource`, and
//!   `SecretKey` unless `-`) on a new TCP connection, closed after the
//!   answer, as Aerospike's C client does;
//! - `per-request-rst`: the same, each connection closed with a reset
//!   (`SO_LINGER` 0), which leaves no TIME_WAIT behind: the client closes
//!   first in this protocol, so with a normal close the client's side holds
//!   each connection's TIME_WAIT, and at thousands of connections a second
//!   connect(2) spends its time finding a free port;
//! - `kept-open`: the same requests back to back on one connection;
//! - `http-per-request`: `GET /secrets/<resource>` with `Connection: close`
//!   on a new TCP connection each;
//! - `http-kept-open`: the same GETs on one kept-alive connection;
//! - `tls-handshake`: a new TLS connection each (a full handshake, no
//!   resumption), one GET, close;
//! - `tls-handshake-only`: a new TLS connection each, closed (close_notify)
//!   as soon as the handshake is done, without a request. A flood: all its
//!   connections on one thread (a tokio current-thread runtime), so that it
//!   weighs on the machine's scheduler as one client thread, as each of
//!   wrk's does, not as one thread per connection.
//!
//! The TLS modes trust exactly the certificate in `<cert-file>` (pinned;
//! the handshake signature is checked). Each answer is checked: a protocol
//! answer must hold a `SecretValue`, an HTTP answer must be a 200. Prints
//! one JSON line: requests, requests per second, p50 and p99 of each
//! request's time in ms (from connect, for the modes that connect each
//! time), errors and the first error's message (never a secret value).

// Blocking clients on the wall clock; no paused tokio clock to follow.
#![allow(
    clippy::disallowed_types,
    reason = "load on real sockets runs on the wall clock, not tokio's paused one"
)]

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::{Arc, Barrier, Mutex, OnceLock};
use std::time::{Duration, Instant};

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::WebPkiSupportedAlgorithms;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{ClientConfig, ClientConnection, DigitallySignedStruct, SignatureScheme, StreamOwned};

const MAGIC: u32 = 0x51DE_C1CC;
/// The largest protocol answer accepted.
const MAX_ANSWER: usize = 1 << 20;

#[derive(Clone, Copy, PartialEq)]
enum Mode {
    PerRequest,
    PerRequestRst,
    KeptOpen,
    HttpPerRequest,
    HttpKeptOpen,
    TlsHandshake,
    TlsHandshakeOnly,
}

impl Mode {
    fn parse(name: &str) -> Option<Mode> {
        Some(match name {
            "per-request" => Mode::PerRequest,
            "per-request-rst" => Mode::PerRequestRst,
            "kept-open" => Mode::KeptOpen,
            "http-per-request" => Mode::HttpPerRequest,
            "http-kept-open" => Mode::HttpKeptOpen,
            "tls-handshake" => Mode::TlsHandshake,
            "tls-handshake-only" => Mode::TlsHandshakeOnly,
            _ => return None,
        })
    }

    fn is_tls(self) -> bool {
        matches!(self, Mode::TlsHandshake | Mode::TlsHandshakeOnly)
    }
}

/// What every client thread shares.
struct Load {
    addr: SocketAddr,
    mode: Mode,
    /// The bytes of one request (a protocol frame or an HTTP head).
    request: Vec<u8>,
    tls: Option<Arc<ClientConfig>>,
    /// The key exchange group of the first TLS handshake.
    group: OnceLock<String>,
}

/// One client's results.
#[derive(Default)]
struct Tally {
    /// Nanoseconds of each request that was answered as it should be.
    times: Vec<u64>,
    errors: u64,
    first_error: Option<String>,
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let usage =
        "usage: protoload <addr> <resource> <key|-> <connections> <seconds> <mode> [<cert-file>]";
    let (addr, resource, key, connections, seconds, mode, cert) = match args.as_slice() {
        [
            _,
            addr,
            resource,
            key,
            connections,
            seconds,
            mode,
            rest @ ..,
        ] if rest.len() <= 1 => (
            addr.parse::<SocketAddr>().ok(),
            resource,
            key,
            connections.parse::<usize>().ok().filter(|&n| n > 0),
            seconds.parse::<f64>().ok().filter(|&s| s > 0.0),
            Mode::parse(mode),
            rest.first(),
        ),
        _ => fail(usage),
    };
    let (Some(addr), Some(connections), Some(seconds), Some(mode)) =
        (addr, connections, seconds, mode)
    else {
        fail(usage)
    };
    let tls = match (mode.is_tls(), cert) {
        (true, Some(cert)) => Some(Arc::new(
            client_config(cert).unwrap_or_else(|e| fail(&format!("{cert}: {e}"))),
        )),
        (true, None) => fail("the TLS modes need <cert-file>"),
        (false, _) => None,
    };
    let request = match mode {
        Mode::PerRequest | Mode::PerRequestRst | Mode::KeptOpen => protocol_request(resource, key),
        Mode::HttpPerRequest => {
            format!("GET /secrets/{resource} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
                .into_bytes()
        }
        Mode::HttpKeptOpen | Mode::TlsHandshake | Mode::TlsHandshakeOnly => {
            format!("GET /secrets/{resource} HTTP/1.1\r\nHost: x\r\n\r\n").into_bytes()
        }
    };
    let load = Load {
        addr,
        mode,
        request,
        tls,
        group: OnceLock::new(),
    };
    let duration = Duration::from_secs_f64(seconds);
    let tallies = Mutex::new(Vec::with_capacity(connections));
    let elapsed = if mode == Mode::TlsHandshakeOnly {
        let started = Instant::now();
        let tally = tls_flood(&load, connections, started + duration)
            .unwrap_or_else(|e| fail(&format!("cannot start the flood: {e}")));
        tallies
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(tally);
        started.elapsed()
    } else {
        threads(&load, connections, duration, &tallies)
    };
    let tallies = tallies.into_inner().unwrap_or_else(|e| e.into_inner());
    let errors: u64 = tallies.iter().map(|t| t.errors).sum();
    let first_error = tallies.iter().find_map(|t| t.first_error.clone());
    let mut times: Vec<u64> = tallies.into_iter().flat_map(|t| t.times).collect();
    times.sort_unstable();
    let percentile = |p: f64| -> f64 {
        if times.is_empty() {
            return 0.0;
        }
        let rank = ((times.len() as f64 * p).ceil() as usize).clamp(1, times.len());
        times[rank - 1] as f64 / 1e6
    };
    let line = serde_json::json!({
        "mode": args[6],
        "connections": connections,
        "seconds": elapsed.as_secs_f64(),
        "requests": times.len(),
        "per_s": times.len() as f64 / elapsed.as_secs_f64(),
        "p50_ms": percentile(0.50),
        "p99_ms": percentile(0.99),
        "errors": errors,
        "first_error": first_error,
        "tls_group": load.group.get(),
    });
    println!("{line}");
}

/// One thread per connection, started together: the time from the start
/// to the last one's end.
fn threads(
    load: &Load,
    connections: usize,
    duration: Duration,
    tallies: &Mutex<Vec<Tally>>,
) -> Duration {
    let start = Barrier::new(connections + 1);
    std::thread::scope(|scope| {
        for _ in 0..connections {
            scope.spawn(|| {
                start.wait();
                let tally = client(load, Instant::now() + duration);
                tallies
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .push(tally);
            });
        }
        start.wait();
        // The scope joins every client before it returns.
        Instant::now()
    })
    .elapsed()
}

fn fail(message: &str) -> ! {
    eprintln!("{message}");
    std::process::exit(2);
}

/// One client: requests until `deadline`.
fn client(load: &Load, deadline: Instant) -> Tally {
    let mut tally = Tally {
        times: Vec::with_capacity(1 << 16),
        ..Tally::default()
    };
    let mut kept: Option<TcpStream> = None;
    let mut buf = Vec::with_capacity(4096);
    while Instant::now() < deadline {
        let started = Instant::now();
        let result = match load.mode {
            Mode::PerRequest | Mode::HttpPerRequest => {
                connect(load.addr).and_then(|mut stream| once(load, &mut stream, &mut buf))
            }
            Mode::PerRequestRst => connect(load.addr).and_then(|mut stream| {
                socket2::SockRef::from(&stream).set_linger(Some(Duration::ZERO))?;
                once(load, &mut stream, &mut buf)
            }),
            Mode::KeptOpen | Mode::HttpKeptOpen => {
                let stream = match kept.take() {
                    Some(stream) => Ok(stream),
                    None => connect(load.addr),
                };
                stream.and_then(|mut stream| {
                    once(load, &mut stream, &mut buf)?;
                    kept = Some(stream);
                    Ok(())
                })
            }
            Mode::TlsHandshake => tls_once(load, &mut buf),
            Mode::TlsHandshakeOnly => unreachable!("tls-handshake-only runs in tls_flood"),
        };
        match result {
            Ok(()) => tally.times.push(started.elapsed().as_nanos() as u64),
            Err(e) => {
                tally.errors += 1;
                tally.first_error.get_or_insert_with(|| e.to_string());
                // A refused or reset connection is not retried in a busy loop.
                std::thread::sleep(Duration::from_millis(1));
            }
        }
    }
    tally
}

fn connect(addr: SocketAddr) -> io::Result<TcpStream> {
    let stream = TcpStream::connect(addr)?;
    stream.set_nodelay(true)?;
    stream.set_read_timeout(Some(Duration::from_secs(30)))?;
    Ok(stream)
}

/// One request and its checked answer on `stream`.
fn once(load: &Load, stream: &mut TcpStream, buf: &mut Vec<u8>) -> io::Result<()> {
    stream.write_all(&load.request)?;
    match load.mode {
        Mode::PerRequest | Mode::PerRequestRst | Mode::KeptOpen => protocol_answer(stream, buf),
        _ => http_answer(stream, buf),
    }
}

/// A new TLS connection: the handshake, the GET and its answer (unless
/// `tls-handshake-only`), close_notify.
fn tls_once(load: &Load, buf: &mut Vec<u8>) -> io::Result<()> {
    let config = load.tls.clone().expect("a TLS mode has a client config");
    let conn = ClientConnection::new(config, ServerName::from(load.addr.ip()))
        .map_err(io::Error::other)?;
    let mut stream = StreamOwned::new(conn, connect(load.addr)?);
    while stream.conn.is_handshaking() {
        stream.conn.complete_io(&mut stream.sock)?;
    }
    if let Some(group) = stream.conn.negotiated_key_exchange_group() {
        load.group.get_or_init(|| format!("{:?}", group.name()));
    }
    if load.mode == Mode::TlsHandshake {
        stream.write_all(&load.request)?;
        http_answer(&mut stream, buf)?;
    }
    stream.conn.send_close_notify();
    while stream.conn.wants_write() {
        stream.conn.write_tls(&mut stream.sock)?;
    }
    Ok(())
}

/// `tls-handshake-only`: `connections` tasks on one thread, each opening
/// TLS connections back to back until `deadline`: the handshake, then
/// close_notify and close.
fn tls_flood(load: &Load, connections: usize, deadline: Instant) -> io::Result<Tally> {
    use tokio::io::AsyncWriteExt as _;

    let config = load.tls.clone().expect("a TLS mode has a client config");
    let connector = tokio_rustls::TlsConnector::from(config);
    let name = ServerName::from(load.addr.ip());
    let addr = load.addr;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    Ok(runtime.block_on(async move {
        let tasks: Vec<_> = (0..connections)
            .map(|_| {
                let (connector, name) = (connector.clone(), name.clone());
                tokio::spawn(async move {
                    let mut tally = Tally::default();
                    while Instant::now() < deadline {
                        let started = Instant::now();
                        let handshake = async {
                            let tcp = tokio::net::TcpStream::connect(addr).await?;
                            tcp.set_nodelay(true)?;
                            let mut tls = connector.connect(name.clone(), tcp).await?;
                            tls.shutdown().await
                        };
                        match handshake.await {
                            Ok(()) => tally.times.push(started.elapsed().as_nanos() as u64),
                            Err(e) => {
                                tally.errors += 1;
                                tally.first_error.get_or_insert_with(|| e.to_string());
                                tokio::time::sleep(Duration::from_millis(1)).await;
                            }
                        }
                    }
                    tally
                })
            })
            .collect();
        let mut all = Tally::default();
        for task in tasks {
            let tally = task.await.unwrap_or_else(|e| Tally {
                errors: 1,
                first_error: Some(e.to_string()),
                ..Tally::default()
            });
            all.times.extend(tally.times);
            all.errors += tally.errors;
            all.first_error = all.first_error.or(tally.first_error);
        }
        all
    }))
}

fn protocol_request(resource: &str, key: &str) -> Vec<u8> {
    let json = if key == "-" {
        serde_json::json!({ "Resource": resource })
    } else {
        serde_json::json!({ "Resource": resource, "SecretKey": key })
    };
    let json = serde_json::to_vec(&json).expect("a JSON object serialises");
    let mut frame = Vec::with_capacity(8 + json.len());
    frame.extend_from_slice(&MAGIC.to_be_bytes());
    frame.extend_from_slice(&(json.len() as u32).to_be_bytes());
    frame.extend_from_slice(&json);
    frame
}

/// Reads one protocol answer; an error unless it holds a `SecretValue`.
fn protocol_answer(stream: &mut impl Read, buf: &mut Vec<u8>) -> io::Result<()> {
    let mut head = [0u8; 8];
    stream.read_exact(&mut head)?;
    let [m0, m1, m2, m3, l0, l1, l2, l3] = head;
    if u32::from_be_bytes([m0, m1, m2, m3]) != MAGIC {
        return Err(io::Error::other("an answer without the protocol's magic"));
    }
    let len = u32::from_be_bytes([l0, l1, l2, l3]) as usize;
    if len > MAX_ANSWER {
        return Err(io::Error::other(format!("an answer of {len} bytes")));
    }
    buf.resize(len, 0);
    stream.read_exact(buf)?;
    let answer: serde_json::Value = serde_json::from_slice(buf)
        .map_err(|e| io::Error::other(format!("an answer that is not JSON: {e}")))?;
    match (answer.get("SecretValue"), answer.get("Error")) {
        (Some(serde_json::Value::String(_)), _) => Ok(()),
        // The agent's errors name no secret value (docs/aerospike.md).
        (_, Some(error)) => Err(io::Error::other(format!("answered Error {error}"))),
        _ => Err(io::Error::other("an answer without SecretValue")),
    }
}

/// Reads one HTTP answer (a Content-Length body); an error unless it is a 200.
fn http_answer(stream: &mut impl Read, buf: &mut Vec<u8>) -> io::Result<()> {
    buf.clear();
    let mut chunk = [0u8; 4096];
    let head_end = loop {
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break end + 4;
        }
        let n = stream.read(&mut chunk)?;
        if n == 0 {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
        buf.extend_from_slice(&chunk[..n]);
    };
    let head = std::str::from_utf8(&buf[..head_end])
        .map_err(|_| io::Error::other("an answer head that is not UTF-8"))?;
    let status = head.lines().next().unwrap_or_default();
    if !status.starts_with("HTTP/1.1 200 ") {
        return Err(io::Error::other(format!("answered {status}")));
    }
    let length = head
        .lines()
        .find_map(|line| {
            let (name, value) = line.split_once(':')?;
            name.eq_ignore_ascii_case("content-length")
                .then(|| value.trim().parse::<usize>().ok())?
        })
        .ok_or_else(|| io::Error::other("an answer without Content-Length"))?;
    let total = head_end + length;
    while buf.len() < total {
        let n = stream.read(&mut chunk)?;
        if n == 0 {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
        buf.extend_from_slice(&chunk[..n]);
    }
    if buf.len() > total {
        return Err(io::Error::other("more bytes than the answer"));
    }
    Ok(())
}

/// A client config that trusts exactly the certificate in `cert`: no
/// resumption, so that every connection is a full handshake.
fn client_config(cert: &str) -> Result<ClientConfig, Box<dyn std::error::Error>> {
    let cert = CertificateDer::from_pem_file(cert)?;
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let verifier = Pinned {
        cert,
        algorithms: provider.signature_verification_algorithms,
    };
    let mut config = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(verifier))
        .with_no_client_auth();
    config.resumption = rustls::client::Resumption::disabled();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(config)
}

/// Trusts one certificate, byte for byte, and checks the handshake's
/// signature by it.
#[derive(Debug)]
struct Pinned {
    cert: CertificateDer<'static>,
    algorithms: WebPkiSupportedAlgorithms,
}

impl ServerCertVerifier for Pinned {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        if end_entity.as_ref() == self.cert.as_ref() {
            Ok(ServerCertVerified::assertion())
        } else {
            Err(rustls::Error::InvalidCertificate(
                rustls::CertificateError::UnknownIssuer,
            ))
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}
