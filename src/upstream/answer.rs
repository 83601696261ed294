//! What every answer must be before the agent serves it: for the secret or
//! parameter asked, and within AWS's limit of its value.

use bytes::Bytes;

use super::{BadAnswer, UpstreamError};
use crate::domain::Arn;

/// Whether the ARN of an answer is that of the secret or parameter asked
/// for. What is sent is always an ARN: in full, or (a secret under a
/// pattern, or configured so) without the `-XXXXXX` suffix AWS adds to a
/// secret's name. So the answer's partition, region, account and name
/// must be the asked ones, with at most that suffix after the name.
pub(super) fn names(asked: &Arn, answered: &str) -> bool {
    answered == asked.as_str()
        || (!asked.is_parameter()
            && answered
                .strip_prefix(asked.as_str())
                .and_then(|rest| rest.strip_prefix('-'))
                .is_some_and(|suffix| {
                    suffix.len() == 6 && suffix.bytes().all(|b| b.is_ascii_alphanumeric())
                }))
}

/// Refuses an answer whose ARN is not that of `asked` (see [`names`]).
pub(super) fn check_arn(asked: &Arn, answered: Option<&str>) -> Result<(), UpstreamError> {
    if answered.is_some_and(|answered| names(asked, answered)) {
        return Ok(());
    }
    Err(UpstreamError::BadAnswer(BadAnswer::WrongArn {
        asked: asked.to_string(),
        answered: shown_arn(answered),
    }))
}

/// An ARN from an answer as a message may show it: at most 300
/// characters, escaped, or `no ARN`.
pub(super) fn shown_arn(arn: Option<&str>) -> String {
    match arn {
        Some(arn) => arn.chars().take(300).flat_map(char::escape_debug).collect(),
        None => "no ARN".to_owned(),
    }
}

/// `value` when it is at most `limit` bytes; else it is wiped and refused.
pub(super) fn within_limit(
    asked: &Arn,
    value: Bytes,
    limit: usize,
) -> Result<Bytes, UpstreamError> {
    if value.len() <= limit {
        return Ok(value);
    }
    Err(UpstreamError::BadAnswer(BadAnswer::ValueTooLarge {
        resource: asked.to_string(),
        limit,
    }))
}
