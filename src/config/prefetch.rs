//! `prefetch`: secrets fetched once serving starts, named one by one or
//! found by tag, each read as the agent or as a role: the AWS Workload
//! Credentials Provider's prefetch.

use std::time::Duration;

use crate::domain::RoleArn;

/// The validated `prefetch` section; empty without one.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct PrefetchPlan {
    /// `secrets`: names or ARNs as a client asks for them, resolved
    /// through `resources`.
    pub(crate) secrets: Vec<(String, Option<RoleArn>)>,
    /// `tags`: every secret that carries a tag with this key (ListSecrets),
    /// that `resources` maps.
    pub(crate) tags: Vec<(String, Option<RoleArn>)>,
    /// Up to this much random delay before it starts, so that a fleet
    /// started at once does not call AWS at once (`jitter`, default 0s).
    pub(crate) jitter: Duration,
    /// Most secrets prefetched into each cache (the agent's, each role's);
    /// default `cache.max-entries`.
    pub(crate) limit: usize,
}

/// Longest `prefetch.jitter`.
pub(crate) const MAX_JITTER: Duration = Duration::from_secs(600);
/// Most `prefetch.secrets` and `prefetch.tags` entries.
pub(crate) const MAX_ITEMS: usize = 1000;

impl PrefetchPlan {
    pub(crate) fn is_empty(&self) -> bool {
        self.secrets.is_empty() && self.tags.is_empty()
    }

    /// The roles it reads as, each once, `None` (the agent) among them.
    pub(crate) fn roles(&self) -> Vec<Option<RoleArn>> {
        let mut roles: Vec<Option<RoleArn>> = Vec::new();
        for (_, role) in self.secrets.iter().chain(&self.tags) {
            if !roles.contains(role) {
                roles.push(role.clone());
            }
        }
        roles
    }
}
