//! The Aerospike Secret Agent protocol on the agent's own listeners, with a
//! client written here to the byte (magic, big-endian lengths, JSON).

use std::io::{Read, Write};
use std::time::{Duration, Instant};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use serde_json::{Value, json};

use crate::support::*;

const MAGIC: u32 = 0x51de_c1cc;

/// One framed request: header and JSON.
fn frame(json: &[u8]) -> Vec<u8> {
    let mut out = MAGIC.to_be_bytes().to_vec();
    out.extend_from_slice(&(json.len() as u32).to_be_bytes());
    out.extend_from_slice(json);
    out
}

/// Reads one answer; `None` when the agent closed first.
fn read_answer(stream: &mut impl Read) -> Option<Value> {
    let mut header = [0u8; 8];
    stream.read_exact(&mut header).ok()?;
    assert_eq!(header[..4], MAGIC.to_be_bytes(), "answer magic");
    let len = u32::from_be_bytes(header[4..].try_into().unwrap()) as usize;
    assert!(len <= 100 * 1024, "answer of {len} bytes");
    let mut json = vec![0u8; len];
    stream.read_exact(&mut json).ok()?;
    Some(serde_json::from_slice(&json).expect("answer is JSON"))
}

/// Sends a request for `resource` and `key`, reads the answer.
fn ask(stream: &mut (impl Read + Write), resource: Option<&str>, key: &str) -> Value {
    let body = match resource {
        Some(resource) => json!({"Resource": resource, "SecretKey": key}),
        None => json!({"SecretKey": key}),
    };
    stream
        .write_all(&frame(body.to_string().as_bytes()))
        .unwrap();
    read_answer(stream).expect("an answer")
}

/// The decoded `SecretValue`, as the C client decodes it, or the `Error`.
fn decoded(answer: &Value) -> Result<Vec<u8>, String> {
    if let Some(error) = answer["Error"].as_str() {
        return Err(error.to_owned());
    }
    let value = answer["SecretValue"]
        .as_str()
        .unwrap_or_else(|| panic!("no SecretValue in {answer}"));
    BASE64
        .decode(value.trim_end())
        .map_err(|e| format!("not base64 ({e}): {value}"))
}

struct Seeded {
    agent: Agent,
    json_secret: String,
}

/// An agent with a JSON secret (`db`), a plain one (`plain`), one already
/// stored in base64 (`b64`) and one missing in AWS (`gone`); `change`
/// adjusts its config.
fn fixture(prefix: &str, change: impl FnOnce(AgentConfig) -> AgentConfig) -> Seeded {
    let world = World::shared();
    let json_secret =
        json!({"password": "s3cr3t-pw", "port": 3000, "nested": {"a": 1}}).to_string();
    let db = world.secret(&format!("{prefix}-db"), &json_secret);
    let plain = world.secret(&format!("{prefix}-plain"), "plain text");
    let b64 = world.secret(&format!("{prefix}-b64"), &BASE64.encode("stored in base64"));
    let gone = format!(
        "arn:aws:secretsmanager:{REGION}:123456789012:secret:{}",
        unique(&format!("{prefix}-gone"))
    );
    let config = world
        .config()
        .resource("db", &db.arn)
        .resource("plain", &plain.arn)
        .resource("b64", &b64.arn)
        .resource("gone", &gone);
    Seeded {
        agent: Agent::start(&change(config), &[]),
        json_secret,
    }
}

#[tokio::test]
async fn aerospike_servers_and_http_clients_share_the_port() {
    let f = fixture("sap", AgentConfig::convert_to_base64);
    let mut conn = connect(f.agent.addr);
    // Several requests on one connection, answered in order.
    assert_eq!(
        decoded(&ask(&mut conn, Some("db"), "password")),
        Ok(b"s3cr3t-pw".to_vec())
    );
    assert_eq!(
        decoded(&ask(&mut conn, Some("db"), "port")),
        Ok(b"3000".to_vec())
    );
    assert_eq!(
        decoded(&ask(&mut conn, Some("db"), "nested")),
        Ok(br#"{"a":1}"#.to_vec())
    );
    assert_eq!(
        decoded(&ask(&mut conn, Some("db"), "")),
        Ok(f.json_secret.as_bytes().to_vec())
    );
    assert_eq!(
        decoded(&ask(&mut conn, Some("plain"), "")),
        Ok(b"plain text".to_vec())
    );
    // HTTP on the same port, at the same time.
    let (status, body) = raw_get(f.agent.addr, "/secrets/db/password");
    assert_eq!((status, body.as_str()), (200, "s3cr3t-pw"));
    assert_eq!(
        decoded(&ask(&mut conn, Some("db"), "password")),
        Ok(b"s3cr3t-pw".to_vec())
    );

    let metrics = get(&f.agent.url("/metrics")).await.text();
    assert!(
        metrics.contains(
            r#"secret_agent_protocol_requests_total{outcome="ok",protocol="secret-agent"} 6"#
        ),
        "{metrics}"
    );
}

#[tokio::test]
async fn without_convert_to_base64_the_stored_text_is_sent_as_it_is() {
    let f = fixture("sap-raw", |c| c);
    let mut conn = connect(f.agent.addr);
    // The secret is stored in base64 already: decoding gives the original.
    assert_eq!(
        decoded(&ask(&mut conn, Some("b64"), "")),
        Ok(b"stored in base64".to_vec())
    );
    let answer = ask(&mut conn, Some("plain"), "");
    assert_eq!(answer["SecretValue"], "plain text");
}

#[tokio::test]
async fn every_refusal_is_an_error_answer_without_a_secret() {
    let f = fixture("sap-err", AgentConfig::convert_to_base64);
    let mut conn = connect(f.agent.addr);
    let error = |answer: Value| {
        let text = decoded(&answer).expect_err("an Error answer");
        assert!(!text.contains("s3cr3t-pw"), "{text}");
        text
    };
    assert!(error(ask(&mut conn, None, "password")).contains("no Resource"));
    assert!(error(ask(&mut conn, Some("nope"), "password")).contains("no resource named"));
    assert!(error(ask(&mut conn, Some("db"), "missing-key")).contains("has no key"));
    assert!(error(ask(&mut conn, Some("plain"), "key")).contains("not a JSON object"));
    assert!(error(ask(&mut conn, Some("gone"), "key")).contains("gone"));
    // Not JSON, and JSON that is not an object: answered, connection kept.
    conn.write_all(&frame(b"not json")).unwrap();
    assert!(error(read_answer(&mut conn).unwrap()).contains("not JSON"));
    conn.write_all(&frame(b"[1, 2]")).unwrap();
    assert!(error(read_answer(&mut conn).unwrap()).contains("JSON object"));
    assert_eq!(
        decoded(&ask(&mut conn, Some("db"), "password")),
        Ok(b"s3cr3t-pw".to_vec())
    );
}

#[tokio::test]
async fn hostile_framing_is_answered_and_closed() {
    let f = fixture("sap-hostile", AgentConfig::convert_to_base64);
    let closes = |conn: &mut std::net::TcpStream| {
        let mut rest = Vec::new();
        conn.read_to_end(&mut rest).is_ok() && rest.is_empty()
    };
    // A wrong magic after a valid request.
    let mut conn = connect(f.agent.addr);
    assert!(decoded(&ask(&mut conn, Some("db"), "password")).is_ok());
    conn.write_all(b"\x00\x00\x00\x00\x00\x00\x00\x02{}")
        .unwrap();
    assert!(
        decoded(&read_answer(&mut conn).unwrap())
            .unwrap_err()
            .contains("magic")
    );
    assert!(closes(&mut conn));
    // A length over 100 KB.
    let mut conn = connect(f.agent.addr);
    let mut header = MAGIC.to_be_bytes().to_vec();
    header.extend_from_slice(&(200 * 1024u32).to_be_bytes());
    conn.write_all(&header).unwrap();
    assert!(
        decoded(&read_answer(&mut conn).unwrap())
            .unwrap_err()
            .contains("at most")
    );
    assert!(closes(&mut conn));
}

#[tokio::test]
async fn slow_requests_are_bounded_by_the_request_timeout() {
    let f = fixture("sap-slow", |c| c);
    // request-timeout is 5 s by default: a length larger than what follows.
    let mut conn = connect(f.agent.addr);
    let mut header = MAGIC.to_be_bytes().to_vec();
    header.extend_from_slice(&1000u32.to_be_bytes());
    conn.write_all(&header).unwrap();
    conn.write_all(b"{\"Resource\"").unwrap();
    let started = Instant::now();
    let answer = read_answer(&mut conn).expect("an Error answer before the close");
    assert!(decoded(&answer).unwrap_err().contains("request-timeout"));
    let waited = started.elapsed();
    assert!(waited < Duration::from_secs(7), "{waited:?}");
    // One byte, then silence: closed too.
    let mut conn = connect(f.agent.addr);
    conn.write_all(&MAGIC.to_be_bytes()[..1]).unwrap();
    let started = Instant::now();
    let mut rest = Vec::new();
    let _ = conn.read_to_end(&mut rest);
    assert!(
        started.elapsed() < Duration::from_secs(12),
        "{:?}",
        started.elapsed()
    );
}

#[tokio::test]
async fn a_storm_of_protocol_requests_makes_one_upstream_call() {
    let f = Fixture::new();
    let secret = f.secret("sap-storm", r#"{"k":"v"}"#);
    f.proxy
        .set_fault(json!({"fault": "delay", "delay_ms": 1000}));
    let agent = Agent::start(&f.config().resource("s", &secret.arn), &[]);
    let addr = agent.addr;
    let readers: Vec<_> = (0..50)
        .map(|_| {
            std::thread::spawn(move || {
                let mut conn = connect(addr);
                ask(&mut conn, Some("s"), "k")
            })
        })
        .collect();
    for reader in readers {
        assert_eq!(reader.join().unwrap()["SecretValue"], "v");
    }
    assert_eq!(f.proxy.gets(&secret.name), 1);
}

#[tokio::test]
async fn with_auth_only_granted_resources_are_served() {
    let world = World::shared();
    let db = world.secret("sap-auth-db", r#"{"k":"granted"}"#);
    let other = world.secret("sap-auth-other", r#"{"k":"withheld"}"#);
    let config = world
        .config()
        .resource("db", &db.arn)
        .resource("other", &other.arn)
        .token_env("T", &["*"]);
    let env = [("T", "a-client-token-0123")];
    let agent = Agent::start(&config.clone().protocol_resources(&["db"]), &env);
    let mut conn = connect(agent.addr);
    assert_eq!(ask(&mut conn, Some("db"), "k")["SecretValue"], "granted");
    let refused = ask(&mut conn, Some("other"), "k");
    assert!(
        refused["Error"].as_str().unwrap().contains("not granted"),
        "{refused}"
    );

    // Tokens but no grant for the protocol: nothing.
    let agent = Agent::start(&config, &env);
    let refused = ask(&mut connect(agent.addr), Some("db"), "k");
    assert!(
        refused["Error"].as_str().unwrap().contains("not granted"),
        "{refused}"
    );
}

#[tokio::test]
async fn with_auth_absent_and_withheld_names_get_one_answer() {
    let world = World::shared();
    let db = world.secret("sap-uniform-db", r#"{"k":"granted"}"#);
    let other = world.secret("sap-uniform-other", r#"{"k":"withheld"}"#);
    let config = world
        .config()
        .resource("db", &db.arn)
        .resource("other", &other.arn)
        .token_env("T", &["*"])
        .protocol_resources(&["db"]);
    let agent = Agent::start(&config, &[("T", "a-client-token-0123")]);
    let mut conn = connect(agent.addr);
    // Names of one length: the answers may differ only in the name echoed.
    let withheld = ask(&mut conn, Some("other"), "k");
    let absent = ask(&mut conn, Some("nopes"), "k");
    let error = |answer: &Value, name: &str| {
        let text = answer["Error"]
            .as_str()
            .unwrap_or_else(|| panic!("not an error: {answer}"));
        assert!(text.contains(name), "{text}");
        text.replace(name, "NAME")
    };
    assert_eq!(error(&withheld, "other"), error(&absent, "nopes"));
    assert!(!error(&absent, "nopes").contains("withheld"));
    assert_eq!(ask(&mut conn, Some("db"), "k")["SecretValue"], "granted");
}

#[tokio::test]
async fn the_protocol_is_served_over_tls() {
    use rustls::pki_types::ServerName;

    let world = World::shared();
    let db = world.secret("sap-tls", r#"{"k":"over-tls"}"#);
    let pki = pki();
    let agent = Agent::start(
        &world.config().resource("db", &db.arn).tls(tls(&pki, false)),
        &[],
    );
    let client = tls_client_config(&pki);
    let server = ServerName::try_from("127.0.0.1").unwrap();
    let session = rustls::ClientConnection::new(client, server).unwrap();
    let mut stream = rustls::StreamOwned::new(session, connect(agent.addr));
    assert_eq!(ask(&mut stream, Some("db"), "k")["SecretValue"], "over-tls");
    assert_eq!(ask(&mut stream, Some("db"), "k")["SecretValue"], "over-tls");
    // Without TLS, the protocol gets nothing from a TLS port.
    let mut plain = connect(agent.addr);
    plain
        .write_all(&frame(br#"{"Resource":"db","SecretKey":"k"}"#))
        .unwrap();
    let mut answer = Vec::new();
    let _ = plain.read_to_end(&mut answer);
    assert!(!String::from_utf8_lossy(&answer).contains("over-tls"));
}

#[tokio::test]
async fn the_protocol_is_served_over_the_unix_socket() {
    let world = World::shared();
    let db = world.secret("sap-uds", r#"{"k":"over-uds"}"#);
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("agent.sock");
    let agent = Agent::start(&world.config().resource("db", &db.arn).uds(&socket), &[]);
    let mut conn = std::os::unix::net::UnixStream::connect(&socket).unwrap();
    conn.set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    assert_eq!(ask(&mut conn, Some("db"), "k")["SecretValue"], "over-uds");
    // HTTP on the same socket still works.
    let (status, body) = uds_get(&socket, "/secrets/db/k", &[]);
    assert_eq!((status, body.as_str()), (200, "over-uds"));
    drop(agent);
}

#[test]
fn the_example_python_client_reads_a_key() {
    let world = World::shared();
    let db = world.secret("sap-py", r#"{"password":"from-python"}"#);
    let config = world
        .config()
        .resource("TestingSecret", &db.arn)
        .convert_to_base64();
    let agent = Agent::start(&config, &[]);
    let out = std::process::Command::new("python3")
        .arg(root().join("examples/aerospike/sa_client.py"))
        .args(["TestingSecret", "password"])
        .env("SECRET_AGENT_ADDRESS", agent.addr.to_string())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout), "from-python\n");
    let out = std::process::Command::new("python3")
        .arg(root().join("examples/aerospike/sa_client.py"))
        .args(["TestingSecret", "nope"])
        .env("SECRET_AGENT_ADDRESS", agent.addr.to_string())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("has no key"));
}

#[tokio::test]
async fn a_stop_answers_the_request_in_flight_and_closes_idle_connections() {
    let f = Fixture::new();
    let secret = f.secret("sap-stop", r#"{"k":"drained"}"#);
    f.proxy
        .set_fault(json!({"fault": "delay", "delay_ms": 1500}));
    let config = f.config().resource("s", &secret.arn).cache(|c| c.ttl("0s"));
    let mut agent = Agent::start(&config, &[("RUST_LOG", "info")]);
    let mut idle = connect(agent.addr);
    assert_eq!(ask(&mut idle, Some("s"), "k")["SecretValue"], "drained");
    let addr = agent.addr;
    let busy = std::thread::spawn(move || ask(&mut connect(addr), Some("s"), "k"));
    // Its fetch is at the (delaying) upstream: the request is in flight.
    assert!(
        eventually(Duration::from_secs(5), async || f.proxy.in_flight() == 1).await,
        "the request reached the upstream"
    );
    let stopped = Instant::now();
    agent.signal("TERM");
    assert_eq!(busy.join().unwrap()["SecretValue"], "drained");
    let status = agent
        .wait_exit(Duration::from_secs(8))
        .expect("the agent exits");
    assert!(status.success(), "{status:?}");
    assert!(
        stopped.elapsed() < Duration::from_secs(4),
        "an idle connection held the stop for {:?}",
        stopped.elapsed()
    );
    let mut rest = Vec::new();
    let _ = idle.read_to_end(&mut rest);
    assert!(rest.is_empty());
}

/// Names under a pattern (`prefix/*`), granted by the same pattern.
#[tokio::test]
async fn patterns_serve_the_protocol_too() {
    let world = World::shared();
    let prefix = unique("sap-pattern");
    let arn_prefix = format!("arn:aws:secretsmanager:{REGION}:123456789012:secret:{prefix}/*");
    let config = world
        .config()
        .resource(&format!("{prefix}/*"), &arn_prefix)
        .token_env("T", &["*"])
        .protocol_resources(&[&format!("{prefix}/*")]);
    let agent = Agent::start(&config, &[("T", "a-client-token-4567")]);
    // Created after the start.
    world.create_secret(REGION, &format!("{prefix}/db"), r#"{"k":"by-pattern"}"#);
    let mut conn = connect(agent.addr);
    let answer = ask(&mut conn, Some(&format!("{prefix}/db")), "k");
    assert_eq!(answer["SecretValue"], "by-pattern", "{answer}");
    // With auth on, an absent name is answered as a withheld one.
    let refused = ask(&mut conn, Some("elsewhere/db"), "k");
    assert!(
        refused["Error"].as_str().unwrap().contains("not granted"),
        "{refused}"
    );
}

#[tokio::test]
async fn no_credentials_is_an_error_answer() {
    let world = World::shared();
    let db = world.secret("sap-nocreds", r#"{"k":"unreachable"}"#);
    // No keys in the config, and the kit's environment has none either.
    let config = AgentConfig::new()
        .endpoint(&world.moto)
        .resource("db", &db.arn);
    let agent = Agent::start(&config, &[]);
    let answer = ask(&mut connect(agent.addr), Some("db"), "k");
    let error = answer["Error"]
        .as_str()
        .unwrap_or_else(|| panic!("{answer}"));
    assert!(error.contains("credentials"), "{error}");
    assert!(!error.contains("unreachable"), "{error}");
}
