//! Hostile upstreams: a custom `endpoint`, a proxy or a compromised path
//! answering without end, with garbage, with values larger than AWS
//! stores, or for another account's secret. The agent reads at most a
//! bounded answer, refuses what AWS would never answer, and serves only
//! what it asked for.

use std::time::{Duration, Instant};

use serde_json::json;

use crate::support::*;

const SECRET: &str = "arn:aws:secretsmanager:us-west-1:123456789012:secret:hostile-AbCdEf";
/// Named without its suffix, as a pattern or a partial ARN asks.
const PARTIAL: &str = "arn:aws:secretsmanager:us-west-1:123456789012:secret:hostile-other";
const PARAMETER: &str = "arn:aws:ssm:us-west-1:123456789012:parameter/hostile/db";

/// A loose bound on the agent's peak RSS while hostile answers come, in MB:
/// without a cap, an endless answer grows it past a gigabyte.
const PEAK_RSS_MB: f64 = 100.0;

/// Every answer body is capped at this (src/aws_http.rs).
const CAP_MESSAGE: &str = "larger than 1048576 bytes";

/// An agent whose every AWS call goes to `hostile`, as a user's custom
/// `endpoint` and `ssm-endpoint` would send them.
fn agent_on(hostile: &Hostile, change: impl FnOnce(AgentConfig) -> AgentConfig) -> Agent {
    let config = AgentConfig::new()
        .endpoint(&hostile.url)
        .ssm_endpoint(&hostile.url)
        .test_keys()
        .resource("x", SECRET)
        .resource("other", PARTIAL)
        .resource("p", PARAMETER);
    Agent::start(&change(config), &[])
}

fn peak_rss_mb(agent: &Agent) -> f64 {
    agent.peak_rss_kib().expect("the agent runs") as f64 / 1024.0
}

/// The message of an error answer.
fn message(reply: &Reply) -> String {
    reply.json()["message"]
        .as_str()
        .unwrap_or_default()
        .to_owned()
}

#[tokio::test]
async fn an_endless_answer_is_cut_at_the_cap() {
    let world = World::shared();
    let hostile = world.hostile("endless", json!({}));
    let agent = agent_on(&hostile, |c| c);
    let r = get(&agent.url("/secrets/x")).await;
    r.assert_error(502, "upstream_bad_answer");
    assert!(message(&r).contains(CAP_MESSAGE), "{}", r.text());
    let peak = peak_rss_mb(&agent);
    assert!(peak < PEAK_RSS_MB, "peak RSS {peak:.0} MB");
    // Still answering.
    assert_eq!(get(&agent.url("/ping")).await.status, 200);
}

#[tokio::test]
async fn a_slow_endless_answer_is_cut_by_the_cap_long_before_the_deadline() {
    let world = World::shared();
    // 64 KiB every 20 ms: the cap is reached within a second or so.
    let hostile = world.hostile("endless", json!({"pace_ms": 20}));
    let agent = agent_on(&hostile, |c| c.cache(|c| c.fetch_timeout("60s")));
    let started = Instant::now();
    let r = get(&agent.url("/secrets/x")).await;
    r.assert_error(502, "upstream_bad_answer");
    assert!(message(&r).contains(CAP_MESSAGE), "{}", r.text());
    // The SDK tries three times; each stops at the cap.
    assert!(
        started.elapsed() < Duration::from_secs(20),
        "{:?}",
        started.elapsed()
    );
}

#[tokio::test]
async fn garbage_is_refused_without_buffering_it() {
    let world = World::shared();
    let hostile = world.hostile("garbage", json!({"size_mb": 100}));
    let agent = agent_on(&hostile, |c| c);
    let r = get(&agent.url("/secrets/x")).await;
    r.assert_error(502, "upstream_bad_answer");
    assert!(message(&r).contains(CAP_MESSAGE), "{}", r.text());
    let peak = peak_rss_mb(&agent);
    assert!(peak < PEAK_RSS_MB, "peak RSS {peak:.0} MB");
}

#[tokio::test]
async fn a_stalled_answer_is_bounded_by_the_fetch_timeout() {
    let world = World::shared();
    let hostile = world.hostile("stall", json!({}));
    let agent = agent_on(&hostile, |c| c.cache(|c| c.fetch_timeout("2s")));
    let started = Instant::now();
    let r = get(&agent.url("/secrets/x")).await;
    r.assert_error(504, "upstream_timeout");
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "{:?}",
        started.elapsed()
    );
}

#[tokio::test]
async fn values_larger_than_aws_stores_are_refused_and_never_served() {
    let world = World::shared();
    let hostile = world.hostile("value", json!({"value_bytes": 60 << 20}));
    let agent = agent_on(&hostile, |c| c);
    // 60 and 10 MiB: over the answer cap; 64 KiB + 1: over AWS's limit.
    for (size, expected) in [
        (60 << 20, CAP_MESSAGE.to_owned()),
        (10 << 20, CAP_MESSAGE.to_owned()),
        (
            65_537,
            format!("the value of {SECRET} is larger than AWS's limit of 65536 bytes"),
        ),
    ] {
        hostile.set("value", json!({"value_bytes": size}));
        // Twice: a refused value is not cached either.
        for _ in 0..2 {
            let r = get(&agent.url("/secrets/x")).await;
            r.assert_error(502, "upstream_bad_answer");
            assert!(message(&r).contains(&expected), "{size}: {}", r.text());
            assert!(
                !r.text().contains("xxxxxxxx"),
                "{size}: the value is not echoed"
            );
        }
    }
    let peak = peak_rss_mb(&agent);
    assert!(peak < PEAK_RSS_MB, "peak RSS {peak:.0} MB");
    // A parameter over Parameter Store's limit (generously, 32 KiB).
    hostile.set("value", json!({"value_bytes": 40_000}));
    let r = get(&agent.url("/secrets/p")).await;
    r.assert_error(502, "upstream_bad_answer");
    assert!(message(&r).contains(PARAMETER), "{}", r.text());
    assert!(!r.text().contains("xxxxxxxx"));
    assert!(!agent.log().contains("xxxxxxxx"), "no value in the log");
    // At AWS's limits, values are served.
    hostile.set("value", json!({"value_bytes": 65_536}));
    let r = get(&agent.url("/secrets/x")).await;
    assert_eq!((r.status, r.body.len()), (200, 65_536));
    hostile.set("value", json!({"value_bytes": 8192}));
    let r = get(&agent.url("/secrets/p")).await;
    assert_eq!((r.status, r.body.len()), (200, 8192));
}

#[tokio::test]
async fn an_answer_for_another_account_is_refused() {
    let world = World::shared();
    let hostile = world.hostile("foreign_arn", json!({}));
    let agent = agent_on(&hostile, |c| c);
    for name in ["x", "other", "p"] {
        let r = get(&agent.url(&format!("/secrets/{name}"))).await;
        r.assert_error(502, "upstream_bad_answer");
        let message = message(&r);
        assert!(
            message.contains(":999999999999:") && message.contains(":123456789012:"),
            "{name}: {message}"
        );
        assert!(
            !r.text().contains("xxxxxxxx"),
            "{name}: the value is not echoed"
        );
    }
    // The same answer for the asked account is served.
    hostile.set("value", json!({"value_bytes": 8}));
    for name in ["x", "other", "p"] {
        let r = get(&agent.url(&format!("/secrets/{name}"))).await;
        assert_eq!((r.status, r.text().as_str()), (200, "xxxxxxxx"), "{name}");
    }
    assert!(!agent.log().contains("xxxxxxxx"), "no value in the log");
}

#[tokio::test]
async fn batch_entries_for_secrets_not_asked_for_are_dropped() {
    let world = World::shared();
    let hostile = world.hostile("foreign_arn", json!({}));
    // Two secrets of one region: the prefetch asks for both in one batch.
    let agent = agent_on(&hostile, |c| c.cache(|c| c.prefetch()));
    assert!(
        agent.wait_for_log(
            "BatchGetSecretValue answered a secret that was not asked for",
            Duration::from_secs(20)
        ),
        "{}",
        agent.log()
    );
    assert!(hostile.calls().iter().any(|a| a == "BatchGetSecretValue"));
    let r = get(&agent.url("/secrets/x")).await;
    r.assert_error(502, "upstream_bad_answer");
    assert!(!agent.log().contains("xxxxxxxx"), "no value in the log");
}

#[tokio::test]
async fn an_oversized_answer_after_a_good_one_serves_the_cached_value() {
    let world = World::shared();
    let hostile = world.hostile("value", json!({"value_bytes": 8}));
    let agent = agent_on(&hostile, |c| c.cache(|c| c.ttl("1s").max_stale("1h")));
    let r = get(&agent.url("/secrets/x")).await;
    assert_eq!((r.status, r.text().as_str()), (200, "xxxxxxxx"));
    hostile.set("garbage", json!({"size_mb": 100}));
    let stale = eventually(Duration::from_secs(20), async || {
        let r = get(&agent.url("/secrets/x")).await;
        assert_eq!((r.status, r.text().as_str()), (200, "xxxxxxxx"));
        r.header("secret-agent-cache") == Some("stale")
    })
    .await;
    assert!(stale, "{}", agent.log());
    let peak = peak_rss_mb(&agent);
    assert!(peak < PEAK_RSS_MB, "peak RSS {peak:.0} MB");
}
