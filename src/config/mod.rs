//! The YAML configuration, validated once into [`Config`].
//!
//! - [`raw`]: the serde structs that mirror the file (kebab-case keys,
//!   unknown keys rejected);
//! - [`validate`]: raw -> [`Config`], pure, one file per section;
//! - [`error`]: [`ConfigError`], which names the file, the key path and,
//!   where it is not a secret, the offending value, with suggestions;
//! - [`aws_agent`]: the AWS Secrets Manager Agent's TOML, as this YAML (and
//!   the AWS Workload Credentials Provider's nested form of it);
//! - [`credentials`]: where the AWS credentials come from, as configured;
//! - [`load`]: the I/O: the file, the nesting check, token files,
//!   environment variables, DNS and file modes;
//! - [`render`]: the files kept written with secrets (`render:`);
//! - [`file`](mod@file): how any file the agent is given is read: regular files only,
//!   bounded, never blocking on a FIFO or a device.

use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use log::LevelFilter;
use secrecy::SecretString;

use crate::resources::Resources;

use crate::domain::ResourceName;

mod aws_agent;
mod caller;
mod credentials;
mod error;
pub(crate) mod file;
mod load;
pub(crate) mod prefetch;
mod raw;
mod render;
mod summary;
mod validate;
mod yaml;

pub use aws_agent::{Conversion, ConversionError, TomlProblem, convert_aws_agent_config};
pub(crate) use caller::CallerAccount;
pub(crate) use credentials::{
    AssumeRole, ChainSource, CredentialSource, CredentialsFile, STATIC_KEYS, StaticKeys,
    shared_config_path, shared_credentials_path,
};
pub use error::ConfigError;
pub(crate) use prefetch::PrefetchPlan;
pub(crate) use render::{DEFAULT_ON_CHANGE_TIMEOUT, DEFAULT_RENDER_MODE, RenderFile, RenderSource};
pub(crate) use validate::loose_mode;

/// The text of a config file (this agent's YAML or the AWS agent's TOML):
/// a regular file of at most 1 MiB of UTF-8, byte order mark dropped.
pub fn read_config_file(path: &Path) -> Result<String, ConfigError> {
    load::read(path)
}

/// The AWS Secrets Manager Agent's default `ssrf_headers`: the token
/// headers accepted unless `auth.token-headers` says otherwise.
pub(crate) const DEFAULT_TOKEN_HEADERS: [&str; 2] =
    ["x-aws-parameters-secrets-token", "x-vault-token"];

/// Default time a cached secret is served without asking AWS again.
pub(crate) const DEFAULT_TTL: Duration = Duration::from_secs(300);

/// The validated configuration.
#[derive(Debug, Clone)]
pub struct Config {
    /// Where the configuration was read from, for messages.
    pub(crate) source: PathBuf,
    pub(crate) service: ServiceConfig,
    pub(crate) aws: AwsConfig,
    pub(crate) cache: CacheConfig,
    /// `prefetch`: what is fetched once serving starts.
    pub(crate) prefetch: PrefetchPlan,
    /// Client tokens; empty (no `auth` key) means open access.
    pub(crate) auth: Vec<ClientToken>,
    /// `auth.secret-agent-protocol.resources`: what the protocol's clients
    /// may read when `auth` is on; `None`: nothing.
    pub(crate) protocol_scope: Option<TokenScope>,
    /// `auth.token-headers`: headers that carry a client token besides
    /// `Authorization: Bearer`, lower case.
    pub(crate) token_headers: Vec<String>,
    /// `log.level`; `RUST_LOG` overrides it.
    pub log_level: LevelFilter,
    /// `render`: files kept written with secrets.
    pub(crate) render: Vec<RenderFile>,
    /// Problems worth a warning but not a refusal (e.g. file permissions).
    pub(crate) warnings: Vec<String>,
    /// Which kind of file it came from, so that a reload reads it the same way.
    pub(crate) origin: Origin,
    /// Whether resource ARNs name the caller's own account (`caller`), and
    /// which it is once learnt; a reload keeps it.
    pub(crate) caller_account: CallerAccount,
}

/// The kind of file a [`Config`] was read from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Origin {
    /// This agent's YAML.
    Yaml,
    /// The AWS Secrets Manager Agent's TOML (`file`), or its defaults when
    /// there is none, converted in memory; "any secret" is the caller's
    /// account (see [`Config::caller_account`]) in the region learnt at start.
    AwsAgent {
        file: Option<PathBuf>,
        region: String,
    },
}

/// The AWS Secrets Manager Agent's TOML, read once: its file, or its
/// defaults when there is none.
pub(crate) struct AwsAgentFile {
    file: Option<PathBuf>,
    text: String,
}

impl AwsAgentFile {
    pub(crate) fn read(file: Option<&Path>) -> Result<AwsAgentFile, ConfigError> {
        Ok(AwsAgentFile {
            file: file.map(Path::to_owned),
            text: match file {
                Some(path) => load::read(path)?,
                None => String::new(),
            },
        })
    }

    /// What messages call it.
    fn source(&self) -> PathBuf {
        self.file
            .clone()
            .unwrap_or_else(|| PathBuf::from(AWS_AGENT_DEFAULTS))
    }

    /// A conversion message as a [`ConfigError`] of this file.
    fn error(&self, message: String) -> ConfigError {
        ConfigError::Parse {
            message,
            file: self.source(),
            line: None,
            path: String::new(),
        }
    }

    /// The `region` the file sets, if any.
    pub(crate) fn region(&self) -> Result<Option<String>, ConfigError> {
        aws_agent::region(&self.text).map_err(|e| self.error(e.to_string()))
    }

    /// The configuration it stands for, serving any secret of the caller's
    /// account (`account` once known) in `region` (or the file's own
    /// region) as the AWS agent does.
    pub(crate) fn config(
        &self,
        account: Option<&str>,
        region: &str,
    ) -> Result<Config, ConfigError> {
        let source = self.source();
        let shown = source.display().to_string();
        let conversion =
            aws_agent::convert_aws_agent_config(&shown, &self.text, None, Some(region)).map_err(
                |e| {
                    // The ConfigError names the file itself.
                    self.error(match e {
                        ConversionError::File { problem, .. } => problem.to_string(),
                        account @ ConversionError::Account(_) => account.to_string(),
                    })
                },
            )?;
        let mut config = Config::from_yaml_for(&conversion.yaml, &source, account)?;
        // Started from the file, the agent does call STS (for the account).
        config.warnings.extend(
            conversion
                .notes
                .into_iter()
                .filter(|note| !note.starts_with("validate_credentials")),
        );
        config.origin = Origin::AwsAgent {
            file: self.file.clone(),
            region: region.to_owned(),
        };
        Ok(config)
    }
}

/// What `source` says when the AWS agent's defaults are used without a file.
pub(crate) const AWS_AGENT_DEFAULTS: &str = "(the AWS agent's defaults)";

/// Where the agent listens, and how it treats clients.
#[derive(Debug, Clone)]
pub(crate) struct ServiceConfig {
    pub(crate) tcp: Option<TcpConfig>,
    pub(crate) uds: Option<UdsConfig>,
    /// Most client connections open at once, over all listeners.
    pub(crate) max_connections: usize,
    /// `over-limit`: what connections beyond `max_connections` get.
    pub(crate) over_limit: OverLimit,
    /// A client must send its request headers within this time, and idle
    /// keep-alive connections are closed after it (slowloris guard).
    pub(crate) request_timeout: Duration,
    /// On SIGTERM, in-flight requests get this long to finish.
    pub(crate) shutdown_timeout: Duration,
    /// Threads that serve connections (actix-web workers); a connection
    /// stays on the worker that accepted it.
    pub(crate) workers: usize,
}

pub(crate) const DEFAULT_MAX_CONNECTIONS: usize = 1024;
/// Most `service.workers`.
pub(crate) const MAX_WORKERS: usize = 64;

/// The default `service.workers`: half the cores the process may run on,
/// at least one. A connection stays on the worker thread that accepted it,
/// so a worker that the scheduler preempts for a client on the same core
/// delays all of its connections by a time slice; with fewer workers than
/// cores, the clients the agent serves keep cores of their own (the
/// figures are in docs/performance.md).
pub(crate) fn default_workers() -> usize {
    std::thread::available_parallelism().map_or(1, |n| (n.get() / 2).clamp(1, MAX_WORKERS))
}

/// `service.over-limit`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum OverLimit {
    /// They wait, unaccepted, until a connection closes.
    Queue,
    /// They are accepted (up to [`OVER_LIMIT_HEADROOM`] more) and each
    /// request on them is answered `429` at once, as the AWS agent's
    /// `max_conn` does. Health checks get 2 more, as there.
    Refuse,
}

/// With `over-limit: refuse`, how many connections beyond `max-connections`
/// are accepted to be refused; beyond that they queue.
pub(crate) const OVER_LIMIT_HEADROOM: usize = 256;
pub(crate) const DEFAULT_REQUEST_TIMEOUT: Duration = Duration::from_secs(5);
pub(crate) const DEFAULT_SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(10);

/// `service.tcp`.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct TcpConfig {
    /// `endpoint`; port 0 picks a free port (logged at start).
    pub(crate) addr: SocketAddr,
    pub(crate) tls: Option<TlsConfig>,
}

/// `service.tcp.tls`: PEM files.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct TlsConfig {
    pub(crate) cert_file: PathBuf,
    pub(crate) key_file: PathBuf,
    /// When set, clients must present a certificate signed by this CA.
    pub(crate) ca_file: Option<PathBuf>,
}

/// `service.uds`.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct UdsConfig {
    pub(crate) socket_path: PathBuf,
    /// Permission bits of the socket file (default 0660).
    pub(crate) mode: u32,
}

/// A client token and the resources it may read. `pub` only because
/// `http::Authorizer::new`, public today, takes it; the fields are not.
#[derive(Debug, Clone)]
pub(crate) struct ClientToken {
    /// Where the token came from, for messages.
    pub(crate) source: TokenSource,
    pub(crate) value: SecretString,
    pub(crate) scope: TokenScope,
    /// `roles`: the IAM roles it may read as; none by default.
    pub(crate) roles: crate::domain::RoleScope,
}

/// Where a client token is read from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum TokenSource {
    /// `token-file`: a file holding the token.
    File(PathBuf),
    /// `token-env`: an environment variable holding the token.
    Env(String),
}

impl fmt::Display for TokenSource {
    /// As written in the config: `token-file /path` or `token-env NAME`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TokenSource::File(path) => write!(f, "token-file {}", path.display()),
            TokenSource::Env(name) => write!(f, "token-env {name}"),
        }
    }
}

/// What a token may read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum TokenScope {
    /// `["*"]`: every configured resource.
    All,
    /// Names, and name prefixes (`prod/` for `prod/*`).
    Only {
        names: std::collections::BTreeSet<ResourceName>,
        prefixes: Vec<String>,
    },
}

impl TokenScope {
    pub(crate) fn allows(&self, name: &ResourceName) -> bool {
        match self {
            TokenScope::All => true,
            TokenScope::Only { names, prefixes } => {
                names.contains(name) || prefixes.iter().any(|p| name.as_str().starts_with(p))
            }
        }
    }

    /// As written in the config, for `--check`.
    fn describe(&self) -> String {
        match self {
            TokenScope::All => "every resource".to_owned(),
            TokenScope::Only { names, prefixes } => names
                .iter()
                .map(|n| n.to_string())
                .chain(prefixes.iter().map(|p| format!("{p}*")))
                .collect::<Vec<_>>()
                .join(", "),
        }
    }
}

/// `secret-manager.aws`.
#[derive(Debug, Clone)]
pub(crate) struct AwsConfig {
    /// Default region, used for STS and when nothing else names one. Resource
    /// ARNs carry their own region, which wins for Secrets Manager calls.
    pub(crate) region: Option<String>,
    /// Overrides the Secrets Manager endpoint (a VPC endpoint, an emulator).
    pub(crate) endpoint: Option<String>,
    /// `ssm-endpoint`: overrides the Systems Manager endpoint of parameters.
    pub(crate) ssm_endpoint: Option<String>,
    /// `events`: refresh cached secrets when an SQS queue says they changed.
    pub(crate) events: Option<EventsConfig>,
    pub(crate) resources: Resources,
    /// Where the AWS credentials come from: the static keys, the default
    /// chain (with `profile`) and the assume-role layer, as one value.
    pub(crate) credentials: CredentialSource,
    /// `profile`: the shared files' profile. The chain has it too; it is
    /// kept here as well because the region may come from the profile even
    /// when the credentials are static keys.
    pub(crate) profile: Option<String>,
    /// Most GetSecretValue calls in flight at once (default 32): a flood of
    /// misses waits for a turn instead of opening ever more calls to AWS.
    pub(crate) max_concurrent_calls: usize,
    /// `max-roles`: most roles read as (`roleArn`) at once, each with its
    /// own credentials, clients and cache; the least recently used is
    /// dropped beyond it.
    pub(crate) max_roles: usize,
    /// `convert-to-base64`: the secret agent protocol base64-encodes stored
    /// text (true) or sends it as stored, already base64 (false, default).
    pub(crate) convert_to_base64: bool,
}

pub(crate) const DEFAULT_MAX_CONCURRENT_CALLS: usize = 32;

/// `max-roles` unless set (the AWS Workload Credentials Provider's
/// `max_roles` default), and the most it may be.
pub(crate) const DEFAULT_MAX_ROLES: usize = 20;
pub(crate) const MAX_MAX_ROLES: usize = 1000;

/// `secret-manager.aws.events`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct EventsConfig {
    /// The SQS queue an EventBridge rule feeds with Secrets Manager events;
    /// its region is the one in its URL's host, else the default region.
    pub(crate) queue_url: String,
    /// Overrides the SQS endpoint (a VPC endpoint, an emulator).
    pub(crate) endpoint: Option<String>,
}

/// `cache:` settings. `pub` only because the `cache` module's public API
/// takes it; the fields are not.
#[derive(Debug, Clone)]
pub(crate) struct CacheConfig {
    /// How long a fetched value is served before AWS is asked again; 0 disables caching.
    pub(crate) ttl: Duration,
    /// How long before expiry a value that was read gets refreshed in the
    /// background (default: the last 20% of `ttl`).
    pub(crate) refresh_ahead: Duration,
    /// How long past expiry a value is still served while AWS fails
    /// transiently (default 1h). After that, reads fail closed.
    pub(crate) max_stale: Duration,
    /// Most (secret, version) values kept; the least recently used goes
    /// first. Entries without a value (failed or not-found lookups) have a
    /// bound of their own of the same size, and never evict a value.
    pub(crate) max_entries: usize,
    /// Most bytes the cached values take in all, metadata included
    /// (default 64 MiB); the least recently used goes first. It bounds
    /// what many large values cost where `max_entries` alone would not.
    pub(crate) max_bytes: usize,
    /// Fetch every resource at start-up.
    pub(crate) prefetch: bool,
    /// Overall deadline of one fetch, the SDK's retries included (default 5s).
    pub(crate) fetch_timeout: Duration,
    /// After a small burst, forced refreshes of one entry call AWS at most
    /// once per this interval (default 1s); `0` removes the limit.
    pub(crate) min_refresh_interval: Duration,
    /// How long a not-found answer (secret or version) is remembered
    /// (default 30s); `0` turns negative caching off.
    pub(crate) negative_ttl: Duration,
    /// How long a reader of an expired value that is still within
    /// `max_stale` waits for its refresh before it gets that value, marked
    /// stale, while the fetch goes on (default 200ms).
    pub(crate) stale_wait: Duration,
    /// Names under patterns asked for the first time (not cached, nor
    /// remembered as missing) that may be fetched per second, over all
    /// patterns, after a burst of twice as many (default 50); `0` removes
    /// the limit. Each such name costs an AWS call.
    pub(crate) new_names_per_second: u32,
}

pub(crate) const DEFAULT_NEW_NAMES_PER_SECOND: u32 = 50;

pub(crate) const DEFAULT_MAX_STALE: Duration = Duration::from_secs(3600);
pub(crate) const DEFAULT_MAX_ENTRIES: usize = 1000;
pub(crate) const DEFAULT_MAX_BYTES: usize = 64 << 20;
/// Least `cache.max-bytes` (1 MiB): about 15 of AWS's largest secrets.
pub(crate) const MIN_MAX_BYTES: usize = 1 << 20;
pub(crate) const DEFAULT_FETCH_TIMEOUT: Duration = Duration::from_secs(5);
pub(crate) const DEFAULT_MIN_REFRESH_INTERVAL: Duration = Duration::from_secs(1);
pub(crate) const DEFAULT_NEGATIVE_TTL: Duration = Duration::from_secs(30);
pub(crate) const DEFAULT_STALE_WAIT: Duration = Duration::from_millis(200);

impl Default for CacheConfig {
    fn default() -> Self {
        CacheConfig {
            ttl: DEFAULT_TTL,
            refresh_ahead: DEFAULT_TTL / 5,
            max_stale: DEFAULT_MAX_STALE,
            max_entries: DEFAULT_MAX_ENTRIES,
            max_bytes: DEFAULT_MAX_BYTES,
            prefetch: false,
            fetch_timeout: DEFAULT_FETCH_TIMEOUT,
            min_refresh_interval: DEFAULT_MIN_REFRESH_INTERVAL,
            negative_ttl: DEFAULT_NEGATIVE_TTL,
            stale_wait: DEFAULT_STALE_WAIT,
            new_names_per_second: DEFAULT_NEW_NAMES_PER_SECOND,
        }
    }
}

impl Config {
    /// Reads (at most 1 MiB) and validates the file at `path`.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = load::read(path)?;
        Config::from_yaml(&text, path)
    }

    /// The file read again the way it was read first: for a reload. The
    /// caller's account, once learnt, is kept.
    pub(crate) fn reread(&self) -> Result<Config, ConfigError> {
        self.read_for(self.caller_account.resolved())
    }

    /// The file read again, `caller` ARNs filled with `account`: once the
    /// caller's account is learnt.
    pub(crate) fn with_caller_account(&self, account: &str) -> Result<Config, ConfigError> {
        self.read_for(Some(account))
    }

    fn read_for(&self, account: Option<&str>) -> Result<Config, ConfigError> {
        match &self.origin {
            Origin::Yaml => {
                Config::from_yaml_for(&load::read(&self.source)?, &self.source, account)
            }
            Origin::AwsAgent { file, region } => {
                AwsAgentFile::read(file.as_deref())?.config(account, region)
            }
        }
    }

    /// Validates YAML text; `source` is only used in messages.
    pub(crate) fn from_yaml(text: &str, source: &Path) -> Result<Config, ConfigError> {
        Config::from_yaml_for(text, source, None)
    }

    /// Validates YAML text, `caller` ARNs filled with `account` when known.
    fn from_yaml_for(
        text: &str,
        source: &Path,
        account: Option<&str>,
    ) -> Result<Config, ConfigError> {
        let mut raw = load::parse(text, source)?;
        let caller_account = caller::fill(&mut raw.secret_manager.aws.resources, account);
        let mut config = validate::config(raw, source, &load::System)?;
        config.caller_account = caller_account;
        Ok(config)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(super) fn load(yaml: &str) -> Result<Config, ConfigError> {
        Config::from_yaml(yaml, Path::new("test.yaml"))
    }

    pub(super) const SAMPLE: &str = "
service:
  tcp:
    endpoint: 0.0.0.0:3005

secret-manager:
  aws:
    region: us-west-1
    resources:
      TestingSecret: arn:aws:secretsmanager:us-west-1:999999999999:secret:TestingSecret-tN6s2j

log:
  level: info
";

    #[test]
    fn seed_sample_loads() {
        let config = load(SAMPLE).unwrap();
        assert_eq!(
            config.service.tcp.unwrap().addr,
            "0.0.0.0:3005".parse().unwrap()
        );
        assert!(config.auth.is_empty());
        assert_eq!(config.aws.region.as_deref(), Some("us-west-1"));
        assert_eq!(config.aws.resources.len(), 1);
        assert_eq!(config.cache.ttl, DEFAULT_TTL);
        assert_eq!(config.log_level, LevelFilter::Info);
        assert_eq!(
            config.aws.credentials,
            CredentialSource::Chain { profile: None }
        );
    }
}
