//! The `prefetch` plan, run once serving starts: secrets named one by one
//! and secrets found by tag key (ListSecrets, paged), each group read as
//! the agent or as a role into that one's cache, at most `limit` a cache,
//! after a random delay of up to `jitter`. Only secrets `resources` maps
//! are fetched; anything else is named in one warning and left out.

use std::time::Duration;

use crate::config::PrefetchPlan;
use crate::domain::{Arn, RoleArn};
use crate::read::Reader;
use crate::resources::Resources;
use crate::upstream::Upstream;

/// Secrets a ListSecrets page asks for (AWS allows 1 to 100).
const PAGE_SIZE: i32 = 20;

/// Runs `plan` once `reader` serves; the agent's own reads go through
/// `upstream`. Ends when every group's prefetch is started.
pub(crate) async fn run(plan: PrefetchPlan, reader: Reader, upstream: Upstream) {
    reader.serving.opened().await;
    if !plan.jitter.is_zero() {
        let delay = plan.jitter.mul_f64(fastrand::f64());
        tokio::time::sleep(delay).await;
    }
    for role in plan.roles() {
        let (cache, upstream) = match &role {
            None => (reader.cache.clone(), upstream.clone()),
            Some(role) => match reader.roles.clients(role).await {
                Ok(clients) => (clients.cache, clients.upstream),
                Err(e) => {
                    log::warn!("prefetch: {e}");
                    continue;
                }
            },
        };
        let resources = reader.current.load().resources.clone();
        let arns = group(&plan, role.as_ref(), &resources, &upstream).await;
        log::info!(
            "prefetch: {} secret(s) as {}",
            arns.len(),
            role.as_ref()
                .map_or_else(|| "the agent".to_owned(), |r| format!("role {r}"))
        );
        // The cache fetches them in batches, in the background.
        drop(cache.prefetch_after(arns, std::future::ready(())));
    }
}

/// The ARNs of `role`'s group (its names, then its tags' secrets), each
/// once, at most `plan.limit`.
async fn group(
    plan: &PrefetchPlan,
    role: Option<&RoleArn>,
    resources: &Resources,
    upstream: &Upstream,
) -> Vec<Arn> {
    let mut arns: Vec<Arn> = Vec::new();
    let mut unmapped: Vec<String> = Vec::new();
    let mut add = |arns: &mut Vec<Arn>, id: &str| match mapped(resources, id) {
        Some(arn) if !arns.contains(&arn) => arns.push(arn),
        Some(_) => {}
        None => unmapped.push(crate::text::echo(id)),
    };
    for (id, _) in plan.secrets.iter().filter(|(_, r)| r.as_ref() == role) {
        add(&mut arns, id);
    }
    let regions = regions(resources);
    for (key, _) in plan.tags.iter().filter(|(_, r)| r.as_ref() == role) {
        for region in &regions {
            let left = plan.limit.saturating_sub(arns.len());
            if left == 0 {
                break;
            }
            let listed = crate::upstream::with_deadline(
                Duration::from_secs(60),
                upstream.list_tagged(region, key, PAGE_SIZE, plan.limit),
            )
            .await;
            match listed {
                Ok(listed) => listed.iter().for_each(|arn| add(&mut arns, arn)),
                Err(e) => {
                    log::warn!("prefetch: cannot list the secrets tagged {key} in {region}: {e}")
                }
            }
        }
    }
    if arns.len() > plan.limit {
        log::warn!(
            "prefetch: {} secret(s) beyond prefetch.limit ({}) are not prefetched",
            arns.len() - plan.limit,
            plan.limit
        );
        arns.truncate(plan.limit);
    }
    if !unmapped.is_empty() {
        log::warn!(
            "prefetch: {} secret(s) no configured resource maps are left out: {}",
            unmapped.len(),
            unmapped.join(", ")
        );
    }
    arns
}

/// The ARN `resources` maps `id` (a name or an ARN) to, if a secret.
fn mapped(resources: &Resources, id: &str) -> Option<Arn> {
    let arn = if let Some(found) = resources.lookup(id) {
        found.arn.into_owned()
    } else if let Some((arn, _)) = resources.by_arn(id) {
        arn.clone()
    } else {
        resources.by_arn_pattern(id)?.arn.into_owned()
    };
    (!arn.is_parameter()).then_some(arn)
}

/// The regions of the configured secrets and patterns, each once.
fn regions(resources: &Resources) -> Vec<String> {
    let mut regions: Vec<String> = Vec::new();
    let arns = resources.iter().map(|(_, arn)| arn.region());
    for region in arns.chain(resources.patterns().iter().map(|p| p.region())) {
        if !regions.iter().any(|r| r == region) {
            regions.push(region.to_owned());
        }
    }
    regions
}
