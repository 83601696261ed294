//! The HTTP API: routes, client auth, request guards and the error type.
//! Nothing below this module knows about HTTP.
//!
//! - `secrets`: `GET /secrets/<name>[/<key>]`
//! - `compat`: the AWS Secrets Manager Agent's routes (and `/ping`)
//! - `parameters`: the Lambda extension's Parameter Store route
//! - `ops`: `/healthz`, `/readyz`, `/metrics` (no token needed)

mod auth;
mod compat;
mod error;
mod ops;
mod parameters;
mod secrets;

use std::borrow::Cow;
use std::future::{Future, Ready, ready};
use std::pin::Pin;
use std::rc::Rc;
use std::sync::Arc;
use std::sync::atomic::AtomicUsize;
use std::task::{Context, Poll};
use tokio::time::Instant;

use actix_web::body::{EitherBody, MessageBody};
use actix_web::dev::{
    AppService, HttpServiceFactory, ResourceDef, Service, ServiceFactory, ServiceRequest,
    ServiceResponse, Transform, forward_ready,
};
use actix_web::http::Method;
use actix_web::http::header::FORWARDED;
use actix_web::{App, HttpRequest, HttpResponse, ResponseError, web};
use futures_util::future::Either;
use serde::de::DeserializeOwned;

pub(crate) use error::ApiError;
use error::echo;

use crate::access::Grant;
use crate::cache::{CacheStatus, Prefetch};
use crate::domain::{Arn, ResourceName};
use crate::events::EventsStatus;
use crate::metrics::{Metrics, Route};
use crate::read::Reader;
use crate::render::RenderStatus;
use crate::resources::Found;

/// Longest request path served; longer ones get 414.
pub(crate) const MAX_PATH: usize = 4096;

/// Most bytes of request headers (names and values) accepted; more get 431.
pub(crate) const MAX_HEADER_BYTES: usize = 16 * 1024;

/// What every handler needs; cheap to clone.
#[derive(Clone)]
pub(crate) struct AppState {
    /// The read path, shared with the Aerospike protocol.
    pub(crate) reader: Reader,
    /// Progress of the start-up prefetch, when `cache.prefetch` is on.
    pub(crate) prefetch: Option<Arc<Prefetch>>,
    /// How the events queue is doing, when `events` is configured.
    pub(crate) events: Option<Arc<EventsStatus>>,
    /// How the rendered files are doing (none configured: nothing pending).
    pub(crate) render: Arc<RenderStatus>,
    pub(crate) metrics: Arc<Metrics>,
    /// Client connections open now, over all listeners.
    pub(crate) connections: Arc<AtomicUsize>,
}

/// Connection data, with `over-limit: refuse` only: client connections open
/// when it was accepted (itself included), as the AWS agent counts for
/// `max_conn`, and `max-connections`. Above it, requests are answered 429.
#[derive(Debug, Clone, Copy)]
pub(crate) struct ConnectionLimit {
    pub(crate) open_at_accept: usize,
    pub(crate) max_connections: usize,
}

/// The actix-web app: the request guard, every route, and 404 for the rest.
pub(crate) fn app(
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
        .wrap(Guard {
            metrics: Arc::clone(&state.metrics),
        })
        .configure(configure(state))
        .default_service(web::to(not_found))
}

/// A hot route, registered in front of the others and served straight by
/// its handler: no route table, no nested router (as a scope would), and no
/// resource around it (its guards, its default service).
struct Direct(ResourceDef, actix_web::Route);

impl HttpServiceFactory for Direct {
    fn register(self, config: &mut AppService) {
        config.register_service(self.0, None, self.1, None);
    }
}

/// Registers every route on an actix-web app.
fn configure(state: AppState) -> impl FnOnce(&mut web::ServiceConfig) {
    move |cfg: &mut web::ServiceConfig| {
        // Methods are checked by `Guard`: every route answers GET and HEAD.
        // Static prefixes rather than `{tail:.*}` patterns: those run a
        // regex on every request.
        cfg.app_data(web::Data::new(state))
            // `/secrets` and everything under it first, by a static prefix;
            // then the AWS agent's route, exactly.
            .service(Direct(
                ResourceDef::prefix("/secrets"),
                web::to(secrets::get_secret),
            ))
            .service(Direct(
                ResourceDef::new("/secretsmanager/get"),
                web::to(compat::get_by_query),
            ))
            .route("/healthz", web::route().to(ops::healthz))
            .route("/readyz", web::route().to(ops::readyz))
            .route("/metrics", web::route().to(ops::metrics))
            .route("/ping", web::route().to(compat::ping))
            .route("/start_serving", web::route().to(compat::start_serving))
            .route(parameters::PATH, web::route().to(parameters::get_parameter))
            .service(web::scope("/v1").default_service(web::to(compat::get_by_path)));
    }
}

/// Checks every request before routing: only GET and HEAD, bounded paths
/// and headers, and no secrets for requests that came through a proxy (an
/// SSRF guard, as in the AWS agent: a local app sends no forwarding
/// headers). Counts every request by route and status.
///
/// The AWS agent's routes answer its way: the method is checked after the
/// token (by the handler), a forwarded request gets its `400 Forwarded`,
/// and `/ping` is not guarded against forwarding, as there.
///
/// A middleware of its own rather than `middleware::from_fn`, which boxes
/// two futures per request: this one allocates nothing.
pub(crate) struct Guard {
    metrics: Arc<Metrics>,
}

impl<S, B> Transform<S, ServiceRequest> for Guard
where
    S: Service<ServiceRequest, Response = ServiceResponse<B>, Error = actix_web::Error>,
    B: MessageBody,
{
    type Response = ServiceResponse<EitherBody<B>>;
    type Error = actix_web::Error;
    type Transform = GuardService<S>;
    type InitError = ();
    type Future = Ready<Result<GuardService<S>, ()>>;

    fn new_transform(&self, service: S) -> Self::Future {
        ready(Ok(GuardService {
            service,
            metrics: Rc::new(Arc::clone(&self.metrics)),
        }))
    }
}

/// [`Guard`] around the app's routes.
pub(crate) struct GuardService<S> {
    service: S,
    /// One handle per worker: a request clones it without an atomic
    /// operation on a reference count that every worker shares.
    #[expect(clippy::redundant_allocation, reason = "Rc clones are thread-local")]
    metrics: Rc<Arc<Metrics>>,
}

impl<S, B> Service<ServiceRequest> for GuardService<S>
where
    S: Service<ServiceRequest, Response = ServiceResponse<B>, Error = actix_web::Error>,
    B: MessageBody,
{
    type Response = ServiceResponse<EitherBody<B>>;
    type Error = actix_web::Error;
    type Future = Either<Ready<Result<Self::Response, actix_web::Error>>, Counted<S::Future>>;

    forward_ready!(service);

    fn call(&self, req: ServiceRequest) -> Self::Future {
        let route = route_of(req.path());
        match refusal(&req, route) {
            Some(response) => {
                let response = req.into_response(response).map_into_right_body();
                self.metrics
                    .count_request(route, response.status().as_u16());
                Either::Left(ready(Ok(response)))
            }
            None => Either::Right(Counted {
                answer: self.service.call(req),
                route,
                metrics: Rc::clone(&self.metrics),
            }),
        }
    }
}

pin_project_lite::pin_project! {
    /// A routed request's answer, counted once it is ready.
    pub(crate) struct Counted<F> {
        #[pin]
        answer: F,
        route: Route,
        metrics: Rc<Arc<Metrics>>,
    }
}

impl<F, B> Future for Counted<F>
where
    F: Future<Output = Result<ServiceResponse<B>, actix_web::Error>>,
{
    type Output = Result<ServiceResponse<EitherBody<B>>, actix_web::Error>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let response = std::task::ready!(this.answer.poll(cx))?.map_into_left_body();
        this.metrics
            .count_request(*this.route, response.status().as_u16());
        Poll::Ready(Ok(response))
    }
}

/// The answer to a request refused before routing, if it is.
fn refusal(req: &ServiceRequest, route: Route) -> Option<HttpResponse> {
    let compat = route == Route::Compat;
    let over_limit = req.conn_data::<ConnectionLimit>().is_some_and(|c| {
        // Health checks get two more, as in the AWS agent.
        let health = matches!(req.path(), "/ping" | "/healthz" | "/readyz" | "/metrics");
        c.open_at_accept > c.max_connections + if health { 2 } else { 0 }
    });
    let (header_bytes, forwarded) = headers_seen(req);
    let refused = if over_limit {
        ApiError::ConnectionLimit
    } else if !compat && !matches!(*req.method(), Method::GET | Method::HEAD) {
        ApiError::MethodNotAllowed
    } else if req.uri().path().len() > MAX_PATH {
        ApiError::UriTooLong(MAX_PATH)
    } else if header_bytes > MAX_HEADER_BYTES {
        ApiError::HeadersTooLarge(MAX_HEADER_BYTES)
    } else if forwarded && !matches!(req.path(), "/ping" | "/start_serving") {
        ApiError::Forwarded
    } else {
        return None;
    };
    Some(if compat {
        compat::CompatError::from(refused).response()
    } else {
        refused.error_response()
    })
}

/// What serves a request, as its metrics label it.
fn route_of(path: &str) -> Route {
    match path {
        p if p.starts_with("/secrets/") || p == "/secrets" => Route::Secrets,
        "/secretsmanager/get" | "/ping" | "/start_serving" | parameters::PATH => Route::Compat,
        p if p.starts_with("/v1/") => Route::Compat,
        "/healthz" => Route::Healthz,
        "/readyz" => Route::Readyz,
        "/metrics" => Route::Metrics,
        _ => Route::Other,
    }
}

/// In one pass over the request's headers: their size (names and values),
/// and whether a proxy forwarded it (`Forwarded` or `X-Forwarded-For`).
fn headers_seen(req: &ServiceRequest) -> (usize, bool) {
    req.headers()
        .iter()
        .fold((0, false), |(bytes, forwarded), (name, value)| {
            (
                bytes + name.as_str().len() + value.len(),
                forwarded || name == FORWARDED || name.as_str() == "x-forwarded-for",
            )
        })
}

/// The answer to any path no route matches.
async fn not_found() -> HttpResponse {
    ApiError::RouteNotFound.error_response()
}

/// The app's state, borrowed from the request.
fn app_state(req: &HttpRequest) -> Option<&AppState> {
    req.app_data::<web::Data<AppState>>()
        .map(|data| data.get_ref())
}

/// The configured `arn`, read as whichever of its `names` the token may
/// read (a request by ARN is allowed when the token may read any of them);
/// a refusal is logged under the first name.
fn found_by_arn<'s>(
    grant: &Grant<'_>,
    arn: &'s Arn,
    names: &'s [ResourceName],
    target: &mut Target<'s>,
) -> Result<Found<'s>, ApiError> {
    let name = grant.permit_any(names, arn.as_str()).inspect_err(|_| {
        *target = Target::Resource {
            found: Found {
                name: Cow::Borrowed(&names[0]),
                arn: Cow::Borrowed(arn),
                entry: &names[0],
            },
            key: None,
        };
    })?;
    Ok(Found {
        name: Cow::Borrowed(name),
        arn: Cow::Borrowed(arn),
        entry: name,
    })
}

/// Parses a query string into `T`, whose fields are the `known` parameters.
/// An unknown parameter is named by a short, escaped prefix only.
fn parse_query<T: DeserializeOwned>(query: &str, known: &[&str]) -> Result<T, ApiError> {
    let known_list = || known.join(", ");
    let pairs: Vec<(String, String)> = serde_urlencoded::from_str(query).map_err(|_| {
        ApiError::BadRequest(format!(
            "the query string is not URL-encoded; known parameters: {}",
            known_list()
        ))
    })?;
    if let Some((name, _)) = pairs
        .iter()
        .find(|(name, _)| !known.contains(&name.as_str()))
    {
        return Err(ApiError::BadRequest(format!(
            "unknown query parameter `{}`; known parameters: {}",
            echo(name),
            known_list()
        )));
    }
    // Only known names are left, so serde's message names one of them
    // (given twice, or not `true` or `false`); it is echoed short all the same.
    serde_urlencoded::from_str(query).map_err(|e| {
        ApiError::BadRequest(format!(
            "bad query string ({}); known parameters: {}",
            echo(&e.to_string()),
            known_list()
        ))
    })
}

/// When a request started, if its debug line will be written.
fn request_started() -> Option<Instant> {
    log::log_enabled!(log::Level::Debug).then(Instant::now)
}

/// What a request asked for, as its debug line shows it. Never the path as
/// sent: a client may put a token there by mistake.
#[derive(Debug, Clone)]
enum Target<'a> {
    /// A resource, and the key of a JSON secret asked for.
    Resource {
        found: Found<'a>,
        key: Option<&'a str>,
    },
    /// Nothing configured: not shown at all.
    Unknown,
}

/// One debug line per secret request: route, resource, status, cache
/// result, latency. A key is shown only once it was found in the secret.
fn log_request(
    req: &HttpRequest,
    route: &str,
    target: Target<'_>,
    status: u16,
    cache: Option<CacheStatus>,
    started: Option<Instant>,
) {
    let Some(started) = started else { return };
    // A name under a pattern, or a key, is shown once the secret was read.
    let what = match target {
        Target::Resource { found, key } => {
            let name = if found.by_pattern() && cache.is_none() {
                format!("{}:<name>", found.entry)
            } else {
                found.name.to_string()
            };
            match key {
                None => name,
                Some(key) if cache.is_some() => format!("{name}/{}", key.escape_debug()),
                Some(_) => format!("{name}/<key>"),
            }
        }
        Target::Unknown => "<unknown>".to_owned(),
    };
    log::debug!(
        "{} {route}{what} -> {status} cache={} {:.1}ms",
        req.method(),
        cache.map_or("-", CacheStatus::as_str),
        started.elapsed().as_secs_f64() * 1000.0
    );
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Q {
        name: Option<String>,
        #[serde(default)]
        flag: bool,
    }

    fn message(query: &str) -> String {
        match parse_query::<Q>(query, &["name", "flag"]) {
            Err(ApiError::BadRequest(m)) => m,
            other => panic!("{query}: {other:?}"),
        }
    }

    #[test]
    fn query_errors_echo_only_a_short_escaped_prefix() {
        let q: Q = parse_query("name=x&flag=true", &["name", "flag"]).unwrap();
        assert_eq!((q.name.as_deref(), q.flag), (Some("x"), true));
        let long = "n".repeat(10_000);
        let m = message(&format!("{long}=1"));
        assert_eq!(
            m,
            format!(
                "unknown query parameter `{}...`; known parameters: name, flag",
                "n".repeat(32)
            )
        );
        assert!(message("%0A%22x=1").starts_with("unknown query parameter `\\n\\\"x`"));
        assert!(message("name=a&name=b").contains("duplicate field `name`"));
        let m = message(&format!("flag={long}"));
        assert!(!m.contains(&"n".repeat(33)) && m.len() < 200, "{m}");
    }

    mod proptests {
        use super::*;
        use proptest::prelude::*;

        proptest! {
            /// Whatever a client sends, the message is short and repeats
            /// no more than 32 characters of it in a row.
            #[test]
            fn messages_stay_short(
                parts in prop::collection::vec(("[a-z%0-9=&]{0,3}", "[a-z]{33,300}"), 1..4),
            ) {
                let query: String = parts.iter().map(|(a, b)| format!("{a}{b}")).collect();
                if let Err(ApiError::BadRequest(m)) = parse_query::<Q>(&query, &["name", "flag"]) {
                    prop_assert!(m.len() < 200, "{}", m);
                    for (_, long) in &parts {
                        prop_assert!(!m.contains(&long[..33]), "{}", m);
                    }
                }
            }
        }
    }
}
