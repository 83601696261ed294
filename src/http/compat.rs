//! The routes of the AWS Secrets Manager Agent, so an app written for it (or
//! for the Lambda extension) moves over by changing only the port:
//! `GET /secretsmanager/get?secretId=<name or ARN>` and `GET /v1/<name>`,
//! with `versionStage` or `versionId`. Both answer in the GetSecretValue
//! JSON shape. Unlike the AWS agent, only configured resources are served.

use std::time::UNIX_EPOCH;

use actix_web::http::header::{CacheControl, CacheDirective};
use actix_web::{HttpRequest, HttpResponse, ResponseError, web};
use base64::Engine;
use percent_encoding::percent_decode_str;
use serde::{Deserialize, Serialize};

use super::auth::Grant;
use super::{ApiError, AppState, CACHE_HEADER, Snapshot, Target, echo};
use crate::secret::{Kind, Secret, secret_bytes};

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct Query {
    secret_id: Option<String>,
    version_stage: Option<String>,
    version_id: Option<String>,
    #[serde(default)]
    refresh_now: bool,
}

const KNOWN: &[&str] = &["secretId", "versionStage", "versionId", "refreshNow"];

/// `GET /secretsmanager/get?secretId=...`
pub async fn get_by_query(req: HttpRequest, state: web::Data<AppState>) -> HttpResponse {
    let started = super::request_started();
    let snapshot = state.current.load();
    let mut target = Target::Unknown;
    let result = async {
        // The token first: a client without one learns nothing, not even
        // which parameters are wrong.
        let grant = snapshot.auth.authenticate(&req)?;
        let q: Query = super::parse_query(req.query_string(), KNOWN)?;
        let id = q
            .secret_id
            .clone()
            .ok_or_else(|| ApiError::BadRequest("secretId is required".into()))?;
        serve(&state, &snapshot, &grant, &id, q, &mut target).await
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
pub async fn get_by_path(req: HttpRequest, state: web::Data<AppState>) -> HttpResponse {
    let started = super::request_started();
    let raw = req.uri().path().strip_prefix("/v1/").unwrap_or_default();
    let id = percent_decode_str(raw).decode_utf8_lossy().into_owned();
    let snapshot = state.current.load();
    let mut target = Target::Unknown;
    let result = async {
        let grant = snapshot.auth.authenticate(&req)?;
        let q: Query = super::parse_query(req.query_string(), KNOWN)?;
        if q.secret_id.is_some() {
            return Err(ApiError::BadRequest(
                "secretId goes in the path of /v1/<name>, not in the query".into(),
            ));
        }
        serve(&state, &snapshot, &grant, &id, q, &mut target).await
    }
    .await;
    respond(&req, "/v1/", target, result, started)
}

fn respond(
    req: &HttpRequest,
    route: &str,
    target: Target<'_>,
    result: Result<(bytes::Bytes, crate::cache::CacheStatus), ApiError>,
    started: Option<std::time::Instant>,
) -> HttpResponse {
    let response = match &result {
        Ok((body, status)) => HttpResponse::Ok()
            .content_type("application/json")
            .insert_header(CacheControl(vec![CacheDirective::NoStore]))
            .insert_header((CACHE_HEADER, status.as_str()))
            .body(body.clone()),
        Err(err) => err.error_response(),
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

/// Serves a configured name, or an ARN that one or more names map to; a
/// request by ARN is allowed when the token may read any of its names.
/// `target` is set to the name served, for the log.
async fn serve<'s>(
    state: &AppState,
    snapshot: &'s Snapshot,
    grant: &Grant<'_>,
    id: &str,
    q: Query,
    target: &mut Target<'s>,
) -> Result<(bytes::Bytes, crate::cache::CacheStatus), ApiError> {
    let version = super::secrets::version(q.version_stage, q.version_id)?;
    let (name, arn) = match snapshot.resources.get(id) {
        Some((name, arn)) => {
            *target = Target::Resource { name, key: None };
            grant.permit(name)?;
            (name, arn)
        }
        None => {
            let (arn, names) = snapshot
                .resources
                .by_arn(id)
                .ok_or_else(|| ApiError::ResourceNotFound(echo(id)))?;
            // A refusal is logged under the first name.
            *target = Target::Resource {
                name: &names[0],
                key: None,
            };
            let name = grant.permit_any(names, arn.as_str())?;
            *target = Target::Resource { name, key: None };
            (name, arn)
        }
    };
    let (secret, status) = super::read(state, name, arn, &version, q.refresh_now).await?;
    Ok((get_secret_value_json(&secret), status))
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
    /// Seconds since the epoch, as in the AWS JSON protocol.
    created_date: Option<f64>,
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
            .map(|d| (d.as_millis() as f64) / 1000.0),
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
    fn json_shape() {
        let secret = Secret {
            arn: "arn:aws:secretsmanager:us-west-1:123456789012:secret:a-AbCdEf".into(),
            name: "a".into(),
            version_id: Some("v1".into()),
            version_stages: vec!["AWSCURRENT".into()],
            created_date: Some(UNIX_EPOCH + std::time::Duration::from_millis(1_700_000_000_250)),
            kind: Kind::Json,
            value: secret_bytes(br#"{"k":"v"}"#.to_vec()),
        };
        let json: serde_json::Value =
            serde_json::from_slice(&get_secret_value_json(&secret)).unwrap();
        assert_eq!(json["ARN"], secret.arn);
        assert_eq!(json["Name"], "a");
        assert_eq!(json["VersionId"], "v1");
        assert_eq!(json["SecretString"], r#"{"k":"v"}"#);
        assert_eq!(json["VersionStages"][0], "AWSCURRENT");
        assert_eq!(json["CreatedDate"], 1_700_000_000.25);
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
