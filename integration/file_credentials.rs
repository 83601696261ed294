//! `credentials-file` (the AWS agent's `credentials_file_path`): keys from
//! one file that a rotation system rewrites, against moto enforcing IAM
//! (signatures checked), the recording proxy telling which key signed.
//! Also the `caller` account and the converter's output run as printed.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::time::Duration;

use crate::support::*;

const TOKEN: &str = "file-credentials-token-3";

fn write_keys(path: &Path, id: &str, secret: &str, mode: u32) {
    // Written beside it, then renamed onto it, as rotation tools do; the
    // mode is set before the rename.
    let next = path.with_extension("next");
    std::fs::write(
        &next,
        format!("[default]\naws_access_key_id = {id}\naws_secret_access_key = {secret}\n"),
    )
    .unwrap();
    std::fs::set_permissions(&next, std::fs::Permissions::from_mode(mode)).unwrap();
    std::fs::rename(&next, path).unwrap();
}

fn last_signer(proxy: &Proxy) -> Option<String> {
    proxy
        .calls()
        .iter()
        .rev()
        .find(|c| c.action == "GetSecretValue")
        .and_then(|c| c.access_key_id.clone())
}

async fn compat(agent: &Agent, id: &str) -> Reply {
    get_with(
        &agent.url(&format!("/secretsmanager/get?secretId={id}")),
        &[("X-Aws-Parameters-Secrets-Token", TOKEN)],
    )
    .await
}

/// A file that is missing at start, then appears, is rotated to new keys
/// and then to broken content: each read is signed by the newest good keys
/// (moto refuses any other), with no restart and no reload.
#[tokio::test]
async fn a_file_that_appears_rotates_and_breaks_signs_with_its_newest_good_keys() {
    // Setup calls go unauthenticated; every later call is checked.
    let world = World::start(&[("INITIAL_NO_AUTH_ACTION_COUNT", "7")]);
    let name = unique("file-creds");
    let arn = world.create_secret(REGION, &name, "file-creds-value");
    let (first_id, first_secret) = world.iam_user("file-first", &["secretsmanager:GetSecretValue"]);
    let (second_id, second_secret) =
        world.iam_user("file-second", &["secretsmanager:GetSecretValue"]);
    let proxy = world.proxy();
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("rotated-credentials");
    let config = AgentConfig::new()
        .endpoint(&proxy.url)
        .resource("r", &arn)
        .credentials_file(&file)
        .token_env("FILE_CREDS_TOKEN", &["*"])
        .cache(|c| c.ttl("0s"));
    let agent = Agent::start(&config, &[("FILE_CREDS_TOKEN", TOKEN)]);

    // No file: our credential error, the AWS agent's InternalFailure, and
    // nothing unsigned went out.
    get_with(
        &agent.url("/secrets/r"),
        &[("Authorization", &format!("Bearer {TOKEN}"))],
    )
    .await
    .assert_error(503, "credentials_unavailable");
    let r = compat(&agent, "r").await;
    assert_eq!(
        (r.status, r.text().as_str()),
        (500, r#"{"__type":"InternalFailure"}"#)
    );
    assert!(proxy.calls().is_empty(), "{:?}", proxy.calls());

    // It appears: the next read uses it.
    write_keys(&file, &first_id, &first_secret, 0o600);
    let r = compat(&agent, "r").await;
    assert_eq!(r.status, 200, "{}\n{}", r.text(), agent.log());
    assert_eq!(r.json()["SecretString"], "file-creds-value");
    assert_eq!(last_signer(&proxy).as_deref(), Some(first_id.as_str()));

    // Rotated to the second user's keys, readable by others this time.
    write_keys(&file, &second_id, &second_secret, 0o644);
    let r = compat(&agent, "r").await;
    assert_eq!(r.status, 200, "{}\n{}", r.text(), agent.log());
    assert_eq!(last_signer(&proxy).as_deref(), Some(second_id.as_str()));
    let warning = format!(
        "{} is readable by group or others (mode 0644) and it holds AWS keys; chmod 600 it",
        file.display()
    );
    assert!(agent.log().contains(&warning), "{}", agent.log());

    // Broken content: the last good keys keep working, said once.
    std::fs::write(&file, "[default]\naws_access_key_id = half-written\n").unwrap();
    for _ in 0..3 {
        let r = compat(&agent, "r").await;
        assert_eq!(r.status, 200, "{}\n{}", r.text(), agent.log());
        assert_eq!(last_signer(&proxy).as_deref(), Some(second_id.as_str()));
    }
    let kept = "keeping the last good credentials until it holds new ones";
    assert_eq!(agent.log().matches(kept).count(), 1, "{}", agent.log());

    // Keys moto does not know: refused by AWS, so the file is really used.
    write_keys(
        &file,
        "AKIAFILEUNKNOWN00001",
        "unknown-file-secret-9c1d",
        0o600,
    );
    let r = compat(&agent, "r").await;
    assert_ne!(r.status, 200, "{}", r.text());
    assert_eq!(last_signer(&proxy).as_deref(), Some("AKIAFILEUNKNOWN00001"));
    let log = agent.log();
    for secret in [
        first_secret.as_str(),
        second_secret.as_str(),
        "unknown-file-secret-9c1d",
    ] {
        assert!(!log.contains(secret), "a secret key reached the log");
    }
}

/// The AWS agent's TOML with `credentials_file_path`, the file missing at
/// start and no AWS_ACCOUNT_ID: the agent starts (the AWS agent skips its
/// STS check then), reads answer InternalFailure, and once the file holds
/// keys the account is learnt and secrets are served.
#[tokio::test]
async fn the_aws_agents_toml_starts_without_the_file_and_learns_the_account_when_it_appears() {
    let f = Fixture::new();
    let secret = f.secret("file-creds-toml", r#"{"username":"testuser"}"#);
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("creds");
    let port = free_port();
    let toml = dir.path().join("agent.toml");
    std::fs::write(
        &toml,
        format!(
            "http_port = {port}\nregion = \"{REGION}\"\nvalidate_credentials = true\ncredentials_file_path = \"{}\"\n",
            file.display()
        ),
    )
    .unwrap();
    let env = [
        ("AWS_ENDPOINT_URL", f.proxy.url.as_str()),
        ("AWS_TOKEN", TOKEN),
        // The default chain would find these; the file is the only source.
        ("AWS_ACCESS_KEY_ID", "AKIAENVIRONMENTKEY01"),
        ("AWS_SECRET_ACCESS_KEY", "environment-secret-never-used"),
    ];
    let (agent, first) =
        Agent::try_start_with_args(&["--config", toml.to_str().unwrap()], &env, dir)
            .unwrap_or_else(|log| panic!("{log}"));
    assert!(first.contains(&format!("127.0.0.1:{port}")), "{first}");
    let r = compat(&agent, &secret.name).await;
    assert_eq!(
        (r.status, r.text().as_str()),
        (500, r#"{"__type":"InternalFailure"}"#)
    );
    assert!(
        !f.proxy
            .calls()
            .iter()
            .any(|c| c.access_key_id.as_deref() == Some("AKIAENVIRONMENTKEY01")),
        "the default chain was used"
    );

    write_keys(&file, "AKIAFILETOMLKEY00001", "file-toml-secret", 0o600);
    let served = eventually(Duration::from_secs(20), async || {
        compat(&agent, &secret.name).await.status == 200
    })
    .await;
    assert!(served, "{}", agent.log());
    let r = compat(&agent, &secret.name).await;
    assert_eq!(r.json()["Name"], secret.name.as_str());
    let calls = f.proxy.calls();
    assert!(
        calls
            .iter()
            .all(|c| c.access_key_id.as_deref() == Some("AKIAFILETOMLKEY00001")),
        "{calls:?}"
    );
    assert!(calls.iter().any(|c| c.action == "GetCallerIdentity"));
    assert!(
        agent
            .log()
            .contains("account 123456789012 (from STS GetCallerIdentity)"),
        "{}",
        agent.log()
    );
}

/// `convert-aws-agent-config FILE.toml`, no flags: the YAML it prints is
/// accepted by `--check` as printed (the account is `caller`, learnt at
/// start) and the agent serves with it.
#[tokio::test]
async fn the_converters_output_runs_as_printed() {
    let f = Fixture::new();
    let secret = f.secret("converted", "converted-value");
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("creds");
    write_keys(&file, "AKIACONVERTEDKEY0001", "converted-secret", 0o640);
    let port = free_port();
    let toml = dir.path().join("agent.toml");
    std::fs::write(
        &toml,
        format!(
            "http_port = {port}\nregion = \"{REGION}\"\nssrf_env_variables = [\"CONVERTED_TOKEN\"]\ncredentials_file_path = \"{}\"\n",
            file.display()
        ),
    )
    .unwrap();
    let (code, yaml, err) = run_cli(&["convert-aws-agent-config", toml.to_str().unwrap()]);
    assert_eq!(code, 0, "{err}");
    assert!(
        yaml.contains(&format!(
            "\"*\": arn:aws:secretsmanager:{REGION}:caller:secret:*"
        )),
        "{yaml}"
    );
    let config = dir.path().join("config.yaml");
    std::fs::write(&config, &yaml).unwrap();
    let config = config.to_str().unwrap();
    let (code, summary, err) =
        run_cli_with_env(&["--check", "-c", config], &[("CONVERTED_TOKEN", TOKEN)]);
    assert_eq!(code, 0, "{err}\n{yaml}");
    for expected in [
        "account: the identity's own (`caller`), asked of STS GetCallerIdentity once at start",
        &format!(
            "credentials: credentials file {} (profile default), re-read when it changes",
            file.display()
        ),
        "is readable by group or others (mode 0640) and it holds AWS keys; chmod 600 it",
    ] {
        assert!(summary.contains(expected), "no `{expected}` in:\n{summary}");
    }
    // --account still pins the account.
    let (_, pinned, _) = run_cli(&[
        "convert-aws-agent-config",
        toml.to_str().unwrap(),
        "--account",
        "123456789012",
    ]);
    assert!(pinned.contains(":123456789012:secret:*"), "{pinned}");

    let (agent, _) = Agent::try_start_with_args(
        &["--config", config],
        &[
            ("AWS_ENDPOINT_URL", f.proxy.url.as_str()),
            ("CONVERTED_TOKEN", TOKEN),
        ],
        tempfile::tempdir().unwrap(),
    )
    .unwrap_or_else(|log| panic!("{log}"));
    let r = compat(&agent, &secret.name).await;
    assert_eq!(r.status, 200, "{}\n{}", r.text(), agent.log());
    assert_eq!(r.json()["SecretString"], "converted-value");
    let identity_calls = f
        .proxy
        .calls()
        .iter()
        .filter(|c| c.action == "GetCallerIdentity")
        .count();
    assert_eq!(identity_calls, 1);
    // The ARN sent is the learnt account's.
    assert!(
        f.proxy.calls().iter().any(|c| c
            .secret_id
            .as_deref()
            .is_some_and(|id| id.contains(":123456789012:secret:"))),
        "{:?}",
        f.proxy.calls()
    );
}

/// The YAML form with `caller` and AWS_ACCOUNT_ID: no STS call at all.
#[tokio::test]
async fn caller_with_aws_account_id_asks_sts_nothing() {
    let f = Fixture::new();
    let secret = f.secret("caller-env", "caller-env-value");
    let config = AgentConfig::new()
        .endpoint(&f.proxy.url)
        .test_keys()
        .resource(
            "*",
            &format!("arn:aws:secretsmanager:{REGION}:caller:secret:*"),
        );
    let agent = Agent::start(&config, &[("AWS_ACCOUNT_ID", "123456789012")]);
    let r = get(&agent.url(&format!("/secrets/{}", secret.name))).await;
    assert_eq!((r.status, r.text().as_str()), (200, "caller-env-value"));
    assert!(
        !f.proxy
            .calls()
            .iter()
            .any(|c| c.action == "GetCallerIdentity"),
        "STS was asked although AWS_ACCOUNT_ID is set"
    );
}
