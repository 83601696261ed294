//! `GET /secrets/<name>[/<key>]`.

use std::time::Instant;

use actix_web::http::header::{CacheControl, CacheDirective};
use actix_web::{HttpRequest, HttpResponse, ResponseError, web};
use percent_encoding::percent_decode_str;
use serde::Deserialize;

use super::{ApiError, AppState};
use crate::cache::CacheStatus;
use crate::upstream::Version;

/// Header that says how the cache served a read.
pub const CACHE_HEADER: &str = "Secret-Agent-Cache";

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
        let q: SecretQuery = serde_urlencoded::from_str(query).map_err(|e| {
            ApiError::BadRequest(format!(
                "bad query string ({e}); known parameters: version-stage, version-id, refresh"
            ))
        })?;
        let valid = |v: &str| !v.is_empty() && v.len() <= 256;
        let version = match (q.version_stage, q.version_id) {
            (None, None) => Ok(Version::Current),
            (Some(stage), None) if valid(&stage) => Ok(Version::Stage(stage)),
            (None, Some(id)) if valid(&id) => Ok(Version::Id(id)),
            (Some(_), Some(_)) => Err(ApiError::BadRequest(
                "give version-stage or version-id, not both".into(),
            )),
            _ => Err(ApiError::BadRequest(
                "version-stage and version-id must be 1 to 256 characters".into(),
            )),
        }?;
        Ok((version, q.refresh))
    }
}

/// What a successful read sends back.
struct Served {
    body: bytes::Bytes,
    content_type: &'static str,
    status: CacheStatus,
}

pub async fn get_secret(req: HttpRequest, state: web::Data<AppState>) -> HttpResponse {
    let started = Instant::now();
    let raw = req
        .uri()
        .path()
        .strip_prefix("/secrets/")
        .unwrap_or_default();
    let name = percent_decode_str(raw).decode_utf8_lossy();
    let result = serve(&req, &state, &name).await;
    let response = match &result {
        Ok(served) => HttpResponse::Ok()
            .content_type(served.content_type)
            .insert_header(CacheControl(vec![CacheDirective::NoStore]))
            .insert_header((CACHE_HEADER, served.status.as_str()))
            .body(served.body.clone()),
        Err(err) => err.error_response(),
    };
    if log::log_enabled!(log::Level::Debug) {
        let cache = result.as_ref().map_or("-", |s| s.status.as_str());
        let shown: String = name.chars().take(200).collect();
        log::debug!(
            "GET /secrets/{} -> {} cache={} {:.1}ms",
            shown.escape_debug(),
            response.status().as_u16(),
            cache,
            started.elapsed().as_secs_f64() * 1000.0
        );
    }
    response
}

async fn serve(req: &HttpRequest, state: &AppState, path: &str) -> Result<Served, ApiError> {
    let snapshot = state.current.load();
    let grant = snapshot.auth.authenticate(req)?;
    let (version, refresh) = SecretQuery::parse(req.query_string())?;
    let resolved = snapshot
        .resources
        .resolve(path)
        .ok_or_else(|| ApiError::ResourceNotFound(path.chars().take(200).collect()))?;
    grant.permit(resolved.name)?;
    let read = if refresh {
        state.cache.refresh(resolved.arn, &version).await
    } else {
        state.cache.get(resolved.arn, &version).await
    };
    let (secret, status) = read.map_err(|e| {
        log::warn!("{}: {e}", resolved.name);
        ApiError::from(e)
    })?;
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
}
