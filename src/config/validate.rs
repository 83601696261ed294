//! Raw -> [`Config`]: every value checked and given its type, one method per
//! section. Pure: what it needs from the system (token files, environment
//! variables, DNS, file metadata) it asks of an [`Inputs`], which
//! [`super::load`] answers from the real system and tests answer from a table.

use std::collections::BTreeSet;
use std::io;
use std::net::SocketAddr;
use std::path::Path;

use log::LevelFilter;
use secrecy::{ExposeSecret, SecretString};

use super::error::{closest, shown};
use super::raw::*;
use super::*;
use crate::credentials::{AssumeRole, StaticKeys};
use crate::resources::{Pattern, ResourceName, Resources, SecretArn};

/// Whether the source holds secrets written in the config file (keys, an
/// external id), which makes the file's permissions worth a warning.
fn holds_secrets(source: &CredentialSource) -> bool {
    match source {
        CredentialSource::Static(_) => true,
        CredentialSource::Chain { .. } => false,
        CredentialSource::AssumeRole { role, base } => {
            role.external_id.is_some() || holds_secrets(base)
        }
    }
}

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

/// Validates `raw`, read from `file` (named in messages and checked for its
/// permissions when it holds AWS secrets).
pub(super) fn config(
    raw: RawConfig,
    file: &Path,
    inputs: &dyn Inputs,
) -> Result<Config, ConfigError> {
    Validator { file, inputs }.config(raw)
}

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
        let mode = self.inputs.mode(path)?;
        (mode & 0o077 != 0).then(|| {
            format!(
                "{} is readable by group or others (mode {:04o}) and {why}; chmod 600 it",
                path.display(),
                mode & 0o777
            )
        })
    }

    fn config(&self, raw: RawConfig) -> Result<Config, ConfigError> {
        let service = self.service(raw.service)?;
        let aws = self.aws(raw.secret_manager.aws)?;
        let cache = self.cache(raw.cache)?;
        let token_headers = match raw.auth.as_ref().and_then(|a| a.token_headers.clone()) {
            Some(headers) => self.token_headers(headers)?,
            None => DEFAULT_TOKEN_HEADERS.map(str::to_owned).to_vec(),
        };
        let (auth, protocol_scope) = match raw.auth {
            Some(auth) => {
                let scope = match auth.secret_agent_protocol {
                    Some(grant) => Some(self.scope(
                        "auth.secret-agent-protocol",
                        grant.resources,
                        &aws.resources,
                    )?),
                    None => None,
                };
                (self.auth(auth.tokens, &aws.resources)?, scope)
            }
            None => (Vec::new(), None),
        };
        let mut warnings = Vec::new();
        if holds_secrets(&aws.credentials) {
            warnings.extend(self.loose_permissions(self.file, "it holds AWS keys"));
        }
        for token in &auth {
            if let TokenSource::File(path) = &token.source {
                warnings.extend(self.loose_permissions(path, "it holds a client token"));
            }
        }
        let log_level = match raw.log.level {
            None => LevelFilter::Info,
            Some(level) => level.parse().map_err(|_| {
                self.invalid(
                    "log.level",
                    format!(
                        "`{}` is not a log level; use debug, info, warn, error or off",
                        shown(&level)
                    ),
                )
            })?,
        };
        Ok(Config {
            source: self.file.to_owned(),
            service,
            aws,
            cache,
            auth,
            protocol_scope,
            token_headers,
            log_level,
            warnings,
            origin: Origin::Yaml,
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
        let over_limit = match raw.over_limit.as_deref() {
            None | Some("queue") => OverLimit::Queue,
            Some("refuse") => OverLimit::Refuse,
            Some(other) => {
                return Err(self.invalid(
                    "service.over-limit",
                    format!("`{}` is not queue or refuse", other.escape_debug()),
                ));
            }
        };
        let request_timeout = raw.request_timeout.map_or(DEFAULT_REQUEST_TIMEOUT, |d| d.0);
        if request_timeout.is_zero() {
            return Err(self.invalid("service.request-timeout", "must be more than 0"));
        }
        Ok(ServiceConfig {
            tcp,
            uds,
            max_connections,
            over_limit,
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
            if let Err(e) = self.inputs.metadata(path) {
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

    fn auth(
        &self,
        raw: Vec<RawToken>,
        resources: &Resources,
    ) -> Result<Vec<ClientToken>, ConfigError> {
        if raw.is_empty() {
            return Err(self.invalid(
                "auth.tokens",
                "is empty; remove `auth` for open access, or list at least one token",
            ));
        }
        let mut tokens: Vec<ClientToken> = Vec::with_capacity(raw.len());
        for (i, token) in raw.into_iter().enumerate() {
            let path = format!("auth.tokens[{i}]");
            let (source, value) = match (token.token_file, token.token_env) {
                (Some(file), None) => {
                    let text = self.inputs.read_token(&file).map_err(|e| {
                        self.invalid(
                            &format!("{path}.token-file"),
                            format!("cannot read {}: {e}", file.display()),
                        )
                    })?;
                    (TokenSource::File(file), text)
                }
                (None, Some(vars)) => {
                    let vars = vars.into_vec();
                    if vars.is_empty() {
                        return Err(self.invalid(
                            &format!("{path}.token-env"),
                            "is an empty list; name at least one environment variable",
                        ));
                    }
                    // The first one set and not empty.
                    let Some((var, mut text)) = vars.iter().find_map(|var| {
                        let text = self.inputs.var(var).filter(|t| !t.is_empty())?;
                        Some((var.clone(), text))
                    }) else {
                        let message = match vars.as_slice() {
                            [one] => format!("environment variable {one} is not set (or empty)"),
                            many => format!(
                                "none of the environment variables {} is set (or they are empty)",
                                many.join(", ")
                            ),
                        };
                        return Err(self.invalid(&format!("{path}.token-env"), message));
                    };
                    // `file:///path`, as the AWS agent's ssrf_env_variables take.
                    if let Some(file) = text.strip_prefix("file://") {
                        let file = std::path::PathBuf::from(file);
                        text = self.inputs.read_token(&file).map_err(|e| {
                            self.invalid(
                                &format!("{path}.token-env"),
                                format!(
                                    "{var} names file://{}, which cannot be read: {e}",
                                    file.display()
                                ),
                            )
                        })?;
                    }
                    (TokenSource::Env(var), text)
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

    /// Valid HTTP header names, each once, lower-cased; not `Authorization`,
    /// which carries `Bearer <token>` on its own.
    fn token_headers(&self, raw: Vec<String>) -> Result<Vec<String>, ConfigError> {
        let mut headers: Vec<String> = Vec::with_capacity(raw.len());
        for (i, name) in raw.into_iter().enumerate() {
            let path = format!("auth.token-headers[{i}]");
            let lower = name.to_ascii_lowercase();
            let valid = !lower.is_empty()
                && lower
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b));
            if !valid {
                return Err(self.invalid(
                    &path,
                    format!("`{}` is not an HTTP header name", shown(&name)),
                ));
            }
            if lower == "authorization" {
                return Err(self.invalid(
                    &path,
                    "`Authorization` always carries `Bearer <token>`; list only other headers",
                ));
            }
            if headers.contains(&lower) {
                return Err(self.invalid(&path, format!("`{name}` is listed twice")));
            }
            headers.push(lower);
        }
        Ok(headers)
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
        let mut only = BTreeSet::new();
        let mut prefixes = Vec::new();
        for name in names {
            if Pattern::is_pattern(&name) {
                let prefix = name.trim_end_matches('*');
                if prefix.trim_end_matches('/').contains('*')
                    || !resources.prefix_matches_any(prefix)
                {
                    return Err(self.invalid(
                        &format!("{path}.resources"),
                        format!("`{name}` matches no configured resource or pattern"),
                    ));
                }
                prefixes.push(prefix.to_owned());
                continue;
            }
            match resources.lookup(&name) {
                Some(found) => {
                    only.insert(found.name.into_owned());
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
        Ok(TokenScope::Only {
            names: only,
            prefixes,
        })
    }

    fn socket_addr(&self, path: &str, text: &str) -> Result<SocketAddr, ConfigError> {
        if let Ok(addr) = text.parse() {
            return Ok(addr);
        }
        // Host names (e.g. localhost:2773) resolve once, at load.
        let resolved = match text.rsplit_once(':') {
            Some((host, port)) if !host.is_empty() && port.parse::<u16>().is_ok() => {
                self.inputs.resolve(text)
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
        let ssm_endpoint = raw
            .ssm_endpoint
            .map(|e| self.url("secret-manager.aws.ssm-endpoint", e))
            .transpose()?;
        let events = raw
            .events
            .map(|events| -> Result<EventsConfig, ConfigError> {
                Ok(EventsConfig {
                    queue_url: self.url("secret-manager.aws.events.queue-url", events.queue_url)?,
                    endpoint: events
                        .endpoint
                        .map(|e| self.url("secret-manager.aws.events.endpoint", e))
                        .transpose()?,
                })
            })
            .transpose()?;

        let mut resources = Vec::with_capacity(raw.resources.len());
        let mut patterns = Vec::new();
        for (name, arn) in raw.resources {
            let path = format!("secret-manager.aws.resources.{name}");
            if Pattern::is_pattern(&name) {
                patterns.push(Pattern::parse(&name, &arn).map_err(|e| self.invalid(&path, e))?);
                continue;
            }
            let name = ResourceName::parse(&name).map_err(|e| self.invalid(&path, e))?;
            let arn = SecretArn::parse(&arn)
                .map_err(|e| self.invalid(&path, format!("resource `{name}`: {e}")))?;
            resources.push((name, arn));
        }
        if resources.is_empty() && patterns.is_empty() {
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
            Some(role) => Some(self.assume_role(role, sts_endpoint, sts_region)?),
        };

        let base = match static_keys {
            Some(keys) => CredentialSource::Static(keys),
            None => CredentialSource::Chain {
                profile: raw.profile.clone(),
            },
        };
        let credentials = match assume_role {
            Some(role) => CredentialSource::AssumeRole {
                role,
                base: Box::new(base),
            },
            None => base,
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
            ssm_endpoint,
            events,
            resources: Resources::new(resources).with_patterns(patterns),
            credentials,
            profile: raw.profile,
            max_concurrent_calls,
            convert_to_base64: raw.convert_to_base64.unwrap_or(false),
        })
    }

    fn assume_role(
        &self,
        raw: RawAssumeRole,
        sts_endpoint: Option<String>,
        sts_region: Option<String>,
    ) -> Result<AssumeRole, ConfigError> {
        let path = "secret-manager.aws.assume-role";
        let role_arn = raw.role_arn;
        if !is_role_arn(&role_arn) {
            return Err(self.invalid(
                path,
                format!(
                    "`{role_arn}` is not an IAM role ARN, e.g. arn:aws:iam::123456789012:role/Name"
                ),
            ));
        }
        if let Some(name) = &raw.session_name {
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
        let duration = raw.duration.map(|d| d.0);
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
            external_id: raw.external_id,
            session_name: raw.session_name,
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
        let max_bytes = raw.max_bytes.unwrap_or(defaults.max_bytes);
        if max_bytes < MIN_MAX_BYTES {
            return Err(self.invalid(
                "cache.max-bytes",
                format!("`{max_bytes}` is less than {MIN_MAX_BYTES} (1 MiB)"),
            ));
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
            max_bytes,
            prefetch: raw.prefetch.unwrap_or(defaults.prefetch),
            fetch_timeout,
            min_refresh_interval: raw
                .min_refresh_interval
                .map_or(defaults.min_refresh_interval, |d| d.0),
            negative_ttl: raw.negative_ttl.map_or(defaults.negative_ttl, |d| d.0),
            stale_wait: raw.stale_wait.map_or(defaults.stale_wait, |d| d.0),
            new_names_per_second: raw
                .new_names_per_second
                .unwrap_or(defaults.new_names_per_second),
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
    use crate::config::tests::{SAMPLE, load};
    use std::time::Duration;

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
    fn cache_settings_and_their_validation() {
        let cache = |body: &str| load(&format!("{SAMPLE}cache:\n{body}")).map(|c| c.cache);
        let c = cache("  ttl: 10m\n").unwrap();
        assert_eq!(c.refresh_ahead, Duration::from_secs(120));
        assert_eq!(c.max_stale, DEFAULT_MAX_STALE);
        assert_eq!(c.max_entries, DEFAULT_MAX_ENTRIES);
        assert_eq!(c.max_bytes, DEFAULT_MAX_BYTES);
        assert!(!c.prefetch);
        assert_eq!(cache("  max-bytes: 1048576\n").unwrap().max_bytes, 1 << 20);
        for (bad, shown) in [
            ("0", "`0`"),
            ("1048575", "`1048575`"),
            ("-1", "max-bytes"),
            ("64MiB", "max-bytes"),
        ] {
            let err = cache(&format!("  max-bytes: {bad}\n"))
                .unwrap_err()
                .to_string();
            assert!(
                err.contains("max-bytes") && err.contains(shown),
                "{bad}: {err}"
            );
        }
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
    fn parameters_and_an_ssm_endpoint() {
        let yaml = SAMPLE.replace(
            "    resources:\n",
            "    ssm-endpoint: http://localhost:4566\n    resources:\n      \
             db: arn:aws:ssm:us-east-1:123456789012:parameter/app/db\n      \
             app/*: arn:aws:ssm:us-east-1:123456789012:parameter/app/*\n",
        );
        let config = load(&yaml).unwrap();
        assert_eq!(
            config.aws.ssm_endpoint.as_deref(),
            Some("http://localhost:4566")
        );
        assert!(
            config
                .summary()
                .contains("ssm endpoint: http://localhost:4566")
        );
        let (_, arn) = config.aws.resources.get("db").unwrap();
        assert_eq!(arn.parameter_name(), Some("/app/db"));
        let bad = yaml.replace("http://localhost:4566", "ftp://x");
        let err = load(&bad).unwrap_err().to_string();
        assert!(err.contains("secret-manager.aws.ssm-endpoint"), "{err}");
        let typo = yaml.replace("ssm-endpoint", "ssm-endpiont");
        let err = load(&typo).unwrap_err().to_string();
        assert!(err.contains("did you mean `ssm-endpoint`"), "{err}");
    }

    #[test]
    fn events_name_a_queue_url_and_an_optional_endpoint() {
        assert_eq!(load(SAMPLE).unwrap().aws.events, None);
        let with = |events: &str| {
            load(&SAMPLE.replace(
                "    region: us-west-1\n",
                &format!("    region: us-west-1\n    events:\n{events}"),
            ))
        };
        let config = with(
            "      queue-url: https://sqs.us-west-1.amazonaws.com/123456789012/q\n      endpoint: http://localhost:4566\n",
        )
        .unwrap();
        assert_eq!(
            config.aws.events,
            Some(EventsConfig {
                queue_url: "https://sqs.us-west-1.amazonaws.com/123456789012/q".into(),
                endpoint: Some("http://localhost:4566".into()),
            })
        );
        assert!(
            config
                .summary()
                .contains("events: SQS queue https://sqs.us-west-1.amazonaws.com/123456789012/q")
        );
        let err = with("      queue-url: my-queue\n").unwrap_err().to_string();
        assert!(err.contains("secret-manager.aws.events.queue-url"), "{err}");
        let err = with("      queue: x\n").unwrap_err().to_string();
        assert!(err.contains("queue-url"), "{err}");
    }

    #[test]
    fn stale_wait_has_a_default_and_parses() {
        assert_eq!(load(SAMPLE).unwrap().cache.stale_wait, DEFAULT_STALE_WAIT);
        let config = load(&format!("{SAMPLE}cache:\n  stale-wait: 50ms\n")).unwrap();
        assert_eq!(config.cache.stale_wait, Duration::from_millis(50));
        assert!(config.summary().contains("stale-wait 50ms"));
        let zero = load(&format!("{SAMPLE}cache:\n  stale-wait: 0\n")).unwrap();
        assert!(zero.cache.stale_wait.is_zero());
        let err = load(&format!("{SAMPLE}cache:\n  stale-wait: soon\n"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("cache.stale-wait"), "{err}");
    }

    #[test]
    fn log_level_any_case_and_bad_level() {
        let yaml = SAMPLE.replace("level: info", "level: DEBUG");
        assert_eq!(load(&yaml).unwrap().log_level, LevelFilter::Debug);
        let yaml = SAMPLE.replace("level: info", "level: loud");
        let err = load(&yaml).unwrap_err().to_string();
        assert!(err.contains("log.level") && err.contains("loud"), "{err}");
        // A huge value is echoed as a short prefix.
        let long = "x".repeat(900_000);
        let yaml = SAMPLE.replace("level: info", &format!("level: {long}"));
        let err = load(&yaml).unwrap_err().to_string();
        assert!(err.contains("log.level") && err.len() < 300, "{err}");
        assert!(err.contains(&format!("{}...", "x".repeat(80))), "{err}");
    }

    #[test]
    fn assume_role_short_and_long_forms() {
        let short = SAMPLE.replace(
            "    resources:",
            "    assume-role: arn:aws:iam::999999999999:role/AccessToSecrets\n    resources:",
        );
        let role_of = |c: Config| match c.aws.credentials {
            CredentialSource::AssumeRole { role, .. } => role,
            other => panic!("{other:?}"),
        };
        let role = role_of(load(&short).unwrap());
        assert_eq!(
            role.role_arn,
            "arn:aws:iam::999999999999:role/AccessToSecrets"
        );
        let long = SAMPLE.replace(
            "    resources:",
            "    assume-role:\n      role-arn: arn:aws:iam::999999999999:role/R\n      session-name: agent\n      duration: 1h\n    sts-region: us-east-1\n    resources:",
        );
        let role = role_of(load(&long).unwrap());
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
        assert_eq!(c.service.over_limit, OverLimit::Queue);
        let refuse = limits.replace(
            "max-connections: 5",
            "max-connections: 5\n  over-limit: refuse",
        );
        assert_eq!(load(&refuse).unwrap().service.over_limit, OverLimit::Refuse);
        let err = load(&limits.replace(
            "max-connections: 5",
            "max-connections: 5\n  over-limit: drop",
        ))
        .unwrap_err()
        .to_string();
        assert!(
            err.contains("service.over-limit") && err.contains("`drop` is not queue or refuse"),
            "{err}"
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
    fn patterns_in_resources_and_scopes() {
        let with = |resources: &str, scope: &str| {
            let yaml = SAMPLE.replace(
                "      TestingSecret: arn:aws:secretsmanager:us-west-1:999999999999:secret:TestingSecret-tN6s2j\n",
                resources,
            );
            load(&format!(
                "{yaml}auth:\n  tokens:\n    - token-env: HOME\n      resources: {scope}\n"
            ))
        };
        let ok = "      prod/*: arn:aws:secretsmanager:us-east-1:123456789012:secret:prod/*\n      Exact: arn:aws:secretsmanager:us-east-1:123456789012:secret:e\n";
        let c = with(ok, "[\"prod/*\", Exact, prod/db]").unwrap();
        assert_eq!(c.aws.resources.len(), 2);
        let db = ResourceName::parse("prod/db").unwrap();
        let other = ResourceName::parse("prod/other").unwrap();
        assert!(c.auth[0].scope.allows(&db) && c.auth[0].scope.allows(&other));
        let c = with(ok, "[Exact]").unwrap();
        assert!(!c.auth[0].scope.allows(&db));
        assert!(c.summary().contains("prod/*"), "{}", c.summary());
        let star = "      \"*\": arn:aws:secretsmanager:us-east-1:123456789012:secret:*\n";
        assert!(with(star, "[\"team/*\", any-name]").is_ok());
        for (resources, scope, says) in [
            (ok, "[\"dev/*\"]", "matches no configured resource"),
            (ok, "[dev/db]", "not a configured resource"),
            (
                "      prod/*: arn:aws:secretsmanager:us-east-1:123456789012:secret:prod/\n",
                "[\"*\"]",
                "must end in `*`",
            ),
            (
                "      p*/*: arn:aws:secretsmanager:us-east-1:123456789012:secret:p/*\n",
                "[\"*\"]",
                "no other `*`",
            ),
            (
                "      \"*\": arn:aws:s3:::bucket/*\n",
                "[\"*\"]",
                "not a secret ARN prefix",
            ),
        ] {
            let err = with(resources, scope).unwrap_err().to_string();
            assert!(err.contains(says), "{resources} {scope}: {err}");
        }
    }

    #[test]
    fn token_headers() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("t");
        std::fs::write(&file, "tok").unwrap();
        let with = |extra: &str| {
            load(&format!(
                "{SAMPLE}auth:\n  tokens:\n    - token-file: {}\n      resources: [\"*\"]\n{extra}",
                file.display()
            ))
        };
        assert_eq!(
            with("").unwrap().token_headers,
            ["x-aws-parameters-secrets-token", "x-vault-token"]
        );
        assert_eq!(
            with("  token-headers: [X-My-Token]\n")
                .unwrap()
                .token_headers,
            ["x-my-token"]
        );
        assert!(
            with("  token-headers: []\n")
                .unwrap()
                .token_headers
                .is_empty()
        );
        for (bad, says) in [
            ("[\"a b\"]", "not an HTTP header name"),
            ("[Authorization]", "Bearer"),
            ("[X-A, x-a]", "twice"),
        ] {
            let err = with(&format!("  token-headers: {bad}\n"))
                .unwrap_err()
                .to_string();
            assert!(
                err.contains("auth.token-headers[") && err.contains(says),
                "{err}"
            );
        }
        assert_eq!(load(SAMPLE).unwrap().token_headers.len(), 2);
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
        assert!(matches!(&c.auth[0].scope, TokenScope::Only { names, .. } if names.len() == 1));

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

    /// Inputs from a table, for validation without a file system.
    #[derive(Default)]
    struct Table {
        files: std::collections::HashMap<&'static str, (&'static str, u32)>,
        vars: std::collections::HashMap<&'static str, &'static str>,
        hosts: std::collections::HashMap<&'static str, SocketAddr>,
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

    fn validate(yaml: &str, inputs: &Table) -> Result<Config, ConfigError> {
        let file = Path::new("test.yaml");
        config(crate::config::load::parse(yaml, file)?, file, inputs)
    }

    #[test]
    fn token_env_may_list_variables_tried_in_order() {
        let yaml = |envs: &str| {
            format!("{SAMPLE}auth:\n  tokens:\n    - token-env: {envs}\n      resources: [\"*\"]\n")
        };
        let inputs = Table {
            vars: [("SECOND", "second-token"), ("THIRD", "third-token")].into(),
            ..Table::default()
        };
        let c = validate(&yaml("[FIRST, SECOND, THIRD]"), &inputs).unwrap();
        assert_eq!(c.auth[0].value.expose_secret(), "second-token");
        assert_eq!(c.auth[0].source, TokenSource::Env("SECOND".into()));
        let err = validate(&yaml("[FIRST, FOURTH]"), &inputs)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("auth.tokens[0].token-env")
                && err.contains(
                    "none of the environment variables FIRST, FOURTH is set (or they are empty)"
                ),
            "{err}"
        );
        let err = validate(&yaml("[]"), &inputs).unwrap_err().to_string();
        assert!(err.contains("empty list"), "{err}");
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
