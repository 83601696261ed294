//! The file as serde reads it: one struct per YAML mapping, kebab-case keys,
//! unknown keys refused. Nothing here checks values beyond their YAML type;
//! [`super::validate`] does that. A key that is absent or `null` takes the
//! default named in its doc.

use std::collections::BTreeMap;
use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use secrecy::SecretString;
use serde::Deserialize;
use serde::de::{self, Deserializer, Visitor};

/// The whole file.
#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub(super) struct RawConfig {
    /// Listeners and client limits; required.
    pub service: RawService,
    /// The secrets to serve and how to reach AWS; required.
    pub secret_manager: RawSecretManager,
    /// Cache settings; every key has a default.
    #[serde(default)]
    pub cache: RawCache,
    /// Client tokens; absent means open access.
    pub auth: Option<RawAuth>,
    /// Logging; every key has a default.
    #[serde(default)]
    pub log: RawLog,
    /// Secrets fetched once serving starts; none by default.
    pub prefetch: Option<RawPrefetch>,
    /// Files kept written with secrets; default none.
    pub render: Option<Vec<RawRender>>,
}

/// `render[i]`: exactly one of `resource` and `template`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub(super) struct RawRender {
    /// The file kept up to date; an absolute path.
    pub path: PathBuf,
    /// A configured resource (or a name under a pattern) written as is.
    pub resource: Option<String>,
    /// With `resource`: one top-level key of its JSON object.
    pub key: Option<String>,
    /// A minijinja template; `secret("<name>")` reads a resource.
    pub template: Option<String>,
    /// Octal permission bits, as a string (`"0640"`) or a number; none for
    /// others; default 0600.
    pub mode: Option<serde_yaml::Value>,
    /// A command (argv, no shell) run after the file changed.
    pub on_change: Option<Vec<String>>,
    /// Time `on-change` may run before it is killed; default 30s.
    pub on_change_timeout: Option<DurationValue>,
}

/// `prefetch`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub(super) struct RawPrefetch {
    #[serde(default)]
    pub secrets: Vec<RawPrefetchItem>,
    #[serde(default)]
    pub tags: Vec<RawPrefetchItem>,
    pub jitter: Option<DurationValue>,
    pub limit: Option<usize>,
}

/// `prefetch.secrets[i]` (`name`) or `prefetch.tags[i]` (`key`), each with
/// an optional `role`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub(super) struct RawPrefetchItem {
    pub name: Option<String>,
    pub key: Option<String>,
    pub role: Option<String>,
}

/// `service`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub(super) struct RawService {
    /// The TCP listener; at least one of `tcp` and `uds` is required.
    pub tcp: Option<RawTcp>,
    /// The Unix-socket listener.
    pub uds: Option<RawUds>,
    /// Most client connections open at once, over all listeners; default 1024.
    pub max_connections: Option<usize>,
    /// What connections beyond `max-connections` get: `queue` (default)
    /// or `refuse` (429, as the AWS agent's `max_conn`).
    pub over_limit: Option<String>,
    /// Time a client has to send its request headers, and the keep-alive
    /// idle limit; default 5s.
    pub request_timeout: Option<DurationValue>,
    /// Time in-flight requests get to finish on SIGTERM; default 10s.
    pub shutdown_timeout: Option<DurationValue>,
    /// Threads that serve connections; default half the cores, at least one.
    pub workers: Option<usize>,
}

/// `service.tcp`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub(super) struct RawTcp {
    /// `host:port` or `ip:port`; a host name is resolved once, at load.
    pub endpoint: String,
    /// Serve HTTPS instead of HTTP.
    pub tls: Option<RawTls>,
}

/// `service.tcp.tls`: PEM files.
#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub(super) struct RawTls {
    /// The server's certificate chain.
    pub cert_file: PathBuf,
    /// The server's private key.
    pub key_file: PathBuf,
    /// When set, clients must present a certificate signed by this CA.
    pub ca_file: Option<PathBuf>,
}

/// `service.uds`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub(super) struct RawUds {
    /// Where the socket file is created.
    pub socket_path: PathBuf,
    /// Octal permission bits of the socket file, as a number (`0660`) or a
    /// string (`"0660"`); default 0660.
    pub mode: Option<serde_yaml::Value>,
}

/// `auth`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub(super) struct RawAuth {
    /// At least one token.
    pub tokens: Vec<RawToken>,
    /// What clients of the secret agent protocol (Aerospike servers), which
    /// cannot send a token, may read; default: nothing.
    pub secret_agent_protocol: Option<RawProtocolGrant>,
    /// Headers that carry a client token besides `Authorization: Bearer`;
    /// default: the AWS agent's `X-Aws-Parameters-Secrets-Token` and
    /// `X-Vault-Token`.
    pub token_headers: Option<Vec<String>>,
}

/// `auth.secret-agent-protocol`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub(super) struct RawProtocolGrant {
    /// Resource names, or `["*"]` for all.
    pub resources: Vec<String>,
}

/// `auth.tokens[i]`: exactly one of `token-file` and `token-env`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub(super) struct RawToken {
    /// A file holding the token (trailing white space dropped).
    pub token_file: Option<PathBuf>,
    /// An environment variable holding the token, or a list of them: the
    /// first one that is set is used (the AWS agent's `ssrf_env_variables`).
    pub token_env: Option<OneOrMany>,
    /// Resource names the token may read, or `["*"]` for all.
    pub resources: Vec<String>,
    /// IAM roles the token may read as (`roleArn` on the AWS agent's
    /// routes): role ARNs, ARN prefixes ending in `*`, or `["*"]`; none
    /// by default.
    #[serde(default)]
    pub roles: Vec<String>,
}

/// One name or a list of names.
#[derive(Deserialize)]
#[serde(untagged)]
pub(super) enum OneOrMany {
    One(String),
    Many(Vec<String>),
}

impl OneOrMany {
    pub(super) fn into_vec(self) -> Vec<String> {
        match self {
            OneOrMany::One(one) => vec![one],
            OneOrMany::Many(many) => many,
        }
    }
}

/// `secret-manager`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub(super) struct RawSecretManager {
    pub aws: RawAws,
}

/// `secret-manager.aws`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub(super) struct RawAws {
    /// Default region (STS, fallback); default: the environment's, the
    /// profile's, the instance's, else the first resource's.
    pub region: Option<String>,
    /// Secrets Manager endpoint URL; default: the regional AWS endpoint.
    pub endpoint: Option<String>,
    /// Systems Manager (Parameter Store) endpoint URL; default:
    /// `AWS_ENDPOINT_URL_SSM`, else the regional AWS endpoint.
    pub ssm_endpoint: Option<String>,
    /// Resource name -> secret or parameter ARN; at least one.
    #[serde(deserialize_with = "unique_names")]
    pub resources: BTreeMap<String, String>,
    /// Static access key id; needs `secret-access-key`.
    pub access_key_id: Option<String>,
    /// Static secret key; needs `access-key-id`.
    #[serde(default, deserialize_with = "sensitive")]
    pub secret_access_key: Option<SecretString>,
    /// Session token of temporary static keys.
    #[serde(default, deserialize_with = "sensitive")]
    pub session_token: Option<SecretString>,
    /// Shared-file profile; default `AWS_PROFILE`, else `default`.
    pub profile: Option<String>,
    /// Keys from this file only (shared credentials format), re-read when
    /// it changes: a path, or a map with `path`, `profile` and
    /// `require-session-token`.
    #[serde(default, deserialize_with = "path_or_map")]
    pub credentials_file: Option<RawCredentialsFile>,
    /// Assume this role over the other credentials: a role ARN, or a map
    /// with `role-arn` and more settings.
    #[serde(default, deserialize_with = "arn_or_map")]
    pub assume_role: Option<RawAssumeRole>,
    /// STS endpoint URL for assume-role; default: the regional one.
    pub sts_endpoint: Option<String>,
    /// STS region for assume-role; default `region`.
    pub sts_region: Option<String>,
    /// Most GetSecretValue calls in flight at once; default 32.
    pub max_concurrent_calls: Option<usize>,
    /// Most roles read as (`roleArn`) at once, least recently used
    /// dropped beyond it; default 20.
    pub max_roles: Option<usize>,
    /// Secret agent protocol: base64-encode stored text before sending it
    /// (true), or send it as stored, already in base64 (false, the default).
    pub convert_to_base64: Option<bool>,
    /// Event-driven refresh from an SQS queue; default off.
    pub events: Option<RawEvents>,
}

/// `secret-manager.aws.events`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub(super) struct RawEvents {
    /// URL of the SQS queue an EventBridge rule feeds with Secrets Manager events.
    pub queue_url: String,
    /// SQS endpoint URL; default: `AWS_ENDPOINT_URL_SQS`, else the regional one.
    pub endpoint: Option<String>,
}

/// `assume-role`, read from either form (see [`arn_or_map`]).
#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub(super) struct RawAssumeRole {
    /// The IAM role's ARN.
    pub role_arn: String,
    /// STS `ExternalId`; never echoed.
    #[serde(default, deserialize_with = "sensitive")]
    pub external_id: Option<SecretString>,
    /// STS session name; default `secret-agent`.
    pub session_name: Option<String>,
    /// Session lifetime asked of STS (15m to 12h); default STS's (1h).
    pub duration: Option<DurationValue>,
}

/// `assume-role:` in its short form, a role ARN (`assume-role: arn:...`),
/// or its long form, the map of [`RawAssumeRole`]; absent or `null` is none.
fn arn_or_map<'de, D: Deserializer<'de>>(
    deserializer: D,
) -> Result<Option<RawAssumeRole>, D::Error> {
    short_or_map(
        deserializer,
        "a role ARN or a map with role-arn, external-id, session-name, duration",
        |role_arn| RawAssumeRole {
            role_arn: role_arn.to_owned(),
            external_id: None,
            session_name: None,
            duration: None,
        },
    )
}

/// A key written as text (its short form, which `short` turns into `T`)
/// or as the map `T` reads (its long form); absent or `null` is none.
fn short_or_map<'de, D, T>(
    deserializer: D,
    expecting: &'static str,
    short: fn(&str) -> T,
) -> Result<Option<T>, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de>,
{
    struct V<T> {
        expecting: &'static str,
        short: fn(&str) -> T,
    }
    impl<'de, T: Deserialize<'de>> Visitor<'de> for V<T> {
        type Value = Option<T>;
        fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
            f.write_str(self.expecting)
        }
        fn visit_none<E: de::Error>(self) -> Result<Self::Value, E> {
            Ok(None)
        }
        fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
            Ok(None)
        }
        fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
            d.deserialize_any(self)
        }
        fn visit_str<E: de::Error>(self, text: &str) -> Result<Self::Value, E> {
            Ok(Some((self.short)(text)))
        }
        fn visit_map<A: de::MapAccess<'de>>(self, map: A) -> Result<Self::Value, A::Error> {
            T::deserialize(de::value::MapAccessDeserializer::new(map)).map(Some)
        }
    }
    deserializer.deserialize_option(V { expecting, short })
}

/// `credentials-file`, read from either form (see [`path_or_map`]).
#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub(super) struct RawCredentialsFile {
    /// The file, in the shared credentials format (`[default]`,
    /// `aws_access_key_id`, ...).
    pub path: String,
    /// The profile read; default `AWS_PROFILE`, else `default`.
    pub profile: Option<String>,
    /// Refuse keys without `aws_session_token`; default false.
    pub require_session_token: Option<bool>,
}

/// `credentials-file:` as a path, or as the map of [`RawCredentialsFile`];
/// absent or `null` is none.
fn path_or_map<'de, D: Deserializer<'de>>(
    deserializer: D,
) -> Result<Option<RawCredentialsFile>, D::Error> {
    short_or_map(
        deserializer,
        "a file path or a map with path, profile, require-session-token",
        |path| RawCredentialsFile {
            path: path.to_owned(),
            profile: None,
            require_session_token: None,
        },
    )
}

/// `cache`.
#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub(super) struct RawCache {
    /// Time a value is served before AWS is asked again; `0` disables
    /// caching; default 5m.
    pub ttl: Option<DurationValue>,
    /// Time before expiry that a value that was read is refreshed in the
    /// background; default a fifth of `ttl`.
    pub refresh_ahead: Option<DurationValue>,
    /// Time past expiry a value is still served while AWS fails
    /// transiently; default 1h.
    pub max_stale: Option<DurationValue>,
    /// Most values kept (least recently used goes first); default 1000.
    pub max_entries: Option<usize>,
    /// Most bytes all cached values take, metadata included (least
    /// recently used goes first); at least 1048576; default 67108864 (64 MiB).
    pub max_bytes: Option<usize>,
    /// Fetch every resource at start-up; default false.
    pub prefetch: Option<bool>,
    /// Deadline of one fetch, retries included; default 5s.
    pub fetch_timeout: Option<DurationValue>,
    /// Least time between forced refreshes of one entry after a small
    /// burst; `0` removes the limit; default 1s.
    pub min_refresh_interval: Option<DurationValue>,
    /// Time a not-found answer is remembered; `0` turns it off; default 30s.
    pub negative_ttl: Option<DurationValue>,
    /// Longest wait of a reader of an expired value (within max-stale) for
    /// its refresh before it gets that value, marked stale; default 200ms.
    pub stale_wait: Option<DurationValue>,
    /// New names under patterns fetched per second (burst twice that);
    /// `0` removes the limit; default 50.
    pub new_names_per_second: Option<u32>,
}

/// `log`.
#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub(super) struct RawLog {
    /// off, error, warn, info, debug or trace, any case; default info.
    pub level: Option<String>,
}

/// A duration written as `300s`, `5m`, `1h` (humantime syntax), or a bare
/// number of seconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct DurationValue(pub Duration);

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
pub(super) fn parse_duration(text: &str) -> Result<Duration, String> {
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::tests::{SAMPLE, load};

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
}
