//! Calls to AWS Secrets Manager and Systems Manager Parameter Store: one
//! client per service and region, all signed with the same credentials, and
//! one decision on which failures are transient.
//!
//! Nothing outside this module sees the SDK's types.

use std::error::Error as _;
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use aws_config::SdkConfig;
use aws_credential_types::provider::error::CredentialsError;
use aws_sdk_secretsmanager::Client;
use aws_sdk_secretsmanager::config::Region;
use aws_sdk_secretsmanager::config::http::HttpResponse;
use aws_sdk_secretsmanager::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_secretsmanager::primitives::{Blob, DateTime};
use bytes::Bytes;
use dashmap::DashMap;

use crate::resources::SecretArn;
use crate::secret::{Kind, ParameterInfo, Secret, secret_bytes};

/// Which version of a secret or parameter to read.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Version {
    /// `AWSCURRENT` of a secret, the latest version of a parameter: the default.
    Current,
    /// A secret's staging label such as `AWSPREVIOUS`.
    Stage(String),
    /// A secret's version id.
    Id(String),
    /// A secret's version id that must carry this staging label (both are
    /// sent; AWS refuses the pair when the label is elsewhere).
    IdAndStage { id: String, stage: String },
    /// A parameter's version number (`name:3`).
    Number(u64),
    /// A parameter's label (`name:prod`).
    Label(String),
    /// A parameter as GetParameter answers without decryption (a
    /// SecureString's encrypted form), at a version: cached apart from the
    /// decrypted value, so that one is never served for the other.
    Encrypted(Box<Version>),
}

impl Version {
    /// Whether a client chose it: then it, and AWS's messages that repeat
    /// it, stay out of the log (a client may put anything there).
    pub fn chosen_by_client(&self) -> bool {
        !matches!(self, Version::Current)
    }
}

/// Why a fetch failed. Messages come from AWS or the SDK and never carry
/// secret material.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UpstreamError {
    #[error("AWS did not answer in time")]
    Timeout,
    #[error("AWS is unreachable: {0}")]
    Unreachable(String),
    #[error("no AWS credentials: {message}")]
    Credentials { message: String, transient: bool },
    #[error("AWS refused the request ({code}): {message}")]
    AccessDenied { code: String, message: String },
    #[error("the secret or parameter does not exist in AWS: {0}")]
    SecretNotFound(String),
    #[error("no such version of the secret or parameter: {0}")]
    VersionNotFound(String),
    #[error("the version asked for is not valid: {0}")]
    InvalidParameter(String),
    #[error("Secrets Manager cannot decrypt the secret: {0}")]
    DecryptionFailure(String),
    #[error("Secrets Manager refused the request: {0}")]
    InvalidRequest(String),
    #[error("AWS is throttling requests: {0}")]
    Throttled(String),
    /// The fetch waited for a turn among `max-concurrent-calls` and ran out
    /// of time (`fetch-timeout`) before it, or in a call it got too late.
    #[error(
        "too many calls to AWS are in flight (secret-manager.aws.max-concurrent-calls); this one waited for its turn until the fetch deadline"
    )]
    Busy,
    #[error("AWS failed ({code}): {message}")]
    Service { code: String, message: String },
    #[error("unexpected answer from AWS ({code}): {message}")]
    Other { code: String, message: String },
    /// An answer the agent refuses to read or serve: it never holds the
    /// value, nor does the message.
    #[error("refused the answer from AWS: {0}")]
    BadAnswer(BadAnswer),
}

/// What was wrong with an answer the agent refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BadAnswer {
    /// The body was over the cap of its call (see [`crate::aws_http`]).
    #[error("its body is larger than {limit} bytes")]
    BodyTooLarge { limit: usize },
    /// A value larger than AWS stores.
    #[error("the value of {resource} is larger than AWS's limit of {limit} bytes")]
    ValueTooLarge { resource: String, limit: usize },
    /// The answer is for another secret or parameter than the one asked.
    #[error("it is for {answered}, not {asked}")]
    WrongArn { asked: String, answered: String },
}

/// Largest SecretString or SecretBinary AWS stores, in bytes (64 KiB).
pub(crate) const MAX_SECRET_BYTES: usize = 65_536;

/// Largest Parameter Store value the agent takes, in bytes: AWS stores
/// at most 8 KB (advanced tier); 32 KiB holds 8,192 characters of any
/// UTF-8 text, whether AWS counts bytes or characters.
pub(crate) const MAX_PARAMETER_BYTES: usize = 32 * 1024;

impl UpstreamError {
    /// A stable snake_case name of the kind of failure, for metrics and codes.
    pub fn kind(&self) -> &'static str {
        match self {
            UpstreamError::Timeout => "timeout",
            UpstreamError::Unreachable(_) => "unreachable",
            UpstreamError::Credentials { .. } => "credentials",
            UpstreamError::AccessDenied { .. } => "access_denied",
            UpstreamError::SecretNotFound(_) => "secret_not_found",
            UpstreamError::VersionNotFound(_) => "version_not_found",
            UpstreamError::InvalidParameter(_) => "invalid_parameter",
            UpstreamError::DecryptionFailure(_) => "decryption_failure",
            UpstreamError::InvalidRequest(_) => "invalid_request",
            UpstreamError::Throttled(_) => "throttled",
            UpstreamError::Busy => "busy",
            UpstreamError::Service { .. } => "service_error",
            UpstreamError::Other { .. } => "other",
            UpstreamError::BadAnswer(BadAnswer::BodyTooLarge { .. }) => "answer_too_large",
            UpstreamError::BadAnswer(BadAnswer::ValueTooLarge { .. }) => "value_too_large",
            UpstreamError::BadAnswer(BadAnswer::WrongArn { .. }) => "wrong_arn",
        }
    }

    /// Transient failures may pass by themselves: the cache keeps serving the
    /// last value for a bounded time. Everything else takes effect at once.
    pub fn is_transient(&self) -> bool {
        match self {
            UpstreamError::Timeout
            | UpstreamError::Unreachable(_)
            | UpstreamError::Throttled(_)
            | UpstreamError::Busy
            | UpstreamError::Service { .. } => true,
            // Cut off like a broken connection: the last good value stays.
            UpstreamError::BadAnswer(BadAnswer::BodyTooLarge { .. }) => true,
            UpstreamError::Credentials { transient, .. } => *transient,
            _ => false,
        }
    }

    /// AWS said what was asked for does not exist (the secret, the version
    /// id or stage) or cannot be asked for (an invalid version id): the same
    /// question gets the same answer until someone changes the secret, so
    /// the cache remembers it for `cache.negative-ttl`.
    pub fn is_not_found(&self) -> bool {
        matches!(
            self,
            UpstreamError::SecretNotFound(_)
                | UpstreamError::VersionNotFound(_)
                | UpstreamError::InvalidParameter(_)
        )
    }
}

/// Most secrets one BatchGetSecretValue call may name (AWS's limit).
pub const BATCH_LIMIT: usize = 20;

/// Each secret of a BatchGetSecretValue call with its own outcome.
pub type BatchAnswer = Vec<(SecretArn, Result<Secret, UpstreamError>)>;

/// Endpoint URLs that replace AWS's, for every region (a VPC endpoint, an
/// emulator). Without one, the SDK's own variables apply
/// (`AWS_ENDPOINT_URL_SECRETS_MANAGER`, `AWS_ENDPOINT_URL_SSM`, `AWS_ENDPOINT_URL`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Endpoints {
    /// `secret-manager.aws.endpoint`.
    pub secrets_manager: Option<String>,
    /// `secret-manager.aws.ssm-endpoint`.
    pub ssm: Option<String>,
}

/// Secrets Manager and SSM clients by region, created on first use. Cheap
/// to clone; a reload that changes the AWS settings replaces every client
/// at once ([`Upstream::replace`]).
#[derive(Clone)]
pub struct Upstream {
    inner: Arc<ArcSwap<Inner>>,
}

struct Inner {
    /// Shared settings: credentials, timeouts, retries, endpoint variables.
    sdk: SdkConfig,
    /// Applied to every region's client of its service.
    endpoints: Endpoints,
    clients: DashMap<String, Client>,
    ssm_clients: DashMap<String, aws_sdk_ssm::Client>,
}

impl Inner {
    fn new(sdk: SdkConfig, endpoints: Endpoints) -> Inner {
        Inner {
            sdk,
            endpoints,
            clients: DashMap::new(),
            ssm_clients: DashMap::new(),
        }
    }
}

impl Upstream {
    pub fn new(sdk: SdkConfig, endpoints: Endpoints) -> Upstream {
        Upstream {
            inner: Arc::new(ArcSwap::from_pointee(Inner::new(sdk, endpoints))),
        }
    }

    /// Every later call goes through clients built from `sdk` (new
    /// credentials, region, timeouts) and `endpoints`; calls in flight
    /// finish with the clients they started with.
    pub(crate) fn replace(&self, sdk: SdkConfig, endpoints: Endpoints) {
        self.inner.store(Arc::new(Inner::new(sdk, endpoints)));
    }

    fn client(&self, region: &str) -> Client {
        let inner = self.inner.load();
        if let Some(client) = inner.clients.get(region) {
            return client.clone();
        }
        let mut builder = aws_sdk_secretsmanager::config::Builder::from(&inner.sdk)
            .region(Region::new(region.to_owned()));
        if let Some(endpoint) = &inner.endpoints.secrets_manager {
            builder = builder.endpoint_url(endpoint);
        }
        let client = Client::from_conf(builder.build());
        inner
            .clients
            .entry(region.to_owned())
            .or_insert(client)
            .clone()
    }

    /// The SSM client of `region`: the same credentials and settings; the
    /// SDK reads `AWS_ENDPOINT_URL_SSM` when no `ssm-endpoint` is set.
    fn ssm_client(&self, region: &str) -> aws_sdk_ssm::Client {
        let inner = self.inner.load();
        if let Some(client) = inner.ssm_clients.get(region) {
            return client.clone();
        }
        let mut builder = aws_sdk_ssm::config::Builder::from(&inner.sdk)
            .region(aws_sdk_ssm::config::Region::new(region.to_owned()));
        if let Some(endpoint) = &inner.endpoints.ssm {
            builder = builder.endpoint_url(endpoint);
        }
        let client = aws_sdk_ssm::Client::from_conf(builder.build());
        inner
            .ssm_clients
            .entry(region.to_owned())
            .or_insert(client)
            .clone()
    }

    /// The value of `arn` at `version`: GetSecretValue for a secret,
    /// GetParameter (decrypted unless [`Version::Encrypted`]) for a parameter.
    pub async fn get_value(
        &self,
        arn: &SecretArn,
        version: &Version,
    ) -> Result<Secret, UpstreamError> {
        match (arn.is_parameter(), version) {
            (true, Version::Encrypted(version)) => self.get_parameter(arn, version, false).await,
            (true, version) => self.get_parameter(arn, version, true).await,
            (false, version) => self.get_secret_value(arn, version).await,
        }
    }

    /// GetParameter for the parameter `arn` names, at `version`, in the
    /// ARN's region. The whole ARN is sent (with `:<version>` or `:<label>`
    /// after it): that is how AWS reads a parameter shared from another
    /// account, and two ARNs that differ only in their account never read
    /// the same parameter.
    pub async fn get_parameter(
        &self,
        arn: &SecretArn,
        version: &Version,
        decrypt: bool,
    ) -> Result<Secret, UpstreamError> {
        let selector = parameter_selector(arn, version)?;
        let out = self
            .ssm_client(arn.region())
            .get_parameter()
            .name(selector)
            .with_decryption(decrypt)
            .send()
            .await
            .map_err(|e| match classify(e, version != &Version::Current) {
                // A label the parameter does not have is ParameterNotFound
                // too (a missing version number has a code of its own): the
                // version is what is missing, as far as the answer tells.
                UpstreamError::SecretNotFound(message) if matches!(version, Version::Label(_)) => {
                    UpstreamError::VersionNotFound(message)
                }
                err => err,
            })?;
        let parameter = out.parameter.ok_or_else(|| UpstreamError::Other {
            code: "EmptyParameter".into(),
            message: "the answer had no Parameter".into(),
        })?;
        to_parameter(arn, parameter)
    }

    /// GetSecretValue for `arn` at `version`, in the ARN's region.
    pub async fn get_secret_value(
        &self,
        arn: &SecretArn,
        version: &Version,
    ) -> Result<Secret, UpstreamError> {
        let mut request = self
            .client(arn.region())
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
        let out = request
            .send()
            .await
            .map_err(|e| classify(e, version != &Version::Current))?;
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

    /// BatchGetSecretValue for the current versions of `arns` (all in one
    /// region, at most [`BATCH_LIMIT`]): one call, each secret with its own
    /// outcome. `Err` when the call as a whole failed (e.g. the policy lacks
    /// `secretsmanager:BatchGetSecretValue`). A secret the answer does not
    /// mention is left out.
    pub async fn batch_get_secret_value(
        &self,
        arns: &[SecretArn],
    ) -> Result<BatchAnswer, UpstreamError> {
        // Parameters are never named: left out of the answer, each is
        // fetched on its own.
        let Some(first) = arns.iter().find(|a| !a.is_parameter()) else {
            return Ok(Vec::new());
        };
        let client = self.client(first.region());
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
                .map_err(|e| classify(e, false))?;
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
fn asked_for<'a>(asked: &'a [SecretArn], answered: &str) -> Option<&'a SecretArn> {
    asked
        .iter()
        .find(|a| a.as_str() == answered)
        .or_else(|| asked.iter().find(|a| names(a, answered)))
}

/// Whether the ARN of an answer is that of the secret or parameter asked
/// for. What is sent is always an ARN: in full, or (a secret under a
/// pattern, or configured so) without the `-XXXXXX` suffix AWS adds to a
/// secret's name. So the answer's partition, region, account and name
/// must be the asked ones, with at most that suffix after the name.
fn names(asked: &SecretArn, answered: &str) -> bool {
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
fn check_arn(asked: &SecretArn, answered: Option<&str>) -> Result<(), UpstreamError> {
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
fn shown_arn(arn: Option<&str>) -> String {
    match arn {
        Some(arn) => arn.chars().take(300).flat_map(char::escape_debug).collect(),
        None => "no ARN".to_owned(),
    }
}

/// `value` when it is at most `limit` bytes; else it is wiped and refused.
fn within_limit(asked: &SecretArn, value: Bytes, limit: usize) -> Result<Bytes, UpstreamError> {
    if value.len() <= limit {
        return Ok(value);
    }
    Err(UpstreamError::BadAnswer(BadAnswer::ValueTooLarge {
        resource: asked.to_string(),
        limit,
    }))
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
fn to_secret(asked: &SecretArn, answer: Answer) -> Result<Secret, UpstreamError> {
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

/// `arn`, `arn:<version>` or `arn:<label>`: what GetParameter's `Name`
/// takes to read a version.
fn parameter_selector(arn: &SecretArn, version: &Version) -> Result<String, UpstreamError> {
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
    asked: &SecretArn,
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
    })
}

/// A service's error code and message as an [`UpstreamError`]: from an
/// error answer, or from one secret's entry in a BatchGetSecretValue answer.
/// Secrets Manager's and SSM's codes do not overlap.
fn classify_service(code: Option<&str>, message: &str, version_asked: bool) -> UpstreamError {
    let text: String = message.chars().take(300).collect();
    match code {
        // Secrets Manager says this of a version too; SSM has its own code
        // for a version (below), so a parameter not found is the parameter.
        Some("ResourceNotFoundException") if version_asked => UpstreamError::VersionNotFound(text),
        Some("ResourceNotFoundException" | "ParameterNotFound") => {
            UpstreamError::SecretNotFound(text)
        }
        Some("ParameterVersionNotFound") => UpstreamError::VersionNotFound(text),
        // A label AWS will not take (`name:1a`, too long): the client's.
        Some("ValidationException") if version_asked => UpstreamError::InvalidParameter(text),
        // SSM could not use the parameter's KMS key: a refusal, with KMS's
        // code (`InvalidKeyId`, `KMSAccessDeniedException`, `KMS.DisabledException`...).
        // KMS failing for a while (its own fault or throttling) passes.
        Some(code)
            if code.starts_with("KMS")
                && ["Internal", "Throttl", "DependencyTimeout", "Unavailable"]
                    .iter()
                    .any(|part| code.contains(part)) =>
        {
            UpstreamError::Service {
                code: code.to_owned(),
                message: text,
            }
        }
        Some(code @ "InvalidKeyId") => UpstreamError::AccessDenied {
            code: code.to_owned(),
            message: text,
        },
        Some(code) if code.starts_with("KMS") => UpstreamError::AccessDenied {
            code: code.to_owned(),
            message: text,
        },
        Some("InvalidParameterException") => UpstreamError::InvalidParameter(text),
        Some("DecryptionFailure") => UpstreamError::DecryptionFailure(text),
        Some("InvalidRequestException") => UpstreamError::InvalidRequest(text),
        Some("InternalServiceError") => UpstreamError::Service {
            code: "InternalServiceError".into(),
            message: text,
        },
        code => classify_code(code, text),
    }
}

/// The one place SDK errors become [`UpstreamError`]s.
fn classify<E>(err: SdkError<E, HttpResponse>, version_asked: bool) -> UpstreamError
where
    E: ProvideErrorMetadata + std::error::Error + 'static,
{
    let mut source = err.source();
    while let Some(e) = source {
        if let Some(too_large) = e.downcast_ref::<crate::aws_http::BodyTooLarge>() {
            return UpstreamError::BadAnswer(BadAnswer::BodyTooLarge {
                limit: too_large.limit,
            });
        }
        source = e.source();
    }
    match &err {
        SdkError::TimeoutError(_) => return UpstreamError::Timeout,
        SdkError::DispatchFailure(failure) if failure.is_timeout() => {
            return UpstreamError::Timeout;
        }
        SdkError::ServiceError(ctx) => {
            let e = ctx.err();
            if e.code().is_none() {
                let raw = ctx.raw();
                return classify_unparsed(
                    raw.status().as_u16(),
                    raw.body().bytes().unwrap_or(&[]),
                    version_asked,
                );
            }
            return classify_service(e.code(), e.message().unwrap_or("no message"), version_asked);
        }
        // An error answer the SDK could not read at all (SSM's client takes
        // only JSON; an emulator or a front end may answer in XML).
        SdkError::ResponseError(ctx) if !ctx.raw().status().is_success() => {
            let raw = ctx.raw();
            return classify_unparsed(
                raw.status().as_u16(),
                raw.body().bytes().unwrap_or(&[]),
                version_asked,
            );
        }
        _ => {}
    }
    // Credential failures surface as dispatch or construction failures; find them in the chain.
    let mut source = err.source();
    while let Some(e) = source {
        if let Some(cred) = e.downcast_ref::<CredentialsError>() {
            let transient = matches!(
                cred,
                CredentialsError::ProviderTimedOut(_) | CredentialsError::ProviderError(_)
            );
            return UpstreamError::Credentials {
                message: crate::credentials::describe_error(cred)
                    .chars()
                    .take(500)
                    .collect(),
                transient,
            };
        }
        source = e.source();
    }
    match &err {
        SdkError::DispatchFailure(_) | SdkError::ResponseError(_) => {
            UpstreamError::Unreachable(error_chain(&err))
        }
        _ => UpstreamError::Other {
            code: "SdkError".into(),
            message: error_chain(&err),
        },
    }
}

fn classify_code(code: Option<&str>, message: String) -> UpstreamError {
    let code = code.unwrap_or("Unknown").to_owned();
    match code.as_str() {
        "AccessDeniedException"
        | "AccessDenied"
        | "UnrecognizedClientException"
        | "InvalidClientTokenId"
        | "InvalidSignatureException"
        | "SignatureDoesNotMatch"
        | "IncompleteSignature"
        | "ExpiredToken"
        | "ExpiredTokenException"
        | "MissingAuthenticationToken" => UpstreamError::AccessDenied { code, message },
        "ThrottlingException"
        | "Throttling"
        | "TooManyRequestsException"
        | "RequestLimitExceeded" => UpstreamError::Throttled(message),
        "ServiceUnavailable"
        | "ServiceUnavailableException"
        | "InternalFailure"
        | "InternalServerError"
        | "RequestTimeout"
        | "RequestTimeoutException" => UpstreamError::Service { code, message },
        _ => UpstreamError::Other { code, message },
    }
}

/// An error answer the SDK could not read as JSON (an emulator or a
/// front end may answer in the query protocol's XML): the code and message
/// are taken from `<Code>` and `<Message>` when present, and the HTTP status
/// decides the rest, so a refusal (401, 403) is still a refusal.
fn classify_unparsed(status: u16, body: &[u8], version_asked: bool) -> UpstreamError {
    let body = String::from_utf8_lossy(body);
    let element = |name: &str| {
        let start = body.find(&format!("<{name}>"))? + name.len() + 2;
        let len = body[start..].find('<')?;
        Some(
            body[start..start + len]
                .chars()
                .take(300)
                .collect::<String>(),
        )
    };
    let code = element("Code")
        .filter(|c| !c.is_empty() && c.chars().all(|c| c.is_ascii_alphanumeric() || c == '.'));
    let message = element("Message").unwrap_or_else(|| format!("HTTP status {status}"));
    match (code, status) {
        (Some(code), 401 | 403) => match classify_code(Some(&code), message.clone()) {
            UpstreamError::AccessDenied { .. } | UpstreamError::Other { .. } => {
                UpstreamError::AccessDenied { code, message }
            }
            other => other,
        },
        (Some(code), _) => classify_service(Some(&code), &message, version_asked),
        (None, 429) => UpstreamError::Throttled(message),
        (None, 401 | 403) => UpstreamError::AccessDenied {
            code: format!("HTTP{status}"),
            message,
        },
        (None, 500..) => UpstreamError::Service {
            code: format!("HTTP{status}"),
            message,
        },
        (None, _) => UpstreamError::Other {
            code: format!("HTTP{status}"),
            message,
        },
    }
}

/// `err: cause: cause`, bounded in length.
fn error_chain(err: &dyn std::error::Error) -> String {
    chain_text(err.to_string(), err.source())
        .chars()
        .take(500)
        .collect()
}

/// `first`, then each error of the chain from `source` on whose words are
/// not already in the text, joined by `: `: the SDK's errors often repeat
/// their cause's message in their own.
pub(crate) fn chain_text(
    first: String,
    mut source: Option<&(dyn std::error::Error + 'static)>,
) -> String {
    let mut text = first;
    while let Some(e) = source {
        let part = e.to_string();
        if !text.contains(&part) {
            text.push_str(": ");
            text.push_str(&part);
        }
        source = e.source();
    }
    text
}

/// Deadline for one fetch, including the SDK's own retries.
pub async fn with_deadline<T>(
    deadline: Duration,
    fut: impl Future<Output = Result<T, UpstreamError>>,
) -> Result<T, UpstreamError> {
    tokio::time::timeout(deadline, fut)
        .await
        .unwrap_or(Err(UpstreamError::Timeout))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_classify() {
        let c = |code: &str| classify_code(Some(code), "m".into());
        assert!(matches!(
            c("AccessDeniedException"),
            UpstreamError::AccessDenied { .. }
        ));
        assert!(matches!(
            c("UnrecognizedClientException"),
            UpstreamError::AccessDenied { .. }
        ));
        assert!(matches!(
            c("ThrottlingException"),
            UpstreamError::Throttled(_)
        ));
        assert!(c("ThrottlingException").is_transient());
        assert!(c("ServiceUnavailable").is_transient());
        assert!(!c("AccessDeniedException").is_transient());
        assert!(!c("Whatever").is_transient());
        // No readable code: the HTTP status decides.
        let by_status = |status| classify_unparsed(status, b"", false);
        assert!(matches!(by_status(403), UpstreamError::AccessDenied { .. }));
        assert!(matches!(by_status(429), UpstreamError::Throttled(_)));
        assert!(by_status(503).is_transient());
        assert!(matches!(by_status(418), UpstreamError::Other { .. }));
    }

    #[test]
    fn parameter_selectors() {
        let arn = |text: &str| SecretArn::parse(text).unwrap();
        let db = arn("arn:aws:ssm:us-east-1:123456789012:parameter/app/db");
        let plain = arn("arn:aws:ssm:us-east-1:123456789012:parameter/plain");
        let selector = |arn: &SecretArn, v: Version| parameter_selector(arn, &v).unwrap();
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
    fn parameter_codes_classify() {
        let c = |code: &str, asked| classify_service(Some(code), "m", asked);
        assert_eq!(
            c("ParameterNotFound", false),
            UpstreamError::SecretNotFound("m".into())
        );
        assert!(c("ParameterNotFound", false).is_not_found());
        // A missing parameter is missing whatever version was asked.
        assert_eq!(
            c("ParameterNotFound", true),
            UpstreamError::SecretNotFound("m".into())
        );
        assert_eq!(
            c("ParameterVersionNotFound", true),
            UpstreamError::VersionNotFound("m".into())
        );
        for kms in [
            "InvalidKeyId",
            "KMSAccessDeniedException",
            "KMS.DisabledException",
        ] {
            let err = c(kms, false);
            assert!(
                matches!(&err, UpstreamError::AccessDenied { code, .. } if code == kms),
                "{err:?}"
            );
            assert!(!err.is_transient() && err.to_string().contains(kms));
        }
        assert!(matches!(
            c("AccessDeniedException", false),
            UpstreamError::AccessDenied { .. }
        ));
        assert!(c("ThrottlingException", false).is_transient());
        assert!(c("InternalServerError", false).is_transient());
        // KMS failing for a while is transient, not a refusal.
        for kms in [
            "KMSInternalException",
            "KMSThrottlingException",
            "KMS.DependencyTimeoutException",
        ] {
            assert!(c(kms, false).is_transient(), "{kms}");
        }
        // The same codes in an XML answer the SDK cannot read.
        let xml = "<ErrorResponse><Error><Code>ParameterNotFound</Code><Message>m</Message></Error></ErrorResponse>";
        assert_eq!(
            classify_unparsed(400, xml.as_bytes(), true),
            UpstreamError::SecretNotFound("m".into())
        );
        assert!(matches!(
            c("ValidationException", true),
            UpstreamError::InvalidParameter(_)
        ));
    }

    #[test]
    fn answers_the_sdk_cannot_parse_classify_by_code_and_status() {
        let xml = "<?xml version=\"1.0\"?><ErrorResponse><Errors><Error>\
            <Code>InvalidClientTokenId</Code><Message>The security token included in the \
            request is invalid.</Message></Error></Errors></ErrorResponse>";
        assert_eq!(
            classify_unparsed(403, xml.as_bytes(), false),
            UpstreamError::AccessDenied {
                code: "InvalidClientTokenId".into(),
                message: "The security token included in the request is invalid.".into()
            }
        );
        let odd = xml.replace("InvalidClientTokenId", "SomethingNew");
        assert!(matches!(
            classify_unparsed(403, odd.as_bytes(), false),
            UpstreamError::AccessDenied { code, .. } if code == "SomethingNew"
        ));
        assert_eq!(
            classify_unparsed(401, b"<html>no</html>", false),
            UpstreamError::AccessDenied {
                code: "HTTP401".into(),
                message: "HTTP status 401".into()
            }
        );
        let throttled = xml.replace("InvalidClientTokenId", "Throttling");
        assert!(classify_unparsed(400, throttled.as_bytes(), false).is_transient());
        assert!(classify_unparsed(503, b"", false).is_transient());
        assert!(matches!(
            classify_unparsed(400, b"garbage", false),
            UpstreamError::Other { .. }
        ));
    }

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
            SecretArn::parse("arn:aws:secretsmanager:us-east-1:123456789012:secret:db-AbC123")
                .unwrap();
        let partial =
            SecretArn::parse("arn:aws:secretsmanager:us-east-1:123456789012:secret:db").unwrap();
        let read = |asked: &SecretArn, arn: Option<&str>| {
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
    fn a_parameter_answer_must_name_the_parameter_asked_for() {
        let asked =
            SecretArn::parse("arn:aws:ssm:us-east-1:123456789012:parameter/app/db").unwrap();
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

    #[test]
    fn values_over_aws_limit_are_refused() {
        let own = "arn:aws:secretsmanager:us-east-1:123456789012:secret:db-AbC123";
        let asked = SecretArn::parse(own).unwrap();
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
        let arn = |t: &str| SecretArn::parse(t).unwrap();
        let asked = [
            arn("arn:aws:secretsmanager:us-east-1:123456789012:secret:a"),
            arn("arn:aws:secretsmanager:us-east-1:123456789012:secret:b-XyZ789"),
        ];
        let found = |answered: &str| asked_for(&asked, answered).map(SecretArn::as_str);
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

    #[tokio::test(start_paused = true)]
    async fn deadline_turns_into_timeout() {
        let slow = async {
            tokio::time::sleep(Duration::from_secs(60)).await;
            Ok::<_, UpstreamError>(())
        };
        assert_eq!(
            with_deadline(Duration::from_secs(5), slow).await,
            Err(UpstreamError::Timeout)
        );
    }
}
