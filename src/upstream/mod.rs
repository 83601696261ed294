//! Calls to AWS Secrets Manager and Systems Manager Parameter Store: one
//! client per service and region, all signed with the same credentials, and
//! one decision on which failures are transient.
//!
//! - this file: the [`Upstream`] handle and its pool of clients;
//! - [`secretsmanager`]: the calls GetSecretValue and BatchGetSecretValue;
//! - [`ssm`]: the call GetParameter;
//! - [`answer`]: what every answer must be before it is served;
//! - [`error`]: [`UpstreamError`] and every mapping of the SDK's errors;
//!
//! Nothing outside this module sees the SDK's types.

use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use aws_config::SdkConfig;
use dashmap::DashMap;

use crate::domain::Arn;
use crate::domain::Secret;

mod answer;
mod error;
mod secretsmanager;
mod ssm;

use crate::domain::Version;
pub(crate) use error::{BadAnswer, UpstreamError};

/// Most secrets one BatchGetSecretValue call may name (AWS's limit).
pub(crate) const BATCH_LIMIT: usize = 20;

/// Each secret of a BatchGetSecretValue call with its own outcome.
pub(crate) type BatchAnswer = Vec<(Arn, Result<Secret, UpstreamError>)>;

/// Endpoint URLs that replace AWS's, for every region (a VPC endpoint, an
/// emulator). Without one, the SDK's own variables apply
/// (`AWS_ENDPOINT_URL_SECRETS_MANAGER`, `AWS_ENDPOINT_URL_SSM`, `AWS_ENDPOINT_URL`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Endpoints {
    /// `secret-manager.aws.endpoint`.
    pub secrets_manager: Option<String>,
    /// `secret-manager.aws.ssm-endpoint`.
    pub ssm: Option<String>,
}

/// Secrets Manager and SSM clients by region, created on first use. Cheap
/// to clone; a reload that changes the AWS settings replaces every client
/// at once ([`Upstream::replace`]).
#[derive(Clone)]
pub(crate) struct Upstream {
    inner: Arc<ArcSwap<Inner>>,
}

struct Inner {
    /// Shared settings: credentials, timeouts, retries, endpoint variables.
    sdk: SdkConfig,
    /// Applied to every region's client of its service.
    endpoints: Endpoints,
    secrets_manager: Pool<aws_sdk_secretsmanager::Client>,
    ssm: Pool<aws_sdk_ssm::Client>,
}

impl Inner {
    fn new(sdk: SdkConfig, endpoints: Endpoints) -> Inner {
        Inner {
            sdk,
            endpoints,
            secrets_manager: Pool::default(),
            ssm: Pool::default(),
        }
    }
}

/// A service whose clients the pool builds, one per region.
trait Service: Clone {
    /// The client of `region`: `sdk`'s credentials and settings, and
    /// `endpoint` in place of AWS's when set (else the SDK reads the
    /// service's `AWS_ENDPOINT_URL_*` variable).
    fn build(sdk: &SdkConfig, region: String, endpoint: Option<&str>) -> Self;

    /// The configured endpoint of this service.
    fn endpoint(endpoints: &Endpoints) -> Option<&str>;
}

/// One service's clients by region.
struct Pool<C> {
    clients: DashMap<String, C>,
}

impl<C> Default for Pool<C> {
    fn default() -> Self {
        Pool {
            clients: DashMap::new(),
        }
    }
}

impl<C: Service> Pool<C> {
    /// The client of `region`, built on first use.
    fn get(&self, sdk: &SdkConfig, endpoints: &Endpoints, region: &str) -> C {
        if let Some(client) = self.clients.get(region) {
            return client.clone();
        }
        let client = C::build(sdk, region.to_owned(), C::endpoint(endpoints));
        self.clients
            .entry(region.to_owned())
            .or_insert(client)
            .clone()
    }
}

impl Upstream {
    pub(crate) fn new(sdk: SdkConfig, endpoints: Endpoints) -> Upstream {
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

    /// The SDK config the clients are built from now.
    pub(crate) fn sdk(&self) -> SdkConfig {
        self.inner.load().sdk.clone()
    }

    fn secrets_manager(&self, region: &str) -> aws_sdk_secretsmanager::Client {
        let inner = self.inner.load();
        inner
            .secrets_manager
            .get(&inner.sdk, &inner.endpoints, region)
    }

    fn ssm(&self, region: &str) -> aws_sdk_ssm::Client {
        let inner = self.inner.load();
        inner.ssm.get(&inner.sdk, &inner.endpoints, region)
    }

    /// The value of `arn` at `version`: GetSecretValue for a secret,
    /// GetParameter (decrypted unless [`Version::Encrypted`]) for a parameter.
    pub(crate) async fn get_value(
        &self,
        arn: &Arn,
        version: &Version,
    ) -> Result<Secret, UpstreamError> {
        match (arn.is_parameter(), version) {
            (true, Version::Encrypted(version)) => self.get_parameter(arn, version, false).await,
            (true, version) => self.get_parameter(arn, version, true).await,
            (false, version) => self.get_secret_value(arn, version).await,
        }
    }
}

/// Deadline for one fetch, including the SDK's own retries.
pub(crate) async fn with_deadline<T>(
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
