//! Client tokens: who may read which resource.

use actix_web::HttpRequest;
use actix_web::http::header::{AUTHORIZATION, HeaderName};
use secrecy::ExposeSecret;
use subtle::ConstantTimeEq;

use super::ApiError;
use crate::config::{ClientToken, TokenScope};
use crate::resources::ResourceName;

#[cfg(test)]
const AWS_TOKEN_HEADER: &str = "X-Aws-Parameters-Secrets-Token";

/// The configured tokens; none means open access.
#[derive(Debug, Default)]
pub struct Authorizer {
    tokens: Vec<ClientToken>,
    /// `auth.token-headers`: where a token may come from besides
    /// `Authorization: Bearer`, in order.
    headers: Vec<HeaderName>,
}

/// What an authenticated (or open) request may read.
pub struct Grant<'a>(Option<&'a TokenScope>);

impl Grant<'_> {
    /// 403 when the token's list does not name the resource.
    pub fn permit(&self, name: &ResourceName) -> Result<(), ApiError> {
        if self.allows(name) {
            Ok(())
        } else {
            Err(ApiError::Forbidden(name.to_string()))
        }
    }

    /// The first of `names`, which all stand for one secret, that the token
    /// may read; 403 naming `asked` (a configured ARN) when it may read none.
    pub fn permit_any<'n>(
        &self,
        names: &'n [ResourceName],
        asked: &str,
    ) -> Result<&'n ResourceName, ApiError> {
        names
            .iter()
            .find(|name| self.allows(name))
            .ok_or_else(|| ApiError::Forbidden(asked.to_owned()))
    }

    fn allows(&self, name: &ResourceName) -> bool {
        self.0.is_none_or(|scope| scope.allows(name))
    }
}

impl Authorizer {
    /// `headers` are validated header names (`auth.token-headers`); one
    /// that is not is skipped.
    pub fn new(tokens: Vec<ClientToken>, headers: &[String]) -> Authorizer {
        let headers = headers
            .iter()
            .filter_map(|h| HeaderName::from_bytes(h.as_bytes()).ok())
            .collect();
        Authorizer { tokens, headers }
    }

    pub fn is_open(&self) -> bool {
        self.tokens.is_empty()
    }

    /// 401 unless the request carries a configured token (or access is open).
    pub fn authenticate(&self, req: &HttpRequest) -> Result<Grant<'_>, ApiError> {
        if self.is_open() {
            return Ok(Grant(None));
        }
        self.presented(req)
            .find_map(|presented| self.find(presented))
            .map(|t| Grant(Some(&t.scope)))
            .ok_or(ApiError::Unauthorized)
    }

    /// Compares against every token in constant time per token, without
    /// stopping at the first match.
    fn find(&self, presented: &[u8]) -> Option<&ClientToken> {
        if presented.is_empty() {
            return None;
        }
        let mut found = None;
        for token in &self.tokens {
            if bool::from(token.value.expose_secret().as_bytes().ct_eq(presented)) {
                found = Some(token);
            }
        }
        found
    }
}

impl Authorizer {
    /// The tokens a request presents: `Authorization: Bearer <token>` alone
    /// when it has that header, else each token header it carries (as the
    /// AWS agent does, any of them may hold the token).
    fn presented<'r>(&'r self, req: &'r HttpRequest) -> impl Iterator<Item = &'r [u8]> {
        let headers = req.headers();
        let bearer = headers.get(AUTHORIZATION).map(|value| {
            let bytes = value.as_bytes();
            match bytes.get(..7) {
                Some(scheme) if scheme.eq_ignore_ascii_case(b"bearer ") => bytes[7..].trim_ascii(),
                _ => &[][..],
            }
        });
        let others = bearer.is_none().then(|| {
            self.headers
                .iter()
                .flat_map(|name| headers.get_all(name))
                .map(|v| v.as_bytes().trim_ascii())
        });
        bearer.into_iter().chain(others.into_iter().flatten())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::TokenSource;
    use actix_web::test::TestRequest;
    use secrecy::SecretString;

    fn authorizer() -> Authorizer {
        let name = |n: &str| ResourceName::parse(n).unwrap();
        let headers = crate::config::DEFAULT_TOKEN_HEADERS.map(str::to_owned);
        Authorizer::new(
            vec![
                ClientToken {
                    source: TokenSource::Env("A".into()),
                    value: SecretString::from("all-access-token"),
                    scope: TokenScope::All,
                },
                ClientToken {
                    source: TokenSource::Env("B".into()),
                    value: SecretString::from("db-only-token"),
                    scope: TokenScope::Only {
                        names: [name("db")].into(),
                        prefixes: vec!["team/".into()],
                    },
                },
            ],
            &headers,
        )
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
        assert!(auth.authenticate(&req).unwrap().permit(&other).is_ok());
        let req = bearer("bearer db-only-token");
        let grant = auth.authenticate(&req).unwrap();
        assert!(grant.permit(&db).is_ok());
        assert!(matches!(grant.permit(&other), Err(ApiError::Forbidden(_))));
        let req = aws("db-only-token");
        assert!(auth.authenticate(&req).unwrap().permit(&db).is_ok());
        // A prefix (`team/*`) in the scope.
        let grant = auth.authenticate(&req).unwrap();
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
        assert!(auth.authenticate(&req).unwrap().permit(&db).is_ok());

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
                auth.authenticate(&req),
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
        let grant = auth.authenticate(&req).unwrap();
        // Sorted, the name the token may not read comes first.
        let both = names(&["a-alias", "db"]);
        assert_eq!(grant.permit_any(&both, "arn").unwrap().as_str(), "db");
        let other = names(&["a-alias", "other"]);
        assert!(matches!(
            grant.permit_any(&other, "arn:x"),
            Err(ApiError::Forbidden(asked)) if asked == "arn:x"
        ));
        let req = TestRequest::default()
            .insert_header((AUTHORIZATION, "Bearer all-access-token"))
            .to_http_request();
        let grant = auth.authenticate(&req).unwrap();
        assert_eq!(grant.permit_any(&other, "arn").unwrap().as_str(), "a-alias");
    }

    #[test]
    fn open_when_no_tokens() {
        let auth = Authorizer::default();
        let req = TestRequest::default().to_http_request();
        let name = ResourceName::parse("x").unwrap();
        assert!(auth.authenticate(&req).unwrap().permit(&name).is_ok());
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
                prop_assert_eq!(auth.authenticate(&req).is_ok(), valid);
            }
        }
    }
}
