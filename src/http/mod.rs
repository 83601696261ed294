//! The HTTP API: routes, client auth, request guards and the error type.
//! Nothing below this module knows about HTTP.

mod auth;
mod error;
mod secrets;

use std::sync::Arc;

use actix_web::body::MessageBody;
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::Method;
use actix_web::middleware::Next;
use actix_web::{HttpResponse, ResponseError, web};
use arc_swap::ArcSwap;

pub use auth::{AWS_TOKEN_HEADER, Authorizer};
pub use error::ApiError;
pub use secrets::CACHE_HEADER;

use crate::cache::{Cache, Prefetch};
use crate::resources::Resources;

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
}

/// Registers every route on an actix-web app.
pub fn configure(state: AppState) -> impl FnOnce(&mut web::ServiceConfig) {
    move |cfg: &mut web::ServiceConfig| {
        cfg.app_data(web::Data::new(state)).service(
            web::resource("/secrets/{tail:.*}")
                .route(web::get().to(secrets::get_secret))
                .route(web::head().to(secrets::get_secret)),
        );
    }
}

/// Checks every request before routing: only GET and HEAD, bounded paths,
/// and no secrets for requests that came through a proxy (an SSRF guard,
/// as in the AWS agent: a local app does not send forwarding headers).
pub async fn guard(
    req: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse<impl MessageBody>, actix_web::Error> {
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
    match refused {
        Some(err) => {
            let response = err.error_response();
            Ok(req.into_response(response).map_into_right_body())
        }
        None => next
            .call(req)
            .await
            .map(ServiceResponse::map_into_left_body),
    }
}

fn header_bytes(req: &ServiceRequest) -> usize {
    req.headers()
        .iter()
        .map(|(name, value)| name.as_str().len() + value.len())
        .sum()
}

/// The answer to any path no route matches.
pub async fn not_found() -> HttpResponse {
    ApiError::RouteNotFound.error_response()
}
