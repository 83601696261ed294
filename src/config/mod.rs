//! The YAML configuration: raw serde structs, validated once into [`Config`].
//!
//! The raw structs mirror the file (kebab-case keys, unknown keys rejected);
//! [`Config::load`] turns them into typed values and reports every problem as
//! a [`ConfigError`] that names the file, the key path and, where it is not a
//! secret, the offending value.

use std::collections::BTreeMap;
use std::fmt;
use std::net::{SocketAddr, ToSocketAddrs};
use std::path::{Path, PathBuf};
use std::time::Duration;

use log::LevelFilter;
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;
use serde::de::{self, Deserializer, Visitor};

use crate::resources::{ResourceName, Resources, SecretArn};

mod yaml;

/// Default time a cached secret is served without asking AWS again.
pub const DEFAULT_TTL: Duration = Duration::from_secs(300);

/// A configuration problem, reported before the agent serves anything.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{file}: cannot read the config file: {source}")]
    Read {
        file: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// The YAML does not parse, or does not fit the schema.
    #[error("{file}{line}: {path}{message}", line = fmt_line(*.line), path = fmt_path(.path))]
    Parse {
        file: PathBuf,
        line: Option<usize>,
        path: String,
        message: String,
    },
    /// The YAML fits the schema but a value is not acceptable.
    #[error("{file}: {path}: {message}")]
    Invalid {
        file: PathBuf,
        path: String,
        message: String,
    },
}

fn fmt_line(line: Option<usize>) -> String {
    line.map(|l| format!(":{l}")).unwrap_or_default()
}

fn fmt_path(path: &str) -> String {
    if path.is_empty() || path == "." {
        String::new()
    } else {
        format!("{path}: ")
    }
}

/// The validated configuration.
#[derive(Debug, Clone)]
pub struct Config {
    /// Where the configuration was read from, for messages.
    pub source: PathBuf,
    pub service: ServiceConfig,
    pub aws: AwsConfig,
    pub cache: CacheConfig,
    /// Client tokens; empty means open access (the seed's default).
    pub auth: Vec<ClientToken>,
    /// `log.level`; `RUST_LOG` overrides it.
    pub log_level: LevelFilter,
    /// Problems worth a warning but not a refusal (e.g. file permissions).
    pub warnings: Vec<String>,
}

/// Where the agent listens, and how it treats clients.
#[derive(Debug, Clone)]
pub struct ServiceConfig {
    pub tcp: Option<TcpConfig>,
    pub uds: Option<UdsConfig>,
    /// Most client connections open at once, over all listeners.
    pub max_connections: usize,
    /// A client must send its request headers within this time, and idle
    /// keep-alive connections are closed after it (slowloris guard).
    pub request_timeout: Duration,
    /// On SIGTERM, in-flight requests get this long to finish.
    pub shutdown_timeout: Duration,
}

pub const DEFAULT_MAX_CONNECTIONS: usize = 1024;
pub const DEFAULT_REQUEST_TIMEOUT: Duration = Duration::from_secs(5);
pub const DEFAULT_SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(10);

/// `service.tcp`.
#[derive(Debug, Clone, PartialEq)]
pub struct TcpConfig {
    /// `endpoint`; port 0 picks a free port (logged at start).
    pub addr: SocketAddr,
    pub tls: Option<TlsConfig>,
}

/// `service.tcp.tls`: PEM files.
#[derive(Debug, Clone, PartialEq)]
pub struct TlsConfig {
    pub cert_file: PathBuf,
    pub key_file: PathBuf,
    /// When set, clients must present a certificate signed by this CA.
    pub ca_file: Option<PathBuf>,
}

/// `service.uds`.
#[derive(Debug, Clone, PartialEq)]
pub struct UdsConfig {
    pub socket_path: PathBuf,
    /// Permission bits of the socket file (default 0660).
    pub mode: u32,
}

/// A client token and the resources it may read.
#[derive(Debug, Clone)]
pub struct ClientToken {
    /// Where the token came from, for messages: `token-file /path` or `token-env NAME`.
    pub source: String,
    pub value: SecretString,
    pub scope: TokenScope,
}

/// What a token may read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TokenScope {
    /// `["*"]`: every configured resource.
    All,
    Only(std::collections::BTreeSet<ResourceName>),
}

/// `secret-manager.aws`.
#[derive(Debug, Clone)]
pub struct AwsConfig {
    /// Default region, used for STS and when nothing else names one. Resource
    /// ARNs carry their own region, which wins for Secrets Manager calls.
    pub region: Option<String>,
    /// Overrides the Secrets Manager endpoint (a VPC endpoint, an emulator).
    pub endpoint: Option<String>,
    pub resources: Resources,
    pub credentials: CredentialsConfig,
    /// Most GetSecretValue calls in flight at once (default 32): a flood of
    /// misses waits for a turn instead of opening ever more calls to AWS.
    pub max_concurrent_calls: usize,
}

pub const DEFAULT_MAX_CONCURRENT_CALLS: usize = 32;

/// How the agent obtains AWS credentials.
#[derive(Debug, Clone, Default)]
pub struct CredentialsConfig {
    /// Keys written in the config file; they win over every other source.
    pub static_keys: Option<StaticKeys>,
    /// Profile of the shared credentials file (else `AWS_PROFILE`, else `default`).
    pub profile: Option<String>,
    /// Assume this role over the source credentials.
    pub assume_role: Option<AssumeRole>,
}

/// Access keys from the config file. `Debug` never shows the secret parts.
#[derive(Debug, Clone)]
pub struct StaticKeys {
    pub access_key_id: String,
    pub secret_access_key: SecretString,
    pub session_token: Option<SecretString>,
}

impl PartialEq for StaticKeys {
    fn eq(&self, other: &Self) -> bool {
        self.access_key_id == other.access_key_id
            && self.secret_access_key.expose_secret() == other.secret_access_key.expose_secret()
            && same_secret(&self.session_token, &other.session_token)
    }
}

/// The STS assume-role layer.
#[derive(Debug, Clone)]
pub struct AssumeRole {
    pub role_arn: String,
    pub external_id: Option<SecretString>,
    pub session_name: Option<String>,
    /// Lifetime asked of STS; STS's default (1h) when absent.
    pub duration: Option<Duration>,
    /// Where AssumeRole calls go (`sts-endpoint`); the regional STS endpoint when absent.
    pub sts_endpoint: Option<String>,
    /// Region for STS calls (`sts-region`); `region` when absent.
    pub sts_region: Option<String>,
}

impl PartialEq for AssumeRole {
    fn eq(&self, other: &Self) -> bool {
        (
            &self.role_arn,
            &self.session_name,
            self.duration,
            &self.sts_endpoint,
            &self.sts_region,
        ) == (
            &other.role_arn,
            &other.session_name,
            other.duration,
            &other.sts_endpoint,
            &other.sts_region,
        ) && same_secret(&self.external_id, &other.external_id)
    }
}

/// Compares secret values, for telling whether a reload changed them.
fn same_secret(a: &Option<SecretString>, b: &Option<SecretString>) -> bool {
    match (a, b) {
        (Some(a), Some(b)) => a.expose_secret() == b.expose_secret(),
        (None, None) => true,
        _ => false,
    }
}

/// `cache:` settings.
#[derive(Debug, Clone)]
pub struct CacheConfig {
    /// How long a fetched value is served before AWS is asked again; 0 disables caching.
    pub ttl: Duration,
    /// How long before expiry a value that was read gets refreshed in the
    /// background (default: the last 20% of `ttl`).
    pub refresh_ahead: Duration,
    /// How long past expiry a value is still served while AWS fails
    /// transiently (default 1h). After that, reads fail closed.
    pub max_stale: Duration,
    /// Most (secret, version) values kept; the least recently used goes
    /// first. Entries without a value (failed or not-found lookups) have a
    /// bound of their own of the same size, and never evict a value.
    pub max_entries: usize,
    /// Fetch every resource at start-up.
    pub prefetch: bool,
    /// Overall deadline of one fetch, the SDK's retries included (default 5s).
    pub fetch_timeout: Duration,
    /// After a small burst, forced refreshes of one entry call AWS at most
    /// once per this interval (default 1s); `0` removes the limit.
    pub min_refresh_interval: Duration,
    /// How long a not-found answer (secret or version) is remembered
    /// (default 30s); `0` turns negative caching off.
    pub negative_ttl: Duration,
}

pub const DEFAULT_MAX_STALE: Duration = Duration::from_secs(3600);
pub const DEFAULT_MAX_ENTRIES: usize = 1000;
pub const DEFAULT_FETCH_TIMEOUT: Duration = Duration::from_secs(5);
pub const DEFAULT_MIN_REFRESH_INTERVAL: Duration = Duration::from_secs(1);
pub const DEFAULT_NEGATIVE_TTL: Duration = Duration::from_secs(30);

impl Default for CacheConfig {
    fn default() -> Self {
        CacheConfig {
            ttl: DEFAULT_TTL,
            refresh_ahead: DEFAULT_TTL / 5,
            max_stale: DEFAULT_MAX_STALE,
            max_entries: DEFAULT_MAX_ENTRIES,
            prefetch: false,
            fetch_timeout: DEFAULT_FETCH_TIMEOUT,
            min_refresh_interval: DEFAULT_MIN_REFRESH_INTERVAL,
            negative_ttl: DEFAULT_NEGATIVE_TTL,
        }
    }
}

// ---------------------------------------------------------------------------
// Raw serde structs: one per YAML mapping.

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct RawConfig {
    service: RawService,
    secret_manager: RawSecretManager,
    #[serde(default)]
    cache: RawCache,
    auth: Option<RawAuth>,
    #[serde(default)]
    log: RawLog,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct RawService {
    tcp: Option<RawTcp>,
    uds: Option<RawUds>,
    max_connections: Option<usize>,
    request_timeout: Option<DurationValue>,
    shutdown_timeout: Option<DurationValue>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct RawTcp {
    endpoint: String,
    tls: Option<RawTls>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct RawTls {
    cert_file: PathBuf,
    key_file: PathBuf,
    ca_file: Option<PathBuf>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct RawUds {
    socket_path: PathBuf,
    mode: Option<serde_yaml::Value>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct RawAuth {
    tokens: Vec<RawToken>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct RawToken {
    token_file: Option<PathBuf>,
    token_env: Option<String>,
    resources: Vec<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct RawSecretManager {
    aws: RawAws,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct RawAws {
    region: Option<String>,
    endpoint: Option<String>,
    #[serde(deserialize_with = "unique_names")]
    resources: BTreeMap<String, String>,
    access_key_id: Option<String>,
    #[serde(default, deserialize_with = "sensitive")]
    secret_access_key: Option<SecretString>,
    #[serde(default, deserialize_with = "sensitive")]
    session_token: Option<SecretString>,
    profile: Option<String>,
    assume_role: Option<RawAssumeRole>,
    sts_endpoint: Option<String>,
    sts_region: Option<String>,
    max_concurrent_calls: Option<usize>,
}

/// `assume-role:` is either a role ARN or a map with more settings.
enum RawAssumeRole {
    Arn(String),
    Full(RawAssumeRoleMap),
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct RawAssumeRoleMap {
    role_arn: String,
    #[serde(default, deserialize_with = "sensitive")]
    external_id: Option<SecretString>,
    session_name: Option<String>,
    duration: Option<DurationValue>,
}

impl<'de> Deserialize<'de> for RawAssumeRole {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = RawAssumeRole;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str(
                    "a role ARN or a map with role-arn, external-id, session-name, duration",
                )
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
                Ok(RawAssumeRole::Arn(v.to_owned()))
            }
            fn visit_map<A: de::MapAccess<'de>>(self, map: A) -> Result<Self::Value, A::Error> {
                RawAssumeRoleMap::deserialize(de::value::MapAccessDeserializer::new(map))
                    .map(RawAssumeRole::Full)
            }
        }
        deserializer.deserialize_any(V)
    }
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct RawCache {
    ttl: Option<DurationValue>,
    refresh_ahead: Option<DurationValue>,
    max_stale: Option<DurationValue>,
    max_entries: Option<usize>,
    prefetch: Option<bool>,
    fetch_timeout: Option<DurationValue>,
    min_refresh_interval: Option<DurationValue>,
    negative_ttl: Option<DurationValue>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct RawLog {
    level: Option<String>,
}

/// A duration written as `300s`, `5m`, `1h` (humantime syntax), or a bare
/// number of seconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DurationValue(pub Duration);

impl<'de> Deserialize<'de> for DurationValue {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = DurationValue;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a duration such as 300s, 5m or 1h, or a whole number of seconds")
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Self::Value, E> {
                Ok(DurationValue(Duration::from_secs(v)))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Self::Value, E> {
                u64::try_from(v)
                    .map(|s| DurationValue(Duration::from_secs(s)))
                    .map_err(|_| {
                        E::custom(format!("`{v}` is negative; a duration must be 0 or more"))
                    })
            }
            fn visit_f64<E: de::Error>(self, v: f64) -> Result<Self::Value, E> {
                Err(E::custom(format!(
                    "`{v}` is not a whole number of seconds; write e.g. 1500ms"
                )))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
                parse_duration(v).map(DurationValue).map_err(E::custom)
            }
        }
        deserializer.deserialize_any(V)
    }
}

/// Parses `300s`, `5m`, `1h`, `1h 30m`, `1500ms` or a bare number of seconds.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    if let Ok(secs) = text.parse::<u64>() {
        return Ok(Duration::from_secs(secs));
    }
    if text.starts_with('-') {
        return Err(format!(
            "`{text}` is negative; a duration must be 0 or more"
        ));
    }
    humantime::parse_duration(text)
        .map_err(|e| format!("`{text}` is not a duration ({e}); write e.g. 300s, 5m or 1h"))
}

/// `resources:`, refusing a name given twice: a plain map would keep the
/// last one silently, where every other duplicate key is an error.
fn unique_names<'de, D: Deserializer<'de>>(
    deserializer: D,
) -> Result<BTreeMap<String, String>, D::Error> {
    struct Names;
    impl<'de> Visitor<'de> for Names {
        type Value = BTreeMap<String, String>;
        fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
            f.write_str("a map of resource names to secret ARNs")
        }
        fn visit_map<A: de::MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
            let mut names = BTreeMap::new();
            while let Some(name) = map.next_key_seed(NewName(&names))? {
                let arn = map.next_value()?;
                names.insert(name, arn);
            }
            Ok(names)
        }
    }
    deserializer.deserialize_map(Names)
}

/// A key not yet in the map. Refused while the key itself is read, so the
/// error carries the duplicate's line.
struct NewName<'a>(&'a BTreeMap<String, String>);

impl<'de> de::DeserializeSeed<'de> for NewName<'_> {
    type Value = String;
    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<String, D::Error> {
        deserializer.deserialize_str(self)
    }
}

impl Visitor<'_> for NewName<'_> {
    type Value = String;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a resource name")
    }
    fn visit_str<E: de::Error>(self, name: &str) -> Result<String, E> {
        if self.0.contains_key(name) {
            Err(E::custom(format_args!(
                "`{name}` is given twice; a name stands for one secret ARN"
            )))
        } else {
            Ok(name.to_owned())
        }
    }
}

/// Deserializes an optional secret without ever echoing its value in an error.
fn sensitive<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Option<SecretString>, D::Error> {
    struct V;
    impl<'de> Visitor<'de> for V {
        type Value = Option<SecretString>;
        fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
            f.write_str("a string")
        }
        fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
            Ok(Some(SecretString::from(v)))
        }
        fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
            Ok(None)
        }
        fn visit_none<E: de::Error>(self) -> Result<Self::Value, E> {
            Ok(None)
        }
        fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
            d.deserialize_any(V)
        }
        // Anything else (numbers, lists, maps) is refused without the value.
        fn visit_i64<E: de::Error>(self, _: i64) -> Result<Self::Value, E> {
            Err(E::custom("expected a string (value not shown)"))
        }
        fn visit_u64<E: de::Error>(self, _: u64) -> Result<Self::Value, E> {
            Err(E::custom("expected a string (value not shown)"))
        }
        fn visit_f64<E: de::Error>(self, _: f64) -> Result<Self::Value, E> {
            Err(E::custom("expected a string (value not shown)"))
        }
        fn visit_bool<E: de::Error>(self, _: bool) -> Result<Self::Value, E> {
            Err(E::custom("expected a string (value not shown)"))
        }
        fn visit_seq<A: de::SeqAccess<'de>>(self, _: A) -> Result<Self::Value, A::Error> {
            Err(de::Error::custom("expected a string, found a list"))
        }
        fn visit_map<A: de::MapAccess<'de>>(self, _: A) -> Result<Self::Value, A::Error> {
            Err(de::Error::custom("expected a string, found a map"))
        }
    }
    deserializer.deserialize_option(V)
}

// ---------------------------------------------------------------------------
// Loading and validation.

/// Largest config file read: far more than any real configuration, small
/// enough that a wrong path (a log, a device) is refused at once.
pub const MAX_FILE_BYTES: u64 = 1024 * 1024;

/// Deepest nesting of YAML collections accepted. A valid configuration
/// nests at most 5 deep (`auth.tokens[0].resources[0]`); a deeper file is
/// refused before serde_yaml parses it (see `src/config/yaml.rs`).
pub const MAX_NESTING: usize = 32;

impl Config {
    /// Reads (at most [`MAX_FILE_BYTES`]) and validates the file at `path`.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        use std::io::Read;
        let read_error = |source| ConfigError::Read {
            file: path.to_owned(),
            source,
        };
        let mut bytes = Vec::new();
        std::fs::File::open(path)
            .and_then(|file| file.take(MAX_FILE_BYTES + 1).read_to_end(&mut bytes))
            .map_err(read_error)?;
        if bytes.len() as u64 > MAX_FILE_BYTES {
            return Err(too_large(path));
        }
        let text = String::from_utf8(bytes)
            .map_err(|e| read_error(std::io::Error::new(std::io::ErrorKind::InvalidData, e)))?;
        Config::from_yaml(&text, path)
    }

    /// Validates YAML text; `source` is only used in messages.
    pub fn from_yaml(text: &str, source: &Path) -> Result<Config, ConfigError> {
        if text.len() as u64 > MAX_FILE_BYTES {
            return Err(too_large(source));
        }
        if let Err(deep) = yaml::check_depth(text, MAX_NESTING) {
            return Err(ConfigError::Parse {
                file: source.to_owned(),
                line: Some(deep.line),
                path: String::new(),
                message: format!(
                    "nested more than {MAX_NESTING} levels deep; a configuration nests at most 5"
                ),
            });
        }
        let deserializer = serde_yaml::Deserializer::from_str(text);
        let raw: RawConfig = serde_path_to_error::deserialize(deserializer).map_err(|e| {
            let path = e.path().to_string();
            let inner = e.into_inner();
            let (path, message) = explain_serde_message(&inner, path);
            ConfigError::Parse {
                file: source.to_owned(),
                line: inner.location().map(|l| l.line()),
                path,
                message,
            }
        })?;
        Validator { file: source }.config(raw)
    }
}

fn too_large(file: &Path) -> ConfigError {
    ConfigError::Parse {
        file: file.to_owned(),
        line: None,
        path: String::new(),
        message: format!(
            "the file is larger than {MAX_FILE_BYTES} bytes (1 MiB); is it the config file?"
        ),
    }
}

impl Config {
    /// A short, secret-free description for `--check`.
    pub fn summary(&self) -> String {
        let mut out = format!("{}: OK\n", self.source.display());
        let mut listeners = Vec::new();
        if let Some(tcp) = &self.service.tcp {
            let scheme = match &tcp.tls {
                Some(tls) if tls.ca_file.is_some() => "https (client certificates required)",
                Some(_) => "https",
                None => "http",
            };
            listeners.push(format!("tcp {} {scheme}", tcp.addr));
        }
        if let Some(uds) = &self.service.uds {
            listeners.push(format!(
                "unix {} (mode {:04o})",
                uds.socket_path.display(),
                uds.mode
            ));
        }
        out.push_str(&format!("listeners: {}\n", listeners.join(", ")));
        out.push_str(&format!(
            "limits: max-connections {}, request-timeout {}\n",
            self.service.max_connections,
            humantime::format_duration(self.service.request_timeout)
        ));
        if self.auth.is_empty() {
            out.push_str("auth: open (no client tokens)\n");
        } else {
            let sources: Vec<&str> = self.auth.iter().map(|t| t.source.as_str()).collect();
            out.push_str(&format!(
                "auth: {} token(s): {}\n",
                self.auth.len(),
                sources.join(", ")
            ));
        }
        let names: Vec<&str> = self
            .aws
            .resources
            .names()
            .into_iter()
            .map(|n| n.as_str())
            .collect();
        out.push_str(&format!(
            "resources ({}): {}\n",
            names.len(),
            names.join(", ")
        ));
        out.push_str(&format!(
            "credentials: {}\n",
            crate::credentials::CredentialSource::from(&self.aws.credentials).describe()
        ));
        if let Some(endpoint) = &self.aws.endpoint {
            out.push_str(&format!("secrets manager endpoint: {endpoint}\n"));
        }
        let c = &self.cache;
        out.push_str(&format!(
            "cache: ttl {}, refresh-ahead {}, max-stale {}, max-entries {}, prefetch {}, fetch-timeout {}, min-refresh-interval {}, negative-ttl {}\n",
            humantime::format_duration(c.ttl),
            humantime::format_duration(c.refresh_ahead),
            humantime::format_duration(c.max_stale),
            c.max_entries,
            c.prefetch,
            humantime::format_duration(c.fetch_timeout),
            humantime::format_duration(c.min_refresh_interval),
            humantime::format_duration(c.negative_ttl),
        ));
        out.push_str(&format!(
            "upstream: max-concurrent-calls {}\n",
            self.aws.max_concurrent_calls
        ));
        out.push_str(&format!(
            "log level: {}\n",
            self.log_level.as_str().to_lowercase()
        ));
        for warning in &self.warnings {
            out.push_str(&format!("warning: {warning}\n"));
        }
        out
    }
}

/// Rewrites serde's messages into ones that help: an unknown key gets the
/// closest valid key as a suggestion and the path of the map it is in; the
/// parser's own path prefix and location suffix are dropped because both are
/// reported separately. Returns the key path and the message.
fn explain_serde_message(err: &serde_yaml::Error, mut path: String) -> (String, String) {
    let mut message = err.to_string();
    if let Some(at) = message.rfind(" at line ") {
        message.truncate(at);
    }
    if let Some((prefix, rest)) = message.split_once(": ")
        && path.starts_with(prefix)
    {
        message = rest.to_owned();
    }
    if message.starts_with("unknown field `") {
        // The path names the unknown key itself; report the map it is in.
        path = path
            .rsplit_once('.')
            .map(|(parent, _)| parent.to_owned())
            .unwrap_or_default();
    }
    (path, explain_message(message))
}

fn explain_message(mut message: String) -> String {
    // serde names the target struct ("expected struct RawService"); say what the YAML needs.
    if let Some(at) = message.find("struct Raw") {
        let end = message[at + 7..]
            .find(|c: char| !c.is_alphanumeric())
            .map_or(message.len(), |e| at + 7 + e);
        message.replace_range(at..end, "a mapping");
    }
    // serde's wording: "unknown field `x`, expected one of `a`, `b`" or "expected `a`".
    if let Some(rest) = message.strip_prefix("unknown field `") {
        let mut ticked = rest.split('`').step_by(2);
        let unknown = ticked.next().unwrap_or_default().to_owned();
        let valid: Vec<&str> = ticked.collect();
        let mut text = format!("unknown key `{unknown}`");
        if let Some(best) = closest(&unknown, &valid) {
            text.push_str(&format!(" (did you mean `{best}`?)"));
        }
        if !valid.is_empty() {
            text.push_str(&format!("; valid keys here: {}", valid.join(", ")));
        }
        return text;
    }
    if let Some(rest) = message.strip_prefix("missing field `") {
        let key = rest.split('`').next().unwrap_or_default();
        return format!("missing required key `{key}`");
    }
    message
}

/// The valid key most like `word`, if any is close enough to be a likely typo.
fn closest<'a>(word: &str, candidates: &[&'a str]) -> Option<&'a str> {
    candidates
        .iter()
        .map(|c| (strsim::jaro_winkler(word, c), *c))
        .filter(|(score, _)| *score > 0.7)
        .max_by(|a, b| a.0.total_cmp(&b.0))
        .map(|(_, c)| c)
}

struct Validator<'a> {
    file: &'a Path,
}

impl Validator<'_> {
    fn invalid(&self, path: &str, message: impl Into<String>) -> ConfigError {
        ConfigError::Invalid {
            file: self.file.to_owned(),
            path: path.to_owned(),
            message: message.into(),
        }
    }

    fn config(&self, raw: RawConfig) -> Result<Config, ConfigError> {
        let service = self.service(raw.service)?;
        let aws = self.aws(raw.secret_manager.aws)?;
        let cache = self.cache(raw.cache)?;
        let auth = match raw.auth {
            Some(auth) => self.auth(auth, &aws.resources)?,
            None => Vec::new(),
        };
        let mut warnings = Vec::new();
        let holds_secrets = aws.credentials.static_keys.is_some()
            || aws
                .credentials
                .assume_role
                .as_ref()
                .is_some_and(|r| r.external_id.is_some());
        if holds_secrets {
            warnings.extend(loose_permissions(self.file, "it holds AWS keys"));
        }
        for token in &auth {
            if let Some(path) = token.source.strip_prefix("token-file ") {
                warnings.extend(loose_permissions(
                    Path::new(path),
                    "it holds a client token",
                ));
            }
        }
        let log_level = match raw.log.level {
            None => LevelFilter::Info,
            Some(level) => level.parse().map_err(|_| {
                self.invalid(
                    "log.level",
                    format!("`{level}` is not a log level; use debug, info, warn, error or off"),
                )
            })?,
        };
        Ok(Config {
            source: self.file.to_owned(),
            service,
            aws,
            cache,
            auth,
            log_level,
            warnings,
        })
    }

    fn service(&self, raw: RawService) -> Result<ServiceConfig, ConfigError> {
        let tcp = match raw.tcp {
            Some(tcp) => Some(TcpConfig {
                addr: self.socket_addr("service.tcp.endpoint", &tcp.endpoint)?,
                tls: tcp.tls.map(|tls| self.tls(tls)).transpose()?,
            }),
            None => None,
        };
        let uds = match raw.uds {
            Some(uds) => Some(self.uds(uds)?),
            None => None,
        };
        if tcp.is_none() && uds.is_none() {
            return Err(self.invalid(
                "service",
                "no listener is configured; add service.tcp.endpoint (e.g. 127.0.0.1:2773) or service.uds.socket-path",
            ));
        }
        let max_connections = raw.max_connections.unwrap_or(DEFAULT_MAX_CONNECTIONS);
        if max_connections == 0 {
            return Err(self.invalid("service.max-connections", "must be at least 1"));
        }
        let request_timeout = raw.request_timeout.map_or(DEFAULT_REQUEST_TIMEOUT, |d| d.0);
        if request_timeout.is_zero() {
            return Err(self.invalid("service.request-timeout", "must be more than 0"));
        }
        Ok(ServiceConfig {
            tcp,
            uds,
            max_connections,
            request_timeout,
            shutdown_timeout: raw
                .shutdown_timeout
                .map_or(DEFAULT_SHUTDOWN_TIMEOUT, |d| d.0),
        })
    }

    fn tls(&self, raw: RawTls) -> Result<TlsConfig, ConfigError> {
        for (key, path) in [("cert-file", &raw.cert_file), ("key-file", &raw.key_file)]
            .into_iter()
            .chain(raw.ca_file.as_ref().map(|p| ("ca-file", p)))
        {
            if let Err(e) = std::fs::metadata(path) {
                return Err(self.invalid(
                    &format!("service.tcp.tls.{key}"),
                    format!("cannot read {}: {e}", path.display()),
                ));
            }
        }
        Ok(TlsConfig {
            cert_file: raw.cert_file,
            key_file: raw.key_file,
            ca_file: raw.ca_file,
        })
    }

    fn uds(&self, raw: RawUds) -> Result<UdsConfig, ConfigError> {
        let path = "service.uds.mode";
        let mode = match raw.mode {
            None => Some(0o660),
            // `mode: 0660` reads as the number 660 in YAML 1.2; both it and
            // the string "0660" mean the octal digits as written.
            Some(serde_yaml::Value::Number(n)) => parse_mode(&n.to_string()),
            Some(serde_yaml::Value::String(text)) => parse_mode(&text),
            Some(_) => None,
        }
        .ok_or_else(|| {
            self.invalid(
                path,
                "must be octal permission bits such as 0660 or \"0600\"",
            )
        })?;
        if mode & 0o600 != 0o600 {
            return Err(self.invalid(
                path,
                format!("{mode:04o} does not let the agent's own user read and write the socket"),
            ));
        }
        if raw.socket_path.as_os_str().is_empty() {
            return Err(self.invalid("service.uds.socket-path", "is empty"));
        }
        Ok(UdsConfig {
            socket_path: raw.socket_path,
            mode,
        })
    }

    fn auth(&self, raw: RawAuth, resources: &Resources) -> Result<Vec<ClientToken>, ConfigError> {
        if raw.tokens.is_empty() {
            return Err(self.invalid(
                "auth.tokens",
                "is empty; remove `auth` for open access, or list at least one token",
            ));
        }
        let mut tokens: Vec<ClientToken> = Vec::with_capacity(raw.tokens.len());
        for (i, token) in raw.tokens.into_iter().enumerate() {
            let path = format!("auth.tokens[{i}]");
            let (source, value) = match (token.token_file, token.token_env) {
                (Some(file), None) => {
                    let text = std::fs::read_to_string(&file).map_err(|e| {
                        self.invalid(
                            &format!("{path}.token-file"),
                            format!("cannot read {}: {e}", file.display()),
                        )
                    })?;
                    (format!("token-file {}", file.display()), text)
                }
                (None, Some(var)) => {
                    let text = std::env::var(&var).map_err(|_| {
                        self.invalid(
                            &format!("{path}.token-env"),
                            format!("environment variable {var} is not set"),
                        )
                    })?;
                    (format!("token-env {var}"), text)
                }
                _ => {
                    return Err(self.invalid(&path, "give exactly one of token-file and token-env"));
                }
            };
            let value = SecretString::from(value.trim_end());
            let text = value.expose_secret();
            if text.is_empty() {
                return Err(self.invalid(&path, format!("the token from {source} is empty")));
            }
            if text.chars().any(|c| c.is_control() || c == ' ') {
                return Err(self.invalid(
                    &path,
                    format!(
                        "the token from {source} has spaces or control characters (value not shown)"
                    ),
                ));
            }
            if tokens.iter().any(|t| t.value.expose_secret() == text) {
                return Err(self.invalid(&path, format!("the token from {source} is used twice")));
            }
            let scope = self.scope(&path, token.resources, resources)?;
            tokens.push(ClientToken {
                source,
                value,
                scope,
            });
        }
        Ok(tokens)
    }

    fn scope(
        &self,
        path: &str,
        names: Vec<String>,
        resources: &Resources,
    ) -> Result<TokenScope, ConfigError> {
        if names.iter().any(|n| n == "*") {
            return if names.len() == 1 {
                Ok(TokenScope::All)
            } else {
                Err(self.invalid(
                    &format!("{path}.resources"),
                    "`*` already means every resource; list nothing beside it",
                ))
            };
        }
        if names.is_empty() {
            return Err(self.invalid(
                &format!("{path}.resources"),
                "is empty; list resource names or \"*\"",
            ));
        }
        let mut only = std::collections::BTreeSet::new();
        for name in names {
            match resources.get(&name) {
                Some((name, _)) => {
                    only.insert(name.clone());
                }
                None => {
                    let known: Vec<&str> =
                        resources.names().into_iter().map(|n| n.as_str()).collect();
                    let hint = closest(&name, &known)
                        .map(|c| format!(" (did you mean `{c}`?)"))
                        .unwrap_or_default();
                    return Err(self.invalid(
                        &format!("{path}.resources"),
                        format!("`{name}` is not a configured resource{hint}"),
                    ));
                }
            }
        }
        Ok(TokenScope::Only(only))
    }

    fn socket_addr(&self, path: &str, text: &str) -> Result<SocketAddr, ConfigError> {
        if let Ok(addr) = text.parse() {
            return Ok(addr);
        }
        // Host names (e.g. localhost:2773) resolve once, at load.
        let resolved = match text.rsplit_once(':') {
            Some((host, port)) if !host.is_empty() && port.parse::<u16>().is_ok() => {
                text.to_socket_addrs().ok().and_then(|mut a| a.next())
            }
            _ => None,
        };
        resolved.ok_or_else(|| {
            self.invalid(
                path,
                format!("`{text}` is not an address with a port, e.g. 127.0.0.1:2773"),
            )
        })
    }

    fn url(&self, path: &str, text: String) -> Result<String, ConfigError> {
        let uri: Result<actix_web::http::Uri, _> = text.parse();
        match uri {
            Ok(uri)
                if matches!(uri.scheme_str(), Some("http" | "https")) && uri.host().is_some() =>
            {
                Ok(text)
            }
            _ => Err(self.invalid(
                path,
                format!("`{text}` is not an http(s) URL, e.g. https://secretsmanager.us-west-1.amazonaws.com"),
            )),
        }
    }

    fn region(&self, path: &str, text: String) -> Result<String, ConfigError> {
        let valid = !text.is_empty()
            && text.len() <= 32
            && text
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
        if valid {
            Ok(text)
        } else {
            Err(self.invalid(
                path,
                format!("`{text}` is not an AWS region, e.g. us-west-1"),
            ))
        }
    }

    fn aws(&self, raw: RawAws) -> Result<AwsConfig, ConfigError> {
        let region = raw
            .region
            .map(|r| self.region("secret-manager.aws.region", r))
            .transpose()?;
        let endpoint = raw
            .endpoint
            .map(|e| self.url("secret-manager.aws.endpoint", e))
            .transpose()?;

        let mut resources = Vec::with_capacity(raw.resources.len());
        for (name, arn) in raw.resources {
            let path = format!("secret-manager.aws.resources.{name}");
            let name = ResourceName::parse(&name).map_err(|e| self.invalid(&path, e))?;
            let arn = SecretArn::parse(&arn)
                .map_err(|e| self.invalid(&path, format!("resource `{name}`: {e}")))?;
            resources.push((name, arn));
        }
        if resources.is_empty() {
            return Err(self.invalid(
                "secret-manager.aws.resources",
                "no resources are configured; map at least one name to a secret ARN",
            ));
        }

        let static_keys = match (raw.access_key_id, raw.secret_access_key) {
            (Some(id), Some(secret)) => {
                if id.trim().is_empty() {
                    return Err(self.invalid("secret-manager.aws.access-key-id", "is empty"));
                }
                Some(StaticKeys {
                    access_key_id: id,
                    secret_access_key: secret,
                    session_token: raw.session_token,
                })
            }
            (None, None) => {
                if raw.session_token.is_some() {
                    return Err(self.invalid(
                        "secret-manager.aws.session-token",
                        "needs access-key-id and secret-access-key beside it",
                    ));
                }
                None
            }
            (Some(_), None) => {
                return Err(self.invalid(
                    "secret-manager.aws",
                    "access-key-id is set but secret-access-key is missing; set both or neither",
                ));
            }
            (None, Some(_)) => {
                return Err(self.invalid(
                    "secret-manager.aws",
                    "secret-access-key is set but access-key-id is missing; set both or neither",
                ));
            }
        };

        let sts_endpoint = raw
            .sts_endpoint
            .map(|e| self.url("secret-manager.aws.sts-endpoint", e))
            .transpose()?;
        let sts_region = raw
            .sts_region
            .map(|r| self.region("secret-manager.aws.sts-region", r))
            .transpose()?;
        let assume_role = match raw.assume_role {
            None => {
                if sts_endpoint.is_some() || sts_region.is_some() {
                    return Err(self.invalid(
                        "secret-manager.aws",
                        "sts-endpoint and sts-region only apply together with assume-role",
                    ));
                }
                None
            }
            Some(RawAssumeRole::Arn(role_arn)) => Some(self.assume_role(
                role_arn,
                RawAssumeRoleMap {
                    role_arn: String::new(),
                    external_id: None,
                    session_name: None,
                    duration: None,
                },
                sts_endpoint,
                sts_region,
            )?),
            Some(RawAssumeRole::Full(map)) => {
                Some(self.assume_role(map.role_arn.clone(), map, sts_endpoint, sts_region)?)
            }
        };

        let max_concurrent_calls = raw
            .max_concurrent_calls
            .unwrap_or(DEFAULT_MAX_CONCURRENT_CALLS);
        if max_concurrent_calls == 0 {
            return Err(self.invalid(
                "secret-manager.aws.max-concurrent-calls",
                "must be at least 1 (0 would never call AWS)",
            ));
        }

        Ok(AwsConfig {
            region,
            endpoint,
            resources: Resources::new(resources),
            credentials: CredentialsConfig {
                static_keys,
                profile: raw.profile,
                assume_role,
            },
            max_concurrent_calls,
        })
    }

    fn assume_role(
        &self,
        role_arn: String,
        map: RawAssumeRoleMap,
        sts_endpoint: Option<String>,
        sts_region: Option<String>,
    ) -> Result<AssumeRole, ConfigError> {
        let path = "secret-manager.aws.assume-role";
        if !is_role_arn(&role_arn) {
            return Err(self.invalid(
                path,
                format!(
                    "`{role_arn}` is not an IAM role ARN, e.g. arn:aws:iam::123456789012:role/Name"
                ),
            ));
        }
        if let Some(name) = &map.session_name {
            // STS: 2-64 characters of [\w+=,.@-].
            let valid = (2..=64).contains(&name.len())
                && name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || "_+=,.@-".contains(c));
            if !valid {
                return Err(self.invalid(
                    &format!("{path}.session-name"),
                    format!("`{name}` must be 2 to 64 characters of letters, digits and _+=,.@-"),
                ));
            }
        }
        let duration = map.duration.map(|d| d.0);
        if let Some(d) = duration {
            // STS accepts 15 minutes to 12 hours.
            if !(900..=43200).contains(&d.as_secs()) {
                return Err(self.invalid(
                    &format!("{path}.duration"),
                    format!(
                        "`{}` is outside what STS accepts (15m to 12h)",
                        humantime::format_duration(d)
                    ),
                ));
            }
        }
        Ok(AssumeRole {
            role_arn,
            external_id: map.external_id,
            session_name: map.session_name,
            duration,
            sts_endpoint,
            sts_region,
        })
    }

    fn cache(&self, raw: RawCache) -> Result<CacheConfig, ConfigError> {
        let defaults = CacheConfig::default();
        let ttl = raw.ttl.map_or(defaults.ttl, |d| d.0);
        let refresh_ahead = raw.refresh_ahead.map_or(ttl / 5, |d| d.0);
        if refresh_ahead > ttl {
            return Err(self.invalid(
                "cache.refresh-ahead",
                format!(
                    "`{}` is longer than cache.ttl (`{}`)",
                    humantime::format_duration(refresh_ahead),
                    humantime::format_duration(ttl)
                ),
            ));
        }
        let max_entries = raw.max_entries.unwrap_or(defaults.max_entries);
        if max_entries == 0 {
            return Err(self.invalid("cache.max-entries", "must be at least 1"));
        }
        let fetch_timeout = raw.fetch_timeout.map_or(defaults.fetch_timeout, |d| d.0);
        if fetch_timeout.is_zero() {
            return Err(self.invalid("cache.fetch-timeout", "must be more than 0"));
        }
        Ok(CacheConfig {
            ttl,
            refresh_ahead,
            max_stale: raw.max_stale.map_or(defaults.max_stale, |d| d.0),
            max_entries,
            prefetch: raw.prefetch.unwrap_or(defaults.prefetch),
            fetch_timeout,
            min_refresh_interval: raw
                .min_refresh_interval
                .map_or(defaults.min_refresh_interval, |d| d.0),
            negative_ttl: raw.negative_ttl.map_or(defaults.negative_ttl, |d| d.0),
        })
    }
}

/// Octal permission bits written as digits, e.g. "0660" or "660".
fn parse_mode(text: &str) -> Option<u32> {
    let digits = text.trim();
    if digits.is_empty() || digits.len() > 4 {
        return None;
    }
    u32::from_str_radix(digits, 8).ok().filter(|m| *m <= 0o777)
}

/// A warning when `path` can be read by its group or others.
fn loose_permissions(path: &Path, why: &str) -> Option<String> {
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(path).ok()?.permissions().mode();
    (mode & 0o077 != 0).then(|| {
        format!(
            "{} is readable by group or others (mode {:04o}) and {why}; chmod 600 it",
            path.display(),
            mode & 0o777
        )
    })
}

fn is_role_arn(text: &str) -> bool {
    let parts: Vec<&str> = text.splitn(6, ':').collect();
    matches!(parts.as_slice(), ["arn", partition, "iam", "", account, resource]
        if partition.starts_with("aws")
            && account.len() == 12
            && account.bytes().all(|b| b.is_ascii_digit())
            && resource.strip_prefix("role/").is_some_and(|r| !r.is_empty()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load(yaml: &str) -> Result<Config, ConfigError> {
        Config::from_yaml(yaml, Path::new("test.yaml"))
    }

    const SAMPLE: &str = "
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
        assert!(config.aws.credentials.static_keys.is_none());
    }

    #[test]
    fn every_file_in_config_dir_loads() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("config");
        let mut seen = 0;
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.extension().is_some_and(|e| e == "yaml" || e == "yml") {
                Config::load(&path).unwrap_or_else(|e| panic!("{e}"));
                seen += 1;
            }
        }
        assert!(
            seen >= 4,
            "expected the seed samples and demo.yaml in config/"
        );
    }

    #[test]
    fn unknown_key_is_named_with_path_line_and_suggestion() {
        let yaml = SAMPLE.replace("region: us-west-1", "regoin: us-west-1");
        let err = load(&yaml).unwrap_err().to_string();
        assert!(
            err.starts_with("test.yaml:8: secret-manager.aws: unknown key `regoin`"),
            "{err}"
        );
        assert!(err.contains("did you mean `region`?"), "{err}");
    }

    #[test]
    fn unknown_top_level_key_suggests() {
        let err = load(&format!("{SAMPLE}\ncahce:\n  ttl: 5s\n"))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("unknown key `cahce` (did you mean `cache`?)"),
            "{err}"
        );
    }

    #[test]
    fn missing_key_is_named() {
        let err = load("service:\n  tcp:\n    endpoint: 127.0.0.1:1\n")
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("missing required key `secret-manager`"),
            "{err}"
        );
    }

    #[test]
    fn bad_arn_names_resource_and_value() {
        let yaml = SAMPLE.replace(
            "arn:aws:secretsmanager:us-west-1:999999999999:secret:TestingSecret-tN6s2j",
            "arn:aws:s3:::bucket",
        );
        let err = load(&yaml).unwrap_err().to_string();
        assert!(
            err.contains("secret-manager.aws.resources.TestingSecret"),
            "{err}"
        );
        assert!(err.contains("arn:aws:s3:::bucket"), "{err}");
    }

    #[test]
    fn bad_resource_name_is_rejected() {
        let yaml = SAMPLE.replace("TestingSecret:", "\"bad name!\":");
        let err = load(&yaml).unwrap_err().to_string();
        assert!(err.contains("bad name!"), "{err}");
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("300s").unwrap(), Duration::from_secs(300));
        assert_eq!(parse_duration("5m").unwrap(), Duration::from_secs(300));
        assert_eq!(parse_duration("1h").unwrap(), Duration::from_secs(3600));
        assert_eq!(parse_duration("42").unwrap(), Duration::from_secs(42));
        assert_eq!(
            parse_duration("1500ms").unwrap(),
            Duration::from_millis(1500)
        );
        assert!(parse_duration("-5s").unwrap_err().contains("negative"));
        assert!(parse_duration("soon").is_err());
        let ttl = |v: &str| load(&format!("{SAMPLE}cache:\n  ttl: {v}\n")).map(|c| c.cache.ttl);
        assert_eq!(ttl("5m").unwrap(), Duration::from_secs(300));
        assert_eq!(ttl("60").unwrap(), Duration::from_secs(60));
        assert_eq!(ttl("0").unwrap(), Duration::ZERO);
        let err = ttl("-3").unwrap_err().to_string();
        assert!(
            err.contains("cache.ttl") && err.contains("negative"),
            "{err}"
        );
        assert!(ttl("1.5").is_err());
    }

    #[test]
    fn cache_settings_and_their_validation() {
        let cache = |body: &str| load(&format!("{SAMPLE}cache:\n{body}")).map(|c| c.cache);
        let c = cache("  ttl: 10m\n").unwrap();
        assert_eq!(c.refresh_ahead, Duration::from_secs(120));
        assert_eq!(c.max_stale, DEFAULT_MAX_STALE);
        assert_eq!(c.max_entries, DEFAULT_MAX_ENTRIES);
        assert!(!c.prefetch);
        let c = cache("  ttl: 60\n  refresh-ahead: 30s\n  max-stale: 2m\n  max-entries: 5\n  prefetch: true\n  fetch-timeout: 1500ms\n").unwrap();
        assert_eq!(
            (
                c.refresh_ahead,
                c.max_stale,
                c.max_entries,
                c.prefetch,
                c.fetch_timeout
            ),
            (
                Duration::from_secs(30),
                Duration::from_secs(120),
                5,
                true,
                Duration::from_millis(1500)
            )
        );
        let err = cache("  ttl: 10s\n  refresh-ahead: 20s\n")
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("cache.refresh-ahead") && err.contains("longer than cache.ttl"),
            "{err}"
        );
        assert!(
            cache("  max-entries: 0\n")
                .unwrap_err()
                .to_string()
                .contains("cache.max-entries")
        );
        assert!(
            cache("  max-entries: -1\n")
                .unwrap_err()
                .to_string()
                .contains("max-entries")
        );
        assert!(
            cache("  fetch-timeout: 0s\n")
                .unwrap_err()
                .to_string()
                .contains("cache.fetch-timeout")
        );
        assert!(
            cache("  max-stale: -1m\n")
                .unwrap_err()
                .to_string()
                .contains("negative")
        );
    }

    #[test]
    fn cost_bounds_have_defaults_and_parse() {
        let config = load(SAMPLE).unwrap();
        assert_eq!(
            (
                config.cache.min_refresh_interval,
                config.cache.negative_ttl,
                config.aws.max_concurrent_calls
            ),
            (DEFAULT_MIN_REFRESH_INTERVAL, DEFAULT_NEGATIVE_TTL, 32)
        );
        let yaml = format!("{SAMPLE}cache:\n  min-refresh-interval: 500ms\n  negative-ttl: 2m\n")
            .replace(
                "    region: us-west-1\n",
                "    region: us-west-1\n    max-concurrent-calls: 4\n",
            );
        let config = load(&yaml).unwrap();
        assert_eq!(
            (
                config.cache.min_refresh_interval,
                config.cache.negative_ttl,
                config.aws.max_concurrent_calls
            ),
            (Duration::from_millis(500), Duration::from_secs(120), 4)
        );
        // 0 turns the refresh limit and negative caching off.
        let off = load(&format!(
            "{SAMPLE}cache:\n  min-refresh-interval: 0\n  negative-ttl: 0s\n"
        ))
        .unwrap();
        assert!(off.cache.min_refresh_interval.is_zero() && off.cache.negative_ttl.is_zero());
        let summary = config.summary();
        assert!(
            summary.contains("min-refresh-interval 500ms, negative-ttl 2m")
                && summary.contains("max-concurrent-calls 4"),
            "{summary}"
        );

        let err = load(&SAMPLE.replace(
            "    region: us-west-1\n",
            "    region: us-west-1\n    max-concurrent-calls: 0\n",
        ))
        .unwrap_err()
        .to_string();
        assert!(
            err.contains("test.yaml: secret-manager.aws.max-concurrent-calls: must be at least 1"),
            "{err}"
        );
        let err = load(&format!("{SAMPLE}cache:\n  negative-ttl: soon\n"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("cache.negative-ttl"), "{err}");
        let err = load(&format!("{SAMPLE}cache:\n  min-refresh-intervall: 1s\n"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("did you mean `min-refresh-interval`"), "{err}");
    }

    #[test]
    fn log_level_any_case_and_bad_level() {
        let yaml = SAMPLE.replace("level: info", "level: DEBUG");
        assert_eq!(load(&yaml).unwrap().log_level, LevelFilter::Debug);
        let yaml = SAMPLE.replace("level: info", "level: loud");
        let err = load(&yaml).unwrap_err().to_string();
        assert!(err.contains("log.level") && err.contains("loud"), "{err}");
    }

    #[test]
    fn static_keys_need_both_halves_and_never_echo_the_secret() {
        let base = SAMPLE.replace(
            "    resources:",
            "    access-key-id: AKIAEXAMPLE\n    secret-access-key: 12345\n    resources:",
        );
        let err = load(&base).unwrap_err().to_string();
        assert!(!err.contains("12345"), "{err}");
        assert!(err.contains("secret-access-key"), "{err}");
        let only_id = SAMPLE.replace(
            "    resources:",
            "    access-key-id: AKIAEXAMPLE\n    resources:",
        );
        assert!(
            load(&only_id)
                .unwrap_err()
                .to_string()
                .contains("secret-access-key is missing")
        );
    }

    #[test]
    fn assume_role_short_and_long_forms() {
        let short = SAMPLE.replace(
            "    resources:",
            "    assume-role: arn:aws:iam::999999999999:role/AccessToSecrets\n    resources:",
        );
        let role = load(&short).unwrap().aws.credentials.assume_role.unwrap();
        assert_eq!(
            role.role_arn,
            "arn:aws:iam::999999999999:role/AccessToSecrets"
        );
        let long = SAMPLE.replace(
            "    resources:",
            "    assume-role:\n      role-arn: arn:aws:iam::999999999999:role/R\n      session-name: agent\n      duration: 1h\n    sts-region: us-east-1\n    resources:",
        );
        let role = load(&long).unwrap().aws.credentials.assume_role.unwrap();
        assert_eq!(role.duration, Some(Duration::from_secs(3600)));
        assert_eq!(role.sts_region.as_deref(), Some("us-east-1"));
        let typo = long.replace("session-name", "sesion-name");
        let err = load(&typo).unwrap_err().to_string();
        assert!(err.contains("did you mean `session-name`?"), "{err}");
        let bad = short.replace("role/AccessToSecrets", "user/Bob");
        assert!(
            load(&bad)
                .unwrap_err()
                .to_string()
                .contains("not an IAM role ARN")
        );
    }

    #[test]
    fn no_listener_no_resources_and_bad_endpoint() {
        let no_resources = SAMPLE.replace(
            "      TestingSecret: arn:aws:secretsmanager:us-west-1:999999999999:secret:TestingSecret-tN6s2j\n",
            "      {}\n",
        );
        let no_resources = no_resources.replace("    resources:\n      {}", "    resources: {}");
        assert!(
            load(&no_resources)
                .unwrap_err()
                .to_string()
                .contains("no resources")
        );
        let bad = SAMPLE.replace("0.0.0.0:3005", "nowhere");
        let err = load(&bad).unwrap_err().to_string();
        assert!(
            err.contains("service.tcp.endpoint") && err.contains("nowhere"),
            "{err}"
        );
        let url = SAMPLE.replace("    resources:", "    endpoint: ftp://x\n    resources:");
        assert!(
            load(&url)
                .unwrap_err()
                .to_string()
                .contains("secret-manager.aws.endpoint")
        );
    }

    #[test]
    fn unix_socket_and_limits() {
        let uds = |extra: &str| {
            let yaml = SAMPLE.replace(
                "  tcp:\n    endpoint: 0.0.0.0:3005\n",
                &format!("  uds:\n    socket-path: /run/agent.sock\n{extra}"),
            );
            load(&yaml)
        };
        let c = uds("").unwrap();
        assert!(c.service.tcp.is_none());
        assert_eq!(c.service.uds.as_ref().unwrap().mode, 0o660);
        assert_eq!(
            uds("    mode: \"0600\"\n")
                .unwrap()
                .service
                .uds
                .unwrap()
                .mode,
            0o600
        );
        assert_eq!(
            uds("    mode: 0640\n").unwrap().service.uds.unwrap().mode,
            0o640
        );
        for bad in ["\"0999\"", "\"rw\"", "0400", "[1]", "77777"] {
            let err = uds(&format!("    mode: {bad}\n")).unwrap_err().to_string();
            assert!(err.contains("service.uds.mode"), "{bad}: {err}");
        }
        let none = SAMPLE.replace(
            "  tcp:\n    endpoint: 0.0.0.0:3005\n",
            "  max-connections: 5\n",
        );
        assert!(load(&none).unwrap_err().to_string().contains("no listener"));
        let limits = SAMPLE.replace(
            "    endpoint: 0.0.0.0:3005\n",
            "    endpoint: 0.0.0.0:3005\n  max-connections: 5\n  request-timeout: 2s\n",
        );
        let c = load(&limits).unwrap();
        assert_eq!(
            (c.service.max_connections, c.service.request_timeout),
            (5, Duration::from_secs(2))
        );
        let zero = limits.replace("max-connections: 5", "max-connections: 0");
        assert!(
            load(&zero)
                .unwrap_err()
                .to_string()
                .contains("service.max-connections")
        );
        let tls = SAMPLE.replace(
            "    endpoint: 0.0.0.0:3005\n",
            "    endpoint: 0.0.0.0:3005\n    tls:\n      cert-file: /nonexistent/c.pem\n      key-file: /nonexistent/k.pem\n",
        );
        let err = load(&tls).unwrap_err().to_string();
        assert!(
            err.contains("service.tcp.tls.cert-file") && err.contains("/nonexistent/c.pem"),
            "{err}"
        );
    }

    #[test]
    fn client_tokens() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("t");
        let with_auth = |tokens: &str| load(&format!("{SAMPLE}auth:\n  tokens:\n{tokens}"));
        std::fs::write(&file, "s3cret-token\n").unwrap();
        let c = with_auth(&format!(
            "    - token-file: {}\n      resources: [\"*\"]\n",
            file.display()
        ))
        .unwrap();
        assert_eq!(c.auth.len(), 1);
        assert_eq!(c.auth[0].value.expose_secret(), "s3cret-token");
        assert_eq!(c.auth[0].scope, TokenScope::All);
        assert!(
            !format!("{c:?}").contains("s3cret-token"),
            "Debug shows a token"
        );
        let c = with_auth(&format!(
            "    - token-file: {}\n      resources: [TestingSecret]\n",
            file.display()
        ))
        .unwrap();
        assert!(matches!(&c.auth[0].scope, TokenScope::Only(names) if names.len() == 1));

        let err = with_auth(&format!(
            "    - token-file: {}\n      resources: [TestingSecrte]\n",
            file.display()
        ))
        .unwrap_err()
        .to_string();
        assert!(
            err.contains("auth.tokens[0].resources")
                && err.contains("did you mean `TestingSecret`?"),
            "{err}"
        );
        std::fs::write(&file, " \n").unwrap();
        let err = with_auth(&format!(
            "    - token-file: {}\n      resources: [\"*\"]\n",
            file.display()
        ))
        .unwrap_err()
        .to_string();
        assert!(err.contains("is empty"), "{err}");
        let err =
            with_auth("    - token-env: SECRET_AGENT_TEST_UNSET_VAR\n      resources: [\"*\"]\n")
                .unwrap_err()
                .to_string();
        assert!(
            err.contains("SECRET_AGENT_TEST_UNSET_VAR is not set"),
            "{err}"
        );
        let err = with_auth(&format!(
            "    - token-file: {}\n      token-env: X\n      resources: [\"*\"]\n",
            file.display()
        ))
        .unwrap_err()
        .to_string();
        assert!(
            err.contains("exactly one of token-file and token-env"),
            "{err}"
        );
        assert!(with_auth("    []\n").is_err());
        std::fs::write(&file, "tok").unwrap();
        let err = with_auth(&format!(
            "    - token-file: {}\n      resources: [\"*\", TestingSecret]\n",
            file.display()
        ))
        .unwrap_err()
        .to_string();
        assert!(err.contains("`*` already means every resource"), "{err}");
    }

    #[test]
    fn a_resource_name_given_twice_is_refused_with_its_line() {
        let yaml = SAMPLE.replace(
            "    resources:\n",
            "    resources:\n      TestingSecret: arn:aws:secretsmanager:us-west-1:999999999999:secret:Other-AbCdEf\n      Other: arn:aws:secretsmanager:us-west-1:999999999999:secret:Other-AbCdEf\n",
        );
        let err = load(&yaml).unwrap_err().to_string();
        assert_eq!(
            err,
            "test.yaml:12: secret-manager.aws.resources.TestingSecret: `TestingSecret` is given twice; a name stands for one secret ARN"
        );
        // Two names for one ARN are fine.
        let yaml = SAMPLE.replace(
            "    resources:\n",
            "    resources:\n      Alias: arn:aws:secretsmanager:us-west-1:999999999999:secret:TestingSecret-tN6s2j\n",
        );
        assert_eq!(load(&yaml).unwrap().aws.resources.len(), 2);
    }

    /// Deep nesting of every kind is refused at once, by line; the time
    /// bound only catches a hang (integration/bench.sh measures it).
    #[test]
    fn deep_nesting_is_refused_at_once() {
        let size = 200 * 1024;
        let shapes = [
            "[".repeat(size),
            "{a: ".repeat(size / 4),
            format!("service: {}", "{tcp: ".repeat(size / 6)),
            "- ".repeat(size / 2),
            "a: [".repeat(size / 4),
            (0..600).map(|i| format!("{}a:\n", " ".repeat(i))).collect(),
        ];
        let started = std::time::Instant::now();
        for text in &shapes {
            let err = load(text).unwrap_err().to_string();
            assert!(
                err.starts_with("test.yaml:") && err.contains(": nested more than 32 levels deep"),
                "{err}"
            );
        }
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "{:?}",
            started.elapsed()
        );
        // 32 levels (the root, service, uds and 29 lists) pass the depth
        // check and meet the schema; 33 do not.
        let mode = |levels: usize| {
            let yaml = SAMPLE.replace(
                "    endpoint: 0.0.0.0:3005\n",
                &format!(
                    "    endpoint: 0.0.0.0:3005\n  uds:\n    socket-path: /s\n    mode: {}{}\n",
                    "[".repeat(levels - 3),
                    "]".repeat(levels - 3)
                ),
            );
            load(&yaml).unwrap_err().to_string()
        };
        let err = mode(MAX_NESTING);
        assert!(err.contains("service.uds.mode: must be octal"), "{err}");
        assert_eq!(
            mode(MAX_NESTING + 1),
            "test.yaml:7: nested more than 32 levels deep; a configuration nests at most 5"
        );
    }

    #[test]
    fn a_file_over_a_mebibyte_is_refused() {
        let big = format!("{SAMPLE}{}", "#".repeat(MAX_FILE_BYTES as usize));
        let expected = "larger than 1048576 bytes (1 MiB); is it the config file?";
        let err = load(&big).unwrap_err().to_string();
        assert!(
            err.starts_with("test.yaml: the file is ") && err.ends_with(expected),
            "{err}"
        );
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("big.yaml");
        std::fs::write(&path, &big).unwrap();
        let err = Config::load(&path).unwrap_err().to_string();
        assert!(err.ends_with(expected), "{err}");
        // Cut inside a multi-byte character, it is still too large, not bad UTF-8.
        std::fs::write(&path, "é".repeat(MAX_FILE_BYTES as usize)).unwrap();
        let err = Config::load(&path).unwrap_err().to_string();
        assert!(err.ends_with(expected), "{err}");
        std::fs::write(&path, &big[..MAX_FILE_BYTES as usize]).unwrap();
        Config::load(&path).unwrap();
    }

    #[test]
    fn garbage_is_a_clear_error() {
        for text in ["", "[", "- a\n- b", "service: 5", "\t\u{0}"] {
            let err = load(text).unwrap_err().to_string();
            assert!(err.starts_with("test.yaml"), "{err}");
        }
    }

    /// Property tests: any input gives a config or a clear error, never a
    /// panic. `PROPTEST_CASES=100000 cargo test --lib proptests` runs longer.
    mod proptests {
        use super::*;
        use proptest::prelude::*;

        fn samples() -> Vec<String> {
            let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("config");
            let mut texts: Vec<String> = std::fs::read_dir(dir)
                .unwrap()
                .map(|e| std::fs::read_to_string(e.unwrap().path()).unwrap())
                .collect();
            texts.push(SAMPLE.to_owned());
            texts
        }

        fn assert_clear(result: Result<Config, ConfigError>) {
            if let Err(e) = result {
                let text = e.to_string();
                assert!(text.starts_with("test.yaml"), "{text}");
                assert!(text.len() < 2000, "{text}");
            }
        }

        /// Fragments that make YAML of the agent's shape likely.
        fn yamlish() -> impl Strategy<Value = String> {
            let token = prop_oneof![
                Just("service:".to_owned()),
                Just("tcp:".to_owned()),
                Just("endpoint: 127.0.0.1:0".to_owned()),
                Just("secret-manager:".to_owned()),
                Just("aws:".to_owned()),
                Just("resources:".to_owned()),
                Just("a: arn:aws:secretsmanager:us-west-1:123456789012:secret:a".to_owned()),
                Just("cache:".to_owned()),
                Just("ttl: 5m".to_owned()),
                Just("auth:".to_owned()),
                Just("tokens:".to_owned()),
                Just("- token-env: HOME".to_owned()),
                Just("resources: [\"*\"]".to_owned()),
                Just("assume-role:".to_owned()),
                Just("uds:".to_owned()),
                Just("mode: 0660".to_owned()),
                Just("[".to_owned()),
                Just("{".to_owned()),
                Just("&a".to_owned()),
                Just("*a".to_owned()),
                Just("!!binary".to_owned()),
                "[ -~]{0,12}",
            ];
            prop::collection::vec((0usize..4, token), 0..24).prop_map(|lines| {
                lines
                    .into_iter()
                    .map(|(indent, t)| format!("{}{t}\n", "  ".repeat(indent)))
                    .collect()
            })
        }

        proptest! {
            #[test]
            fn arbitrary_text(text in "\\PC{0,300}") {
                assert_clear(Config::from_yaml(&text, Path::new("test.yaml")));
            }

            /// Any mix of flow and block nesting past the limit is refused
            /// by the depth check, wherever it starts.
            #[test]
            fn deep_nesting_of_any_mix(
                prefix in prop::sample::select(vec!["", "a: ", "service:\n  tcp: ", "- "]),
                levels in prop::collection::vec(0usize..4, MAX_NESTING + 1..400),
            ) {
                let mut text = prefix.to_owned();
                for (i, kind) in levels.iter().enumerate() {
                    text.push_str(match kind {
                        0 => "[",
                        1 => "{k: ",
                        2 => "[x, ",
                        _ => "{a: 1, b: ",
                    });
                    if i % 7 == 6 {
                        text.push('\n');
                    }
                }
                let err = Config::from_yaml(&text, Path::new("test.yaml")).unwrap_err().to_string();
                prop_assert!(err.contains("nested more than 32 levels deep"), "{}", err);
            }

            #[test]
            fn yaml_of_the_right_shape(text in yamlish()) {
                assert_clear(Config::from_yaml(&text, Path::new("test.yaml")));
            }

            #[test]
            fn mutated_samples(
                pick in any::<prop::sample::Index>(),
                at in any::<prop::sample::Index>(),
                len in 0usize..20,
                insert in "[ -~\n\t]{0,10}",
            ) {
                let samples = samples();
                let text = pick.get(&samples);
                let chars: Vec<char> = text.chars().collect();
                let start = at.index(chars.len() + 1);
                let end = (start + len).min(chars.len());
                let mutated: String = chars[..start]
                    .iter()
                    .chain(insert.chars().collect::<Vec<_>>().iter())
                    .chain(chars[end..].iter())
                    .collect();
                assert_clear(Config::from_yaml(&mutated, Path::new("test.yaml")));
            }
        }
    }
}
