//! Prometheus metrics, all named `secret_agent_*`. Labels never carry a
//! secret value; resource names are not labels either, so the number of
//! series stays bounded. Label values come from the enums they name
//! ([`Route`], [`CacheStatus`], [`UpstreamError::kind`]).

use std::sync::{Arc, LazyLock};
use std::time::Duration;

use prometheus::core::Collector;
use prometheus::{
    Encoder, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, Opts, Registry,
    TextEncoder,
};

use crate::cache::{CacheMetrics, CacheStatus};
use crate::http::Route;
use crate::upstream::UpstreamError;

/// The agent's metrics, in one registry.
pub struct Metrics {
    registry: Registry,
    /// By [`Route`] and status.
    pub requests: IntCounterVec,
    /// Secret agent protocol requests by protocol and outcome (`ok`,
    /// `error`, `refused`).
    pub protocol_requests: IntCounterVec,
    /// By action and outcome (`ok` or the error code).
    pub upstream_calls: IntCounterVec,
    /// By action, in seconds.
    pub upstream_latency: HistogramVec,
    /// Temporary credentials fetched or refreshed.
    pub credential_refreshes: IntCounter,
    /// Entries in the cache, set at each scrape.
    pub cached_entries: IntGauge,
    /// Config reloads by outcome (`ok`, `error`).
    pub reloads: IntCounterVec,
    /// Reads by [`CacheStatus`], each resolved once: the hot path does not
    /// look labels up.
    cache_by_result: [IntCounter; CacheStatus::ALL.len()],
    /// `requests` with status 200 by [`Route`], resolved once.
    ok_by_route: [IntCounter; Route::ALL.len()],
}

/// In an `Arc`, as the cache takes its [`CacheMetrics`].
pub static METRICS: LazyLock<Arc<Metrics>> = LazyLock::new(|| Arc::new(Metrics::new()));

/// Registers a metric built from constant, valid names: failure is a bug.
fn registered<C: Collector + Clone + 'static>(
    registry: &Registry,
    metric: prometheus::Result<C>,
) -> C {
    let metric = metric.expect("valid metric");
    registry
        .register(Box::new(metric.clone()))
        .expect("unique metric");
    metric
}

impl Metrics {
    fn new() -> Metrics {
        let registry = Registry::new();
        let counter_vec = |name: &str, help: &str, labels: &[&str]| {
            registered(&registry, IntCounterVec::new(Opts::new(name, help), labels))
        };
        let requests = counter_vec(
            "secret_agent_requests_total",
            "HTTP requests by route and status.",
            &["route", "status"],
        );
        let cache_results = counter_vec(
            "secret_agent_cache_results_total",
            "Secret reads by cache result.",
            &["result"],
        );
        let protocol_requests = counter_vec(
            "secret_agent_protocol_requests_total",
            "Requests in a protocol other than HTTP, by protocol and outcome.",
            &["protocol", "outcome"],
        );
        let upstream_calls = counter_vec(
            "secret_agent_upstream_calls_total",
            "Calls to AWS by action and outcome.",
            &["action", "outcome"],
        );
        let reloads = counter_vec(
            "secret_agent_config_reloads_total",
            "Configuration reloads by outcome.",
            &["outcome"],
        );
        let upstream_latency = registered(
            &registry,
            HistogramVec::new(
                HistogramOpts::new(
                    "secret_agent_upstream_latency_seconds",
                    "Latency of calls to AWS, retries included.",
                )
                .buckets(vec![
                    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
                ]),
                &["action"],
            ),
        );
        let credential_refreshes = registered(
            &registry,
            IntCounter::new(
                "secret_agent_credential_refreshes_total",
                "Temporary AWS credentials fetched or refreshed.",
            ),
        );
        let cached_entries = registered(
            &registry,
            IntGauge::new(
                "secret_agent_cached_entries",
                "Entries in the secret cache.",
            ),
        );
        let cache_by_result =
            CacheStatus::ALL.map(|status| cache_results.with_label_values(&[status.as_str()]));
        let ok_by_route =
            Route::ALL.map(|route| requests.with_label_values(&[route.label(), "200"]));
        Metrics {
            cache_by_result,
            ok_by_route,
            registry,
            requests,
            protocol_requests,
            upstream_calls,
            upstream_latency,
            credential_refreshes,
            cached_entries,
            reloads,
        }
    }

    /// Counts a request.
    pub(crate) fn count_request(&self, route: Route, status: u16) {
        if status == 200 {
            self.ok_by_route[route as usize].inc();
        } else {
            let status = status.to_string();
            self.requests
                .with_label_values(&[route.label(), &status])
                .inc();
        }
    }

    /// The Prometheus text exposition of every metric.
    pub fn render(&self) -> String {
        let mut out = Vec::new();
        // Encoding into a Vec cannot fail for well-formed metrics.
        if let Err(e) = TextEncoder::new().encode(&self.registry.gather(), &mut out) {
            log::error!("cannot encode metrics: {e}");
        }
        String::from_utf8(out).unwrap_or_default()
    }
}

impl CacheMetrics for Metrics {
    fn read(&self, status: CacheStatus) {
        self.cache_by_result[status as usize].inc();
    }

    fn upstream_call(
        &self,
        action: &'static str,
        result: Result<(), &UpstreamError>,
        latency: Duration,
    ) {
        let outcome = result.map_or_else(UpstreamError::kind, |()| "ok");
        self.upstream_calls
            .with_label_values(&[action, outcome])
            .inc();
        self.upstream_latency
            .with_label_values(&[action])
            .observe(latency.as_secs_f64());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_text_format() {
        METRICS.read(CacheStatus::Hit);
        METRICS
            .upstream_latency
            .with_label_values(&["GetSecretValue"])
            .observe(0.02);
        let text = METRICS.render();
        assert!(
            text.contains("# TYPE secret_agent_cache_results_total counter"),
            "{text}"
        );
        assert!(
            text.contains("secret_agent_cache_results_total{result=\"hit\"}"),
            "{text}"
        );
        assert!(
            text.contains("secret_agent_upstream_latency_seconds_bucket"),
            "{text}"
        );
    }
}
