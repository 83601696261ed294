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
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use actix_web::body::{EitherBody, MessageBody};
use actix_web::dev::{
    AppService, HttpServiceFactory, ResourceDef, Service, ServiceFactory, ServiceRequest,
    ServiceResponse, Transform, forward_ready,
};
use actix_web::http::Method;
use actix_web::http::header::FORWARDED;
use actix_web::{App, HttpRequest, HttpResponse, ResponseError, web};
use arc_swap::ArcSwap;
use dashmap::DashMap;
use dashmap::mapref::entry::Entry;
use futures_util::future::Either;
use serde::de::DeserializeOwned;

pub use auth::Authorizer;
pub use error::ApiError;
use error::echo;
pub use secrets::CACHE_HEADER;

use crate::aerospike::ProtocolSettings;
use crate::cache::{Cache, CacheStatus, Prefetch};
use crate::metrics::METRICS;
use crate::resources::{Found, ResourceName, Resources, SecretArn};
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
    /// The secret agent protocol's settings (base64, what it may read).
    pub(crate) protocol: ProtocolSettings,
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
    /// How the events queue is doing, when `events` is configured.
    pub events: Option<Arc<crate::events::EventsStatus>>,
    /// Failed reads are logged at warn level once per resource and
    /// [`WARN_EVERY`], the rest at debug: clients cannot flood the log.
    pub warned: Arc<DashMap<ResourceName, Instant>>,
    /// Closed until `GET /start_serving` in Lambda mode (`-l`).
    pub serving: Gate,
    /// Client connections open now, over all listeners.
    pub connections: Arc<AtomicUsize>,
}

/// Connection data, with `over-limit: refuse` only: client connections open
/// when it was accepted (itself included), as the AWS agent counts for
/// `max_conn`, and `max-connections`. Above it, requests are answered 429.
#[derive(Debug, Clone, Copy)]
pub struct ConnectionLimit {
    pub open_at_accept: usize,
    pub max_connections: usize,
}

/// Whether secrets are served yet: from the start, unless the agent was
/// started with `-l` (the AWS agent's Lambda mode), where nothing is served
/// or fetched until `GET /start_serving`, so that a Lambda SnapStart
/// snapshot taken during init holds no secret.
#[derive(Clone)]
pub struct Gate(Arc<GateInner>);

struct GateInner {
    open: AtomicBool,
    opened: tokio::sync::Notify,
}

impl Gate {
    pub fn new(open: bool) -> Gate {
        Gate(Arc::new(GateInner {
            open: AtomicBool::new(open),
            opened: tokio::sync::Notify::new(),
        }))
    }

    pub fn is_open(&self) -> bool {
        self.0.open.load(Ordering::Acquire)
    }

    /// Opens the gate; true when this call opened it.
    pub fn open(&self) -> bool {
        let was_closed = !self.0.open.swap(true, Ordering::AcqRel);
        if was_closed {
            self.0.opened.notify_waiters();
        }
        was_closed
    }

    /// Returns once the gate is open.
    pub async fn opened(&self) {
        loop {
            // Created before the check, so an `open` in between wakes it.
            let opened = self.0.opened.notified();
            if self.is_open() {
                return;
            }
            opened.await;
        }
    }
}

/// How often a resource's failed reads may be logged at warn level.
pub const WARN_EVERY: Duration = Duration::from_secs(10);

impl AppState {
    /// Whether a failed read of `name` gets a warn line now.
    fn warn_now(&self, name: &ResourceName) -> bool {
        let now = Instant::now();
        match self.warned.entry(name.clone()) {
            Entry::Occupied(last) if now.duration_since(*last.get()) < WARN_EVERY => false,
            Entry::Occupied(mut last) => {
                last.insert(now);
                true
            }
            Entry::Vacant(first) => {
                first.insert(now);
                true
            }
        }
    }
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
        .wrap(Guard)
        .configure(configure(state))
        .default_service(web::to(not_found))
}

/// `/secrets` and everything under it, matched first, by a static prefix:
/// the hot path goes through no route table and no nested router (as a
/// scope would), straight to its handler.
struct SecretsRoute;

impl HttpServiceFactory for SecretsRoute {
    fn register(self, config: &mut AppService) {
        config.register_service(
            ResourceDef::prefix("/secrets"),
            None,
            web::to(secrets::get_secret),
            None,
        );
    }
}

/// Registers every route on an actix-web app.
fn configure(state: AppState) -> impl FnOnce(&mut web::ServiceConfig) {
    move |cfg: &mut web::ServiceConfig| {
        // Methods are checked by `Guard`: every route answers GET and HEAD.
        // Static prefixes rather than `{tail:.*}` patterns: those run a
        // regex on every request.
        cfg.app_data(web::Data::new(state))
            .service(SecretsRoute)
            .route("/healthz", web::route().to(ops::healthz))
            .route("/readyz", web::route().to(ops::readyz))
            .route("/metrics", web::route().to(ops::metrics))
            .route("/secretsmanager/get", web::route().to(compat::get_by_query))
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
pub struct Guard;

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
        ready(Ok(GuardService { service }))
    }
}

/// [`Guard`] around the app's routes.
pub struct GuardService<S> {
    service: S,
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
        let route = Route::of(req.path());
        match refusal(&req, route) {
            Some(response) => {
                let response = req.into_response(response).map_into_right_body();
                METRICS.count_request(route, response.status().as_u16());
                Either::Left(ready(Ok(response)))
            }
            None => Either::Right(Counted {
                answer: self.service.call(req),
                route,
            }),
        }
    }
}

pin_project_lite::pin_project! {
    /// A routed request's answer, counted once it is ready.
    pub struct Counted<F> {
        #[pin]
        answer: F,
        route: Route,
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
        METRICS.count_request(*this.route, response.status().as_u16());
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
            p if p.starts_with("/secrets/") || p == "/secrets" => Route::Secrets,
            "/secretsmanager/get" | "/ping" | "/start_serving" | parameters::PATH => Route::Compat,
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

/// The hot path of [`read`]: `f` applied to the fresh cached value, with
/// nothing to await; `None` when the read needs [`read`].
fn read_fresh<R>(
    state: &AppState,
    found: &Found<'_>,
    version: &Version,
    f: impl FnOnce(&Arc<Secret>) -> R,
) -> Option<R> {
    if !state.serving.is_open() {
        return None;
    }
    state.cache.fresh(&found.arn, version, f)
}

/// Reads a configured secret for a request whose token has been checked:
/// from the cache, or fetched now with `refresh`.
async fn read(
    state: &AppState,
    found: &Found<'_>,
    version: &Version,
    refresh: bool,
) -> Result<(Arc<Secret>, CacheStatus), ApiError> {
    if !state.serving.is_open() {
        return Err(ApiError::NotServingYet);
    }
    let arn: &SecretArn = &found.arn;
    if found.by_pattern() && !state.cache.admit_new_name(arn, version) {
        return Err(ApiError::NewNamesLimited);
    }
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
            let mut e = ApiError::from(e);
            // Warnings are counted per configured entry: names under a
            // pattern are the client's to make up.
            let entry = found.entry;
            let level = if state.warn_now(entry) {
                log::Level::Warn
            } else {
                log::Level::Debug
            };
            // The encrypted form of a parameter is logged as its version.
            let version = match version {
                Version::Encrypted(version) => version,
                version => version,
            };
            // What the client wrote: a name under a pattern (AWS may repeat
            // it, in its own spelling too: the ARN, `/app/x`), a version.
            // The log says only the kind of failure, the answer a short echo.
            let mut asked: Vec<String> = Vec::new();
            if found.by_pattern() {
                asked.push(found.name.to_string());
                asked.push(found.arn.as_str().to_owned());
                asked.extend(found.arn.parameter_name().map(str::to_owned));
            }
            match version {
                Version::Stage(text) | Version::Id(text) | Version::Label(text) => {
                    asked.push(text.clone());
                }
                Version::IdAndStage { id, stage } => asked.extend([id.clone(), stage.clone()]),
                Version::Number(number) => asked.push(number.to_string()),
                Version::Current | Version::Encrypted(_) => {}
            }
            // The longest first: one text may hold another.
            asked.sort_by_key(|text| std::cmp::Reverse(text.len()));
            for text in &asked {
                e.redact(text);
            }
            match (found.by_pattern(), version) {
                (false, Version::Current) => log::log!(level, "{entry}: {e}"),
                (true, Version::Current) => log::log!(
                    level,
                    "{entry}, a name asked for by a client: {}",
                    e.parts().1
                ),
                _ => log::log!(
                    level,
                    "{entry}, a version asked for by a client: {}",
                    e.parts().1
                ),
            }
            Err(e)
        }
    }
}

/// The configured `arn`, read as whichever of its `names` the token may
/// read (a request by ARN is allowed when the token may read any of them);
/// a refusal is logged under the first name.
fn found_by_arn<'s>(
    grant: &auth::Grant<'_>,
    arn: &'s SecretArn,
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
