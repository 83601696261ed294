//! The tokens an HTTP request presents, checked by [`crate::access`].

use actix_web::HttpRequest;
use actix_web::http::header::AUTHORIZATION;

use super::ApiError;
use crate::access::{Access, Grant};

#[cfg(test)]
const AWS_TOKEN_HEADER: &str = "X-Aws-Parameters-Secrets-Token";

/// 401 unless the request carries a configured token (or access is open).
pub(super) fn authenticate<'a>(
    access: &'a Access,
    req: &HttpRequest,
) -> Result<Grant<'a>, ApiError> {
    if access.is_open() {
        return Ok(Grant::All);
    }
    access
        .grant(presented(access, req))
        .ok_or(ApiError::Unauthorized)
}

/// The tokens a request presents: `Authorization: Bearer <token>` alone
/// when it has that header, else each token header it carries (as the
/// AWS agent does, any of them may hold the token).
fn presented<'r>(access: &'r Access, req: &'r HttpRequest) -> impl Iterator<Item = &'r [u8]> {
    let headers = req.headers();
    let bearer = headers.get(AUTHORIZATION).map(|value| {
        let bytes = value.as_bytes();
        match bytes.get(..7) {
            Some(scheme) if scheme.eq_ignore_ascii_case(b"bearer ") => bytes[7..].trim_ascii(),
            _ => &[][..],
        }
    });
    let others = bearer.is_none().then(|| {
        access
            .token_headers()
            .iter()
            .flat_map(|name| headers.get_all(name.as_str()))
            .map(|v| v.as_bytes().trim_ascii())
    });
    bearer.into_iter().chain(others.into_iter().flatten())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::ResourceName;
    use actix_web::test::TestRequest;

    fn authorizer() -> Access {
        crate::access::tests::two_tokens()
    }

    #[test]
    fn headers_and_scopes() {
        let auth = authorizer();
        let db = ResourceName::parse("db").unwrap();
        let other = ResourceName::parse("other").unwrap();
        let bearer = |t: &str| {
            TestRequest::default()
                .insert_header((AUTHORIZATION, t))
                .to_http_request()
        };
        let aws = |t: &str| {
            TestRequest::default()
                .insert_header((AWS_TOKEN_HEADER, t))
                .to_http_request()
        };

        let req = bearer("Bearer all-access-token");
        assert!(authenticate(&auth, &req).unwrap().permit(&other).is_ok());
        let req = bearer("bearer db-only-token");
        let grant = authenticate(&auth, &req).unwrap();
        assert!(grant.permit(&db).is_ok());
        assert!(matches!(
            grant.permit(&other).map_err(ApiError::from),
            Err(ApiError::Forbidden(_))
        ));
        let req = aws("db-only-token");
        assert!(authenticate(&auth, &req).unwrap().permit(&db).is_ok());
        // A prefix (`team/*`) in the scope.
        let grant = authenticate(&auth, &req).unwrap();
        assert!(
            grant
                .permit(&ResourceName::parse("team/x").unwrap())
                .is_ok()
        );
        assert!(
            grant
                .permit(&ResourceName::parse("teamx").unwrap())
                .is_err()
        );
        let req = TestRequest::default()
            .insert_header(("X-Vault-Token", "db-only-token"))
            .to_http_request();
        assert!(authenticate(&auth, &req).unwrap().permit(&db).is_ok());

        for req in [
            TestRequest::default().to_http_request(),
            bearer("Bearer wrong"),
            bearer("Bearer "),
            bearer("Basic all-access-token"),
            bearer("all-access-token"),
            aws(""),
            aws("all-access-tokenX"),
            aws("all-access-toke"),
        ] {
            assert!(matches!(
                authenticate(&auth, &req),
                Err(ApiError::Unauthorized)
            ));
        }
    }

    #[test]
    fn any_name_of_a_secret_will_do() {
        let auth = authorizer();
        let names = |list: &[&str]| -> Vec<ResourceName> {
            list.iter()
                .map(|n| ResourceName::parse(n).unwrap())
                .collect()
        };
        let req = TestRequest::default()
            .insert_header((AUTHORIZATION, "Bearer db-only-token"))
            .to_http_request();
        let grant = authenticate(&auth, &req).unwrap();
        // Sorted, the name the token may not read comes first.
        let both = names(&["a-alias", "db"]);
        assert_eq!(grant.permit_any(&both, "arn").unwrap().as_str(), "db");
        let other = names(&["a-alias", "other"]);
        assert!(matches!(
            grant.permit_any(&other, "arn:x").map_err(ApiError::from),
            Err(ApiError::Forbidden(asked)) if asked == "arn:x"
        ));
        let req = TestRequest::default()
            .insert_header((AUTHORIZATION, "Bearer all-access-token"))
            .to_http_request();
        let grant = authenticate(&auth, &req).unwrap();
        assert_eq!(grant.permit_any(&other, "arn").unwrap().as_str(), "a-alias");
    }

    #[test]
    fn open_when_no_tokens() {
        let auth = Access::default();
        let req = TestRequest::default().to_http_request();
        let name = ResourceName::parse("x").unwrap();
        assert!(authenticate(&auth, &req).unwrap().permit(&name).is_ok());
    }

    mod proptests {
        use super::*;
        use proptest::prelude::*;

        proptest! {
            /// Only the exact token (trimmed of surrounding spaces) gets in,
            /// whatever bytes a client sends.
            #[test]
            fn only_exact_tokens_pass(value in "[ -~]{0,40}", aws_header in any::<bool>()) {
                let auth = authorizer();
                let req = if aws_header {
                    TestRequest::default().insert_header((AWS_TOKEN_HEADER, value.as_str())).to_http_request()
                } else {
                    TestRequest::default().insert_header((AUTHORIZATION, value.as_str())).to_http_request()
                };
                let presented = if aws_header {
                    value.trim()
                } else {
                    match value.get(..7) {
                        Some(s) if s.eq_ignore_ascii_case("bearer ") => value[7..].trim(),
                        _ => "",
                    }
                };
                let valid = presented == "all-access-token" || presented == "db-only-token";
                prop_assert_eq!(authenticate(&auth, &req).is_ok(), valid);
            }
        }
    }
}
