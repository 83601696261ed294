//! The AWS Workload Credentials Provider's nested TOML (`[logging]`,
//! `[capabilities.secrets_manager]` and its `cache`, `security` and
//! `prefetch` tables), moved into the flat settings of the AWS Secrets
//! Manager Agent, which [`super`] converts: one conversion for
//! both forms. A file is nested when it has `[logging]` or `[capabilities]`;
//! then a flat key beside them is refused, as the provider refuses it.

use serde::Deserialize;

use super::{AwsAgentToml, Number, TomlProblem};

/// `[logging]`.
#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct Logging {
    log_level: Option<String>,
    log_to_file: Option<bool>,
}

/// `[capabilities]`.
#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct Capabilities {
    secrets_manager: Option<SecretsManager>,
    /// ACM certificate export: read only to refuse it by name.
    acm: Option<toml::Value>,
}

/// `[capabilities.secrets_manager]`.
#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct SecretsManager {
    enabled: Option<bool>,
    http_port: Option<Number>,
    cache: Option<Cache>,
    security: Option<Security>,
    path_prefix: Option<String>,
    max_conn: Option<Number>,
    max_roles: Option<Number>,
    region: Option<String>,
    ignore_transient_errors: Option<bool>,
    validate_credentials: Option<bool>,
    prefetch: Option<Prefetch>,
    credentials_file_path: Option<String>,
}

/// `[capabilities.secrets_manager.cache]`.
#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct Cache {
    ttl_seconds: Option<Number>,
    cache_size: Option<Number>,
}

/// `[capabilities.secrets_manager.security]`.
#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct Security {
    ssrf_headers: Option<Vec<String>>,
    ssrf_env_variables: Option<Vec<String>>,
}

/// `[prefetch]` (flat) or `[capabilities.secrets_manager.prefetch]`.
#[derive(Deserialize, Default, Clone, Debug, PartialEq)]
#[serde(deny_unknown_fields)]
pub(super) struct Prefetch {
    /// Most of the cache the prefetch fills, 0.1 to 1.0 (default 0.8).
    pub(super) cache_buffer_ratio: Option<f64>,
    /// Up to this many seconds (0 to 10) of random delay before it starts.
    pub(super) max_jitter_seconds: Option<Number>,
    /// Secrets carrying a tag with each key, found by ListSecrets.
    #[serde(default)]
    pub(super) filter_tags: Vec<TagFilter>,
    /// Secrets named one by one.
    #[serde(default)]
    pub(super) secrets: Vec<PrefetchSecret>,
}

/// One `[[...prefetch.filter_tags]]`.
#[derive(Deserialize, Clone, Debug, PartialEq)]
#[serde(deny_unknown_fields)]
pub(super) struct TagFilter {
    pub(super) key: String,
    pub(super) role_arn: Option<String>,
}

/// One `[[...prefetch.secrets]]`.
#[derive(Deserialize, Clone, Debug, PartialEq)]
#[serde(deny_unknown_fields)]
pub(super) struct PrefetchSecret {
    pub(super) secret_id: String,
    pub(super) role_arn: Option<String>,
}

/// Which form a file is in: it decides the key paths messages name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Form {
    Flat,
    Nested,
}

impl Form {
    /// The path of the flat setting `key` in this form.
    pub(super) fn key(self, key: &'static str) -> &'static str {
        if self == Form::Flat {
            return key;
        }
        NESTED_PATHS
            .iter()
            .find(|(flat, _)| *flat == key)
            .map_or(key, |(_, nested)| nested)
    }
}

/// Each flat key and where the nested form keeps it.
const NESTED_PATHS: [(&str, &str); 18] = [
    ("log_level", "logging.log_level"),
    ("log_to_file", "logging.log_to_file"),
    ("http_port", "capabilities.secrets_manager.http_port"),
    (
        "ttl_seconds",
        "capabilities.secrets_manager.cache.ttl_seconds",
    ),
    (
        "cache_size",
        "capabilities.secrets_manager.cache.cache_size",
    ),
    (
        "ssrf_headers",
        "capabilities.secrets_manager.security.ssrf_headers",
    ),
    (
        "ssrf_env_variables",
        "capabilities.secrets_manager.security.ssrf_env_variables",
    ),
    ("path_prefix", "capabilities.secrets_manager.path_prefix"),
    ("max_conn", "capabilities.secrets_manager.max_conn"),
    ("max_roles", "capabilities.secrets_manager.max_roles"),
    ("region", "capabilities.secrets_manager.region"),
    (
        "ignore_transient_errors",
        "capabilities.secrets_manager.ignore_transient_errors",
    ),
    (
        "validate_credentials",
        "capabilities.secrets_manager.validate_credentials",
    ),
    ("prefetch", "capabilities.secrets_manager.prefetch"),
    (
        "credentials_file_path",
        "capabilities.secrets_manager.credentials_file_path",
    ),
    (
        "prefetch.cache_buffer_ratio",
        "capabilities.secrets_manager.prefetch.cache_buffer_ratio",
    ),
    (
        "prefetch.max_jitter_seconds",
        "capabilities.secrets_manager.prefetch.max_jitter_seconds",
    ),
    (
        "prefetch.role_arn",
        "capabilities.secrets_manager.prefetch.role_arn",
    ),
];

/// `raw` with its nested tables moved into the flat fields, and its form.
pub(super) fn flatten(mut raw: AwsAgentToml) -> Result<(AwsAgentToml, Form), TomlProblem> {
    let logging = raw.logging.take();
    let capabilities = raw.capabilities.take();
    if logging.is_none() && capabilities.is_none() {
        return Ok((raw, Form::Flat));
    }
    // No flat key beside the nested tables.
    let flat_set = [
        ("log_level", raw.log_level.is_some()),
        ("log_to_file", raw.log_to_file.is_some()),
        ("http_port", raw.http_port.is_some()),
        ("ttl_seconds", raw.ttl_seconds.is_some()),
        ("cache_size", raw.cache_size.is_some()),
        ("ssrf_headers", raw.ssrf_headers.is_some()),
        ("ssrf_env_variables", raw.ssrf_env_variables.is_some()),
        ("path_prefix", raw.path_prefix.is_some()),
        ("max_conn", raw.max_conn.is_some()),
        ("max_roles", raw.max_roles.is_some()),
        ("region", raw.region.is_some()),
        (
            "ignore_transient_errors",
            raw.ignore_transient_errors.is_some(),
        ),
        ("validate_credentials", raw.validate_credentials.is_some()),
        ("prefetch", raw.prefetch.is_some()),
        ("credentials_file_path", raw.credentials_file_path.is_some()),
    ];
    if let Some((key, _)) = flat_set.iter().find(|(_, set)| *set) {
        return Err(TomlProblem::FlatBesideNested {
            key,
            nested: Form::Nested.key(key),
        });
    }
    let logging = logging.unwrap_or_default();
    raw.log_level = logging.log_level;
    raw.log_to_file = logging.log_to_file;
    let capabilities = capabilities.unwrap_or_default();
    if capabilities.acm.is_some() {
        return Err(TomlProblem::Unsupported(
            "capabilities.acm: ACM certificate export is not something this agent does; remove the table",
        ));
    }
    let sm = capabilities.secrets_manager.unwrap_or_default();
    if sm.enabled == Some(false) {
        return Err(TomlProblem::Unsupported(
            "capabilities.secrets_manager.enabled = false: serving secrets is all this agent does; remove the setting",
        ));
    }
    let cache = sm.cache.unwrap_or_default();
    let security = sm.security.unwrap_or_default();
    // The provider allows no empty cache here.
    if let Some(size) = &cache.cache_size {
        size.within(Form::Nested.key("cache_size"), 1..=1000)?;
    }
    raw.http_port = sm.http_port;
    raw.ttl_seconds = cache.ttl_seconds;
    raw.cache_size = cache.cache_size;
    raw.ssrf_headers = security.ssrf_headers;
    raw.ssrf_env_variables = security.ssrf_env_variables;
    raw.path_prefix = sm.path_prefix;
    raw.max_conn = sm.max_conn;
    raw.max_roles = sm.max_roles;
    raw.region = sm.region;
    raw.ignore_transient_errors = sm.ignore_transient_errors;
    raw.validate_credentials = sm.validate_credentials;
    raw.prefetch = sm.prefetch;
    raw.credentials_file_path = sm.credentials_file_path;
    Ok((raw, Form::Nested))
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::super::{ConversionError, convert_aws_agent_config};
    use super::*;
    use crate::config::Config;

    fn convert(toml: &str) -> Result<String, String> {
        convert_aws_agent_config("w.toml", toml, Some("123456789012"), Some("us-east-1"))
            .map(|c| c.yaml)
            .map_err(|e| e.to_string())
    }

    /// The YAML loads, its token from `HOME` (always set).
    fn load(yaml: &str) -> Config {
        let yaml = yaml.replace("token-env: [AWS_TOKEN,", "token-env: [HOME,");
        Config::from_yaml(&yaml, Path::new("w.yaml")).unwrap_or_else(|e| panic!("{e}\n{yaml}"))
    }

    #[test]
    fn the_providers_credentials_file_takes_only_temporary_keys() {
        // Nested, as its suite writes it: a session token is required.
        let nested = "[capabilities.secrets_manager]\nregion = \"us-east-1\"\ncredentials_file_path = \"/run/creds\"\n";
        let config = load(&convert(nested).unwrap());
        let file = config.aws.credentials.file().expect("a credentials file");
        assert_eq!(file.path, std::path::Path::new("/run/creds"));
        assert!(file.require_session_token);
        // Beside the nested tables, the flat key is refused by its nested name.
        let both = format!("credentials_file_path = \"/x\"\n{nested}");
        let e = convert(&both).unwrap_err();
        assert!(
            e.contains("capabilities.secrets_manager.credentials_file_path"),
            "{e}"
        );
    }

    #[test]
    fn the_nested_form_converts_as_the_flat_one() {
        let nested = r#"
[logging]
log_level = "debug"
log_to_file = false

[capabilities.secrets_manager]
enabled = true
http_port = 2775
path_prefix = "/v1/"
max_conn = 10
max_roles = 5
region = "eu-west-1"
ignore_transient_errors = false
validate_credentials = true

[capabilities.secrets_manager.cache]
ttl_seconds = 60
cache_size = 7

[capabilities.secrets_manager.security]
ssrf_headers = ["X-My-Token"]
ssrf_env_variables = ["HOME"]

[capabilities.secrets_manager.prefetch]
cache_buffer_ratio = 0.5
max_jitter_seconds = 2

[[capabilities.secrets_manager.prefetch.secrets]]
secret_id = "app/db"

[[capabilities.secrets_manager.prefetch.secrets]]
secret_id = "app/other"
role_arn = "arn:aws:iam::123456789012:role/reader"

[[capabilities.secrets_manager.prefetch.filter_tags]]
key = "team"
"#;
        let yaml = convert(nested).unwrap();
        let config = load(&yaml);
        assert_eq!(config.log_level, log::LevelFilter::Debug);
        assert_eq!(
            config.service.tcp.as_ref().unwrap().addr.to_string(),
            "127.0.0.1:2775"
        );
        assert_eq!(config.service.max_connections, 10);
        assert_eq!(config.aws.max_roles, 5);
        assert_eq!(config.aws.region.as_deref(), Some("eu-west-1"));
        assert_eq!(config.cache.ttl, std::time::Duration::from_secs(60));
        assert_eq!(config.cache.max_entries, 7);
        assert_eq!(config.cache.max_stale, std::time::Duration::ZERO);
        assert_eq!(config.token_headers, ["x-my-token"]);
        // Its prefetch: 0.5 of 7 entries, names and tags with their roles.
        assert_eq!(config.prefetch.limit, 3);
        assert_eq!(config.prefetch.jitter, std::time::Duration::from_secs(2));
        assert_eq!(config.prefetch.secrets[0], ("app/db".to_owned(), None));
        assert_eq!(
            config.prefetch.secrets[1].1.as_ref().unwrap().as_str(),
            "arn:aws:iam::123456789012:role/reader"
        );
        assert_eq!(config.prefetch.tags[0], ("team".to_owned(), None));
        // The provider's file reads as any role by roleArn.
        let role = crate::domain::RoleArn::parse("arn:aws:iam::123456789012:role/any").unwrap();
        assert!(config.auth[0].roles.allows(&role));

        // The same settings written flat give the same YAML.
        let flat = r#"
log_level = "debug"
log_to_file = false
http_port = 2775
path_prefix = "/v1/"
max_conn = 10
max_roles = 5
region = "eu-west-1"
ignore_transient_errors = false
validate_credentials = true
ttl_seconds = 60
cache_size = 7
ssrf_headers = ["X-My-Token"]
ssrf_env_variables = ["HOME"]

[prefetch]
cache_buffer_ratio = 0.5
max_jitter_seconds = 2

[[prefetch.secrets]]
secret_id = "app/db"

[[prefetch.secrets]]
secret_id = "app/other"
role_arn = "arn:aws:iam::123456789012:role/reader"

[[prefetch.filter_tags]]
key = "team"
"#;
        assert_eq!(
            convert(flat).unwrap().replace("w.toml", ""),
            yaml.replace("w.toml", "")
        );

        // Only a [logging] table: the provider's defaults otherwise.
        let yaml = convert("[logging]\nlog_level = \"warn\"\n").unwrap();
        let config = load(&yaml);
        assert_eq!(config.aws.max_roles, 20);
        assert_eq!(config.cache.max_entries, 1000);
        // The Secrets Manager Agent's flat file reads as no role.
        let config = load(&convert("log_level = \"warn\"\n").unwrap());
        assert!(config.auth[0].roles.is_empty());
    }

    #[test]
    fn refusals_name_the_nested_key() {
        for (toml, says) in [
            (
                "http_port = 2775\n[logging]\n",
                "http_port is a flat key, but the file uses [logging] or [capabilities]: write it as capabilities.secrets_manager.http_port",
            ),
            ("[logging]\nlevel = \"x\"\n", "unknown field `level`"),
            (
                "[capabilities.secrets_manager.cache]\nttl = 1\n",
                "unknown field `ttl`",
            ),
            (
                "[capabilities.secrets_manager.security]\nheaders = []\n",
                "unknown field `headers`",
            ),
            (
                "[capabilities.secrets_manager.prefetch]\nratio = 1\n",
                "unknown field `ratio`",
            ),
            (
                "[[capabilities.secrets_manager.prefetch.secrets]]\nsecret = \"a\"\n",
                "unknown field `secret`",
            ),
            ("[capabilities.other]\n", "unknown field `other`"),
            (
                "[capabilities.secrets_manager.cache]\nttl_seconds = 4000\n",
                "capabilities.secrets_manager.cache.ttl_seconds must be a whole number from 0 to 3600",
            ),
            (
                "[capabilities.secrets_manager.cache]\ncache_size = 0\n",
                "capabilities.secrets_manager.cache.cache_size must be a whole number from 1 to 1000",
            ),
            (
                "[capabilities.secrets_manager]\nmax_roles = 21\n",
                "capabilities.secrets_manager.max_roles must be a whole number from 1 to 20",
            ),
            (
                "[capabilities.secrets_manager.security]\nssrf_headers = []\n",
                "capabilities.secrets_manager.security.ssrf_headers is empty",
            ),
            (
                "[capabilities.secrets_manager.prefetch]\ncache_buffer_ratio = 1.5\n",
                "capabilities.secrets_manager.prefetch.cache_buffer_ratio must be a number from 0.1 to 1.0",
            ),
            (
                "[capabilities.secrets_manager.prefetch]\nmax_jitter_seconds = 11\n",
                "capabilities.secrets_manager.prefetch.max_jitter_seconds must be a whole number from 0 to 10",
            ),
            (
                "[[capabilities.secrets_manager.prefetch.filter_tags]]\nkey = \"t\"\nrole_arn = \"nope\"\n",
                "capabilities.secrets_manager.prefetch.role_arn `nope` is not an IAM role ARN",
            ),
            (
                "[capabilities.acm]\nenabled = true\n",
                "capabilities.acm: ACM",
            ),
            (
                "[capabilities.secrets_manager]\nenabled = false\n",
                "enabled = false",
            ),
        ] {
            let e = convert(toml).unwrap_err();
            assert!(e.starts_with("w.toml: ") && e.contains(says), "{toml}: {e}");
        }
        assert!(matches!(
            convert_aws_agent_config(
                "w.toml",
                "[logging]\nlog_to_file = true\nregion = \"x\"\n",
                None,
                None
            ),
            Err(ConversionError::File { .. })
        ));
    }

    #[test]
    fn every_flat_key_has_its_nested_path() {
        for (flat, nested) in NESTED_PATHS {
            assert!(nested.ends_with(flat.rsplit('.').next().unwrap()), "{flat}");
            assert_eq!(Form::Nested.key(flat), nested);
            assert_eq!(Form::Flat.key(flat), flat);
        }
    }
}
