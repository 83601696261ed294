//! What clients can make the agent write to its log: malformed requests in
//! a flood leave a count, not a line each, at the default level.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::Semaphore;

use crate::support::*;

/// Requests that no HTTP/1 parser accepts, as a client may send them.
const MALFORMED: [&[u8]; 4] = [
    // A control byte in a header name.
    b"GET /healthz HTTP/1.1\r\nHost: x\r\nBad\x01Header: y\r\n\r\n",
    b"GET /healthz HTTP/9.9\r\nHost: x\r\n\r\n",
    // The HTTP/2 connection preface.
    b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n",
    // The start of a TLS ClientHello, sent to the plain port.
    b"\x16\x03\x01\x00\xa5\x01\x00\x00\xa1\x03\x03\x00\x01\x02\x03\x04\x05\x06\x07\r\n\r\n",
];

/// Sends `count` malformed requests, each on a connection of its own, 50
/// at a time, and reads each until the agent closes it.
async fn flood(addr: SocketAddr, count: usize) {
    let turns = Arc::new(Semaphore::new(50));
    let mut clients = Vec::new();
    for i in 0..count {
        let turn = turns.clone().acquire_owned().await.unwrap();
        clients.push(tokio::spawn(async move {
            let _turn = turn;
            let Ok(mut stream) = TcpStream::connect(addr).await else {
                return;
            };
            let _ = stream.write_all(MALFORMED[i % MALFORMED.len()]).await;
            let mut sink = Vec::new();
            let _ =
                tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut sink)).await;
        }));
    }
    for client in clients {
        client.await.unwrap();
    }
}

#[tokio::test]
async fn malformed_requests_in_a_flood_leave_a_count_not_a_line_each() {
    let config = AgentConfig::new().resource(
        "x",
        "arn:aws:secretsmanager:us-west-1:123456789012:secret:unused-AbCdEf",
    );
    // RUST_LOG unset: the config's `log.level: info`, the default.
    let agent = Agent::start(&config, &[("RUST_LOG", "")]);
    let before = agent.log().len();
    flood(agent.addr, 2_000).await;
    // A reload's line comes after every line the flood caused.
    agent.reload(&config);
    assert!(agent.wait_for_log("reloaded", Duration::from_secs(10)));
    let log = agent.log();
    let grown = &log[before..];
    assert!(
        grown.len() < 2_000,
        "{} bytes of log for 2,000 malformed requests:\n{}",
        grown.len(),
        &grown[..grown.len().min(2_000)]
    );
    assert!(!grown.contains("actix_http"), "{grown}");
    assert!(
        grown.contains("malformed request"),
        "the flood is counted: {grown}"
    );
    let (status, _) = exchange(
        std::net::TcpStream::connect(agent.addr).unwrap(),
        &get_request("/healthz", &[]),
    );
    assert_eq!(status, 200);
}

#[tokio::test]
async fn at_debug_each_malformed_request_is_logged() {
    let config = AgentConfig::new().resource(
        "x",
        "arn:aws:secretsmanager:us-west-1:123456789012:secret:unused-AbCdEf",
    );
    let agent = Agent::start(&config, &[("RUST_LOG", "debug")]);
    flood(agent.addr, 8).await;
    agent.reload(&config);
    assert!(agent.wait_for_log("reloaded", Duration::from_secs(10)));
    let lines = agent
        .log()
        .lines()
        .filter(|l| l.contains("DEBUG") && l.contains("from a client"))
        .count();
    assert!(lines >= 4, "{}", agent.log());
}

#[test]
fn a_huge_log_level_is_echoed_as_a_short_prefix() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("config.yaml");
    let yaml = AgentConfig::new()
        .resource(
            "x",
            "arn:aws:secretsmanager:us-west-1:123456789012:secret:unused-AbCdEf",
        )
        .log_level(&"L".repeat(900_000))
        .yaml();
    std::fs::write(&path, yaml).unwrap();
    let (code, _, err) = run_cli(&["--check", "--config", path.to_str().unwrap()]);
    assert_eq!(code, 2, "{}", &err[..err.len().min(500)]);
    assert!(
        err.contains("log.level") && err.len() < 400,
        "{} bytes: {}",
        err.len(),
        &err[..err.len().min(500)]
    );
}
