//! The caller's own account, for resource ARNs that say `caller` (and for
//! the AWS agent's "any secret its identity may read"): learnt once at
//! start, from `AWS_ACCOUNT_ID` when set, else from STS GetCallerIdentity
//! signed by the agent's own credentials.
//!
//! With a `credentials-file` that holds no working keys yet, the agent
//! starts anyway, as the AWS agent does: its AWS calls fail as without
//! credentials ([`Waiting`]) until the file holds keys STS accepts; the
//! account is then learnt and the config applied with it.

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use anyhow::Context as _;
use aws_config::SdkConfig;
use aws_credential_types::provider::error::CredentialsError;
use aws_credential_types::provider::{ProvideCredentials, SharedCredentialsProvider, future};

use crate::aws::AwsSettings;
use crate::config::{CallerAccount, Config};
use crate::credentials::CredentialMetrics;

/// How often, while the account is not known, the credentials are looked
/// at again (for a credentials file: one `stat`); STS is asked when they
/// are new, and with the same ones every [`SAME_KEYS_RETRY`].
const RETRY: Duration = Duration::from_secs(1);

/// STS refused these keys, or could not be reached: asked again this often.
const SAME_KEYS_RETRY: Duration = Duration::from_secs(30);

/// `config` with its `caller` ARNs filled, when it has any: the account is
/// `AWS_ACCOUNT_ID` when set, else (unless `check`, which calls nothing)
/// asked of STS. When STS cannot answer and the keys come from a
/// credentials file, the config is returned as it is, its account still
/// pending (see [`Waiting`]).
pub async fn resolve_caller_account(config: Config, check: bool) -> anyhow::Result<Config> {
    if config.caller_account != CallerAccount::Pending {
        return Ok(config);
    }
    match std::env::var("AWS_ACCOUNT_ID") {
        Ok(account) if is_account_id(&account) => return Ok(config.with_caller_account(&account)?),
        Ok(other) if !other.is_empty() => {
            anyhow::bail!("AWS_ACCOUNT_ID `{other}` is not a 12-digit AWS account id")
        }
        _ => {}
    }
    if check {
        return Ok(config);
    }
    let (sdk, _) = AwsSettings::of(&config).build(Arc::new(Uncounted)).await;
    match caller_account(&sdk).await {
        Ok(account) => Ok(config.with_caller_account(&account)?),
        Err(_) if config.aws.credentials.file().is_some() => Ok(config),
        Err(e) => Err(e).context(
            "cannot learn the AWS account from STS GetCallerIdentity (set AWS_ACCOUNT_ID, or name the account in the resource ARNs)",
        ),
    }
}

/// The account of the identity `sdk` signs with, from STS GetCallerIdentity.
async fn caller_account(sdk: &SdkConfig) -> anyhow::Result<String> {
    let identity = aws_sdk_sts::Client::new(sdk)
        .get_caller_identity()
        .send()
        .await
        .map_err(|e| {
            use std::error::Error as _;
            anyhow::anyhow!(crate::text::chain_text(e.to_string(), e.source()))
        })?;
    let account = identity.account().unwrap_or_default().to_owned();
    if !is_account_id(&account) {
        anyhow::bail!("STS GetCallerIdentity answered no account id");
    }
    Ok(account)
}

/// While the account is not known: the agent's AWS calls get no
/// credentials, so none goes out with the placeholder account in its ARN.
pub(crate) struct Waiting {
    inner: SharedCredentialsProvider,
    known: Arc<AtomicBool>,
}

impl fmt::Debug for Waiting {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Waiting")
    }
}

impl ProvideCredentials for Waiting {
    fn provide_credentials<'a>(&'a self) -> future::ProvideCredentials<'a>
    where
        Self: 'a,
    {
        if self.known.load(Ordering::Acquire) {
            return self.inner.provide_credentials();
        }
        future::ProvideCredentials::ready(Err(CredentialsError::not_loaded(
            "the AWS account (`caller`) is not known yet: STS GetCallerIdentity has not accepted the credentials",
        )))
    }
}

/// The pending account: [`AccountGate::sdk`] is what the agent's calls
/// sign with until [`AccountGate::learn`] has learnt it and the config with
/// it is applied ([`AccountGate::open`]).
pub(crate) struct AccountGate {
    known: Arc<AtomicBool>,
}

impl AccountGate {
    pub(crate) fn new() -> AccountGate {
        AccountGate {
            known: Arc::new(AtomicBool::new(false)),
        }
    }

    /// `sdk`, its credentials held back until [`AccountGate::open`].
    pub(crate) fn sdk(&self, sdk: &SdkConfig) -> SdkConfig {
        let Some(inner) = sdk.credentials_provider() else {
            return sdk.clone();
        };
        sdk.to_builder()
            .credentials_provider(SharedCredentialsProvider::new(Waiting {
                inner,
                known: Arc::clone(&self.known),
            }))
            .build()
    }

    pub(crate) fn open(&self) {
        self.known.store(true, Ordering::Release);
    }

    /// Waits until the credentials of `sdk` (not held back) are accepted by
    /// STS, then returns `config` with the account filled in. Asks STS
    /// only when the credentials are new; says why not, once per reason.
    pub(crate) async fn learn(sdk: SdkConfig, config: Config) -> Config {
        let provider = sdk.credentials_provider();
        let mut tried: Option<(aws_credential_types::Credentials, tokio::time::Instant)> = None;
        let mut said = String::new();
        loop {
            let creds = match &provider {
                Some(p) => p.provide_credentials().await.ok(),
                None => None,
            };
            let due = |c: &aws_credential_types::Credentials| match &tried {
                Some((last, at)) => last != c || at.elapsed() >= SAME_KEYS_RETRY,
                None => true,
            };
            if let Some(fresh) = creds.filter(due) {
                tried = Some((fresh, tokio::time::Instant::now()));
                let learnt = match caller_account(&sdk).await {
                    Ok(account) => {
                        let config = config.clone();
                        let filled = tokio::task::spawn_blocking(move || {
                            config.with_caller_account(&account).map(|c| (c, account))
                        })
                        .await;
                        match filled {
                            Ok(Ok(done)) => Ok(done),
                            Ok(Err(e)) => Err(e.to_string()),
                            Err(e) => Err(e.to_string()),
                        }
                    }
                    Err(e) => Err(format!("{e:#}")),
                };
                match learnt {
                    Ok((config, account)) => {
                        log::info!("account {account} (from STS GetCallerIdentity)");
                        return config;
                    }
                    Err(e) if e != said => {
                        log::warn!("the AWS account (`caller`) is not known yet: {e}");
                        said = e;
                    }
                    Err(_) => {}
                }
            }
            tokio::time::sleep(RETRY).await;
        }
    }
}

/// The credentials built to ask STS before the agent's metrics exist:
/// counted nowhere.
struct Uncounted;

impl CredentialMetrics for Uncounted {
    fn credential_refresh(&self) {}
}

pub(crate) fn is_account_id(text: &str) -> bool {
    text.len() == 12 && text.bytes().all(|b| b.is_ascii_digit())
}
