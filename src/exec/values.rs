//! The values `exec` hands its program, read through the one read path
//! ([`Reader`]) and kept fresh: [`Values::changed`] is the one place a
//! change is noticed.

use std::time::Duration;

use bytes::Bytes;
use futures_util::future::join_all;

use crate::domain::{KeyError, Version};
use crate::read::{ReadError, Reader};

use super::spec::EnvVar;

/// How often the values are read again while the program runs. Each read
/// marks the cached entry as read, so the cache refreshes it ahead of its
/// expiry as it does for an HTTP client's; a read between refreshes is a
/// cache hit and costs no AWS call.
pub(crate) const POLL: Duration = Duration::from_secs(1);

/// Why one variable has no value. Names the resource and key as given on
/// the command line (never the value).
#[derive(Debug, thiserror::Error)]
pub(crate) enum ValueError {
    #[error(
        "no resource `{0}` is configured (secret-manager.aws.resources), nor one under a pattern"
    )]
    NotConfigured(String),
    /// A name under a pattern that AWS does not have.
    #[error("`{0}` is under a configured pattern, but AWS has no such secret or parameter")]
    NotInAws(String),
    #[error("{resource}: {error}")]
    Key { resource: String, error: KeyError },
    #[error("{0}: ({code}) {1}", code = .1.code())]
    Read(String, ReadError),
    #[error("{0}: the value holds a NUL byte, which an environment variable cannot")]
    Nul(String),
}

/// One variable that could not be read: `NAME=RESOURCE[/KEY]: why`.
#[derive(Debug, thiserror::Error)]
#[error("{var}: {error}")]
pub(crate) struct Missing {
    pub(crate) var: String,
    pub(crate) error: ValueError,
}

/// The variables and their current values.
pub(crate) struct Values {
    reader: Reader,
    vars: Vec<EnvVar>,
    /// `vars[i]`'s value, as the program was last given it.
    current: Vec<Bytes>,
    /// Ticks every [`POLL`] for [`Values::changed`].
    poll: tokio::time::Interval,
    /// The cache's signal that a stored value changed; `None` once the
    /// cache is gone (the poll goes on alone).
    changes: Option<tokio::sync::watch::Receiver<u64>>,
}

impl Values {
    /// Reads every variable's value, at once; every one that cannot be read
    /// is named in the error.
    pub(crate) async fn fetch(reader: Reader, vars: Vec<EnvVar>) -> Result<Values, Vec<Missing>> {
        let reads = join_all(vars.iter().map(|var| read(&reader, var))).await;
        let mut current = Vec::with_capacity(vars.len());
        let mut missing = Vec::new();
        for (var, read) in vars.iter().zip(reads) {
            match read {
                Ok(value) => current.push(value),
                Err(error) => missing.push(Missing {
                    var: var.to_string(),
                    error,
                }),
            }
        }
        if !missing.is_empty() {
            return Err(missing);
        }
        let mut poll = tokio::time::interval(POLL);
        poll.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut changes = reader.cache.changes();
        changes.mark_unchanged();
        Ok(Values {
            reader,
            vars,
            current,
            poll,
            changes: Some(changes),
        })
    }

    /// `(NAME, value)` of each variable, in the order given.
    pub(crate) fn env(&self) -> impl Iterator<Item = (&str, &Bytes)> {
        self.vars.iter().map(EnvVar::name).zip(&self.current)
    }

    /// Returns once one value or more has changed, with the names of those
    /// that did; [`Values::env`] then holds the new values. Values that
    /// change in one round give one return, so one action.
    ///
    /// It reads every value each [`POLL`] (which keeps them refreshed,
    /// as read values are) and whenever the cache signals a changed value
    /// (a refresh, a rotation event), so a change is seen at once. A read
    /// that fails keeps the value the program has (the read path logs the
    /// failure).
    pub(crate) async fn changed(&mut self) -> Vec<String> {
        loop {
            match &mut self.changes {
                Some(changes) => tokio::select! {
                    _ = self.poll.tick() => {}
                    signalled = changes.changed() => {
                        if signalled.is_err() {
                            self.changes = None;
                        }
                    }
                },
                None => {
                    self.poll.tick().await;
                }
            }
            let reads = join_all(self.vars.iter().map(|var| read(&self.reader, var))).await;
            let mut changed = Vec::new();
            for ((var, current), read) in self.vars.iter().zip(&mut self.current).zip(reads) {
                if let Ok(value) = read
                    && value != *current
                {
                    *current = value;
                    changed.push(var.name().to_owned());
                }
            }
            if !changed.is_empty() {
                return changed;
            }
        }
    }
}

/// The value of one variable: the resource's, or one key's of it.
async fn read(reader: &Reader, var: &EnvVar) -> Result<Bytes, ValueError> {
    let snapshot = reader.current.load_full();
    let path = var.path();
    let resolved = snapshot
        .resources
        .resolve(path)
        .ok_or_else(|| ValueError::NotConfigured(path.to_owned()))?;
    let resource = resolved.found.name.as_str().to_owned();
    let (secret, _) = match reader.read(&resolved.found, &Version::Current, false).await {
        Ok(read) => read,
        Err(ReadError::NotConfigured(_)) => return Err(ValueError::NotInAws(resource)),
        Err(e) => return Err(ValueError::Read(resource, e)),
    };
    let value = match resolved.key {
        None => secret.value.clone(),
        Some(key) => {
            secret
                .key(key)
                .map_err(|error| ValueError::Key {
                    resource: resource.clone(),
                    error,
                })?
                .0
        }
    };
    if value.contains(&0) {
        return Err(ValueError::Nul(resource));
    }
    Ok(value)
}
