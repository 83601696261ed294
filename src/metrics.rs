//! Prometheus metrics, all named `secret_agent_*`. Labels never carry a
//! secret value. Label values come from the enums they name ([`Route`],
//! [`CacheStatus`], [`UpstreamError::kind`]); the per-resource figures
//! (`secret_agent_resource_*`) are labelled with configured resource names
//! only, never with what a client sent, so the number of series stays
//! bounded by the configuration.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use crossbeam_utils::CachePadded;
use prometheus::core::Collector;
use prometheus::{
    Encoder, GaugeVec, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge,
    IntGaugeVec, Opts, Registry, TextEncoder,
};
use thread_local::ThreadLocal;

use crate::cache::{CacheMetrics, CacheStatus, SecretStats};
use crate::events::EventsMetrics;
use crate::upstream::UpstreamError;

/// The agent's metrics, in one registry.
pub(crate) struct Metrics {
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
    /// Messages from the events queue by outcome (`changed`, `foreign`,
    /// `malformed`).
    events: IntCounterVec,
    /// Failed receives from the events queue.
    events_queue_failures: IntCounter,
    /// Rendered files written (their bytes changed).
    render_writes: IntCounter,
    /// Rendered files that could not be kept up to date, by
    /// [`RenderFailure`]: once when a file starts failing (or fails for
    /// another reason), not at every attempt; and each failed `on-change`.
    render_failures: IntCounterVec,
    /// By configured resource name: seconds since its cached value was
    /// fetched (no series without a value).
    resource_age: GaugeVec,
    /// By resource name and outcome (`ok` or the error kind): 1 for the
    /// outcome of the last fetch.
    resource_last_refresh: IntGaugeVec,
    /// By resource name: fetches that brought a new version, since the
    /// entry entered the cache.
    resource_version_changes: IntGaugeVec,
    /// Where the per-resource figures come from at each scrape.
    resources: Mutex<Option<ResourceSource>>,
    /// Reads by [`CacheStatus`], each resolved once: the hot path does not
    /// look labels up. Brought up to [`Metrics::hot`] at each scrape.
    cache_by_result: [IntCounter; CacheStatus::ALL.len()],
    /// `requests` with status 200 by [`Route`], resolved once; as above.
    ok_by_route: [IntCounter; Route::ALL.len()],
    /// What every read and every answered request counts, kept per thread:
    /// worker threads counting into one shared counter would pass its cache
    /// line back and forth on every request.
    hot: ThreadLocal<CachePadded<HotCounts>>,
    /// Held while the hot counts are added up into the counters above.
    syncing: Mutex<()>,
}

/// One thread's counts of the hot path, written by that thread only.
#[derive(Default)]
struct HotCounts {
    cache_by_result: [AtomicU64; CacheStatus::ALL.len()],
    ok_by_route: [AtomicU64; Route::ALL.len()],
}

/// Adds one to a count that only the calling thread writes: no locked
/// instruction needed, and a scrape reads it whole.
fn bump(count: &AtomicU64) {
    count.store(count.load(Ordering::Relaxed) + 1, Ordering::Relaxed);
}

/// Each configured resource name with what the cache knows of it.
pub(crate) type ResourceSource = Box<dyn Fn() -> Vec<(String, Option<SecretStats>)> + Send + Sync>;

/// What serves an HTTP request, as the `route` label names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Route {
    Secrets,
    /// The AWS Secrets Manager Agent's routes.
    Compat,
    Healthz,
    Readyz,
    Metrics,
    /// Refused before routing, or no route.
    Other,
}

impl Route {
    /// Every route, in declaration order, so that `ALL[r as usize] == r`
    /// (checked when compiling): metrics keep a counter per route.
    const ALL: [Route; 6] = [
        Route::Secrets,
        Route::Compat,
        Route::Healthz,
        Route::Readyz,
        Route::Metrics,
        Route::Other,
    ];

    /// The `route` label.
    fn label(self) -> &'static str {
        match self {
            Route::Secrets => "secrets",
            Route::Compat => "compat",
            Route::Healthz => "healthz",
            Route::Readyz => "readyz",
            Route::Metrics => "metrics",
            Route::Other => "other",
        }
    }
}

const _: () = {
    let mut i = 0;
    while i < Route::ALL.len() {
        assert!(Route::ALL[i] as usize == i);
        i += 1;
    }
};

/// Why a rendered file could not be kept up to date, as the `reason`
/// label of `secret_agent_render_failures_total` names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum RenderFailure {
    /// Reading a secret failed (AWS, credentials, past `max-stale`).
    Upstream,
    /// The value does not fit: a missing key, a template that fails.
    Template,
    /// The file could not be written (refused path, I/O).
    Write,
    /// The `on-change` command failed or timed out.
    OnChange,
}

impl RenderFailure {
    /// Every reason, so each has its series from the start.
    pub(crate) const ALL: [RenderFailure; 4] = [
        RenderFailure::Upstream,
        RenderFailure::Template,
        RenderFailure::Write,
        RenderFailure::OnChange,
    ];

    /// The `reason` label.
    pub(crate) fn label(self) -> &'static str {
        match self {
            RenderFailure::Upstream => "upstream",
            RenderFailure::Template => "template",
            RenderFailure::Write => "write",
            RenderFailure::OnChange => "on_change",
        }
    }
}

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
    pub(crate) fn new() -> Metrics {
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
        let gauge_vec = |name: &str, help: &str, labels: &[&str]| {
            registered(&registry, IntGaugeVec::new(Opts::new(name, help), labels))
        };
        let resource_age = registered(
            &registry,
            GaugeVec::new(
                Opts::new(
                    "secret_agent_resource_value_age_seconds",
                    "Seconds since the cached value of a configured resource was fetched.",
                ),
                &["resource"],
            ),
        );
        let resource_last_refresh = gauge_vec(
            "secret_agent_resource_last_refresh",
            "1 for the outcome of the last fetch of a configured resource.",
            &["resource", "outcome"],
        );
        let resource_version_changes = gauge_vec(
            "secret_agent_resource_version_changes",
            "Fetches of a configured resource that brought a new version.",
            &["resource"],
        );
        let events = counter_vec(
            "secret_agent_events_total",
            "Messages from the events queue by outcome.",
            &["outcome"],
        );
        let events_queue_failures = registered(
            &registry,
            IntCounter::new(
                "secret_agent_events_queue_failures_total",
                "Failed receives from the events queue.",
            ),
        );
        let render_writes = registered(
            &registry,
            IntCounter::new(
                "secret_agent_render_writes_total",
                "Rendered files written because their bytes changed.",
            ),
        );
        let render_failures = counter_vec(
            "secret_agent_render_failures_total",
            "Rendered files that could not be kept up to date, by reason (once per episode).",
            &["reason"],
        );
        for reason in RenderFailure::ALL {
            render_failures.with_label_values(&[reason.label()]);
        }
        let cache_by_result =
            CacheStatus::ALL.map(|status| cache_results.with_label_values(&[status.as_str()]));
        let ok_by_route =
            Route::ALL.map(|route| requests.with_label_values(&[route.label(), "200"]));
        Metrics {
            cache_by_result,
            ok_by_route,
            hot: ThreadLocal::new(),
            syncing: Mutex::new(()),
            registry,
            requests,
            protocol_requests,
            upstream_calls,
            upstream_latency,
            credential_refreshes,
            cached_entries,
            reloads,
            resource_age,
            resource_last_refresh,
            resource_version_changes,
            resources: Mutex::new(None),
            events,
            events_queue_failures,
            render_writes,
            render_failures,
        }
    }

    /// A rendered file was written.
    pub(crate) fn render_write(&self) {
        self.render_writes.inc();
    }

    /// A rendered file started failing for `reason` (or `on-change` failed).
    pub(crate) fn render_failure(&self, reason: RenderFailure) {
        self.render_failures
            .with_label_values(&[reason.label()])
            .inc();
    }

    /// Sets where the per-resource figures come from (the application's
    /// resources and cache); they are gathered at each scrape.
    pub(crate) fn set_resources(&self, source: ResourceSource) {
        *self
            .resources
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = Some(source);
    }

    /// Replaces the per-resource series with the configured resources' now:
    /// removed resources lose theirs.
    fn gather_resources(&self) {
        let resources = self
            .resources
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let Some(source) = resources.as_ref() else {
            return;
        };
        self.resource_age.reset();
        self.resource_last_refresh.reset();
        self.resource_version_changes.reset();
        for (name, stats) in source() {
            let Some(stats) = stats else { continue };
            if let Some(age) = stats.age {
                self.resource_age
                    .with_label_values(&[&name])
                    .set(age.as_secs_f64());
            }
            if let Some(outcome) = stats.last_outcome {
                self.resource_last_refresh
                    .with_label_values(&[&name, outcome])
                    .set(1);
            }
            self.resource_version_changes
                .with_label_values(&[&name])
                .set(i64::try_from(stats.version_changes).unwrap_or(i64::MAX));
        }
    }

    /// Brings the hot-path counters up to the sums of the threads' counts.
    fn sync_hot(&self) {
        let _syncing = self.syncing.lock().unwrap_or_else(PoisonError::into_inner);
        let sum = |count: &dyn Fn(&HotCounts) -> &AtomicU64| -> u64 {
            self.hot
                .iter()
                .map(|counts| count(counts).load(Ordering::Relaxed))
                .sum()
        };
        let catch_up = |counter: &IntCounter, total: u64| {
            counter.inc_by(total.saturating_sub(counter.get()));
        };
        for (i, counter) in self.cache_by_result.iter().enumerate() {
            catch_up(counter, sum(&|c| &c.cache_by_result[i]));
        }
        for (i, counter) in self.ok_by_route.iter().enumerate() {
            catch_up(counter, sum(&|c| &c.ok_by_route[i]));
        }
    }

    /// Counts a request.
    pub(crate) fn count_request(&self, route: Route, status: u16) {
        if status == 200 {
            bump(&self.hot.get_or_default().ok_by_route[route as usize]);
        } else {
            let status = status.to_string();
            self.requests
                .with_label_values(&[route.label(), &status])
                .inc();
        }
    }

    /// The Prometheus text exposition of every metric.
    pub(crate) fn render(&self) -> String {
        self.sync_hot();
        self.gather_resources();
        let mut out = Vec::new();
        // Encoding into a Vec cannot fail for well-formed metrics.
        if let Err(e) = TextEncoder::new().encode(&self.registry.gather(), &mut out) {
            log::error!("cannot encode metrics: {e}");
        }
        String::from_utf8(out).unwrap_or_default()
    }
}

impl EventsMetrics for Metrics {
    fn event(&self, outcome: &'static str) {
        self.events.with_label_values(&[outcome]).inc();
    }

    fn queue_failure(&self) {
        self.events_queue_failures.inc();
    }
}

impl CacheMetrics for Metrics {
    fn read(&self, status: CacheStatus) {
        bump(&self.hot.get_or_default().cache_by_result[status as usize]);
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

impl crate::credentials::CredentialMetrics for Metrics {
    fn credential_refresh(&self) {
        self.credential_refreshes.inc();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[test]
    fn counts_of_every_thread_are_summed_at_each_scrape() {
        let metrics = Metrics::new();
        let count = |threads: usize| {
            std::thread::scope(|scope| {
                for _ in 0..threads {
                    scope.spawn(|| {
                        for _ in 0..1000 {
                            metrics.count_request(Route::Secrets, 200);
                            metrics.read(CacheStatus::Hit);
                        }
                        metrics.read(CacheStatus::Stale);
                    });
                }
            });
        };
        let has = |text: &str, line: &str| assert!(text.contains(line), "{line} in {text}");
        count(4);
        for _ in 0..2 {
            // A second scrape adds nothing twice.
            let text = metrics.render();
            has(
                &text,
                "secret_agent_requests_total{route=\"secrets\",status=\"200\"} 4000\n",
            );
            has(
                &text,
                "secret_agent_cache_results_total{result=\"hit\"} 4000\n",
            );
            has(
                &text,
                "secret_agent_cache_results_total{result=\"stale\"} 4\n",
            );
        }
        count(2);
        let text = metrics.render();
        has(
            &text,
            "secret_agent_requests_total{route=\"secrets\",status=\"200\"} 6000\n",
        );
        has(
            &text,
            "secret_agent_cache_results_total{result=\"hit\"} 6000\n",
        );
    }

    #[test]
    fn per_resource_series_follow_the_configured_names() {
        let metrics = Metrics::new();
        let stats = SecretStats {
            age: Some(Duration::from_millis(1500)),
            last_outcome: Some("ok"),
            version_changes: 2,
        };
        let names = Arc::new(Mutex::new(vec!["db".to_owned(), "api".to_owned()]));
        let source = Arc::clone(&names);
        metrics.set_resources(Box::new(move || {
            let names = source.lock().unwrap();
            names
                .iter()
                .map(|n| (n.clone(), (n == "db").then_some(stats)))
                .collect()
        }));
        let text = metrics.render();
        for line in [
            "secret_agent_resource_value_age_seconds{resource=\"db\"} 1.5",
            "secret_agent_resource_last_refresh{outcome=\"ok\",resource=\"db\"} 1",
            "secret_agent_resource_version_changes{resource=\"db\"} 2",
        ] {
            assert!(text.contains(line), "{line} in {text}");
        }
        assert!(!text.contains("\"api\""), "{text}");
        // A resource removed from the configuration loses its series.
        names.lock().unwrap().clear();
        assert!(!metrics.render().contains("\"db\""));
    }

    #[test]
    fn renders_text_format() {
        let metrics = Metrics::new();
        metrics.read(CacheStatus::Hit);
        metrics
            .upstream_latency
            .with_label_values(&["GetSecretValue"])
            .observe(0.02);
        let text = metrics.render();
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
