//! The AWS Workload Credentials Provider's surface: `sm start --config`
//! with its nested TOML, and `roleArn` on the compatible routes, each role
//! read as with credentials assumed over the agent's own (recorded: the
//! proxies show which key signed each call), in a cache of its own, only
//! by tokens that list it, at most `max-roles` at once.

use std::time::Duration;

use serde_json::json;

use crate::support::*;

const TOKEN: &str = "workload-token-3f9c";
const OTHER_TOKEN: &str = "workload-other-token-81ad";

async fn read(agent: &Agent, token: &str, query: &str) -> Reply {
    get_with(
        &agent.url(&format!("/secretsmanager/get?{query}")),
        &[("X-Aws-Parameters-Secrets-Token", token)],
    )
    .await
}

/// An IAM role in moto's account, with `actions` allowed on any resource
/// (none: no policy). One IAM call, two with a policy.
fn role(world: &World, name: &str, actions: &[&str]) -> String {
    let trust = json!({"Version": "2012-10-17", "Statement": [{"Effect": "Allow",
        "Principal": {"AWS": "*"}, "Action": "sts:AssumeRole"}]});
    let created = world.call(
        "iam",
        REGION,
        "create_role",
        json!({"RoleName": name, "AssumeRolePolicyDocument": trust.to_string()}),
    );
    if !actions.is_empty() {
        let policy = json!({"Version": "2012-10-17",
            "Statement": [{"Effect": "Allow", "Action": actions, "Resource": "*"}]});
        world.call(
            "iam",
            REGION,
            "put_role_policy",
            json!({"RoleName": name, "PolicyName": "allow", "PolicyDocument": policy.to_string()}),
        );
    }
    created["Role"]["Arn"]
        .as_str()
        .expect("a role ARN")
        .to_owned()
}

/// The AssumeRole calls STS saw for `role`.
fn assumed(sts: &Proxy, role: &str) -> Vec<Call> {
    sts.calls()
        .into_iter()
        .filter(|c| c.action == "AssumeRole" && c.form["RoleArn"] == role)
        .collect()
}

/// The key id that signed the last GetSecretValue.
fn last_get_signer(proxy: &Proxy) -> String {
    proxy
        .calls()
        .into_iter()
        .rev()
        .find(|c| c.action == "GetSecretValue")
        .and_then(|c| c.access_key_id)
        .expect("a signed GetSecretValue")
}

fn query(role: &str) -> String {
    format!(
        "secretId=s&roleArn={}",
        role.replace(':', "%3A").replace('/', "%2F")
    )
}

/// Moto enforcing IAM: the agent's own user may only assume roles; the
/// role `reader` may read the secret, `nobody` may not. What each read
/// gets depends on the role it asked for, never on what another role (or
/// the agent itself) read before; tokens read only as the roles they list.
#[tokio::test]
async fn each_role_reads_with_its_own_credentials_and_cache_and_only_listed_tokens_use_it() {
    // Nine setup calls go unauthenticated; every later one is checked.
    let world = World::start(&[("INITIAL_NO_AUTH_ACTION_COUNT", "9")]);
    let arn = world.create_secret(REGION, &unique("wcp-role"), "read-as-reader");
    let (agent_id, agent_secret) = world.iam_user("agent", &["sts:AssumeRole"]);
    let (norole_id, norole_secret) = world.iam_user("norole", &[]);
    let reader = role(&world, "reader", &["secretsmanager:GetSecretValue"]);
    let nobody = role(&world, "nobody", &[]);
    world.assert_iam_enforced();
    let (sm, sts) = (world.proxy(), world.proxy());
    let config = |id: &str, secret: &str| {
        AgentConfig::new()
            .endpoint(&sm.url)
            .resource("s", &arn)
            .keys(id, secret)
            .token_env("WCP_TOKEN", &["*"])
            .token_roles(&[&reader, &nobody])
            .token_env("WCP_OTHER_TOKEN", &["*"])
            .token_roles(&["arn:aws:iam::123456789012:role/read*"])
    };
    let env = [
        ("WCP_TOKEN", TOKEN),
        ("WCP_OTHER_TOKEN", OTHER_TOKEN),
        ("AWS_ENDPOINT_URL_STS", sts.url.as_str()),
    ];
    let agent = Agent::start(&config(&agent_id, &agent_secret), &env);

    // As reader: signed with what STS gave for reader, itself asked with
    // the agent's key.
    let r = read(&agent, TOKEN, &query(&reader)).await;
    assert_eq!(r.status, 200, "{}\n{}", r.text(), agent.log());
    assert_eq!(r.json()["SecretString"], "read-as-reader");
    let calls = assumed(&sts, &reader);
    assert_eq!(calls.len(), 1, "{calls:?}");
    assert_eq!(calls[0].access_key_id.as_deref(), Some(agent_id.as_str()));
    let reader_key = calls[0].returned["AccessKeyId"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_eq!(last_get_signer(&sm), reader_key);

    // As nobody, the same secret name: AWS refuses it; reader's value is
    // not served from reader's cache.
    let r = read(&agent, TOKEN, &query(&nobody)).await;
    assert_eq!(r.status, 400, "{}", r.text());
    assert!(r.text().contains("AccessDenied"), "{}", r.text());
    let nobody_key = assumed(&sts, &nobody)[0].returned["AccessKeyId"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_eq!(last_get_signer(&sm), nobody_key);
    // Nor as the agent itself, whose user may not read secrets.
    let r = read(&agent, TOKEN, "secretId=s").await;
    assert_eq!(r.status, 400, "{}", r.text());
    assert!(r.text().contains("AccessDenied"), "{}", r.text());
    assert_eq!(last_get_signer(&sm), agent_id);

    // Reader again: its own cache, no new AssumeRole or GetSecretValue.
    let gets = sm.gets(&arn);
    let r = read(&agent, TOKEN, &query(&reader)).await;
    assert_eq!(r.json()["SecretString"], "read-as-reader");
    assert_eq!(r.header("secret-agent-cache"), Some("hit"));
    assert_eq!(sm.gets(&arn), gets);
    assert_eq!(assumed(&sts, &reader).len(), 1);

    // The other token lists `role/read*`: reader, not nobody, and no
    // AssumeRole is made for a role a token may not use.
    let r = read(&agent, OTHER_TOKEN, &query(&reader)).await;
    assert_eq!(r.status, 200, "{}", r.text());
    let before = sts.calls().len();
    let r = read(&agent, OTHER_TOKEN, &query(&nobody)).await;
    assert_eq!(r.status, 403, "{}", r.text());
    assert_eq!(r.json()["__type"], "AccessDeniedException");
    assert!(
        r.json()["message"]
            .as_str()
            .unwrap()
            .starts_with("this token may not read as role"),
        "{}",
        r.text()
    );
    let r = read(
        &agent,
        OTHER_TOKEN,
        &query("arn:aws:iam::123456789012:role/other"),
    )
    .await;
    assert_eq!(r.status, 403, "{}", r.text());
    assert_eq!(sts.calls().len(), before);

    // Not a role ARN: the provider's 400.
    let r = read(&agent, TOKEN, "secretId=s&roleArn=not-a-valid-arn").await;
    assert_eq!(r.status, 400);
    assert!(
        r.text().starts_with("invalid roleArn format"),
        "{}",
        r.text()
    );

    // An agent whose user may not assume roles: 403 AccessDenied, and the
    // next read tries again rather than remembering the failure.
    let agent = Agent::start(&config(&norole_id, &norole_secret), &env);
    for _ in 0..2 {
        let r = read(&agent, TOKEN, &query(&reader)).await;
        assert_eq!(r.status, 403, "{}", r.text());
        assert_eq!(r.json()["__type"], "AccessDeniedException");
        assert!(r.text().contains("cannot assume role"), "{}", r.text());
    }
    let tried: Vec<Call> = assumed(&sts, &reader)
        .into_iter()
        .filter(|c| c.access_key_id.as_deref() == Some(norole_id.as_str()))
        .collect();
    assert_eq!(tried.len(), 2, "{tried:?}");
    assert!(!agent.log().contains(&norole_secret));
}

/// Beyond `max-roles`, the least recently used role is dropped (and
/// assumed again when asked for); a new role is never refused.
#[tokio::test]
async fn roles_beyond_max_roles_drop_the_least_recently_used() {
    let Fixture { world, proxy } = Fixture::new();
    let arn = world.create_secret(REGION, &unique("wcp-lru"), "lru-value");
    let roles: Vec<String> = (0..3)
        .map(|i| role(world, &unique(&format!("lru-{i}")), &[]))
        .collect();
    let sts = world.proxy();
    let config = AgentConfig::new()
        .endpoint(&proxy.url)
        .test_keys()
        .resource("s", &arn)
        .max_roles(2)
        .token_env("WCP_TOKEN", &["*"])
        .token_roles(&["*"]);
    let agent = Agent::start(
        &config,
        &[("WCP_TOKEN", TOKEN), ("AWS_ENDPOINT_URL_STS", &sts.url)],
    );
    let as_role = async |i: usize| {
        let r = read(&agent, TOKEN, &query(&roles[i])).await;
        assert_eq!(r.status, 200, "{}\n{}", r.text(), agent.log());
        assert_eq!(r.json()["SecretString"], "lru-value");
        r.header("secret-agent-cache").map(str::to_owned)
    };
    let times = |i: usize| assumed(&sts, &roles[i]).len();
    as_role(0).await;
    as_role(1).await;
    assert_eq!(as_role(0).await.as_deref(), Some("hit"));
    // A third role: room is made by dropping role 1, used least recently.
    as_role(2).await;
    assert_eq!((times(0), times(1), times(2)), (1, 1, 1));
    assert_eq!(as_role(0).await.as_deref(), Some("hit"));
    assert!(
        agent.wait_for_log(
            &format!("role {} dropped: more than max-roles (2)", roles[1]),
            Duration::from_secs(5)
        ),
        "{}",
        agent.log()
    );
    // Role 1 again: assumed again, its value fetched again.
    let gets = proxy.gets(&arn);
    assert_ne!(as_role(1).await.as_deref(), Some("hit"));
    assert_eq!(times(1), 2);
    assert_eq!(proxy.gets(&arn), gets + 1);
}

/// `sm start --config FILE.toml` with the provider's nested TOML, as its
/// own test harness starts it; a key it does not have is refused by path.
#[tokio::test]
async fn sm_start_reads_the_nested_toml_and_refuses_unknown_keys() {
    let f = Fixture::new();
    let secret = f.secret("wcp-nested", r#"{"username":"testuser"}"#);
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let toml = dir.path().join("test_config.toml");
    std::fs::write(
        &toml,
        format!(
            "[logging]\nlog_level = \"info\"\n\n[capabilities.secrets_manager]\nhttp_port = {port}\nvalidate_credentials = true\n\n[capabilities.secrets_manager.cache]\nttl_seconds = 5\n"
        ),
    )
    .unwrap();
    let toml = toml.display().to_string();
    let env = [
        ("AWS_ENDPOINT_URL", f.proxy.url.as_str()),
        ("AWS_REGION", REGION),
        ("AWS_ACCESS_KEY_ID", "AKIDWCPHARNESS"),
        ("AWS_SECRET_ACCESS_KEY", "wcp-harness-secret"),
        ("AWS_TOKEN", TOKEN),
    ];
    let (agent, first_line) =
        Agent::try_start_with_args(&["sm", "start", "--config", &toml], &env, dir)
            .unwrap_or_else(|log| panic!("{log}"));
    assert!(
        first_line.contains(&format!("listening on http://127.0.0.1:{port}")),
        "{first_line}"
    );
    let r = read(&agent, TOKEN, &format!("secretId={}", secret.name)).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["SecretString"], r#"{"username":"testuser"}"#);

    let dir = tempfile::tempdir().unwrap();
    for (text, says) in [
        (
            "[capabilities.secrets_manager.cache]\nttl = 5\n",
            "unknown field `ttl`",
        ),
        (
            "http_port = 2775\n[logging]\nlog_level = \"info\"\n",
            "write it as capabilities.secrets_manager.http_port",
        ),
    ] {
        let bad = dir.path().join("bad.toml");
        std::fs::write(&bad, text).unwrap();
        let bad = bad.display().to_string();
        let mut env = env.to_vec();
        env.push(("AWS_ACCOUNT_ID", "123456789012"));
        let (code, stdout, stderr) =
            run_cli_with_env(&["--check", "sm", "start", "--config", &bad], &env);
        assert_eq!(code, 2, "{text}: {stderr}");
        assert!(stdout.is_empty(), "{stdout}");
        assert!(
            stderr.contains(&bad) && stderr.contains(says),
            "{says}: {stderr}"
        );
    }
}

/// `prefetch`: secrets found by tag key (ListSecrets, more than one page),
/// only those the resources map, and one named secret read as a role, all
/// fetched before any client asks.
#[tokio::test]
async fn prefetch_by_tag_over_pages_and_by_name_as_a_role() {
    let Fixture { world, proxy } = Fixture::new();
    let prefix = unique("wcp-tag");
    let tag = format!("{prefix}-key");
    let create = |name: &str, tagged: bool| {
        let mut args = json!({"Name": name, "SecretString": format!("value-of-{name}")});
        if tagged {
            args["Tags"] = json!([{"Key": tag, "Value": "yes"}]);
        }
        world.call("secretsmanager", REGION, "create_secret", args)["ARN"]
            .as_str()
            .unwrap()
            .to_owned()
    };
    // 23 tagged: two pages of 20.
    let tagged: Vec<String> = (0..23).map(|i| format!("{prefix}/t{i}")).collect();
    for name in &tagged {
        create(name, true);
    }
    let untagged = format!("{prefix}/plain");
    create(&untagged, false);
    let outside = unique("wcp-tag-outside");
    create(&outside, true);
    let named = format!("{prefix}/named");
    create(&named, false);
    let reader = role(world, &unique("wcp-prefetch-reader"), &[]);
    let sts = world.proxy();

    let pattern = format!("arn:aws:secretsmanager:{REGION}:123456789012:secret:{prefix}/*");
    let config = AgentConfig::new()
        .endpoint(&proxy.url)
        .test_keys()
        .resource(&format!("{prefix}/*"), &pattern)
        .token_env("WCP_TOKEN", &["*"])
        .token_roles(&[&reader])
        .prefetch(json!({"tags": [{"key": tag}],
            "secrets": [{"name": named, "role": reader}, {"name": "not-configured"}]}));
    let agent = Agent::start(
        &config,
        &[("WCP_TOKEN", TOKEN), ("AWS_ENDPOINT_URL_STS", &sts.url)],
    );
    // Every tagged secret under the pattern is fetched without a read.
    // By full ARN (suffix and all) or by the pattern's partial ARN.
    let names = |id: &str, name: &str| id.ends_with(name) || id.contains(&format!("{name}-"));
    let fetched = |name: &str| {
        proxy.calls().iter().any(|c| {
            c.action == "BatchGetSecretValue" && c.secret_ids.iter().any(|id| names(id, name))
                || c.action == "GetSecretValue"
                    && c.secret_id.as_deref().is_some_and(|id| names(id, name))
        })
    };
    assert!(
        eventually(Duration::from_secs(20), async || tagged
            .iter()
            .all(|n| fetched(n)))
        .await,
        "{:?}\n{}",
        proxy.calls(),
        agent.log()
    );
    let lists = proxy
        .calls()
        .iter()
        .filter(|c| c.action == "ListSecrets")
        .count();
    assert!(lists >= 2, "one page only: {lists}");
    assert!(!fetched(&untagged) && !fetched(&outside));
    // The named secret, as the role: assumed, fetched, then a hit.
    assert!(
        eventually(Duration::from_secs(20), async || assumed(&sts, &reader)
            .len()
            == 1
            && fetched(&named))
        .await,
        "{}",
        agent.log()
    );
    let r = read(
        &agent,
        TOKEN,
        &format!(
            "secretId={named}&roleArn={}",
            reader.replace(':', "%3A").replace('/', "%2F")
        ),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.header("secret-agent-cache"), Some("hit"));
    let r = read(&agent, TOKEN, &format!("secretId={}", tagged[22])).await;
    assert_eq!(r.json()["SecretString"], format!("value-of-{}", tagged[22]));
    assert_eq!(
        r.header("secret-agent-cache"),
        Some("hit"),
        "{:?}\n{}",
        proxy
            .calls()
            .iter()
            .map(|c| (&c.action, &c.secret_id, &c.secret_ids))
            .collect::<Vec<_>>(),
        agent.log()
    );
    // With a limit of 5: five of them, from the first page alone.
    let few = world.proxy();
    let limited = config
        .clone()
        .endpoint(&few.url)
        .prefetch(json!({"tags": [{"key": tag}], "limit": 5}));
    let small = Agent::start(&limited, &[("WCP_TOKEN", TOKEN)]);
    assert!(
        small.wait_for_log(
            "prefetch: 5 secret(s) as the agent",
            Duration::from_secs(10)
        ),
        "{}",
        small.log()
    );
    let asked = || {
        few.calls()
            .iter()
            .filter(|c| c.action == "BatchGetSecretValue")
            .map(|c| c.secret_ids.len())
            .sum::<usize>()
    };
    assert!(eventually(Duration::from_secs(10), async || asked() == 5).await);
    let lists = few
        .calls()
        .iter()
        .filter(|c| c.action == "ListSecrets")
        .count();
    assert_eq!((lists, asked()), (1, 5));
    assert!(
        agent.wait_for_log(
            "no configured resource maps are left out: not-configured",
            Duration::from_secs(5)
        ),
        "{}",
        agent.log()
    );
}
