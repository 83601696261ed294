//! The IAM roles clients read as (`roleArn` on the AWS agent's routes).
//! Each role has its own credentials, assumed over the agent's own and
//! refreshed before they expire, its own Secrets Manager clients and its
//! own [`Cache`]: no value read as one role is ever served as another, or
//! as the agent itself. At most `max-roles` are kept; one more drops the
//! least recently used (its cache, clients and tasks with it), so a role
//! in use is never refused for want of room.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use arc_swap::ArcSwap;
use aws_config::SdkConfig;
use aws_credential_types::provider::ProvideCredentials;
use tokio::sync::OnceCell;

use crate::cache::{Cache, CacheMetrics};
use crate::config::{CacheConfig, Config, CredentialSource};
use crate::credentials::{self, CredentialMetrics};
use crate::domain::RoleArn;
use crate::upstream::{Endpoints, Upstream};

/// Why a role cannot be read as.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum RoleError {
    /// STS refused the AssumeRole (or could not be reached); the text is
    /// the SDK's, which names no secret.
    #[error("cannot assume role {role}: {message}")]
    Assume { role: RoleArn, message: String },
}

/// What a role's clients and cache are built from; replaced on reload.
pub(crate) struct RoleSettings {
    /// The agent's SDK config: its credentials sign the AssumeRole calls.
    sdk: SdkConfig,
    endpoints: Endpoints,
    cache: CacheConfig,
    max_concurrent_calls: usize,
    max_roles: usize,
    /// The assume-role layer's `sts-endpoint` and `sts-region`, if the
    /// agent has one: roles are assumed through the same STS.
    sts_endpoint: Option<String>,
    sts_region: Option<String>,
}

impl RoleSettings {
    pub(crate) fn new(config: &Config, sdk: SdkConfig, endpoints: Endpoints) -> RoleSettings {
        let (sts_endpoint, sts_region) = match &config.aws.credentials {
            CredentialSource::AssumeRole { role, .. } => {
                (role.sts_endpoint.clone(), role.sts_region.clone())
            }
            _ => (None, None),
        };
        RoleSettings {
            sdk,
            endpoints,
            cache: config.cache.clone(),
            max_concurrent_calls: config.aws.max_concurrent_calls,
            max_roles: config.aws.max_roles,
            sts_endpoint,
            sts_region,
        }
    }
}

/// A cheap-to-clone handle; clones share the roles.
#[derive(Clone)]
pub(crate) struct Roles {
    inner: Arc<Inner>,
}

struct Inner {
    settings: ArcSwap<RoleSettings>,
    /// At most `max_roles` entries: a linear scan over a few dozen is
    /// cheaper than any map. Never held across an await.
    entries: Mutex<Vec<Entry>>,
    /// Logical clock for least-recently-used eviction.
    clock: AtomicU64,
    cache_metrics: Arc<dyn CacheMetrics>,
    credential_metrics: Arc<dyn CredentialMetrics>,
}

/// What one role reads with: its clients and its cache.
#[derive(Clone)]
pub(crate) struct RoleClients {
    pub(crate) cache: Cache,
    pub(crate) upstream: Upstream,
}

struct Entry {
    role: RoleArn,
    /// Set once the role's credentials were first obtained; concurrent
    /// first reads wait for the one AssumeRole.
    cache: Arc<OnceCell<RoleClients>>,
    used: u64,
}

impl Roles {
    pub(crate) fn new<M>(settings: RoleSettings, metrics: Arc<M>) -> Roles
    where
        M: CacheMetrics + CredentialMetrics,
    {
        Roles {
            inner: Arc::new(Inner {
                settings: ArcSwap::from_pointee(settings),
                entries: Mutex::new(Vec::new()),
                clock: AtomicU64::new(0),
                cache_metrics: metrics.clone(),
                credential_metrics: metrics,
            }),
        }
    }

    /// Applies a reload: with new AWS settings (`clients_changed`: other
    /// credentials, endpoints, timeouts) every role starts over; else the
    /// roles keep their caches, with the new cache settings, and the
    /// least recently used beyond a lower `max-roles` are dropped.
    pub(crate) fn apply(&self, settings: RoleSettings, clients_changed: bool) {
        let cache = settings.cache.clone();
        let max = settings.max_roles;
        self.inner.settings.store(Arc::new(settings));
        let dropped: Vec<Entry> = {
            let mut entries = self.inner.lock();
            if clients_changed {
                std::mem::take(&mut *entries)
            } else {
                for entry in entries.iter() {
                    if let Some(clients) = entry.cache.get() {
                        clients.cache.set_settings(cache.clone());
                    }
                }
                let mut dropped = Vec::new();
                while entries.len() > max {
                    dropped.push(remove_oldest(&mut entries));
                }
                dropped
            }
        };
        // Dropped here, outside the lock: that stops their tasks.
        drop(dropped);
    }

    /// The cache of `role`, its credentials assumed on first use.
    pub(crate) async fn cache(&self, role: &RoleArn) -> Result<Cache, RoleError> {
        Ok(self.clients(role).await?.cache)
    }

    /// The clients and cache of `role`, its credentials assumed on first use.
    pub(crate) async fn clients(&self, role: &RoleArn) -> Result<RoleClients, RoleError> {
        let cell = self.inner.entry(role);
        let built = cell.get_or_try_init(|| self.inner.build(role)).await;
        match built {
            Ok(clients) => Ok(clients.clone()),
            Err(e) => {
                // A role that failed holds no room; the next read tries again.
                let mut entries = self.inner.lock();
                entries.retain(|e| !(Arc::ptr_eq(&e.cache, &cell) && e.cache.get().is_none()));
                Err(e)
            }
        }
    }
}

impl Inner {
    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<Entry>> {
        self.entries.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The cell of `role`, made (dropping the least recently used beyond
    /// `max-roles`) when it has none.
    fn entry(&self, role: &RoleArn) -> Arc<OnceCell<RoleClients>> {
        let used = self.clock.fetch_add(1, Ordering::Relaxed);
        let max = self.settings.load().max_roles.max(1);
        let mut dropped = None;
        let cell = {
            let mut entries = self.lock();
            if let Some(entry) = entries.iter_mut().find(|e| &e.role == role) {
                entry.used = used;
                entry.cache.clone()
            } else {
                if entries.len() >= max {
                    let oldest = remove_oldest(&mut entries);
                    log::info!(
                        "role {} dropped: more than max-roles ({max}) roles read as",
                        oldest.role
                    );
                    dropped = Some(oldest);
                }
                let cell = Arc::new(OnceCell::new());
                entries.push(Entry {
                    role: role.clone(),
                    cache: cell.clone(),
                    used,
                });
                cell
            }
        };
        drop(dropped);
        cell
    }

    /// Assumes `role` over the agent's credentials, once, to learn that it
    /// can; then its clients and cache.
    async fn build(&self, role: &RoleArn) -> Result<RoleClients, RoleError> {
        let settings = self.settings.load_full();
        let Some(base) = settings.sdk.credentials_provider() else {
            return Err(RoleError::Assume {
                role: role.clone(),
                message: "the agent has no credentials to assume it with".into(),
            });
        };
        let provider = credentials::assumed(
            role.as_str(),
            &settings.sdk,
            base,
            settings.sts_endpoint.clone(),
            settings.sts_region.clone(),
            self.credential_metrics.clone(),
        )
        .await;
        if let Err(e) = provider.provide_credentials().await {
            let message = credentials::describe_error(&e);
            log::warn!("cannot assume role {role}: {message}");
            return Err(RoleError::Assume {
                role: role.clone(),
                message,
            });
        }
        log::info!("reading as role {role}");
        let sdk = settings
            .sdk
            .to_builder()
            .credentials_provider(provider)
            .build();
        let upstream = Upstream::new(sdk, settings.endpoints.clone());
        let cache = Cache::new(
            Arc::new(upstream.clone()),
            self.cache_metrics.clone(),
            settings.cache.clone(),
            settings.max_concurrent_calls,
        );
        Ok(RoleClients { cache, upstream })
    }
}

/// Removes and returns the least recently used entry of `entries` (not empty).
fn remove_oldest(entries: &mut Vec<Entry>) -> Entry {
    let oldest = (0..entries.len())
        .min_by_key(|&i| entries[i].used)
        .unwrap_or(0);
    entries.swap_remove(oldest)
}
