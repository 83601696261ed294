//! `secret-manager.aws`: the region, the endpoints and the call limit, and
//! the parts [`super::events`], [`super::resources`] and
//! [`super::credentials`] check.

use super::Validator;
use crate::config::raw::RawAws;
use crate::config::{
    AwsConfig, ConfigError, DEFAULT_MAX_CONCURRENT_CALLS, DEFAULT_MAX_ROLES, MAX_MAX_ROLES,
};

impl Validator<'_> {
    /// Each part in the order its errors are reported.
    pub(super) fn aws(&self, raw: RawAws) -> Result<AwsConfig, ConfigError> {
        let region = raw
            .region
            .map(|r| self.region("secret-manager.aws.region", r))
            .transpose()?;
        let endpoint = raw
            .endpoint
            .map(|e| self.url("secret-manager.aws.endpoint", e))
            .transpose()?;
        let ssm_endpoint = raw
            .ssm_endpoint
            .map(|e| self.url("secret-manager.aws.ssm-endpoint", e))
            .transpose()?;
        let events = raw.events.map(|e| self.events(e)).transpose()?;
        let resources = self.resources(raw.resources)?;
        let static_keys =
            self.static_keys(raw.access_key_id, raw.secret_access_key, raw.session_token)?;
        let file = self.credentials_file(raw.credentials_file, static_keys.is_some())?;
        let assume_role = self.role_layer(raw.assume_role, raw.sts_endpoint, raw.sts_region)?;
        let credentials =
            super::credentials::source(static_keys, file, raw.profile.clone(), assume_role);
        let max_concurrent_calls = raw
            .max_concurrent_calls
            .unwrap_or(DEFAULT_MAX_CONCURRENT_CALLS);
        if max_concurrent_calls == 0 {
            return Err(self.invalid(
                "secret-manager.aws.max-concurrent-calls",
                "must be at least 1 (0 would never call AWS)",
            ));
        }
        let max_roles = raw.max_roles.unwrap_or(DEFAULT_MAX_ROLES);
        if !(1..=MAX_MAX_ROLES).contains(&max_roles) {
            return Err(self.invalid(
                "secret-manager.aws.max-roles",
                format!("`{max_roles}` must be from 1 to {MAX_MAX_ROLES}"),
            ));
        }
        Ok(AwsConfig {
            region,
            endpoint,
            ssm_endpoint,
            events,
            resources,
            credentials,
            profile: raw.profile,
            max_concurrent_calls,
            max_roles,
            convert_to_base64: raw.convert_to_base64.unwrap_or(false),
        })
    }

    /// An endpoint override: an http(s) URL with a host.
    pub(super) fn url(&self, path: &str, text: String) -> Result<String, ConfigError> {
        let uri: Result<actix_web::http::Uri, _> = text.parse();
        match uri {
            Ok(uri)
                if matches!(uri.scheme_str(), Some("http" | "https")) && uri.host().is_some() =>
            {
                Ok(text)
            }
            _ => Err(self.invalid(
                path,
                format!("`{text}` is not an http(s) URL, e.g. https://secretsmanager.us-west-1.amazonaws.com"),
            )),
        }
    }

    pub(super) fn region(&self, path: &str, text: String) -> Result<String, ConfigError> {
        let valid = !text.is_empty()
            && text.len() <= 32
            && text
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
        if valid {
            Ok(text)
        } else {
            Err(self.invalid(
                path,
                format!("`{text}` is not an AWS region, e.g. us-west-1"),
            ))
        }
    }
}

#[cfg(test)]
mod tests {
    use crate::config::tests::SAMPLE;
    use crate::config::validate::tests::check;

    #[test]
    fn parameters_and_an_ssm_endpoint() {
        let yaml = SAMPLE.replace(
            "    resources:\n",
            "    ssm-endpoint: http://localhost:4566\n    resources:\n      \
             db: arn:aws:ssm:us-east-1:123456789012:parameter/app/db\n      \
             app/*: arn:aws:ssm:us-east-1:123456789012:parameter/app/*\n",
        );
        let config = check(&yaml).unwrap();
        assert_eq!(
            config.aws.ssm_endpoint.as_deref(),
            Some("http://localhost:4566")
        );
        assert!(
            config
                .summary()
                .contains("ssm endpoint: http://localhost:4566")
        );
        let (_, arn) = config.aws.resources.get("db").unwrap();
        assert_eq!(arn.parameter_name(), Some("/app/db"));
        let bad = yaml.replace("http://localhost:4566", "ftp://x");
        let err = check(&bad).unwrap_err().to_string();
        assert!(err.contains("secret-manager.aws.ssm-endpoint"), "{err}");
        let typo = yaml.replace("ssm-endpoint", "ssm-endpiont");
        let err = check(&typo).unwrap_err().to_string();
        assert!(err.contains("did you mean `ssm-endpoint`"), "{err}");
    }

    #[test]
    fn max_roles_is_bounded() {
        assert_eq!(check(SAMPLE).unwrap().aws.max_roles, 20);
        let with = |n: &str| {
            SAMPLE.replace(
                "    resources:",
                &format!("    max-roles: {n}\n    resources:"),
            )
        };
        assert_eq!(check(&with("3")).unwrap().aws.max_roles, 3);
        for bad in ["0", "1001"] {
            let err = check(&with(bad)).unwrap_err().to_string();
            assert!(
                err.contains("secret-manager.aws.max-roles") && err.contains("from 1 to 1000"),
                "{err}"
            );
        }
    }

    #[test]
    fn bad_endpoint() {
        let url = SAMPLE.replace("    resources:", "    endpoint: ftp://x\n    resources:");
        assert!(
            check(&url)
                .unwrap_err()
                .to_string()
                .contains("secret-manager.aws.endpoint")
        );
    }
}
