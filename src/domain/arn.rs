//! The ARN of a Secrets Manager secret or of a Parameter Store parameter.

use std::fmt;
use std::sync::Arc;

use super::truncate;

/// `arn:<partition>:secretsmanager:<region>:<account>:secret:<name>` or
/// `arn:<partition>:ssm:<region>:<account>:parameter/<name>`, parsed once
/// at load so the region, account and kind are at hand.
/// Cheap to clone: one shared allocation. Equality and hashing are by the ARN text.
#[derive(Debug, Clone)]
pub(crate) struct Arn(Arc<ArnParts>);

#[derive(Debug)]
struct ArnParts {
    arn: String,
    region: String,
    /// Byte length of `arn:<partition>:<service>:<region>`.
    group_len: usize,
    /// For a parameter, its name as GetParameter takes it.
    parameter: Option<String>,
}

impl PartialEq for Arn {
    fn eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.0, &other.0) || self.0.arn == other.0.arn
    }
}

impl Eq for Arn {}

impl std::hash::Hash for Arn {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.0.arn.hash(state);
    }
}

/// Lookups by the ARN's text: hashing and equality are the text's.
impl std::borrow::Borrow<str> for Arn {
    fn borrow(&self) -> &str {
        &self.0.arn
    }
}

const ARN_HINT: &str = "is not a Secrets Manager secret ARN \
    (arn:aws:secretsmanager:<region>:<account>:secret:<name>) \
    nor a Parameter Store parameter ARN (arn:aws:ssm:<region>:<account>:parameter/<name>)";

/// Why an ARN is refused: it is neither a secret's nor a parameter's.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("`{shown}` {}", ARN_HINT)]
pub(crate) struct ArnError {
    /// The text, cut to 80 characters.
    shown: String,
}

impl Arn {
    pub(crate) fn parse(text: &str) -> Result<Arn, ArnError> {
        let bad = || ArnError {
            shown: truncate(text),
        };
        let parts: Vec<&str> = text.splitn(6, ':').collect();
        let [arn, partition, service, region, account, resource] = parts.as_slice() else {
            return Err(bad());
        };
        let region_ok = !region.is_empty()
            && region
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
        let account_ok = account.len() == 12 && account.bytes().all(|b| b.is_ascii_digit());
        if *arn != "arn"
            || !partition.starts_with("aws")
            || !region_ok
            || !account_ok
            || text.chars().any(char::is_whitespace)
        {
            return Err(bad());
        }
        let parameter = match *service {
            "secretsmanager" => {
                let name = resource.strip_prefix("secret:").ok_or_else(bad)?;
                if name.is_empty() {
                    return Err(bad());
                }
                None
            }
            "ssm" => Some(parameter_name(resource).ok_or_else(bad)?),
            _ => return Err(bad()),
        };
        Ok(Arn(Arc::new(ArnParts {
            arn: text.to_owned(),
            region: (*region).to_owned(),
            group_len: text.len() - resource.len() - account.len() - 2,
            parameter,
        })))
    }

    pub(crate) fn as_str(&self) -> &str {
        &self.0.arn
    }

    /// The region AWS calls for this secret or parameter go to.
    pub(crate) fn region(&self) -> &str {
        &self.0.region
    }

    /// For a Parameter Store parameter, its name as GetParameter takes it
    /// (`/app/db` for `...:parameter/app/db`, `plain` for
    /// `...:parameter/plain`); `None` for a secret.
    pub(crate) fn parameter_name(&self) -> Option<&str> {
        self.0.parameter.as_deref()
    }

    /// Whether it is a Parameter Store parameter.
    pub(crate) fn is_parameter(&self) -> bool {
        self.0.parameter.is_some()
    }

    /// `arn:<partition>:<service>:<region>`: ARNs that one batch call of one
    /// client may name share it.
    pub(crate) fn batch_group(&self) -> &str {
        &self.0.arn[..self.0.group_len]
    }
}

/// The parameter name of an ARN's `parameter/<name>` part: AWS leaves out
/// the leading `/` of a hierarchical name (`/app/db`) in the ARN, so a name
/// with a `/` gets it back. Letters, digits and `_ . - /` (AWS's rules); no
/// `:`, which would read as a version or label selector.
fn parameter_name(resource: &str) -> Option<String> {
    let name = resource.strip_prefix("parameter/")?;
    let valid = !name.is_empty()
        && name.len() <= 2048
        && !name.starts_with('/')
        && !name.contains("//")
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"_.-/".contains(&b));
    valid.then(|| {
        if name.contains('/') {
            format!("/{name}")
        } else {
            name.to_owned()
        }
    })
}

impl fmt::Display for Arn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0.arn)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ARN: &str = "arn:aws:secretsmanager:us-west-1:999999999999:secret:TestingSecret-tN6s2j";

    #[test]
    fn arn_parts() {
        let arn = Arn::parse(ARN).unwrap();
        assert_eq!(arn.region(), "us-west-1");
        assert!(Arn::parse("arn:aws:secretsmanager:us-west-1:99999:secret:x").is_err());
        assert_eq!(arn.as_str(), ARN);
        let china = "arn:aws-cn:secretsmanager:cn-north-1:123456789012:secret:a:b";
        assert_eq!(Arn::parse(china).unwrap().region(), "cn-north-1");
    }

    #[test]
    fn parameter_arns() {
        let parse = |text: &str| Arn::parse(text).unwrap();
        let arn = parse("arn:aws:ssm:us-east-1:123456789012:parameter/app/db");
        assert_eq!(arn.parameter_name(), Some("/app/db"));
        assert!(arn.is_parameter());
        assert_eq!(arn.region(), "us-east-1");
        assert_eq!(arn.batch_group(), "arn:aws:ssm:us-east-1");
        let plain = parse("arn:aws:ssm:eu-west-3:123456789012:parameter/plain");
        assert_eq!(plain.parameter_name(), Some("plain"));
        assert_eq!(plain.region(), "eu-west-3");
        let deep = parse("arn:aws-cn:ssm:cn-north-1:123456789012:parameter/a/b.c/d_e-f");
        assert_eq!(deep.parameter_name(), Some("/a/b.c/d_e-f"));
        let secret = parse(ARN);
        assert!(!secret.is_parameter() && secret.parameter_name().is_none());
        assert_eq!(secret.batch_group(), "arn:aws:secretsmanager:us-west-1");
        for bad in [
            "arn:aws:ssm:us-east-1:123456789012:parameter/",
            "arn:aws:ssm:us-east-1:123456789012:parameter//app",
            "arn:aws:ssm:us-east-1:123456789012:parameter/a//b",
            "arn:aws:ssm:us-east-1:123456789012:parameter/a:3",
            "arn:aws:ssm:us-east-1:123456789012:parameter/a b",
            "arn:aws:ssm:us-east-1:123456789012:parameter/a@b",
            "arn:aws:ssm:us-east-1:123456789012:parameter:x",
            "arn:aws:ssm:us-east-1:123456789012:document/x",
            "arn:aws:ssm:us-east-1:1234:parameter/x",
            "arn:aws:ssm::123456789012:parameter/x",
            "arn:aws:secretsmanager:us-east-1:123456789012:parameter/x",
            "arn:aws:ssm:us-east-1:123456789012:secret:x",
        ] {
            let err = Arn::parse(bad).unwrap_err().to_string();
            assert!(
                err.contains("nor a Parameter Store parameter ARN"),
                "{bad}: {err}"
            );
        }
    }

    #[test]
    fn bad_arns() {
        for bad in [
            "",
            "TestingSecret",
            "arn:aws:s3:::bucket",
            "arn:aws:secretsmanager:us-west-1:999999999999:parameter:x",
            "arn:aws:secretsmanager::999999999999:secret:x",
            "arn:aws:secretsmanager:us-west-1:99:secret:x",
            "arn:aws:secretsmanager:us-west-1:999999999999:secret:",
            "arn:aws:secretsmanager:US-WEST-1:999999999999:secret:x",
            "arn:aws:secretsmanager:us-west-1:999999999999:secret:a b",
        ] {
            let err = Arn::parse(bad).unwrap_err().to_string();
            assert!(
                err.contains("is not a Secrets Manager secret ARN"),
                "{bad}: {err}"
            );
        }
    }
}
