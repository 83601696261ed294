//! The core gateway: values, keys, content types, errors, caching, config
//! checks and log hygiene.

use std::time::Duration;

use serde_json::json;

use crate::support::*;

/// Seeds the secrets of the core issue and starts an agent over them.
struct Seeded {
    proxy: Proxy<'static>,
    agent: Agent,
    json_arn: String,
    /// The JSON secret's name, to count its upstream calls.
    json_name: String,
}

const JSON_V1: &str = r#"{"username":"tiexin","port":5432,"tls":true,"opts":{"pool":[1,2]},"note":"caf\u00e9 \"quoted\""}"#;
const JSON_V2: &str = r#"{"username":"tiexin","password":"rotated-pa55-value-2"}"#;
const PLAIN: &str = "plain-secret-value-7c1f";
const BINARY: &[u8] = &[0, 159, 146, 150, 255, 10, 13, 0, 42];

fn big_value() -> String {
    // 60 KB, no pattern repeated at a fixed offset.
    (0..6000).map(|i| format!("{i:09}-")).collect()
}

/// `change` adds to the config, e.g. a cache setting.
fn fixture(change: impl FnOnce(AgentConfig) -> AgentConfig) -> Seeded {
    let f = Fixture::new();
    let world = f.world;
    let json = f.secret("core/db", JSON_V1);
    world.put_secret_value(REGION, &json.arn, JSON_V2);
    let plain = f.secret("core-plain", PLAIN);
    let binary_arn = world.create_binary_secret(REGION, &unique("core-bin"), BINARY);
    let big = f.secret("core-big", &big_value());
    let config = f
        .config()
        .resource("db", &json.arn)
        .resource("plain", &plain.arn)
        .resource("bin", &binary_arn)
        .resource("big", &big.arn)
        .resource("nested/db", &json.arn)
        .resource("nested", &plain.arn);
    let agent = Agent::start(&change(config), &[]);
    Seeded {
        proxy: f.proxy,
        agent,
        json_arn: json.arn,
        json_name: json.name,
    }
}

#[tokio::test]
async fn values_come_back_exactly_with_their_content_type() {
    let f = fixture(|c| c);
    let r = get(&f.agent.url("/secrets/db")).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.text(), JSON_V2);
    assert_eq!(r.header("content-type"), Some("application/json"));
    assert_eq!(r.header("cache-control"), Some("no-store"));

    let r = get(&f.agent.url("/secrets/plain")).await;
    assert_eq!((r.status, r.text()), (200, PLAIN.to_owned()));
    assert_eq!(r.header("content-type"), Some("text/plain; charset=utf-8"));

    let r = get(&f.agent.url("/secrets/bin")).await;
    assert_eq!((r.status, r.body.as_slice()), (200, BINARY));
    assert_eq!(r.header("content-type"), Some("application/octet-stream"));

    let r = get(&f.agent.url("/secrets/big")).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.body.len(), 60_000);
    assert_eq!(r.text(), big_value());

    // HEAD answers like GET, without a body.
    let head = client()
        .head(f.agent.url("/secrets/plain"))
        .send()
        .await
        .unwrap();
    assert_eq!(head.status(), 200);
    assert_eq!(
        head.headers()["content-length"],
        PLAIN.len().to_string().as_str()
    );
    assert!(head.bytes().await.unwrap().is_empty());
}

#[tokio::test]
async fn keys_of_json_secrets() {
    let f = fixture(|c| c);
    // Version 1 holds the typed values; read it by stage.
    let world = World::shared();
    world.call(
        "secretsmanager",
        REGION,
        "put_secret_value",
        json!({"SecretId": f.json_arn, "SecretString": JSON_V1}),
    );
    let key = |k: &str| f.agent.url(&format!("/secrets/db/{k}"));
    // A fresh agent-side read: the cache has nothing yet for this fixture.
    let r = get(&key("username")).await;
    assert_eq!((r.status, r.text()), (200, "tiexin".to_owned()));
    assert_eq!(r.header("content-type"), Some("text/plain; charset=utf-8"));
    assert_eq!(r.header("cache-control"), Some("no-store"));
    for (k, want, ctype) in [
        ("port", "5432", "application/json"),
        ("tls", "true", "application/json"),
        ("opts", r#"{"pool":[1,2]}"#, "application/json"),
        ("note", "café \"quoted\"", "text/plain; charset=utf-8"),
    ] {
        let r = get(&key(k)).await;
        assert_eq!((r.status, r.text().as_str()), (200, want), "key {k}");
        assert_eq!(r.header("content-type"), Some(ctype), "key {k}");
    }
    get(&key("missing"))
        .await
        .assert_error(404, "key_not_found");
    get(&f.agent.url("/secrets/plain/anything"))
        .await
        .assert_error(422, "secret_not_json");
    get(&f.agent.url("/secrets/bin/anything"))
        .await
        .assert_error(422, "secret_not_json");
    // Percent-encoded names and keys are decoded once.
    let r = get(&f.agent.url("/secrets/db/user%6Eame")).await;
    assert_eq!(r.text(), "tiexin");
}

#[tokio::test]
async fn longest_configured_name_wins() {
    let f = fixture(|c| c);
    // `nested` is the plain secret, `nested/db` the JSON one.
    let r = get(&f.agent.url("/secrets/nested/db")).await;
    assert_eq!(r.header("content-type"), Some("application/json"));
    let r = get(&f.agent.url("/secrets/nested/db/username")).await;
    assert_eq!((r.status, r.text()), (200, "tiexin".to_owned()));
    let r = get(&f.agent.url("/secrets/nested%2Fdb/username")).await;
    assert_eq!((r.status, r.text()), (200, "tiexin".to_owned()));
    // `nested/other` is key `other` of the plain secret: not JSON.
    get(&f.agent.url("/secrets/nested/other"))
        .await
        .assert_error(422, "secret_not_json");
}

#[tokio::test]
async fn unknown_names_routes_and_methods() {
    let f = fixture(|c| c);
    for path in [
        "/secrets/nope",
        "/secrets/",
        "/secrets/db/",
        "/secrets//db",
        "/secrets/DB",
        "/secrets/d%62/",
    ] {
        let r = get(&f.agent.url(path)).await;
        assert_eq!(r.status, 404, "{path}: {}", r.text());
        assert_eq!(r.header("cache-control"), Some("no-store"), "{path}");
    }
    // Sent as is (an HTTP client library would resolve the dot segments):
    // `..` is a key of `plain`, never a way to `db`.
    for path in [
        "/secrets/plain/../db",
        "/secrets/plain/%2e%2e/db",
        "/secrets/nested/../db/username",
    ] {
        let (status, body) = raw_get(f.agent.addr, path);
        assert!((400..500).contains(&status), "{path}: {status} {body}");
        assert!(
            !body.contains("tiexin") && !body.contains("rotated"),
            "{path}: {body}"
        );
    }
    get(&f.agent.url("/secrets/nope"))
        .await
        .assert_error(404, "resource_not_found");
    get(&f.agent.url("/elsewhere"))
        .await
        .assert_error(404, "not_found");
    // `/secrets` is a path segment, not any path that starts with it.
    get(&f.agent.url("/secretsdb"))
        .await
        .assert_error(404, "not_found");
    get(&f.agent.url("/secrets"))
        .await
        .assert_error(404, "resource_not_found");
    let r = client()
        .post(f.agent.url("/secrets/db"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 405);
    get(&f.agent.url("/secrets/db?versionStage=AWSPREVIOUS"))
        .await
        .assert_error(400, "bad_request");
    // Nothing above reached AWS.
    assert_eq!(f.proxy.gets(&f.json_name), 0);
}

#[tokio::test]
async fn second_read_within_ttl_makes_no_upstream_call() {
    let f = fixture(|c| c.cache(|c| c.ttl("1h")));
    let first = get(&f.agent.url("/secrets/db")).await;
    assert_eq!(first.header("secret-agent-cache"), Some("miss"));
    let second = get(&f.agent.url("/secrets/db/username")).await;
    assert_eq!(second.header("secret-agent-cache"), Some("hit"));
    let third = get(&f.agent.url("/secrets/db")).await;
    assert_eq!(third.body, first.body);
    assert_eq!(f.proxy.gets(&f.json_name), 1);
    // The call was signed with the configured key.
    let calls = f.proxy.calls();
    assert_eq!(calls[0].access_key_id.as_deref(), Some(TEST_KEY_ID));
}

#[tokio::test]
async fn ttl_expiry_fetches_again() {
    let f = fixture(|c| c.cache(|c| c.ttl("1s")));
    let arn = f.json_arn.clone();
    assert_eq!(get(&f.agent.url("/secrets/db")).await.text(), JSON_V2);
    World::shared().put_secret_value(REGION, &arn, r#"{"v":3}"#);
    assert_eq!(get(&f.agent.url("/secrets/db")).await.text(), JSON_V2);
    assert!(
        eventually(Duration::from_secs(5), async || get(&f
            .agent
            .url("/secrets/db"))
        .await
        .text()
            == r#"{"v":3}"#)
        .await,
        "the new value once the TTL ran out"
    );
    assert_eq!(f.proxy.gets(&f.json_name), 2);
}

#[tokio::test]
async fn no_secret_value_reaches_the_debug_log() {
    let f = fixture(|c| c.log_level("debug"));
    for path in [
        "db",
        "db/username",
        "db/password",
        "plain",
        "bin",
        "big",
        "nested/db/username",
    ] {
        assert_eq!(
            get(&f.agent.url(&format!("/secrets/{path}"))).await.status,
            200
        );
    }
    get(&f.agent.url("/secrets/plain/x")).await;
    let log = f.agent.log();
    assert!(
        log.contains("GET /secrets/db/username -> 200 cache=hit"),
        "{log}"
    );
    for value in [
        JSON_V2,
        "rotated-pa55-value-2",
        PLAIN,
        TEST_SECRET_KEY,
        &big_value()[..40],
    ] {
        assert!(!log.contains(value), "log leaks {value:?}:\n{log}");
    }
    assert!(
        log.contains("credentials: static keys from config"),
        "{log}"
    );
    assert!(log.contains("serving 6 resource(s)"), "{log}");
}

#[tokio::test]
async fn standard_endpoint_variable_works_without_endpoint_key() {
    let f = Fixture::new();
    let secret = f.secret("core-env", "from-env-endpoint");
    let config = AgentConfig::new().resource("s", &secret.arn).test_keys();
    let agent = Agent::start(
        &config,
        &[("AWS_ENDPOINT_URL_SECRETS_MANAGER", &f.proxy.url)],
    );
    assert_eq!(
        get(&agent.url("/secrets/s")).await.text(),
        "from-env-endpoint"
    );
    assert_eq!(f.proxy.gets(&secret.name), 1);
    let agent = Agent::start(&config, &[("AWS_ENDPOINT_URL", &f.proxy.url)]);
    assert_eq!(
        get(&agent.url("/secrets/s")).await.text(),
        "from-env-endpoint"
    );
    assert_eq!(f.proxy.gets(&secret.name), 2);
}

#[tokio::test]
async fn upstream_failures_map_to_gateway_errors() {
    let f = Fixture::new();
    let arn = f.secret("core-fail", "v").arn;
    let missing = format!(
        "arn:aws:secretsmanager:{REGION}:123456789012:secret:{}",
        unique("never-created")
    );

    // Deleted upstream: a gateway error with its own code.
    let proxy = &f.proxy;
    let config = f
        .config()
        .resource("gone", &missing)
        .resource("s", &arn)
        .cache(|c| c.fetch_timeout("1s"));
    let agent = Agent::start(&config, &[]);
    get(&agent.url("/secrets/gone"))
        .await
        .assert_error(502, "upstream_secret_not_found");

    // A hanging upstream: 504 within the fetch deadline.
    proxy.set_fault(json!({"fault": "hang", "delay_ms": 10_000}));
    let started = std::time::Instant::now();
    get(&agent.url("/secrets/s"))
        .await
        .assert_error(504, "upstream_timeout");
    assert!(
        started.elapsed() < Duration::from_secs(4),
        "{:?}",
        started.elapsed()
    );

    // Nothing listening: 502 unreachable.
    let config = AgentConfig::new()
        .endpoint(&closed_url())
        .resource("s", &arn)
        .test_keys();
    let agent = Agent::start(&config, &[]);
    get(&agent.url("/secrets/s"))
        .await
        .assert_error(502, "upstream_unreachable");
}

#[test]
fn check_accepts_every_sample_config_and_prints_no_secret() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("config");
    for file in [
        "imds.yaml",
        "static-keys.yaml",
        "shared-credentials.yaml",
        "assume-role.yaml",
        "demo.yaml",
        "parameter-store.yaml",
        "render.yaml",
    ] {
        let path = dir.join(file);
        let (code, out, err) = run_cli(&["--check", "-c", path.to_str().unwrap()]);
        assert_eq!(code, 0, "{file}: {err}");
        assert!(out.contains("resources ("), "{out}");
        assert!(out.contains("credentials: "), "{out}");
        assert!(
            !out.contains("xxxxxxxx"),
            "{file} prints a secret key: {out}"
        );
        assert!(
            !out.contains("demo-secret-key"),
            "{file} prints a secret key: {out}"
        );
    }
    let (_, out, _) = run_cli(&[
        "--check",
        "-c",
        dir.join("assume-role.yaml").to_str().unwrap(),
    ]);
    assert!(out.contains("assume role arn:aws:iam::999999999999:role/AccessToSecrets over static keys from config"), "{out}");
}

#[test]
fn bad_configs_fail_before_serving_with_file_and_line() {
    let dir = tempfile::tempdir().unwrap();
    let cases = [
        (
            "service:\n  tcp:\n    endpoint: 127.0.0.1:0\nsecret-manager:\n  aws:\n    regoin: us-west-1\n    resources:\n      a: arn:aws:secretsmanager:us-west-1:123456789012:secret:a\n",
            ":6: secret-manager.aws: unknown key `regoin` (did you mean `region`?)",
        ),
        (
            "service:\n  tcp:\n    endpoint: 127.0.0.1:0\nsecret-manager:\n  aws:\n    resources:\n      a: not-an-arn\n",
            "secret-manager.aws.resources.a: resource `a`: `not-an-arn` is not a Secrets Manager secret ARN",
        ),
        (
            "service: [\n",
            ":1: service: invalid type: sequence, expected a mapping",
        ),
        (
            "service:\n  tcp:\n    endpoint: 127.0.0.1:0\nsecret-manager:\n  aws:\n    resources:\n      a: arn:aws:secretsmanager:us-west-1:123456789012:secret:a\ncache:\n  ttl: soon\n",
            "cache.ttl",
        ),
    ];
    for (i, (yaml, want)) in cases.iter().enumerate() {
        let path = dir.path().join(format!("bad{i}.yaml"));
        std::fs::write(&path, yaml).unwrap();
        for args in [vec!["--check", "-c"], vec!["--config"]] {
            let mut args = args.clone();
            args.push(path.to_str().unwrap());
            let (code, out, err) = run_cli(&args);
            assert_ne!(code, 0, "{yaml}");
            assert!(
                err.contains(&format!("bad{i}.yaml")) && err.contains(want),
                "want {want:?} in {err:?}"
            );
            assert!(out.is_empty(), "{out}");
        }
    }
    let (code, _, err) = run_cli(&["--check", "-c", "/nonexistent/secret-agent.yaml"]);
    assert_ne!(code, 0);
    assert!(err.contains("/nonexistent/secret-agent.yaml"), "{err}");
}

#[tokio::test]
async fn example_clients_read_secrets_and_report_errors() {
    let f = fixture(|c| c);
    let base = format!("http://{}", f.agent.addr);
    let run = |program: &str, args: &[&str]| {
        let out = std::process::Command::new(program)
            .args(args)
            .env("SECRET_AGENT_URL", &base)
            .output()
            .unwrap();
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let root = env!("CARGO_MANIFEST_DIR");
    let py = format!("{root}/examples/client.py");
    let (code, out, _) = run("python3", &[&py, "db", "username"]);
    assert_eq!((code, out.as_str()), (Some(0), "tiexin\n"));
    let (code, out, _) = run("python3", &[&py, "nested/db"]);
    assert_eq!((code, out.trim()), (Some(0), JSON_V2));
    let (code, _, err) = run("python3", &[&py, "nope"]);
    assert_eq!(code, Some(1));
    assert!(err.contains("404 resource_not_found"), "{err}");

    let sh = format!("{root}/examples/curl.sh");
    let (code, out, _) = run("bash", &[&sh, "db", "username"]);
    assert_eq!((code, out.as_str()), (Some(0), "tiexin\n"));
    let (code, out, _) = run("bash", &[&sh, "nope"]);
    assert_ne!(code, Some(0));
    assert!(out.contains("resource_not_found"), "{out}");

    let rust = rust_client().to_str().unwrap();
    let (code, out, _) = run(rust, &["db", "username"]);
    assert_eq!((code, out.as_str()), (Some(0), "tiexin\n"));
    let (code, out, _) = run(rust, &["nested/db"]);
    assert_eq!((code, out.trim()), (Some(0), JSON_V2));
    let (code, _, err) = run(rust, &["nope"]);
    assert_eq!(code, Some(1));
    assert!(err.contains("404 resource_not_found"), "{err}");
}

#[tokio::test]
async fn no_secret_value_reaches_the_trace_log_either() {
    let world = World::shared();
    let value = format!("trace-level-secret-{}", unique("v"));
    let secret = world.secret("trace", &format!(r#"{{"pw":"{value}"}}"#));
    let agent = Agent::start(
        &world.config().resource("t", &secret.arn),
        &[("RUST_LOG", "trace")],
    );
    assert_eq!(get(&agent.url("/secrets/t/pw")).await.text(), value);
    assert_eq!(get(&agent.url("/secrets/t?refresh=true")).await.status, 200);
    let log = agent.log();
    // Other crates' trace records are dropped (the SDK's carry signed
    // requests); everything at debug and above still shows.
    assert!(log.contains("DEBUG"), "verbose logging is on");
    for secret in [value.as_str(), TEST_SECRET_KEY] {
        assert!(!log.contains(secret), "trace log leaks {secret}");
    }
}
