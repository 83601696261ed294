//! The credentials part of `secret-manager.aws`: static keys, the profile
//! and the assume-role layer (with its STS settings), as one source.

use secrecy::SecretString;

use super::Validator;
use crate::config::raw::{RawAssumeRole, RawCredentialsFile};
use crate::config::{AssumeRole, CredentialsFile, StaticKeys};
use crate::config::{ConfigError, CredentialSource};

/// Whether the source holds secrets written in the config file (keys, an
/// external id), which makes the file's permissions worth a warning.
pub(super) fn holds_secrets(source: &CredentialSource) -> bool {
    match source {
        CredentialSource::Static(_) => true,
        CredentialSource::Chain { .. } | CredentialSource::File(_) => false,
        CredentialSource::AssumeRole { role, base } => {
            role.external_id.is_some() || holds_secrets(base)
        }
    }
}

/// The static keys, else the credentials file, else the default chain
/// (with `profile`), under the assume-role layer when there is one.
pub(super) fn source(
    static_keys: Option<StaticKeys>,
    file: Option<CredentialsFile>,
    profile: Option<String>,
    assume_role: Option<AssumeRole>,
) -> CredentialSource {
    let base = match (static_keys, file) {
        (Some(keys), _) => CredentialSource::Static(keys),
        (None, Some(file)) => CredentialSource::File(file),
        (None, None) => CredentialSource::Chain { profile },
    };
    match assume_role {
        Some(role) => CredentialSource::AssumeRole {
            role,
            base: Box::new(base),
        },
        None => base,
    }
}

impl Validator<'_> {
    /// `credentials-file`: a path that is not empty, and never beside
    /// static keys (one source of keys or the other).
    pub(super) fn credentials_file(
        &self,
        raw: Option<RawCredentialsFile>,
        static_keys: bool,
    ) -> Result<Option<CredentialsFile>, ConfigError> {
        let Some(raw) = raw else { return Ok(None) };
        let path = "secret-manager.aws.credentials-file";
        if static_keys {
            return Err(self.invalid(
                path,
                "is set beside access-key-id and secret-access-key; the keys come from one or the other",
            ));
        }
        if raw.path.trim().is_empty() {
            return Err(self.invalid(path, "is an empty path"));
        }
        if raw.profile.as_deref().is_some_and(|p| p.trim().is_empty()) {
            return Err(self.invalid(&format!("{path}.profile"), "is empty"));
        }
        Ok(Some(CredentialsFile {
            path: raw.path.into(),
            profile: raw.profile,
            require_session_token: raw.require_session_token.unwrap_or(false),
        }))
    }

    /// `access-key-id`, `secret-access-key` and `session-token`: both keys
    /// or neither.
    pub(super) fn static_keys(
        &self,
        access_key_id: Option<String>,
        secret_access_key: Option<SecretString>,
        session_token: Option<SecretString>,
    ) -> Result<Option<StaticKeys>, ConfigError> {
        match (access_key_id, secret_access_key) {
            (Some(id), Some(secret)) => {
                if id.trim().is_empty() {
                    return Err(self.invalid("secret-manager.aws.access-key-id", "is empty"));
                }
                Ok(Some(StaticKeys {
                    access_key_id: id,
                    secret_access_key: secret,
                    session_token,
                }))
            }
            (None, None) => {
                if session_token.is_some() {
                    return Err(self.invalid(
                        "secret-manager.aws.session-token",
                        "needs access-key-id and secret-access-key beside it",
                    ));
                }
                Ok(None)
            }
            (Some(_), None) => Err(self.invalid(
                "secret-manager.aws",
                "access-key-id is set but secret-access-key is missing; set both or neither",
            )),
            (None, Some(_)) => Err(self.invalid(
                "secret-manager.aws",
                "secret-access-key is set but access-key-id is missing; set both or neither",
            )),
        }
    }

    /// `assume-role`, with `sts-endpoint` and `sts-region`, which mean
    /// nothing without it.
    pub(super) fn role_layer(
        &self,
        raw: Option<RawAssumeRole>,
        sts_endpoint: Option<String>,
        sts_region: Option<String>,
    ) -> Result<Option<AssumeRole>, ConfigError> {
        let sts_endpoint = sts_endpoint
            .map(|e| self.url("secret-manager.aws.sts-endpoint", e))
            .transpose()?;
        let sts_region = sts_region
            .map(|r| self.region("secret-manager.aws.sts-region", r))
            .transpose()?;
        match raw {
            None => {
                if sts_endpoint.is_some() || sts_region.is_some() {
                    return Err(self.invalid(
                        "secret-manager.aws",
                        "sts-endpoint and sts-region only apply together with assume-role",
                    ));
                }
                Ok(None)
            }
            Some(role) => Ok(Some(self.assume_role(role, sts_endpoint, sts_region)?)),
        }
    }

    fn assume_role(
        &self,
        raw: RawAssumeRole,
        sts_endpoint: Option<String>,
        sts_region: Option<String>,
    ) -> Result<AssumeRole, ConfigError> {
        let path = "secret-manager.aws.assume-role";
        let role_arn = raw.role_arn;
        if !is_role_arn(&role_arn) {
            return Err(self.invalid(
                path,
                format!(
                    "`{role_arn}` is not an IAM role ARN, e.g. arn:aws:iam::123456789012:role/Name"
                ),
            ));
        }
        if let Some(name) = &raw.session_name {
            // STS: 2-64 characters of [\w+=,.@-].
            let valid = (2..=64).contains(&name.len())
                && name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || "_+=,.@-".contains(c));
            if !valid {
                return Err(self.invalid(
                    &format!("{path}.session-name"),
                    format!("`{name}` must be 2 to 64 characters of letters, digits and _+=,.@-"),
                ));
            }
        }
        let duration = raw.duration.map(|d| d.0);
        if let Some(d) = duration {
            // STS accepts 15 minutes to 12 hours.
            if !(900..=43200).contains(&d.as_secs()) {
                return Err(self.invalid(
                    &format!("{path}.duration"),
                    format!(
                        "`{}` is outside what STS accepts (15m to 12h)",
                        humantime::format_duration(d)
                    ),
                ));
            }
        }
        Ok(AssumeRole {
            role_arn,
            external_id: raw.external_id,
            session_name: raw.session_name,
            duration,
            sts_endpoint,
            sts_region,
        })
    }
}

fn is_role_arn(text: &str) -> bool {
    let parts: Vec<&str> = text.splitn(6, ':').collect();
    matches!(parts.as_slice(), ["arn", partition, "iam", "", account, resource]
        if partition.starts_with("aws")
            && account.len() == 12
            && account.bytes().all(|b| b.is_ascii_digit())
            && resource.strip_prefix("role/").is_some_and(|r| !r.is_empty()))
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use crate::config::tests::SAMPLE;
    use crate::config::validate::tests::{Table, check, validate};
    use crate::config::{Config, CredentialSource};

    #[test]
    fn assume_role_short_and_long_forms() {
        let short = SAMPLE.replace(
            "    resources:",
            "    assume-role: arn:aws:iam::999999999999:role/AccessToSecrets\n    resources:",
        );
        let role_of = |c: Config| match c.aws.credentials {
            CredentialSource::AssumeRole { role, .. } => role,
            other => panic!("{other:?}"),
        };
        let role = role_of(check(&short).unwrap());
        assert_eq!(
            role.role_arn,
            "arn:aws:iam::999999999999:role/AccessToSecrets"
        );
        let long = SAMPLE.replace(
            "    resources:",
            "    assume-role:\n      role-arn: arn:aws:iam::999999999999:role/R\n      session-name: agent\n      duration: 1h\n    sts-region: us-east-1\n    resources:",
        );
        let role = role_of(check(&long).unwrap());
        assert_eq!(role.duration, Some(Duration::from_secs(3600)));
        assert_eq!(role.sts_region.as_deref(), Some("us-east-1"));
        let typo = long.replace("session-name", "sesion-name");
        let err = check(&typo).unwrap_err().to_string();
        assert!(err.contains("did you mean `session-name`?"), "{err}");
        let bad = short.replace("role/AccessToSecrets", "user/Bob");
        assert!(
            check(&bad)
                .unwrap_err()
                .to_string()
                .contains("not an IAM role ARN")
        );
    }

    #[test]
    fn static_keys_in_a_readable_file_are_a_warning() {
        let keys = SAMPLE.replace(
            "    resources:",
            "    access-key-id: AKIDEXAMPLE\n    secret-access-key: s3cret-key\n    resources:",
        );
        let readable = Table {
            files: [("test.yaml", ("", 0o644))].into(),
            ..Table::default()
        };
        let c = validate(&keys, &readable).unwrap();
        assert!(matches!(c.aws.credentials, CredentialSource::Static(_)));
        assert_eq!(
            c.warnings,
            [
                "test.yaml is readable by group or others (mode 0644) and it holds AWS keys; chmod 600 it"
            ]
        );
        assert!(
            !format!("{c:?}").contains("s3cret-key"),
            "Debug shows a key"
        );
        let private = Table {
            files: [("test.yaml", ("", 0o600))].into(),
            ..Table::default()
        };
        assert!(validate(&keys, &private).unwrap().warnings.is_empty());
        // Without keys in it, the file's mode is no concern.
        assert!(validate(SAMPLE, &readable).unwrap().warnings.is_empty());
        let err = check(&keys.replace("    access-key-id: AKIDEXAMPLE\n", ""))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("secret-access-key is set but access-key-id is missing"),
            "{err}"
        );
    }

    #[test]
    fn a_credentials_file_in_either_form() {
        let short = SAMPLE.replace(
            "    resources:",
            "    credentials-file: /run/creds/credentials\n    resources:",
        );
        let readable = Table {
            files: [("/run/creds/credentials", ("", 0o644))].into(),
            ..Table::default()
        };
        let c = validate(&short, &readable).unwrap();
        let CredentialSource::File(file) = &c.aws.credentials else {
            panic!("{:?}", c.aws.credentials)
        };
        assert_eq!(file.path, std::path::Path::new("/run/creds/credentials"));
        assert_eq!(
            (file.profile.as_deref(), file.require_session_token),
            (None, false)
        );
        assert_eq!(
            c.warnings,
            [
                "/run/creds/credentials is readable by group or others (mode 0644) and it holds AWS keys; chmod 600 it"
            ]
        );
        assert!(
            c.aws
                .credentials
                .describe()
                .ends_with(", re-read when it changes")
        );

        let long = SAMPLE.replace(
            "    resources:",
            "    credentials-file:\n      path: /c\n      profile: ops\n      require-session-token: true\n    assume-role: arn:aws:iam::999999999999:role/R\n    resources:",
        );
        let c = check(&long).unwrap();
        let file = c.aws.credentials.file().unwrap();
        assert_eq!(file.profile.as_deref(), Some("ops"));
        assert!(file.require_session_token);
        assert_eq!(
            c.aws.credentials.describe(),
            "assume role arn:aws:iam::999999999999:role/R over credentials file /c (profile ops, session token required), re-read when it changes"
        );

        for (yaml, says) in [
            (
                short.replace(
                    "    credentials-file:",
                    "    access-key-id: AKID\n    secret-access-key: s\n    credentials-file:",
                ),
                "the keys come from one or the other",
            ),
            (
                short.replace("/run/creds/credentials", "\"\""),
                "is an empty path",
            ),
            (
                long.replace("      profile: ops", "      profle: ops"),
                "did you mean `profile`?",
            ),
        ] {
            let err = check(&yaml).unwrap_err().to_string();
            assert!(
                err.contains(says) && err.contains("credentials-file"),
                "{says}: {err}"
            );
        }
    }
}
