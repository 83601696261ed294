//! IAM roles a client may ask the agent to read as (`roleArn` on the AWS
//! agent's routes), and the roles a token may use.

use std::fmt;
use std::sync::Arc;

/// Longest role ARN accepted (IAM's limit on a role ARN).
const MAX_LEN: usize = 2048;

/// An IAM role ARN, `arn:<partition>:iam::<12-digit account>:role/<path and
/// name>`, the name of letters, digits and `+=,.@_/-` (IAM's rules, and the
/// AWS Workload Credentials Provider's check).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(crate) struct RoleArn(Arc<str>);

impl RoleArn {
    /// `None` when `text` is not a role ARN; callers say so in their shape.
    pub(crate) fn parse(text: &str) -> Option<RoleArn> {
        if text.len() > MAX_LEN {
            return None;
        }
        let rest = text.strip_prefix("arn:")?;
        let (partition, rest) = rest.split_once(':')?;
        let rest = rest.strip_prefix("iam::")?;
        let (account, name) = rest.split_once(":role/")?;
        let word = |b: u8| b.is_ascii_alphanumeric() || b == b'_';
        let valid = !partition.is_empty()
            && partition.bytes().all(|b| word(b) || b == b'-')
            && account.len() == 12
            && account.bytes().all(|b| b.is_ascii_digit())
            && !name.is_empty()
            && name.bytes().all(|b| word(b) || b"+=,.@/-".contains(&b));
        valid.then(|| RoleArn(text.into()))
    }

    pub(crate) fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for RoleArn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// The roles a token may read as (`auth.tokens[].roles`); none by default.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct RoleScope {
    /// `["*"]`: any role.
    any: bool,
    arns: Vec<RoleArn>,
    /// `arn:aws:iam::123456789012:role/app-*` without its `*`.
    prefixes: Vec<String>,
}

impl RoleScope {
    /// Any role.
    pub(crate) fn any() -> RoleScope {
        RoleScope {
            any: true,
            ..RoleScope::default()
        }
    }

    /// Role ARNs, and role ARN prefixes (`...:role/app-*`, given here
    /// without the `*`).
    pub(crate) fn only(arns: Vec<RoleArn>, prefixes: Vec<String>) -> RoleScope {
        RoleScope {
            any: false,
            arns,
            prefixes,
        }
    }

    pub(crate) fn allows(&self, role: &RoleArn) -> bool {
        self.any
            || self.arns.contains(role)
            || self.prefixes.iter().any(|p| role.as_str().starts_with(p))
    }

    pub(crate) fn is_empty(&self) -> bool {
        !self.any && self.arns.is_empty() && self.prefixes.is_empty()
    }

    /// As written in the config, for `--check`.
    pub(crate) fn describe(&self) -> String {
        if self.any {
            return "any role".to_owned();
        }
        self.arns
            .iter()
            .map(|a| a.to_string())
            .chain(self.prefixes.iter().map(|p| format!("{p}*")))
            .collect::<Vec<_>>()
            .join(", ")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn role_arns_as_iam_writes_them() {
        for good in [
            "arn:aws:iam::123456789012:role/reader",
            "arn:aws-us-gov:iam::123456789012:role/path/to/r+=,.@_-x",
        ] {
            assert_eq!(RoleArn::parse(good).unwrap().as_str(), good);
        }
        for bad in [
            "not-a-valid-arn",
            "arn:aws:iam::12345678901:role/r",
            "arn:aws:iam::123456789012:user/r",
            "arn:aws:iam::123456789012:role/",
            "arn:aws:sts::123456789012:role/r",
            "arn::iam::123456789012:role/r",
            "arn:aws:iam::123456789012:role/a b",
            "arn:aws:iam::123456789012:role/a\n",
        ] {
            assert!(RoleArn::parse(bad).is_none(), "{bad:?}");
        }
        let long = format!("arn:aws:iam::123456789012:role/{}", "r".repeat(MAX_LEN));
        assert!(RoleArn::parse(&long).is_none());
    }

    #[test]
    fn scopes_allow_their_roles_only() {
        let a = RoleArn::parse("arn:aws:iam::123456789012:role/app-a").unwrap();
        let b = RoleArn::parse("arn:aws:iam::123456789012:role/other").unwrap();
        assert!(!RoleScope::default().allows(&a));
        assert!(RoleScope::default().is_empty());
        assert!(RoleScope::any().allows(&b));
        let prefix = RoleScope::only(vec![], vec!["arn:aws:iam::123456789012:role/app-".into()]);
        assert!(prefix.allows(&a) && !prefix.allows(&b));
        let exact = RoleScope::only(vec![b.clone()], vec![]);
        assert!(exact.allows(&b) && !exact.allows(&a));
        assert_eq!(exact.describe(), b.to_string());
    }
}
