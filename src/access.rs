//! Who may read what: the configured client tokens, each with its scope,
//! turned into a [`Grant`] for one request. No protocol types here: a
//! front end hands in the tokens a client presented (HTTP headers) or asks
//! for the grant of the clients that cannot send one (the Aerospike
//! protocol's).

use secrecy::ExposeSecret;
use subtle::ConstantTimeEq;

use crate::config::{ClientToken, Config, TokenScope};
use crate::domain::{ResourceName, RoleArn};

/// The configured tokens; none means open access.
#[derive(Debug, Default)]
pub(crate) struct Access {
    tokens: Vec<ClientToken>,
    /// `auth.token-headers`: where a token may come from besides
    /// `Authorization: Bearer`, in order; header names, lower case.
    token_headers: Vec<String>,
    /// `auth.secret-agent-protocol.resources`: what the protocol's clients
    /// may read when tokens are configured; `None`: nothing.
    protocol: Option<TokenScope>,
}

/// What one request may read.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Grant<'a> {
    /// Open access, or a token for every resource.
    All,
    /// What a token's scope names, and the roles it lists.
    Token(&'a ClientToken),
    /// What the protocol's scope names.
    Scope(&'a TokenScope),
    /// Tokens are configured and the protocol's clients are granted nothing.
    Nothing,
}

/// A name the grant does not cover; `asked` is what the message names (a
/// configured name or ARN, never a secret).
#[derive(Debug, thiserror::Error)]
#[error("this token may not read `{asked}`")]
pub(crate) struct Denied {
    pub(crate) asked: String,
}

impl Grant<'_> {
    pub(crate) fn allows(&self, name: &ResourceName) -> bool {
        match self {
            Grant::All => true,
            Grant::Token(token) => token.scope.allows(name),
            Grant::Scope(scope) => scope.allows(name),
            Grant::Nothing => false,
        }
    }

    /// Whether the request may read as `role`: only a token that lists it
    /// may (open access reads as no role: a role is a grant of its own).
    pub(crate) fn allows_role(&self, role: &RoleArn) -> bool {
        match self {
            Grant::Token(token) => token.roles.allows(role),
            Grant::All | Grant::Scope(_) | Grant::Nothing => false,
        }
    }

    /// Denied, naming `name`, unless the grant covers it.
    pub(crate) fn permit(&self, name: &ResourceName) -> Result<(), Denied> {
        if self.allows(name) {
            Ok(())
        } else {
            Err(Denied {
                asked: name.to_string(),
            })
        }
    }

    /// The first of `names`, which all stand for one secret, that the grant
    /// covers; denied naming `asked` (a configured ARN) when it covers none.
    pub(crate) fn permit_any<'n>(
        &self,
        names: &'n [ResourceName],
        asked: &str,
    ) -> Result<&'n ResourceName, Denied> {
        names
            .iter()
            .find(|name| self.allows(name))
            .ok_or_else(|| Denied {
                asked: asked.to_owned(),
            })
    }
}

impl Access {
    pub(crate) fn of(config: &Config) -> Access {
        Access::new(
            config.auth.clone(),
            &config.token_headers,
            config.protocol_scope.clone(),
        )
    }

    pub(crate) fn new(
        tokens: Vec<ClientToken>,
        token_headers: &[String],
        protocol: Option<TokenScope>,
    ) -> Access {
        Access {
            tokens,
            token_headers: token_headers
                .iter()
                .map(|h| h.to_ascii_lowercase())
                .collect(),
            protocol,
        }
    }

    pub(crate) fn is_open(&self) -> bool {
        self.tokens.is_empty()
    }

    /// The headers, besides `Authorization`, that may carry a token.
    pub(crate) fn token_headers(&self) -> &[String] {
        &self.token_headers
    }

    /// The grant of the first presented token that is configured; `None`
    /// when none is (and tokens are configured). Every configured token is
    /// compared in constant time, without stopping at the first match.
    pub(crate) fn grant<'p>(
        &self,
        presented: impl IntoIterator<Item = &'p [u8]>,
    ) -> Option<Grant<'_>> {
        if self.is_open() {
            return Some(Grant::All);
        }
        presented
            .into_iter()
            .find_map(|presented| self.find(presented))
            .map(Grant::Token)
    }

    /// What the clients that cannot send a token may read.
    pub(crate) fn protocol_grant(&self) -> Grant<'_> {
        match (self.is_open(), &self.protocol) {
            (true, _) => Grant::All,
            (false, Some(scope)) => Grant::Scope(scope),
            (false, None) => Grant::Nothing,
        }
    }

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

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::config::TokenSource;
    use secrecy::SecretString;

    fn name(n: &str) -> ResourceName {
        ResourceName::parse(n).unwrap()
    }

    /// One token for everything, one for `db` and `team/*`.
    pub(crate) fn two_tokens() -> Access {
        let headers = crate::config::DEFAULT_TOKEN_HEADERS.map(str::to_owned);
        Access::new(
            vec![
                ClientToken {
                    source: TokenSource::Env("A".into()),
                    value: SecretString::from("all-access-token"),
                    scope: TokenScope::All,
                    roles: crate::domain::RoleScope::only(
                        vec![RoleArn::parse("arn:aws:iam::123456789012:role/r").unwrap()],
                        vec![],
                    ),
                },
                ClientToken {
                    source: TokenSource::Env("B".into()),
                    value: SecretString::from("db-only-token"),
                    scope: TokenScope::Only {
                        names: [name("db")].into(),
                        prefixes: vec!["team/".into()],
                    },
                    roles: crate::domain::RoleScope::default(),
                },
            ],
            &headers,
            Some(TokenScope::Only {
                names: [name("db")].into(),
                prefixes: vec![],
            }),
        )
    }

    #[test]
    fn only_configured_tokens_grant() {
        let access = two_tokens();
        for wrong in [&b""[..], b"wrong", b"all-access-toke", b"all-access-tokenX"] {
            assert!(access.grant([wrong]).is_none());
        }
        let grant = access.grant([&b"wrong"[..], b"db-only-token"]).unwrap();
        assert!(grant.allows(&name("db")) && grant.allows(&name("team/x")));
        assert!(!grant.allows(&name("other")) && !grant.allows(&name("teamx")));
        let grant = access.grant([&b"all-access-token"[..]]).unwrap();
        assert!(grant.allows(&name("other")));
    }

    #[test]
    fn only_tokens_listing_a_role_read_as_it() {
        let access = two_tokens();
        let role = RoleArn::parse("arn:aws:iam::123456789012:role/r").unwrap();
        let other = RoleArn::parse("arn:aws:iam::123456789012:role/s").unwrap();
        let all = access.grant([&b"all-access-token"[..]]).unwrap();
        assert!(all.allows_role(&role) && !all.allows_role(&other));
        let db = access.grant([&b"db-only-token"[..]]).unwrap();
        assert!(!db.allows_role(&role));
        assert!(!access.protocol_grant().allows_role(&role));
        assert!(!Access::default().grant([]).unwrap().allows_role(&role));
    }

    #[test]
    fn open_access_grants_all() {
        let access = Access::default();
        assert!(access.grant([]).unwrap().allows(&name("x")));
        assert!(access.protocol_grant().allows(&name("x")));
    }

    #[test]
    fn protocol_clients_get_their_own_scope_or_nothing() {
        let access = two_tokens();
        let grant = access.protocol_grant();
        assert!(grant.allows(&name("db")) && !grant.allows(&name("team/x")));
        let none = Access::new(access.tokens.clone(), &[], None);
        assert!(!none.protocol_grant().allows(&name("db")));
    }

    #[test]
    fn denials_name_what_was_asked() {
        let access = two_tokens();
        let grant = access.grant([&b"db-only-token"[..]]).unwrap();
        assert_eq!(grant.permit(&name("x")).unwrap_err().asked, "x");
        let names = [name("a-alias"), name("other")];
        assert_eq!(
            grant.permit_any(&names, "arn:x").unwrap_err().asked,
            "arn:x"
        );
    }
}
