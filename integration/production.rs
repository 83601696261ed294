//! Running it: health and readiness, metrics, hot reload, graceful
//! shutdown and the CLI (the AWS-agent-compatible routes: `aws_agent.rs`).

use std::time::Duration;

use serde_json::json;

use crate::support::*;

#[tokio::test]
async fn health_and_readiness_need_no_token() {
    let f = Fixture::new();
    let arn = f.secret("ready", "ready-value").arn;
    f.proxy
        .set_fault(json!({"fault": "delay", "delay_ms": 1500}));
    let config = f
        .config()
        .resource("r", &arn)
        .cache(|c| c.prefetch())
        .token_env("T", &["*"]);
    let agent = Agent::start(&config, &[("T", "ready-token-123")]);
    assert_eq!(get(&agent.url("/healthz")).await.status, 200);
    // The prefetch takes 1.5 s: not ready yet, and the body says why.
    let r = get(&agent.url("/readyz")).await;
    assert_eq!(r.status, 503, "{}", r.text());
    assert!(r.text().contains("prefetch"), "{}", r.text());
    assert!(
        eventually(Duration::from_secs(8), async || get(&agent.url("/readyz"))
            .await
            .status
            == 200)
        .await,
        "ready after the prefetch"
    );
    assert_eq!(get(&agent.url("/secrets/r")).await.status, 401);

    // No credentials anywhere: alive, not ready, and the body says why.
    let config = AgentConfig::new()
        .endpoint(&f.world.moto)
        .resource("r", &arn);
    let agent = Agent::start(&config, &[]);
    assert_eq!(get(&agent.url("/healthz")).await.status, 200);
    let r = get(&agent.url("/readyz")).await;
    assert_eq!(r.status, 503);
    assert!(
        r.json()["missing"][0]
            .as_str()
            .unwrap()
            .contains("credentials"),
        "{}",
        r.text()
    );
}

#[tokio::test]
async fn metrics_count_what_happened() {
    let world = World::shared();
    let value = format!("metric-secret-{}", unique("v"));
    let secret = world.secret("metrics", &value);
    let agent = Agent::start(&world.config().resource("m", &secret.arn), &[]);
    assert_eq!(
        get(&agent.url("/secrets/m"))
            .await
            .header("secret-agent-cache"),
        Some("miss")
    );
    assert_eq!(
        get(&agent.url("/secrets/m"))
            .await
            .header("secret-agent-cache"),
        Some("hit")
    );
    assert_eq!(get(&agent.url("/secrets/m")).await.status, 200);
    assert_eq!(get(&agent.url("/secrets/nope")).await.status, 404);

    let r = get(&agent.url("/metrics")).await;
    assert_eq!(r.status, 200);
    assert!(r.header("content-type").unwrap().starts_with("text/plain"));
    let text = r.text();
    assert!(!text.contains(&value), "a secret value in the metrics");
    let m = parse_metrics(&text);
    let get_metric = |k: &str| *m.get(k).unwrap_or_else(|| panic!("no {k} in\n{text}"));
    assert_eq!(
        get_metric("secret_agent_requests_total{route=secrets,status=200}"),
        3.0
    );
    assert_eq!(
        get_metric("secret_agent_requests_total{route=secrets,status=404}"),
        1.0
    );
    assert_eq!(
        get_metric("secret_agent_cache_results_total{result=miss}"),
        1.0
    );
    assert_eq!(
        get_metric("secret_agent_cache_results_total{result=hit}"),
        2.0
    );
    assert_eq!(
        get_metric("secret_agent_upstream_calls_total{action=GetSecretValue,outcome=ok}"),
        1.0
    );
    assert_eq!(
        get_metric("secret_agent_upstream_latency_seconds{action=GetSecretValue}"),
        1.0
    );
    assert_eq!(get_metric("secret_agent_cached_entries{}"), 1.0);
    assert!(
        m.contains_key("secret_agent_credential_refreshes_total{}"),
        "{text}"
    );
}

/// Per-resource figures are labelled with configured names only.
#[tokio::test]
async fn per_resource_metrics_name_configured_resources_only() {
    let world = World::shared();
    let secret = world.secret("per-resource", "v1");
    let agent = Agent::start(
        &world
            .config()
            .resource("pr", &secret.arn)
            .resource("never-read", &secret.arn),
        &[],
    );
    assert_eq!(get(&agent.url("/secrets/pr")).await.text(), "v1");
    world.put_secret_value(REGION, &secret.arn, "v2");
    let r = get(&agent.url("/secrets/pr?refresh=true")).await;
    assert_eq!(r.text(), "v2");
    assert_eq!(get(&agent.url("/secrets/made-up-name")).await.status, 404);
    let text = get(&agent.url("/metrics")).await.text();
    let m = parse_metrics(&text);
    let metric = |k: &str| *m.get(k).unwrap_or_else(|| panic!("no {k} in\n{text}"));
    assert!(metric("secret_agent_resource_value_age_seconds{resource=pr}") < 5.0);
    assert_eq!(
        metric("secret_agent_resource_last_refresh{outcome=ok,resource=pr}"),
        1.0
    );
    assert_eq!(
        metric("secret_agent_resource_version_changes{resource=pr}"),
        1.0
    );
    // Both names share the one cached secret.
    assert_eq!(
        metric("secret_agent_resource_version_changes{resource=never-read}"),
        1.0
    );
    assert!(!text.contains("made-up-name"), "{text}");
}

#[tokio::test]
async fn sighup_reloads_resources_and_refuses_a_broken_file() {
    let world = World::shared();
    let a = world.secret("reload-a", "value-a").arn;
    let b = world.secret("reload-b", "value-b").arn;
    let agent = Agent::start(
        &world.config().resource("a", &a),
        &[("RELOAD_TOKEN", "reload-token-1")],
    );
    assert_eq!(get(&agent.url("/secrets/a")).await.text(), "value-a");
    assert_eq!(get(&agent.url("/secrets/b")).await.status, 404);

    // Add b, remove a.
    let only_b = world.config().resource("b", &b);
    agent.reload(&only_b);
    assert!(
        agent.wait_for_log("reloaded", Duration::from_secs(5)),
        "{}",
        agent.log()
    );
    assert_eq!(get(&agent.url("/secrets/b")).await.text(), "value-b");
    get(&agent.url("/secrets/a"))
        .await
        .assert_error(404, "resource_not_found");

    // A broken file: one error line, the running config stays.
    std::fs::write(agent.config_path(), "service:\n  tcp:\n    endpoint: [\n").unwrap();
    agent.signal("HUP");
    assert!(
        agent.wait_for_log("reload refused", Duration::from_secs(5)),
        "{}",
        agent.log()
    );
    assert_eq!(agent.log().matches("reload refused").count(), 1);
    assert_eq!(get(&agent.url("/secrets/b")).await.text(), "value-b");

    // Tokens take effect at once; a listener change is reported as needing a restart.
    agent.reload(&only_b.tcp("127.0.0.1:1").token_env("RELOAD_TOKEN", &["b"]));
    assert!(
        agent.wait_for_log("1 client token(s)", Duration::from_secs(5)),
        "{}",
        agent.log()
    );
    assert!(agent.log().contains(
        "the listeners (service.tcp, service.uds) changed; that takes effect only after a restart"
    ));
    assert_eq!(get(&agent.url("/secrets/b")).await.status, 401);
    let r = client()
        .get(agent.url("/secrets/b"))
        .bearer_auth("reload-token-1")
        .send()
        .await
        .unwrap();
    assert_eq!(r.text().await.unwrap(), "value-b");
}

#[tokio::test]
async fn sigterm_lets_an_in_flight_read_finish_then_exits_zero() {
    let f = Fixture::new();
    let secret = f.secret("drain", "drained-value");
    f.proxy
        .set_fault(json!({"fault": "delay", "delay_ms": 2000}));
    let mut agent = Agent::start(&f.config().resource("d", &secret.arn), &[]);
    let url = agent.url("/secrets/d");
    let read = tokio::spawn(async move { get(&url).await });
    // Wait until the fetch is under way, then ask the agent to stop.
    assert!(
        eventually(Duration::from_secs(5), async || f.proxy.in_flight() == 1).await,
        "the fetch reached the upstream"
    );
    agent.signal("TERM");
    let r = read.await.unwrap();
    assert_eq!((r.status, r.text().as_str()), (200, "drained-value"));
    let status = agent.wait_exit(Duration::from_secs(15)).expect("exited");
    assert_eq!(status.code(), Some(0), "{}", agent.log());
}

#[test]
fn version_and_help() {
    let (code, out, _) = run_cli(&["--version"]);
    assert_eq!(code, 0);
    assert!(out.starts_with("secret-agent "), "{out}");
    let (code, out, _) = run_cli(&["--help"]);
    assert_eq!(code, 0);
    for flag in ["--config", "-c", "--check", "--version", "--help"] {
        assert!(out.contains(flag), "--help lacks {flag}:\n{out}");
    }
    let (code, _, err) = run_cli(&["--no-such-flag"]);
    assert_eq!(code, 2);
    assert!(err.contains("--no-such-flag"), "{err}");
}

/// `/readyz` needs no token, so it counts the failing prefetches without
/// naming them; the log names each ARN.
#[tokio::test]
async fn readiness_counts_failing_prefetches_and_the_log_names_them() {
    let world = World::shared();
    let arn = world.secret("ready-ok", "ok").arn;
    let missing = unique("ready-missing");
    let missing_arn = format!("arn:aws:secretsmanager:{REGION}:210987654321:secret:{missing}");
    let config = world
        .config()
        .resource("ok", &arn)
        .resource("missing", &missing_arn)
        .cache(|c| c.prefetch());
    let agent = Agent::start(&config, &[]);
    assert!(
        eventually(Duration::from_secs(10), async || get(&agent.url("/readyz"))
            .await
            .status
            == 200)
        .await,
        "{}",
        agent.log()
    );
    let r = get(&agent.url("/readyz")).await;
    assert_eq!(r.json()["prefetch_failing"], 1, "{}", r.text());
    for hidden in ["210987654321", missing.as_str()] {
        assert!(!r.text().contains(hidden), "{}", r.text());
    }
    assert!(
        agent
            .log()
            .lines()
            .any(|l| l.contains(" WARN ")
                && l.contains(&format!("prefetch of {missing_arn} failed"))),
        "{}",
        agent.log()
    );
}

/// The agent's threads named as actix-server's workers name them (the
/// kernel keeps 15 bytes of a thread's name).
fn serving_threads(agent: &Agent) -> usize {
    std::fs::read_dir(format!("/proc/{}/task", agent.pid()))
        .map(|tasks| {
            tasks
                .filter_map(|task| std::fs::read_to_string(task.ok()?.path().join("comm")).ok())
                .filter(|name| name.starts_with("actix-server wo"))
                .count()
        })
        .unwrap_or(0)
}

#[tokio::test]
async fn workers_sets_the_threads_that_serve_connections() {
    let f = Fixture::new();
    let arn = f.secret("workers", "workers-value").arn;
    for workers in [1, 3] {
        let agent = Agent::start(&f.config().resource("w", &arn).workers(workers), &[]);
        // It serves with any number of workers.
        for _ in 0..workers * 2 {
            assert_eq!(get(&agent.url("/secrets/w")).await.text(), "workers-value");
        }
        assert!(
            eventually(Duration::from_secs(10), async || serving_threads(&agent)
                == workers)
            .await,
            "workers: {workers}, serving threads: {}",
            serving_threads(&agent)
        );
    }
}
