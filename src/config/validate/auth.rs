//! `auth`: client tokens (from files or environment variables), the headers
//! that carry them, what each may read, and what the secret agent
//! protocol's clients may read.

use std::collections::BTreeSet;
use std::path::PathBuf;

use secrecy::{ExposeSecret, SecretString};

use super::Validator;
use crate::config::error::{closest, shown};
use crate::config::raw::{OneOrMany, RawAuth, RawToken};
use crate::config::{ClientToken, ConfigError, DEFAULT_TOKEN_HEADERS, TokenScope, TokenSource};
use crate::domain::{RoleArn, RoleScope};
use crate::resources::{Pattern, Resources};

/// The validated `auth` section; all empty (open access) without one.
pub(super) struct Auth {
    pub(super) tokens: Vec<ClientToken>,
    pub(super) protocol_scope: Option<TokenScope>,
    pub(super) token_headers: Vec<String>,
}

impl Validator<'_> {
    /// `auth`, its parts in the order their errors are reported: the
    /// headers, the protocol's grant, the tokens.
    pub(super) fn auth(
        &self,
        raw: Option<RawAuth>,
        resources: &Resources,
    ) -> Result<Auth, ConfigError> {
        let token_headers = match raw.as_ref().and_then(|a| a.token_headers.clone()) {
            Some(headers) => self.token_headers(headers)?,
            None => DEFAULT_TOKEN_HEADERS.map(str::to_owned).to_vec(),
        };
        let Some(raw) = raw else {
            return Ok(Auth {
                tokens: Vec::new(),
                protocol_scope: None,
                token_headers,
            });
        };
        let protocol_scope = match raw.secret_agent_protocol {
            Some(grant) => {
                Some(self.scope("auth.secret-agent-protocol", grant.resources, resources)?)
            }
            None => None,
        };
        Ok(Auth {
            tokens: self.tokens(raw.tokens, resources)?,
            protocol_scope,
            token_headers,
        })
    }

    fn tokens(
        &self,
        raw: Vec<RawToken>,
        resources: &Resources,
    ) -> Result<Vec<ClientToken>, ConfigError> {
        if raw.is_empty() {
            return Err(self.invalid(
                "auth.tokens",
                "is empty; remove `auth` for open access, or list at least one token",
            ));
        }
        let mut tokens: Vec<ClientToken> = Vec::with_capacity(raw.len());
        for (i, token) in raw.into_iter().enumerate() {
            let path = format!("auth.tokens[{i}]");
            let (source, value) = self.token_text(&path, token.token_file, token.token_env)?;
            let value = SecretString::from(value.trim_end());
            let text = value.expose_secret();
            if text.is_empty() {
                return Err(self.invalid(&path, format!("the token from {source} is empty")));
            }
            if text.chars().any(|c| c.is_control() || c == ' ') {
                return Err(self.invalid(
                    &path,
                    format!(
                        "the token from {source} has spaces or control characters (value not shown)"
                    ),
                ));
            }
            if tokens.iter().any(|t| t.value.expose_secret() == text) {
                return Err(self.invalid(&path, format!("the token from {source} is used twice")));
            }
            let scope = self.scope(&path, token.resources, resources)?;
            let roles = self.roles(&format!("{path}.roles"), token.roles)?;
            tokens.push(ClientToken {
                source,
                value,
                scope,
                roles,
            });
        }
        Ok(tokens)
    }

    /// Where the token at `path` comes from, and its text as read.
    fn token_text(
        &self,
        path: &str,
        token_file: Option<PathBuf>,
        token_env: Option<OneOrMany>,
    ) -> Result<(TokenSource, String), ConfigError> {
        match (token_file, token_env) {
            (Some(file), None) => {
                let text = self.inputs.read_token(&file).map_err(|e| {
                    self.invalid(
                        &format!("{path}.token-file"),
                        format!("cannot read {}: {e}", file.display()),
                    )
                })?;
                Ok((TokenSource::File(file), text))
            }
            (None, Some(vars)) => {
                let vars = vars.into_vec();
                if vars.is_empty() {
                    return Err(self.invalid(
                        &format!("{path}.token-env"),
                        "is an empty list; name at least one environment variable",
                    ));
                }
                // The first one set and not empty.
                let Some((var, mut text)) = vars.iter().find_map(|var| {
                    let text = self.inputs.var(var).filter(|t| !t.is_empty())?;
                    Some((var.clone(), text))
                }) else {
                    let message = match vars.as_slice() {
                        [one] => format!("environment variable {one} is not set (or empty)"),
                        many => format!(
                            "none of the environment variables {} is set (or they are empty)",
                            many.join(", ")
                        ),
                    };
                    return Err(self.invalid(&format!("{path}.token-env"), message));
                };
                // `file:///path`, as the AWS agent's ssrf_env_variables take.
                if let Some(file) = text.strip_prefix("file://") {
                    let file = PathBuf::from(file);
                    text = self.inputs.read_token(&file).map_err(|e| {
                        self.invalid(
                            &format!("{path}.token-env"),
                            format!(
                                "{var} names file://{}, which cannot be read: {e}",
                                file.display()
                            ),
                        )
                    })?;
                }
                Ok((TokenSource::Env(var), text))
            }
            _ => Err(self.invalid(path, "give exactly one of token-file and token-env")),
        }
    }

    /// Valid HTTP header names, each once, lower-cased; not `Authorization`,
    /// which carries `Bearer <token>` on its own.
    fn token_headers(&self, raw: Vec<String>) -> Result<Vec<String>, ConfigError> {
        let mut headers: Vec<String> = Vec::with_capacity(raw.len());
        for (i, name) in raw.into_iter().enumerate() {
            let path = format!("auth.token-headers[{i}]");
            let lower = name.to_ascii_lowercase();
            let valid = !lower.is_empty()
                && lower
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b));
            if !valid {
                return Err(self.invalid(
                    &path,
                    format!("`{}` is not an HTTP header name", shown(&name)),
                ));
            }
            if lower == "authorization" {
                return Err(self.invalid(
                    &path,
                    "`Authorization` always carries `Bearer <token>`; list only other headers",
                ));
            }
            if headers.contains(&lower) {
                return Err(self.invalid(&path, format!("`{name}` is listed twice")));
            }
            headers.push(lower);
        }
        Ok(headers)
    }

    /// The roles at `path`: `["*"]`, or role ARNs and ARN prefixes ending
    /// in `*` (`arn:aws:iam::123456789012:role/app-*`).
    fn roles(&self, path: &str, raw: Vec<String>) -> Result<RoleScope, ConfigError> {
        if raw.iter().any(|r| r == "*") {
            return if raw.len() == 1 {
                Ok(RoleScope::any())
            } else {
                Err(self.invalid(path, "`*` already means any role; list nothing beside it"))
            };
        }
        let (mut arns, mut prefixes) = (Vec::new(), Vec::new());
        for (i, text) in raw.into_iter().enumerate() {
            let invalid = || {
                self.invalid(
                    &format!("{path}[{i}]"),
                    format!(
                        "`{}` is not an IAM role ARN (arn:<partition>:iam::<account>:role/<name>), nor one ending in `*`",
                        shown(&text)
                    ),
                )
            };
            match text.strip_suffix('*') {
                // A prefix must hold the account and `role/`: a role of
                // any account is `*`, said on purpose.
                Some(prefix) => {
                    RoleArn::parse(&format!("{prefix}x")).ok_or_else(invalid)?;
                    prefixes.push(prefix.to_owned());
                }
                None => arns.push(RoleArn::parse(&text).ok_or_else(invalid)?),
            }
        }
        Ok(RoleScope::only(arns, prefixes))
    }

    /// What the grant at `path` may read: `["*"]`, or configured names and
    /// name prefixes (`prod/*`) that meet a configured name or pattern.
    fn scope(
        &self,
        path: &str,
        names: Vec<String>,
        resources: &Resources,
    ) -> Result<TokenScope, ConfigError> {
        if names.iter().any(|n| n == "*") {
            return if names.len() == 1 {
                Ok(TokenScope::All)
            } else {
                Err(self.invalid(
                    &format!("{path}.resources"),
                    "`*` already means every resource; list nothing beside it",
                ))
            };
        }
        if names.is_empty() {
            return Err(self.invalid(
                &format!("{path}.resources"),
                "is empty; list resource names or \"*\"",
            ));
        }
        let mut only = BTreeSet::new();
        let mut prefixes = Vec::new();
        for name in names {
            if Pattern::is_pattern(&name) {
                let prefix = name.trim_end_matches('*');
                if prefix.trim_end_matches('/').contains('*')
                    || !resources.prefix_matches_any(prefix)
                {
                    return Err(self.invalid(
                        &format!("{path}.resources"),
                        format!("`{name}` matches no configured resource or pattern"),
                    ));
                }
                prefixes.push(prefix.to_owned());
                continue;
            }
            match resources.lookup(&name) {
                Some(found) => {
                    only.insert(found.name.into_owned());
                }
                None => {
                    let known: Vec<&str> =
                        resources.names().into_iter().map(|n| n.as_str()).collect();
                    let hint = closest(&name, &known)
                        .map(|c| format!(" (did you mean `{c}`?)"))
                        .unwrap_or_default();
                    return Err(self.invalid(
                        &format!("{path}.resources"),
                        format!("`{name}` is not a configured resource{hint}"),
                    ));
                }
            }
        }
        Ok(TokenScope::Only {
            names: only,
            prefixes,
        })
    }
}

#[cfg(test)]
mod tests {
    use secrecy::ExposeSecret;

    use crate::config::tests::SAMPLE;
    use crate::config::validate::tests::{Table, check, validate};
    use crate::config::{TokenScope, TokenSource};
    use crate::domain::ResourceName;

    #[test]
    fn patterns_in_resources_and_scopes() {
        let inputs = Table::var("TOKEN", "tok");
        let with = |resources: &str, scope: &str| {
            let yaml = SAMPLE.replace(
                "      TestingSecret: arn:aws:secretsmanager:us-west-1:999999999999:secret:TestingSecret-tN6s2j\n",
                resources,
            );
            validate(
                &format!(
                    "{yaml}auth:\n  tokens:\n    - token-env: TOKEN\n      resources: {scope}\n"
                ),
                &inputs,
            )
        };
        let ok = "      prod/*: arn:aws:secretsmanager:us-east-1:123456789012:secret:prod/*\n      Exact: arn:aws:secretsmanager:us-east-1:123456789012:secret:e\n";
        let c = with(ok, "[\"prod/*\", Exact, prod/db]").unwrap();
        assert_eq!(c.aws.resources.len(), 2);
        let db = ResourceName::parse("prod/db").unwrap();
        let other = ResourceName::parse("prod/other").unwrap();
        assert!(c.auth[0].scope.allows(&db) && c.auth[0].scope.allows(&other));
        let c = with(ok, "[Exact]").unwrap();
        assert!(!c.auth[0].scope.allows(&db));
        assert!(c.summary().contains("prod/*"), "{}", c.summary());
        let star = "      \"*\": arn:aws:secretsmanager:us-east-1:123456789012:secret:*\n";
        assert!(with(star, "[\"team/*\", any-name]").is_ok());
        for (resources, scope, says) in [
            (ok, "[\"dev/*\"]", "matches no configured resource"),
            (ok, "[dev/db]", "not a configured resource"),
            (
                "      prod/*: arn:aws:secretsmanager:us-east-1:123456789012:secret:prod/\n",
                "[\"*\"]",
                "must end in `*`",
            ),
            (
                "      p*/*: arn:aws:secretsmanager:us-east-1:123456789012:secret:p/*\n",
                "[\"*\"]",
                "no other `*`",
            ),
            (
                "      \"*\": arn:aws:s3:::bucket/*\n",
                "[\"*\"]",
                "not a secret ARN prefix",
            ),
        ] {
            let err = with(resources, scope).unwrap_err().to_string();
            assert!(err.contains(says), "{resources} {scope}: {err}");
        }
    }

    #[test]
    fn roles_a_token_may_read_as() {
        let inputs = Table::var("TOKEN", "tok");
        let with = |roles: &str| {
            validate(
                &format!(
                    "{SAMPLE}auth:\n  tokens:\n    - token-env: TOKEN\n      resources: [\"*\"]\n      roles: {roles}\n"
                ),
                &inputs,
            )
        };
        let role = |arn: &str| crate::domain::RoleArn::parse(arn).unwrap();
        let c = with(
            "[\"arn:aws:iam::123456789012:role/app-*\", \"arn:aws:iam::123456789012:role/db\"]",
        )
        .unwrap();
        let roles = &c.auth[0].roles;
        assert!(roles.allows(&role("arn:aws:iam::123456789012:role/app-x")));
        assert!(roles.allows(&role("arn:aws:iam::123456789012:role/db")));
        assert!(!roles.allows(&role("arn:aws:iam::123456789012:role/dbx")));
        assert!(c.summary().contains("may read as roles: arn:aws:iam::123456789012:role/db, arn:aws:iam::123456789012:role/app-*"), "{}", c.summary());
        assert!(
            with("[\"*\"]").unwrap().auth[0]
                .roles
                .allows(&role("arn:aws:iam::999999999999:role/any"))
        );
        // None unless listed.
        let c = validate(
            &format!(
                "{SAMPLE}auth:\n  tokens:\n    - token-env: TOKEN\n      resources: [\"*\"]\n"
            ),
            &inputs,
        )
        .unwrap();
        assert!(c.auth[0].roles.is_empty());
        for (roles, says) in [
            (
                "[\"*\", \"arn:aws:iam::123456789012:role/db\"]",
                "auth.tokens[0].roles: `*` already means any role",
            ),
            (
                "[reader]",
                "auth.tokens[0].roles[0]: `reader` is not an IAM role ARN",
            ),
            (
                "[\"arn:aws:iam::*\"]",
                "auth.tokens[0].roles[0]: `arn:aws:iam::*` is not an IAM role ARN",
            ),
            (
                "[\"arn:aws:iam::123456789012:user/u\"]",
                "is not an IAM role ARN",
            ),
        ] {
            let err = with(roles).unwrap_err().to_string();
            assert!(err.contains(says), "{roles}: {err}");
        }
    }

    #[test]
    fn token_headers() {
        let inputs = Table::file("/t/token", "tok");
        let with = |extra: &str| {
            validate(
                &format!(
                    "{SAMPLE}auth:\n  tokens:\n    - token-file: /t/token\n      resources: [\"*\"]\n{extra}"
                ),
                &inputs,
            )
        };
        assert_eq!(
            with("").unwrap().token_headers,
            ["x-aws-parameters-secrets-token", "x-vault-token"]
        );
        assert_eq!(
            with("  token-headers: [X-My-Token]\n")
                .unwrap()
                .token_headers,
            ["x-my-token"]
        );
        assert!(
            with("  token-headers: []\n")
                .unwrap()
                .token_headers
                .is_empty()
        );
        for (bad, says) in [
            ("[\"a b\"]", "not an HTTP header name"),
            ("[Authorization]", "Bearer"),
            ("[X-A, x-a]", "twice"),
        ] {
            let err = with(&format!("  token-headers: {bad}\n"))
                .unwrap_err()
                .to_string();
            assert!(
                err.contains("auth.token-headers[") && err.contains(says),
                "{err}"
            );
        }
        assert_eq!(check(SAMPLE).unwrap().token_headers.len(), 2);
    }

    #[test]
    fn client_tokens() {
        let with_auth = |tokens: &str, inputs: &Table| {
            validate(&format!("{SAMPLE}auth:\n  tokens:\n{tokens}"), inputs)
        };
        let file = |text: &'static str| Table::file("/t/token", text);
        let secret = file("s3cret-token\n");
        let c = with_auth(
            "    - token-file: /t/token\n      resources: [\"*\"]\n",
            &secret,
        )
        .unwrap();
        assert_eq!(c.auth.len(), 1);
        assert_eq!(c.auth[0].value.expose_secret(), "s3cret-token");
        assert_eq!(c.auth[0].scope, TokenScope::All);
        assert!(
            !format!("{c:?}").contains("s3cret-token"),
            "Debug shows a token"
        );
        let c = with_auth(
            "    - token-file: /t/token\n      resources: [TestingSecret]\n",
            &secret,
        )
        .unwrap();
        assert!(matches!(&c.auth[0].scope, TokenScope::Only { names, .. } if names.len() == 1));

        let err = with_auth(
            "    - token-file: /t/token\n      resources: [TestingSecrte]\n",
            &secret,
        )
        .unwrap_err()
        .to_string();
        assert!(
            err.contains("auth.tokens[0].resources")
                && err.contains("did you mean `TestingSecret`?"),
            "{err}"
        );
        let err = with_auth(
            "    - token-file: /t/token\n      resources: [\"*\"]\n",
            &file(" \n"),
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("is empty"), "{err}");
        let err = with_auth(
            "    - token-env: SECRET_AGENT_TEST_UNSET_VAR\n      resources: [\"*\"]\n",
            &secret,
        )
        .unwrap_err()
        .to_string();
        assert!(
            err.contains("SECRET_AGENT_TEST_UNSET_VAR is not set"),
            "{err}"
        );
        let err = with_auth(
            "    - token-file: /t/token\n      token-env: X\n      resources: [\"*\"]\n",
            &secret,
        )
        .unwrap_err()
        .to_string();
        assert!(
            err.contains("exactly one of token-file and token-env"),
            "{err}"
        );
        assert!(with_auth("    []\n", &secret).is_err());
        let err = with_auth(
            "    - token-file: /t/token\n      resources: [\"*\", TestingSecret]\n",
            &file("tok"),
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("`*` already means every resource"), "{err}");
    }

    #[test]
    fn token_env_may_list_variables_tried_in_order() {
        let yaml = |envs: &str| {
            format!("{SAMPLE}auth:\n  tokens:\n    - token-env: {envs}\n      resources: [\"*\"]\n")
        };
        let inputs = Table {
            vars: [("SECOND", "second-token"), ("THIRD", "third-token")].into(),
            ..Table::default()
        };
        let c = validate(&yaml("[FIRST, SECOND, THIRD]"), &inputs).unwrap();
        assert_eq!(c.auth[0].value.expose_secret(), "second-token");
        assert_eq!(c.auth[0].source, TokenSource::Env("SECOND".into()));
        let err = validate(&yaml("[FIRST, FOURTH]"), &inputs)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("auth.tokens[0].token-env")
                && err.contains(
                    "none of the environment variables FIRST, FOURTH is set (or they are empty)"
                ),
            "{err}"
        );
        let err = validate(&yaml("[]"), &inputs).unwrap_err().to_string();
        assert!(err.contains("empty list"), "{err}");
    }

    #[test]
    fn a_token_env_may_name_a_file() {
        let inputs = Table {
            files: [("/t/token", ("from-file\n", 0o600))].into(),
            vars: [("TOKEN", "file:///t/token"), ("MISSING", "file:///t/none")].into(),
            ..Table::default()
        };
        let yaml = |var: &str| {
            format!("{SAMPLE}auth:\n  tokens:\n    - token-env: {var}\n      resources: [\"*\"]\n")
        };
        let c = validate(&yaml("TOKEN"), &inputs).unwrap();
        assert_eq!(c.auth[0].value.expose_secret(), "from-file");
        assert_eq!(c.auth[0].source, TokenSource::Env("TOKEN".into()));
        let err = validate(&yaml("MISSING"), &inputs).unwrap_err().to_string();
        assert!(
            err.starts_with(
                "test.yaml: auth.tokens[0].token-env: MISSING names file:///t/none, which cannot be read: "
            ),
            "{err}"
        );
    }
}
