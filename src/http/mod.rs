//! The HTTP API: routes and the error type. Nothing below this module knows
//! about HTTP.

mod error;
mod secrets;

use std::sync::Arc;

use actix_web::{HttpResponse, ResponseError, web};

pub use error::ApiError;

use crate::cache::{Cache, Prefetch};
use crate::resources::Resources;

/// What every handler needs; cheap to clone.
#[derive(Clone)]
pub struct AppState {
    pub resources: Arc<Resources>,
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
                .route(web::head().to(secrets::get_secret))
                .default_service(web::to(method_not_allowed)),
        );
    }
}

async fn method_not_allowed() -> HttpResponse {
    ApiError::MethodNotAllowed.error_response()
}

/// The answer to any path no route matches.
pub async fn not_found() -> HttpResponse {
    ApiError::RouteNotFound.error_response()
}
