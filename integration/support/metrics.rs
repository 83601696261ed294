//! The agent's `/metrics`, read as numbers: what tests wait on when the
//! agent has done something they cannot see in an answer.

use std::collections::HashMap;
use std::time::Duration;

use super::{Agent, eventually, get};

/// Every sample of a Prometheus text scrape, keyed `name{k=v,...}` with the
/// labels sorted and unquoted; a histogram by its count.
pub(crate) fn parse_metrics(text: &str) -> HashMap<String, f64> {
    let lines = text.lines().map(|l| Ok(l.to_owned()));
    let scrape = prometheus_parse::Scrape::parse(lines).expect("Prometheus text format");
    let mut out = HashMap::new();
    for sample in scrape.samples {
        let mut labels: Vec<String> = sample
            .labels
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect();
        labels.sort();
        let value = match sample.value {
            prometheus_parse::Value::Counter(v)
            | prometheus_parse::Value::Gauge(v)
            | prometheus_parse::Value::Untyped(v) => v,
            prometheus_parse::Value::Histogram(buckets) => buckets.last().map_or(0.0, |b| b.count),
            prometheus_parse::Value::Summary(_) => continue,
        };
        out.insert(format!("{}{{{}}}", sample.metric, labels.join(",")), value);
    }
    out
}

/// The agent's `/metrics` now, parsed by [`parse_metrics`].
pub(crate) async fn metrics(agent: &Agent) -> HashMap<String, f64> {
    parse_metrics(&get(&agent.url("/metrics")).await.text())
}

/// Waits (up to 10 s) until the cached value of each configured resource
/// in `resources` is at least `age` old, as `/metrics` tells it: the agent's
/// own clock says the TTL has run out, without a read that would touch the
/// entry.
pub(crate) async fn values_older_than(agent: &Agent, resources: &[&str], age: Duration) -> bool {
    eventually(Duration::from_secs(10), async || {
        let m = metrics(agent).await;
        resources.iter().all(|r| {
            m.get(&format!(
                "secret_agent_resource_value_age_seconds{{resource={r}}}"
            ))
            .is_some_and(|a| *a >= age.as_secs_f64())
        })
    })
    .await
}
