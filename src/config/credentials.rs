//! Where the agent's AWS credentials come from, as configured: plain
//! settings, and what they say the agent will try. [`crate::credentials`]
//! turns them into a provider.

use std::path::PathBuf;
use std::time::Duration;

use secrecy::{ExposeSecret, SecretString};

/// Where the agent's AWS credentials come from, as configured: the one type
/// that says what the agent will try (`--check`, the start-up log,
/// `/readyz`) and that [`crate::credentials`] builds the provider from, so
/// the two never disagree.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum CredentialSource {
    /// Keys written in the config file.
    Static(StaticKeys),
    /// The default chain, tried in [`ChainSource::ALL`] order; `profile`
    /// picks the shared file's profile (else `AWS_PROFILE`, else `default`).
    Chain { profile: Option<String> },
    /// Keys read from one file in the shared credentials format
    /// (`credentials-file`), re-read when it changes; nothing else is tried.
    File(CredentialsFile),
    /// Temporary credentials from STS AssumeRole, signed with `base`'s.
    AssumeRole {
        role: AssumeRole,
        base: Box<CredentialSource>,
    },
}

/// Access keys from the config file. `Debug` never shows the secret parts.
#[derive(Debug, Clone)]
pub(crate) struct StaticKeys {
    pub(crate) access_key_id: String,
    pub(crate) secret_access_key: SecretString,
    pub(crate) session_token: Option<SecretString>,
}

impl PartialEq for StaticKeys {
    fn eq(&self, other: &Self) -> bool {
        self.access_key_id == other.access_key_id
            && self.secret_access_key.expose_secret() == other.secret_access_key.expose_secret()
            && same_secret(&self.session_token, &other.session_token)
    }
}

/// `credentials-file`: the one file the keys come from, as a rotation
/// system (IAM Roles Anywhere, on-premises delivery) writes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct CredentialsFile {
    pub(crate) path: PathBuf,
    /// The profile read; default `AWS_PROFILE`, else `default`.
    pub(crate) profile: Option<String>,
    /// Refuse keys without a session token (long-term IAM user keys), as
    /// the Workload Credentials Provider does; off by default, as the AWS
    /// agent has it.
    pub(crate) require_session_token: bool,
}

impl CredentialsFile {
    /// The file in words, as `--check` and the credentials' source name it.
    pub(crate) fn label(&self) -> String {
        format!(
            "credentials file {} (profile {}{})",
            self.path.display(),
            profile_name(self.profile.as_deref()),
            if self.require_session_token {
                ", session token required"
            } else {
                ""
            }
        )
    }
}

/// The STS assume-role layer.
#[derive(Debug, Clone)]
pub(crate) struct AssumeRole {
    pub(crate) role_arn: String,
    pub(crate) external_id: Option<SecretString>,
    pub(crate) session_name: Option<String>,
    /// Lifetime asked of STS; STS's default (1h) when absent.
    pub(crate) duration: Option<Duration>,
    /// Where AssumeRole calls go (`sts-endpoint`); the regional STS endpoint when absent.
    pub(crate) sts_endpoint: Option<String>,
    /// Region for STS calls (`sts-region`); `region` when absent.
    pub(crate) sts_region: Option<String>,
}

impl PartialEq for AssumeRole {
    fn eq(&self, other: &Self) -> bool {
        (
            &self.role_arn,
            &self.session_name,
            self.duration,
            &self.sts_endpoint,
            &self.sts_region,
        ) == (
            &other.role_arn,
            &other.session_name,
            other.duration,
            &other.sts_endpoint,
            &other.sts_region,
        ) && same_secret(&self.external_id, &other.external_id)
    }
}

/// Compares secret values, for telling whether a reload changed them.
fn same_secret(a: &Option<SecretString>, b: &Option<SecretString>) -> bool {
    match (a, b) {
        (Some(a), Some(b)) => a.expose_secret() == b.expose_secret(),
        (None, None) => true,
        _ => false,
    }
}

impl CredentialSource {
    /// What the agent tries, in words, never the keys.
    pub(crate) fn describe(&self) -> String {
        match self {
            CredentialSource::Static(_) => STATIC_KEYS.to_owned(),
            CredentialSource::Chain { profile } => {
                let sources: Vec<String> = ChainSource::ALL
                    .iter()
                    .map(|s| s.label(profile.as_deref()))
                    .collect();
                format!("default chain: {}", sources.join(", then "))
            }
            CredentialSource::File(file) => {
                format!("{}, re-read when it changes", file.label())
            }
            CredentialSource::AssumeRole { role, base } => {
                format!("assume role {} over {}", role.role_arn, base.describe())
            }
        }
    }

    /// The credentials file, when the keys (or the keys an assumed role is
    /// signed with) come from one.
    pub(crate) fn file(&self) -> Option<&CredentialsFile> {
        match self {
            CredentialSource::File(file) => Some(file),
            CredentialSource::AssumeRole { base, .. } => base.file(),
            _ => None,
        }
    }
}

/// How static keys name themselves: in `--check` and as the source of the credentials.
pub(crate) const STATIC_KEYS: &str = "static keys from config";

/// The sources of the default chain: the Aerospike Secret Agent's lookup
/// order (environment, shared file, instance role) with, before IMDS as in
/// aws-config's own chain, web identity and container credentials.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ChainSource {
    Environment,
    SharedFile,
    WebIdentity,
    Container,
    InstanceRole,
}

impl ChainSource {
    /// In the order they are tried.
    pub(crate) const ALL: [ChainSource; 5] = [
        ChainSource::Environment,
        ChainSource::SharedFile,
        ChainSource::WebIdentity,
        ChainSource::Container,
        ChainSource::InstanceRole,
    ];

    /// The source in words, as `--check` and "credentials could not be
    /// found; tried ..." name it.
    pub(crate) fn label(self, profile: Option<&str>) -> String {
        match self {
            ChainSource::Environment => {
                "environment variables (AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY)".into()
            }
            ChainSource::SharedFile => format!(
                "shared credentials file {} (profile {})",
                shared_credentials_path().display(),
                profile_name(profile)
            ),
            ChainSource::WebIdentity => {
                "web identity token (AWS_WEB_IDENTITY_TOKEN_FILE, AWS_ROLE_ARN)".into()
            }
            ChainSource::Container => {
                "container credentials (AWS_CONTAINER_CREDENTIALS_*_URI)".into()
            }
            ChainSource::InstanceRole => "EC2 instance metadata (IMDSv2)".into(),
        }
    }
}

/// The profile the shared file is read for.
fn profile_name(configured: Option<&str>) -> String {
    configured
        .map(str::to_owned)
        .or_else(|| std::env::var("AWS_PROFILE").ok())
        .unwrap_or_else(|| "default".into())
}

/// The shared credentials file: `$AWS_SHARED_CREDENTIALS_FILE`, else
/// `~/.aws/credentials`.
pub(crate) fn shared_credentials_path() -> PathBuf {
    aws_file("AWS_SHARED_CREDENTIALS_FILE", "credentials")
}

/// The shared config file: `$AWS_CONFIG_FILE`, else `~/.aws/config`.
pub(crate) fn shared_config_path() -> PathBuf {
    aws_file("AWS_CONFIG_FILE", "config")
}

/// `$VAR`, else `~/.aws/<name>`.
fn aws_file(var: &str, name: &str) -> PathBuf {
    if let Some(path) = std::env::var_os(var) {
        return PathBuf::from(path);
    }
    let home = std::env::var_os("HOME").unwrap_or_default();
    PathBuf::from(home).join(".aws").join(name)
}
