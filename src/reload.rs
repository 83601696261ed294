//! SIGHUP: re-read the config file, compare it by value with the one in
//! effect, and apply what changed at once: resources, tokens, cache
//! settings, the log level, the rendered files, and the AWS settings (new
//! credentials and clients; the next AWS call is signed with the new
//! identity). Only the listeners and connection limits need a restart, and
//! the log says so.

use std::sync::Arc;
use std::time::Duration;

use tokio::task::{JoinHandle, JoinSet};

use crate::aws::AwsSettings;
use crate::config::{Config, ConfigError};
use crate::credentials::probe_credentials;
use crate::metrics::Metrics;
use crate::read::{Reader, Snapshot};
use crate::render::Render;
use crate::roles::RoleSettings;
use crate::upstream::Upstream;

/// How long a reload may take to read its files (and resolve the names in
/// them) before it is abandoned and the running config stays in effect:
/// 10 s, far more than local files need; only a hung file system (a dead
/// NFS server) or resolver takes longer.
const READ_TIMEOUT: Duration = Duration::from_secs(10);

/// Why a reload read no new config.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ReadError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error("reading the config took longer than {}; abandoned (a hung file system?)", humantime::format_duration(*.0))]
    TimedOut(Duration),
    #[error("an earlier reload's read has not finished yet (a hung file system?)")]
    StillReading,
    #[error("reading the config failed: {0}")]
    Failed(tokio::task::JoinError),
}

/// A blocking read on a blocking thread, given `timeout` to finish. A read
/// that does not is left to its thread and kept in `pending`: until it
/// ends, later reads are refused at once, so that a hung file system holds
/// one thread, not one per SIGHUP.
async fn read_within<T: Send + 'static>(
    pending: &mut Option<JoinHandle<T>>,
    timeout: Duration,
    read: impl FnOnce() -> T + Send + 'static,
) -> Result<T, ReadError> {
    if pending.as_ref().is_some_and(|task| !task.is_finished()) {
        return Err(ReadError::StillReading);
    }
    *pending = None;
    let mut task = tokio::task::spawn_blocking(read);
    match tokio::time::timeout(timeout, &mut task).await {
        Ok(done) => done.map_err(ReadError::Failed),
        Err(_) => {
            *pending = Some(task);
            Err(ReadError::TimedOut(timeout))
        }
    }
}

/// Applies reloads, one at a time.
pub(crate) struct Reloader {
    /// What requests read: its snapshot is replaced, its cache retuned.
    reader: Reader,
    metrics: Arc<Metrics>,
    /// Its clients are replaced when the AWS settings change.
    upstream: Upstream,
    /// The config in effect, to tell what changed.
    applied: Config,
    /// The probe of the newest credentials; an older one is stopped, and all
    /// of them when the reloader is dropped.
    probes: JoinSet<()>,
    /// The read of an abandoned reload, while it has not finished.
    pending: Option<JoinHandle<Result<Config, ConfigError>>>,
    /// The rendered files' keeper, given each reload's `render` entries.
    render: Option<Render>,
}

impl Reloader {
    pub(crate) fn new(
        reader: Reader,
        metrics: Arc<Metrics>,
        upstream: Upstream,
        applied: Config,
    ) -> Reloader {
        Reloader {
            reader,
            metrics,
            upstream,
            applied,
            probes: JoinSet::new(),
            pending: None,
            render: None,
        }
    }

    /// Gives each reload's `render` entries to `render`.
    pub(crate) fn with_render(mut self, render: Render) -> Reloader {
        self.render = Some(render);
        self
    }

    pub(crate) async fn reload(&mut self) {
        let applied = self.applied.clone();
        let read = read_within(&mut self.pending, READ_TIMEOUT, move || applied.reread()).await;
        match read.and_then(|read| Ok(read?)) {
            Ok(new) => self.apply(new).await,
            Err(e) => {
                self.metrics.reloads.with_label_values(&["error"]).inc();
                log::error!("reload refused, the running config stays in effect: {e}");
            }
        }
    }

    /// Applies `new`, read by a reload or made once the caller's account
    /// is learnt ([`crate::account`]).
    pub(crate) async fn apply(&mut self, new: Config) {
        let needs_restart = restart_only_changes(&self.applied, &new);
        if !needs_restart.is_empty() {
            log::warn!(
                "{} changed; that takes effect only after a restart",
                needs_restart.join(", ")
            );
        }
        let aws = AwsSettings::of(&new);
        let aws_changed = aws != AwsSettings::of(&self.applied);
        if aws_changed {
            let (sdk, credentials) = aws.build(self.metrics.clone()).await;
            self.reader
                .roles
                .apply(RoleSettings::new(&new, sdk.clone(), aws.endpoint()), true);
            self.upstream.replace(sdk, aws.endpoint());
            self.probes.abort_all();
            self.probes.spawn(probe_credentials(
                credentials,
                self.reader.credentials_ready.clone(),
            ));
        }
        let old = &self.applied.aws.resources;
        let added: Vec<_> = new
            .aws
            .resources
            .iter()
            .filter(|(n, a)| old.get(n.as_str()).map(|(_, o)| o) != Some(a))
            .map(|(_, a)| a.clone())
            .collect();
        let removed = old
            .iter()
            .filter(|(n, _)| new.aws.resources.get(n.as_str()).is_none())
            .count();
        self.reader.current.store(Arc::new(Snapshot::of(&new)));
        self.reader.cache.set_settings(new.cache.clone());
        if !aws_changed {
            let sdk = self.upstream.sdk();
            self.reader
                .roles
                .apply(RoleSettings::new(&new, sdk, aws.endpoint()), false);
        }
        let keep = new
            .aws
            .resources
            .iter()
            .map(|(_, arn)| arn.as_str())
            .collect();
        self.reader.cache.retain(&keep);
        if std::env::var_os("RUST_LOG").is_none() {
            log::set_max_level(new.log_level);
        }
        // After the snapshot: the files are rendered from the new resources.
        if let Some(render) = &self.render {
            render.apply(&new.render);
        }
        if new.cache.prefetch && !added.is_empty() {
            let serving = self.reader.serving.clone();
            self.reader
                .cache
                .prefetch_after(added.clone(), async move { serving.opened().await });
        }
        for warning in &new.warnings {
            log::warn!("{warning}");
        }
        self.metrics.reloads.with_label_values(&["ok"]).inc();
        log::info!(
            "reloaded {}: {} resource(s) ({} new or changed, {} removed), {} client token(s){}",
            new.source.display(),
            new.aws.resources.len(),
            added.len(),
            removed,
            new.auth.len(),
            if aws_changed {
                "; new AWS credentials and clients"
            } else {
                ""
            }
        );
        self.applied = new;
    }
}

/// Settings a reload cannot apply to a running process.
fn restart_only_changes(old: &Config, new: &Config) -> Vec<&'static str> {
    let mut changed = Vec::new();
    let (o, n) = (&old.service, &new.service);
    if (&o.tcp, &o.uds) != (&n.tcp, &n.uds) {
        changed.push("the listeners (service.tcp, service.uds)");
    }
    if (
        o.max_connections,
        o.over_limit,
        o.request_timeout,
        o.shutdown_timeout,
    ) != (
        n.max_connections,
        n.over_limit,
        n.request_timeout,
        n.shutdown_timeout,
    ) {
        changed.push(
            "connection limits (service.max-connections, over-limit, request-timeout, shutdown-timeout)",
        );
    }
    if o.workers != n.workers {
        changed.push("service.workers");
    }
    if old.aws.max_concurrent_calls != new.aws.max_concurrent_calls {
        changed.push("secret-manager.aws.max-concurrent-calls");
    }
    if old.aws.events != new.aws.events {
        changed.push("secret-manager.aws.events");
    }
    // The plan runs once, at start.
    if old.prefetch != new.prefetch {
        changed.push("prefetch");
    }
    changed
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::mpsc;

    #[tokio::test]
    async fn a_read_that_hangs_is_abandoned_and_holds_one_thread() {
        let timeout = Duration::from_millis(50);
        let mut pending = None;
        let (release, hang) = mpsc::channel::<()>();
        let hung = read_within(&mut pending, timeout, move || hang.recv().is_ok()).await;
        assert!(matches!(hung, Err(ReadError::TimedOut(t)) if t == timeout));
        assert_eq!(
            hung.unwrap_err().to_string(),
            "reading the config took longer than 50ms; abandoned (a hung file system?)"
        );
        // While it hangs, later reads are refused at once, without a thread.
        // Reads meant to finish get a loose bound: a loaded machine may be
        // slow to start a blocking thread.
        let loose = Duration::from_secs(30);
        let refused = read_within(&mut pending, loose, || true).await;
        assert!(matches!(refused, Err(ReadError::StillReading)));
        release.send(()).unwrap();
        let task = pending.as_mut().unwrap();
        assert!(task.await.unwrap());
        assert!(!read_within(&mut pending, loose, || false).await.unwrap());
        assert!(pending.is_none());
    }
}
