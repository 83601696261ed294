//! Raw -> [`Config`]: every value checked and given its type, one file per
//! section. Pure: what it needs from the system (token files, environment
//! variables, DNS, file metadata) it asks of an [`Inputs`], which
//! [`super::load`] answers from the real system and tests answer from a table.
//!
//! - [`service`]: listeners and client limits, with [`tls`] and [`uds`];
//! - [`aws`]: `secret-manager.aws`: region, endpoints and call limits, with
//!   [`events`], [`resources`] and [`credentials`];
//! - [`cache`]: the cache's lifetimes and bounds;
//! - [`auth`]: client tokens, token headers, scopes and the protocol's grant;
//! - [`log`]: the log level;
//! - [`render`]: the files kept written with secrets.

mod auth;
mod aws;
mod cache;
mod credentials;
mod events;
mod log;
mod prefetch;
mod render;
mod resources;
mod service;
mod tls;
mod uds;

use std::io;
use std::net::SocketAddr;
use std::path::Path;

use super::raw::RawConfig;
use super::{CallerAccount, Config, ConfigError, Origin, TokenSource};

/// What validation needs from outside the file.
pub(crate) trait Inputs {
    /// The contents of a token file: a regular file of at most
    /// [`super::file::TOKEN_BYTES`].
    fn read_token(&self, path: &Path) -> io::Result<String>;
    /// An environment variable's value; `None` when unset (or not Unicode).
    fn var(&self, name: &str) -> Option<String>;
    /// The first address of a `host:port` that is not an IP address.
    fn resolve(&self, host_port: &str) -> Option<SocketAddr>;
    /// Fails when a TLS file is missing, is not a regular file, or is larger
    /// than [`super::file::PEM_BYTES`].
    fn metadata(&self, path: &Path) -> io::Result<()>;
    /// The permission bits of a file, when it can be read.
    fn mode(&self, path: &Path) -> Option<u32>;
}

/// A warning when permission bits `mode` let the group or others read the
/// file at `path`, which holds something secret (`why`); also for a
/// credentials file read again while the agent runs.
pub(crate) fn loose_mode(path: &Path, mode: u32, why: &str) -> Option<String> {
    (mode & 0o077 != 0).then(|| {
        format!(
            "{} is readable by group or others (mode {:04o}) and {why}; chmod 600 it",
            path.display(),
            mode & 0o777
        )
    })
}

/// Validates `raw`, read from `file` (named in messages and checked for its
/// permissions when it holds AWS secrets).
pub(super) fn config(
    raw: RawConfig,
    file: &Path,
    inputs: &dyn Inputs,
) -> Result<Config, ConfigError> {
    Validator { file, inputs }.config(raw)
}

/// The file being validated and where its outside inputs come from; each
/// section's file adds its methods.
struct Validator<'a> {
    file: &'a Path,
    inputs: &'a dyn Inputs,
}

impl Validator<'_> {
    fn invalid(&self, path: &str, message: impl Into<String>) -> ConfigError {
        ConfigError::Invalid {
            file: self.file.to_owned(),
            path: path.to_owned(),
            message: message.into(),
        }
    }

    /// A warning when `path` can be read by its group or others.
    fn loose_permissions(&self, path: &Path, why: &str) -> Option<String> {
        loose_mode(path, self.inputs.mode(path)?, why)
    }

    /// The sections in the order their errors are reported.
    fn config(&self, raw: RawConfig) -> Result<Config, ConfigError> {
        let service = self.service(raw.service)?;
        let aws = self.aws(raw.secret_manager.aws)?;
        let cache = self.cache(raw.cache)?;
        let auth = self.auth(raw.auth, &aws.resources)?;
        let mut warnings = Vec::new();
        if credentials::holds_secrets(&aws.credentials) {
            warnings.extend(self.loose_permissions(self.file, "it holds AWS keys"));
        }
        if let Some(file) = aws.credentials.file() {
            warnings.extend(self.loose_permissions(&file.path, "it holds AWS keys"));
        }
        for token in &auth.tokens {
            if let TokenSource::File(path) = &token.source {
                warnings.extend(self.loose_permissions(path, "it holds a client token"));
            }
        }
        let log_level = self.log_level(raw.log)?;
        let render = self.render(raw.render, &aws.resources)?;
        let prefetch = self.prefetch(raw.prefetch, &cache)?;
        Ok(Config {
            source: self.file.to_owned(),
            service,
            aws,
            cache,
            prefetch,
            auth: auth.tokens,
            protocol_scope: auth.protocol_scope,
            token_headers: auth.token_headers,
            log_level,
            render,
            warnings,
            origin: Origin::Yaml,
            caller_account: CallerAccount::Unused,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::tests::SAMPLE;
    use secrecy::ExposeSecret;

    /// Inputs from a table, for validation without a file system.
    #[derive(Default)]
    pub(super) struct Table {
        pub(super) files: std::collections::HashMap<&'static str, (&'static str, u32)>,
        pub(super) vars: std::collections::HashMap<&'static str, &'static str>,
        pub(super) hosts: std::collections::HashMap<&'static str, SocketAddr>,
    }

    impl Inputs for Table {
        fn read_token(&self, path: &Path) -> io::Result<String> {
            let path = path.to_str().unwrap_or_default();
            self.files
                .get(path)
                .map(|(text, _)| text.to_string())
                .ok_or_else(|| io::ErrorKind::NotFound.into())
        }
        fn var(&self, name: &str) -> Option<String> {
            self.vars.get(name).map(|v| v.to_string())
        }
        fn resolve(&self, host_port: &str) -> Option<SocketAddr> {
            self.hosts.get(host_port).copied()
        }
        fn metadata(&self, path: &Path) -> io::Result<()> {
            self.read_token(path).map(drop)
        }
        fn mode(&self, path: &Path) -> Option<u32> {
            self.files.get(path.to_str()?).map(|(_, mode)| *mode)
        }
    }

    impl Table {
        /// Only the environment variable `name`, set to `value`.
        pub(super) fn var(name: &'static str, value: &'static str) -> Table {
            Table {
                vars: [(name, value)].into(),
                ..Table::default()
            }
        }

        /// Only the file at `path`, holding `text`, mode 0600.
        pub(super) fn file(path: &'static str, text: &'static str) -> Table {
            Table {
                files: [(path, (text, 0o600))].into(),
                ..Table::default()
            }
        }
    }

    /// Parses and validates `yaml` (from `test.yaml`) with `inputs`.
    pub(super) fn validate(yaml: &str, inputs: &Table) -> Result<Config, ConfigError> {
        let file = Path::new("test.yaml");
        config(crate::config::load::parse(yaml, file)?, file, inputs)
    }

    /// [`validate`] with no files, variables or host names.
    pub(super) fn check(yaml: &str) -> Result<Config, ConfigError> {
        validate(yaml, &Table::default())
    }

    #[test]
    fn inputs_come_from_the_table() {
        let inputs = Table {
            files: [("/t/token", ("file-token\n", 0o644))].into(),
            vars: [("AGENT_TOKEN", "env-token")].into(),
            hosts: [("agent.local:2773", "10.0.0.7:2773".parse().unwrap())].into(),
        };
        let yaml = format!(
            "{}auth:\n  tokens:\n    - token-file: /t/token\n      resources: [\"*\"]\n    - token-env: AGENT_TOKEN\n      resources: [TestingSecret]\n",
            SAMPLE.replace("0.0.0.0:3005", "agent.local:2773")
        );
        let c = validate(&yaml, &inputs).unwrap();
        assert_eq!(
            c.service.tcp.unwrap().addr,
            "10.0.0.7:2773".parse().unwrap()
        );
        let values: Vec<&str> = c.auth.iter().map(|t| t.value.expose_secret()).collect();
        assert_eq!(values, ["file-token", "env-token"]);
        assert_eq!(
            c.warnings,
            [
                "/t/token is readable by group or others (mode 0644) and it holds a client token; chmod 600 it"
            ]
        );
        let err = validate(&yaml, &Table::default()).unwrap_err().to_string();
        assert!(
            err.starts_with(
                "test.yaml: service.tcp.endpoint: `agent.local:2773` is not an address"
            ),
            "{err}"
        );
    }
}
