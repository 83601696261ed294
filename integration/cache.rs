//! The cache against a real upstream through the fault-injecting proxy:
//! single flight, refresh ahead, bounded stale, versions, prefetch,
//! eviction and revoked permissions.

use std::time::{Duration, Instant};

use serde_json::json;

use crate::support::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_hundred_concurrent_first_reads_make_one_call() {
    let f = Fixture::new();
    let secret = f.secret("storm", "storm-value");
    let agent = Agent::start(
        &f.config()
            .resource("storm", &secret.arn)
            .cache(|c| c.ttl("5m")),
        &[],
    );
    f.proxy
        .set_fault(json!({"fault": "delay", "delay_ms": 1500}));
    for answer in get_at_once(&agent.url("/secrets/storm"), 200).await {
        assert_eq!(answer, (200, "storm-value".to_owned()));
    }
    assert_eq!(f.proxy.gets(&secret.name), 1);
}

#[tokio::test]
async fn steady_reads_never_wait_on_a_slow_upstream_after_the_first() {
    let f = Fixture::new();
    let secret = f.secret("steady", "v1");
    let agent = Agent::start(
        &f.config()
            .resource("steady", &secret.arn)
            .cache(|c| c.ttl("2s").refresh_ahead("1s")),
        &[],
    );
    f.proxy
        .set_fault(json!({"fault": "delay", "delay_ms": 1500}));
    let url = agent.url("/secrets/steady");
    assert_eq!(get(&url).await.text(), "v1");
    f.world.put_secret_value(REGION, &secret.arn, "v2");
    // Read steadily until the refreshed value is served. A read that waited
    // for the upstream's answer would say `miss`; how long a read takes is
    // a bench figure (refresh_ahead_slow_upstream_slowest_read_ms).
    let mut seen_v2 = false;
    let deadline = Instant::now() + Duration::from_secs(10);
    while !seen_v2 && Instant::now() < deadline {
        let r = get(&url).await;
        assert_eq!(r.status, 200);
        assert_ne!(
            r.header("secret-agent-cache"),
            Some("miss"),
            "a read waited"
        );
        seen_v2 = r.text() == "v2";
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(seen_v2, "the refreshed value was served");
    assert!(
        f.proxy.gets(&secret.name) >= 2,
        "refreshed in the background"
    );
}

#[tokio::test]
async fn expired_values_are_served_stale_within_stale_wait_while_aws_is_slow() {
    let f = Fixture::new();
    let secrets: Vec<_> = (0..5)
        .map(|n| f.secret("swr", &format!("old-{n}")))
        .collect();
    let mut config = f.config().cache(|c| c.ttl("2s"));
    for (n, secret) in secrets.iter().enumerate() {
        config = config.resource(&format!("swr{n}"), &secret.arn);
    }
    let agent = Agent::start(&config, &[]);
    let url = |n: usize| agent.url(&format!("/secrets/swr{n}"));
    for n in 0..secrets.len() {
        assert_eq!(get(&url(n)).await.text(), format!("old-{n}"));
    }
    for (n, secret) in secrets.iter().enumerate() {
        f.world
            .put_secret_value(REGION, &secret.arn, &format!("new-{n}"));
    }
    let names: Vec<String> = (0..secrets.len()).map(|n| format!("swr{n}")).collect();
    let names: Vec<&str> = names.iter().map(String::as_str).collect();
    assert!(
        values_older_than(&agent, &names, Duration::from_secs(2)).await,
        "every value expired"
    );
    f.proxy
        .set_fault(json!({"fault": "delay", "delay_ms": 3000}));
    // Each answered stale, not after the 3 s fetch; how long within
    // stale-wait is a bench figure (brownout_3s_expired_read_max_ms).
    for n in 0..secrets.len() {
        let r = get(&url(n)).await;
        assert_eq!(
            (r.status, r.text(), r.header("secret-agent-cache")),
            (200, format!("old-{n}"), Some("stale"))
        );
    }
    // The fetches went on: the new values arrive.
    assert!(
        eventually(Duration::from_secs(10), async || {
            let m = metrics(&agent).await;
            (0..secrets.len()).all(|n| {
                m.get(&format!(
                    "secret_agent_resource_version_changes{{resource=swr{n}}}"
                )) == Some(&1.0)
            })
        })
        .await,
        "the new values arrived"
    );
    for n in 0..secrets.len() {
        let r = get(&url(n)).await;
        assert_eq!(
            (r.text(), r.header("secret-agent-cache")),
            (format!("new-{n}"), Some("hit"))
        );
    }
    for secret in &secrets {
        assert_eq!(f.proxy.gets(&secret.name), 2);
    }
}

#[tokio::test]
async fn outage_serves_stale_then_fails_closed_then_recovers() {
    let f = Fixture::new();
    let secret = f.secret("outage", "before-outage");
    let agent = Agent::start(
        &f.config()
            .resource("o", &secret.arn)
            .cache(|c| c.ttl("1s").max_stale("3s").fetch_timeout("2s")),
        &[],
    );
    let url = agent.url("/secrets/o");
    assert_eq!(get(&url).await.header("secret-agent-cache"), Some("miss"));
    assert_eq!(get(&url).await.header("secret-agent-cache"), Some("hit"));

    f.proxy.set_fault(json!({"fault": "status", "status": 503}));
    let started = Instant::now();
    // Within ttl + max-stale: the old value, marked stale, never an error.
    let mut stale = 0;
    while started.elapsed() < Duration::from_millis(2500) {
        let r = get(&url).await;
        assert_eq!((r.status, r.text().as_str()), (200, "before-outage"));
        if r.header("secret-agent-cache") == Some("stale") {
            stale += 1;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(stale > 0, "stale reads were marked");

    // Connection resets are survived the same way.
    f.proxy.set_fault(json!({"fault": "reset"}));
    let r = get(&url).await;
    assert_eq!(
        (r.status, r.header("secret-agent-cache")),
        (200, Some("stale"))
    );

    // Past ttl + max-stale: fail closed.
    assert!(
        eventually(Duration::from_secs(5), async || get(&url).await.status
            == 503)
        .await,
        "503 after max-stale"
    );
    get(&url).await.assert_error(503, "upstream_unavailable");

    // Recovery.
    f.proxy.set_fault(json!({"fault": "none"}));
    f.world
        .put_secret_value(REGION, &secret.arn, "after-outage");
    let r = get(&url).await;
    assert_eq!((r.status, r.text().as_str()), (200, "after-outage"));
    assert_eq!(r.header("secret-agent-cache"), Some("miss"));
}

#[tokio::test]
async fn versions_by_stage_and_id() {
    let f = Fixture::new();
    let secret = f.secret("versions", r#"{"pw":"old"}"#);
    let old_id = f.world.call(
        "secretsmanager",
        REGION,
        "describe_secret",
        json!({"SecretId": secret.arn}),
    )["VersionIdsToStages"]
        .as_object()
        .unwrap()
        .keys()
        .next()
        .unwrap()
        .clone();
    f.world
        .put_secret_value(REGION, &secret.arn, r#"{"pw":"new"}"#);
    let agent = Agent::start(&f.config().resource("v", &secret.arn), &[]);

    let read = async |path: &str| get(&agent.url(path)).await;
    assert_eq!(read("/secrets/v").await.text(), r#"{"pw":"new"}"#);
    assert_eq!(
        read("/secrets/v?version-stage=AWSPREVIOUS").await.text(),
        r#"{"pw":"old"}"#
    );
    assert_eq!(
        read("/secrets/v/pw?version-stage=AWSPREVIOUS").await.text(),
        "old"
    );
    assert_eq!(
        read(&format!("/secrets/v/pw?version-id={old_id}"))
            .await
            .text(),
        "old"
    );
    assert_eq!(
        read("/secrets/v/pw?version-stage=AWSCURRENT").await.text(),
        "new"
    );
    // Each version is cached on its own.
    let r = read("/secrets/v?version-stage=AWSPREVIOUS").await;
    assert_eq!(r.header("secret-agent-cache"), Some("hit"));
    assert_eq!(f.proxy.gets(&secret.name), 4);

    read("/secrets/v?version-stage=NOSUCHSTAGE")
        .await
        .assert_error(404, "version_not_found");
    let r = read("/secrets/v?version-id=00000000-0000-0000-0000-000000000000").await;
    assert!(r.status == 404 || r.status == 400, "{}", r.text());
    // Both, as AWS takes them: the id, if it carries the label.
    assert_eq!(
        read(&format!(
            "/secrets/v/pw?version-id={old_id}&version-stage=AWSPREVIOUS"
        ))
        .await
        .text(),
        "old"
    );
    let r = read(&format!(
        "/secrets/v/pw?version-id={old_id}&version-stage=AWSCURRENT"
    ))
    .await;
    assert!(r.text().contains("VersionStage"), "{}", r.text());
    r.assert_error(404, "version_not_found");
    read("/secrets/v?version-stage=&version-id=B")
        .await
        .assert_error(400, "bad_request");
}

#[tokio::test]
async fn forced_refresh_reads_the_new_value_now() {
    let f = Fixture::new();
    let secret = f.secret("forced", "first");
    let agent = Agent::start(
        &f.config().resource("f", &secret.arn).cache(|c| c.ttl("1h")),
        &[],
    );
    let url = agent.url("/secrets/f");
    assert_eq!(get(&url).await.text(), "first");
    f.world.put_secret_value(REGION, &secret.arn, "second");
    assert_eq!(get(&url).await.text(), "first");
    let r = get(&format!("{url}?refresh=true")).await;
    assert_eq!(
        (r.text().as_str(), r.header("secret-agent-cache")),
        ("second", Some("miss"))
    );
    assert_eq!(get(&url).await.text(), "second");
    // A failed forced refresh returns the error and keeps the cached value.
    f.proxy.set_fault(json!({"fault": "status", "status": 503}));
    assert!(get(&format!("{url}?refresh=true")).await.status >= 500);
    let r = get(&url).await;
    assert_eq!((r.status, r.text().as_str()), (200, "second"));
}

#[tokio::test]
async fn prefetch_fills_the_cache_and_survives_a_failing_resource() {
    let f = Fixture::new();
    let names: Vec<String> = (0..5).map(|i| unique(&format!("pre{i}"))).collect();
    let table = names.iter().map(|n| {
        (
            n,
            f.world.create_secret(REGION, n, &format!("value-of-{n}")),
        )
    });
    let missing = unique("pre-missing");
    let config = f
        .config()
        .resources(table)
        .resource(
            "missing",
            &format!("arn:aws:secretsmanager:{REGION}:123456789012:secret:{missing}"),
        )
        .cache(|c| c.prefetch());
    let agent = Agent::start(&config, &[]);
    let proxy = &f.proxy;
    assert!(
        agent.wait_for_log("prefetched 6 resource(s)", Duration::from_secs(10)),
        "{}",
        agent.log()
    );
    assert!(agent.log().contains(&format!(
        "prefetch of arn:aws:secretsmanager:{REGION}:123456789012:secret:{missing} failed"
    )));
    for n in &names {
        assert_eq!(proxy.gets(n), 0, "{n} prefetched in a batch call");
        assert_eq!(proxy.batch_gets(n), 1, "{n} prefetched once");
        let r = get(&agent.url(&format!("/secrets/{n}"))).await;
        assert_eq!(r.text(), format!("value-of-{n}"));
        assert_eq!(r.header("secret-agent-cache"), Some("hit"));
    }
    // A secret that does not exist (an error of its own in the batch
    // answer) is asked for again in a minute, not now.
    assert_eq!((proxy.batch_gets(&missing), proxy.gets(&missing)), (1, 0));
    get(&agent.url("/secrets/missing"))
        .await
        .assert_error(502, "upstream_secret_not_found");
}

/// A reload that removes a resource stops its prefetch retries: those of a
/// transient failure (every second or two) and of a lasting one (a missing
/// secret, once a minute); neither is asked for again.
///
/// A kept resource failing the same way from the same start (the witness)
/// goes on retrying on the same backoff: once it has been asked for twice
/// more than the removed one had been at the reload, the removed one's next
/// retry would have come (below the backoff's cap, a retry's longest delay
/// is no longer than the next one's shortest).
#[tokio::test]
async fn a_reload_stops_the_prefetch_retries_of_removed_resources() {
    let world = World::shared();
    let (kept, flaky, missing) = (unique("kept"), unique("flaky"), unique("gone"));
    let kept_arn = world.create_secret(REGION, &kept, "kept-value");
    let flaky_arn = world.create_secret(REGION, &flaky, "flaky-value");
    let missing_arn = format!("arn:aws:secretsmanager:{REGION}:123456789012:secret:{missing}");
    let proxy = world.proxy();
    proxy.set_fault(json!({"fault": "status", "status": 503, "only_secret": flaky}));
    let yaml = |resources: &[(&str, &str)]| {
        AgentConfig::new()
            .endpoint(&proxy.url)
            .test_keys()
            .resources(resources.iter().copied())
            .cache(|c| c.prefetch().fetch_timeout("1s"))
    };
    let agent = Agent::start(
        &yaml(&[
            ("kept", &kept_arn),
            ("flaky", &flaky_arn),
            ("missing", &missing_arn),
        ]),
        &[],
    );
    assert!(
        agent.wait_for_log("prefetched 3 resource(s)", Duration::from_secs(10)),
        "{}",
        agent.log()
    );
    assert!(
        eventually(Duration::from_secs(5), async || proxy.gets(&flaky) >= 2).await,
        "the transient failure is retried"
    );
    assert_eq!(proxy.gets(&missing), 1);
    let failing = get(&agent.url("/readyz")).await.json()["prefetch_failing"].clone();
    assert_eq!(failing, json!(2));
    for arn in [&flaky_arn, &missing_arn] {
        assert!(agent.log().contains(arn.as_str()), "{}", agent.log());
    }

    agent.reload(&yaml(&[("kept", &kept_arn)]));
    assert!(
        agent.wait_for_log("2 removed", Duration::from_secs(5)),
        "{}",
        agent.log()
    );
    // A fetch under way at the reload ends within fetch-timeout.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let flaky_calls = proxy.gets(&flaky);
    tokio::time::sleep(Duration::from_secs(4)).await;
    assert_eq!(proxy.gets(&flaky), flaky_calls, "{}", agent.log());
    assert_eq!(proxy.gets(&missing), 1);
    let ready = get(&agent.url("/readyz")).await;
    assert_eq!(ready.json()["prefetch_failing"], json!(0));
    assert_eq!(proxy.gets(&kept), 1);
}

#[tokio::test]
async fn least_recently_used_entry_is_evicted() {
    let f = Fixture::new();
    let (a, b, c) = (
        f.secret("lru-a", "A"),
        f.secret("lru-b", "B"),
        f.secret("lru-c", "C"),
    );
    let agent = Agent::start(
        &f.config()
            .resource("a", &a.arn)
            .resource("b", &b.arn)
            .resource("c", &c.arn)
            .cache(|c| c.max_entries(2)),
        &[],
    );
    let read = async |n: &str| get(&agent.url(&format!("/secrets/{n}"))).await;
    read("a").await;
    read("b").await;
    read("a").await; // b is now the least recently used
    read("c").await; // evicts b
    assert_eq!(read("a").await.header("secret-agent-cache"), Some("hit"));
    assert_eq!(read("b").await.header("secret-agent-cache"), Some("miss"));
    assert_eq!(
        (
            f.proxy.gets(&a.name),
            f.proxy.gets(&b.name),
            f.proxy.gets(&c.name)
        ),
        (1, 2, 1)
    );
}

#[tokio::test]
async fn ttl_zero_reads_every_time() {
    let f = Fixture::new();
    let secret = f.secret("ttl0", "zero");
    let agent = Agent::start(
        &f.config().resource("z", &secret.arn).cache(|c| c.ttl("0")),
        &[],
    );
    for _ in 0..3 {
        let r = get(&agent.url("/secrets/z")).await;
        assert_eq!(
            (r.text().as_str(), r.header("secret-agent-cache")),
            ("zero", Some("miss"))
        );
    }
    assert_eq!(f.proxy.gets(&secret.name), 3);
}

/// moto enforces IAM when INITIAL_NO_AUTH_ACTION_COUNT is set: the first
/// that many calls are free, later ones need keys and a policy.
#[tokio::test]
async fn revoked_permission_stops_a_cached_secret_at_the_next_refresh() {
    let world = World::start(&[("INITIAL_NO_AUTH_ACTION_COUNT", "7")]);
    // 7 unauthenticated calls: set up an admin and a reader, then a secret.
    let (admin_id, admin_secret) = world.iam_user("admin", &["*"]);
    let (reader_id, reader_secret) = world.iam_user("reader", &["secretsmanager:GetSecretValue"]);
    let arn = world.call(
        "secretsmanager",
        REGION,
        "create_secret",
        json!({"Name": unique("revoked"), "SecretString": "readable-for-now"}),
    )["ARN"]
        .as_str()
        .unwrap()
        .to_owned();
    let as_admin = |service: &str, region: &str, method: &str, args: serde_json::Value| {
        world.cmd(json!({"op": "call", "service": service, "region": region, "method": method, "args": args,
            "access_key_id": admin_id, "secret_access_key": admin_secret}))
    };

    let agent = Agent::start(
        &AgentConfig::new()
            .endpoint(&world.moto)
            .resource("r", &arn)
            .keys(&reader_id, &reader_secret)
            .cache(|c| c.ttl("2s").refresh_ahead("1s")),
        &[],
    );
    let url = agent.url("/secrets/r");
    assert_eq!(get(&url).await.text(), "readable-for-now");
    assert_eq!(get(&url).await.header("secret-agent-cache"), Some("hit"));

    as_admin(
        "iam",
        "us-east-1",
        "delete_user_policy",
        json!({"UserName": "reader", "PolicyName": "allow"}),
    );
    // The refresh (at 1 s) is refused: the value must not be served any more,
    // even though its TTL has not run out.
    assert!(
        eventually(Duration::from_secs(4), async || get(&url).await.status
            != 200)
        .await,
        "still served after the permission was revoked"
    );
    get(&url).await.assert_error(502, "upstream_access_denied");
    assert!(agent.log().contains("AccessDenied"), "{}", agent.log());
    assert!(!agent.log().contains(reader_secret.as_str()));
}

/// `count` new secrets, the n-th holding `<value>-<n>`, and the fixture's
/// config naming it `<name><n>`.
fn numbered_secrets(
    f: &Fixture,
    count: usize,
    value: &str,
    name: &str,
) -> (Vec<Secret>, AgentConfig) {
    let secrets: Vec<_> = (0..count)
        .map(|n| f.secret(value, &format!("{value}-{n}")))
        .collect();
    let config = f.config().resources(
        secrets
            .iter()
            .enumerate()
            .map(|(n, s)| (format!("{name}{n}"), s.arn.clone())),
    );
    (secrets, config)
}

/// Prefetch and refresh ahead ask for up to 20 secrets per
/// BatchGetSecretValue call, counted at the proxy.
#[tokio::test]
async fn prefetch_and_refresh_ahead_batch_twenty_secrets_per_call() {
    let f = Fixture::new();
    let (secrets, config) = numbered_secrets(&f, 45, "old", "b");
    let config = config.cache(|c| c.prefetch().ttl("3s").refresh_ahead("1s"));
    let agent = Agent::start(&config, &[]);
    assert!(
        agent.wait_for_log("prefetched 45 resource(s)", Duration::from_secs(10)),
        "{}",
        agent.log()
    );
    let batches = |f: &Fixture| {
        f.proxy
            .calls()
            .iter()
            .filter(|c| c.action == "BatchGetSecretValue")
            .map(|c| c.secret_ids.len())
            .collect::<Vec<_>>()
    };
    let mut sizes = batches(&f);
    sizes.sort();
    assert_eq!(sizes, [5, 20, 20]);
    for (n, secret) in secrets.iter().enumerate() {
        assert_eq!(f.proxy.gets(&secret.name), 0);
        let r = get(&agent.url(&format!("/secrets/b{n}"))).await;
        assert_eq!(
            (r.text(), r.header("secret-agent-cache")),
            (format!("old-{n}"), Some("hit"))
        );
        f.world
            .put_secret_value(REGION, &secret.arn, &format!("new-{n}"));
    }
    // Every value was read: they are refreshed ahead together, in three
    // batch calls, and the new values are served as hits.
    assert!(
        eventually(Duration::from_secs(5), async || batches(&f).len() == 6).await,
        "{:?}",
        batches(&f)
    );
    // Counted when they reach the proxy; stored once answered.
    assert!(
        eventually(Duration::from_secs(5), async || {
            let m = metrics(&agent).await;
            (0..secrets.len()).all(|n| {
                m.get(&format!(
                    "secret_agent_resource_version_changes{{resource=b{n}}}"
                )) == Some(&1.0)
            })
        })
        .await,
        "the refreshed values are stored"
    );
    for n in 0..secrets.len() {
        let r = get(&agent.url(&format!("/secrets/b{n}"))).await;
        assert_eq!(
            (r.text(), r.header("secret-agent-cache")),
            (format!("new-{n}"), Some("hit"))
        );
    }
    assert_eq!(batches(&f).len(), 6);
    assert!(f.proxy.calls().iter().all(|c| c.action != "GetSecretValue"));
}

/// A policy without `secretsmanager:BatchGetSecretValue` (moto enforcing
/// IAM): the batch call is refused, and the agent falls back to one
/// GetSecretValue per secret.
#[tokio::test]
async fn a_refused_batch_call_falls_back_to_single_calls() {
    let world = World::start(&[("INITIAL_NO_AUTH_ACTION_COUNT", "6")]);
    // 6 unauthenticated calls: a reader and three secrets.
    let (reader_id, reader_secret) = world.iam_user("reader", &["secretsmanager:GetSecretValue"]);
    let arns: Vec<String> = (0..3)
        .map(|n| world.create_secret(REGION, &unique("single"), &format!("single-{n}")))
        .collect();
    let proxy = world.proxy();
    let agent = Agent::start(
        &AgentConfig::new()
            .endpoint(&proxy.url)
            .resources(
                arns.iter()
                    .enumerate()
                    .map(|(n, a)| (format!("s{n}"), a.clone())),
            )
            .keys(&reader_id, &reader_secret)
            .cache(|c| c.prefetch()),
        &[],
    );
    assert!(
        agent.wait_for_log("prefetched 3 resource(s)", Duration::from_secs(10)),
        "{}",
        agent.log()
    );
    assert!(
        agent.log().contains("BatchGetSecretValue was refused"),
        "{}",
        agent.log()
    );
    let calls = proxy.calls();
    let count = |action: &str| calls.iter().filter(|c| c.action == action).count();
    assert_eq!(
        (count("BatchGetSecretValue"), count("GetSecretValue")),
        (1, 3)
    );
    for n in 0..3 {
        let r = get(&agent.url(&format!("/secrets/s{n}"))).await;
        assert_eq!(
            (r.text(), r.header("secret-agent-cache")),
            (format!("single-{n}"), Some("hit"))
        );
    }
    assert_eq!(get(&agent.url("/readyz")).await.status, 200);
}

/// `refresh-ahead: 0`, the cheap setting: hot secrets read first at
/// different times are soon refreshed together, at expiry, in one round of
/// batch calls per TTL (45 secrets: 3 calls), and every read is answered.
#[tokio::test]
async fn refreshed_at_expiry_hot_secrets_cost_one_round_of_batch_calls_per_ttl() {
    let f = Fixture::new();
    let (secrets, config) = numbered_secrets(&f, 45, "value", "e");
    let config = config.cache(|c| c.ttl("3s").refresh_ahead("0s"));
    let agent = Agent::start(&config, &[]);
    let read_all = async || {
        for n in 0..secrets.len() {
            let r = get(&agent.url(&format!("/secrets/e{n}"))).await;
            assert_eq!(r.status, 200);
            assert_eq!(r.text(), format!("value-{n}"));
        }
    };
    // First reads, one call each, all at once: they expire within a few
    // hundred milliseconds of each other.
    futures_util::future::join_all(
        (0..secrets.len()).map(|n| get_owned(agent.url(&format!("/secrets/e{n}")))),
    )
    .await;
    let first = f.proxy.calls().len();
    assert_eq!(first, 45);
    let started = Instant::now();
    while started.elapsed() < Duration::from_millis(10_500) {
        read_all().await;
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let calls = f.proxy.calls()[first..].to_vec();
    let actions: Vec<_> = calls.iter().map(|c| c.action.as_str()).collect();
    assert!(
        actions.iter().all(|a| *a == "BatchGetSecretValue"),
        "{actions:?}"
    );
    // Rounds: calls more than half a second apart.
    let mut rounds: Vec<Vec<usize>> = Vec::new();
    let mut first_round_ids = std::collections::HashSet::new();
    let mut last = f64::MIN;
    for call in &calls {
        if call.time - last > 0.5 {
            rounds.push(Vec::new());
        }
        last = call.time;
        rounds.last_mut().unwrap().push(call.secret_ids.len());
        if rounds.len() == 1 {
            first_round_ids.extend(call.secret_ids.iter().cloned());
        }
    }
    // Three expiries in 10.5 s of a 3 s TTL, each round all 45 secrets,
    // at most 20 a call. From the second round on, the secrets expire
    // together, so a round is 3 calls. The first round gathers those that
    // expire within 0.6 s of the first; on a loaded machine the first
    // reads may finish further apart than that, and then it takes one
    // call more. How a round splits its 45 depends on when each expiry is
    // seen (12 + 13 + 20 as well as 5 + 20 + 20); the cost is the same.
    // Under load that first round has also been seen to ask again for
    // secrets it had just fetched (20 + 20 + 5 + 16): it covers all 45 in
    // at most 4 calls; from the second round on, each round is exact.
    assert_eq!(rounds.len(), 3, "{rounds:?}");
    for (i, round) in rounds.iter().enumerate() {
        assert!(round.iter().all(|&n| n <= 20), "{rounds:?}");
        if i == 0 {
            assert!((3..=4).contains(&round.len()), "{rounds:?}");
            assert_eq!(first_round_ids.len(), 45, "{rounds:?}");
        } else {
            assert_eq!(round.len(), 3, "{rounds:?}");
            assert_eq!(round.iter().sum::<usize>(), 45, "{rounds:?}");
        }
    }
}

async fn get_owned(url: String) -> Reply {
    get(&url).await
}
