//! `secret-agent convert-aws-agent-config FILE.toml`: the AWS Secrets
//! Manager Agent's TOML settings as this agent's YAML. Every setting it has
//! is written out, with the AWS agent's defaults for those the file leaves
//! out, so the YAML says what the AWS agent did. "Any secret" becomes one
//! `"*"` pattern for the account and region.

use std::ops::RangeInclusive;

use serde::Deserialize;

use super::caller::CALLER;
use super::error::shown;
use workload::{Capabilities, Form, Logging, Prefetch};

mod workload;

/// Why the AWS agent's TOML does not convert.
#[derive(Debug, thiserror::Error)]
pub enum ConversionError {
    /// A problem in the file, which `file` names as the caller gave it.
    #[error("{file}: {problem}")]
    File { file: String, problem: TomlProblem },
    /// `--account` is not a 12-digit account id.
    #[error("--account `{0}` is not a 12-digit AWS account id")]
    Account(String),
}

/// What is wrong in the AWS agent's TOML.
#[derive(Debug, thiserror::Error)]
pub enum TomlProblem {
    /// Not TOML, an unknown key or a value of the wrong type.
    #[error(transparent)]
    Parse(#[from] toml::de::Error),
    /// A number outside what the AWS agent accepts for `key`.
    #[error("{key} must be a whole number from {} to {}", .range.start(), .range.end())]
    Range {
        key: &'static str,
        range: RangeInclusive<i64>,
    },
    /// `http_address` is not an IPv4 address.
    #[error("http_address `{0}` is not an IPv4 address")]
    Address(String),
    /// `log_level` (lower-cased) is not one of the AWS agent's levels.
    #[error("log_level `{}` is not DEBUG, INFO, WARN, ERROR or NONE", shown(.0))]
    LogLevel(String),
    /// `ssrf_headers` or `ssrf_env_variables` is an empty list.
    #[error("{0} is empty; the AWS agent refuses that too")]
    Empty(&'static str),
    /// `credentials_file_path` is an empty string.
    #[error("credentials_file_path is empty: name the file the credentials are written to")]
    EmptyPath,
    /// `region` (or `--region`) is not an AWS region.
    #[error("region `{0}` is not an AWS region")]
    Region(String),
    /// A flat key beside `[logging]` or `[capabilities]`, which the
    /// Workload Credentials Provider refuses too.
    #[error(
        "{key} is a flat key, but the file uses [logging] or [capabilities]: write it as {nested}"
    )]
    FlatBesideNested {
        key: &'static str,
        nested: &'static str,
    },
    /// A setting for something this agent does not do.
    #[error("{0}")]
    Unsupported(&'static str),
    /// `cache_buffer_ratio` outside 0.1 to 1.0.
    #[error("{0} must be a number from 0.1 to 1.0")]
    Ratio(&'static str),
    /// A `role_arn` that is not an IAM role ARN.
    #[error("{key} `{}` is not an IAM role ARN (arn:<partition>:iam::<account>:role/<name>)", shown(.value))]
    RoleArn { key: &'static str, value: String },
}

/// The AWS agent's settings file. Numbers may be written as TOML integers or
/// as strings (`http_port = "2773"`), as the AWS agent accepts both. The
/// Workload Credentials Provider's nested tables (`logging`,
/// `capabilities`) are moved into these flat fields before conversion
/// ([`workload::flatten`]).
#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct AwsAgentToml {
    log_level: Option<String>,
    http_address: Option<String>,
    log_to_file: Option<bool>,
    http_port: Option<Number>,
    ttl_seconds: Option<Number>,
    cache_size: Option<Number>,
    ssrf_headers: Option<Vec<String>>,
    ssrf_env_variables: Option<Vec<String>>,
    path_prefix: Option<String>,
    max_conn: Option<Number>,
    region: Option<String>,
    ignore_transient_errors: Option<bool>,
    validate_credentials: Option<bool>,
    credentials_file_path: Option<String>,
    /// The Workload Credentials Provider's: most roles assumed for `roleArn`.
    max_roles: Option<Number>,
    /// The Workload Credentials Provider's `[prefetch]`.
    prefetch: Option<Prefetch>,
    /// The nested form's `[logging]`.
    logging: Option<Logging>,
    /// The nested form's `[capabilities]`.
    capabilities: Option<Capabilities>,
}

#[derive(Deserialize, Clone, Debug, PartialEq)]
#[serde(untagged)]
enum Number {
    Int(i64),
    Text(String),
}

impl Number {
    /// The value when it is a whole number within `range` (inclusive).
    pub(super) fn within(
        &self,
        key: &'static str,
        range: RangeInclusive<i64>,
    ) -> Result<i64, TomlProblem> {
        let value = match self {
            Number::Int(n) => Some(*n),
            Number::Text(t) => t.trim().parse().ok(),
        };
        value
            .filter(|v| range.contains(v))
            .ok_or(TomlProblem::Range { key, range })
    }
}

/// The AWS agent's defaults.
const HTTP_PORT: i64 = 2773;
const TTL_SECONDS: i64 = 300;
const CACHE_SIZE: i64 = 1000;
const MAX_CONN: i64 = 800;
/// The Workload Credentials Provider's `max_roles`.
const MAX_ROLES: i64 = 20;
const SSRF_HEADERS: [&str; 2] = ["X-Aws-Parameters-Secrets-Token", "X-Vault-Token"];
const SSRF_ENV_VARIABLES: [&str; 3] = [
    "AWS_TOKEN",
    "AWS_SESSION_TOKEN",
    "AWS_CONTAINER_AUTHORIZATION_TOKEN",
];

/// The settings of `text`, in either form, as flat settings.
fn parse(text: &str) -> Result<(AwsAgentToml, Form), TomlProblem> {
    let raw: AwsAgentToml = toml::from_str(text)?;
    workload::flatten(raw)
}

/// The `region` the TOML sets, if any.
pub(super) fn region(text: &str) -> Result<Option<String>, TomlProblem> {
    Ok(parse(text)?.0.region)
}

/// The YAML, and notes on what does not carry over (also written into the
/// YAML as comments).
#[derive(Debug)]
pub struct Conversion {
    pub yaml: String,
    pub notes: Vec<String>,
}

/// Converts the AWS agent's TOML (`text`, read from `file`). `account` is the
/// AWS account whose secrets the `"*"` pattern maps (the AWS agent reads
/// any its identity may; this agent needs the account in the ARN); without
/// it the ARN says `caller`, the identity's own account, learnt at start.
/// `region` is used when the file sets none.
pub fn convert_aws_agent_config(
    file: &str,
    text: &str,
    account: Option<&str>,
    region: Option<&str>,
) -> Result<Conversion, ConversionError> {
    let err = |problem: TomlProblem| ConversionError::File {
        file: file.to_owned(),
        problem,
    };
    let (raw, form) = parse(text).map_err(err)?;
    let key = |flat: &'static str| form.key(flat);
    let mut notes = Vec::new();

    let port = match &raw.http_port {
        Some(n) => n.within(key("http_port"), 1024..=65535).map_err(err)?,
        None => HTTP_PORT,
    };
    let address = raw.http_address.as_deref().unwrap_or("127.0.0.1");
    if address.parse::<std::net::Ipv4Addr>().is_err() {
        return Err(err(TomlProblem::Address(address.to_owned())));
    }
    let ttl = match &raw.ttl_seconds {
        Some(n) => n.within(key("ttl_seconds"), 0..=3600).map_err(err)?,
        None => TTL_SECONDS,
    };
    let cache_size = match &raw.cache_size {
        Some(n) => n.within(key("cache_size"), 0..=1000).map_err(err)?,
        None => CACHE_SIZE,
    };
    let max_conn = match &raw.max_conn {
        Some(n) => n.within(key("max_conn"), 1..=1000).map_err(err)?,
        None => MAX_CONN,
    };
    let level = match raw.log_level.as_deref().map(str::to_ascii_lowercase) {
        None => "info".to_owned(),
        Some(l) if l == "none" => "off".to_owned(),
        Some(l) if ["debug", "info", "warn", "error"].contains(&l.as_str()) => l,
        Some(l) => return Err(err(TomlProblem::LogLevel(l))),
    };
    let headers: Vec<String> = raw
        .ssrf_headers
        .unwrap_or_else(|| SSRF_HEADERS.map(str::to_owned).to_vec());
    if headers.is_empty() {
        return Err(err(TomlProblem::Empty(key("ssrf_headers"))));
    }
    let envs: Vec<String> = raw
        .ssrf_env_variables
        .unwrap_or_else(|| SSRF_ENV_VARIABLES.map(str::to_owned).to_vec());
    if envs.is_empty() {
        return Err(err(TomlProblem::Empty(key("ssrf_env_variables"))));
    }
    let max_roles = match &raw.max_roles {
        Some(n) => n.within(key("max_roles"), 1..=20).map_err(err)?,
        None => MAX_ROLES,
    };
    // The Workload Credentials Provider's file (its nested form, or a key
    // only it has) reads as any role by `roleArn`, as it does; the Secrets
    // Manager Agent's has no roles.
    let provider_file = form == Form::Nested || raw.max_roles.is_some() || raw.prefetch.is_some();
    if let Some(prefetch) = &raw.prefetch {
        check_prefetch(prefetch, form).map_err(err)?;
    }
    let path_prefix = raw.path_prefix.as_deref().unwrap_or("/v1/");
    if path_prefix != "/v1/" {
        notes.push(format!(
            "path_prefix `{path_prefix}` is not supported: the path-style route is always /v1/<name>"
        ));
    }
    if raw.log_to_file == Some(true) {
        notes.push("log_to_file: this agent logs to standard error only".into());
    }
    if raw.validate_credentials.is_some() {
        notes.push(
            "validate_credentials: this agent resolves credentials at start-up and reports them in /readyz (with the `caller` account, it also calls STS GetCallerIdentity once at start to learn it; with credentials_file_path, a failure there does not stop the start)".into(),
        );
    }
    if raw
        .credentials_file_path
        .as_deref()
        .is_some_and(|p| p.trim().is_empty())
    {
        return Err(err(TomlProblem::EmptyPath));
    }
    let region = raw.region.as_deref().or(region);
    let region_text = match region {
        Some(r)
            if !r.is_empty()
                && r.bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-') =>
        {
            r.to_owned()
        }
        Some(r) => return Err(err(TomlProblem::Region(r.to_owned()))),
        None => {
            notes.push("no region: replace REGION in the resource ARN (or pass --region)".into());
            "REGION".to_owned()
        }
    };
    let account_text = match account {
        Some(a) if a.len() == 12 && a.bytes().all(|b| b.is_ascii_digit()) => a.to_owned(),
        Some(a) => return Err(ConversionError::Account(a.to_owned())),
        None => CALLER.to_owned(),
    };

    let mut y = String::new();
    y.push_str(&format!(
        "# Converted from {file} (AWS Secrets Manager Agent) by secret-agent convert-aws-agent-config.\n"
    ));
    for note in &notes {
        y.push_str(&format!("# NOTE: {note}\n"));
    }
    y.push_str("service:\n  tcp:\n");
    y.push_str(&format!(
        "    endpoint: {address}:{port}        # http_address, http_port\n"
    ));
    y.push_str(&format!(
        "  max-connections: {max_conn}             # max_conn\n"
    ));
    y.push_str("  over-limit: refuse                  # beyond max_conn: 429, as the AWS agent\n");
    y.push_str("secret-manager:\n  aws:\n");
    if raw.region.is_some() || region.is_some() {
        y.push_str(&format!(
            "    region: {region_text}                  # region\n"
        ));
    }
    if let Some(path) = &raw.credentials_file_path {
        let path = serde_json::to_string(path).unwrap_or_default();
        if provider_file {
            // The provider takes only temporary keys from the file.
            y.push_str(&format!(
                "    credentials-file: {{path: {path}, require-session-token: true}}   # credentials_file_path: keys from this file only (with a session token, as the provider), re-read when it changes\n"
            ));
        } else {
            y.push_str(&format!(
                "    credentials-file: {path}   # credentials_file_path: keys from this file only, re-read when it changes\n"
            ));
        }
    }
    if provider_file {
        y.push_str(&format!(
            "    max-roles: {max_roles}                     # max_roles (roles read as by roleArn)\n"
        ));
    }
    y.push_str("    resources:\n");
    y.push_str(
        "      # Every secret of the account and region, as the AWS agent serves any its identity may read.\n",
    );
    if account.is_none() {
        y.push_str(
            "      # `caller`: the identity's own account, asked of STS GetCallerIdentity once at start (or AWS_ACCOUNT_ID).\n",
        );
    }
    y.push_str(
        "      # Narrow it to prefixes (prod/*: ...:secret:prod/*) or exact names where you can.\n",
    );
    y.push_str(&format!(
        "      \"*\": arn:aws:secretsmanager:{region_text}:{account_text}:secret:*\n"
    ));
    y.push_str("cache:\n");
    if cache_size == 0 {
        y.push_str("  ttl: 0s                              # cache_size 0: no caching\n");
    } else {
        y.push_str(&format!(
            "  ttl: {ttl}s                            # ttl_seconds\n"
        ));
        y.push_str(&format!(
            "  max-entries: {cache_size}                   # cache_size\n"
        ));
    }
    if raw.ignore_transient_errors == Some(false) {
        y.push_str("  max-stale: 0s                        # ignore_transient_errors = false\n");
    }
    y.push_str("auth:\n");
    y.push_str("  token-headers:                         # ssrf_headers\n");
    for h in &headers {
        y.push_str(&format!("    - {}\n", yaml_string(h)));
    }
    y.push_str("  tokens:\n");
    let envs: Vec<String> = envs.iter().map(|e| yaml_string(e)).collect();
    let envs = match envs.as_slice() {
        [one] => one.clone(),
        many => format!("[{}]", many.join(", ")),
    };
    y.push_str(&format!(
        "    - token-env: {envs}   # ssrf_env_variables, the first one set; `file:///path` values are read from the file\n"
    ));
    y.push_str("      resources: [\"*\"]\n");
    if provider_file {
        y.push_str(
            "      roles: [\"*\"]   # roleArn: any role, as the AWS Workload Credentials Provider; narrow it to role ARNs or prefixes (arn:aws:iam::<account>:role/app-*)\n",
        );
    }
    y.push_str(&format!(
        "log:\n  level: {level}                          # log_level\n"
    ));
    if let Some(prefetch) = &raw.prefetch {
        y.push_str(&prefetch_yaml(prefetch, cache_size));
    }
    Ok(Conversion { yaml: y, notes })
}

/// The prefetch settings' ranges and role ARNs, as the provider checks them.
fn check_prefetch(prefetch: &Prefetch, form: Form) -> Result<(), TomlProblem> {
    if let Some(ratio) = prefetch.cache_buffer_ratio
        && !(0.1..=1.0).contains(&ratio)
    {
        return Err(TomlProblem::Ratio(form.key("prefetch.cache_buffer_ratio")));
    }
    if let Some(jitter) = &prefetch.max_jitter_seconds {
        jitter.within(form.key("prefetch.max_jitter_seconds"), 0..=10)?;
    }
    let roles = (prefetch.secrets.iter().map(|s| &s.role_arn))
        .chain(prefetch.filter_tags.iter().map(|t| &t.role_arn));
    for role in roles.flatten() {
        if crate::domain::RoleArn::parse(role).is_none() {
            return Err(TomlProblem::RoleArn {
                key: form.key("prefetch.role_arn"),
                value: role.clone(),
            });
        }
    }
    Ok(())
}

/// The provider's prefetch as the `prefetch` section (checked already).
fn prefetch_yaml(prefetch: &Prefetch, cache_size: i64) -> String {
    let quoted = |s: &str| serde_json::to_string(s).unwrap_or_default();
    let ratio = prefetch.cache_buffer_ratio.unwrap_or(0.8);
    let max_entries = if cache_size == 0 { 1000 } else { cache_size };
    // As the provider: that share of the cache, at least one.
    let limit = ((max_entries as f64 * ratio) as i64).max(1);
    let jitter = match &prefetch.max_jitter_seconds {
        Some(n) => n.within("max_jitter_seconds", 0..=10).unwrap_or(0),
        None => 0,
    };
    let mut y = String::from("prefetch:\n");
    y.push_str(&format!(
        "  limit: {limit}                           # cache_buffer_ratio {ratio} of cache_size\n"
    ));
    y.push_str(&format!(
        "  jitter: {jitter}s                          # max_jitter_seconds\n"
    ));
    let mut list = |name: &str, key: &str, items: Vec<(&String, &Option<String>)>| {
        if items.is_empty() {
            return;
        }
        y.push_str(&format!("  {name}:\n"));
        for (value, role) in items {
            y.push_str(&format!("    - {key}: {}\n", quoted(value)));
            if let Some(role) = role {
                y.push_str(&format!("      role: {}\n", quoted(role)));
            }
        }
    };
    list(
        "secrets",
        "name",
        prefetch
            .secrets
            .iter()
            .map(|s| (&s.secret_id, &s.role_arn))
            .collect(),
    );
    list(
        "tags",
        "key",
        prefetch
            .filter_tags
            .iter()
            .map(|t| (&t.key, &t.role_arn))
            .collect(),
    );
    y
}

/// A YAML scalar for a header or variable name: plain when safe, else quoted.
fn yaml_string(text: &str) -> String {
    if !text.is_empty()
        && text
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    {
        text.to_owned()
    } else {
        serde_json::to_string(text).unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;
    use crate::config::Config;

    /// Checks the YAML loads, its token read from `HOME` (always set).
    fn loads(yaml: &str) -> Config {
        let yaml = yaml.replace("token-env: [AWS_TOKEN,", "token-env: [HOME,");
        Config::from_yaml(&yaml, Path::new("c.yaml")).unwrap_or_else(|e| panic!("{e}\n{yaml}"))
    }

    #[test]
    fn defaults_and_the_documented_sample() {
        // No file settings: the AWS agent's defaults.
        let c = convert_aws_agent_config("a.toml", "", Some("123456789012"), Some("us-east-1"))
            .unwrap();
        let config = loads(&c.yaml);
        assert!(c.yaml.contains("endpoint: 127.0.0.1:2773"), "{}", c.yaml);
        assert!(c.yaml.contains("max-connections: 800"));
        assert!(c.yaml.contains("ttl: 300s") && c.yaml.contains("max-entries: 1000"));
        assert!(
            c.yaml
                .contains("arn:aws:secretsmanager:us-east-1:123456789012:secret:*")
        );
        assert_eq!(
            config.token_headers,
            ["x-aws-parameters-secrets-token", "x-vault-token"]
        );
        // The token variables are tried in the AWS agent's order.
        assert!(
            c.yaml.contains(
                "token-env: [AWS_TOKEN, AWS_SESSION_TOKEN, AWS_CONTAINER_AUTHORIZATION_TOKEN]"
            ),
            "{}",
            c.yaml
        );
        assert!(c.notes.is_empty(), "{:?}", c.notes);

        // The settings the AWS agent's documentation lists, strings and numbers.
        let toml = r#"
log_level = "DEBUG"
http_port = "2775"
region = "eu-west-1"
ttl_seconds = 60
cache_size = "5"
ssrf_headers = ["X-My-Token"]
ssrf_env_variables = ["MY_TOKEN"]
path_prefix = "/v1/"
max_conn = 10
"#;
        let c = convert_aws_agent_config("b.toml", toml, Some("123456789012"), None).unwrap();
        assert!(c.notes.is_empty(), "{:?}", c.notes);
        let config = loads(&c.yaml.replace("token-env: MY_TOKEN", "token-env: HOME"));
        assert_eq!(config.service.max_connections, 10);
        assert_eq!(config.service.over_limit, crate::config::OverLimit::Refuse);
        assert_eq!(config.cache.ttl, std::time::Duration::from_secs(60));
        assert_eq!(config.cache.max_entries, 5);
        assert_eq!(config.token_headers, ["x-my-token"]);
        assert_eq!(config.log_level, log::LevelFilter::Debug);
        assert_eq!(config.aws.region.as_deref(), Some("eu-west-1"));
        assert_eq!(
            config.service.tcp.as_ref().unwrap().addr.to_string(),
            "127.0.0.1:2775"
        );
        assert_eq!(config.aws.resources.patterns()[0].region(), "eu-west-1");
    }

    #[test]
    fn other_settings_and_refusals() {
        let toml = "log_level = \"NONE\"\ncache_size = 0\nignore_transient_errors = false\npath_prefix = \"/api/\"\nlog_to_file = true\nvalidate_credentials = true\n";
        let c = convert_aws_agent_config("c.toml", toml, None, Some("us-west-2")).unwrap();
        assert!(c.yaml.contains("level: off") && c.yaml.contains("ttl: 0s"));
        assert!(c.yaml.contains("max-stale: 0s"));
        for said in ["path_prefix", "log_to_file", "validate_credentials"] {
            assert!(
                c.notes.iter().any(|n| n.contains(said)),
                "{said}: {:?}",
                c.notes
            );
            assert!(c.yaml.contains(said), "{said}");
        }
        // Without --account the ARN names the caller's own account, and the
        // YAML loads as printed; the account is learnt at start.
        assert!(
            c.yaml
                .contains("\"*\": arn:aws:secretsmanager:us-west-2:caller:secret:*"),
            "{}",
            c.yaml
        );
        let config = loads(&c.yaml);
        assert_eq!(config.caller_account, crate::config::CallerAccount::Pending);
        assert!(
            config
                .summary()
                .contains("account: the identity's own (`caller`)")
        );

        for (toml, says) in [
            ("http_port = 80", "http_port"),
            ("ttl_seconds = \"a\"", "ttl_seconds"),
            ("max_conn = 5000", "max_conn"),
            ("log_level = \"LOUD\"", "log_level"),
            ("ssrf_headers = []", "ssrf_headers"),
            ("http_prot = 1", "http_prot"),
            ("region = \"US WEST\"", "region"),
        ] {
            let e = convert_aws_agent_config("d.toml", toml, None, None)
                .unwrap_err()
                .to_string();
            assert!(e.starts_with("d.toml: ") && e.contains(says), "{toml}: {e}");
        }
        assert!(convert_aws_agent_config("e.toml", "", Some("12"), None).is_err());
    }

    #[test]
    fn credentials_file_path_becomes_the_credentials_file() {
        let toml = "credentials_file_path = \"/run/creds/my \\\"file\\\"\"\n";
        let c = convert_aws_agent_config("g.toml", toml, Some("123456789012"), Some("us-east-1"))
            .unwrap();
        let config = loads(&c.yaml);
        let file = config.aws.credentials.file().expect("a credentials file");
        assert_eq!(file.path, Path::new("/run/creds/my \"file\""));
        assert!(!file.require_session_token);
        assert!(
            config
                .summary()
                .contains("credentials: credentials file /run/creds/my \"file\" (profile "),
            "{}",
            config.summary()
        );
        let e = convert_aws_agent_config("g.toml", "credentials_file_path = \"\"", None, None)
            .unwrap_err()
            .to_string();
        assert!(e.contains("credentials_file_path is empty"), "{e}");
    }

    /// Callers may match on the kind; the message is the same words.
    #[test]
    fn refusals_have_kinds() {
        let problem = |toml: &str| match convert_aws_agent_config("f.toml", toml, None, None) {
            Err(ConversionError::File { file, problem }) => {
                assert_eq!(file, "f.toml");
                problem
            }
            other => panic!("{toml}: {other:?}"),
        };
        assert!(matches!(
            problem("max_conn = 0"),
            TomlProblem::Range { key: "max_conn", ref range } if *range == (1..=1000)
        ));
        assert!(matches!(
            problem("ssrf_env_variables = []"),
            TomlProblem::Empty("ssrf_env_variables")
        ));
        assert!(matches!(problem("http_address = \"::1\""), TomlProblem::Address(a) if a == "::1"));
        assert!(matches!(problem("max_conn = [1]"), TomlProblem::Parse(_)));
        let long = format!("log_level = \"{}\"", "X".repeat(200));
        assert_eq!(
            problem(&long).to_string(),
            format!(
                "log_level `{}...` is not DEBUG, INFO, WARN, ERROR or NONE",
                "x".repeat(80)
            )
        );
        let e = convert_aws_agent_config("f.toml", "", Some("12"), None).unwrap_err();
        assert!(matches!(&e, ConversionError::Account(a) if a == "12"));
        assert_eq!(
            e.to_string(),
            "--account `12` is not a 12-digit AWS account id"
        );
        let e = convert_aws_agent_config("f.toml", "region = \"Mars\"", None, None).unwrap_err();
        assert_eq!(e.to_string(), "f.toml: region `Mars` is not an AWS region");
    }
}
