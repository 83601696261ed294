//! `caller` in the account field of a resource's ARN
//! (`arn:aws:secretsmanager:us-east-1:caller:secret:*`): the account of the
//! agent's own identity, learnt once at start (STS GetCallerIdentity, or
//! `AWS_ACCOUNT_ID`). Until it is known, those ARNs hold [`PLACEHOLDER`],
//! an account no secret is in.

use std::collections::BTreeMap;

/// The word that stands for the caller's own account.
pub(crate) const CALLER: &str = "caller";

/// The account of `caller` ARNs while the real one is not known.
const PLACEHOLDER: &str = "000000000000";

/// Whether the resources name the caller's own account, and which it is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum CallerAccount {
    /// No ARN says `caller`.
    Unused,
    /// Some do, and the account is not known yet.
    Pending,
    /// Some do, and this is the account, learnt at start.
    Resolved(String),
}

impl CallerAccount {
    /// The account, once learnt.
    pub(crate) fn resolved(&self) -> Option<&str> {
        match self {
            CallerAccount::Resolved(account) => Some(account),
            _ => None,
        }
    }

    /// For `--check`; `None` when unused.
    pub(crate) fn describe(&self) -> Option<String> {
        match self {
            CallerAccount::Unused => None,
            CallerAccount::Pending => Some(
                "the identity's own (`caller`), asked of STS GetCallerIdentity once at start (AWS_ACCOUNT_ID, when set, instead)"
                    .to_owned(),
            ),
            CallerAccount::Resolved(account) => Some(format!("{account} (`caller`)")),
        }
    }
}

/// Writes `account` (else [`PLACEHOLDER`]) into each ARN of `resources`
/// whose account field is `caller`, and says what the config now holds.
pub(super) fn fill(
    resources: &mut BTreeMap<String, String>,
    account: Option<&str>,
) -> CallerAccount {
    let mut used = false;
    for arn in resources.values_mut() {
        let fields: Vec<&str> = arn.splitn(6, ':').collect();
        if let [arn_word, partition, service, region, CALLER, rest] = fields.as_slice() {
            let filled = format!(
                "{arn_word}:{partition}:{service}:{region}:{}:{rest}",
                account.unwrap_or(PLACEHOLDER)
            );
            *arn = filled;
            used = true;
        }
    }
    match (used, account) {
        (false, _) => CallerAccount::Unused,
        (true, None) => CallerAccount::Pending,
        (true, Some(account)) => CallerAccount::Resolved(account.to_owned()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_account_field_is_filled() {
        let mut resources: BTreeMap<String, String> = [
            ("*", "arn:aws:secretsmanager:us-east-1:caller:secret:*"),
            ("p/*", "arn:aws:ssm:us-east-1:caller:parameter/p/*"),
            (
                "x",
                "arn:aws:secretsmanager:us-east-1:123456789012:secret:caller",
            ),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect();
        let pending = fill(&mut resources.clone(), None);
        assert_eq!(pending, CallerAccount::Pending);
        assert_eq!(
            fill(&mut resources, Some("210987654321")),
            CallerAccount::Resolved("210987654321".into())
        );
        assert_eq!(
            resources["*"],
            "arn:aws:secretsmanager:us-east-1:210987654321:secret:*"
        );
        assert_eq!(
            resources["p/*"],
            "arn:aws:ssm:us-east-1:210987654321:parameter/p/*"
        );
        assert_eq!(
            resources["x"],
            "arn:aws:secretsmanager:us-east-1:123456789012:secret:caller"
        );
        let mut none = BTreeMap::from([(
            "x".to_owned(),
            "arn:aws:secretsmanager:us-east-1:123456789012:secret:x".to_owned(),
        )]);
        assert_eq!(fill(&mut none, None), CallerAccount::Unused);
    }
}
