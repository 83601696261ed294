//! The HTTP API: routes, client auth, request guards and the error type.
//! Nothing below this module knows about HTTP.
//!
//! - `secrets`: `GET /secrets/<name>[/<key>]`
//! - `compat`: the AWS Secrets Manager Agent's routes
//! - `ops`: `/healthz`, `/readyz`, `/metrics` (no token needed)

mod auth;
mod compat;
mod error;
mod ops;
mod secrets;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use actix_web::body::MessageBody;
use actix_web::dev::{ServiceFactory, ServiceRequest, ServiceResponse};
use actix_web::http::Method;
use actix_web::middleware::{Next, from_fn};
use actix_web::{App, HttpRequest, HttpResponse, ResponseError, web};
use arc_swap::ArcSwap;

pub use auth::{AWS_TOKEN_HEADER, Authorizer};
pub use error::ApiError;
pub use secrets::CACHE_HEADER;

use crate::cache::{Cache, CacheStatus, Prefetch};
use crate::metrics::METRICS;
use crate::resources::{ResourceName, Resources, SecretArn};
use crate::secret::Secret;
use crate::upstream::Version;

/// Longest request path served; longer ones get 414.
pub const MAX_PATH: usize = 4096;

/// Most bytes of request headers (names and values) accepted; more get 431.
pub const MAX_HEADER_BYTES: usize = 16 * 1024;

/// What a config reload replaces, all at once.
pub struct Snapshot {
    pub resources: Resources,
    pub auth: Authorizer,
}

/// What every handler needs; cheap to clone.
#[derive(Clone)]
pub struct AppState {
    /// Swapped atomically on reload; readers never lock.
    pub current: Arc<ArcSwap<Snapshot>>,
    pub cache: Cache,
    /// Progress of the start-up prefetch, when `cache.prefetch` is on.
    pub prefetch: Option<Arc<Prefetch>>,
    /// Set once AWS credentials have resolved.
    pub credentials_ready: Arc<AtomicBool>,
}

/// The actix-web app: the request guard, every route, and 404 for the rest.
pub fn app(
    state: AppState,
) -> App<
    impl ServiceFactory<
        ServiceRequest,
        Config = (),
        Response = ServiceResponse<impl MessageBody>,
        Error = actix_web::Error,
        InitError = (),
    >,
> {
    App::new()
        .wrap(from_fn(guard))
        .configure(configure(state))
        .default_service(web::to(not_found))
}

/// Registers every route on an actix-web app.
fn configure(state: AppState) -> impl FnOnce(&mut web::ServiceConfig) {
    move |cfg: &mut web::ServiceConfig| {
        // Methods are checked by `guard`: every route answers GET and HEAD.
        // Static prefixes (scopes) rather than `{tail:.*}` patterns: those
        // run a regex on every request, the largest cost on the hot path.
        cfg.app_data(web::Data::new(state))
            .service(web::scope("/secrets").default_service(web::to(secrets::get_secret)))
            .route("/healthz", web::route().to(ops::healthz))
            .route("/readyz", web::route().to(ops::readyz))
            .route("/metrics", web::route().to(ops::metrics))
            .route("/secretsmanager/get", web::route().to(compat::get_by_query))
            .service(web::scope("/v1").default_service(web::to(compat::get_by_path)));
    }
}

/// Checks every request before routing: only GET and HEAD, bounded paths
/// and headers, and no secrets for requests that came through a proxy (an
/// SSRF guard, as in the AWS agent: a local app sends no forwarding
/// headers). Counts every request by route and status.
async fn guard(
    req: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse<impl MessageBody>, actix_web::Error> {
    let route = Route::of(req.path());
    let refused = if !matches!(*req.method(), Method::GET | Method::HEAD) {
        Some(ApiError::MethodNotAllowed)
    } else if req.uri().path().len() > MAX_PATH {
        Some(ApiError::UriTooLong(MAX_PATH))
    } else if header_bytes(&req) > MAX_HEADER_BYTES {
        Some(ApiError::HeadersTooLarge(MAX_HEADER_BYTES))
    } else if req.headers().contains_key("x-forwarded-for")
        || req.headers().contains_key("forwarded")
    {
        Some(ApiError::Forwarded)
    } else {
        None
    };
    let response = match refused {
        Some(err) => {
            let response = err.error_response();
            req.into_response(response).map_into_right_body()
        }
        None => next.call(req).await?.map_into_left_body(),
    };
    METRICS.count_request(route, response.status().as_u16());
    Ok(response)
}

/// What serves a request, as its metrics label it.
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
    pub(crate) const ALL: [Route; 6] = [
        Route::Secrets,
        Route::Compat,
        Route::Healthz,
        Route::Readyz,
        Route::Metrics,
        Route::Other,
    ];

    fn of(path: &str) -> Route {
        match path {
            p if p.starts_with("/secrets/") => Route::Secrets,
            "/secretsmanager/get" => Route::Compat,
            p if p.starts_with("/v1/") => Route::Compat,
            "/healthz" => Route::Healthz,
            "/readyz" => Route::Readyz,
            "/metrics" => Route::Metrics,
            _ => Route::Other,
        }
    }

    /// The `route` label.
    pub(crate) fn label(self) -> &'static str {
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

fn header_bytes(req: &ServiceRequest) -> usize {
    req.headers()
        .iter()
        .map(|(name, value)| name.as_str().len() + value.len())
        .sum()
}

/// The answer to any path no route matches.
async fn not_found() -> HttpResponse {
    ApiError::RouteNotFound.error_response()
}

/// Reads a configured secret for a request whose token has been checked:
/// from the cache, or fetched now with `refresh`.
async fn read(
    state: &AppState,
    name: &ResourceName,
    arn: &SecretArn,
    version: &Version,
    refresh: bool,
) -> Result<(Arc<Secret>, CacheStatus), ApiError> {
    let read = if refresh {
        state.cache.refresh(arn, version).await
    } else {
        state.cache.get(arn, version).await
    };
    match read {
        Ok((secret, status)) => {
            // An answer from the cache means credentials worked at some point.
            if !state.credentials_ready.load(Ordering::Relaxed) {
                state.credentials_ready.store(true, Ordering::Relaxed);
            }
            Ok((secret, status))
        }
        Err(e) => {
            log::warn!("{name}: {e}");
            Err(e.into())
        }
    }
}

/// When a request started, if its debug line will be written.
fn request_started() -> Option<Instant> {
    log::log_enabled!(log::Level::Debug).then(Instant::now)
}

/// One debug line per secret request: path, status, cache result, latency.
fn log_request(
    req: &HttpRequest,
    status: u16,
    cache: Option<CacheStatus>,
    started: Option<Instant>,
) {
    if let Some(started) = started {
        let path: String = req.path().chars().take(300).collect();
        log::debug!(
            "GET {} -> {} cache={} {:.1}ms",
            path.escape_debug(),
            status,
            cache.map_or("-", CacheStatus::as_str),
            started.elapsed().as_secs_f64() * 1000.0
        );
    }
}
