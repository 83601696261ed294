//! Parameter Store: parameters as resources on `/secrets/` and the Lambda
//! extension's `/systemsmanager/parameters/get`, against moto's SSM through
//! the recording proxy (`ssm-endpoint`, or `AWS_ENDPOINT_URL_SSM`).

use std::time::{Duration, UNIX_EPOCH};

use serde_json::{Value, json};

use crate::support::*;

const TOKEN: &str = "parameter-token-all-1";
const NARROW_TOKEN: &str = "parameter-token-narrow-2";
const TOKEN_HEADER: &str = "X-Aws-Parameters-Secrets-Token";

/// A hierarchical parameter name no other test uses: `/agent-tests/<prefix>-<n>`.
fn parameter_name(prefix: &str) -> String {
    format!("/agent-tests/{}", unique(prefix))
}

/// Reads through the proxy, for Secrets Manager and SSM alike.
fn config(f: &Fixture) -> AgentConfig {
    f.config().ssm_endpoint(&f.proxy.url)
}

fn extension_url(agent: &Agent, query: &str) -> String {
    agent.url(&format!("/systemsmanager/parameters/get?{query}"))
}

fn encode(text: &str) -> String {
    crate::aws_agent::url_encode(text)
}

#[tokio::test]
async fn string_string_list_and_secure_string_values_and_a_json_key() {
    let f = Fixture::new();
    // A one-level name (its ARN is `parameter/<name>`) and hierarchical ones.
    let plain = unique("plain");
    let list = parameter_name("list");
    let db = parameter_name("db");
    f.world
        .put_parameter(REGION, &plain, "plain-value", "String");
    f.world.put_parameter(REGION, &list, "a,b,c", "StringList");
    let json_value = r#"{"user":"app","password":"pa55-secure"}"#;
    f.world
        .put_parameter(REGION, &db, json_value, "SecureString");
    let agent = Agent::start(
        &config(&f)
            .resource("plain", &parameter_arn(REGION, &plain))
            .resource("list", &parameter_arn(REGION, &list))
            .resource("db", &parameter_arn(REGION, &db)),
        &[],
    );

    let r = get(&agent.url("/secrets/plain")).await;
    assert_eq!((r.status, r.text().as_str()), (200, "plain-value"));
    assert_eq!(r.header("secret-agent-cache"), Some("miss"));
    assert_eq!(r.header("content-type"), Some("text/plain; charset=utf-8"));
    assert_eq!(get(&agent.url("/secrets/list")).await.text(), "a,b,c");
    // A SecureString is served decrypted, a JSON value as JSON, keys too.
    let r = get(&agent.url("/secrets/db")).await;
    assert_eq!((r.status, r.text().as_str()), (200, json_value));
    assert_eq!(r.header("content-type"), Some("application/json"));
    let r = get(&agent.url("/secrets/db/password")).await;
    assert_eq!((r.status, r.text().as_str()), (200, "pa55-secure"));
    assert_eq!(r.header("secret-agent-cache"), Some("hit"));
    get(&agent.url("/secrets/db/nope"))
        .await
        .assert_error(404, "key_not_found");
    get(&agent.url("/secrets/plain/key"))
        .await
        .assert_error(422, "secret_not_json");

    // One decrypted GetParameter per parameter, by ARN (as a parameter
    // shared from another account is read), never a Secrets Manager call.
    let calls = f.proxy.calls();
    let names: Vec<(&str, Option<&str>, Option<bool>)> = calls
        .iter()
        .map(|c| (c.action.as_str(), c.secret_id.as_deref(), c.with_decryption))
        .collect();
    for name in [&plain, &list, &db] {
        let arn = parameter_arn(REGION, name);
        assert_eq!(
            names
                .iter()
                .filter(|c| **c == ("GetParameter", Some(arn.as_str()), Some(true)))
                .count(),
            1,
            "{names:?}"
        );
    }
    assert!(
        !calls.iter().any(|c| c.action.contains("SecretValue")),
        "{names:?}"
    );
    assert!(calls.iter().all(|c| c.region.as_deref() == Some(REGION)));

    // No value reaches the log (the agent logs at debug here).
    let log = agent.log();
    for value in ["plain-value", "pa55-secure", "a,b,c"] {
        assert!(!log.contains(value), "{value} in the log:\n{log}");
    }
}

#[tokio::test]
async fn versions_and_labels() {
    let f = Fixture::new();
    let name = parameter_name("versions");
    assert_eq!(
        f.world.put_parameter(REGION, &name, "one", "SecureString"),
        1
    );
    assert_eq!(
        f.world.put_parameter(REGION, &name, "two", "SecureString"),
        2
    );
    f.world.label_parameter_version(REGION, &name, 1, "blue");
    let agent = Agent::start(
        &config(&f).resource("p", &parameter_arn(REGION, &name)),
        &[],
    );
    let read = async |query: &str| get(&agent.url(&format!("/secrets/p{query}"))).await;

    assert_eq!(read("").await.text(), "two");
    assert_eq!(read("?version=1").await.text(), "one");
    assert_eq!(read("?version=2").await.text(), "two");
    assert_eq!(read("?label=blue").await.text(), "one");
    // Cached per version: the second read of each is a hit.
    let r = read("?label=blue").await;
    assert_eq!(r.header("secret-agent-cache"), Some("hit"));
    read("?version=9")
        .await
        .assert_error(404, "version_not_found");
    read("?label=green")
        .await
        .assert_error(404, "version_not_found");
    // A secret's selectors are not a parameter's, and the reverse.
    read("?version-stage=AWSCURRENT")
        .await
        .assert_error(400, "bad_request");
    read("?version=x").await.assert_error(400, "bad_request");
    read("?version=1&label=blue")
        .await
        .assert_error(400, "bad_request");

    let asked: Vec<String> = f
        .proxy
        .calls()
        .into_iter()
        .filter(|c| c.action == "GetParameter")
        .filter_map(|c| c.secret_id)
        .collect();
    for selector in ["", ":1", ":2", ":blue", ":9", ":green"] {
        let sent = format!("{}{selector}", parameter_arn(REGION, &name));
        assert_eq!(
            asked.iter().filter(|a| **a == sent).count(),
            1,
            "{sent}: {asked:?}"
        );
    }

    // A new version is served once the cached one is refreshed.
    f.world
        .put_parameter(REGION, &name, "three", "SecureString");
    assert_eq!(read("?refresh=true").await.text(), "three");
}

#[tokio::test]
async fn missing_parameters_and_versions() {
    let f = Fixture::new();
    let prefix = format!("/agent-tests/{}", unique("missing"));
    let name = format!("{prefix}/there");
    f.world.put_parameter(REGION, &name, "here", "String");
    let pattern_arn = format!("{}/*", parameter_arn(REGION, &prefix));
    let agent = Agent::start(
        &config(&f)
            .resource("app/*", &pattern_arn)
            .resource("gone", &parameter_arn(REGION, &format!("{prefix}/never"))),
        &[],
    );
    // Under a pattern: an existing parameter is served, a missing one is
    // a name nobody configured.
    assert_eq!(get(&agent.url("/secrets/app/there")).await.text(), "here");
    get(&agent.url("/secrets/app/nothing-here"))
        .await
        .assert_error(404, "resource_not_found");
    get(&agent.url("/secrets/app/there?version=5"))
        .await
        .assert_error(404, "version_not_found");
    // Configured by exact ARN but missing in AWS: as for a secret, AWS
    // does not have what the configuration names.
    get(&agent.url("/secrets/gone"))
        .await
        .assert_error(502, "upstream_secret_not_found");
    // Remembered for negative-ttl: asked once.
    get(&agent.url("/secrets/gone"))
        .await
        .assert_error(502, "upstream_secret_not_found");
    assert_eq!(f.proxy.parameter_gets(&format!("{prefix}/never")), 1);
    // Outside every pattern: never asked.
    get(&agent.url("/secrets/other/x"))
        .await
        .assert_error(404, "resource_not_found");

    // A missing parameter asked at a version or label is the parameter
    // missing; a missing version of a long name under a pattern is echoed
    // short (AWS repeats the name, which the client wrote).
    get(&agent.url("/secrets/app/nothing-here?version=2"))
        .await
        .assert_error(404, "resource_not_found");
    let long = format!("long-{}", "n".repeat(60));
    f.world
        .put_parameter(REGION, &format!("{prefix}/{long}"), "v", "String");
    let r = get(&agent.url(&format!("/secrets/app/{long}?version=9"))).await;
    r.assert_error(404, "version_not_found");
    assert!(!r.text().contains(&"n".repeat(33)), "{}", r.text());
    assert!(!agent.log().contains(&"n".repeat(33)), "{}", agent.log());
}

#[tokio::test]
async fn a_second_region_and_the_sdk_endpoint_variable() {
    let f = Fixture::new();
    let other = "eu-west-3";
    let name = parameter_name("region");
    f.world
        .put_parameter(other, &name, "from-paris", "SecureString");
    f.world
        .put_parameter(REGION, &name, "from-california", "SecureString");
    // No ssm-endpoint: AWS_ENDPOINT_URL_SSM sends SSM calls to the proxy.
    let agent = Agent::start(
        &f.config()
            .resource("paris", &parameter_arn(other, &name))
            .resource("california", &parameter_arn(REGION, &name)),
        &[("AWS_ENDPOINT_URL_SSM", &f.proxy.url)],
    );
    assert_eq!(get(&agent.url("/secrets/paris")).await.text(), "from-paris");
    assert_eq!(
        get(&agent.url("/secrets/california")).await.text(),
        "from-california"
    );
    let regions: Vec<Option<String>> = f
        .proxy
        .calls()
        .into_iter()
        .filter(|c| c.action == "GetParameter")
        .map(|c| c.region)
        .collect();
    assert_eq!(
        regions,
        [Some(other.to_owned()), Some(REGION.to_owned())],
        "each call signed for its ARN's region"
    );
}

/// moto enforces IAM once INITIAL_NO_AUTH_ACTION_COUNT calls are made.
#[tokio::test]
async fn a_parameter_the_identity_may_not_read_is_refused() {
    let world = World::start(&[("INITIAL_NO_AUTH_ACTION_COUNT", "7")]);
    // 7 free calls: two users (3 each) and the parameter.
    let (reader_id, reader_secret) = world.iam_user("ssm-reader", &["ssm:GetParameter"]);
    let (other_id, other_secret) =
        world.iam_user("secrets-only", &["secretsmanager:GetSecretValue"]);
    let name = parameter_name("guarded");
    world.put_parameter(REGION, &name, "guarded-value", "SecureString");
    let config = |id: &str, secret: &str| {
        AgentConfig::new()
            .endpoint(&world.moto)
            .ssm_endpoint(&world.moto)
            .resource("guarded", &parameter_arn(REGION, &name))
            .keys(id, secret)
    };

    let refused = Agent::start(&config(&other_id, &other_secret), &[]);
    let r = get(&refused.url("/secrets/guarded")).await;
    r.assert_error(502, "upstream_access_denied");
    assert!(
        refused.wait_for_log("guarded: AWS refused the request (", Duration::from_secs(5)),
        "{}",
        refused.log()
    );
    // The extension's route: AWS's refusal in AWS's shape.
    let r = get(&extension_url(
        &refused,
        &format!("name={}&withDecryption=true", encode(&name)),
    ))
    .await;
    assert_eq!(r.status, 400, "{}", r.text());
    let code = r.json()["__type"].as_str().unwrap_or_default().to_owned();
    assert!(code.starts_with("AccessDenied"), "{}", r.text());

    let allowed = Agent::start(&config(&reader_id, &reader_secret), &[]);
    assert_eq!(
        get(&allowed.url("/secrets/guarded")).await.text(),
        "guarded-value"
    );
    for agent in [&refused, &allowed] {
        let log = agent.log();
        assert!(!log.contains("guarded-value"), "{log}");
        assert!(!log.contains(&other_secret) && !log.contains(&reader_secret));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_storm_of_first_reads_makes_one_get_parameter_call() {
    let f = Fixture::new();
    let name = parameter_name("storm");
    f.world
        .put_parameter(REGION, &name, "storm-value", "SecureString");
    let agent = Agent::start(
        &config(&f)
            .resource("storm", &parameter_arn(REGION, &name))
            .cache(|c| c.ttl("5m")),
        &[],
    );
    f.proxy
        .set_fault(json!({"fault": "delay", "delay_ms": 1500}));
    for answer in get_at_once(&agent.url("/secrets/storm"), 200).await {
        assert_eq!(answer, (200, "storm-value".to_owned()));
    }
    assert_eq!(f.proxy.parameter_gets(&name), 1);
}

#[tokio::test]
async fn a_cached_parameter_is_served_stale_while_ssm_fails() {
    let f = Fixture::new();
    let name = parameter_name("stale");
    f.world.put_parameter(REGION, &name, "kept", "String");
    let agent = Agent::start(
        &config(&f)
            .resource("p", &parameter_arn(REGION, &name))
            .cache(|c| c.ttl("1s").max_stale("1h")),
        &[],
    );
    let url = agent.url("/secrets/p");
    assert_eq!(get(&url).await.text(), "kept");
    f.proxy
        .set_fault(json!({"fault": "status", "status": 503, "only_action": "GetParameter"}));
    assert!(values_older_than(&agent, &["p"], Duration::from_secs(1)).await);
    let r = get(&url).await;
    assert_eq!((r.status, r.text().as_str()), (200, "kept"));
    assert_eq!(r.header("secret-agent-cache"), Some("stale"));
    assert!(f.proxy.parameter_gets(&name) >= 2);
}

#[tokio::test]
async fn throttling_is_transient_and_a_kms_failure_a_refusal_named_in_the_log() {
    let f = Fixture::new();
    let name = parameter_name("kms");
    f.world
        .put_parameter(REGION, &name, "kms-guarded-value", "SecureString");
    let agent = Agent::start(
        &config(&f)
            .resource("p", &parameter_arn(REGION, &name))
            .cache(|c| c.ttl("1s").max_stale("1h")),
        &[],
    );
    let url = agent.url("/secrets/p");
    assert_eq!(get(&url).await.text(), "kms-guarded-value");
    f.proxy.set_fault(json!({"fault": "status", "status": 400,
        "error_type": "ThrottlingException", "only_action": "GetParameter"}));
    assert!(values_older_than(&agent, &["p"], Duration::from_secs(1)).await);
    let r = get(&url).await;
    assert_eq!(
        (r.status, r.header("secret-agent-cache")),
        (200, Some("stale"))
    );

    // SSM cannot use the parameter's key: refused at once, stale or not.
    f.proxy.set_fault(json!({"fault": "status", "status": 400,
        "error_type": "KMS.DisabledException", "only_action": "GetParameter"}));
    assert!(
        eventually(Duration::from_secs(10), async || get(&url).await.status
            == 502)
        .await,
        "still served after a KMS refusal"
    );
    get(&url).await.assert_error(502, "upstream_access_denied");
    assert!(
        agent.wait_for_log("KMS.DisabledException", Duration::from_secs(5)),
        "{}",
        agent.log()
    );
    assert!(!agent.log().contains("kms-guarded-value"));
}

/// Seconds since the epoch as `YYYY-MM-DDTHH:MM:SS`.
fn second_of(epoch_seconds: f64) -> String {
    let time = UNIX_EPOCH + Duration::from_secs_f64(epoch_seconds);
    humantime::format_rfc3339_seconds(time).to_string()[..19].to_owned()
}

#[tokio::test]
async fn the_extension_route_answers_in_get_parameter_shape() {
    let f = Fixture::new();
    let name = parameter_name("extension");
    let value = r#"{"user":"ext","password":"ext-secret"}"#;
    f.world.put_parameter(REGION, &name, value, "SecureString");
    f.world.put_parameter(REGION, &name, value, "SecureString");
    let arn = parameter_arn(REGION, &name);
    let agent = Agent::start(
        &config(&f).resource("ext", &arn).token_env("ALL", &["*"]),
        &[("ALL", TOKEN)],
    );
    let read =
        async |query: &str| get_with(&extension_url(&agent, query), &[(TOKEN_HEADER, TOKEN)]).await;

    // What boto3 gets from moto for the same call.
    let expected = f.world.call(
        "ssm",
        REGION,
        "get_parameter",
        json!({"Name": name, "WithDecryption": true}),
    )["Parameter"]
        .clone();
    let r = read(&format!("name={}&withDecryption=true", encode(&name))).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.header("secret-agent-cache"), Some("miss"));
    let body = r.json();
    let p = &body["Parameter"];
    for field in ["ARN", "DataType", "Name", "Type", "Value", "Version"] {
        assert_eq!(p[field], expected[field], "{field}: {body}");
    }
    assert_eq!(p["ARN"], arn.as_str());
    assert_eq!(p["Value"], value);
    assert_eq!(p["Type"], "SecureString");
    assert_eq!(p["Version"], 2);
    // LastModifiedDate: epoch seconds, a number, as AWS's JSON writes it;
    // boto3's is a date in the harness's time zone.
    let modified = p["LastModifiedDate"].as_f64().expect("a number");
    let now = std::time::SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs_f64();
    assert!((now - 300.0..=now).contains(&modified), "{modified}");
    let boto = expected["LastModifiedDate"].as_str().unwrap();
    if boto.ends_with("+00:00") {
        assert_eq!(second_of(modified), boto[..19], "{boto}");
    }
    // Selector and SourceResult: null when AWS leaves them out (moto does,
    // for the latest version), as the extension writes them.
    assert_eq!(p["Selector"], Value::Null);
    assert_eq!(p["SourceResult"], Value::Null);
    assert!(p.as_object().unwrap().contains_key("Selector"));
    assert_eq!(body["ResultMetadata"], json!({}));
    let fields: Vec<&String> = p.as_object().unwrap().keys().collect();
    assert_eq!(
        fields,
        [
            "ARN",
            "DataType",
            "LastModifiedDate",
            "Name",
            "Selector",
            "SourceResult",
            "Type",
            "Value",
            "Version"
        ]
    );
    assert!(
        r.text().starts_with(r#"{"Parameter":{"ARN":"#),
        "{}",
        r.text()
    );

    // By ARN and by resource name: the same parameter, from the cache.
    for by in [arn.as_str(), "ext"] {
        let r = read(&format!("name={}&withDecryption=true", encode(by))).await;
        assert_eq!(r.json()["Parameter"]["Value"], value, "{by}");
        assert_eq!(r.header("secret-agent-cache"), Some("hit"), "{by}");
    }
    // A version: that version.
    let r = read(&format!(
        "name={}&withDecryption=true&version=1",
        encode(&name)
    ))
    .await;
    assert_eq!(r.json()["Parameter"]["Version"], 1, "{}", r.text());

    // Without withDecryption=true: the encrypted form, as GetParameter
    // answers it without decryption, never the decrypted value.
    let encrypted = f
        .world
        .call("ssm", REGION, "get_parameter", json!({"Name": name}))["Parameter"]["Value"]
        .clone();
    assert_ne!(encrypted, value);
    for query in [
        format!("name={}", encode(&name)),
        format!("name={}&withDecryption=false", encode(&name)),
    ] {
        let r = read(&query).await;
        assert_eq!(r.status, 200, "{}", r.text());
        assert_eq!(r.json()["Parameter"]["Value"], encrypted, "{query}");
    }
    let undecrypted: Vec<Option<bool>> = f
        .proxy
        .calls()
        .into_iter()
        .filter(|c| c.action == "GetParameter")
        .map(|c| c.with_decryption)
        .collect();
    // Latest decrypted, version 1 decrypted, latest encrypted (cached after).
    assert_eq!(undecrypted, [Some(true), Some(true), Some(false)]);

    // Errors: a missing version in SSM's terms; bad queries as plain text.
    let r = read(&format!(
        "name={}&withDecryption=true&version=7",
        encode(&name)
    ))
    .await;
    assert_eq!(r.status, 400, "{}", r.text());
    assert_eq!(r.json()["__type"], "ParameterVersionNotFound");
    let r = read("withDecryption=true").await;
    assert_eq!(
        (r.status, r.text().as_str()),
        (400, "missing parameter name")
    );
    let r = read(&format!("name={}&secretId=x", encode(&name))).await;
    assert_eq!(
        (r.status, r.text().as_str()),
        (400, "unknown parameter: secretId")
    );
    assert!(!agent.log().contains("ext-secret"), "{}", agent.log());
}

#[tokio::test]
async fn the_extension_route_checks_tokens_and_serves_only_configured_parameters() {
    let f = Fixture::new();
    let name = parameter_name("scoped");
    let unlisted = parameter_name("unlisted");
    f.world
        .put_parameter(REGION, &name, "scoped-value", "SecureString");
    f.world
        .put_parameter(REGION, &unlisted, "unlisted-value", "SecureString");
    let secret = f.secret("not-a-parameter", "secret-value");
    let agent = Agent::start(
        &config(&f)
            .resource("scoped", &parameter_arn(REGION, &name))
            .resource("a-secret", &secret.arn)
            .resource("other", &parameter_arn(REGION, &parameter_name("other")))
            .token_env("ALL", &["*"])
            .token_env("NARROW", &["other"]),
        &[("ALL", TOKEN), ("NARROW", NARROW_TOKEN)],
    );
    let query = |name: &str| format!("name={}&withDecryption=true", encode(name));
    let read = async |name: &str, headers: &[(&str, &str)]| {
        get_with(&extension_url(&agent, &query(name)), headers).await
    };

    // Tokens as on the other compatible routes: 403 Bad Token, whether
    // missing, unknown, or not allowed this parameter.
    for headers in [
        &[][..],
        &[(TOKEN_HEADER, "not-a-token")][..],
        &[(TOKEN_HEADER, NARROW_TOKEN)][..],
        &[("Authorization", &*format!("Bearer {NARROW_TOKEN}"))][..],
    ] {
        let r = read(&name, headers).await;
        assert_eq!(
            (r.status, r.text().as_str()),
            (403, "Bad Token"),
            "{headers:?}"
        );
    }
    let r = read(&name, &[("Authorization", &format!("Bearer {TOKEN}"))]).await;
    assert_eq!(r.json()["Parameter"]["Value"], "scoped-value");
    // Not GET: refused after the token, as the other compatible routes.
    let r = client()
        .post(extension_url(&agent, &query(&name)))
        .header(TOKEN_HEADER, TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 405);

    // Outside the configured parameters: AWS's ParameterNotFound answer,
    // never asked of AWS. A secret is not a parameter either.
    let unlisted_arn = parameter_arn(REGION, &unlisted);
    for outside in [
        unlisted.as_str(),
        unlisted_arn.as_str(),
        "a-secret",
        secret.arn.as_str(),
        "scoped-typo",
    ] {
        let r = read(outside, &[(TOKEN_HEADER, TOKEN)]).await;
        assert_eq!(r.status, 400, "{outside}: {}", r.text());
        assert_eq!(r.json()["__type"], "ParameterNotFound", "{outside}");
    }
    assert_eq!(f.proxy.parameter_gets(&unlisted), 0);
    assert_eq!(f.proxy.gets(&secret.name), 0);
    // And the Secrets Manager agent's routes do not serve parameters.
    let r = get_with(
        &agent.url(&format!(
            "/secretsmanager/get?secretId={}",
            encode("scoped")
        )),
        &[(TOKEN_HEADER, TOKEN)],
    )
    .await;
    assert_eq!(r.status, 400, "{}", r.text());
    assert_eq!(r.json()["__type"], "ResourceNotFoundException");
    assert!(!agent.log().contains("unlisted-value"));
}
