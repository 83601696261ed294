//! Credential modes: which access key id signs each AWS call, in
//! every mode and in the documented lookup order; refresh before expiry;
//! assume-role through a recorded STS endpoint; regions; failures; and that
//! no secret key or session token reaches the log.
//!
//! Every key id is distinct, so the recording proxy tells the sources apart.

use std::path::Path;
use std::time::{Duration, Instant};

use serde_json::json;

use crate::support::*;

const ROLE: &str = "arn:aws:iam::123456789012:role/secret-reader";

/// A secret in the shared world behind a fresh recording proxy.
struct Setup {
    world: &'static World,
    name: String,
    arn: String,
    value: String,
    /// The Secrets Manager endpoint the agent is given.
    proxy: Proxy<'static>,
}

fn setup(prefix: &str) -> Setup {
    let Fixture { world, proxy } = Fixture::new();
    let name = unique(prefix);
    let value = format!("value-of-{name}");
    let arn = world.create_secret(REGION, &name, &value);
    Setup {
        world,
        proxy,
        name,
        arn,
        value,
    }
}

impl Setup {
    /// The agent's config: one resource `s`, no credentials, no caching.
    fn config(&self) -> AgentConfig {
        no_cache(
            AgentConfig::new()
                .endpoint(&self.proxy.url)
                .resource("s", &self.arn),
        )
    }

    /// Reads `s` and checks the value.
    async fn read(&self, agent: &Agent) {
        let r = get(&agent.url("/secrets/s")).await;
        assert_eq!(r.status, 200, "{}\n{}", r.text(), agent.log());
        assert_eq!(r.text(), self.value);
    }

    /// The GetSecretValue calls for this setup's secret.
    fn gets(&self) -> Vec<Call> {
        calls_of(&self.proxy, "GetSecretValue")
            .into_iter()
            .filter(|c| {
                c.secret_id
                    .as_deref()
                    .is_some_and(|s| s.contains(&self.name))
            })
            .collect()
    }

    /// The key id (and session token) of the last GetSecretValue call.
    fn last_signer(&self) -> (String, Option<String>) {
        let call = self.gets().pop().expect("a GetSecretValue call");
        (
            call.access_key_id.expect("a signed call"),
            call.session_token,
        )
    }

    /// The last GetSecretValue call was signed by `key`, with `token`.
    fn assert_signed(&self, key: &str, token: Option<&str>) {
        let (signer, sent) = self.last_signer();
        assert_eq!(signer, key);
        assert_token(sent.as_deref(), token);
    }
}

/// The session token sent is the one expected; a failure does not show them.
fn assert_token(sent: Option<&str>, want: Option<&str>) {
    match (sent, want) {
        (Some(_), None) => panic!("a session token was sent where none was expected"),
        (None, Some(_)) => panic!("no session token was sent"),
        (sent, want) => assert!(sent == want, "a different session token was sent"),
    }
}

fn calls_of(proxy: &Proxy, action: &str) -> Vec<Call> {
    proxy
        .calls()
        .into_iter()
        .filter(|c| c.action == action)
        .collect()
}

/// A shared credentials file: `(profile, key id, secret key, session token)`.
fn write_credentials(path: &Path, profiles: &[(&str, &str, &str, Option<&str>)]) {
    let mut text = String::new();
    for (profile, id, secret, token) in profiles {
        text.push_str(&format!(
            "[{profile}]\naws_access_key_id = {id}\naws_secret_access_key = {secret}\n"
        ));
        if let Some(token) = token {
            text.push_str(&format!("aws_session_token = {token}\n"));
        }
        text.push('\n');
    }
    std::fs::write(path, text).unwrap();
}

/// Waits for the start-up line that says where the credentials come from.
fn assert_startup_line(agent: &Agent, line: &str) {
    assert!(
        agent.wait_for_log(line, Duration::from_secs(10)),
        "no {line:?} in the log:\n{}",
        agent.log()
    );
}

/// The agent logs at debug level (`RUST_LOG=debug`); none of `secrets` may
/// appear in what it wrote. A failure shows where, not the secret.
fn assert_log_clean<S: AsRef<str>>(agent: &Agent, secrets: &[S]) {
    let log = agent.log();
    for (i, secret) in secrets.iter().enumerate() {
        let secret = secret.as_ref();
        assert!(!secret.is_empty());
        if let Some((n, line)) = log.lines().enumerate().find(|(_, l)| l.contains(secret)) {
            let before: String = line[..line.find(secret).unwrap()]
                .chars()
                .take(300)
                .collect();
            panic!("secret #{i} is in log line {n}, after: {before:?}");
        }
    }
}

/// The secret key and session token of every credential set an IMDS double minted.
fn imds_secrets(imds: &Imds) -> Vec<String> {
    imds.issued()
        .iter()
        .flat_map(|c| [&c["secret_access_key"], &c["session_token"]])
        .map(|v| v.as_str().unwrap().to_owned())
        .collect()
}

/// Env for an agent that may reach `imds` (and finds nothing else).
fn imds_env(imds: &Imds) -> Vec<(&'static str, String)> {
    vec![
        ("AWS_EC2_METADATA_SERVICE_ENDPOINT", imds.url.clone()),
        ("AWS_EC2_METADATA_DISABLED", String::new()),
    ]
}

fn env_refs<'a>(env: &'a [(&'static str, String)]) -> Vec<(&'static str, &'a str)> {
    env.iter().map(|(k, v)| (*k, v.as_str())).collect()
}

/// Every read calls AWS, so every read shows which key signed it.
fn no_cache(config: AgentConfig) -> AgentConfig {
    config.cache(|c| c.ttl("0s"))
}

#[tokio::test]
async fn static_keys_from_config_sign_with_their_session_token() {
    let s = setup("creds-static");
    let agent = Agent::start(
        &s.config()
            .keys("AKIACONFIGSTATIC0001", "cfg-secret-static-9f2e41")
            .session_token("cfg-token-static-77ab03"),
        &[],
    );
    s.read(&agent).await;
    s.assert_signed("AKIACONFIGSTATIC0001", Some("cfg-token-static-77ab03"));
    assert_startup_line(&agent, "credentials: static keys from config");

    // Without a session token, none is sent.
    let plain = Agent::start(
        &s.config()
            .keys("AKIACONFIGSTATIC0002", "cfg-secret-static-c03d"),
        &[],
    );
    s.read(&plain).await;
    s.assert_signed("AKIACONFIGSTATIC0002", None);
    assert_log_clean(
        &agent,
        &["cfg-secret-static-9f2e41", "cfg-token-static-77ab03"],
    );
    assert_log_clean(&plain, &["cfg-secret-static-c03d"]);
}

/// Config keys, then the environment, then the shared credentials file, then
/// IMDS: each source is offered together with every lower one, and wins.
#[tokio::test]
async fn static_sources_are_tried_in_the_seed_order() {
    let s = setup("creds-order");
    let imds = s.world.imds(3600, "ASIAORDERIMDS");
    let files = tempfile::tempdir().unwrap();
    let file = files.path().join("credentials");
    write_credentials(
        &file,
        &[(
            "default",
            "AKIAORDERFILE0000001",
            "file-secret-order-5d1c",
            Some("file-token-order-e8a2"),
        )],
    );
    let file_path = file.display().to_string();
    let with_imds = imds_env(&imds);
    let mut with_file = with_imds.clone();
    with_file.push(("AWS_SHARED_CREDENTIALS_FILE", file_path.clone()));
    let mut with_env = with_file.clone();
    with_env.extend([
        ("AWS_ACCESS_KEY_ID", "AKIAORDERENV00000001".to_owned()),
        ("AWS_SECRET_ACCESS_KEY", "env-secret-order-0b7f".to_owned()),
        ("AWS_SESSION_TOKEN", "env-token-order-4c19".to_owned()),
    ]);
    let config_keys = s
        .config()
        .keys("AKIAORDERCONFIG00001", "cfg-secret-order-a6e3");
    let mut secrets: Vec<String> = [
        "file-secret-order-5d1c",
        "file-token-order-e8a2",
        "env-secret-order-0b7f",
        "env-token-order-4c19",
        "cfg-secret-order-a6e3",
    ]
    .map(String::from)
    .to_vec();

    let file_source = format!("shared credentials file {file_path} (profile default)");
    let steps = [
        (config_keys, &with_env, "static keys from config"),
        (
            s.config(),
            &with_env,
            "environment keys (AWS_ACCESS_KEY_ID)",
        ),
        (s.config(), &with_file, file_source.as_str()),
        (s.config(), &with_imds, "instance role via IMDSv2"),
    ];
    let want = [
        ("AKIAORDERCONFIG00001", None),
        ("AKIAORDERENV00000001", Some("env-token-order-4c19")),
        ("AKIAORDERFILE0000001", Some("file-token-order-e8a2")),
    ];
    for (i, (config, env, source)) in steps.into_iter().enumerate() {
        let agent = Agent::start(&config, &env_refs(env));
        s.read(&agent).await;
        match want.get(i) {
            Some(&(key, token)) => {
                s.assert_signed(key, token);
                // A source higher in the order answered: IMDS was never asked.
                assert!(imds.requests().is_empty(), "{:?}", imds.requests());
            }
            None => {
                // Nothing else offered keys: the instance role signs.
                let issued = &imds.issued()[0];
                s.assert_signed(
                    issued["access_key_id"].as_str().unwrap(),
                    issued["session_token"].as_str(),
                );
            }
        }
        assert_startup_line(&agent, &format!("credentials: {source}"));
        secrets.extend(imds_secrets(&imds));
        assert_log_clean(&agent, &secrets);
    }
}

#[tokio::test]
async fn profile_comes_from_aws_profile_or_the_profile_key() {
    let s = setup("creds-profile");
    let files = tempfile::tempdir().unwrap();
    let file = files.path().join("credentials");
    write_credentials(
        &file,
        &[
            (
                "default",
                "AKIAPROFILEDEFAULT01",
                "prof-secret-default-1",
                None,
            ),
            ("team", "AKIAPROFILETEAM00001", "prof-secret-team-2", None),
            ("ops", "AKIAPROFILEOPS000001", "prof-secret-ops-3", None),
        ],
    );
    let file = file.display().to_string();

    let agent = Agent::start(
        &s.config(),
        &[
            ("AWS_SHARED_CREDENTIALS_FILE", &file),
            ("AWS_PROFILE", "team"),
        ],
    );
    s.read(&agent).await;
    assert_eq!(s.last_signer().0, "AKIAPROFILETEAM00001");
    assert_startup_line(
        &agent,
        &format!("shared credentials file {file} (profile team)"),
    );

    // The `profile:` key wins over AWS_PROFILE.
    let agent = Agent::start(
        &s.config().profile("ops"),
        &[
            ("AWS_SHARED_CREDENTIALS_FILE", &file),
            ("AWS_PROFILE", "team"),
        ],
    );
    s.read(&agent).await;
    assert_eq!(s.last_signer().0, "AKIAPROFILEOPS000001");
    assert_startup_line(
        &agent,
        &format!("shared credentials file {file} (profile ops)"),
    );
    assert_log_clean(
        &agent,
        &[
            "prof-secret-default-1",
            "prof-secret-team-2",
            "prof-secret-ops-3",
        ],
    );
}

#[tokio::test]
async fn access_key_ids_never_reach_the_log_at_any_level() {
    let s = setup("creds-key-id-log");
    let files = tempfile::tempdir().unwrap();
    let file = files.path().join("credentials");
    let key_id = "AKIAKEYIDNEVERLOGGED";
    write_credentials(
        &file,
        &[("default", key_id, "key-id-log-secret-aaaa", None)],
    );
    let file = file.display().to_string();
    // RUST_LOG unset: the config's `log.level: info`.
    for rust_log in ["trace", "debug", ""] {
        let agent = Agent::start(
            &s.config(),
            &[
                ("AWS_SHARED_CREDENTIALS_FILE", &file),
                ("RUST_LOG", rust_log),
            ],
        );
        s.read(&agent).await;
        s.assert_signed(key_id, None);
        // Each AWS call reads the credentials again; the next call's log too.
        let r = get(&agent.url("/secrets/s?refresh=true")).await;
        assert_eq!(r.status, 200);
        let log = agent.log();
        if rust_log == "debug" {
            assert!(
                log.contains("…GGED"),
                "the key id's last four are kept\n{log}"
            );
        }
        assert_log_clean(
            &agent,
            &[key_id, "AKIAKEYIDNEVERLO", "key-id-log-secret-aaaa"],
        );
    }
}

#[tokio::test]
async fn shared_file_changes_are_used_by_the_next_call_without_restart() {
    let s = setup("creds-rotate-file");
    let files = tempfile::tempdir().unwrap();
    let file = files.path().join("credentials");
    let write = |id: &str, secret: &str, token: &str| {
        write_credentials(&file, &[("default", id, secret, Some(token))]);
    };
    write(
        "AKIAFILEROTATE000001",
        "file-secret-rotate-aaaa",
        "file-token-rotate-1111",
    );
    let agent = Agent::start(
        &s.config(),
        &[("AWS_SHARED_CREDENTIALS_FILE", &file.display().to_string())],
    );
    s.read(&agent).await;
    s.assert_signed("AKIAFILEROTATE000001", Some("file-token-rotate-1111"));

    // New keys, same lengths, written in place.
    write(
        "AKIAFILEROTATE000002",
        "file-secret-rotate-bbbb",
        "file-token-rotate-2222",
    );
    s.read(&agent).await;
    s.assert_signed("AKIAFILEROTATE000002", Some("file-token-rotate-2222"));

    // Only the session token changes.
    write(
        "AKIAFILEROTATE000002",
        "file-secret-rotate-bbbb",
        "file-token-rotate-3333",
    );
    s.read(&agent).await;
    s.assert_signed("AKIAFILEROTATE000002", Some("file-token-rotate-3333"));
    assert!(agent.log().contains("re-reading it"), "{}", agent.log());
    assert_log_clean(
        &agent,
        &[
            "file-secret-rotate-aaaa",
            "file-secret-rotate-bbbb",
            "file-token-rotate-1111",
            "file-token-rotate-2222",
            "file-token-rotate-3333",
        ],
    );
}

#[tokio::test]
async fn instance_role_via_imdsv2_with_the_region_from_imds() {
    let s = setup("creds-imds");
    let imds = s.world.imds_in("eu-central-1", 3600, "ASIAIMDSMODE");
    let env = imds_env(&imds);
    let agent = Agent::start(&s.config().no_region(), &env_refs(&env));
    s.read(&agent).await;
    let issued = &imds.issued()[0];
    s.assert_signed(
        issued["access_key_id"].as_str().unwrap(),
        issued["session_token"].as_str(),
    );
    assert_startup_line(&agent, "credentials: instance role via IMDSv2");
    assert_startup_line(
        &agent,
        "region: eu-central-1 (from instance metadata (IMDSv2))",
    );

    // IMDSv2: a token PUT first; every GET carries the token.
    let requests = imds.requests();
    assert_eq!(
        (requests[0]["method"].as_str(), requests[0]["path"].as_str()),
        (Some("PUT"), Some("/latest/api/token")),
        "{requests:?}"
    );
    for r in &requests {
        if r["method"] == "GET" {
            assert_eq!(r["had_token"], true, "{r}");
        }
    }
    let paths: Vec<&str> = requests.iter().filter_map(|r| r["path"].as_str()).collect();
    for want in [
        "/latest/meta-data/placement/region",
        "/latest/meta-data/iam/security-credentials/",
        "/latest/meta-data/iam/security-credentials/secret-agent-role",
    ] {
        assert!(paths.contains(&want), "{want} not in {paths:?}");
    }
    assert_log_clean(&agent, &imds_secrets(&imds));
}

/// Instance credentials that live four seconds, replaced by the instance
/// two seconds before they expire (as EC2 does minutes ahead): reads over
/// two lifetimes all succeed, each new key is picked up, and no call is
/// signed with a key at the end of its life.
#[tokio::test]
async fn instance_credentials_are_refreshed_before_they_expire() {
    let s = setup("creds-expiry");
    let imds = s.world.imds(4, "ASIAEXPIRY");
    imds.set(json!({"rotate_ahead": 2}));
    let env = imds_env(&imds);
    let agent = Agent::start(&s.config(), &env_refs(&env));
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut reads = 0;
    loop {
        s.read(&agent).await;
        reads += 1;
        let mut keys: Vec<String> = s
            .gets()
            .into_iter()
            .filter_map(|c| c.access_key_id)
            .collect();
        keys.dedup();
        if keys.len() >= 3 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "after {reads} reads, keys used: {keys:?}\n{}",
            agent.log()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    let issued = imds.issued();
    let mut last_generation = 0;
    for call in s.gets() {
        let key = call.access_key_id.unwrap();
        let generation = issued
            .iter()
            .position(|c| c["access_key_id"] == key.as_str())
            .unwrap_or_else(|| panic!("{key} was not issued by the IMDS double"));
        // Keys are used in the order they were minted, never going back.
        assert!(
            generation >= last_generation,
            "{key} used after a newer key"
        );
        last_generation = generation;
        // The agent replaces keys at three quarters of their life, so at
        // least half a second before they expire: the 0.2s bound leaves room
        // for the request's trip to the proxy, and fails an agent that
        // keeps keys until their expiry.
        let expiration = issued[generation]["expiration"].as_f64().unwrap();
        let left = expiration - call.time;
        assert!(left > 0.2, "{key} used {left:.3}s before it expired");
    }
    assert_log_clean(&agent, &imds_secrets(&imds));
}

/// Checks one assume-role run: STS saw only AssumeRole, signed by
/// `source_key`; Secrets Manager saw only calls signed with what STS
/// returned. Returns the AssumeRole calls.
fn assert_assumed(s: &Setup, sts: &Proxy, source_key: &str) -> Vec<Call> {
    let sts_calls = sts.calls();
    assert!(!sts_calls.is_empty(), "no call reached the STS endpoint");
    for call in &sts_calls {
        assert_eq!(call.action, "AssumeRole", "{call:?}");
        assert_eq!(call.access_key_id.as_deref(), Some(source_key), "{call:?}");
    }
    let sm_calls = s.proxy.calls();
    assert!(
        sm_calls.iter().all(|c| c.action == "GetSecretValue"),
        "STS calls went to the Secrets Manager endpoint: {sm_calls:?}"
    );
    let returned = &sts_calls.last().unwrap().returned;
    let assumed_key = returned["AccessKeyId"].as_str().expect("STS returned keys");
    assert!(assumed_key.starts_with("ASIA"), "{assumed_key}");
    assert_ne!(assumed_key, source_key);
    s.assert_signed(assumed_key, returned["SessionToken"].as_str());
    sts_calls
}

/// What STS returned that must never be logged.
fn returned_secrets(calls: &[Call]) -> Vec<String> {
    calls
        .iter()
        .flat_map(|c| [&c.returned["SecretAccessKey"], &c.returned["SessionToken"]])
        .filter_map(|v| v.as_str().map(str::to_owned))
        .collect()
}

#[tokio::test]
async fn assume_role_over_static_keys_through_the_sts_endpoint() {
    let s = setup("creds-assume-static");
    let sts = s.world.proxy();
    let agent = Agent::start(
        &s.config()
            .keys("AKIAASSUMESOURCE0001", "src-secret-assume-61f0")
            .assume_role(AssumeRole::Arn(ROLE.into()))
            .sts_endpoint(&sts.url)
            .sts_region("ap-southeast-2"),
        &[],
    );
    s.read(&agent).await;
    s.read(&agent).await;
    let calls = assert_assumed(&s, &sts, "AKIAASSUMESOURCE0001");
    let form = &calls[0].form;
    assert_eq!(form["RoleArn"], ROLE, "{form}");
    assert_eq!(form["RoleSessionName"], "secret-agent", "{form}");
    assert_eq!(calls[0].region.as_deref(), Some("ap-southeast-2"));
    // The assumed credentials are kept until near their expiry (1h).
    assert_eq!(calls.len(), 1, "{calls:?}");
    assert_startup_line(
        &agent,
        &format!("credentials: assume role {ROLE} over static keys from config"),
    );
    let mut secrets = returned_secrets(&calls);
    secrets.push("src-secret-assume-61f0".into());
    assert_log_clean(&agent, &secrets);
}

/// The map form over the instance role; STS is called in the instance's
/// region when the config names none.
#[tokio::test]
async fn assume_role_map_form_over_the_instance_role() {
    let s = setup("creds-assume-imds");
    let imds = s.world.imds_in("eu-west-3", 3600, "ASIAASSUMEIMDS");
    let sts = s.world.proxy();
    let role = "arn:aws:iam::123456789012:role/mapped-reader";
    let config = s
        .config()
        .no_region()
        .assume_role(AssumeRole::Full {
            role_arn: role.into(),
            external_id: Some("ext-id-5e9d2c".into()),
            session_name: Some("agent-session-7".into()),
            duration: Some("15m".into()),
        })
        .sts_endpoint(&sts.url);
    let env = imds_env(&imds);
    let agent = Agent::start(&config, &env_refs(&env));
    s.read(&agent).await;
    let imds_key = imds.state()["access_key_id"].as_str().unwrap().to_owned();
    let calls = assert_assumed(&s, &sts, &imds_key);
    let form = &calls[0].form;
    assert_eq!(form["RoleArn"], role, "{form}");
    assert_eq!(form["ExternalId"], "ext-id-5e9d2c", "{form}");
    assert_eq!(form["RoleSessionName"], "agent-session-7", "{form}");
    assert_eq!(form["DurationSeconds"], "900", "{form}");
    assert_eq!(calls[0].region.as_deref(), Some("eu-west-3"));
    // The AssumeRole call carried the instance role's session token.
    assert_token(
        calls[0].session_token.as_deref(),
        imds.issued()[0]["session_token"].as_str(),
    );
    assert_startup_line(
        &agent,
        &format!("credentials: assume role {role} over instance role via IMDSv2"),
    );
    let mut secrets = returned_secrets(&calls);
    secrets.extend(imds_secrets(&imds));
    secrets.push("ext-id-5e9d2c".into());
    assert_log_clean(&agent, &secrets);
}

/// `AWS_ENDPOINT_URL_STS` in place of `sts-endpoint`, over environment keys.
#[tokio::test]
async fn sts_endpoint_from_the_standard_variable() {
    let s = setup("creds-assume-env");
    let sts = s.world.proxy();
    let agent = Agent::start(
        &s.config().assume_role(AssumeRole::Arn(ROLE.into())),
        &[
            ("AWS_ENDPOINT_URL_STS", &sts.url),
            ("AWS_ACCESS_KEY_ID", "AKIAASSUMEENVSOURCE1"),
            ("AWS_SECRET_ACCESS_KEY", "env-secret-assume-3d8b"),
        ],
    );
    s.read(&agent).await;
    let calls = assert_assumed(&s, &sts, "AKIAASSUMEENVSOURCE1");
    assert_eq!(calls[0].region.as_deref(), Some(REGION));
    assert_startup_line(
        &agent,
        &format!("credentials: assume role {ROLE} over environment keys"),
    );
    let mut secrets = returned_secrets(&calls);
    secrets.push("env-secret-assume-3d8b".into());
    assert_log_clean(&agent, &secrets);
}

/// Each call goes to the region of its resource's ARN: moto keeps secrets
/// per region, and both regions hold a secret of the same name.
#[tokio::test]
async fn resources_in_two_regions_are_read_in_their_own_region() {
    let world = World::shared();
    let name = unique("creds-region");
    let west = world.create_secret(REGION, &name, "value-in-us-west-1");
    let east = world.create_secret("us-east-1", &name, "value-in-us-east-1");
    let proxy = world.proxy();
    let config = AgentConfig::new()
        .endpoint(&proxy.url)
        .resource("west", &west)
        .resource("east", &east)
        .keys("AKIAREGIONS000000001", "region-secret-0c4e");
    let agent = Agent::start(&no_cache(config), &[]);
    let r = get(&agent.url("/secrets/east")).await;
    assert_eq!((r.status, r.text().as_str()), (200, "value-in-us-east-1"));
    let r = get(&agent.url("/secrets/west")).await;
    assert_eq!((r.status, r.text().as_str()), (200, "value-in-us-west-1"));
    let regions: Vec<(String, String)> = calls_of(&proxy, "GetSecretValue")
        .into_iter()
        .map(|c| (c.secret_id.unwrap(), c.region.unwrap()))
        .collect();
    assert_eq!(
        regions,
        [(east, "us-east-1".to_owned()), (west, REGION.to_owned())]
    );
}

/// The error a read gets when no source has credentials.
fn assert_no_credentials(r: &Reply) {
    r.assert_error(503, "credentials_unavailable");
    let message = r.json()["message"].as_str().unwrap().to_owned();
    for want in [
        "credentials could not be found",
        "environment variables",
        "shared credentials file",
        "EC2 instance metadata (IMDSv2)",
    ] {
        assert!(message.contains(want), "{want:?} not in {message:?}");
    }
}

#[tokio::test]
async fn no_credentials_anywhere_is_a_clear_error_and_the_agent_keeps_serving() {
    let s = setup("creds-none");
    let agent = Agent::start(&s.config(), &[]);
    assert_no_credentials(&get(&agent.url("/secrets/s")).await);
    assert_startup_line(&agent, "credentials: none yet");
    // Still serving, with the same answer.
    assert_no_credentials(&get(&agent.url("/secrets/s")).await);
    assert!(s.proxy.calls().is_empty(), "nothing unsigned went out");

    // IMDS enabled but nothing listening: falls through at once.
    let started = Instant::now();
    let agent = Agent::start(
        &s.config().no_region(),
        &[
            ("AWS_EC2_METADATA_SERVICE_ENDPOINT", &closed_url()),
            ("AWS_EC2_METADATA_DISABLED", ""),
        ],
    );
    assert_no_credentials(&get(&agent.url("/secrets/s")).await);
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
    assert_startup_line(&agent, "region: us-west-1 (from the first resource's ARN)");
    assert_no_credentials(&get(&agent.url("/secrets/s")).await);
}

/// An IMDS address that accepts connections and never answers (as a
/// firewalled link-local address would hang): the read still answers
/// within a few seconds.
#[tokio::test]
async fn unresponsive_imds_falls_through_within_seconds() {
    let s = setup("creds-imds-hang");
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", silent.local_addr().unwrap());
    let agent = Agent::start(
        &s.config(),
        &[
            ("AWS_EC2_METADATA_SERVICE_ENDPOINT", &url),
            ("AWS_EC2_METADATA_DISABLED", ""),
        ],
    );
    let started = Instant::now();
    assert_no_credentials(&get(&agent.url("/secrets/s")).await);
    let took = started.elapsed();
    assert!(took < Duration::from_secs(6), "{took:?}");
    assert_no_credentials(&get(&agent.url("/secrets/s")).await);
    drop(silent);
}

/// Moto enforcing IAM: unknown keys and a user without permission are both
/// refused; the read gets a 502 with its own code, and the log names the
/// resource and AWS's error code.
#[tokio::test]
async fn aws_refusing_the_credentials_is_upstream_access_denied() {
    // Setup calls below go unauthenticated; every later call is checked.
    let world = World::start(&[("INITIAL_NO_AUTH_ACTION_COUNT", "6")]);
    let name = unique("creds-denied");
    let arn = world.create_secret(REGION, &name, "denied-value");
    let (reader_id, reader_secret) = world.iam_user("reader", &["secretsmanager:GetSecretValue"]);
    let (nobody_id, nobody_secret) = world.iam_user("nobody", &[]);
    world.assert_iam_enforced();

    let run = |id: &str, secret: &str| {
        no_cache(
            AgentConfig::new()
                .endpoint(&world.moto)
                .resource("guarded", &arn)
                .keys(id, secret),
        )
    };
    // Keys moto has never seen.
    let agent = Agent::start(&run("AKIAUNKNOWNKEY000001", "unknown-secret-2f7a"), &[]);
    get(&agent.url("/secrets/guarded"))
        .await
        .assert_error(502, "upstream_access_denied");
    assert!(
        agent.wait_for_log("guarded: AWS refused the request (", Duration::from_secs(5)),
        "{}",
        agent.log()
    );
    let log = agent.log();
    assert!(
        ["UnrecognizedClientException", "InvalidClientTokenId"]
            .iter()
            .any(|code| log.contains(code)),
        "{log}"
    );
    assert_log_clean(&agent, &["unknown-secret-2f7a"]);

    // A known user without the permission.
    let agent = Agent::start(&run(&nobody_id, &nobody_secret), &[]);
    get(&agent.url("/secrets/guarded"))
        .await
        .assert_error(502, "upstream_access_denied");
    assert!(
        agent.wait_for_log(
            "guarded: AWS refused the request (AccessDenied",
            Duration::from_secs(5)
        ),
        "{}",
        agent.log()
    );
    assert_log_clean(&agent, &[&nobody_secret]);

    // STS refusing the AssumeRole: no credentials to sign with.
    let config = run("AKIAUNKNOWNKEY000002", "unknown-secret-8e1b")
        .assume_role(AssumeRole::Arn(ROLE.into()))
        .sts_endpoint(&world.moto);
    let agent = Agent::start(&config, &[]);
    let r = get(&agent.url("/secrets/guarded")).await;
    r.assert_error(503, "credentials_unavailable");
    let message = r.json()["message"].as_str().unwrap().to_owned();
    assert!(
        message.contains(&format!("assume role {ROLE}: ")),
        "{message}"
    );
    assert_startup_line(
        &agent,
        &format!("credentials: none yet (assume role {ROLE}: "),
    );
    assert_log_clean(&agent, &["unknown-secret-8e1b"]);

    // The user with secretsmanager:GetSecretValue on the secret reads it.
    let agent = Agent::start(&run(&reader_id, &reader_secret), &[]);
    let r = get(&agent.url("/secrets/guarded")).await;
    assert_eq!((r.status, r.text().as_str()), (200, "denied-value"));
    assert_log_clean(&agent, &[&reader_secret]);
}

/// At trace level the AWS SDK prints whole signed requests, session token
/// header included; the agent drops other crates' trace records.
#[tokio::test]
async fn no_key_or_token_in_the_log_even_at_trace_level() {
    let s = setup("creds-trace");
    let sts = s.world.proxy();
    let config = s
        .config()
        .keys("AKIATRACESOURCE00001", "trace-secret-5a5a91")
        .session_token("trace-token-6b6b02")
        .assume_role(AssumeRole::Arn(ROLE.into()))
        .sts_endpoint(&sts.url);
    let agent = Agent::start(&config, &[("RUST_LOG", "trace")]);
    s.read(&agent).await;
    let mut secrets = returned_secrets(&sts.calls());
    secrets.extend(["trace-secret-5a5a91", "trace-token-6b6b02"].map(String::from));
    assert!(
        agent.log().contains("DEBUG aws_smithy_runtime"),
        "the SDK's own log is kept"
    );
    assert_log_clean(&agent, &secrets);

    let imds = s.world.imds(3600, "ASIATRACEIMDS");
    let mut env = imds_env(&imds);
    env.push(("RUST_LOG", "trace".into()));
    let agent = Agent::start(&s.config(), &env_refs(&env));
    s.read(&agent).await;
    assert_log_clean(&agent, &imds_secrets(&imds));
}

#[test]
fn check_prints_the_mode_and_no_secret() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("config.yaml");
    let config = AgentConfig::new()
        .resource(
            "s",
            "arn:aws:secretsmanager:us-west-1:123456789012:secret:check-AbCdEf",
        )
        .keys("AKIACHECK00000000001", "check-secret-1a2b3c")
        .session_token("check-token-4d5e6f")
        .assume_role(AssumeRole::Full {
            role_arn: ROLE.into(),
            external_id: Some("check-external-7a8b".into()),
            session_name: None,
            duration: None,
        })
        .sts_endpoint("https://sts.us-west-1.amazonaws.com");
    std::fs::write(&path, config.yaml()).unwrap();
    let (code, out, err) = run_cli(&["--check", "-c", path.to_str().unwrap()]);
    assert_eq!(code, 0, "{err}");
    assert!(
        out.contains(&format!(
            "credentials: assume role {ROLE} over static keys from config"
        )),
        "{out}"
    );
    for secret in [
        "check-secret-1a2b3c",
        "check-token-4d5e6f",
        "check-external-7a8b",
    ] {
        assert!(!out.contains(secret) && !err.contains(secret), "{out}{err}");
    }

    let samples = Path::new(env!("CARGO_MANIFEST_DIR")).join("config");
    for (file, mode) in [
        (
            "imds.yaml",
            "credentials: default chain: environment variables (AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY), then shared credentials file",
        ),
        ("imds.yaml", "then EC2 instance metadata (IMDSv2)\n"),
        (
            "assume-role-imds.yaml",
            "assume role arn:aws:iam::999999999999:role/AccessToSecrets over default chain: environment",
        ),
        (
            "assume-role-full.yaml",
            "assume role arn:aws:iam::999999999999:role/AccessToSecrets over static keys from config",
        ),
    ] {
        let (code, out, err) = run_cli(&["--check", "-c", samples.join(file).to_str().unwrap()]);
        assert_eq!(code, 0, "{file}: {err}");
        assert!(out.contains(mode), "{file}: {out}");
        assert!(!out.contains("xxxxxxxx"), "{file}: {out}");
    }
}

/// EKS IRSA: a web identity token file and a role ARN in the environment.
/// The agent exchanges the token at STS (AssumeRoleWithWebIdentity, unsigned)
/// and signs Secrets Manager calls with the role's credentials.
#[tokio::test]
async fn web_identity_token_from_the_environment() {
    let s = setup("creds-irsa");
    let sts = s.world.proxy();
    let dir = tempfile::tempdir().unwrap();
    let token_file = dir.path().join("token");
    std::fs::write(&token_file, "eyJ.web-identity-token.sig").unwrap();
    let agent = Agent::start(
        &s.config(),
        &[
            ("AWS_ROLE_ARN", ROLE),
            ("AWS_WEB_IDENTITY_TOKEN_FILE", token_file.to_str().unwrap()),
            ("AWS_ENDPOINT_URL_STS", &sts.url),
        ],
    );
    s.read(&agent).await;
    let calls = calls_of(&sts, "AssumeRoleWithWebIdentity");
    assert_eq!(calls.len(), 1, "{:?}", sts.calls());
    assert_eq!(calls[0].form["RoleArn"], ROLE);
    let returned = &calls[0].returned;
    s.assert_signed(
        returned["AccessKeyId"].as_str().unwrap(),
        returned["SessionToken"].as_str(),
    );
    assert_startup_line(&agent, "credentials: web identity token (IRSA)");
    let mut secrets = returned_secrets(&calls);
    secrets.push("eyJ.web-identity-token.sig".into());
    assert_log_clean(&agent, &secrets);
}

/// ECS task roles and EKS Pod Identity: a container credentials endpoint
/// named by AWS_CONTAINER_CREDENTIALS_FULL_URI, with its authorization token.
#[tokio::test]
async fn container_credentials_from_the_environment() {
    let s = setup("creds-container");
    let imds = s.world.imds(3600, "ASIACONTAINER");
    let uri = format!("{}/container-credentials", imds.url);
    let agent = Agent::start(
        &s.config(),
        &[
            ("AWS_CONTAINER_CREDENTIALS_FULL_URI", &uri),
            (
                "AWS_CONTAINER_AUTHORIZATION_TOKEN",
                "container-auth-token-for-tests",
            ),
        ],
    );
    s.read(&agent).await;
    let issued = &imds.issued()[0];
    s.assert_signed(
        issued["access_key_id"].as_str().unwrap(),
        issued["session_token"].as_str(),
    );
    assert_startup_line(
        &agent,
        "credentials: container credentials (ECS, EKS Pod Identity)",
    );
    assert_log_clean(&agent, &imds_secrets(&imds));
}

#[test]
fn check_lists_the_sources_the_chain_tries() {
    // An agent with no credentials anywhere says what it tried; `--check`
    // on the same config and environment must list the same sources.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("config.yaml");
    let config = AgentConfig::new().endpoint(&closed_url()).resource(
        "x",
        "arn:aws:secretsmanager:us-west-1:123456789012:secret:x-AbCdEf",
    );
    std::fs::write(&path, config.yaml()).unwrap();
    let env = isolated_env(dir.path());
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let (code, out, err) = run_cli_with_env(&["--check", "--config", path.to_str().unwrap()], &env);
    assert_eq!(code, 0, "{err}");
    let checked = out
        .lines()
        .find_map(|l| l.strip_prefix("credentials: default chain: "))
        .unwrap_or_else(|| panic!("no default chain in --check:\n{out}"))
        .to_owned();

    let agent = Agent::start(&config, &env);
    assert!(
        agent.wait_for_log(
            "credentials could not be found; tried ",
            Duration::from_secs(10)
        ),
        "{}",
        agent.log()
    );
    let tried = format!("credentials could not be found; tried {checked}");
    assert!(
        agent.log().contains(&tried),
        "--check says {checked:?}; the chain tried otherwise:\n{}",
        agent.log()
    );
    for source in [
        "environment",
        "shared credentials file",
        "web identity",
        "container",
        "IMDSv2",
    ] {
        assert!(
            checked.contains(source),
            "--check leaves out {source}: {checked}"
        );
    }
}

/// A SIGHUP that changes only `secret-access-key` makes the next call
/// signed with the new key (moto enforcing IAM checks the signature).
#[tokio::test]
async fn a_reload_that_rotates_only_the_secret_key_signs_with_the_new_key() {
    let world = World::start(&[("INITIAL_NO_AUTH_ACTION_COUNT", "4")]);
    let name = unique("rotated-key");
    let arn = world.create_secret(REGION, &name, "rotated-value");
    let (id, secret) = world.iam_user("rotor", &["secretsmanager:GetSecretValue"]);
    let with_secret = |secret: &str| {
        no_cache(
            AgentConfig::new()
                .endpoint(&world.moto)
                .resource("r", &arn)
                .keys(&id, secret),
        )
    };
    let agent = Agent::start(&with_secret("an-old-secret-key-that-was-rotated"), &[]);
    get(&agent.url("/secrets/r"))
        .await
        .assert_error(502, "upstream_access_denied");

    agent.reload(&with_secret(&secret));
    assert!(
        agent.wait_for_log("new AWS credentials and clients", Duration::from_secs(10)),
        "{}",
        agent.log()
    );
    let r = get(&agent.url("/secrets/r")).await;
    assert_eq!((r.status, r.text().as_str()), (200, "rotated-value"));
    assert!(
        !agent.log().contains("take effect only after a restart"),
        "{}",
        agent.log()
    );
    assert_log_clean(
        &agent,
        &[secret.as_str(), "an-old-secret-key-that-was-rotated"],
    );
}
