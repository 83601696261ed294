//! Temporary credentials kept until shortly before they expire, and kept
//! through a failed refresh while they are still valid.

use std::fmt;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use aws_credential_types::Credentials;
use aws_credential_types::provider::{self, ProvideCredentials, future};

use super::{CredentialMetrics, describe_error};

/// Temporary credentials are replaced this long before they expire (or at
/// three quarters of their lifetime, when that is shorter).
const REFRESH_BUFFER: Duration = Duration::from_secs(300);

/// Keeps credentials that expire until shortly before they do; credentials
/// without an expiry (environment, shared file) are looked up on every call,
/// which is cheap and picks up changes at once.
///
/// Ours rather than the SDK's `IdentityCache`: that one drops credentials
/// when a refresh fails, where the agent keeps serving with credentials that
/// have not expired yet, and it cannot let the shared file's changes through
/// at once.
pub(super) struct Refreshing<P> {
    inner: P,
    /// Counts the temporary credentials fetched.
    metrics: Arc<dyn CredentialMetrics>,
    /// The last temporary credentials. An async mutex: one refresh at a time.
    current: tokio::sync::Mutex<Option<(Credentials, SystemTime)>>,
}

impl<P> fmt::Debug for Refreshing<P> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Refreshing")
    }
}

impl<P: ProvideCredentials> Refreshing<P> {
    pub(super) fn new(inner: P, metrics: Arc<dyn CredentialMetrics>) -> Self {
        Refreshing {
            inner,
            metrics,
            current: tokio::sync::Mutex::new(None),
        }
    }

    async fn credentials(&self) -> provider::Result {
        let mut current = self.current.lock().await;
        let now = SystemTime::now();
        if let Some((creds, refresh_at)) = &*current
            && now < *refresh_at
        {
            return Ok(creds.clone());
        }
        match self.inner.provide_credentials().await {
            Ok(creds) => {
                let Some(expiry) = creds.expiry() else {
                    *current = None;
                    return Ok(creds);
                };
                self.metrics.credential_refresh();
                let lifetime = expiry.duration_since(now).unwrap_or_default();
                let refresh_at = expiry - REFRESH_BUFFER.min(lifetime / 4);
                *current = Some((creds.clone(), refresh_at));
                Ok(creds)
            }
            // A failed refresh keeps credentials that have not expired yet.
            Err(err) => match &*current {
                Some((creds, _)) if creds.expiry().is_some_and(|e| now < e) => {
                    log::warn!(
                        "credential refresh failed, using the current ones until they expire: {}",
                        describe_error(&err)
                    );
                    Ok(creds.clone())
                }
                _ => Err(err),
            },
        }
    }
}

impl<P: ProvideCredentials> ProvideCredentials for Refreshing<P> {
    fn provide_credentials<'a>(&'a self) -> future::ProvideCredentials<'a>
    where
        Self: 'a,
    {
        future::ProvideCredentials::new(self.credentials())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use aws_credential_types::provider::error::CredentialsError;
    use std::sync::atomic::{AtomicUsize, Ordering};

    /// Hands out credentials that expire `lifetime` from now, numbered.
    #[derive(Debug)]
    struct Expiring {
        lifetime: Duration,
        calls: AtomicUsize,
        fail: std::sync::atomic::AtomicBool,
    }

    impl ProvideCredentials for Expiring {
        fn provide_credentials<'a>(&'a self) -> future::ProvideCredentials<'a>
        where
            Self: 'a,
        {
            let n = self.calls.fetch_add(1, Ordering::SeqCst);
            if self.fail.load(Ordering::SeqCst) {
                return future::ProvideCredentials::ready(Err(CredentialsError::provider_error(
                    "down",
                )));
            }
            future::ProvideCredentials::ready(Ok(Credentials::new(
                format!("AKID{n}"),
                "secret",
                Some("token".into()),
                Some(SystemTime::now() + self.lifetime),
                "test",
            )))
        }
    }

    fn expiring(lifetime: Duration) -> Expiring {
        Expiring {
            lifetime,
            calls: AtomicUsize::new(0),
            fail: false.into(),
        }
    }

    /// Counts the refreshes the cache reports.
    #[derive(Default)]
    struct Refreshes(AtomicUsize);

    impl CredentialMetrics for Refreshes {
        fn credential_refresh(&self) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }

    fn refreshing(lifetime: Duration) -> (Refreshing<Expiring>, Arc<Refreshes>) {
        let refreshes = Arc::new(Refreshes::default());
        let cache = Refreshing::new(expiring(lifetime), refreshes.clone());
        (cache, refreshes)
    }

    #[tokio::test]
    async fn temporary_credentials_are_reused_until_near_expiry() {
        let (cache, refreshes) = refreshing(Duration::from_secs(3600));
        let a = cache.credentials().await.unwrap();
        let b = cache.credentials().await.unwrap();
        assert_eq!(a.access_key_id(), b.access_key_id());
        assert_eq!(cache.inner.calls.load(Ordering::SeqCst), 1);
        assert_eq!(refreshes.0.load(Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn short_lived_credentials_refresh_before_expiry() {
        let (cache, refreshes) = refreshing(Duration::from_millis(400));
        let a = cache.credentials().await.unwrap();
        tokio::time::sleep(Duration::from_millis(320)).await;
        // Past three quarters of the lifetime, still before expiry: new keys.
        let b = cache.credentials().await.unwrap();
        assert_ne!(a.access_key_id(), b.access_key_id());
        assert!(b.expiry().unwrap() > SystemTime::now());
        assert_eq!(refreshes.0.load(Ordering::SeqCst), 2);
    }

    #[tokio::test]
    async fn failed_refresh_keeps_unexpired_credentials() {
        let (cache, _) = refreshing(Duration::from_millis(800));
        let a = cache.credentials().await.unwrap();
        cache.inner.fail.store(true, Ordering::SeqCst);
        tokio::time::sleep(Duration::from_millis(650)).await;
        assert_eq!(
            cache.credentials().await.unwrap().access_key_id(),
            a.access_key_id()
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert!(cache.credentials().await.is_err());
    }
}
