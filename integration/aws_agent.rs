//! A drop-in for the AWS Secrets Manager Agent: its routes answer as it
//! does (statuses, bodies, headers), field by field.

use serde_json::json;

use crate::support::*;

const TOKEN: &str = "aws-agent-token-7";

/// The AWS agent's body for a secret AWS does not know.
const NOT_FOUND: &str = r#"{"__type":"ResourceNotFoundException", "message":"Secrets Manager can't find the specified secret."}"#;

pub fn url_encode(text: &str) -> String {
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

    // Without an account the YAML says so, and so does standard error.
    let (code, yaml, err) = run_cli(&["convert-aws-agent-config", toml]);
    assert_eq!(code, 0);
    assert!(
        yaml.contains("ACCOUNT_ID") && err.contains("--account"),
        "{err}"
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
