//! Soak: steady reads while AWS (and IMDS) fail in turns. Runs
//! `SOAK_SECONDS` (default 20; the benchmark runs 60).
//!
//! Required: no non-2xx answer, no socket error, RSS growth under 10%; and
//! with Secrets Manager failing, no read over 500 ms (stale while
//! revalidate: an expired value waits at most `cache.stale-wait`).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use serde_json::json;

use crate::support::*;

fn soak_duration() -> Duration {
    let secs = std::env::var("SOAK_SECONDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(20);
    Duration::from_secs(secs)
}

/// The faults, in turns, each held for `hold`: 503, connection reset,
/// an 800 ms delay, healthy.
fn cycle_faults(
    proxies: Vec<Proxy<'static>>,
    hold: Duration,
    stop: Arc<AtomicBool>,
) -> std::thread::JoinHandle<()> {
    std::thread::spawn(move || {
        let faults = [
            json!({"fault": "status", "status": 503}),
            json!({"fault": "reset"}),
            json!({"fault": "delay", "delay_ms": 800}),
            json!({"fault": "none"}),
        ];
        for fault in faults.iter().cycle() {
            if stop.load(Ordering::Relaxed) {
                break;
            }
            for proxy in &proxies {
                proxy.set_fault(fault.clone());
            }
            std::thread::sleep(hold);
        }
        for proxy in &proxies {
            proxy.set_fault(json!({"fault": "none"}));
        }
    })
}

struct Outcome {
    reads: u64,
    non_2xx: u64,
    socket_errors: u64,
    rss_growth: f64,
    /// The slowest read.
    slowest: Duration,
}

/// Reads the `names` (value = expected body) with 4 readers for the soak
/// duration, after one warm-up pass.
async fn soak(
    agent: &Agent,
    names: &[(String, String)],
    faults: impl FnOnce(Arc<AtomicBool>) -> std::thread::JoinHandle<()>,
) -> Outcome {
    for (name, value) in names {
        let r = get(&agent.url(&format!("/secrets/{name}"))).await;
        assert_eq!((r.status, &r.text()), (200, value), "warm-up {name}");
    }
    let stop = Arc::new(AtomicBool::new(false));
    let cycler = faults(stop.clone());
    let (reads, non_2xx, socket_errors, slowest_us) = (
        Arc::new(AtomicU64::new(0)),
        Arc::new(AtomicU64::new(0)),
        Arc::new(AtomicU64::new(0)),
        Arc::new(AtomicU64::new(0)),
    );
    // The first part (a quarter, at most 5 s) warms up under the same load
    // and faults; RSS growth is measured from its end.
    let warm_up = (soak_duration() / 4).min(Duration::from_secs(5));
    let deadline = Instant::now() + warm_up + soak_duration();
    let client = client();
    let readers: Vec<_> = (0..4)
        .map(|reader| {
            let names = names.to_vec();
            let (client, base) = (client.clone(), agent.url(""));
            let (reads, non_2xx, socket_errors, slowest_us) = (
                reads.clone(),
                non_2xx.clone(),
                socket_errors.clone(),
                slowest_us.clone(),
            );
            tokio::spawn(async move {
                let mut i = reader;
                while Instant::now() < deadline {
                    let (name, value) = &names[i % names.len()];
                    i += 7;
                    let started = Instant::now();
                    match client.get(format!("{base}/secrets/{name}")).send().await {
                        Ok(r) if r.status().is_success() => {
                            let body = r.text().await.unwrap_or_default();
                            let took = u64::try_from(started.elapsed().as_micros()).unwrap();
                            slowest_us.fetch_max(took, Ordering::Relaxed);
                            assert_eq!(&body, value, "wrong value for {name}");
                        }
                        Ok(r) => {
                            eprintln!(
                                "soak: {name} -> {} {}",
                                r.status(),
                                r.text().await.unwrap_or_default()
                            );
                            non_2xx.fetch_add(1, Ordering::Relaxed);
                        }
                        Err(e) => {
                            eprintln!("soak: {name}: {e}");
                            socket_errors.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                    reads.fetch_add(1, Ordering::Relaxed);
                    tokio::time::sleep(Duration::from_millis(2)).await;
                }
            })
        })
        .collect();
    tokio::time::sleep(warm_up).await;
    let baseline = agent.rss_kib().expect("VmRSS");
    for reader in readers {
        reader.await.unwrap();
    }
    stop.store(true, Ordering::Relaxed);
    cycler.join().unwrap();
    let end = agent.rss_kib().expect("VmRSS");
    let outcome = Outcome {
        reads: reads.load(Ordering::Relaxed),
        non_2xx: non_2xx.load(Ordering::Relaxed),
        socket_errors: socket_errors.load(Ordering::Relaxed),
        rss_growth: (end as f64 - baseline as f64) / baseline as f64,
        slowest: Duration::from_micros(slowest_us.load(Ordering::Relaxed)),
    };
    eprintln!(
        "soak: {} reads, {} non-2xx, {} socket errors, RSS {baseline} -> {end} KiB ({:+.1}%), slowest read {}ms",
        outcome.reads,
        outcome.non_2xx,
        outcome.socket_errors,
        outcome.rss_growth * 100.0,
        outcome.slowest.as_millis()
    );
    outcome
}

fn assert_sturdy(outcome: &Outcome) {
    assert!(outcome.reads > 100, "too few reads: {}", outcome.reads);
    assert_eq!(outcome.non_2xx, 0, "non-2xx answers");
    assert_eq!(outcome.socket_errors, 0, "socket errors");
    assert!(
        outcome.rss_growth < 0.10,
        "RSS grew {:.1}%",
        outcome.rss_growth * 100.0
    );
}

/// (name, value) or (name, ARN) pairs.
type Pairs = Vec<(String, String)>;

fn seed(world: &'static World, count: usize, tag: &str) -> (Pairs, Pairs) {
    let mut names = Vec::new();
    let mut table = Vec::new();
    for i in 0..count {
        let secret = unique(&format!("{tag}{i}"));
        let value = format!("{{\"n\":{i},\"v\":\"{secret}\"}}");
        let arn = world.create_secret(REGION, &secret, &value);
        names.push((format!("s{i}"), value));
        table.push((format!("s{i}"), arn));
    }
    (names, table)
}

/// Reads `table` from `endpoint` with a short TTL and a long stale window.
fn soak_config(endpoint: &str, table: Pairs) -> AgentConfig {
    AgentConfig::new()
        .endpoint(endpoint)
        .resources(table)
        .cache(|c| c.ttl("2s").max_stale("10m").fetch_timeout("2s"))
        .log_level("warn")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn soak_through_secrets_manager_faults() {
    let world = World::shared();
    let (names, table) = seed(world, 50, "soak");
    let proxy = world.proxy();
    let agent = Agent::start(
        &soak_config(&proxy.url, table).test_keys(),
        &[("RUST_LOG", "info")],
    );
    let cycle = proxy.clone();
    let outcome = soak(&agent, &names, move |stop| {
        cycle_faults(vec![cycle], Duration::from_millis(1500), stop)
    })
    .await;
    assert_sturdy(&outcome);
    assert!(
        outcome.slowest < Duration::from_millis(500),
        "a read took {:?}",
        outcome.slowest
    );
    assert!(
        proxy.gets("soak") + proxy.batch_gets("soak") > 50,
        "refreshes happened during the soak"
    );
}

/// Credentials from IMDS that live 4 s, with IMDS itself and Secrets
/// Manager failing in turns.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn soak_through_imds_faults() {
    let world = World::shared();
    let (names, table) = seed(world, 20, "soakimds");
    let imds = world.imds(4, "ASIASOAK");
    let imds_proxy = world.proxy_to(&imds.url);
    let sm_proxy = world.proxy();
    let agent = Agent::start(
        &soak_config(&sm_proxy.url, table),
        &[
            ("RUST_LOG", "info"),
            ("AWS_EC2_METADATA_DISABLED", "false"),
            ("AWS_EC2_METADATA_SERVICE_ENDPOINT", &imds_proxy.url),
        ],
    );
    let cycled = vec![imds_proxy.clone(), sm_proxy.clone()];
    let outcome = soak(&agent, &names, move |stop| {
        cycle_faults(cycled, Duration::from_millis(1500), stop)
    })
    .await;
    assert_sturdy(&outcome);
    let state = imds.state();
    assert!(
        state["generation"].as_u64().unwrap() >= 2,
        "credentials rotated: {state}"
    );
}

/// Assume-role credentials that STS says expire in 5 s (the proxy rewrites
/// the answer; real STS grants at least 15 minutes), so they are refreshed
/// every few seconds while STS and Secrets Manager fail in turns.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn soak_through_sts_faults_during_assume_role_refreshes() {
    let world = World::shared();
    let (names, table) = seed(world, 20, "soaksts");
    let sts = world.proxy();
    world.cmd(json!({"op": "proxy_sts_lifetime", "id": sts.id, "seconds": 5}));
    let sm = world.proxy();
    let config = soak_config(&sm.url, table)
        .test_keys()
        .assume_role(AssumeRole::Arn(
            "arn:aws:iam::123456789012:role/soak".into(),
        ))
        .sts_endpoint(&sts.url);
    let agent = Agent::start(&config, &[("RUST_LOG", "info")]);
    let cycled = vec![sts.clone(), sm.clone()];
    let outcome = soak(&agent, &names, move |stop| {
        cycle_faults(cycled, Duration::from_millis(1500), stop)
    })
    .await;
    assert_sturdy(&outcome);
    let assumed = sts
        .calls()
        .iter()
        .filter(|c| c.action == "AssumeRole")
        .count();
    assert!(
        assumed >= 3,
        "assume-role credentials were refreshed under faults: {assumed} calls"
    );
}
