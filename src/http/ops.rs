//! `/healthz`, `/readyz` and `/metrics`: for operators and orchestrators,
//! so they need no client token and reveal no secret.

use std::sync::atomic::Ordering;

use actix_web::{HttpResponse, web};
use serde_json::json;

use super::AppState;

/// 200 while the process serves.
pub(super) async fn healthz() -> HttpResponse {
    HttpResponse::Ok().json(json!({ "status": "ok" }))
}

/// 200 once serving has started (`-l`), credentials have resolved, the
/// prefetch (when on) is done and every rendered file has been written
/// (or found up to date) once;
/// otherwise 503, saying what is missing. Failing prefetches are only
/// counted: anyone may ask, and their ARNs name accounts and secrets (the
/// log has them, one warning per failed attempt). The events queue, when
/// configured, is detail only (secrets are served without it), likewise
/// without its URL or error.
pub(super) async fn readyz(state: web::Data<AppState>) -> HttpResponse {
    let mut missing = Vec::new();
    if !state.reader.serving.is_open() {
        missing.push("serving: started with -l, waiting for GET /start_serving".to_owned());
    }
    if !state.reader.credentials_ready.load(Ordering::Relaxed) {
        missing.push("credentials: AWS credentials have not resolved yet".to_owned());
    }
    let (unwritten, files) = state.render.pending();
    if unwritten > 0 {
        // Counted, not named: paths are the log's (anyone may ask here).
        missing.push(format!(
            "render: {unwritten} of {files} file(s) not written yet (the log says why)"
        ));
    }
    let mut failing = 0;
    if let Some(prefetch) = &state.prefetch {
        if !prefetch.is_done() {
            missing.push("prefetch: not every resource has been fetched yet".to_owned());
        }
        failing = prefetch.failing().len();
    }
    // The events queue is detail only: secrets are served without it.
    let events = state.events.as_ref().map(|events| {
        let failures = events.failures.load(Ordering::Relaxed);
        json!({
            "queue": if failures == 0 { "ok" } else { "failing" },
            "consecutive_failures": failures,
        })
    });
    let mut body = if missing.is_empty() {
        json!({ "status": "ready", "prefetch_failing": failing })
    } else {
        json!({ "status": "not_ready", "missing": missing, "prefetch_failing": failing })
    };
    if let Some(events) = events {
        body["events"] = events;
    }
    if missing.is_empty() {
        HttpResponse::Ok().json(body)
    } else {
        HttpResponse::ServiceUnavailable().json(body)
    }
}

/// The Prometheus text format.
pub(super) async fn metrics(state: web::Data<AppState>) -> HttpResponse {
    state
        .metrics
        .cached_entries
        .set(state.reader.cache.len() as i64);
    HttpResponse::Ok()
        .content_type("text/plain; version=0.0.4; charset=utf-8")
        .body(state.metrics.render())
}
