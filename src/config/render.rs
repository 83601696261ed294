//! `render:`, validated: the files the agent keeps written with secrets.

use std::path::PathBuf;
use std::time::Duration;

use crate::domain::ResourceName;

/// Default permission bits of a rendered file.
pub(crate) const DEFAULT_RENDER_MODE: u32 = 0o600;
/// Default time `on-change` may run before it is killed.
pub(crate) const DEFAULT_ON_CHANGE_TIMEOUT: Duration = Duration::from_secs(30);

/// One file to keep written. Compared by value on reload: an entry that
/// did not change keeps its state (written, failing).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct RenderFile {
    /// Absolute; its directory must exist.
    pub(crate) path: PathBuf,
    pub(crate) source: RenderSource,
    /// Permission bits, never any for others.
    pub(crate) mode: u32,
    /// Run after the file changed: argv, the program an absolute path.
    pub(crate) on_change: Option<Vec<String>>,
    /// How long `on_change` may run before it is killed.
    pub(crate) on_change_timeout: Duration,
}

/// What a rendered file holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum RenderSource {
    /// A resource's value as is, or one key of its JSON object.
    Resource {
        name: ResourceName,
        key: Option<String>,
    },
    /// A template, and the resource names its `secret("...")` calls read.
    Template {
        text: String,
        names: Vec<ResourceName>,
    },
}

impl RenderFile {
    /// Its `--check` summary line, without a secret.
    pub(crate) fn describe(&self) -> String {
        let from = match &self.source {
            RenderSource::Resource { name, key: None } => format!("resource {name}"),
            RenderSource::Resource {
                name,
                key: Some(key),
            } => format!("key {key} of resource {name}"),
            RenderSource::Template { names, .. } => {
                let names: Vec<&str> = names.iter().map(|n| n.as_str()).collect();
                match names.as_slice() {
                    [] => "a template reading no secret".to_owned(),
                    names => format!("a template of {}", names.join(", ")),
                }
            }
        };
        let on_change = match &self.on_change {
            Some(argv) => format!(
                ", on-change {} (timeout {})",
                argv[0],
                humantime::format_duration(self.on_change_timeout)
            ),
            None => String::new(),
        };
        format!(
            "render: {} from {from}, mode {:04o}{on_change}",
            self.path.display(),
            self.mode
        )
    }
}
