//! `GET /secrets/<name>[/<key>]`.

use actix_web::http::header::{CACHE_CONTROL, CONTENT_TYPE, HeaderName, HeaderValue};
use actix_web::{HttpRequest, HttpResponse, ResponseError, web};
use percent_encoding::percent_decode_str;
use serde::Deserialize;

use super::{ApiError, AppState, Snapshot, Target, echo};
use crate::cache::CacheStatus;
use crate::resources::Resolved;
use crate::upstream::Version;

/// Header that says how the cache served a read.
pub const CACHE_HEADER: &str = "Secret-Agent-Cache";
/// [`CACHE_HEADER`] as HTTP/2 and `HeaderName::from_static` want it: lower case.
const CACHE_HEADER_NAME: &str = "secret-agent-cache";

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct SecretQuery {
    version_stage: Option<String>,
    version_id: Option<String>,
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
        let q: SecretQuery =
            super::parse_query(query, &["version-stage", "version-id", "refresh"])?;
        Ok((version(q.version_stage, q.version_id)?, q.refresh))
    }
}

/// A version from optional stage and id parameters (at most one).
pub(super) fn version(stage: Option<String>, id: Option<String>) -> Result<Version, ApiError> {
    let valid = |v: &str| !v.is_empty() && v.len() <= 256;
    match (stage, id) {
        (None, None) => Ok(Version::Current),
        (Some(stage), None) if valid(&stage) => Ok(Version::Stage(stage)),
        (None, Some(id)) if valid(&id) => Ok(Version::Id(id)),
        (Some(_), Some(_)) => Err(ApiError::BadRequest(
            "give a version stage or a version id, not both".into(),
        )),
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

pub async fn get_secret(req: HttpRequest, state: web::Data<AppState>) -> HttpResponse {
    let started = super::request_started();
    let raw = req
        .uri()
        .path()
        .strip_prefix("/secrets/")
        .unwrap_or_default();
    let path = percent_decode_str(raw).decode_utf8_lossy();
    let snapshot = state.current.load();
    let resolved = snapshot.resources.resolve(&path);
    let result = serve(&req, &state, &snapshot, &path, resolved.as_ref()).await;
    let response = match &result {
        Ok(served) => HttpResponse::Ok()
            .insert_header((CONTENT_TYPE, HeaderValue::from_static(served.content_type)))
            .insert_header((CACHE_CONTROL, HeaderValue::from_static("no-store")))
            .insert_header((
                HeaderName::from_static(CACHE_HEADER_NAME),
                HeaderValue::from_static(served.status.as_str()),
            ))
            .body(served.body.clone()),
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
    let grant = snapshot.auth.authenticate(req)?;
    let (version, refresh) = SecretQuery::parse(req.query_string())?;
    let resolved = resolved.ok_or_else(|| ApiError::ResourceNotFound(echo(path)))?;
    grant.permit(&resolved.found.name)?;
    let read = super::read(state, &resolved.found, &version, refresh).await;
    let (secret, status) = match read {
        // Under a pattern, a secret that does not exist is a name nobody
        // configured: 404, as for any other unknown name.
        Err(ApiError::Upstream(crate::upstream::UpstreamError::SecretNotFound(_)))
            if resolved.found.by_pattern() =>
        {
            return Err(ApiError::ResourceNotFound(echo(path)));
        }
        other => other?,
    };
    let (body, kind) = match resolved.key {
        None => (secret.value.clone(), secret.kind),
        Some(key) => secret.key(key)?,
    };
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
        for bad in [
            "versionStage=x",
            "version-stage=a&version-id=b",
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

    mod proptests {
        use super::*;
        use proptest::prelude::*;

        proptest! {
            #[test]
            fn query_strings_never_panic(query in "[a-z=&%0-9A-F+-]{0,60}") {
                match SecretQuery::parse(&query) {
                    Ok((Version::Stage(v) | Version::Id(v), _)) => prop_assert!(!v.is_empty() && v.len() <= 256),
                    Ok(_) => {}
                    Err(e) => prop_assert!(matches!(e, ApiError::BadRequest(_))),
                }
            }
        }
    }
}
