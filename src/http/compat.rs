//! The routes of the AWS Secrets Manager Agent, so an app written for it (or
//! for the Lambda extension) moves over by changing only the port:
//! `GET /secretsmanager/get?secretId=<name or ARN>`, `GET /v1/<name>` (with
//! `versionStage`, `versionId`, `refreshNow`) and `GET /ping`.
//!
//! They answer as the AWS agent does, byte for byte where a client can see
//! it: the GetSecretValue JSON with `CreatedDate` as a string of epoch
//! seconds, no `Content-Type`, its plain-text errors (`403 Bad Token`,
//! `400 unknown parameter: x`) and AWS's errors in AWS's shape
//! (`{"__type":"ResourceNotFoundException", "message":"..."}`). Unlike the
//! AWS agent, only configured resources are served; anything else gets
//! the answer AWS gives for a secret that does not exist, without asking AWS.

use std::borrow::Cow;
use std::sync::Arc;
use std::time::UNIX_EPOCH;

use actix_web::http::header::{
    CACHE_CONTROL, CacheControl, CacheDirective, HeaderName, HeaderValue,
};
use actix_web::http::{Method, StatusCode};
use actix_web::{HttpRequest, HttpResponse, web};
use base64::Engine;
use percent_encoding::percent_decode_str;
use serde::Serialize;

use super::{ApiError, AppState, Target, echo};
use crate::access::Grant;
use crate::cache::CacheStatus;
use crate::domain::{Kind, RoleArn, Secret, Version, secret_bytes};
use crate::read::{ReadError, Snapshot};
use crate::resources::Found;
use crate::roles::RoleError;
use crate::upstream::UpstreamError;

/// What AWS says of a secret that does not exist: the answer to a
/// `secretId` that no configured resource matches.
const NOT_FOUND_MESSAGE: &str = "Secrets Manager can't find the specified secret.";

/// An error as the AWS agent answers it.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum CompatError {
    /// The AWS agent's own errors: a status and a plain-text body.
    Text(StatusCode, Cow<'static, str>),
    /// An AWS error: AWS's status, `{"__type":<code>, "message":<message>}`.
    Aws {
        status: StatusCode,
        code: Cow<'static, str>,
        message: String,
    },
    /// `500 {"__type":"InternalFailure"}`: credentials and anything the SDK
    /// could not classify.
    InternalFailure,
}

impl CompatError {
    fn text(status: StatusCode, body: impl Into<Cow<'static, str>>) -> CompatError {
        CompatError::Text(status, body.into())
    }

    /// A missing, unknown or (here) insufficient token.
    fn bad_token() -> CompatError {
        CompatError::text(StatusCode::FORBIDDEN, "Bad Token")
    }

    /// A request that came through a proxy (the SSRF guard).
    pub(super) fn forwarded() -> CompatError {
        CompatError::text(StatusCode::BAD_REQUEST, "Forwarded")
    }

    fn not_allowed() -> CompatError {
        CompatError::text(StatusCode::METHOD_NOT_ALLOWED, "Not allowed")
    }

    fn not_found() -> CompatError {
        CompatError::Aws {
            status: StatusCode::BAD_REQUEST,
            code: "ResourceNotFoundException".into(),
            message: NOT_FOUND_MESSAGE.into(),
        }
    }

    /// A role the token may not read as, or that STS would not let the
    /// agent assume: 403, as the AWS Workload Credentials Provider answers
    /// a failed AssumeRole.
    fn role_denied(message: String) -> CompatError {
        CompatError::Aws {
            status: StatusCode::FORBIDDEN,
            code: "AccessDeniedException".into(),
            message,
        }
    }

    fn aws(code: &'static str, message: &str) -> CompatError {
        CompatError::Aws {
            status: StatusCode::BAD_REQUEST,
            code: code.into(),
            message: message.to_owned(),
        }
    }

    /// The AWS agent's answer to a failed fetch: AWS's status, code and
    /// message; 504 for a timeout, 502 for a connection failure.
    fn upstream(e: &UpstreamError) -> CompatError {
        use UpstreamError as U;
        let status = |code: u16| StatusCode::from_u16(code).unwrap_or(StatusCode::BAD_REQUEST);
        match e {
            U::Timeout | U::Busy => CompatError::Aws {
                status: StatusCode::GATEWAY_TIMEOUT,
                code: "TimeoutError".into(),
                message: "Timeout".into(),
            },
            U::Unreachable(_) => CompatError::Aws {
                status: StatusCode::BAD_GATEWAY,
                code: "ConnectionError".into(),
                message: "Read Error".into(),
            },
            U::Credentials { .. } | U::BadAnswer(_) => CompatError::InternalFailure,
            U::SecretNotFound(m) | U::VersionNotFound(m) => {
                CompatError::aws("ResourceNotFoundException", m)
            }
            U::InvalidParameter(m) => CompatError::aws("InvalidParameterException", m),
            U::DecryptionFailure(m) => CompatError::aws("DecryptionFailure", m),
            U::InvalidRequest(m) => CompatError::aws("InvalidRequestException", m),
            U::Throttled(m) => CompatError::aws("ThrottlingException", m),
            U::AccessDenied { code, message }
            | U::Service { code, message }
            | U::Other { code, message } => {
                // No code AWS sent (an unreadable answer, an SDK failure):
                // the AWS agent answers InternalFailure, as for an empty message.
                if code.starts_with("HTTP") || code == "SdkError" || message.is_empty() {
                    return CompatError::InternalFailure;
                }
                let code_status = match code.as_str() {
                    "InternalServiceError" | "InternalFailure" | "InternalServerError" => 500,
                    "ServiceUnavailable" | "ServiceUnavailableException" => 503,
                    _ => 400,
                };
                CompatError::Aws {
                    status: status(code_status),
                    code: code.clone().into(),
                    message: message.clone(),
                }
            }
        }
    }

    fn status(&self) -> StatusCode {
        match self {
            CompatError::Text(status, _) | CompatError::Aws { status, .. } => *status,
            CompatError::InternalFailure => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// The AWS agent's body: plain text, or AWS's JSON 1.1 error shape
    /// (with its space after the comma).
    fn body(&self) -> String {
        let quoted = |s: &str| serde_json::to_string(s).unwrap_or_default();
        match self {
            CompatError::Text(_, text) => text.to_string(),
            CompatError::InternalFailure => r#"{"__type":"InternalFailure"}"#.to_owned(),
            CompatError::Aws { code, message, .. }
                if message.is_empty() || code == "InternalFailure" =>
            {
                r#"{"__type":"InternalFailure"}"#.to_owned()
            }
            CompatError::Aws { code, message, .. } => {
                format!(
                    r#"{{"__type":{}, "message":{}}}"#,
                    quoted(code),
                    quoted(message)
                )
            }
        }
    }

    /// No `Content-Type`, as the AWS agent; `Cache-Control: no-store` as
    /// every answer of ours.
    pub(super) fn response(&self) -> HttpResponse {
        HttpResponse::build(self.status())
            .insert_header(CacheControl(vec![CacheDirective::NoStore]))
            .body(self.body())
    }
}

impl From<ApiError> for CompatError {
    fn from(e: ApiError) -> CompatError {
        match e {
            ApiError::Unauthorized | ApiError::Forbidden(_) => CompatError::bad_token(),
            ApiError::Forwarded => CompatError::forwarded(),
            ApiError::MethodNotAllowed => CompatError::not_allowed(),
            ApiError::ResourceNotFound(_) => CompatError::not_found(),
            ApiError::RouteNotFound => CompatError::text(StatusCode::NOT_FOUND, "Not found"),
            ApiError::ConnectionLimit => {
                CompatError::text(StatusCode::TOO_MANY_REQUESTS, "Connection limit exceeded")
            }
            ApiError::Read(
                ReadError::Upstream(e) | ReadError::StaleLimit(e) | ReadError::NotConfigured(e),
            ) => CompatError::upstream(&e),
            other => {
                let status = other.parts().0;
                CompatError::Text(status, other.to_string().into())
            }
        }
    }
}

/// The query of the compatible routes. As the AWS agent: the last of a
/// repeated parameter wins, an unknown one is named. Values are borrowed
/// from the query string unless they were percent-encoded.
#[derive(Debug, Default, PartialEq, Eq)]
struct Query<'q> {
    secret_id: Option<Cow<'q, str>>,
    version_stage: Option<Cow<'q, str>>,
    version_id: Option<Cow<'q, str>>,
    refresh_now: bool,
    /// `roleArn`: read as this role, as the AWS Workload Credentials
    /// Provider does (if the token lists it).
    role: Option<RoleArn>,
}

impl<'q> Query<'q> {
    /// `with_secret_id`: whether `secretId` is a parameter (not on `/v1/`).
    fn parse(query: &'q str, with_secret_id: bool) -> Result<Query<'q>, CompatError> {
        let mut q = Query::default();
        for (name, value) in form_urlencoded::parse(query.as_bytes()) {
            match name.as_ref() {
                "secretId" if with_secret_id => q.secret_id = Some(value),
                "versionStage" => q.version_stage = Some(value),
                "versionId" => q.version_id = Some(value),
                "roleArn" => {
                    q.role = Some(RoleArn::parse(&value).ok_or_else(|| {
                        CompatError::text(
                            StatusCode::BAD_REQUEST,
                            "invalid roleArn format, expected arn:<partition>:iam::<account>:role/<name>",
                        )
                    })?);
                }
                "refreshNow" => {
                    q.refresh_now = match value.to_ascii_lowercase().as_str() {
                        "true" | "1" => true,
                        "false" | "0" => false,
                        _ => {
                            return Err(CompatError::text(
                                StatusCode::BAD_REQUEST,
                                "invalid refreshNow value",
                            ));
                        }
                    }
                }
                _ => {
                    return Err(CompatError::text(
                        StatusCode::BAD_REQUEST,
                        format!("unknown parameter: {}", echo(&name)),
                    ));
                }
            }
        }
        Ok(q)
    }
}

/// `GET /ping`: the AWS agent's health check; no token needed.
pub(super) async fn ping(req: HttpRequest) -> HttpResponse {
    if req.method() != Method::GET {
        return CompatError::not_allowed().response();
    }
    HttpResponse::Ok().body("healthy")
}

/// `GET /start_serving`: the AWS agent's Lambda extension wrapper calls it,
/// without a token, on the first invoke; an agent started with `-l` starts
/// serving and fetching then. Any other time it changes nothing.
pub(super) async fn start_serving(req: HttpRequest, state: web::Data<AppState>) -> HttpResponse {
    if req.method() != Method::GET {
        return CompatError::not_allowed().response();
    }
    if state.reader.serving.open() {
        log::info!("GET /start_serving: serving from now on");
    }
    HttpResponse::Ok().body("serving")
}

/// The AWS agent's order: the token first (a client without one learns
/// nothing, not even which parameters are wrong), then the method.
pub(super) fn authorize<'s>(
    req: &HttpRequest,
    snapshot: &'s Snapshot,
) -> Result<Grant<'s>, CompatError> {
    let grant = super::auth::authenticate(&snapshot.access, req)?;
    if req.method() != Method::GET {
        return Err(CompatError::not_allowed());
    }
    Ok(grant)
}

/// `GET /secretsmanager/get?secretId=...`
pub(super) async fn get_by_query(req: HttpRequest) -> HttpResponse {
    // Borrowed, not extracted: `web::Data` would take a reference on the
    // state that every worker thread shares.
    let Some(state) = super::app_state(&req) else {
        return HttpResponse::InternalServerError().finish();
    };
    let started = super::request_started();
    let snapshot = state.reader.current.load();
    let mut target = Target::Unknown;
    let result = async {
        let grant = authorize(&req, &snapshot)?;
        let q = Query::parse(req.query_string(), true)?;
        let id = match &q.secret_id {
            Some(id) if !id.is_empty() => id.clone(),
            _ => {
                return Err(CompatError::text(
                    StatusCode::BAD_REQUEST,
                    "missing parameter secretId",
                ));
            }
        };
        serve(state, &snapshot, &grant, &id, q, &mut target).await
    }
    .await;
    respond(
        &req,
        "/secretsmanager/get?secretId=",
        target,
        result,
        started,
    )
}

/// `GET /v1/<name>`
pub(super) async fn get_by_path(req: HttpRequest) -> HttpResponse {
    let Some(state) = super::app_state(&req) else {
        return HttpResponse::InternalServerError().finish();
    };
    let started = super::request_started();
    let raw = req.uri().path().strip_prefix("/v1/").unwrap_or_default();
    let id = percent_decode_str(raw).decode_utf8_lossy();
    let snapshot = state.reader.current.load();
    let mut target = Target::Unknown;
    let result = async {
        let grant = authorize(&req, &snapshot)?;
        if id.is_empty() {
            return Err(CompatError::text(
                StatusCode::BAD_REQUEST,
                "missing secret ID",
            ));
        }
        let q = Query::parse(req.query_string(), false)?;
        serve(state, &snapshot, &grant, &id, q, &mut target).await
    }
    .await;
    respond(&req, "/v1/", target, result, started)
}

/// The answer to a compatible route's request, and its debug line.
pub(super) fn respond(
    req: &HttpRequest,
    route: &str,
    target: Target<'_>,
    result: Result<(bytes::Bytes, crate::cache::CacheStatus), CompatError>,
    started: Option<tokio::time::Instant>,
) -> HttpResponse {
    let response = match &result {
        Ok((body, status)) => {
            let mut response = HttpResponse::with_body(StatusCode::OK, body.clone());
            let headers = response.headers_mut();
            headers.insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
            headers.insert(
                HeaderName::from_static(super::secrets::CACHE_HEADER_NAME),
                HeaderValue::from_static(status.as_str()),
            );
            response.map_into_boxed_body()
        }
        Err(err) => err.response(),
    };
    let cache = result.ok().map(|(_, s)| s);
    super::log_request(
        req,
        route,
        target,
        response.status().as_u16(),
        cache,
        started,
    );
    response
}

/// Serves a configured name or a name under a pattern, or an ARN that one
/// or more names map to (a request by ARN is allowed when the token may
/// read any of its names) or that is under a pattern's ARN prefix. An
/// exact name or ARN wins over a pattern. `target` is set to what is
/// served, for the log.
async fn serve<'s>(
    state: &AppState,
    snapshot: &'s Snapshot,
    grant: &Grant<'_>,
    id: &str,
    q: Query<'_>,
    target: &mut Target<'s>,
) -> Result<(bytes::Bytes, crate::cache::CacheStatus), CompatError> {
    let version = super::secrets::version(
        q.version_stage.map(Cow::into_owned),
        q.version_id.map(Cow::into_owned),
    )?;
    let found = if let Some(found) = snapshot.resources.lookup(id) {
        found
    } else if let Some((arn, names)) = snapshot.resources.by_arn(id) {
        super::found_by_arn(grant, arn, names, target)?
    } else {
        snapshot
            .resources
            .by_arn_pattern(id)
            .ok_or_else(CompatError::not_found)?
    };
    // Parameters have their own route, `/systemsmanager/parameters/get`.
    if found.arn.is_parameter() {
        return Err(CompatError::not_found());
    }
    *target = Target::Resource {
        found: found.clone(),
        key: None,
    };
    grant.permit(&found.name).map_err(ApiError::from)?;
    if let Some(role) = &q.role
        && !grant.allows_role(role)
    {
        return Err(CompatError::role_denied(format!(
            "this token may not read as role {}",
            echo(role.as_str())
        )));
    }
    // The hot path: a fresh value, its answer built once, nothing awaited.
    if q.role.is_none()
        && !q.refresh_now
        && let Some(body) = state
            .reader
            .fresh(&found, &version, |secret| answer(secret))
    {
        return Ok((body, CacheStatus::Hit));
    }
    // Boxed: the fetch's state is allocated only for reads that need it.
    let (secret, status) = Box::pin(fetch(state, &found, &version, q.role, q.refresh_now)).await?;
    Ok((answer(&secret), status))
}

/// A version's GetSecretValue JSON, built on its first read and kept with it.
fn answer(secret: &Secret) -> bytes::Bytes {
    secret
        .compat_answer
        .get_or_build(|| get_secret_value_json(secret))
}

/// A read that the cache could not answer at once: fetched, refreshed, or
/// read as a role.
async fn fetch(
    state: &AppState,
    found: &Found<'_>,
    version: &Version,
    role: Option<RoleArn>,
    refresh: bool,
) -> Result<(Arc<Secret>, CacheStatus), CompatError> {
    let read = match &role {
        None => state.reader.read(found, version, refresh).await,
        Some(role) => {
            // The token's grant of the role was checked by `serve`.
            if !state.reader.serving.is_open() {
                return Err(ApiError::Read(ReadError::NotServingYet).into());
            }
            let cache = state.reader.roles.cache(role).await.map_err(|e| {
                let RoleError::Assume { message, .. } = e;
                // AWS's words may repeat the role; answers repeat 32 characters of what a client sent.
                let short = echo(role.as_str());
                let message = message.replace(role.as_str(), &short);
                CompatError::role_denied(format!("cannot assume role {short}: {message}"))
            })?;
            state
                .reader
                .read_from(&cache, found, version, refresh)
                .await
        }
    };
    Ok(read.map_err(ApiError::from)?)
}

/// The GetSecretValue response shape, as the AWS agent returns it.
#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
struct Output<'a> {
    #[serde(rename = "ARN")]
    arn: &'a str,
    name: &'a str,
    version_id: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    secret_string: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    secret_binary: Option<String>,
    version_stages: &'a [String],
    /// Seconds since the epoch as a string (`"1700000000.25"`), as the AWS
    /// agent writes it.
    created_date: Option<String>,
}

fn get_secret_value_json(secret: &Secret) -> bytes::Bytes {
    let (text, binary) = match secret.kind {
        Kind::Binary => (
            None,
            Some(base64::engine::general_purpose::STANDARD.encode(&secret.value)),
        ),
        // A SecretString is valid UTF-8: it came from a String.
        _ => (std::str::from_utf8(&secret.value).ok(), None),
    };
    let output = Output {
        arn: &secret.arn,
        name: &secret.name,
        version_id: secret.version_id.as_deref(),
        secret_string: text,
        secret_binary: binary,
        version_stages: &secret.version_stages,
        created_date: secret
            .created_date
            .and_then(|d| d.duration_since(UNIX_EPOCH).ok())
            .map(|d| d.as_secs_f64().to_string()),
    };
    // The JSON holds the value: keep it in memory that is wiped on drop.
    let json = serde_json::to_vec(&output).unwrap_or_default();
    if let Some(mut encoded) = output.secret_binary {
        zeroize::Zeroize::zeroize(&mut encoded);
    }
    secret_bytes(json)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn queries_as_the_aws_agent_reads_them() {
        let q = Query::parse("secretId=a&secretId=b&refreshNow=TRUE&versionStage=S", true).unwrap();
        assert_eq!(q.secret_id.as_deref(), Some("b"));
        assert_eq!(q.version_stage.as_deref(), Some("S"));
        assert!(q.refresh_now);
        assert!(!Query::parse("refreshNow=0", true).unwrap().refresh_now);
        let text = |query: &str, with_id: bool| match Query::parse(query, with_id) {
            Err(CompatError::Text(status, body)) => (status.as_u16(), body.into_owned()),
            other => panic!("{query}: {other:?}"),
        };
        assert_eq!(
            text("refreshNow=yes", true),
            (400, "invalid refreshNow value".into())
        );
        assert_eq!(
            text("abc=123", true),
            (400, "unknown parameter: abc".into())
        );
        assert_eq!(
            text("secretId=x", false),
            (400, "unknown parameter: secretId".into())
        );
        let role = "arn:aws:iam::123456789012:role/reader";
        let query = format!("secretId=x&roleArn={role}");
        let q = Query::parse(&query, true).unwrap();
        assert_eq!(q.role.unwrap().as_str(), role);
        assert_eq!(
            text("secretId=x&roleArn=not-a-valid-arn", true),
            (
                400,
                "invalid roleArn format, expected arn:<partition>:iam::<account>:role/<name>"
                    .into()
            )
        );
        let (_, long) = text(&format!("{}=1", "n".repeat(100)), true);
        assert_eq!(long, format!("unknown parameter: {}...", "n".repeat(32)));
    }

    mod proptests {
        use super::*;
        use proptest::prelude::*;

        proptest! {
            /// Any query: parsed, or a plain-text 400 that repeats at most
            /// a short prefix of what was sent.
            #[test]
            fn queries_never_panic_and_errors_stay_short(
                query in "[a-zA-Z=&%0-9+]{0,200}",
                with_id in any::<bool>(),
            ) {
                match Query::parse(&query, with_id) {
                    Ok(_) => {}
                    Err(CompatError::Text(status, body)) => {
                        prop_assert_eq!(status, StatusCode::BAD_REQUEST);
                        prop_assert!(body.len() < 80, "{}", body);
                    }
                    Err(other) => prop_assert!(false, "{:?}", other),
                }
            }
        }
    }

    #[test]
    fn error_bodies_as_the_aws_agent_writes_them() {
        let e = CompatError::upstream(&UpstreamError::SecretNotFound(NOT_FOUND_MESSAGE.into()));
        assert_eq!(e.status(), StatusCode::BAD_REQUEST);
        assert_eq!(
            e.body(),
            r#"{"__type":"ResourceNotFoundException", "message":"Secrets Manager can't find the specified secret."}"#
        );
        let creds = UpstreamError::Credentials {
            message: "none".into(),
            transient: false,
        };
        let e = CompatError::upstream(&creds);
        assert_eq!(
            (e.status().as_u16(), e.body().as_str()),
            (500, r#"{"__type":"InternalFailure"}"#)
        );
        let e = CompatError::upstream(&UpstreamError::Timeout);
        assert_eq!(
            (e.status().as_u16(), e.body().as_str()),
            (504, r#"{"__type":"TimeoutError", "message":"Timeout"}"#)
        );
        let e = CompatError::upstream(&UpstreamError::Unreachable("x".into()));
        assert_eq!(e.status().as_u16(), 502);
        let denied = UpstreamError::AccessDenied {
            code: "AccessDeniedException".into(),
            message: "say \"no\"".into(),
        };
        let e = CompatError::upstream(&denied);
        assert_eq!(
            e.body(),
            r#"{"__type":"AccessDeniedException", "message":"say \"no\""}"#
        );
        let raw = UpstreamError::Service {
            code: "HTTP503".into(),
            message: "m".into(),
        };
        assert_eq!(CompatError::upstream(&raw), CompatError::InternalFailure);
        assert_eq!(
            CompatError::from(ApiError::Unauthorized).body(),
            "Bad Token"
        );
        assert_eq!(
            CompatError::from(ApiError::Forbidden("x".into()))
                .status()
                .as_u16(),
            403
        );
    }

    #[test]
    fn json_shape() {
        let secret = Secret {
            arn: "arn:aws:secretsmanager:us-west-1:123456789012:secret:a-AbCdEf".into(),
            name: "a".into(),
            version_id: Some("v1".into()),
            version_stages: vec!["AWSCURRENT".into()],
            created_date: Some(UNIX_EPOCH + std::time::Duration::from_millis(1_700_000_000_250)),
            kind: Kind::Json,
            value: secret_bytes(br#"{"k":"v"}"#.to_vec()),
            parameter: None,
            compat_answer: crate::domain::BuiltOnce::default(),
        };
        let json: serde_json::Value =
            serde_json::from_slice(&get_secret_value_json(&secret)).unwrap();
        assert_eq!(json["ARN"], secret.arn);
        assert_eq!(json["Name"], "a");
        assert_eq!(json["VersionId"], "v1");
        assert_eq!(json["SecretString"], r#"{"k":"v"}"#);
        assert_eq!(json["VersionStages"][0], "AWSCURRENT");
        assert_eq!(json["CreatedDate"], "1700000000.25");
        assert!(json.get("SecretBinary").is_none());
        let binary = Secret {
            kind: Kind::Binary,
            value: secret_bytes(vec![0, 255]),
            ..secret
        };
        let json: serde_json::Value =
            serde_json::from_slice(&get_secret_value_json(&binary)).unwrap();
        assert_eq!(json["SecretBinary"], "AP8=");
        assert!(json.get("SecretString").is_none());
    }
}
