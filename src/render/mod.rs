//! `render:`: files kept written with secrets, for programs that read
//! their secrets from files (nginx's certificate and key, an Aerospike
//! feature-key file, a `.env`).
//!
//! One task keeps every file. It reads through the one read path
//! ([`Reader`]: gate, admission, cache), so a rendered resource counts as
//! read and is refreshed ahead like any other, with no HTTP reader. It
//! wakes on the cache's change signal ([`crate::cache::Cache::changes`]:
//! a refresh, a rotation event, a forced refresh), on a reload (SIGHUP),
//! and every [`POLL`]; renders each file in memory and writes it only when
//! its bytes would change ([`write`](mod@write)), then runs its `on-change`
//! ([`command`]). A failure (AWS, a missing key, a template, a refused
//! path) leaves the file as it was, is logged once and counted
//! (`secret_agent_render_failures_total`), and is retried with backoff.
//!
//! - [`template`]: minijinja, strict undefined, `secret("<name>")`;
//! - [`write`](mod@write): the safe, atomic write;
//! - [`command`]: `on-change`, one run at a time per file.

pub(crate) mod command;
pub(crate) mod template;
pub(crate) mod write;

use std::collections::HashMap;
use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use tokio::sync::watch;
use tokio::time::{Instant, MissedTickBehavior};
use zeroize::Zeroizing;

use crate::backoff::Backoff;
use crate::config::{RenderFile, RenderSource};
use crate::domain::{ResourceName, Secret, Version};
use crate::metrics::{Metrics, RenderFailure};
use crate::read::{Reader, Snapshot};

use self::command::OnChange;
use self::write::Current;

/// How often every file is rendered again in memory: each read keeps its
/// resources marked as read (so refreshed ahead) and is a cache hit, with
/// nothing to await.
pub(crate) const POLL: Duration = Duration::from_secs(1);
/// After a change signal, how long to wait for the others of the same
/// refresh round, so that they make one write and one `on-change` run.
const SETTLE: Duration = Duration::from_millis(200);
/// Retries of a failing file, from 1 s doubling to 30 s (sooner on a
/// change signal).
const RETRY: Backoff = Backoff::new(Duration::from_secs(1), Duration::from_secs(30));

/// How the files are doing, for `/readyz`.
#[derive(Debug, Default)]
pub(crate) struct RenderStatus {
    /// Configured files.
    files: AtomicUsize,
    /// Of those, the ones not written (nor found equal on disk) yet.
    unwritten: AtomicUsize,
}

impl RenderStatus {
    /// `(not yet written, configured)`.
    pub(crate) fn pending(&self) -> (usize, usize) {
        (
            self.unwritten.load(Ordering::Relaxed),
            self.files.load(Ordering::Relaxed),
        )
    }
}

/// The handle the reloader gives new `render` entries to.
#[derive(Clone)]
pub(crate) struct Render {
    files: Arc<watch::Sender<Arc<Vec<RenderFile>>>>,
    pub(crate) status: Arc<RenderStatus>,
}

impl Render {
    /// The handle, and the task that keeps `files` written (to be spawned
    /// by its owner; it runs until dropped).
    pub(crate) fn start(
        reader: Reader,
        files: Vec<RenderFile>,
        metrics: Arc<Metrics>,
    ) -> (Render, impl Future<Output = ()> + Send + 'static) {
        let status = Arc::new(RenderStatus::default());
        let (sender, receiver) = watch::channel(Arc::new(files));
        let pending = sender.borrow().len();
        status.files.store(pending, Ordering::Relaxed);
        status.unwritten.store(pending, Ordering::Relaxed);
        let task = Keeper {
            reader,
            metrics,
            status: Arc::clone(&status),
            states: Vec::new(),
        }
        .run(receiver);
        (
            Render {
                files: Arc::new(sender),
                status,
            },
            task,
        )
    }

    /// Applies the entries of a reloaded config: new and changed ones are
    /// written, removed ones no longer kept (their files stay), and every
    /// file is compared with the disk again (and rewritten if it differs).
    pub(crate) fn apply(&self, files: &[RenderFile]) {
        self.files.send_replace(Arc::new(files.to_vec()));
    }
}

/// Why a file is not as it should be; the message names no secret.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Failure {
    reason: RenderFailure,
    message: String,
}

impl Failure {
    fn new(reason: RenderFailure, message: impl Into<String>) -> Failure {
        Failure {
            reason,
            message: message.into(),
        }
    }
}

/// One file's state.
struct FileState {
    file: RenderFile,
    /// Written, or found equal on disk, at least once.
    written: bool,
    /// The bytes the file holds, as far as the agent knows; `None` until
    /// compared with the disk (at start, after a reload).
    known: Option<Zeroizing<Vec<u8>>>,
    /// The failure last logged, so that it is logged once.
    failing: Option<Failure>,
    /// Failed attempts in a row, and when to try again.
    failures: u64,
    retry_at: Option<Instant>,
    on_change: Option<OnChange>,
}

impl FileState {
    fn new(file: RenderFile, metrics: &Arc<Metrics>) -> FileState {
        let on_change = file.on_change.clone().map(|argv| {
            OnChange::start(
                file.path.clone(),
                argv,
                file.on_change_timeout,
                Arc::clone(metrics),
            )
        });
        FileState {
            file,
            written: false,
            known: None,
            failing: None,
            failures: 0,
            retry_at: None,
            on_change,
        }
    }
}

/// The task's state.
struct Keeper {
    reader: Reader,
    metrics: Arc<Metrics>,
    status: Arc<RenderStatus>,
    states: Vec<FileState>,
}

impl Keeper {
    async fn run(mut self, mut files: watch::Receiver<Arc<Vec<RenderFile>>>) {
        // In Lambda mode (-l) nothing is read before serving starts.
        self.reader.serving.opened().await;
        let mut changes = self.reader.cache.changes();
        changes.borrow_and_update();
        let first = Arc::clone(&files.borrow_and_update());
        self.replace(&first);
        if !first.is_empty() {
            log::info!("render: keeping {} file(s) written", first.len());
        }
        let mut tick = tokio::time::interval(POLL);
        tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
        tick.tick().await;
        let mut forced = true;
        loop {
            self.round(forced).await;
            forced = false;
            tokio::select! {
                _ = tick.tick() => {}
                Ok(()) = changes.changed() => {
                    // The rest of the round's changes come with it.
                    tokio::time::sleep(SETTLE).await;
                    changes.borrow_and_update();
                    forced = true;
                }
                Ok(()) = files.changed() => {
                    let new = Arc::clone(&files.borrow_and_update());
                    self.replace(&new);
                    forced = true;
                }
            }
        }
    }

    /// Takes the entries of a (re)loaded config: an unchanged entry keeps
    /// its state but is compared with the disk again.
    fn replace(&mut self, files: &[RenderFile]) {
        let mut old = std::mem::take(&mut self.states);
        for file in files {
            let state = match old.iter().position(|s| s.file == *file) {
                Some(i) => {
                    let mut state = old.swap_remove(i);
                    state.known = None;
                    state.retry_at = None;
                    state
                }
                None => FileState::new(file.clone(), &self.metrics),
            };
            self.states.push(state);
        }
        self.publish();
    }

    fn publish(&self) {
        let unwritten = self.states.iter().filter(|s| !s.written).count();
        self.status
            .files
            .store(self.states.len(), Ordering::Relaxed);
        self.status.unwritten.store(unwritten, Ordering::Relaxed);
    }

    /// Brings every file up to date; `forced` ignores the retry backoff.
    async fn round(&mut self, forced: bool) {
        let snapshot = self.reader.current.load_full();
        let now = Instant::now();
        for i in 0..self.states.len() {
            let state = &mut self.states[i];
            if !forced && state.retry_at.is_some_and(|at| at > now) {
                continue;
            }
            let outcome = match produce(&self.reader, &snapshot, &state.file.source).await {
                Ok(bytes) => keep(state, bytes, &self.metrics).await,
                Err(failure) => Err(failure),
            };
            let state = &mut self.states[i];
            match outcome {
                Ok(()) => {
                    if state.failing.take().is_some() {
                        log::info!("render {}: up to date again", state.file.path.display());
                    }
                    state.failures = 0;
                    state.retry_at = None;
                }
                Err(failure) => {
                    if state.failing.as_ref() != Some(&failure) {
                        self.metrics.render_failure(failure.reason);
                        log::warn!(
                            "render {}: {}; the file is left as it was",
                            state.file.path.display(),
                            failure.message
                        );
                        state.failing = Some(failure);
                    }
                    state.failures += 1;
                    state.retry_at = Some(Instant::now() + RETRY.delay(state.failures));
                }
            }
        }
        self.publish();
    }
}

/// Writes `bytes` to the state's file if they differ from what it holds,
/// then runs its `on-change`.
async fn keep(
    state: &mut FileState,
    bytes: Zeroizing<Vec<u8>>,
    metrics: &Metrics,
) -> Result<(), Failure> {
    if state.known.as_ref().is_some_and(|known| **known == *bytes) {
        state.written = true;
        return Ok(());
    }
    let path = state.file.path.clone();
    let mode = state.file.mode;
    let check_disk = state.known.is_none();
    // File I/O on a blocking thread: a slow disk does not hold up the runtime.
    let blocking = tokio::task::spawn_blocking(move || {
        if check_disk && write::compare(&path, &bytes)? == Current::Same {
            return Ok((bytes, false));
        }
        write::replace(&path, &bytes, mode).map(|()| (bytes, true))
    })
    .await;
    let (bytes, wrote) = match blocking {
        Ok(Ok(done)) => done,
        Ok(Err(e)) => return Err(Failure::new(RenderFailure::Write, e.to_string())),
        Err(e) => return Err(Failure::new(RenderFailure::Write, e.to_string())),
    };
    state.known = Some(bytes);
    state.written = true;
    if wrote {
        metrics.render_write();
        log::info!("render {}: written", state.file.path.display());
        if let Some(on_change) = &state.on_change {
            on_change.changed();
        }
    }
    Ok(())
}

/// The bytes a file should hold now.
async fn produce(
    reader: &Reader,
    snapshot: &Snapshot,
    source: &RenderSource,
) -> Result<Zeroizing<Vec<u8>>, Failure> {
    match source {
        RenderSource::Resource { name, key: None } => {
            let secret = read(reader, snapshot, name).await?;
            Ok(Zeroizing::new(secret.value.to_vec()))
        }
        RenderSource::Resource {
            name,
            key: Some(key),
        } => {
            let secret = read(reader, snapshot, name).await?;
            let (value, _) = secret
                .key(key)
                .map_err(|e| Failure::new(RenderFailure::Template, format!("{name}: {e}")))?;
            Ok(Zeroizing::new(value.to_vec()))
        }
        RenderSource::Template { text, names } => {
            let mut values = HashMap::with_capacity(names.len());
            for name in names {
                values.insert(name.to_string(), read(reader, snapshot, name).await?);
            }
            template::render(text, &values)
                .map_err(|e| Failure::new(RenderFailure::Template, format!("template: {e}")))
        }
    }
}

/// The current value of `name` through the read path: the cache's fresh
/// value at once, else a read that may wait for AWS.
async fn read(
    reader: &Reader,
    snapshot: &Snapshot,
    name: &ResourceName,
) -> Result<Arc<Secret>, Failure> {
    let Some(found) = snapshot.resources.lookup(name.as_str()) else {
        return Err(Failure::new(
            RenderFailure::Template,
            format!("{name} is not a configured resource"),
        ));
    };
    if let Some(secret) = reader.fresh(&found, &Version::Current, Arc::clone) {
        return Ok(secret);
    }
    match reader.read(&found, &Version::Current, false).await {
        Ok((secret, _)) => Ok(secret),
        Err(e) => Err(Failure::new(
            RenderFailure::Upstream,
            format!("reading {name} failed ({})", e.code()),
        )),
    }
}
