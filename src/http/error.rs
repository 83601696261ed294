//! The API error type: one table from error to HTTP status and stable code.

use actix_web::http::StatusCode;
use actix_web::http::header::{ALLOW, CacheControl, CacheDirective, WWW_AUTHENTICATE};
use actix_web::{HttpResponse, ResponseError};

use crate::cache::CacheError;
use crate::secret::KeyError;
use crate::upstream::UpstreamError;

/// Everything a request can fail with. Messages are for people and never
/// carry secret material; codes are stable, snake_case.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
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
    #[error("{0}")]
    Upstream(UpstreamError),
    #[error("{0}")]
    StaleLimit(UpstreamError),
    #[error(
        "not serving yet: the agent was started with -l and serves once GET /start_serving is called"
    )]
    NotServingYet,
    #[error("connection limit exceeded (service.max-connections)")]
    ConnectionLimit,
    #[error(
        "too many names under patterns asked for the first time; try again shortly (cache.new-names-per-second)"
    )]
    NewNamesLimited,
}

impl From<CacheError> for ApiError {
    fn from(err: CacheError) -> Self {
        match err {
            CacheError::Upstream(e) => ApiError::Upstream(e),
            CacheError::StaleLimit(e) => ApiError::StaleLimit(e),
        }
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

/// Most characters of client input that a message repeats.
const ECHO_CHARS: usize = 32;

/// Client input as a message may repeat it: at most [`ECHO_CHARS`]
/// characters, escaped (quotes, controls), with `...` when cut.
pub(crate) fn echo(text: &str) -> String {
    crate::text::shorten(text, ECHO_CHARS)
}

impl ApiError {
    /// AWS repeats the version asked for in some messages: that is client
    /// input, so only its [`echo`] stays.
    pub(super) fn redact(&mut self, asked: &str) {
        use UpstreamError as U;
        let short = echo(asked);
        if short == asked {
            return;
        }
        if let ApiError::Upstream(e) | ApiError::StaleLimit(e) = self {
            match e {
                U::Unreachable(m)
                | U::SecretNotFound(m)
                | U::VersionNotFound(m)
                | U::InvalidParameter(m)
                | U::DecryptionFailure(m)
                | U::InvalidRequest(m)
                | U::Throttled(m)
                | U::Credentials { message: m, .. }
                | U::AccessDenied { message: m, .. }
                | U::Service { message: m, .. }
                | U::Other { message: m, .. } => *m = m.replace(asked, &short),
                _ => {}
            }
        }
    }

    /// The status and stable code of each error.
    pub fn parts(&self) -> (StatusCode, &'static str) {
        use UpstreamError as U;
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
            ApiError::StaleLimit(_) => (StatusCode::SERVICE_UNAVAILABLE, "upstream_unavailable"),
            ApiError::NotServingYet => (StatusCode::SERVICE_UNAVAILABLE, "not_serving_yet"),
            ApiError::ConnectionLimit => {
                (StatusCode::TOO_MANY_REQUESTS, "connection_limit_exceeded")
            }
            ApiError::NewNamesLimited => (StatusCode::TOO_MANY_REQUESTS, "new_names_rate_limited"),
            ApiError::Upstream(e) => match e {
                U::Timeout => (StatusCode::GATEWAY_TIMEOUT, "upstream_timeout"),
                U::Unreachable(_) => (StatusCode::BAD_GATEWAY, "upstream_unreachable"),
                U::Credentials { .. } => {
                    (StatusCode::SERVICE_UNAVAILABLE, "credentials_unavailable")
                }
                U::AccessDenied { .. } => (StatusCode::BAD_GATEWAY, "upstream_access_denied"),
                U::SecretNotFound(_) => (StatusCode::BAD_GATEWAY, "upstream_secret_not_found"),
                U::VersionNotFound(_) => (StatusCode::NOT_FOUND, "version_not_found"),
                U::InvalidParameter(_) => (StatusCode::BAD_REQUEST, "invalid_version"),
                U::DecryptionFailure(_) => (StatusCode::BAD_GATEWAY, "upstream_decryption_failure"),
                U::InvalidRequest(_) => (StatusCode::BAD_GATEWAY, "upstream_invalid_request"),
                U::Throttled(_) => (StatusCode::SERVICE_UNAVAILABLE, "upstream_throttled"),
                U::Busy => (StatusCode::SERVICE_UNAVAILABLE, "upstream_busy"),
                U::Service { .. } => (StatusCode::BAD_GATEWAY, "upstream_service_error"),
                U::Other { .. } => (StatusCode::BAD_GATEWAY, "upstream_error"),
                U::BadAnswer(_) => (StatusCode::BAD_GATEWAY, "upstream_bad_answer"),
            },
        }
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

    #[test]
    fn redact_keeps_only_an_echo_of_the_version() {
        let asked = format!("v-{}", "x".repeat(200));
        let mut e = ApiError::Upstream(UpstreamError::VersionNotFound(format!(
            "can't find VersionId: {asked}"
        )));
        e.redact(&asked);
        let text = e.to_string();
        assert!(
            !text.contains(&asked) && text.contains(&echo(&asked)),
            "{text}"
        );
        // A short version is already its own echo; nothing else changes.
        let mut e = ApiError::Upstream(UpstreamError::VersionNotFound("v: a".into()));
        e.redact("a");
        assert_eq!(
            e.to_string(),
            "no such version of the secret or parameter: v: a"
        );
    }
}
