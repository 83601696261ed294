//! `secret-manager.aws.resources`: names and patterns mapped to ARNs.

use std::collections::BTreeMap;

use super::Validator;
use crate::config::ConfigError;
use crate::domain::{Arn, ResourceName};
use crate::resources::{Pattern, Resources};

impl Validator<'_> {
    pub(super) fn resources(
        &self,
        raw: BTreeMap<String, String>,
    ) -> Result<Resources, ConfigError> {
        let mut resources = Vec::with_capacity(raw.len());
        let mut patterns = Vec::new();
        for (name, arn) in raw {
            let path = format!("secret-manager.aws.resources.{name}");
            if Pattern::is_pattern(&name) {
                patterns.push(
                    Pattern::parse(&name, &arn).map_err(|e| self.invalid(&path, e.to_string()))?,
                );
                continue;
            }
            let name =
                ResourceName::parse(&name).map_err(|e| self.invalid(&path, e.to_string()))?;
            let arn = Arn::parse(&arn)
                .map_err(|e| self.invalid(&path, format!("resource `{name}`: {e}")))?;
            resources.push((name, arn));
        }
        if resources.is_empty() && patterns.is_empty() {
            return Err(self.invalid(
                "secret-manager.aws.resources",
                "no resources are configured; map at least one name to a secret ARN",
            ));
        }
        Ok(Resources::new(resources).with_patterns(patterns))
    }
}

#[cfg(test)]
mod tests {
    use crate::config::tests::SAMPLE;
    use crate::config::validate::tests::check;

    #[test]
    fn bad_arn_names_resource_and_value() {
        let yaml = SAMPLE.replace(
            "arn:aws:secretsmanager:us-west-1:999999999999:secret:TestingSecret-tN6s2j",
            "arn:aws:s3:::bucket",
        );
        let err = check(&yaml).unwrap_err().to_string();
        assert!(
            err.contains("secret-manager.aws.resources.TestingSecret"),
            "{err}"
        );
        assert!(err.contains("arn:aws:s3:::bucket"), "{err}");
    }

    #[test]
    fn bad_resource_name_is_rejected() {
        let yaml = SAMPLE.replace("TestingSecret:", "\"bad name!\":");
        let err = check(&yaml).unwrap_err().to_string();
        assert!(err.contains("bad name!"), "{err}");
    }

    #[test]
    fn no_resources() {
        let no_resources = SAMPLE.replace(
            "      TestingSecret: arn:aws:secretsmanager:us-west-1:999999999999:secret:TestingSecret-tN6s2j\n",
            "      {}\n",
        );
        let no_resources = no_resources.replace("    resources:\n      {}", "    resources: {}");
        assert!(
            check(&no_resources)
                .unwrap_err()
                .to_string()
                .contains("no resources")
        );
    }
}
