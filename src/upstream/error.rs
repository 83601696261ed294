//! Why a call to AWS failed: the [`UpstreamError`] taxonomy, and every
//! mapping of the SDK's errors (and AWS's codes) onto it.

use std::error::Error as _;

use aws_credential_types::provider::error::CredentialsError;
use aws_sdk_secretsmanager::config::http::HttpResponse;
use aws_sdk_secretsmanager::error::{ProvideErrorMetadata, SdkError};

use crate::domain::Version;
use crate::text::chain_text;

/// Why a fetch failed. Messages come from AWS or the SDK and never carry
/// secret material.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum UpstreamError {
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
pub(crate) enum BadAnswer {
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

impl UpstreamError {
    /// A stable snake_case name of the kind of failure, for metrics and codes.
    pub(crate) fn kind(&self) -> &'static str {
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
    pub(crate) fn is_transient(&self) -> bool {
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
    pub(crate) fn is_not_found(&self) -> bool {
        matches!(
            self,
            UpstreamError::SecretNotFound(_)
                | UpstreamError::VersionNotFound(_)
                | UpstreamError::InvalidParameter(_)
        )
    }

    /// This error as a read of `version` reports it. AWS answers a version
    /// id with a stage that version does not carry as an invalid request;
    /// to the agent's own API, that version does not exist. Not applied to
    /// what the cache keeps: the AWS agent's API answers AWS's own code, and
    /// an invalid request is not remembered as not found.
    pub(crate) fn for_version(self, version: &Version) -> UpstreamError {
        match self {
            UpstreamError::InvalidRequest(message)
                if matches!(version, Version::IdAndStage { .. }) =>
            {
                UpstreamError::VersionNotFound(message)
            }
            err => err,
        }
    }
}

/// The one place SDK errors become [`UpstreamError`]s, for a call that
/// asked for `version`.
pub(super) fn classify<E>(err: SdkError<E, HttpResponse>, version: &Version) -> UpstreamError
where
    E: ProvideErrorMetadata + std::error::Error + 'static,
{
    match classify_sdk(err, version != &Version::Current) {
        // A label the parameter does not have is ParameterNotFound too (a
        // missing version number has a code of its own): the version is
        // what is missing, as far as the answer tells.
        UpstreamError::SecretNotFound(message) if matches!(version, Version::Label(_)) => {
            UpstreamError::VersionNotFound(message)
        }
        err => err,
    }
}

/// A service's error code and message as an [`UpstreamError`]: from an
/// error answer, or from one secret's entry in a BatchGetSecretValue answer.
/// Secrets Manager's and SSM's codes do not overlap.
pub(super) fn classify_service(
    code: Option<&str>,
    message: &str,
    version_asked: bool,
) -> UpstreamError {
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

/// An SDK error as an [`UpstreamError`], before [`classify`]'s look at the version.
fn classify_sdk<E>(err: SdkError<E, HttpResponse>, version_asked: bool) -> UpstreamError
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

#[cfg(test)]
mod tests {
    use super::*;
    use aws_sdk_secretsmanager::error::ErrorMetadata;
    use aws_smithy_types::body::SdkBody;

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

    /// An error answer of GetParameter with `code`, as the SDK returns it.
    fn ssm_error(
        code: &str,
    ) -> SdkError<aws_sdk_ssm::operation::get_parameter::GetParameterError, HttpResponse> {
        let meta = ErrorMetadata::builder().code(code).message("m").build();
        let err = aws_sdk_ssm::operation::get_parameter::GetParameterError::generic(meta);
        let raw = HttpResponse::new(400.try_into().unwrap(), SdkBody::empty());
        SdkError::service_error(err, raw)
    }

    #[test]
    fn a_label_the_parameter_lacks_is_a_version_not_found() {
        let label = Version::Label("prod".into());
        assert_eq!(
            classify(ssm_error("ParameterNotFound"), &label),
            UpstreamError::VersionNotFound("m".into())
        );
        assert_eq!(
            classify(ssm_error("ParameterNotFound"), &Version::Number(3)),
            UpstreamError::SecretNotFound("m".into())
        );
        assert_eq!(
            classify(ssm_error("ParameterNotFound"), &Version::Current),
            UpstreamError::SecretNotFound("m".into())
        );
    }

    #[test]
    fn an_id_with_a_stage_it_lacks_is_a_version_not_found_for_the_agent_api() {
        let pair = Version::IdAndStage {
            id: "v1".into(),
            stage: "AWSPREVIOUS".into(),
        };
        let refused = || UpstreamError::InvalidRequest("not associated".into());
        assert_eq!(
            refused().for_version(&pair),
            UpstreamError::VersionNotFound("not associated".into())
        );
        for other in [
            Version::Current,
            Version::Id("v1".into()),
            Version::Stage("AWSPREVIOUS".into()),
        ] {
            assert_eq!(refused().for_version(&other), refused(), "{other:?}");
        }
        // Other failures of the pair stay what they are.
        assert_eq!(
            UpstreamError::Timeout.for_version(&pair),
            UpstreamError::Timeout
        );
    }
}
