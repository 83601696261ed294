//! A drop-in for the AWS Secrets Manager Agent: its routes answer as it
//! does (statuses, bodies, headers), field by field.

use std::time::Duration;

use serde_json::json;

use crate::support::*;

const TOKEN: &str = "aws-agent-token-7";

/// The AWS agent's body for a secret AWS does not know.
const NOT_FOUND: &str = r#"{"__type":"ResourceNotFoundException", "message":"Secrets Manager can't find the specified secret."}"#;

pub(crate) fn url_encode(text: &str) -> String {
    text.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

async fn with_token(agent: &Agent, path: &str) -> Reply {
    get_with(
        &agent.url(path),
        &[("X-Aws-Parameters-Secrets-Token", TOKEN)],
    )
    .await
}

/// Status and body, and no `Content-Type`, as the AWS agent answers.
fn assert_text(r: &Reply, status: u16, body: &str) {
    assert_eq!((r.status, r.text().as_str()), (status, body));
    assert_eq!(r.header("content-type"), None, "{body}");
}

#[tokio::test]
async fn reads_answer_in_the_get_secret_value_shape() {
    let f = Fixture::new();
    let Secret { name, arn } = f.secret("compat", r#"{"user":"old"}"#);
    let current_version = f.world.put_secret_value(REGION, &arn, r#"{"user":"new"}"#);
    let config = f
        .config()
        .resource("MyTest", &arn)
        .token_env("COMPAT_TOKEN", &["*"]);
    let agent = Agent::start(&config, &[("COMPAT_TOKEN", TOKEN)]);

    for path in [
        "/secretsmanager/get?secretId=MyTest".to_owned(),
        format!("/secretsmanager/get?secretId={}", url_encode(&arn)),
        "/v1/MyTest".to_owned(),
    ] {
        let r = with_token(&agent, &path).await;
        assert_eq!(r.status, 200, "{path}: {}", r.text());
        assert_eq!(r.header("content-type"), None, "{path}");
        let body = r.json();
        let keys: Vec<&str> = body
            .as_object()
            .unwrap()
            .keys()
            .map(|k| k.as_str())
            .collect();
        // serde_json sorts keys; the AWS agent's set is these seven, with
        // SecretBinary left out for a string secret.
        assert_eq!(
            keys,
            [
                "ARN",
                "CreatedDate",
                "Name",
                "SecretString",
                "VersionId",
                "VersionStages"
            ]
        );
        assert_eq!(body["SecretString"], r#"{"user":"new"}"#, "{path}");
        assert_eq!(body["ARN"], arn.as_str());
        assert_eq!(body["Name"], name.as_str());
        assert_eq!(body["VersionId"], current_version.as_str());
        assert_eq!(body["VersionStages"], json!(["AWSCURRENT"]));
        // A string of epoch seconds, as the AWS agent writes it.
        let created = body["CreatedDate"]
            .as_str()
            .expect("CreatedDate is a string");
        assert!(created.parse::<f64>().unwrap() > 1.5e9, "{created}");
        assert!(r.text().contains(r#""CreatedDate":""#), "{}", r.text());
    }
    let r = with_token(
        &agent,
        "/secretsmanager/get?secretId=MyTest&versionStage=AWSPREVIOUS",
    )
    .await;
    assert_eq!(r.json()["SecretString"], r#"{"user":"old"}"#);
    assert_eq!(r.json()["VersionStages"], json!(["AWSPREVIOUS"]));
    let r = with_token(&agent, &format!("/v1/MyTest?versionId={current_version}")).await;
    assert_eq!(r.json()["SecretString"], r#"{"user":"new"}"#);
    // Both, sent to AWS together as the AWS agent does: the id if it
    // carries the stage, else AWS's InvalidRequestException (400 from AWS).
    let r = with_token(
        &agent,
        &format!("/v1/MyTest?versionId={current_version}&versionStage=AWSCURRENT"),
    )
    .await;
    assert_eq!(r.json()["VersionId"], current_version.as_str());
    let r = with_token(
        &agent,
        &format!("/v1/MyTest?versionId={current_version}&versionStage=AWSPREVIOUS"),
    )
    .await;
    assert_eq!(r.status, 400, "{}", r.text());
    assert_eq!(r.json()["__type"], "InvalidRequestException");
    assert_eq!(
        r.json()["message"],
        "You provided a VersionStage that is not associated to the provided VersionId."
    );

    // refreshNow: a cached value, then the new one at once.
    f.world
        .put_secret_value(REGION, &arn, r#"{"user":"newer"}"#);
    let r = with_token(&agent, "/secretsmanager/get?secretId=MyTest").await;
    assert_eq!(r.json()["SecretString"], r#"{"user":"new"}"#, "cached");
    for refresh in ["true", "1", "TRUE"] {
        let r = with_token(
            &agent,
            &format!("/secretsmanager/get?secretId=MyTest&refreshNow={refresh}"),
        )
        .await;
        assert_eq!(r.json()["SecretString"], r#"{"user":"newer"}"#, "{refresh}");
    }
    let r = with_token(&agent, "/v1/MyTest?refreshNow=false").await;
    assert_eq!(r.status, 200);
}

#[tokio::test]
async fn own_errors_are_the_aws_agents_plain_text() {
    let f = Fixture::new();
    let secret = f.secret("compat-errors", "v");
    let config = f
        .config()
        .resource("MyTest", &secret.arn)
        .token_env("COMPAT_TOKEN", &["*"]);
    let agent = Agent::start(&config, &[("COMPAT_TOKEN", TOKEN)]);

    // /ping: no token needed, GET only, as there.
    let r = get(&agent.url("/ping")).await;
    assert_text(&r, 200, "healthy");
    let r = get_with(&agent.url("/ping"), &[("X-Forwarded-For", "10.0.0.1")]).await;
    assert_text(&r, 200, "healthy");
    let r = client().post(agent.url("/ping")).send().await.unwrap();
    assert_eq!(r.status().as_u16(), 405);
    assert_eq!(r.text().await.unwrap(), "Not allowed");

    // The token: missing or wrong, on either route and any query, 403.
    for path in [
        "/secretsmanager/get?secretId=MyTest",
        "/secretsmanager/get?bogus=1",
        "/v1/MyTest",
        "/v1/unknown",
    ] {
        assert_text(&get(&agent.url(path)).await, 403, "Bad Token");
        for header in ["X-Aws-Parameters-Secrets-Token", "X-Vault-Token"] {
            let r = get_with(&agent.url(path), &[(header, "wrong-token")]).await;
            assert_text(&r, 403, "Bad Token");
        }
    }
    // Both of the AWS agent's default token headers work.
    let r = get_with(
        &agent.url("/secretsmanager/get?secretId=MyTest"),
        &[("X-Vault-Token", TOKEN)],
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text());

    for (path, status, body) in [
        ("/secretsmanager/get", 400, "missing parameter secretId"),
        (
            "/secretsmanager/get?secretId=",
            400,
            "missing parameter secretId",
        ),
        (
            "/secretsmanager/get?secretId=MyTest&abc=123",
            400,
            "unknown parameter: abc",
        ),
        (
            "/secretsmanager/get?secretId=MyTest&refreshNow=yes",
            400,
            "invalid refreshNow value",
        ),
        (
            "/v1/MyTest?secretId=MyTest",
            400,
            "unknown parameter: secretId",
        ),
        ("/v1/", 400, "missing secret ID"),
    ] {
        assert_text(&with_token(&agent, path).await, status, body);
    }
    // The SSRF guard, and methods, as the AWS agent answers them.
    let r = get_with(
        &agent.url("/secretsmanager/get?secretId=MyTest"),
        &[
            ("X-Aws-Parameters-Secrets-Token", TOKEN),
            ("X-Forwarded-For", "10.0.0.1"),
        ],
    )
    .await;
    assert_text(&r, 400, "Forwarded");
    let post = |headers: &[(&str, &str)]| {
        let mut request = client().post(agent.url("/secretsmanager/get?secretId=MyTest"));
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        request.send()
    };
    let r = post(&[("X-Aws-Parameters-Secrets-Token", TOKEN)])
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 405);
    assert_eq!(r.text().await.unwrap(), "Not allowed");
    // The token before the method, as there.
    let r = post(&[]).await.unwrap();
    assert_eq!(r.status().as_u16(), 403);

    // Our own routes keep their JSON and the 401/403 split.
    get(&agent.url("/secrets/MyTest"))
        .await
        .assert_error(401, "unauthorized");
}

#[tokio::test]
async fn aws_errors_pass_through_in_aws_shape() {
    let f = Fixture::new();
    let secret = f.secret("compat-aws", "v");
    let unlisted = f.secret("compat-unlisted", "never-served");
    let missing = unique("compat-missing");
    let missing_arn = format!("arn:aws:secretsmanager:{REGION}:123456789012:secret:{missing}");
    let config = f
        .config()
        .resource("MyTest", &secret.arn)
        .resource("Missing", &missing_arn)
        .token_env("COMPAT_TOKEN", &["*"]);
    let agent = Agent::start(&config, &[("COMPAT_TOKEN", TOKEN)]);

    // A configured secret AWS does not have: AWS's status and body.
    let r = with_token(&agent, "/secretsmanager/get?secretId=Missing").await;
    assert_text(&r, 400, NOT_FOUND);
    assert_eq!(f.proxy.gets(&missing), 1, "asked AWS");
    let r = with_token(
        &agent,
        "/v1/MyTest?versionId=no-such-version-id-000000000000",
    )
    .await;
    assert_eq!(r.status, 400, "{}", r.text());
    assert!(
        r.text()
            .starts_with(r#"{"__type":"ResourceNotFoundException", "message":""#),
        "{}",
        r.text()
    );
    let r = with_token(&agent, "/v1/MyTest?versionStage=NOSUCHSTAGE").await;
    assert_eq!(r.status, 400, "{}", r.text());
    assert!(
        r.text().contains("ResourceNotFoundException"),
        "{}",
        r.text()
    );

    // Not configured, by name or by ARN: the same answer, and AWS is not asked.
    for path in [
        format!("/secretsmanager/get?secretId={}", url_encode(&unlisted.arn)),
        format!("/secretsmanager/get?secretId={}", unlisted.name),
        format!("/v1/{}", unlisted.name),
    ] {
        assert_text(&with_token(&agent, &path).await, 400, NOT_FOUND);
    }
    assert_eq!(
        f.proxy.gets(&unlisted.name),
        0,
        "an unlisted secret was fetched"
    );
}

#[tokio::test]
async fn credential_failures_are_internal_failure() {
    let f = Fixture::new();
    let secret = f.secret("compat-nocreds", "v");
    // No keys anywhere: the credential chain finds nothing.
    let config = AgentConfig::new()
        .endpoint(&f.proxy.url)
        .resource("MyTest", &secret.arn)
        .token_env("COMPAT_TOKEN", &["*"]);
    let agent = Agent::start(&config, &[("COMPAT_TOKEN", TOKEN)]);
    let r = with_token(&agent, "/secretsmanager/get?secretId=MyTest").await;
    assert_text(&r, 500, r#"{"__type":"InternalFailure"}"#);
}

#[tokio::test]
async fn token_headers_are_configurable() {
    let world = World::shared();
    let secret = world.secret("compat-headers", "header-value");
    let config = world
        .config()
        .resource("MyTest", &secret.arn)
        .token_env("COMPAT_TOKEN", &["*"])
        .token_headers(&["X-My-Token"]);
    let agent = Agent::start(&config, &[("COMPAT_TOKEN", TOKEN)]);
    let path = agent.url("/v1/MyTest");
    let r = get_with(&path, &[("X-My-Token", TOKEN)]).await;
    assert_eq!(r.json()["SecretString"], "header-value");
    // The defaults are replaced, not added to; Bearer always works.
    let r = get_with(&path, &[("X-Aws-Parameters-Secrets-Token", TOKEN)]).await;
    assert_text(&r, 403, "Bad Token");
    let r = get_with(&agent.url("/secrets/MyTest"), &[("X-My-Token", TOKEN)]).await;
    assert_eq!(r.text(), "header-value");
    let r = get_with(
        &agent.url("/secrets/MyTest"),
        &[("Authorization", &format!("Bearer {TOKEN}"))],
    )
    .await;
    assert_eq!(r.text(), "header-value");
}

/// Their TOML, converted, is a config `--check` accepts, with their settings.
#[test]
fn convert_aws_agent_config_prints_equivalent_yaml() {
    let dir = tempfile::tempdir().unwrap();
    let toml = dir.path().join("config.toml");
    std::fs::write(
        &toml,
        "log_level = \"WARN\"\nhttp_port = \"2775\"\nregion = \"us-east-1\"\nttl_seconds = \"120\"\ncache_size = \"100\"\nssrf_headers = [\"X-Aws-Parameters-Secrets-Token\"]\nssrf_env_variables = [\"MY_TOKEN\"]\npath_prefix = \"/v1/\"\nmax_conn = \"50\"\n",
    )
    .unwrap();
    let toml = toml.to_str().unwrap();
    let (code, yaml, err) = run_cli(&[
        "convert-aws-agent-config",
        toml,
        "--account",
        "123456789012",
    ]);
    assert_eq!(code, 0, "{err}");
    assert!(err.is_empty(), "no notes expected: {err}");
    let path = dir.path().join("config.yaml");
    std::fs::write(&path, &yaml).unwrap();
    let (code, summary, err) = run_cli_with_env(
        &["--check", "-c", path.to_str().unwrap()],
        &[("MY_TOKEN", "converted-token")],
    );
    assert_eq!(code, 0, "{err}\n{yaml}");
    for expected in [
        "tcp 127.0.0.1:2775",
        "max-connections 50",
        "resources (1): *",
        "auth: 1 token(s): token-env MY_TOKEN",
    ] {
        assert!(summary.contains(expected), "no `{expected}` in:\n{summary}");
    }
    assert!(
        yaml.contains("ttl: 120s") && yaml.contains("level: warn"),
        "{yaml}"
    );

    // Without an account the ARN names the caller's own, learnt at start.
    let (code, yaml, err) = run_cli(&["convert-aws-agent-config", toml]);
    assert_eq!(code, 0);
    assert!(
        yaml.contains("arn:aws:secretsmanager:us-east-1:caller:secret:*") && err.is_empty(),
        "{yaml}\n{err}"
    );
    // A key the AWS agent does not know is refused, by name.
    std::fs::write(dir.path().join("bad.toml"), "http_prot = 1\n").unwrap();
    let bad = dir.path().join("bad.toml");
    let (code, _, err) = run_cli(&["convert-aws-agent-config", bad.to_str().unwrap()]);
    assert_eq!(code, 2);
    assert!(err.contains("http_prot"), "{err}");
}

/// `AWS_TOKEN=file:///var/run/awssmatoken`, as the AWS agent's install
/// script sets it: the token is read from the file.
#[tokio::test]
async fn a_token_variable_may_name_a_file() {
    let world = World::shared();
    let secret = world.secret("compat-file-token", "file-token-value");
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("awssmatoken");
    std::fs::write(&file, format!("{TOKEN}\n")).unwrap();
    let config = world
        .config()
        .resource("MyTest", &secret.arn)
        .token_env("AWS_TOKEN", &["*"]);
    let agent = Agent::start(
        &config,
        &[("AWS_TOKEN", &format!("file://{}", file.display()))],
    );
    let r = with_token(&agent, "/secretsmanager/get?secretId=MyTest").await;
    assert_eq!(r.json()["SecretString"], "file-token-value");
}

/// The AWS agent's client snippets (`examples/aws-agent/`: Python requests
/// and curl, with the token header) read a secret from this agent unchanged.
#[tokio::test]
async fn the_aws_agents_client_snippets_run_unchanged() {
    let world = World::shared();
    let secret = world.secret("compat-snippet", r#"{"password":"snippet-pw"}"#);
    let dir = tempfile::tempdir().unwrap();
    let token_file = dir.path().join("awssmatoken");
    std::fs::write(&token_file, format!("{TOKEN}\n")).unwrap();
    let config = world
        .config()
        .resource("MyTest", &secret.arn)
        .token_file(&token_file, &["*"]);
    let agent = Agent::start(&config, &[]);
    let url = agent.url("");
    let url = url.trim_end_matches('/');
    // requests comes with moto into the harness's virtualenv.
    let python = root().join("integration/.venv/bin/python");
    let examples = root().join("examples/aws-agent");
    for (program, script) in [
        (python.to_str().unwrap(), "get_secret.py"),
        ("bash", "get_secret.sh"),
    ] {
        for id in ["MyTest", secret.arn.as_str()] {
            let out = std::process::Command::new(program)
                .arg(examples.join(script))
                .arg(id)
                .env("AWS_AGENT_URL", url)
                .env("AWS_AGENT_TOKEN_FILE", &token_file)
                .output()
                .unwrap();
            let shown = format!("{script} {id}");
            assert!(
                out.status.success(),
                "{shown}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            let body: serde_json::Value =
                serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("{shown}: {e}"));
            assert_eq!(
                body["SecretString"], r#"{"password":"snippet-pw"}"#,
                "{shown}"
            );
            assert_eq!(body["ARN"], secret.arn.as_str(), "{shown}");
        }
        // A wrong token: the snippet reports the AWS agent's answer.
        let wrong = dir.path().join("wrong");
        std::fs::write(&wrong, "wrong-token").unwrap();
        let out = std::process::Command::new(program)
            .arg(examples.join(script))
            .arg("MyTest")
            .env("AWS_AGENT_URL", url)
            .env("AWS_AGENT_TOKEN_FILE", &wrong)
            .output()
            .unwrap();
        assert!(!out.status.success(), "{script}");
        let all = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(all.contains("Bad Token"), "{script}: {all}");
    }
}

/// The AWS agent's harness: its TOML on a free port, the token in
/// `AWS_TOKEN`, AWS reached through `AWS_ENDPOINT_URL` (here the proxy).
fn aws_agent_env<'a>(proxy: &'a str, extra: &[(&'a str, &'a str)]) -> Vec<(&'a str, &'a str)> {
    let mut env = vec![
        ("AWS_ENDPOINT_URL", proxy),
        ("AWS_REGION", REGION),
        ("AWS_ACCESS_KEY_ID", "AKIDAWSAGENTHARNESS"),
        ("AWS_SECRET_ACCESS_KEY", "aws-agent-harness-secret"),
        ("AWS_TOKEN", TOKEN),
    ];
    env.extend_from_slice(extra);
    env
}

fn aws_agent_toml(dir: &tempfile::TempDir, port: u16, ttl_seconds: u32) -> String {
    let path = dir.path().join("test_config.toml");
    std::fs::write(
        &path,
        format!(
            "http_port = {port}\nlog_level = \"info\"\nttl_seconds = {ttl_seconds}\ncache_size = 100\nvalidate_credentials = true\n"
        ),
    )
    .unwrap();
    path.display().to_string()
}

#[tokio::test]
async fn starts_from_the_aws_agents_toml_as_its_harness_does() {
    let f = Fixture::new();
    let before = f.secret("toml-start", r#"{"username":"testuser"}"#);
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let toml = aws_agent_toml(&dir, port, 5);
    let (agent, first_line) =
        Agent::try_start_with_args(&["--config", &toml], &aws_agent_env(&f.proxy.url, &[]), dir)
            .unwrap_or_else(|log| panic!("{log}"));
    // The first line of standard output, as the AWS agent's harness reads it.
    assert!(
        first_line.contains(&format!("listening on http://127.0.0.1:{port}")),
        "{first_line}"
    );
    // The account of "any secret" came from STS, once.
    let identity_calls = f
        .proxy
        .calls()
        .iter()
        .filter(|c| c.action == "GetCallerIdentity")
        .count();
    assert_eq!(identity_calls, 1);

    // Any secret of the account, by name or ARN, also one created after start.
    let after = f.secret("toml-start-late", "plain text");
    for (id, value) in [
        (before.name.clone(), r#"{"username":"testuser"}"#),
        (url_encode(&before.arn), r#"{"username":"testuser"}"#),
        (after.name.clone(), "plain text"),
    ] {
        let r = with_token(&agent, &format!("/secretsmanager/get?secretId={id}")).await;
        assert_eq!(r.status, 200, "{id}: {}", r.text());
        assert_eq!(r.json()["SecretString"], value);
    }
    let r = with_token(&agent, &format!("/v1/{}", after.name)).await;
    assert_eq!(r.json()["Name"], after.name.as_str());
    // A token is still required, with the AWS agent's answer.
    let r = get(&agent.url(&format!("/v1/{}", after.name))).await;
    assert_text(&r, 403, "Bad Token");
    // An ARN of another account is outside "any secret": never fetched.
    let foreign = before.arn.replace(":123456789012:", ":999999999999:");
    assert_ne!(foreign, before.arn);
    let r = with_token(
        &agent,
        &format!("/secretsmanager/get?secretId={}", url_encode(&foreign)),
    )
    .await;
    assert_eq!(r.status, 400, "{}", r.text());
    assert_eq!(r.json()["__type"], "ResourceNotFoundException");
    assert!(
        !f.proxy.calls().iter().any(|c| c
            .secret_id
            .as_deref()
            .is_some_and(|s| s.contains("999999999999"))),
        "a foreign ARN was fetched"
    );

    // SIGHUP reads the TOML again (here: a new ttl_seconds), in memory.
    aws_agent_toml(&agent.dir, port, 60);
    agent.signal("HUP");
    assert!(
        agent.wait_for_log("reloaded", Duration::from_secs(10)),
        "{}",
        agent.log()
    );
    assert!(!agent.log().contains("reload refused"), "{}", agent.log());
}

#[tokio::test]
async fn the_account_may_come_from_aws_account_id_and_a_bad_toml_is_refused() {
    let f = Fixture::new();
    let secret = f.secret("toml-account", "v");
    let dir = tempfile::tempdir().unwrap();
    let toml = aws_agent_toml(&dir, free_port(), 5);
    let (agent, _) = Agent::try_start_with_args(
        &["--config", &toml],
        &aws_agent_env(&f.proxy.url, &[("AWS_ACCOUNT_ID", "123456789012")]),
        dir,
    )
    .unwrap_or_else(|log| panic!("{log}"));
    let r = with_token(&agent, &format!("/v1/{}", secret.name)).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert!(
        !f.proxy
            .calls()
            .iter()
            .any(|c| c.action == "GetCallerIdentity"),
        "STS was asked although AWS_ACCOUNT_ID is set"
    );

    // A TOML the AWS agent would refuse, an unset token variable, a bad
    // account id: one clear line each and exit code 2, before listening.
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("bad.toml");
    std::fs::write(&bad, "http_port = 80\n").unwrap();
    let good = dir.path().join("good.toml");
    std::fs::write(&good, "region = \"us-west-1\"\n").unwrap();
    let (bad, good) = (bad.display().to_string(), good.display().to_string());
    let base = aws_agent_env(&f.proxy.url, &[("AWS_ACCOUNT_ID", "123456789012")]);
    for (file, unset, extra, says) in [
        (
            &bad,
            "",
            ("AWS_REGION", REGION),
            "http_port must be a whole number from 1024 to 65535",
        ),
        (
            &good,
            "AWS_TOKEN",
            ("AWS_REGION", REGION),
            "none of the environment variables AWS_TOKEN, AWS_SESSION_TOKEN, AWS_CONTAINER_AUTHORIZATION_TOKEN is set",
        ),
        (
            &good,
            "",
            ("AWS_ACCOUNT_ID", "12"),
            "AWS_ACCOUNT_ID `12` is not a 12-digit AWS account id",
        ),
    ] {
        let mut env: Vec<(&str, &str)> = base.clone();
        env.retain(|(name, _)| *name != unset && *name != extra.0);
        env.push(extra);
        if !unset.is_empty() {
            env.push((unset, ""));
        }
        let (code, stdout, stderr) = run_cli_with_env(&["--config", file, "--check"], &env);
        assert_eq!(code, 2, "{file}: {stderr}");
        assert!(stdout.is_empty(), "{stdout}");
        assert!(stderr.contains(says), "{says}: {stderr}");
        assert_eq!(stderr.lines().count(), 1, "{stderr}");
    }
    // With AWS_SESSION_TOKEN only (as in Lambda), that is the token.
    let (code, stdout, stderr) = run_cli_with_env(
        &["--config", &good, "--check"],
        &[
            ("AWS_REGION", REGION),
            ("AWS_ACCOUNT_ID", "123456789012"),
            ("AWS_SESSION_TOKEN", "lambda-session-token"),
        ],
    );
    assert_eq!(code, 0, "{stderr}");
    assert!(stdout.contains("token-env AWS_SESSION_TOKEN"), "{stdout}");
    assert!(!stdout.contains("lambda-session-token"), "{stdout}");
}

#[tokio::test]
async fn lambda_mode_serves_and_fetches_nothing_before_start_serving() {
    let f = Fixture::new();
    let secret = f.secret("lambda-mode", "in-lambda");
    let dir = tempfile::tempdir().unwrap();
    let toml = aws_agent_toml(&dir, free_port(), 300);
    let (agent, _) = Agent::try_start_with_args(
        &["-l", "--config", &toml],
        &aws_agent_env(&f.proxy.url, &[("AWS_ACCOUNT_ID", "123456789012")]),
        dir,
    )
    .unwrap_or_else(|log| panic!("{log}"));
    let path = format!("/secretsmanager/get?secretId={}", secret.name);

    // Up (the wrapper's /ping loop), but nothing served before the invoke.
    assert_text(&get(&agent.url("/ping")).await, 200, "healthy");
    let r = with_token(&agent, &path).await;
    assert_eq!(r.status, 503, "{}", r.text());
    assert!(r.text().contains("/start_serving"), "{}", r.text());
    let r = get(&agent.url("/readyz")).await;
    assert_eq!(r.status, 503);
    assert!(r.text().contains("start_serving"), "{}", r.text());
    assert_eq!(f.proxy.gets(&secret.name), 0);

    // The wrapper's call: no token, GET; then served.
    let r = get(&agent.url("/start_serving")).await;
    assert_eq!((r.status, r.text().as_str()), (200, "serving"));
    let r = with_token(&agent, &path).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["SecretString"], "in-lambda");
    // Again on the next invoke: changes nothing.
    let r = get(&agent.url("/start_serving")).await;
    assert_eq!(r.status, 200);
    assert_eq!(with_token(&agent, &path).await.status, 200);
    assert_eq!(f.proxy.gets(&secret.name), 1);
}

#[tokio::test]
async fn lambda_mode_holds_the_prefetch_until_start_serving() {
    let f = Fixture::new();
    let secret = f.secret("lambda-prefetch", "v");
    let config = f
        .config()
        .resource("Held", &secret.arn)
        .cache(|c| c.prefetch());
    let dir = tempfile::tempdir().unwrap();
    let yaml = dir.path().join("config.yaml");
    std::fs::write(&yaml, config.yaml()).unwrap();
    let yaml = yaml.display().to_string();
    let (agent, first_line) = Agent::try_start_with_args(&["-l", "--config", &yaml], &[], dir)
        .unwrap_or_else(|log| panic!("{log}"));
    assert!(first_line.starts_with("secret-agent/"), "{first_line}");
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        f.proxy.gets(&secret.name) + f.proxy.batch_gets(&secret.name),
        0
    );
    assert_eq!(get(&agent.url("/secrets/Held")).await.status, 503);
    assert_eq!(get(&agent.url("/start_serving")).await.status, 200);
    assert!(
        eventually(Duration::from_secs(10), async || get(&agent.url("/readyz"))
            .await
            .status
            == 200)
        .await,
        "{}",
        agent.log()
    );
    assert_eq!(
        f.proxy.gets(&secret.name) + f.proxy.batch_gets(&secret.name),
        1
    );
    let r = get(&agent.url("/secrets/Held")).await;
    assert_eq!(
        (r.status, r.header("secret-agent-cache")),
        (200, Some("hit"))
    );
}

/// `over-limit: refuse` (the AWS agent's `max_conn`): a connection accepted
/// while `max-connections` others are open has each of its requests
/// answered 429 at once, instead of waiting; health checks get two more.
#[tokio::test]
async fn connections_over_the_limit_are_refused_with_429_when_asked() {
    use std::io::{Read, Write};

    let f = Fixture::new();
    let secret = f.secret("over-limit", "v");
    let config = f
        .config()
        .resource("MyTest", &secret.arn)
        .token_env("COMPAT_TOKEN", &["*"])
        .max_connections(3)
        .over_limit("refuse")
        .request_timeout("30s");
    let agent = Agent::start(&config, &[("COMPAT_TOKEN", TOKEN)]);
    // One request on a new connection: status line and body. The previous
    // one's connection is let go of first (the agent counts it until then).
    let request = |path: &str| {
        std::thread::sleep(Duration::from_millis(150));
        let mut stream = std::net::TcpStream::connect(agent.addr).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(5)))
            .unwrap();
        write!(
            stream,
            "GET {path} HTTP/1.1\r\nHost: x\r\nX-Aws-Parameters-Secrets-Token: {TOKEN}\r\nAuthorization: Bearer {TOKEN}\r\nConnection: close\r\n\r\n"
        )
        .unwrap();
        let mut answer = String::new();
        let _ = stream.read_to_string(&mut answer);
        answer
    };
    let status = |answer: &str| answer.split(' ').nth(1).unwrap_or_default().to_owned();
    assert_eq!(status(&request("/secrets/MyTest")), "200");

    // Two held connections (served once, so counted): a third is within
    // the limit.
    let held: Vec<_> = (0..2).map(|_| served_connection(agent.addr)).collect();
    assert_eq!(status(&request("/secrets/MyTest")), "200");

    // Four held: the fifth is over the limit, on every route; /ping and
    // /healthz may have two more.
    let more: Vec<_> = (0..2).map(|_| served_connection(agent.addr)).collect();
    let answer = request("/secretsmanager/get?secretId=MyTest");
    assert_eq!(status(&answer), "429", "{answer}");
    assert!(
        answer.ends_with("\r\n\r\nConnection limit exceeded"),
        "{answer}"
    );
    let answer = request("/secrets/MyTest");
    assert_eq!(status(&answer), "429", "{answer}");
    assert!(answer.contains("connection_limit_exceeded"), "{answer}");
    assert_eq!(status(&request("/ping")), "200");
    assert_eq!(status(&request("/healthz")), "200");
    // No upstream call was made for the refused requests.
    assert_eq!(f.proxy.gets(&secret.name), 1);

    // Once they close, served again.
    drop(held);
    drop(more);
    assert!(
        eventually(Duration::from_secs(5), async || status(&request(
            "/secrets/MyTest"
        )) == "200")
        .await,
        "served again"
    );
}

/// Installed under the AWS agent's name, the binary without `--config`
/// starts on the AWS agent's defaults, as its wrappers expect; under its own
/// name it wants its YAML.
#[test]
fn under_the_aws_agents_name_it_starts_on_its_defaults() {
    let dir = tempfile::tempdir().unwrap();
    let env = [
        ("AWS_REGION", REGION),
        ("AWS_ACCOUNT_ID", "123456789012"),
        ("AWS_TOKEN", TOKEN),
        ("HOME", dir.path().to_str().unwrap()),
    ];
    for name in ["secrets-manager-agent", "aws_secretsmanager_agent"] {
        let link = dir.path().join(name);
        std::os::unix::fs::symlink(agent_binary(), &link).unwrap();
        let out = std::process::Command::new(&link)
            .arg("--check")
            .env_clear()
            .envs(env)
            .output()
            .unwrap();
        let (stdout, stderr) = (
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr),
        );
        assert!(out.status.success(), "{name}: {stderr}");
        assert!(stdout.contains("tcp 127.0.0.1:2773 http"), "{stdout}");
        assert!(
            stdout.contains("(the AWS agent's defaults): OK"),
            "{stdout}"
        );
        assert!(!stdout.contains(TOKEN), "{stdout}");
    }
    let out = std::process::Command::new(agent_binary())
        .arg("--check")
        .env_clear()
        .envs(env)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("/etc/secret-agent/config.yaml"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
