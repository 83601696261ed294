//! Secrets Manager: GetSecretValue and BatchGetSecretValue, their answers
//! checked and read into [`Secret`]s.

use aws_config::SdkConfig;
use aws_sdk_secretsmanager::Client;
use aws_sdk_secretsmanager::config::Region;
use aws_sdk_secretsmanager::primitives::{Blob, DateTime};

use super::answer::{check_arn, names, shown_arn, within_limit};
use super::error::{classify, classify_service};
use super::{BatchAnswer, Endpoints, Service, Upstream, UpstreamError};
use crate::domain::Arn;
use crate::domain::Version;
use crate::domain::{Kind, Secret, secret_bytes};

/// Largest SecretString or SecretBinary AWS stores, in bytes (64 KiB).
pub(crate) const MAX_SECRET_BYTES: usize = 65_536;

impl Service for Client {
    fn build(sdk: &SdkConfig, region: String, endpoint: Option<&str>) -> Client {
        let mut builder =
            aws_sdk_secretsmanager::config::Builder::from(sdk).region(Region::new(region));
        if let Some(endpoint) = endpoint {
            builder = builder.endpoint_url(endpoint);
        }
        Client::from_conf(builder.build())
    }

    fn endpoint(endpoints: &Endpoints) -> Option<&str> {
        endpoints.secrets_manager.as_deref()
    }
}

impl Upstream {
    /// GetSecretValue for `arn` at `version`, in the ARN's region.
    pub(crate) async fn get_secret_value(
        &self,
        arn: &Arn,
        version: &Version,
    ) -> Result<Secret, UpstreamError> {
        let mut request = self
            .secrets_manager(arn.region())
            .get_secret_value()
            .secret_id(arn.as_str());
        request = match version {
            Version::Current => request,
            Version::Stage(stage) => request.version_stage(stage),
            Version::Id(id) => request.version_id(id),
            Version::IdAndStage { id, stage } => request.version_id(id).version_stage(stage),
            Version::Number(_) | Version::Label(_) | Version::Encrypted(_) => {
                return Err(UpstreamError::InvalidParameter(
                    "a secret's version is a version id or stage".into(),
                ));
            }
        };
        let out = request.send().await.map_err(|e| classify(e, version))?;
        to_secret(
            arn,
            Answer {
                arn: out.arn,
                name: out.name,
                version_id: out.version_id,
                text: out.secret_string,
                binary: out.secret_binary,
                stages: out.version_stages,
                created: out.created_date,
            },
        )
    }

    /// The ARNs of the secrets of `region` that carry a tag with `key`
    /// (ListSecrets with a `tag-key` filter), `page_size` a page, at most
    /// `limit` of them; each without its random suffix (`-AbCdEf`), as a
    /// read by name asks for it.
    pub(crate) async fn list_tagged(
        &self,
        region: &str,
        key: &str,
        page_size: i32,
        limit: usize,
    ) -> Result<Vec<String>, UpstreamError> {
        use aws_sdk_secretsmanager::types::{Filter, FilterNameStringType};
        let client = self.secrets_manager(region);
        let filter = Filter::builder()
            .key(FilterNameStringType::TagKey)
            .values(key)
            .build();
        let mut arns = Vec::new();
        let mut next_token = None;
        // Each page brings at least one or ends the list; the bound only
        // stops an answer that keeps sending empty pages with a token.
        for _ in 0..=limit {
            let out = client
                .list_secrets()
                .filters(filter.clone())
                .max_results(page_size)
                .set_next_token(next_token.take())
                .send()
                .await
                .map_err(|e| classify(e, &Version::Current))?;
            arns.extend(
                out.secret_list
                    .unwrap_or_default()
                    .into_iter()
                    .filter_map(|s| {
                        let arn = s.arn?;
                        // `...:secret:<name>-<6 characters>`.
                        let short = s.name.and_then(|name| {
                            let cut = arn.len().checked_sub(7)?;
                            (arn.is_char_boundary(cut)
                                && arn[..cut].ends_with(&format!(":secret:{name}")))
                            .then(|| arn[..cut].to_owned())
                        });
                        Some(short.unwrap_or(arn))
                    }),
            );
            if arns.len() >= limit {
                arns.truncate(limit);
                break;
            }
            match out.next_token {
                Some(token) if !token.is_empty() => next_token = Some(token),
                _ => break,
            }
        }
        Ok(arns)
    }

    /// BatchGetSecretValue for the current versions of `arns` (all in one
    /// region, at most [`BATCH_LIMIT`](super::BATCH_LIMIT)): one call, each secret with its own
    /// outcome. `Err` when the call as a whole failed (e.g. the policy lacks
    /// `secretsmanager:BatchGetSecretValue`). A secret the answer does not
    /// mention is left out.
    pub(crate) async fn batch_get_secret_value(
        &self,
        arns: &[Arn],
    ) -> Result<BatchAnswer, UpstreamError> {
        // Parameters are never named: left out of the answer, each is
        // fetched on its own.
        let Some(first) = arns.iter().find(|a| !a.is_parameter()) else {
            return Ok(Vec::new());
        };
        let client = self.secrets_manager(first.region());
        let ids: Vec<String> = arns
            .iter()
            .filter(|a| !a.is_parameter())
            .map(|a| a.as_str().to_owned())
            .collect();
        let mut answer = BatchAnswer::with_capacity(arns.len());
        let mut next_token = None;
        // With an id list AWS answers in one page; a few more are followed
        // in case it ever does not.
        for _ in 0..arns.len() {
            let out = client
                .batch_get_secret_value()
                .set_secret_id_list(Some(ids.clone()))
                .set_next_token(next_token.take())
                .send()
                .await
                .map_err(|e| classify(e, &Version::Current))?;
            for entry in out.secret_values.unwrap_or_default() {
                let Some(arn) = entry.arn.as_deref().and_then(|a| asked_for(arns, a)) else {
                    log::warn!(
                        "BatchGetSecretValue answered a secret that was not asked for ({}); its entry is dropped",
                        shown_arn(entry.arn.as_deref())
                    );
                    continue;
                };
                let secret = to_secret(
                    arn,
                    Answer {
                        arn: entry.arn,
                        name: entry.name,
                        version_id: entry.version_id,
                        text: entry.secret_string,
                        binary: entry.secret_binary,
                        stages: entry.version_stages,
                        created: entry.created_date,
                    },
                );
                answer.push((arn.clone(), secret));
            }
            for error in out.errors.unwrap_or_default() {
                let Some(arn) = error.secret_id.as_deref().and_then(|a| asked_for(arns, a)) else {
                    continue;
                };
                let message = error.message.as_deref().unwrap_or("no message");
                let err = classify_service(error.error_code.as_deref(), message, false);
                answer.push((arn.clone(), Err(err)));
            }
            next_token = out.next_token;
            if next_token.is_none() {
                break;
            }
        }
        Ok(answer)
    }
}

/// The ARN asked for that `answered` (the full ARN AWS answers with, or the
/// id as sent) names: the same text, or that text and AWS's random suffix.
fn asked_for<'a>(asked: &'a [Arn], answered: &str) -> Option<&'a Arn> {
    asked
        .iter()
        .find(|a| a.as_str() == answered)
        .or_else(|| asked.iter().find(|a| names(a, answered)))
}

/// The fields GetSecretValue and an entry of BatchGetSecretValue share.
struct Answer {
    arn: Option<String>,
    name: Option<String>,
    version_id: Option<String>,
    text: Option<String>,
    binary: Option<Blob>,
    stages: Option<Vec<String>>,
    created: Option<DateTime>,
}

/// A GetSecretValue answer (or a batch's entry) as a [`Secret`]: refused
/// when it is for another secret than `asked`, or its value is over
/// [`MAX_SECRET_BYTES`].
fn to_secret(asked: &Arn, answer: Answer) -> Result<Secret, UpstreamError> {
    // Wrapped first, so a refused value is wiped too.
    let text = answer.text.map(|text| secret_bytes(text.into_bytes()));
    let binary = answer.binary.map(|blob| secret_bytes(blob.into_inner()));
    check_arn(asked, answer.arn.as_deref())?;
    let (kind, value) = match (text, binary) {
        (Some(text), _) => {
            let text = within_limit(asked, text, MAX_SECRET_BYTES)?;
            (Secret::text_kind(&text), text)
        }
        (None, Some(binary)) => (Kind::Binary, within_limit(asked, binary, MAX_SECRET_BYTES)?),
        (None, None) => {
            return Err(UpstreamError::Other {
                code: "EmptySecret".into(),
                message: "the answer had neither SecretString nor SecretBinary".into(),
            });
        }
    };
    Ok(Secret {
        parameter: None,
        compat_answer: crate::domain::BuiltOnce::default(),
        arn: answer.arn.unwrap_or_else(|| asked.to_string()),
        name: answer.name.unwrap_or_default(),
        version_id: answer.version_id,
        version_stages: answer.stages.unwrap_or_default(),
        created_date: answer
            .created
            .and_then(|d| std::time::SystemTime::try_from(d).ok()),
        kind,
        value,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::upstream::BadAnswer;

    fn answer(arn: Option<&str>, text: Option<String>, binary: Option<Vec<u8>>) -> Answer {
        Answer {
            arn: arn.map(str::to_owned),
            name: None,
            version_id: Some("v1".into()),
            text,
            binary: binary.map(Blob::new),
            stages: None,
            created: None,
        }
    }

    #[test]
    fn an_answer_must_name_the_secret_asked_for() {
        let full =
            Arn::parse("arn:aws:secretsmanager:us-east-1:123456789012:secret:db-AbC123").unwrap();
        let partial =
            Arn::parse("arn:aws:secretsmanager:us-east-1:123456789012:secret:db").unwrap();
        let read = |asked: &Arn, arn: Option<&str>| {
            to_secret(asked, answer(arn, Some("hunter2".into()), None))
        };
        let own = "arn:aws:secretsmanager:us-east-1:123456789012:secret:db-AbC123";
        assert!(read(&full, Some(own)).is_ok());
        assert!(read(&partial, Some(own)).is_ok());
        for wrong in [
            // Another account, another region, another partition.
            "arn:aws:secretsmanager:us-east-1:999999999999:secret:db-AbC123",
            "arn:aws:secretsmanager:eu-west-1:123456789012:secret:db-AbC123",
            "arn:aws-cn:secretsmanager:us-east-1:123456789012:secret:db-AbC123",
            // Another secret whose name starts with the one asked.
            "arn:aws:secretsmanager:us-east-1:123456789012:secret:db-admin-AbC123",
            "arn:aws:secretsmanager:us-east-1:123456789012:secret:db-AbC12",
            "arn:aws:secretsmanager:us-east-1:123456789012:secret:db-AbC12/",
        ] {
            let err = read(&partial, Some(wrong)).unwrap_err();
            assert!(
                matches!(&err, UpstreamError::BadAnswer(BadAnswer::WrongArn { .. })),
                "{wrong}: {err:?}"
            );
            assert!(!err.to_string().contains("hunter2") && !err.is_transient());
        }
        // No ARN: nothing says it is the secret asked for.
        assert!(read(&full, None).is_err());
    }

    #[test]
    fn values_over_aws_limit_are_refused() {
        let own = "arn:aws:secretsmanager:us-east-1:123456789012:secret:db-AbC123";
        let asked = Arn::parse(own).unwrap();
        let text = |len| to_secret(&asked, answer(Some(own), Some("x".repeat(len)), None));
        let binary = |len| to_secret(&asked, answer(Some(own), None, Some(vec![7; len])));
        assert_eq!(
            text(MAX_SECRET_BYTES).unwrap().value.len(),
            MAX_SECRET_BYTES
        );
        assert_eq!(
            binary(MAX_SECRET_BYTES).unwrap().value.len(),
            MAX_SECRET_BYTES
        );
        for err in [
            text(MAX_SECRET_BYTES + 1).unwrap_err(),
            binary(MAX_SECRET_BYTES + 1).unwrap_err(),
        ] {
            assert_eq!(
                err,
                UpstreamError::BadAnswer(BadAnswer::ValueTooLarge {
                    resource: own.into(),
                    limit: MAX_SECRET_BYTES
                })
            );
            assert!(!err.is_transient() && !err.is_not_found());
        }
    }

    #[test]
    fn a_batch_entry_for_a_secret_not_asked_for_matches_none() {
        let arn = |t: &str| Arn::parse(t).unwrap();
        let asked = [
            arn("arn:aws:secretsmanager:us-east-1:123456789012:secret:a"),
            arn("arn:aws:secretsmanager:us-east-1:123456789012:secret:b-XyZ789"),
        ];
        let found = |answered: &str| asked_for(&asked, answered).map(Arn::as_str);
        assert_eq!(
            found("arn:aws:secretsmanager:us-east-1:123456789012:secret:a-AbC123"),
            Some(asked[0].as_str())
        );
        assert_eq!(
            found("arn:aws:secretsmanager:us-east-1:123456789012:secret:b-XyZ789"),
            Some(asked[1].as_str())
        );
        assert_eq!(
            found("arn:aws:secretsmanager:us-east-1:999999999999:secret:a-AbC123"),
            None
        );
        assert_eq!(
            found("arn:aws:secretsmanager:us-east-1:123456789012:secret:c-AbC123"),
            None
        );
    }
}
