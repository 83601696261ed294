//! What a hostile local client can make the agent spend at AWS, which bills
//! each call: forced refreshes in a loop, made-up version ids, a configured
//! secret that does not exist, a flood of misses, and failed lookups that
//! would push other clients' values out of the cache.

use std::time::{Duration, Instant};

use futures_util::future::join_all;
use serde_json::json;

use crate::support::*;

/// Forced refreshes of one secret allowed at once (`cache::REFRESH_BURST`).
const BURST: usize = 3;

/// `GET path` on `agent` for each of `paths`, `at_once` at a time.
async fn get_all(
    agent: &Agent,
    paths: &[String],
    at_once: usize,
    headers: &[(&str, &str)],
) -> Vec<Reply> {
    let mut replies = Vec::with_capacity(paths.len());
    for chunk in paths.chunks(at_once) {
        let urls: Vec<String> = chunk.iter().map(|p| agent.url(p)).collect();
        replies.extend(join_all(urls.iter().map(|url| get_with(url, headers))).await);
    }
    replies
}

#[tokio::test]
async fn forced_refreshes_in_a_loop_are_rate_limited() {
    let f = Fixture::new();
    let Secret { name: secret, arn } = f.secret("cost-refresh", "v1");
    let (world, proxy) = (f.world, &f.proxy);
    let agent = Agent::start(
        &f.config()
            .resource("r", &arn)
            .cache(|c| c.min_refresh_interval("1s")),
        &[],
    );
    let refresh = agent.url("/secrets/r?refresh=true");
    let refresh_now = agent.url("/secretsmanager/get?secretId=r&refreshNow=true");
    assert_eq!(get(&agent.url("/secrets/r")).await.text(), "v1");
    // A refresh right after an update reads the new value.
    world.put_secret_value(REGION, &arn, "v2");
    let r = get(&refresh).await;
    assert_eq!(
        (r.text().as_str(), r.header("secret-agent-cache")),
        ("v2", Some("miss"))
    );

    // 200 forced refreshes over about 2 s, on both routes.
    let before = proxy.gets(&secret);
    let started = Instant::now();
    for i in 0..200 {
        let r = get(if i % 2 == 0 { &refresh } else { &refresh_now }).await;
        assert_eq!(r.status, 200, "{}", r.text());
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let elapsed = started.elapsed().as_secs_f64();
    let calls = proxy.gets(&secret) - before;
    println!("cost: 200 forced refreshes in {elapsed:.1} s -> {calls} GetSecretValue calls");
    let bound = BURST + elapsed as usize + 1;
    assert!(
        calls <= bound,
        "{calls} calls for 200 forced refreshes in {elapsed:.1} s; at most {bound}"
    );

    // Once the interval has passed, a refresh after an update reads it again.
    world.put_secret_value(REGION, &arn, "v3");
    assert!(
        eventually(Duration::from_secs(5), async || {
            let r = get(&refresh).await;
            (r.text().as_str(), r.header("secret-agent-cache")) == ("v3", Some("miss"))
        })
        .await,
        "a forced refresh reads v3 again"
    );
}

#[tokio::test]
async fn unknown_version_ids_cost_one_call_each_per_negative_ttl() {
    let f = Fixture::new();
    let Secret { name: secret, arn } = f.secret("cost-versions", "v");
    let proxy = &f.proxy;
    let agent = Agent::start(
        &f.config()
            .resource("v", &arn)
            .cache(|c| c.negative_ttl("30s")),
        &[],
    );
    // 300 distinct version ids that do not exist, each asked twice.
    let paths: Vec<String> = (0..300)
        .map(|i| format!("/secrets/v?version-id=00000000-0000-4000-8000-{i:012}"))
        .collect();
    let started = Instant::now();
    for _ in 0..2 {
        for r in get_all(&agent, &paths, 20, &[]).await {
            r.assert_error(404, "version_not_found");
        }
    }
    let calls = proxy.gets(&secret);
    println!(
        "cost: 600 reads of 300 unknown version ids in {:.1} s -> {calls} GetSecretValue calls",
        started.elapsed().as_secs_f64()
    );
    assert!(calls <= 300, "{calls} calls for 300 unknown versions");

    // The same unknown version asked 100 times, on both routes: one call.
    for i in 0..100 {
        if i % 2 == 0 {
            get(&agent.url("/secrets/v?version-id=ffffffff-0000-4000-8000-000000000000"))
                .await
                .assert_error(404, "version_not_found");
        } else {
            // The AWS agent's route answers with AWS's status and error.
            let r = get(&agent.url("/v1/v?versionId=ffffffff-0000-4000-8000-000000000000")).await;
            assert_eq!(r.status, 400, "{}", r.text());
            assert!(
                r.text().contains("ResourceNotFoundException"),
                "{}",
                r.text()
            );
        }
    }
    assert_eq!(proxy.gets(&secret) - calls, 1);
}

#[tokio::test]
async fn a_configured_secret_that_does_not_exist_costs_one_call_per_negative_ttl() {
    let f = Fixture::new();
    let missing = unique("cost-missing");
    let arn = format!("arn:aws:secretsmanager:{REGION}:123456789012:secret:{missing}");
    let proxy = &f.proxy;
    let agent = Agent::start(&f.config().resource("gone", &arn), &[]);
    for _ in 0..100 {
        get(&agent.url("/secrets/gone"))
            .await
            .assert_error(502, "upstream_secret_not_found");
    }
    println!(
        "cost: 100 reads of a missing secret -> {} GetSecretValue calls",
        proxy.gets(&missing)
    );
    assert_eq!(proxy.gets(&missing), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn calls_in_flight_are_bounded_and_the_rest_wait_or_are_busy() {
    let world = World::shared();
    let names: Vec<String> = (0..12).map(|i| unique(&format!("cost-flood{i}"))).collect();
    let table: Vec<(&String, String)> = names
        .iter()
        .map(|n| (n, world.create_secret(REGION, n, &format!("value-of-{n}"))))
        .collect();
    let paths: Vec<String> = names.iter().map(|n| format!("/secrets/{n}")).collect();

    // A slow AWS and 12 misses at once: two calls at a time, all served.
    let proxy = world.proxy();
    proxy.set_fault(json!({"fault": "delay", "delay_ms": 300}));
    let agent = Agent::start(
        &AgentConfig::new()
            .endpoint(&proxy.url)
            .resources(table.clone())
            .test_keys()
            .max_concurrent_calls(2)
            .cache(|c| c.fetch_timeout("10s")),
        &[],
    );
    let started = Instant::now();
    let replies = get_all(&agent, &paths, paths.len(), &[]).await;
    for (r, n) in replies.iter().zip(&names) {
        assert_eq!((r.status, r.text()), (200, format!("value-of-{n}")));
    }
    let most = proxy.max_in_flight();
    println!(
        "cost: 12 concurrent misses, max-concurrent-calls 2 -> at most {most} calls in flight, all served in {:.1} s",
        started.elapsed().as_secs_f64()
    );
    assert!((1..=2).contains(&most), "{most} calls in flight at once");

    // AWS hangs and one call at a time: the first times out, the others
    // waited their turn until the same deadline and are busy.
    let hanging = world.proxy();
    hanging.set_fault(json!({"fault": "hang", "delay_ms": 5000}));
    let agent = Agent::start(
        &AgentConfig::new()
            .endpoint(&hanging.url)
            .resources(table)
            .test_keys()
            .max_concurrent_calls(1)
            .cache(|c| c.fetch_timeout("1s")),
        &[],
    );
    let started = Instant::now();
    let replies = get_all(&agent, &paths[..4], 4, &[]).await;
    let elapsed = started.elapsed();
    let codes: Vec<(u16, String)> = replies
        .iter()
        .map(|r| {
            (
                r.status,
                r.json()["error"].as_str().unwrap_or("").to_owned(),
            )
        })
        .collect();
    let count = |status, code: &str| {
        codes
            .iter()
            .filter(|c| **c == (status, code.to_owned()))
            .count()
    };
    assert_eq!(
        (count(504, "upstream_timeout"), count(503, "upstream_busy")),
        (1, 3),
        "{codes:?}"
    );
    assert!(elapsed < Duration::from_secs(3), "{elapsed:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_lookups_of_one_client_never_evict_what_others_read() {
    let f = Fixture::new();
    let Secret {
        name: mine,
        arn: mine_arn,
    } = f.secret("cost-victim", "still-served");
    let Secret {
        name: theirs,
        arn: theirs_arn,
    } = f.secret("cost-attacker", "theirs");
    let proxy = &f.proxy;
    let agent = Agent::start(
        &f.config()
            .resource("mine", &mine_arn)
            .resource("theirs", &theirs_arn)
            .cache(|c| c.max_entries(1000))
            .token_env("VICTIM", &["mine"])
            .token_env("ATTACKER", &["theirs"]),
        &[
            ("VICTIM", "victim-token-0123456789abcdef"),
            ("ATTACKER", "attacker-token-0123456789abcdef"),
        ],
    );
    let victim = [("Authorization", "Bearer victim-token-0123456789abcdef")];
    let attacker = [("Authorization", "Bearer attacker-token-0123456789abcdef")];
    let url = agent.url("/secrets/mine");
    assert_eq!(get_with(&url, &victim).await.text(), "still-served");
    assert_eq!(
        get_with(&url, &victim).await.header("secret-agent-cache"),
        Some("hit")
    );

    // The attacker's token reads only its own secret: 2,000 unknown versions of it.
    let paths: Vec<String> = (0..2000)
        .map(|i| format!("/secrets/theirs?version-id=00000000-0000-4000-8000-{i:012}"))
        .collect();
    let started = Instant::now();
    for r in get_all(&agent, &paths, 32, &attacker).await {
        r.assert_error(404, "version_not_found");
    }
    println!(
        "cost: 2000 unknown versions from one scoped token in {:.1} s -> {} GetSecretValue calls",
        started.elapsed().as_secs_f64(),
        proxy.gets(&theirs)
    );
    assert!(proxy.gets(&theirs) <= 2000);

    // Then AWS goes down: the victim's value is still served.
    proxy.set_fault(json!({"fault": "status", "status": 503}));
    let r = get_with(&url, &victim).await;
    assert_eq!((r.status, r.text().as_str()), (200, "still-served"));
    assert!(
        matches!(r.header("secret-agent-cache"), Some("hit" | "stale")),
        "{:?}",
        r.header("secret-agent-cache")
    );
    assert_eq!(proxy.gets(&mine), 1);
}

/// Under a pattern every name a client makes up costs an AWS call the first
/// time: new names are fetched at `cache.new-names-per-second` (a burst of
/// twice that), the rest answered 429 at once; names already asked cost
/// nothing more, nor do configured names.
#[tokio::test]
async fn made_up_names_under_a_pattern_cost_a_bounded_number_of_calls() {
    let f = Fixture::new();
    let prefix = unique("cost-names");
    let real = f
        .world
        .create_secret(REGION, &format!("{prefix}/real"), "v");
    let pattern = format!("arn:aws:secretsmanager:{REGION}:123456789012:secret:{prefix}/*");
    let agent = Agent::start(
        &f.config()
            .resource("all/*", &pattern)
            .resource("exact", &real)
            .cache(|c| c.new_names_per_second(5)),
        &[],
    );
    assert_eq!(get(&agent.url("/secrets/all/real")).await.status, 200);

    let started = Instant::now();
    let paths: Vec<String> = (0..200)
        .map(|n| format!("/secrets/all/made-up-{n}"))
        .collect();
    let replies = get_all(&agent, &paths, 20, &[]).await;
    let elapsed = started.elapsed().as_secs_f64();
    let limited = replies
        .iter()
        .filter(|r| r.status == 429 && r.text().contains("new_names_rate_limited"))
        .count();
    let missing = replies.iter().filter(|r| r.status == 404).count();
    assert_eq!(
        limited + missing,
        200,
        "{:?}",
        replies.iter().map(|r| r.status).collect::<Vec<_>>()
    );
    // The burst (10, one of which the real name took), then 5 a second.
    let calls = f.proxy.gets(&format!("{prefix}/made-up"));
    let bound = 10 + (5.0 * elapsed).ceil() as usize;
    assert!(
        calls <= bound && calls == missing,
        "{calls} calls, {missing} 404, bound {bound}"
    );
    assert!(limited >= 150, "{limited}");

    // Known names still answer at once: cached, configured, remembered missing.
    assert_eq!(get(&agent.url("/secrets/all/real")).await.status, 200);
    assert_eq!(get(&agent.url("/secrets/exact")).await.status, 200);
    let first_missing = replies.iter().position(|r| r.status == 404).unwrap();
    assert_eq!(get(&agent.url(&paths[first_missing])).await.status, 404);
    assert_eq!(f.proxy.gets(&format!("{prefix}/made-up")), calls);
    // And new names are admitted again after a while.
    assert!(
        eventually(Duration::from_secs(5), async || get(
            &agent.url("/secrets/all/later")
        )
        .await
        .status
            == 404)
        .await,
        "a new name admitted again"
    );
}
