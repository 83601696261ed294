//! Systems Manager Parameter Store: GetParameter, its answer checked and
//! read into a [`Secret`].

use aws_config::SdkConfig;

use super::answer::{check_arn, within_limit};
use super::error::classify;
use super::{Endpoints, Service, Upstream, UpstreamError};
use crate::domain::Arn;
use crate::domain::Version;
use crate::domain::{ParameterInfo, Secret, secret_bytes};

/// Largest Parameter Store value the agent takes, in bytes: AWS stores
/// at most 8 KB (advanced tier); 32 KiB holds 8,192 characters of any
/// UTF-8 text, whether AWS counts bytes or characters.
pub(crate) const MAX_PARAMETER_BYTES: usize = 32 * 1024;

/// The SDK reads `AWS_ENDPOINT_URL_SSM` when no `ssm-endpoint` is set.
impl Service for aws_sdk_ssm::Client {
    fn build(sdk: &SdkConfig, region: String, endpoint: Option<&str>) -> Self {
        let mut builder = aws_sdk_ssm::config::Builder::from(sdk)
            .region(aws_sdk_ssm::config::Region::new(region));
        if let Some(endpoint) = endpoint {
            builder = builder.endpoint_url(endpoint);
        }
        aws_sdk_ssm::Client::from_conf(builder.build())
    }

    fn endpoint(endpoints: &Endpoints) -> Option<&str> {
        endpoints.ssm.as_deref()
    }
}

impl Upstream {
    /// GetParameter for the parameter `arn` names, at `version`, in the
    /// ARN's region. The whole ARN is sent (with `:<version>` or `:<label>`
    /// after it): that is how AWS reads a parameter shared from another
    /// account, and two ARNs that differ only in their account never read
    /// the same parameter.
    pub(crate) async fn get_parameter(
        &self,
        arn: &Arn,
        version: &Version,
        decrypt: bool,
    ) -> Result<Secret, UpstreamError> {
        let selector = parameter_selector(arn, version)?;
        let out = self
            .ssm(arn.region())
            .get_parameter()
            .name(selector)
            .with_decryption(decrypt)
            .send()
            .await
            .map_err(|e| classify(e, version))?;
        let parameter = out.parameter.ok_or_else(|| UpstreamError::Other {
            code: "EmptyParameter".into(),
            message: "the answer had no Parameter".into(),
        })?;
        to_parameter(arn, parameter)
    }
}

/// `arn`, `arn:<version>` or `arn:<label>`: what GetParameter's `Name`
/// takes to read a version.
fn parameter_selector(arn: &Arn, version: &Version) -> Result<String, UpstreamError> {
    if !arn.is_parameter() {
        return Err(UpstreamError::InvalidParameter("not a parameter".into()));
    }
    let name = arn.as_str();
    match version {
        Version::Current => Ok(name.to_owned()),
        Version::Number(number) => Ok(format!("{name}:{number}")),
        Version::Label(label) => Ok(format!("{name}:{label}")),
        Version::Stage(_) | Version::Id(_) | Version::IdAndStage { .. } | Version::Encrypted(_) => {
            Err(UpstreamError::InvalidParameter(
                "a parameter's version is a version number or a label".into(),
            ))
        }
    }
}

/// A GetParameter answer as a [`Secret`]: the version number as its
/// version id, the last-modified date as its date, and what the
/// Lambda extension's answer needs besides.
fn to_parameter(
    asked: &Arn,
    parameter: aws_sdk_ssm::types::Parameter,
) -> Result<Secret, UpstreamError> {
    // Wrapped first, so a refused value is wiped too.
    let value = parameter
        .value
        .map(|value| secret_bytes(value.into_bytes()));
    check_arn(asked, parameter.arn.as_deref())?;
    let Some(value) = value else {
        return Err(UpstreamError::Other {
            code: "EmptyParameter".into(),
            message: "the answer had no Value".into(),
        });
    };
    let value = within_limit(asked, value, MAX_PARAMETER_BYTES)?;
    Ok(Secret {
        arn: parameter.arn.unwrap_or_else(|| asked.to_string()),
        name: parameter
            .name
            .unwrap_or_else(|| asked.parameter_name().unwrap_or_default().to_owned()),
        version_id: Some(parameter.version.to_string()),
        version_stages: Vec::new(),
        created_date: parameter
            .last_modified_date
            .and_then(|d| std::time::SystemTime::try_from(d).ok()),
        kind: Secret::text_kind(&value),
        value,
        parameter: Some(ParameterInfo {
            parameter_type: parameter.r#type.map(|t| t.as_str().to_owned()),
            data_type: parameter.data_type,
            version: parameter.version,
            selector: parameter.selector,
            source_result: parameter.source_result,
        }),
        compat_answer: crate::domain::BuiltOnce::default(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::upstream::BadAnswer;

    #[test]
    fn parameter_selectors() {
        let arn = |text: &str| Arn::parse(text).unwrap();
        let db = arn("arn:aws:ssm:us-east-1:123456789012:parameter/app/db");
        let plain = arn("arn:aws:ssm:us-east-1:123456789012:parameter/plain");
        let selector = |arn: &Arn, v: Version| parameter_selector(arn, &v).unwrap();
        assert_eq!(
            selector(&db, Version::Current),
            "arn:aws:ssm:us-east-1:123456789012:parameter/app/db"
        );
        assert_eq!(
            selector(&db, Version::Number(3)),
            "arn:aws:ssm:us-east-1:123456789012:parameter/app/db:3"
        );
        assert_eq!(
            selector(&plain, Version::Label("prod".into())),
            "arn:aws:ssm:us-east-1:123456789012:parameter/plain:prod"
        );
        for wrong in [
            Version::Stage("AWSCURRENT".into()),
            Version::Id("abc".into()),
            Version::Encrypted(Box::new(Version::Current)),
        ] {
            assert!(parameter_selector(&db, &wrong).is_err(), "{wrong:?}");
        }
        let secret = arn("arn:aws:secretsmanager:us-east-1:123456789012:secret:x");
        assert!(parameter_selector(&secret, &Version::Current).is_err());
    }

    #[test]
    fn a_parameter_answer_must_name_the_parameter_asked_for() {
        let asked = Arn::parse("arn:aws:ssm:us-east-1:123456789012:parameter/app/db").unwrap();
        let parameter = |arn: &str, value: String| {
            aws_sdk_ssm::types::Parameter::builder()
                .arn(arn)
                .name("/app/db")
                .value(value)
                .version(1)
                .build()
        };
        assert!(to_parameter(&asked, parameter(asked.as_str(), "v".into())).is_ok());
        for wrong in [
            "arn:aws:ssm:us-east-1:999999999999:parameter/app/db",
            "arn:aws:ssm:us-east-1:123456789012:parameter/app/db-AbC123",
            "arn:aws:ssm:us-east-1:123456789012:parameter/app/dbx",
        ] {
            let err = to_parameter(&asked, parameter(wrong, "hunter2".into())).unwrap_err();
            assert!(
                matches!(&err, UpstreamError::BadAnswer(BadAnswer::WrongArn { .. })),
                "{wrong}: {err:?}"
            );
            assert!(!err.to_string().contains("hunter2"));
        }
        let at_limit = "x".repeat(MAX_PARAMETER_BYTES);
        assert!(to_parameter(&asked, parameter(asked.as_str(), at_limit)).is_ok());
        let over = "x".repeat(MAX_PARAMETER_BYTES + 1);
        let err = to_parameter(&asked, parameter(asked.as_str(), over)).unwrap_err();
        assert_eq!(err.kind(), "value_too_large");
        assert!(err.to_string().contains(asked.as_str()), "{err}");
    }
}
