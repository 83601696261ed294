//! The AWS Parameters and Secrets Lambda extension's Parameter Store route:
//! `GET /systemsmanager/parameters/get?name=<name or ARN>&withDecryption=true`
//! (with `version=<number>` or `label=<label>`), answered in the
//! GetParameter JSON shape the extension returns:
//! `{"Parameter":{"ARN", "DataType", "LastModifiedDate", "Name", "Selector",
//! "SourceResult", "Type", "Value", "Version"}, "ResultMetadata":{}}`.
//!
//! Tokens and errors are those of the other compatible routes (`403 Bad
//! Token`, AWS's JSON error shape). Only configured parameters are served:
//! `name` is matched against the configured parameters' names (`/app/db`)
//! and ARNs, the parameter patterns, then the resource names; anything else
//! gets AWS's `ParameterNotFound` answer without asking AWS.

use std::borrow::Cow;
use std::time::UNIX_EPOCH;

use actix_web::http::StatusCode;
use actix_web::{HttpRequest, HttpResponse, web};
use serde::Serialize;

use super::compat::CompatError;
use super::{ApiError, AppState, Target, echo};
use crate::access::Grant;
use crate::cache::CacheStatus;
use crate::domain::Version;
use crate::domain::{Secret, secret_bytes};
use crate::read::{ReadError, Snapshot};
use crate::upstream::UpstreamError;

/// The route, as the extension serves it.
pub(super) const PATH: &str = "/systemsmanager/parameters/get";

/// What AWS says of a parameter that does not exist; also the answer to a
/// `name` that no configured parameter matches.
const NOT_FOUND_MESSAGE: &str = "Parameter not found.";

/// The query, read as the extension reads it: the last of a repeated
/// parameter wins, an unknown one is named.
#[derive(Debug, Default, PartialEq, Eq)]
struct Query {
    name: Option<String>,
    with_decryption: bool,
    version: Option<String>,
    label: Option<String>,
}

impl Query {
    fn parse(query: &str) -> Result<Query, CompatError> {
        let bad = |text: Cow<'static, str>| CompatError::Text(StatusCode::BAD_REQUEST, text);
        let pairs: Vec<(String, String)> =
            serde_urlencoded::from_str(query).map_err(|_| bad("invalid query string".into()))?;
        let mut q = Query::default();
        for (name, value) in pairs {
            match name.as_str() {
                "name" => q.name = Some(value),
                "version" => q.version = Some(value),
                "label" => q.label = Some(value),
                "withDecryption" => {
                    q.with_decryption = match value.to_ascii_lowercase().as_str() {
                        "true" => true,
                        "false" => false,
                        _ => return Err(bad("invalid withDecryption value".into())),
                    }
                }
                _ => return Err(bad(format!("unknown parameter: {}", echo(&name)).into())),
            }
        }
        Ok(q)
    }

    /// The version asked for: the latest, a number or a label; the
    /// encrypted form of it without `withDecryption=true`.
    fn version(&self) -> Result<Version, CompatError> {
        let version =
            super::secrets::parameter_version(self.version.clone(), self.label.clone())
                .map_err(|e| CompatError::Text(StatusCode::BAD_REQUEST, e.to_string().into()))?;
        Ok(if self.with_decryption {
            version
        } else {
            Version::Encrypted(Box::new(version))
        })
    }
}

fn not_found() -> CompatError {
    CompatError::Aws {
        status: StatusCode::BAD_REQUEST,
        code: "ParameterNotFound".into(),
        message: NOT_FOUND_MESSAGE.into(),
    }
}

/// AWS's answer to a failed GetParameter; as the other compatible routes,
/// with SSM's codes for what does not exist.
fn upstream_error(e: UpstreamError) -> CompatError {
    let aws = |code: &'static str, message: String| CompatError::Aws {
        status: StatusCode::BAD_REQUEST,
        code: code.into(),
        message: if message.is_empty() {
            NOT_FOUND_MESSAGE.into()
        } else {
            message
        },
    };
    match e {
        UpstreamError::SecretNotFound(m) => aws("ParameterNotFound", m),
        UpstreamError::VersionNotFound(m) => aws("ParameterVersionNotFound", m),
        UpstreamError::InvalidParameter(m) => aws("ValidationException", m),
        other => CompatError::from(ApiError::Read(ReadError::Upstream(other))),
    }
}

impl From<ApiError> for Refusal {
    fn from(e: ApiError) -> Refusal {
        Refusal(match e {
            ApiError::Read(ReadError::Upstream(e) | ReadError::StaleLimit(e)) => upstream_error(e),
            other => CompatError::from(other),
        })
    }
}

impl From<CompatError> for Refusal {
    fn from(e: CompatError) -> Refusal {
        Refusal(e)
    }
}

/// A [`CompatError`] as this route answers it.
struct Refusal(CompatError);

/// `GET /systemsmanager/parameters/get?name=...`
pub(super) async fn get_parameter(req: HttpRequest, state: web::Data<AppState>) -> HttpResponse {
    let started = super::request_started();
    let snapshot = state.reader.current.load();
    let mut target = Target::Unknown;
    let result = async {
        let grant = super::compat::authorize(&req, &snapshot)?;
        let q = Query::parse(req.query_string())?;
        let name = q.name.clone().filter(|n| !n.is_empty()).ok_or_else(|| {
            CompatError::Text(StatusCode::BAD_REQUEST, "missing parameter name".into())
        })?;
        let version = q.version()?;
        serve(&state, &snapshot, &grant, &name, &version, &mut target).await
    }
    .await;
    let result = result.map_err(|Refusal(err)| err);
    super::compat::respond(
        &req,
        "/systemsmanager/parameters/get?name=",
        target,
        result,
        started,
    )
}

/// Finds the configured parameter `name` stands for (a request by ARN or
/// parameter name is allowed when the token may read any of its resource
/// names), checks the token and reads it.
async fn serve<'s>(
    state: &AppState,
    snapshot: &'s Snapshot,
    grant: &Grant<'_>,
    name: &str,
    version: &Version,
    target: &mut Target<'s>,
) -> Result<(bytes::Bytes, CacheStatus), Refusal> {
    let resources = &snapshot.resources;
    let by_arn = if name.starts_with("arn:") {
        resources.by_arn(name)
    } else {
        resources.by_parameter_name(name)
    };
    let found = if let Some((arn, names)) = by_arn.filter(|(arn, _)| arn.is_parameter()) {
        super::found_by_arn(grant, arn, names, target)?
    } else if let Some(found) = if name.starts_with("arn:") {
        resources.by_arn_pattern(name)
    } else {
        resources
            .by_parameter_name_pattern(name)
            .or_else(|| resources.lookup(name))
    } {
        found
    } else {
        return Err(not_found().into());
    };
    if !found.arn.is_parameter() {
        return Err(not_found().into());
    }
    *target = Target::Resource {
        found: found.clone(),
        key: None,
    };
    grant.permit(&found.name).map_err(ApiError::from)?;
    let (parameter, status) = match state.reader.read(&found, version, false).await {
        // A name nobody configured: the same answer as for any other.
        Err(ReadError::NotConfigured(_)) => return Err(not_found().into()),
        other => other.map_err(ApiError::from)?,
    };
    Ok((get_parameter_json(&parameter), status))
}

/// The GetParameter answer as the extension returns it.
#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
struct Output<'a> {
    parameter: OutputParameter<'a>,
    /// Always empty, as the extension sends it.
    result_metadata: Empty,
}

#[derive(Serialize)]
struct Empty {}

#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
struct OutputParameter<'a> {
    #[serde(rename = "ARN")]
    arn: &'a str,
    data_type: Option<&'a str>,
    /// Seconds since the epoch as a JSON number, AWS's JSON wire format.
    last_modified_date: Option<f64>,
    name: &'a str,
    /// `:<version>` or `:<label>` when one was asked for (as AWS answers),
    /// else `null`.
    selector: Option<&'a str>,
    /// `null` unless AWS set it.
    source_result: Option<&'a str>,
    #[serde(rename = "Type")]
    parameter_type: Option<&'a str>,
    value: &'a str,
    version: i64,
}

fn get_parameter_json(parameter: &Secret) -> bytes::Bytes {
    let info = parameter.parameter.as_ref();
    let output = Output {
        parameter: OutputParameter {
            arn: &parameter.arn,
            data_type: info.and_then(|i| i.data_type.as_deref()),
            last_modified_date: parameter
                .created_date
                .and_then(|d| d.duration_since(UNIX_EPOCH).ok())
                .map(|d| d.as_secs_f64()),
            name: &parameter.name,
            selector: info.and_then(|i| i.selector.as_deref()),
            source_result: info.and_then(|i| i.source_result.as_deref()),
            parameter_type: info.and_then(|i| i.parameter_type.as_deref()),
            // A parameter's value is text: it came from a String.
            value: std::str::from_utf8(&parameter.value).unwrap_or_default(),
            version: info.map_or(0, |i| i.version),
        },
        result_metadata: Empty {},
    };
    // The JSON holds the value: keep it in memory that is wiped on drop.
    secret_bytes(serde_json::to_vec(&output).unwrap_or_default())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::{Kind, ParameterInfo};

    #[test]
    fn queries_as_the_extension_reads_them() {
        let q = Query::parse("name=%2Fapp%2Fdb&withDecryption=TRUE&version=3").unwrap();
        assert_eq!(q.name.as_deref(), Some("/app/db"));
        assert!(q.with_decryption);
        assert_eq!(q.version().unwrap(), Version::Number(3));
        let q = Query::parse("name=a&name=b&label=prod").unwrap();
        assert_eq!(q.name.as_deref(), Some("b"));
        // Without decryption: the encrypted form, cached apart.
        assert_eq!(
            q.version().unwrap(),
            Version::Encrypted(Box::new(Version::Label("prod".into())))
        );
        let text = |query: &str| match Query::parse(query).and_then(|q| q.version()) {
            Err(CompatError::Text(status, body)) => (status.as_u16(), body.into_owned()),
            other => panic!("{query}: {other:?}"),
        };
        assert_eq!(
            text("withDecryption=yes"),
            (400, "invalid withDecryption value".into())
        );
        assert_eq!(
            text("secretId=x"),
            (400, "unknown parameter: secretId".into())
        );
        assert_eq!(text("version=1&label=a").0, 400);
        assert_eq!(text("version=x").0, 400);
    }

    #[test]
    fn errors_in_ssm_terms() {
        let body = |e: UpstreamError| {
            let e = upstream_error(e);
            (e.response().status().as_u16(), format!("{e:?}"))
        };
        let (status, shown) = body(UpstreamError::SecretNotFound(String::new()));
        assert_eq!(status, 400);
        assert!(shown.contains("ParameterNotFound") && shown.contains(NOT_FOUND_MESSAGE));
        let (_, shown) = body(UpstreamError::VersionNotFound("no version 9".into()));
        assert!(shown.contains("ParameterVersionNotFound"), "{shown}");
        let (status, _) = body(UpstreamError::Timeout);
        assert_eq!(status, 504);
        let denied = UpstreamError::AccessDenied {
            code: "AccessDeniedException".into(),
            message: "no".into(),
        };
        let (status, shown) = body(denied);
        assert_eq!(status, 400);
        assert!(shown.contains("AccessDeniedException"), "{shown}");
    }

    #[test]
    fn json_shape() {
        let parameter = Secret {
            arn: "arn:aws:ssm:us-east-1:123456789012:parameter/app/db".into(),
            name: "/app/db".into(),
            version_id: Some("3".into()),
            version_stages: vec![],
            created_date: Some(UNIX_EPOCH + std::time::Duration::from_millis(1_700_000_000_250)),
            kind: Kind::Text,
            value: secret_bytes(b"s3cr\"t".to_vec()),
            parameter: Some(ParameterInfo {
                parameter_type: Some("SecureString".into()),
                data_type: Some("text".into()),
                version: 3,
                selector: Some(":3".into()),
                source_result: None,
            }),
            compat_answer: crate::domain::BuiltOnce::default(),
        };
        let json: serde_json::Value =
            serde_json::from_slice(&get_parameter_json(&parameter)).unwrap();
        assert_eq!(
            json,
            serde_json::json!({
                "Parameter": {
                    "ARN": "arn:aws:ssm:us-east-1:123456789012:parameter/app/db",
                    "DataType": "text",
                    "LastModifiedDate": 1_700_000_000.25,
                    "Name": "/app/db",
                    "Selector": ":3",
                    "SourceResult": null,
                    "Type": "SecureString",
                    "Value": "s3cr\"t",
                    "Version": 3,
                },
                "ResultMetadata": {},
            })
        );
    }
}
