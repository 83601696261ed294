//! The API error type: one table from error to HTTP status and stable code.

use actix_web::http::StatusCode;
use actix_web::http::header::{ALLOW, CacheControl, CacheDirective, WWW_AUTHENTICATE};
use actix_web::{HttpResponse, ResponseError};

use crate::access::Denied;
use crate::domain::KeyError;
use crate::read::ReadError;
pub(crate) use crate::text::echo;
use crate::upstream::UpstreamError;

/// Everything a request can fail with. Messages are for people and never
/// carry secret material; codes are stable, snake_case.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ApiError {
    #[error("no resource named `{0}` is configured")]
    ResourceNotFound(String),
    #[error("{0}")]
    KeyNotFound(KeyError),
    #[error("{0}")]
    NotJson(KeyError),
    #[error("{0}")]
    BadRequest(String),
    #[error("not found")]
    RouteNotFound,
    #[error("only GET and HEAD are allowed")]
    MethodNotAllowed,
    #[error("a valid client token is required (Authorization: Bearer <token>)")]
    Unauthorized,
    #[error("this token may not read `{0}`")]
    Forbidden(String),
    #[error("requests that came through a proxy (X-Forwarded-For or Forwarded) are refused")]
    Forwarded,
    #[error("the request path is longer than {0} bytes")]
    UriTooLong(usize),
    #[error("the request headers are larger than {0} bytes")]
    HeadersTooLarge(usize),
    /// The read path's failure: its code, with an HTTP status.
    #[error("{0}")]
    Read(#[from] ReadError),
    #[error("connection limit exceeded (service.max-connections)")]
    ConnectionLimit,
}

impl From<Denied> for ApiError {
    fn from(denied: Denied) -> Self {
        ApiError::Forbidden(denied.asked)
    }
}

impl From<KeyError> for ApiError {
    fn from(err: KeyError) -> Self {
        match err {
            KeyError::NoSuchKey(key) => ApiError::KeyNotFound(KeyError::NoSuchKey(echo(&key))),
            KeyError::NotJsonObject => ApiError::NotJson(err),
        }
    }
}

impl ApiError {
    /// The status and stable code of each error.
    pub(crate) fn parts(&self) -> (StatusCode, &'static str) {
        match self {
            ApiError::ResourceNotFound(_) => (StatusCode::NOT_FOUND, "resource_not_found"),
            ApiError::KeyNotFound(_) => (StatusCode::NOT_FOUND, "key_not_found"),
            ApiError::NotJson(_) => (StatusCode::UNPROCESSABLE_ENTITY, "secret_not_json"),
            ApiError::BadRequest(_) => (StatusCode::BAD_REQUEST, "bad_request"),
            ApiError::RouteNotFound => (StatusCode::NOT_FOUND, "not_found"),
            ApiError::MethodNotAllowed => (StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed"),
            ApiError::Unauthorized => (StatusCode::UNAUTHORIZED, "unauthorized"),
            ApiError::Forbidden(_) => (StatusCode::FORBIDDEN, "forbidden"),
            ApiError::Forwarded => (StatusCode::BAD_REQUEST, "forwarded_request_refused"),
            ApiError::UriTooLong(_) => (StatusCode::URI_TOO_LONG, "uri_too_long"),
            ApiError::HeadersTooLarge(_) => (
                StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
                "headers_too_large",
            ),
            ApiError::ConnectionLimit => {
                (StatusCode::TOO_MANY_REQUESTS, "connection_limit_exceeded")
            }
            ApiError::Read(e) => (read_status(e), e.code()),
        }
    }
}

/// The HTTP status of each way a read fails.
fn read_status(e: &ReadError) -> StatusCode {
    use UpstreamError as U;
    match e {
        ReadError::NotServingYet | ReadError::StaleLimit(_) => StatusCode::SERVICE_UNAVAILABLE,
        ReadError::NewNamesLimited => StatusCode::TOO_MANY_REQUESTS,
        ReadError::Upstream(e) | ReadError::NotConfigured(e) => match e {
            U::Timeout => StatusCode::GATEWAY_TIMEOUT,
            U::Credentials { .. } | U::Throttled(_) | U::Busy => StatusCode::SERVICE_UNAVAILABLE,
            U::VersionNotFound(_) => StatusCode::NOT_FOUND,
            U::InvalidParameter(_) => StatusCode::BAD_REQUEST,
            U::Unreachable(_)
            | U::AccessDenied { .. }
            | U::SecretNotFound(_)
            | U::DecryptionFailure(_)
            | U::InvalidRequest(_)
            | U::Service { .. }
            | U::Other { .. }
            | U::BadAnswer(_) => StatusCode::BAD_GATEWAY,
        },
    }
}

impl ResponseError for ApiError {
    fn status_code(&self) -> StatusCode {
        self.parts().0
    }

    fn error_response(&self) -> HttpResponse {
        let (status, code) = self.parts();
        let mut response = HttpResponse::build(status);
        response.insert_header(CacheControl(vec![CacheDirective::NoStore]));
        match self {
            ApiError::Unauthorized => {
                response.insert_header((WWW_AUTHENTICATE, "Bearer"));
            }
            ApiError::MethodNotAllowed => {
                response.insert_header((ALLOW, "GET, HEAD"));
            }
            _ => {}
        }
        response.json(serde_json::json!({ "error": code, "message": self.to_string() }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn echo_is_short_and_escaped() {
        assert_eq!(echo("prod/db"), "prod/db");
        assert_eq!(echo(&"a".repeat(32)), "a".repeat(32));
        assert_eq!(echo(&"a".repeat(10_000)), format!("{}...", "a".repeat(32)));
        assert_eq!(echo("a`b\n\u{0}\"c"), "a`b\\n\\0\\\"c");
    }
}
