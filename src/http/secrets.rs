//! `GET /secrets/<name>[/<key>]`.

use std::sync::Arc;

use actix_web::http::StatusCode;
use actix_web::http::header::{CACHE_CONTROL, CONTENT_TYPE, HeaderName, HeaderValue};
use actix_web::{HttpRequest, HttpResponse, ResponseError};
use percent_encoding::percent_decode_str;
use serde::Deserialize;

use super::{ApiError, AppState, Target, echo};
use crate::cache::CacheStatus;
use crate::domain::Arn;
use crate::domain::Secret;
use crate::domain::Version;
use crate::read::{ReadError, Snapshot};
use crate::resources::Resolved;

/// Header that says how the cache served a read (`Secret-Agent-Cache`),
/// as HTTP/2 and `HeaderName::from_static` want it: lower case.
pub(super) const CACHE_HEADER_NAME: &str = "secret-agent-cache";

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct SecretQuery {
    version_stage: Option<String>,
    version_id: Option<String>,
    /// A parameter's version number.
    version: Option<String>,
    /// A parameter's label.
    label: Option<String>,
    /// `refresh=true` fetches from AWS now instead of serving the cache.
    #[serde(default)]
    refresh: bool,
}

impl SecretQuery {
    /// The version asked for, and whether to refresh it now.
    fn parse(query: &str) -> Result<(Version, bool), ApiError> {
        if query.is_empty() {
            return Ok((Version::Current, false));
        }
        let q: SecretQuery = super::parse_query(
            query,
            &["version-stage", "version-id", "version", "label", "refresh"],
        )?;
        let version = match (q.version_stage, q.version_id, q.version, q.label) {
            (stage, id, None, None) => version(stage, id)?,
            (None, None, number, label) => parameter_version(number, label)?,
            _ => {
                return Err(ApiError::BadRequest(
                    "give a secret's version-stage or version-id, or a parameter's version or label, not both".into(),
                ));
            }
        };
        Ok((version, q.refresh))
    }
}

/// Whether `version` is one `arn` has: a secret's stage or id, a
/// parameter's number or label.
pub(super) fn version_fits(version: &Version, arn: &Arn) -> Result<(), ApiError> {
    match (version, arn.is_parameter()) {
        (Version::Current, _)
        | (Version::Stage(_) | Version::Id(_) | Version::IdAndStage { .. }, false)
        | (Version::Number(_) | Version::Label(_), true) => Ok(()),
        (_, true) => Err(ApiError::BadRequest(
            "a parameter's version is `version` (a number) or `label`".into(),
        )),
        (_, false) => Err(ApiError::BadRequest(
            "a secret's version is `version-stage` or `version-id`".into(),
        )),
    }
}

/// A parameter version from optional number and label parameters (at most
/// one). A label is what AWS allows: up to 100 letters, digits and `. - _`,
/// not starting with a digit (it would read as a version number).
pub(super) fn parameter_version(
    number: Option<String>,
    label: Option<String>,
) -> Result<Version, ApiError> {
    match (number, label) {
        (None, None) => Ok(Version::Current),
        (Some(number), None) => match number.parse::<u64>() {
            Ok(n) if n > 0 && !number.starts_with('+') => Ok(Version::Number(n)),
            _ => Err(ApiError::BadRequest(
                "a parameter version is a number from 1".into(),
            )),
        },
        (None, Some(label)) => {
            let valid = !label.is_empty()
                && label.len() <= 100
                && !label.starts_with(|c: char| c.is_ascii_digit())
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b));
            if valid {
                Ok(Version::Label(label))
            } else {
                Err(ApiError::BadRequest(
                    "a parameter label is 1 to 100 letters, digits and . - _, not starting with a digit".into(),
                ))
            }
        }
        (Some(_), Some(_)) => Err(ApiError::BadRequest(
            "give a parameter version or a label, not both".into(),
        )),
    }
}

/// A version from optional stage and id parameters (at most one).
pub(super) fn version(stage: Option<String>, id: Option<String>) -> Result<Version, ApiError> {
    let valid = |v: &str| !v.is_empty() && v.len() <= 256;
    match (stage, id) {
        (None, None) => Ok(Version::Current),
        (Some(stage), None) if valid(&stage) => Ok(Version::Stage(stage)),
        (None, Some(id)) if valid(&id) => Ok(Version::Id(id)),
        // Both, as AWS takes them: the id, if it carries the label.
        (Some(stage), Some(id)) if valid(&stage) && valid(&id) => {
            Ok(Version::IdAndStage { id, stage })
        }
        _ => Err(ApiError::BadRequest(
            "a version stage or id must be 1 to 256 characters".into(),
        )),
    }
}

/// What a successful read sends back.
struct Served {
    body: bytes::Bytes,
    content_type: &'static str,
    status: CacheStatus,
}

pub(super) async fn get_secret(req: HttpRequest) -> HttpResponse {
    // Borrowed, not extracted: `web::Data` would take a reference on the
    // state that every worker thread shares.
    let Some(state) = super::app_state(&req) else {
        return HttpResponse::InternalServerError().finish();
    };
    let started = super::request_started();
    let raw = req
        .uri()
        .path()
        .strip_prefix("/secrets/")
        .unwrap_or_default();
    let path = if raw.contains('%') {
        percent_decode_str(raw).decode_utf8_lossy()
    } else {
        std::borrow::Cow::Borrowed(raw)
    };
    let snapshot = state.reader.current.load();
    let resolved = snapshot.resources.resolve(&path);
    let result = serve(&req, state, &snapshot, &path, resolved.as_ref()).await;
    let response = match &result {
        Ok(served) => {
            let mut response = HttpResponse::with_body(StatusCode::OK, served.body.clone());
            let headers = response.headers_mut();
            headers.insert(CONTENT_TYPE, HeaderValue::from_static(served.content_type));
            headers.insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
            headers.insert(
                HeaderName::from_static(CACHE_HEADER_NAME),
                HeaderValue::from_static(served.status.as_str()),
            );
            response.map_into_boxed_body()
        }
        Err(err) => err.error_response(),
    };
    let cache = result.ok().map(|s| s.status);
    let target = resolved.map_or(Target::Unknown, |r| Target::Resource {
        found: r.found,
        key: r.key,
    });
    super::log_request(
        &req,
        "/secrets/",
        target,
        response.status().as_u16(),
        cache,
        started,
    );
    response
}

/// The token first, then the query, then the resource: a client without a
/// token learns nothing about either.
async fn serve(
    req: &HttpRequest,
    state: &AppState,
    snapshot: &Snapshot,
    path: &str,
    resolved: Option<&Resolved<'_>>,
) -> Result<Served, ApiError> {
    let grant = super::auth::authenticate(&snapshot.access, req)?;
    let (version, refresh) = SecretQuery::parse(req.query_string())?;
    let resolved = resolved.ok_or_else(|| ApiError::ResourceNotFound(echo(path)))?;
    grant.permit(&resolved.found.name)?;
    version_fits(&version, &resolved.found.arn)?;
    let body = |secret: &Arc<Secret>| match resolved.key {
        None => Ok((secret.value.clone(), secret.kind)),
        Some(key) => secret.key(key),
    };
    // The hot path: a fresh value, without awaiting anything.
    let fresh = if refresh {
        None
    } else {
        state.reader.fresh(&resolved.found, &version, body)
    };
    let (answer, status) = match fresh {
        Some(hit) => (hit, CacheStatus::Hit),
        None => {
            // Boxed: the fetch's state is allocated only for reads that need it.
            let read = Box::pin(state.reader.read(&resolved.found, &version, refresh)).await;
            let (secret, status) = match read {
                // A name nobody configured: 404, as for any other unknown name.
                Err(ReadError::NotConfigured(_)) => {
                    return Err(ApiError::ResourceNotFound(echo(path)));
                }
                Err(ReadError::Upstream(e)) => {
                    return Err(ApiError::Read(ReadError::Upstream(e.for_version(&version))));
                }
                other => other?,
            };
            (body(&secret), status)
        }
    };
    let (body, kind) = answer?;
    Ok(Served {
        body,
        content_type: kind.content_type(),
        status,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_parsing() {
        assert_eq!(SecretQuery::parse("").unwrap(), (Version::Current, false));
        assert_eq!(
            SecretQuery::parse("version-stage=AWSPREVIOUS").unwrap(),
            (Version::Stage("AWSPREVIOUS".into()), false)
        );
        assert_eq!(
            SecretQuery::parse("version-id=abc&refresh=true").unwrap(),
            (Version::Id("abc".into()), true)
        );
        // Both, as AWS takes them.
        assert_eq!(
            SecretQuery::parse("version-stage=AWSCURRENT&version-id=abc").unwrap(),
            (
                Version::IdAndStage {
                    id: "abc".into(),
                    stage: "AWSCURRENT".into()
                },
                false
            )
        );
        assert_eq!(
            SecretQuery::parse("version=3").unwrap(),
            (Version::Number(3), false)
        );
        assert_eq!(
            SecretQuery::parse("label=prod-1.a_b&refresh=true").unwrap(),
            (Version::Label("prod-1.a_b".into()), true)
        );
        for bad in [
            "versionStage=x",
            "version-stage=&version-id=b",
            "version=0",
            "version=-1",
            "version=%2B1",
            "version=x",
            "version=",
            "label=",
            "label=1a",
            "label=a:b",
            "label=a%20b",
            "version=1&label=a",
            "version=1&version-id=a",
            "label=a&version-stage=b",
            "version-id=",
            "%zz=1",
            "refresh=yes",
        ] {
            assert!(
                matches!(SecretQuery::parse(bad), Err(ApiError::BadRequest(_))),
                "{bad}"
            );
        }
    }

    #[test]
    fn versions_fit_their_kind() {
        let secret = Arn::parse("arn:aws:secretsmanager:us-east-1:123456789012:secret:x").unwrap();
        let parameter = Arn::parse("arn:aws:ssm:us-east-1:123456789012:parameter/x").unwrap();
        for (version, arn, fits) in [
            (Version::Current, &secret, true),
            (Version::Current, &parameter, true),
            (Version::Stage("S".into()), &secret, true),
            (Version::Id("i".into()), &secret, true),
            (Version::Number(1), &parameter, true),
            (Version::Label("l".into()), &parameter, true),
            (Version::Stage("S".into()), &parameter, false),
            (Version::Id("i".into()), &parameter, false),
            (Version::Number(1), &secret, false),
            (Version::Label("l".into()), &secret, false),
        ] {
            assert_eq!(
                version_fits(&version, arn).is_ok(),
                fits,
                "{version:?} {arn}"
            );
        }
    }

    mod proptests {
        use super::*;
        use proptest::prelude::*;

        proptest! {
            #[test]
            fn query_strings_never_panic(query in "[a-z=&%0-9A-F+-]{0,60}") {
                match SecretQuery::parse(&query) {
                    Ok((Version::Stage(v) | Version::Id(v), _)) => prop_assert!(!v.is_empty() && v.len() <= 256),
                    Ok((Version::Label(v), _)) => prop_assert!(!v.is_empty() && v.len() <= 100 && !v.contains(':')),
                    Ok(_) => {}
                    Err(e) => prop_assert!(matches!(e, ApiError::BadRequest(_))),
                }
            }
        }
    }
}
