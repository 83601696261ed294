//! Hostile local clients: connection floods that trickle bytes, pipelining
//! without reading, request smuggling, and signals at awkward moments.

use std::io::{Read, Write};
use std::net::SocketAddr;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::support::*;

/// A resource that no test reads.
const UNUSED_ARN: &str = "arn:aws:secretsmanager:us-west-1:123456789012:secret:unused-AbCdEf";

/// The agent's resident memory in MB; 0 once it exited.
fn rss_mb(agent: &Agent) -> f64 {
    agent.rss_kib().unwrap_or(0) as f64 / 1024.0
}

/// Reads one HTTP answer with a Content-Length body; false on close or error.
async fn read_answer(stream: &mut TcpStream) -> bool {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&buf[..end]).to_ascii_lowercase();
            let length: usize = head
                .lines()
                .find_map(|l| l.strip_prefix("content-length:"))
                .and_then(|v| v.trim().parse().ok())
                .unwrap_or(0);
            if buf.len() >= end + 4 + length {
                return true;
            }
        }
        match stream.read(&mut chunk).await {
            Ok(0) | Err(_) => return false,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    }
}

/// One GET /healthz on a new connection: how long until the answer.
async fn time_new_client(addr: SocketAddr, limit: Duration) -> Option<Duration> {
    let started = Instant::now();
    tokio::time::timeout(limit, async {
        let mut stream = TcpStream::connect(addr).await.ok()?;
        stream
            .write_all(b"GET /healthz HTTP/1.1\r\nHost: localhost\r\n\r\n")
            .await
            .ok()?;
        read_answer(&mut stream).await.then(|| started.elapsed())
    })
    .await
    .ok()
    .flatten()
}

#[tokio::test]
async fn a_trickled_second_request_cannot_hold_connections() {
    // The default connection limit (1024), flooded with more connections
    // than it allows: each sends one complete request, reads the answer,
    // then sends one byte of the next and waits.
    const FLOOD: usize = 1100;
    let timeout = Duration::from_secs(2);
    let config = AgentConfig::new()
        .request_timeout("2s")
        .resource("x", UNUSED_ARN);
    let agent = Agent::start(&config, &[("RUST_LOG", "info")]);
    let addr = agent.addr;
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut flood = Vec::new();
    for _ in 0..FLOOD {
        let stop = stop.clone();
        flood.push(tokio::spawn(async move {
            // Each attacker reconnects whenever the agent closes on it.
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let Ok(mut stream) = TcpStream::connect(addr).await else {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                };
                let request = b"GET /healthz HTTP/1.1\r\nHost: localhost\r\n\r\n";
                if stream.write_all(request).await.is_err() || !read_answer(&mut stream).await {
                    continue;
                }
                let _ = stream.write_all(b"G").await;
                let mut sink = [0u8; 64];
                let _ = tokio::time::timeout(Duration::from_secs(30), stream.read(&mut sink)).await;
            }
        }));
    }
    // Let the flood fill every slot, then time new clients while it runs.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let mut waits = Vec::new();
    for _ in 0..3 {
        let wait = time_new_client(addr, Duration::from_secs(15)).await;
        waits.push(wait);
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    for task in flood {
        task.abort();
    }
    eprintln!("new clients under a keep-alive trickle flood waited {waits:?}");
    for wait in waits {
        let wait = wait.expect("a new client was never answered during the flood");
        assert!(
            wait <= timeout + Duration::from_secs(1),
            "a new client waited {wait:?}, more than request-timeout + 1 s"
        );
    }
}

#[tokio::test]
async fn clients_that_pipeline_and_never_read_cannot_bloat_memory() {
    let world = World::shared();
    let big = "p".repeat(60 * 1024);
    let secret = world.secret("pipelined", &big);
    let agent = Agent::start(
        &world.config().resource("big", &secret.arn),
        &[("RUST_LOG", "info")],
    );
    let addr = agent.addr;
    assert_eq!(get(&agent.url("/secrets/big")).await.body.len(), big.len());
    let before = rss_mb(&agent);

    // 100 connections pipelining the 60 KB secret, 500 pipelining
    // /metrics, none of them reading an answer.
    let secret_requests = "GET /secrets/big HTTP/1.1\r\nHost: localhost\r\n\r\n".repeat(2_000);
    let metrics_requests = "GET /metrics HTTP/1.1\r\nHost: localhost\r\n\r\n".repeat(20_000);
    let mut flood = Vec::new();
    for i in 0..600 {
        let requests = if i < 100 {
            secret_requests.clone()
        } else {
            metrics_requests.clone()
        };
        flood.push(tokio::spawn(async move {
            let Ok(mut stream) = TcpStream::connect(addr).await else {
                return;
            };
            let _ = tokio::time::timeout(
                Duration::from_secs(8),
                stream.write_all(requests.as_bytes()),
            )
            .await;
            // Hold the connection, unread, until the test ends.
            tokio::time::sleep(Duration::from_secs(60)).await;
        }));
    }
    let mut peak: f64 = 0.0;
    let mut slowest = Duration::ZERO;
    let started = Instant::now();
    while started.elapsed() < Duration::from_secs(8) {
        peak = peak.max(rss_mb(&agent));
        let wait = time_new_client(addr, Duration::from_secs(5))
            .await
            .expect("a probe went unanswered while clients pipelined");
        slowest = slowest.max(wait);
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    for task in flood {
        task.abort();
    }
    eprintln!(
        "RSS {before:.1} MB before, {peak:.1} MB peak under the pipelining flood; slowest probe {slowest:?}"
    );
    assert!(peak < 64.0, "RSS reached {peak:.1} MB");
    assert!(
        slowest < Duration::from_secs(2),
        "a probe waited {slowest:?}"
    );
}

/// Sends `request` raw and returns every status line of what comes back,
/// and whether the agent closed the connection.
fn statuses(addr: SocketAddr, request: &str) -> (Vec<String>, bool) {
    let mut stream = connect(addr);
    stream
        .set_read_timeout(Some(Duration::from_secs(3)))
        .unwrap();
    stream.write_all(request.as_bytes()).unwrap();
    let mut answer = Vec::new();
    let mut chunk = [0u8; 4096];
    let closed = loop {
        match stream.read(&mut chunk) {
            Ok(0) => break true,
            Ok(n) => answer.extend_from_slice(&chunk[..n]),
            Err(_) => break false,
        }
    };
    let text = String::from_utf8_lossy(&answer).into_owned();
    let lines = text
        .lines()
        .filter(|l| l.starts_with("HTTP/1."))
        .map(str::to_owned)
        .collect();
    (lines, closed)
}

#[tokio::test]
async fn smuggled_requests_and_two_hosts_are_refused_and_closed() {
    let world = World::shared();
    let secret = world.secret("smuggled", "smuggled-value");
    let agent = Agent::start(&world.config().resource("s", &secret.arn), &[]);
    let hidden = "GET /secrets/s HTTP/1.1\r\nHost: localhost\r\n\r\n";
    let chunked_body = format!("0\r\n\r\n{hidden}");
    let smuggled = format!(
        "GET /secrets/s HTTP/1.1\r\nHost: localhost\r\nX-Forwarded-For: 10.0.0.1\r\n\
         Content-Length: {}\r\nTransfer-Encoding: chunked\r\n\r\n{chunked_body}",
        chunked_body.len()
    );
    let two_hosts = "GET /secrets/s HTTP/1.1\r\nHost: localhost\r\nHost: evil.example\r\n\r\n";
    for (what, request) in [("CL+TE", smuggled.as_str()), ("two Host", two_hosts)] {
        let (lines, closed) = statuses(agent.addr, request);
        assert_eq!(lines.len(), 1, "{what}: one answer only, got {lines:?}");
        assert!(lines[0].contains(" 400 "), "{what}: {lines:?}");
        assert!(closed, "{what}: the connection stays open");
    }
    // The secret is still served to a plain request.
    let (status, body) = raw_get(agent.addr, "/secrets/s");
    assert_eq!((status, body.as_str()), (200, "smuggled-value"));
}

#[tokio::test]
async fn sigterm_and_sigint_drain_every_in_flight_request() {
    let f = Fixture::new();
    let secret = f.secret("drain-all", "drained");
    f.proxy
        .set_fault(json!({"fault": "delay", "delay_ms": 2000}));
    let config = f
        .config()
        .shutdown_timeout("10s")
        .resource("d", &secret.arn)
        .cache(|c| c.ttl("0s"));
    for run in 0..10 {
        let signal = if run % 2 == 0 { "TERM" } else { "INT" };
        let mut agent = Agent::start(&config, &[("RUST_LOG", "info")]);
        let reads: Vec<_> = (0..5)
            .map(|_| {
                let url = agent.url("/secrets/d");
                tokio::spawn(async move { get(&url).await })
            })
            .collect();
        // Every read is waiting on the 2 s upstream when the signal comes.
        tokio::time::sleep(Duration::from_millis(500)).await;
        agent.signal(signal);
        for read in reads {
            let r = read.await.unwrap();
            assert_eq!(
                (r.status, r.text().as_str()),
                (200, "drained"),
                "run {run} (SIG{signal}): an in-flight read was cut\n{}",
                agent.log()
            );
        }
        let status = agent
            .wait_exit(Duration::from_secs(10))
            .expect("the agent exits after draining");
        assert!(status.success(), "run {run} (SIG{signal}): {status:?}");
    }
}

#[test]
fn a_sighup_while_starting_does_not_kill_the_agent() {
    // No region in the config and an instance metadata endpoint that never
    // answers: the agent spends its first ~2 s asking for the region.
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let imds = format!("http://{}", silent.local_addr().unwrap());
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("config.yaml");
    let config = AgentConfig::new().no_region().resource("x", UNUSED_ARN);
    std::fs::write(&path, config.yaml()).unwrap();
    for delay_ms in [20, 100, 300] {
        let mut child = Command::new(agent_binary())
            .arg("--config")
            .arg(&path)
            .envs(isolated_env(dir.path()))
            .env_remove("AWS_EC2_METADATA_DISABLED")
            .env("AWS_EC2_METADATA_SERVICE_ENDPOINT", &imds)
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        std::thread::sleep(Duration::from_millis(delay_ms));
        let _ = Command::new("kill")
            .args(["-HUP", &child.id().to_string()])
            .status();
        std::thread::sleep(Duration::from_millis(300));
        let exited = child.try_wait().unwrap();
        let _ = child.kill();
        let _ = child.wait();
        assert_eq!(exited, None, "SIGHUP {delay_ms} ms after start killed it");
    }
}

#[test]
fn check_into_a_closed_pipe_exits_cleanly() {
    let (reader, writer) = std::io::pipe().unwrap();
    drop(reader);
    let out = Command::new(agent_binary())
        .arg("--check")
        .arg("--config")
        .arg(root().join("config/imds.yaml"))
        .stdout(writer)
        .stderr(Stdio::piped())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
}

#[tokio::test]
async fn failed_reads_in_a_loop_cannot_flood_the_warn_log() {
    let world = World::shared();
    let secret = world.secret("log-flood", "v");
    let missing = format!(
        "arn:aws:secretsmanager:{REGION}:123456789012:secret:{}-missing",
        secret.name
    );
    let config = world
        .config()
        .resource("there", &secret.arn)
        .resource("gone", &missing);
    let agent = Agent::start(&config, &[("RUST_LOG", "info")]);
    for i in 0..150 {
        let r = get(&agent.url(&format!(
            "/secrets/there?version-id=00000000-0000-4000-8000-{i:012}"
        )))
        .await;
        assert_eq!(r.status, 404);
        assert_eq!(get(&agent.url("/secrets/gone")).await.status, 502);
    }
    let warned = |needle: &str| {
        agent
            .log()
            .lines()
            .filter(|l| l.contains(" WARN ") && l.contains(needle))
            .count()
    };
    // 300 failed reads in a few seconds: one warn line per resource per 10 s.
    assert!((1..=2).contains(&warned("there")), "{}", agent.log());
    assert!((1..=2).contains(&warned("gone")), "{}", agent.log());
}

#[tokio::test]
async fn a_token_sent_as_a_version_never_reaches_the_log() {
    let world = World::shared();
    let name = unique("version-token");
    let arn = world.create_secret(REGION, &name, "v");
    let token = "version-token-3f9c1d2e";
    // One entry of each kind: every new version evicts the last one.
    let config = world
        .config()
        .resource("s", &arn)
        .cache(|c| c.max_entries(1));
    let agent = Agent::start(&config, &[("RUST_LOG", "debug")]);
    for i in 0..3 {
        for query in [
            format!("version-id={token}-{i}"),
            format!("version-stage={token}-{i}"),
        ] {
            let r = get(&agent.url(&format!("/secrets/s?{query}"))).await;
            // The answer may echo a short prefix to the client that sent it;
            // the log must not keep it.
            assert!(r.status >= 400, "{query}: {}", r.status);
        }
    }
    assert!(
        agent.wait_for_log("cache full; evicted", Duration::from_secs(5)),
        "{}",
        agent.log()
    );
    let log = agent.log();
    assert!(!log.contains(token), "{log}");
}
