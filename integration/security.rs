//! The endpoint as a security boundary: scoped client tokens, the SSRF
//! guard, TLS and mTLS, the Unix socket, limits against hostile clients,
//! and log hygiene.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::support::*;

const ALL_TOKEN: &str = "tok-all-5f0c2a9e7b1d";
const DB_TOKEN: &str = "tok-db-93aa61c4e2f0";

struct Secured {
    agent: Agent,
    db_value: String,
    other_value: String,
    /// Holds the token file.
    _tokens: tempfile::TempDir,
}

/// Two secrets; one token for everything (from a file with a trailing
/// newline), one only for `prod/db` (from the environment). `change` adds
/// to the config, e.g. TLS.
fn secured(change: impl FnOnce(AgentConfig) -> AgentConfig) -> Secured {
    let world = World::shared();
    let db_value = format!("db-value-{}", unique("v"));
    let other_value = format!("other-value-{}", unique("v"));
    let db = world.secret("sec-db", &db_value).arn;
    let other = world.secret("sec-other", &other_value).arn;
    let dir = tempfile::tempdir().unwrap();
    let token_file = dir.path().join("app.token");
    std::fs::write(&token_file, format!("{ALL_TOKEN}\n\n")).unwrap();
    std::fs::set_permissions(&token_file, std::fs::Permissions::from_mode(0o600)).unwrap();
    let config = world
        .config()
        .resource("prod/db", &db)
        .resource("other", &other)
        .token_file(&token_file, &["*"])
        .token_env("DB_TOKEN", &["prod/db"])
        .log_level("debug");
    let agent = Agent::start(&change(config), &[("DB_TOKEN", DB_TOKEN)]);
    Secured {
        agent,
        db_value,
        other_value,
        _tokens: dir,
    }
}

#[tokio::test]
async fn tokens_are_required_and_scoped() {
    let s = secured(|c| c);
    let url = |p: &str| s.agent.url(p);
    let bearer = |t: &str| format!("Bearer {t}");

    // Missing or unknown token: 401, before anything about the resource is revealed.
    for headers in [
        vec![],
        vec![("Authorization", bearer("wrong").leak() as &str)],
        vec![("Authorization", "Basic dXNlcjpwYXNz")],
        vec![("X-Aws-Parameters-Secrets-Token", "")],
        vec![("X-Aws-Parameters-Secrets-Token", "tok-all-5f0c2a9e7b1")],
    ] {
        for path in ["/secrets/prod/db", "/secrets/nope"] {
            let r = get_with(&url(path), &headers).await;
            r.assert_error(401, "unauthorized");
            assert_eq!(r.header("www-authenticate"), Some("Bearer"));
        }
    }
    // Both headers work; the file's trailing newline was trimmed.
    let all = bearer(ALL_TOKEN);
    let r = get_with(&url("/secrets/other"), &[("Authorization", &all)]).await;
    assert_eq!((r.status, r.text()), (200, s.other_value.clone()));
    let r = get_with(
        &url("/secrets/prod/db"),
        &[("X-Aws-Parameters-Secrets-Token", ALL_TOKEN)],
    )
    .await;
    assert_eq!((r.status, r.text()), (200, s.db_value.clone()));

    // A valid token outside its list: 403.
    let db = bearer(DB_TOKEN);
    let r = get_with(&url("/secrets/prod/db"), &[("Authorization", &db)]).await;
    assert_eq!((r.status, r.text()), (200, s.db_value.clone()));
    let r = get_with(&url("/secrets/other"), &[("Authorization", &db)]).await;
    r.assert_error(403, "forbidden");
    assert!(!r.text().contains(&s.other_value));
    let r = get_with(&url("/secrets/nope"), &[("Authorization", &db)]).await;
    r.assert_error(404, "resource_not_found");

    // No error body or log line carries a token.
    let log = s.agent.log();
    for secret in [
        ALL_TOKEN,
        DB_TOKEN,
        &s.db_value,
        &s.other_value,
        TEST_SECRET_KEY,
    ] {
        assert!(!log.contains(secret), "log leaks {secret}:\n{log}");
    }
    assert!(log.contains("client auth: 2 token(s)"), "{log}");
}

#[tokio::test]
async fn proxied_requests_are_refused() {
    let s = secured(|c| c);
    let auth = format!("Bearer {ALL_TOKEN}");
    for header in [
        ("X-Forwarded-For", "203.0.113.7"),
        ("Forwarded", "for=203.0.113.7"),
    ] {
        let r = get_with(
            &s.agent.url("/secrets/other"),
            &[("Authorization", &auth), header],
        )
        .await;
        r.assert_error(400, "forwarded_request_refused");
        assert!(!r.text().contains(&s.other_value));
    }
}

#[tokio::test]
async fn only_get_and_head_and_bounded_requests() {
    let s = secured(|c| c);
    let auth = format!("Bearer {ALL_TOKEN}");
    for method in ["POST", "PUT", "DELETE", "PATCH", "OPTIONS"] {
        for path in ["/secrets/other", "/elsewhere"] {
            let r = client()
                .request(method.parse().unwrap(), s.agent.url(path))
                .header("Authorization", &auth)
                .send()
                .await
                .unwrap();
            assert_eq!(r.status(), 405, "{method} {path}");
            assert_eq!(r.headers()["allow"], "GET, HEAD");
        }
    }
    // A long path: 414.
    let long = format!("/secrets/{}", "a".repeat(10_000));
    get_with(&s.agent.url(&long), &[("Authorization", &auth)])
        .await
        .assert_error(414, "uri_too_long");
    // Large headers: 431; huge ones: a 4xx or a closed connection, never a crash.
    let big = |size: usize| {
        raw_request(
            s.agent.addr,
            &format!(
                "GET /secrets/other HTTP/1.1\r\nHost: x\r\nAuthorization: {auth}\r\nX-Big: {}\r\nConnection: close\r\n\r\n",
                "b".repeat(size)
            ),
        )
    };
    let (status, answer) = big(20 * 1024);
    assert_eq!(status, 431, "{answer}");
    assert!(answer.contains("headers_too_large") && !answer.contains(&s.other_value));
    for size in [64 * 1024, 2 * 1024 * 1024] {
        let (status, answer) = big(size);
        assert!(
            (400..500).contains(&status) || status == 0,
            "{size}: {status}"
        );
        assert!(!answer.contains(&s.other_value));
    }
    // Still serving.
    let r = get_with(&s.agent.url("/secrets/other"), &[("Authorization", &auth)]).await;
    assert_eq!(r.status, 200);
}

#[tokio::test]
async fn idle_connections_do_not_lock_out_a_reader() {
    // A low limit and a short request timeout: 40 idle connections hold
    // every slot, and are dropped after 1 s each.
    let s = secured(|c| c.max_connections(8).request_timeout("1s"));
    let idle: Vec<TcpStream> = (0..40)
        .map(|_| TcpStream::connect(s.agent.addr).unwrap())
        .collect();
    let started = Instant::now();
    let auth = format!("Bearer {ALL_TOKEN}");
    let r = tokio::time::timeout(
        Duration::from_secs(15),
        get_with(&s.agent.url("/secrets/other"), &[("Authorization", &auth)]),
    )
    .await
    .expect("the reader got in");
    assert_eq!((r.status, r.text()), (200, s.other_value.clone()));
    // The limit held: the reader had to wait for idle connections to be dropped.
    assert!(
        started.elapsed() > Duration::from_millis(500),
        "{:?}",
        started.elapsed()
    );
    assert!(
        started.elapsed() < Duration::from_secs(8),
        "{:?}",
        started.elapsed()
    );
    drop(idle);

    // With the default limit, 300 idle connections cost a reader nothing.
    let s = secured(|c| c);
    let idle: Vec<TcpStream> = (0..300)
        .map(|_| TcpStream::connect(s.agent.addr).unwrap())
        .collect();
    let started = Instant::now();
    let r = get_with(&s.agent.url("/secrets/other"), &[("Authorization", &auth)]).await;
    assert_eq!(r.status, 200);
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );
    // A slow client that sends half a request line is dropped too.
    let mut slow = TcpStream::connect(s.agent.addr).unwrap();
    slow.write_all(b"GET /secrets/oth").unwrap();
    slow.set_read_timeout(Some(Duration::from_secs(15)))
        .unwrap();
    let mut buf = Vec::new();
    let t = Instant::now();
    let _ = slow.read_to_end(&mut buf);
    assert!(
        t.elapsed() < Duration::from_secs(12),
        "slow client kept for {:?}",
        t.elapsed()
    );
    assert!(!String::from_utf8_lossy(&buf).contains(&s.other_value));
    drop(idle);
}

fn tls_client(pki: &Pki, identity: Option<&str>) -> reqwest::Client {
    let mut builder = reqwest::Client::builder()
        .use_rustls_tls()
        .tls_built_in_root_certs(false)
        .add_root_certificate(reqwest::Certificate::from_pem(pki.ca_pem.as_bytes()).unwrap())
        .timeout(Duration::from_secs(10));
    if let Some(pem) = identity {
        builder = builder.identity(reqwest::Identity::from_pem(pem.as_bytes()).unwrap());
    }
    builder.build().unwrap()
}

#[tokio::test]
async fn tls_serves_secrets_and_plain_http_gets_none() {
    let pki = pki();
    let s = secured(|c| c.tls(tls(&pki, false)));
    assert!(s.agent.log().contains("listening on https://"));
    let url = format!("https://{}/secrets/other", s.agent.addr);
    let r = tls_client(&pki, None)
        .get(&url)
        .bearer_auth(ALL_TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.text().await.unwrap(), s.other_value);
    // Plain HTTP to the TLS port never gets a secret.
    let (_, answer) = raw_request(
        s.agent.addr,
        &format!(
            "GET /secrets/other HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {ALL_TOKEN}\r\nConnection: close\r\n\r\n"
        ),
    );
    assert!(!answer.contains(&s.other_value), "{answer}");
}

#[tokio::test]
async fn mtls_requires_a_client_certificate_from_the_ca() {
    let pki = pki();
    let s = secured(|c| c.tls(tls(&pki, true)));
    let url = format!("https://{}/secrets/other", s.agent.addr);
    let r = tls_client(&pki, Some(&pki.client_pem))
        .get(&url)
        .bearer_auth(ALL_TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(r.text().await.unwrap(), s.other_value);
    for identity in [None, Some(pki.rogue_client_pem.as_str())] {
        let result = tls_client(&pki, identity)
            .get(&url)
            .bearer_auth(ALL_TOKEN)
            .send()
            .await;
        match result {
            Err(_) => {}
            Ok(r) => {
                let body = r.text().await.unwrap_or_default();
                panic!("served without a valid client certificate: {body}");
            }
        }
    }
}

#[tokio::test]
async fn unix_socket_with_mode_auth_and_cleanup() {
    let world = World::shared();
    let value = format!("uds-{}", unique("v"));
    let arn = world.secret("uds", &value).arn;
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("agent.sock");
    // A stale socket from an earlier run is replaced.
    drop(std::os::unix::net::UnixListener::bind(&socket).unwrap());
    assert!(socket.exists());
    let token_env = "UDS_TOKEN";
    let on = |path: &Path| {
        world
            .config()
            .uds_only(path)
            .resource("s", &arn)
            .token_env(token_env, &["*"])
    };
    let config = on(&socket);
    let mut agent = Agent::start(&config, &[(token_env, ALL_TOKEN)]);
    let mode = std::fs::metadata(&socket).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o660);
    let read = |token: &str| {
        uds_get(
            &socket,
            "/secrets/s",
            &[("Authorization", &format!("Bearer {token}"))],
        )
    };
    assert_eq!(read(ALL_TOKEN), (200, value.clone()));
    assert_eq!(read("nope").0, 401);

    // A second agent on the same live socket refuses to start.
    let err = Agent::try_start(&config, &[(token_env, ALL_TOKEN)])
        .err()
        .expect("refused");
    assert!(err.contains("in use"), "{err}");

    // A clean exit removes the socket.
    agent.signal("TERM");
    let exit = agent.wait_exit(Duration::from_secs(15)).expect("exited");
    assert!(exit.success(), "{exit:?}");
    assert!(!socket.exists(), "socket removed on exit");

    // A custom mode; and a regular file at the path is never replaced.
    let _agent = Agent::start(&on(&socket).uds_mode("0600"), &[(token_env, ALL_TOKEN)]);
    assert_eq!(
        std::fs::metadata(&socket).unwrap().permissions().mode() & 0o777,
        0o600
    );
    let file = dir.path().join("not-a-socket");
    std::fs::write(&file, "data").unwrap();
    let err = Agent::try_start(&on(&file), &[(token_env, ALL_TOKEN)])
        .err()
        .expect("refused");
    assert!(err.contains("is not a socket"), "{err}");
    assert_eq!(std::fs::read_to_string(&file).unwrap(), "data");
}

/// Connects to `socket` in a loop as the user `nobody` until its standard
/// input closes (or 60 s pass); prints how many connections it made.
const CONNECT_LOOP: &str = r#"
import select, socket, sys, time
path, made, end = sys.argv[1], 0, time.monotonic() + 60
while time.monotonic() < end and not select.select([sys.stdin], [], [], 0)[0]:
    s = socket.socket(socket.AF_UNIX)
    try:
        s.connect(path)
        made += 1
    except OSError:
        pass
    s.close()
print(made, flush=True)
"#;

#[test]
fn a_unix_socket_is_never_reachable_by_others_before_it_has_its_mode() {
    // The race: an agent started under umask 0000, another user connecting
    // in a loop while the socket is bound and given its mode 0600.
    let world = World::shared();
    let dir = tempfile::tempdir().unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let socket = dir.path().join("agent.sock");
    let config = world.config().uds_only(&socket).uds_mode("0600").resource(
        "s",
        "arn:aws:secretsmanager:us-west-1:123456789012:secret:unused-AbCdEf",
    );
    let mut other = Command::new("setpriv")
        .args(["--reuid=65534", "--regid=65534", "--clear-groups"])
        .args(["/usr/bin/python3", "-c", CONNECT_LOOP])
        .arg(&socket)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("setpriv runs python3 as nobody");
    for _ in 0..10 {
        let mut agent = Agent::try_start_under_umask(&config, &[], Some(0o000))
            .unwrap_or_else(|log| panic!("agent did not start:\n{log}"));
        assert_eq!(
            std::fs::metadata(&socket).unwrap().permissions().mode() & 0o777,
            0o600
        );
        agent.signal("TERM");
        assert!(agent.wait_exit(Duration::from_secs(15)).is_some());
    }
    drop(other.stdin.take());
    let out = other.wait_with_output().unwrap();
    let made: u32 = String::from_utf8_lossy(&out.stdout).trim().parse().unwrap();
    assert_eq!(made, 0, "another user connected to the socket");
}

#[test]
fn loose_permissions_are_warned_about_and_check_prints_no_secret() {
    let world = World::shared();
    let dir = tempfile::tempdir().unwrap();
    let token = dir.path().join("t.token");
    std::fs::write(&token, ALL_TOKEN).unwrap();
    std::fs::set_permissions(&token, std::fs::Permissions::from_mode(0o644)).unwrap();
    let config = world
        .config()
        .resource(
            "s",
            "arn:aws:secretsmanager:us-west-1:123456789012:secret:s",
        )
        .token_file(&token, &["s"]);
    let path = dir.path().join("config.yaml");
    std::fs::write(&path, config.yaml()).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
    let (code, out, err) = run_cli(&["--check", "-c", path.to_str().unwrap()]);
    assert_eq!(code, 0, "{err}");
    assert!(
        out.contains(&format!(
            "warning: {} is readable by group or others",
            path.display()
        )),
        "{out}"
    );
    assert!(
        out.contains(&format!(
            "warning: {} is readable by group or others",
            token.display()
        )),
        "{out}"
    );
    assert!(out.contains("auth: 1 token(s)"), "{out}");
    for secret in [ALL_TOKEN, TEST_SECRET_KEY] {
        assert!(
            !out.contains(secret) && !err.contains(secret),
            "--check leaks {secret}"
        );
    }
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
    std::fs::set_permissions(&token, std::fs::Permissions::from_mode(0o600)).unwrap();
    let (_, out, _) = run_cli(&["--check", "-c", path.to_str().unwrap()]);
    assert!(!out.contains("warning:"), "{out}");
}

/// A client without a token learns nothing from the compatible routes, not
/// even which query parameters are wrong; with one, no error repeats more
/// than a short prefix of what it sent.
#[tokio::test]
async fn the_token_comes_before_the_query_and_errors_echo_little() {
    let s = secured(|c| c);
    let long = "q".repeat(10_000);
    let auth = format!("Bearer {ALL_TOKEN}");
    // The AWS agent's routes: its 403 `Bad Token`, then its plain-text 400s.
    for path in [
        format!("/secretsmanager/get?{long}=1"),
        format!("/secretsmanager/get?secretId=other&{long}=1"),
        "/secretsmanager/get".to_owned(),
        "/secretsmanager/get?secretId=other&refreshNow=maybe".to_owned(),
        format!("/v1/other?{long}=1"),
        "/v1/other?secretId=other".to_owned(),
    ] {
        let shown: String = path.chars().take(60).collect();
        let r = get(&s.agent.url(&path)).await;
        assert_eq!((r.status, r.text().as_str()), (403, "Bad Token"), "{shown}");
        let r = get_with(&s.agent.url(&path), &[("Authorization", &auth)]).await;
        assert_eq!(r.status, 400, "{shown}: {}", r.text());
        assert!(r.body.len() < 300, "{shown}: {}", r.text());
    }
    let path = format!("/secrets/other?{long}=1");
    get(&s.agent.url(&path))
        .await
        .assert_error(401, "unauthorized");
    let r = get_with(&s.agent.url(&path), &[("Authorization", &auth)]).await;
    r.assert_error(400, "bad_request");
    assert!(r.body.len() < 300, "{}", r.text());
    // Unknown names are echoed short on our route; the AWS agent's routes
    // answer as AWS does for a secret it does not have, echoing nothing.
    let r = get_with(
        &s.agent.url(&format!("/secrets/{}", "q".repeat(4000))),
        &[("Authorization", &auth)],
    )
    .await;
    r.assert_error(404, "resource_not_found");
    assert!(r.body.len() < 300, "{}", r.text());
    assert!(
        r.text().contains(&format!("`{}...`", "q".repeat(32))),
        "{}",
        r.text()
    );
    for path in [
        format!("/secretsmanager/get?secretId={long}"),
        format!("/v1/{}", "q".repeat(4000)),
    ] {
        let r = get_with(&s.agent.url(&path), &[("Authorization", &auth)]).await;
        assert_eq!(r.status, 400, "{}", r.text());
        assert!(!r.text().contains("qqq"), "{}", r.text());
    }
    let r = get_with(
        &s.agent.url(&format!("/secrets/prod/db?version-id={long}")),
        &[("Authorization", &auth)],
    )
    .await;
    r.assert_error(400, "bad_request");
    assert!(!r.text().contains(&s.db_value));
}

/// Several names for one secret: a request by ARN is served when the token
/// may read any of them, whichever the agent would pick first.
#[tokio::test]
async fn a_request_by_arn_is_allowed_through_any_of_its_names() {
    let world = World::shared();
    let value = format!("shared-{}", unique("v"));
    let arn = world.secret("shared", &value).arn;
    let other = world.secret("unshared", "other-value").arn;
    // 16 names: before the fix, the one this token may read was picked in
    // fewer than one start in ten.
    let names: Vec<String> = (0..16).map(|i| format!("alias{i:02}")).collect();
    let config = world
        .config()
        .resources(names.iter().map(|n| (n, &arn)))
        .resource("unshared", &other)
        .token_env("ONE", &["alias07"])
        .token_env("NONE", &["unshared"]);
    let agent = Agent::start(&config, &[("ONE", ALL_TOKEN), ("NONE", DB_TOKEN)]);
    let read = async |path: &str, token: &str| {
        get_with(
            &agent.url(path),
            &[("X-Aws-Parameters-Secrets-Token", token)],
        )
        .await
    };
    for path in [
        format!("/secretsmanager/get?secretId={arn}"),
        format!("/v1/{arn}"),
    ] {
        let r = read(&path, ALL_TOKEN).await;
        assert_eq!(r.status, 200, "{path}: {}", r.text());
        assert_eq!(r.json()["SecretString"], value.as_str());
        // The AWS agent's answer to a token that will not do.
        let r = read(&path, DB_TOKEN).await;
        assert_eq!((r.status, r.text().as_str()), (403, "Bad Token"));
        let r = get(&agent.url(&path)).await;
        assert_eq!((r.status, r.text().as_str()), (403, "Bad Token"));
    }
    // By name, only the name on the token's list.
    let r = read("/secretsmanager/get?secretId=alias07", ALL_TOKEN).await;
    assert_eq!(r.status, 200);
    let r = read("/secretsmanager/get?secretId=alias08", ALL_TOKEN).await;
    assert_eq!((r.status, r.text().as_str()), (403, "Bad Token"));
}

/// A token sent where a name goes (a path, `secretId`, a version) never
/// reaches the log, whatever the answer; the debug lines name only
/// configured resources.
#[tokio::test]
async fn a_token_sent_as_a_name_never_reaches_the_log() {
    let s = secured(|c| c);
    let auth = format!("Bearer {ALL_TOKEN}");
    let mut paths = Vec::new();
    for token in [ALL_TOKEN, DB_TOKEN] {
        paths.extend([
            format!("/secrets/{token}"),
            format!("/secrets/prod/db/{token}"),
            format!("/secrets/prod/db?version-id={token}"),
            format!("/secrets/prod/db?version-stage={token}"),
            format!("/secrets/other?{token}=1"),
            format!("/v1/{token}"),
            format!("/v1/other?versionId={token}"),
            format!("/secretsmanager/get?secretId={token}"),
            format!("/secretsmanager/get?secretId=other&{token}=1"),
            format!("/elsewhere/{token}"),
        ]);
    }
    for path in &paths {
        get(&s.agent.url(path)).await;
        get_with(&s.agent.url(path), &[("Authorization", &auth)]).await;
    }
    // One debug line per request to a secret route (not `/elsewhere`).
    let lines = || s.agent.log().matches("secret_agent::http] GET ").count();
    eventually(Duration::from_secs(5), async || lines() >= 36).await;
    let log = s.agent.log();
    assert_eq!(lines(), 36, "{log}");
    for token in [ALL_TOKEN, DB_TOKEN] {
        assert!(!log.contains(token), "log leaks {token}:\n{log}");
    }
    for line in [
        "GET /secrets/<unknown> -> 401",
        "GET /secrets/<unknown> -> 404",
        "GET /secrets/prod/db/<key> -> 422",
        "GET /secrets/prod/db -> 404",
        "GET /v1/<unknown> -> 400",
        "GET /secretsmanager/get?secretId=<unknown> -> 400",
        "prod/db, a version asked for by a client: version_not_found",
    ] {
        assert!(log.contains(line), "no `{line}` in:\n{log}");
    }
}
