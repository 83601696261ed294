//! Resolving the credentials once, to say where they came from (the
//! start-up log line) and to tell readiness.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use aws_credential_types::provider::error::CredentialsError;
use aws_credential_types::provider::{ProvideCredentials, SharedCredentialsProvider};

use super::{AgentCredentials, Source, describe_error};
use crate::backoff::Backoff;
use crate::config::CredentialSource;

/// Why no credentials could be resolved: the provider's error and its
/// causes, in words (which sources were tried), never a key.
#[derive(Debug, thiserror::Error)]
#[error("{}", describe_error(.0))]
pub(crate) struct ProbeError(CredentialsError);

impl AgentCredentials {
    /// Resolves credentials once and says where they came from, without the
    /// keys, e.g. "assume role arn:... over environment keys": for the
    /// start-up log line.
    pub(crate) async fn probe(&self) -> Result<String, ProbeError> {
        match (&self.source, &self.base) {
            (CredentialSource::AssumeRole { role, .. }, Some(base)) => {
                let base = source_of(base).await?;
                self.provider
                    .provide_credentials()
                    .await
                    .map_err(ProbeError)?;
                Ok(format!("assume role {} over {base}", role.role_arn))
            }
            _ => source_of(&self.provider).await,
        }
    }
}

/// Where the credentials of `provider` come from, in words.
async fn source_of(provider: &SharedCredentialsProvider) -> Result<String, ProbeError> {
    let creds = provider.provide_credentials().await.map_err(ProbeError)?;
    Ok(creds
        .get_property::<Source>()
        .map_or_else(|| "an unnamed source".to_owned(), |s| s.0.clone()))
}

/// Waits between probes while no credentials resolve.
const PROBE_BACKOFF: Backoff = Backoff::new(Duration::from_secs(1), Duration::from_secs(30));

/// Resolves credentials once, for the start-up log line and readiness;
/// retried with backoff until it works.
pub(crate) async fn probe_credentials(credentials: AgentCredentials, ready: Arc<AtomicBool>) {
    let mut failures = 0;
    let mut warned = false;
    loop {
        match credentials.probe().await {
            Ok(found) => {
                log::info!("credentials: {found}");
                ready.store(true, Ordering::Relaxed);
                return;
            }
            Err(e) => {
                if !warned {
                    log::warn!("credentials: none yet ({e}); reads fail until some are available");
                    warned = true;
                }
                failures += 1;
                tokio::time::sleep(PROBE_BACKOFF.delay(failures)).await;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::StaticKeys;
    use crate::credentials::CredentialMetrics;
    use aws_config::SdkConfig;

    struct NoMetrics;
    impl CredentialMetrics for NoMetrics {
        fn credential_refresh(&self) {}
    }

    #[tokio::test]
    async fn static_keys_are_probed_as_such_and_make_the_agent_ready() {
        let source = CredentialSource::Static(StaticKeys {
            access_key_id: "AKIDEXAMPLE".into(),
            secret_access_key: "secret".into(),
            session_token: None,
        });
        let sdk = SdkConfig::builder().build();
        let credentials = AgentCredentials::build(&source, &sdk, Arc::new(NoMetrics)).await;
        assert_eq!(
            credentials.probe().await.unwrap(),
            "static keys from config"
        );
        let ready = Arc::new(AtomicBool::new(false));
        probe_credentials(credentials, ready.clone()).await;
        assert!(ready.load(Ordering::Relaxed));
    }

    #[tokio::test]
    async fn a_failed_probe_says_what_was_tried() {
        let err = ProbeError(CredentialsError::not_loaded(
            "credentials could not be found; tried first, then second",
        ));
        assert_eq!(
            err.to_string(),
            "credentials could not be found; tried first, then second"
        );
    }
}
