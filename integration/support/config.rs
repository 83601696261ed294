//! The agent's YAML config, built from typed values and written by serde.
//! Keys and nesting follow `config/*.yaml`; only what the tests set is here.

use std::path::{Path, PathBuf};

use serde::{Serialize, Serializer};

use super::REGION;

/// The access key id of [`AgentConfig::test_keys`].
pub(crate) const TEST_KEY_ID: &str = "AKIATESTTESTTESTTEST";
/// The secret key of [`AgentConfig::test_keys`]; tests look for it in logs.
pub(crate) const TEST_SECRET_KEY: &str = "test-secret-key-never-logged";

/// A whole config file. [`AgentConfig::new`] listens on `127.0.0.1:0`, in
/// [`REGION`], with no resources, no credentials and every other setting at
/// its default.
#[derive(Clone, Serialize)]
#[serde(rename_all = "kebab-case")]
pub(crate) struct AgentConfig {
    service: Service,
    secret_manager: SecretManager,
    #[serde(skip_serializing_if = "Cache::is_empty")]
    cache: Cache,
    #[serde(skip_serializing_if = "Option::is_none")]
    auth: Option<Auth>,
    #[serde(skip_serializing_if = "Option::is_none")]
    log: Option<Log>,
    /// `prefetch`, as written.
    #[serde(skip_serializing_if = "Option::is_none")]
    prefetch: Option<serde_json::Value>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    render: Vec<Render>,
}

/// One `render:` entry: a file kept written from a resource (or one of
/// its keys) or a template.
#[derive(Clone, Default, Serialize)]
#[serde(rename_all = "kebab-case")]
pub(crate) struct Render {
    path: PathBuf,
    #[serde(skip_serializing_if = "Option::is_none")]
    resource: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    key: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    template: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    mode: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    on_change: Option<Vec<String>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    on_change_timeout: Option<String>,
}

impl Render {
    /// `path` holds the value of the resource `name`.
    pub(crate) fn resource(path: &Path, name: &str) -> Render {
        Render {
            path: path.into(),
            resource: Some(name.into()),
            ..Render::default()
        }
    }

    /// `path` holds `template` rendered.
    pub(crate) fn template(path: &Path, template: &str) -> Render {
        Render {
            path: path.into(),
            template: Some(template.into()),
            ..Render::default()
        }
    }

    pub(crate) fn key(mut self, key: &str) -> Render {
        self.key = Some(key.into());
        self
    }

    /// e.g. `"0640"`.
    pub(crate) fn mode(mut self, mode: &str) -> Render {
        self.mode = Some(mode.into());
        self
    }

    /// The command run after the file changed, as argv.
    pub(crate) fn on_change(mut self, argv: &[&str]) -> Render {
        self.on_change = Some(argv.iter().map(|a| a.to_string()).collect());
        self
    }
}

#[derive(Clone, Default, Serialize)]
#[serde(rename_all = "kebab-case")]
struct Service {
    #[serde(skip_serializing_if = "Option::is_none")]
    tcp: Option<Tcp>,
    #[serde(skip_serializing_if = "Option::is_none")]
    uds: Option<Uds>,
    #[serde(skip_serializing_if = "Option::is_none")]
    max_connections: Option<usize>,
    #[serde(skip_serializing_if = "Option::is_none")]
    over_limit: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    request_timeout: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    shutdown_timeout: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    workers: Option<usize>,
}

#[derive(Clone, Serialize)]
#[serde(rename_all = "kebab-case")]
struct Tcp {
    endpoint: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    tls: Option<Tls>,
}

/// `service.tcp.tls`: PEM files; with `ca_file`, clients need a certificate
/// from that CA (mTLS).
#[derive(Clone, Serialize)]
#[serde(rename_all = "kebab-case")]
pub(crate) struct Tls {
    pub cert_file: PathBuf,
    pub key_file: PathBuf,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ca_file: Option<PathBuf>,
}

#[derive(Clone, Serialize)]
#[serde(rename_all = "kebab-case")]
struct Uds {
    socket_path: PathBuf,
    #[serde(skip_serializing_if = "Option::is_none")]
    mode: Option<String>,
}

#[derive(Clone, Serialize)]
struct SecretManager {
    aws: Aws,
}

#[derive(Clone, Default, Serialize)]
#[serde(rename_all = "kebab-case")]
struct Aws {
    #[serde(skip_serializing_if = "Option::is_none")]
    region: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    endpoint: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    ssm_endpoint: Option<String>,
    /// In the order given, so "the first resource" is the first added.
    #[serde(serialize_with = "as_map")]
    resources: Vec<(String, String)>,
    #[serde(skip_serializing_if = "Option::is_none")]
    access_key_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    secret_access_key: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    session_token: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    profile: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    credentials_file: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    assume_role: Option<AssumeRole>,
    #[serde(skip_serializing_if = "Option::is_none")]
    sts_endpoint: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    sts_region: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    max_concurrent_calls: Option<usize>,
    #[serde(skip_serializing_if = "Option::is_none")]
    max_roles: Option<usize>,
    #[serde(skip_serializing_if = "Option::is_none")]
    convert_to_base64: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    events: Option<Events>,
}

#[derive(Clone, Serialize)]
#[serde(rename_all = "kebab-case")]
struct Events {
    queue_url: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    endpoint: Option<String>,
}

fn as_map<S: Serializer>(pairs: &[(String, String)], serializer: S) -> Result<S::Ok, S::Error> {
    serializer.collect_map(pairs.iter().map(|(k, v)| (k, v)))
}

/// `secret-manager.aws.assume-role`: a role ARN, or the map form.
#[derive(Clone, Serialize)]
#[serde(untagged, rename_all = "kebab-case")]
pub(crate) enum AssumeRole {
    Arn(String),
    #[serde(rename_all = "kebab-case")]
    Full {
        role_arn: String,
        #[serde(skip_serializing_if = "Option::is_none")]
        external_id: Option<String>,
        #[serde(skip_serializing_if = "Option::is_none")]
        session_name: Option<String>,
        /// e.g. `15m`.
        #[serde(skip_serializing_if = "Option::is_none")]
        duration: Option<String>,
    },
}

/// The `cache:` section; durations in the agent's syntax (`300s`, `5m`, `0`).
#[derive(Clone, Default, PartialEq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub(crate) struct Cache {
    #[serde(skip_serializing_if = "Option::is_none")]
    ttl: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    refresh_ahead: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    max_stale: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    max_entries: Option<usize>,
    #[serde(skip_serializing_if = "Option::is_none")]
    prefetch: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    fetch_timeout: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    min_refresh_interval: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    negative_ttl: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    new_names_per_second: Option<u32>,
}

impl Cache {
    fn is_empty(&self) -> bool {
        *self == Cache::default()
    }

    pub(crate) fn new_names_per_second(mut self, value: u32) -> Cache {
        self.new_names_per_second = Some(value);
        self
    }

    pub(crate) fn ttl(mut self, value: &str) -> Cache {
        self.ttl = Some(value.into());
        self
    }

    pub(crate) fn refresh_ahead(mut self, value: &str) -> Cache {
        self.refresh_ahead = Some(value.into());
        self
    }

    pub(crate) fn max_stale(mut self, value: &str) -> Cache {
        self.max_stale = Some(value.into());
        self
    }

    pub(crate) fn max_entries(mut self, value: usize) -> Cache {
        self.max_entries = Some(value);
        self
    }

    pub(crate) fn prefetch(mut self) -> Cache {
        self.prefetch = Some(true);
        self
    }

    pub(crate) fn fetch_timeout(mut self, value: &str) -> Cache {
        self.fetch_timeout = Some(value.into());
        self
    }

    pub(crate) fn min_refresh_interval(mut self, value: &str) -> Cache {
        self.min_refresh_interval = Some(value.into());
        self
    }

    pub(crate) fn negative_ttl(mut self, value: &str) -> Cache {
        self.negative_ttl = Some(value.into());
        self
    }
}

#[derive(Clone, Serialize)]
#[serde(rename_all = "kebab-case")]
struct Auth {
    tokens: Vec<Token>,
    #[serde(skip_serializing_if = "Option::is_none")]
    secret_agent_protocol: Option<ProtocolGrant>,
    #[serde(skip_serializing_if = "Option::is_none")]
    token_headers: Option<Vec<String>>,
}

#[derive(Clone, Serialize)]
struct ProtocolGrant {
    resources: Vec<String>,
}

#[derive(Clone, Serialize)]
#[serde(rename_all = "kebab-case")]
struct Token {
    #[serde(skip_serializing_if = "Option::is_none")]
    token_file: Option<PathBuf>,
    #[serde(skip_serializing_if = "Option::is_none")]
    token_env: Option<String>,
    resources: Vec<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    roles: Vec<String>,
}

#[derive(Clone, Serialize)]
struct Log {
    level: String,
}

impl Default for AgentConfig {
    fn default() -> Self {
        AgentConfig::new()
    }
}

impl AgentConfig {
    pub(crate) fn new() -> AgentConfig {
        AgentConfig {
            service: Service {
                tcp: Some(Tcp {
                    endpoint: "127.0.0.1:0".into(),
                    tls: None,
                }),
                ..Service::default()
            },
            secret_manager: SecretManager {
                aws: Aws {
                    region: Some(REGION.into()),
                    ..Aws::default()
                },
            },
            cache: Cache::default(),
            auth: None,
            log: None,
            render: Vec::new(),
            prefetch: None,
        }
    }

    /// The YAML the agent reads.
    pub(crate) fn yaml(&self) -> String {
        serde_yaml::to_string(self).expect("an agent config serializes")
    }

    // service

    /// `service.tcp.endpoint` (`127.0.0.1:0` unless set).
    pub(crate) fn tcp(mut self, endpoint: &str) -> AgentConfig {
        self.tcp_mut().endpoint = endpoint.into();
        self
    }

    /// Serve TLS on the TCP listener.
    pub(crate) fn tls(mut self, tls: Tls) -> AgentConfig {
        self.tcp_mut().tls = Some(tls);
        self
    }

    /// A Unix socket at `path`, instead of TCP.
    pub(crate) fn uds_only(mut self, path: &Path) -> AgentConfig {
        self.service.tcp = None;
        self.service.uds = Some(Uds {
            socket_path: path.into(),
            mode: None,
        });
        self
    }

    /// A Unix socket at `path`, beside the TCP listener.
    pub(crate) fn uds(mut self, path: &Path) -> AgentConfig {
        self.service.uds = Some(Uds {
            socket_path: path.into(),
            mode: None,
        });
        self
    }

    /// The Unix socket's mode, e.g. `"0600"`.
    pub(crate) fn uds_mode(mut self, mode: &str) -> AgentConfig {
        self.service.uds.as_mut().expect("a Unix socket").mode = Some(mode.into());
        self
    }

    pub(crate) fn max_connections(mut self, limit: usize) -> AgentConfig {
        self.service.max_connections = Some(limit);
        self
    }

    /// `service.over-limit`: `queue` or `refuse`.
    pub(crate) fn over_limit(mut self, value: &str) -> AgentConfig {
        self.service.over_limit = Some(value.into());
        self
    }

    pub(crate) fn request_timeout(mut self, value: &str) -> AgentConfig {
        self.service.request_timeout = Some(value.into());
        self
    }

    pub(crate) fn shutdown_timeout(mut self, value: &str) -> AgentConfig {
        self.service.shutdown_timeout = Some(value.into());
        self
    }

    /// `service.workers`: the threads that serve connections.
    pub(crate) fn workers(mut self, workers: usize) -> AgentConfig {
        self.service.workers = Some(workers);
        self
    }

    pub(super) fn has_tcp(&self) -> bool {
        self.service.tcp.is_some()
    }

    pub(super) fn has_tls(&self) -> bool {
        self.service.tcp.as_ref().is_some_and(|t| t.tls.is_some())
    }

    pub(super) fn socket_path(&self) -> Option<&Path> {
        self.service.uds.as_ref().map(|u| u.socket_path.as_path())
    }

    fn tcp_mut(&mut self) -> &mut Tcp {
        self.service.tcp.as_mut().expect("a TCP listener")
    }

    // secret-manager.aws

    /// Leaves `region` out, so the agent looks for it.
    pub(crate) fn no_region(mut self) -> AgentConfig {
        self.aws().region = None;
        self
    }

    /// The Secrets Manager endpoint: moto, or a proxy in front of it.
    pub(crate) fn endpoint(mut self, url: &str) -> AgentConfig {
        self.aws().endpoint = Some(url.into());
        self
    }

    /// `secret-manager.aws.ssm-endpoint`: where parameters are read.
    pub(crate) fn ssm_endpoint(mut self, url: &str) -> AgentConfig {
        self.aws().ssm_endpoint = Some(url.into());
        self
    }

    /// Serves `arn` as `name`.
    pub(crate) fn resource(mut self, name: &str, arn: &str) -> AgentConfig {
        self.aws().resources.push((name.into(), arn.into()));
        self
    }

    /// Serves each `(name, ARN)`.
    pub(crate) fn resources<N: AsRef<str>, A: AsRef<str>>(
        mut self,
        pairs: impl IntoIterator<Item = (N, A)>,
    ) -> AgentConfig {
        for (name, arn) in pairs {
            self = self.resource(name.as_ref(), arn.as_ref());
        }
        self
    }

    /// Static keys in the config.
    pub(crate) fn keys(mut self, access_key_id: &str, secret_access_key: &str) -> AgentConfig {
        let aws = self.aws();
        aws.access_key_id = Some(access_key_id.into());
        aws.secret_access_key = Some(secret_access_key.into());
        self
    }

    /// [`TEST_KEY_ID`] and [`TEST_SECRET_KEY`], for tests that do not care
    /// about credentials.
    pub(crate) fn test_keys(self) -> AgentConfig {
        self.keys(TEST_KEY_ID, TEST_SECRET_KEY)
    }

    pub(crate) fn session_token(mut self, token: &str) -> AgentConfig {
        self.aws().session_token = Some(token.into());
        self
    }

    pub(crate) fn profile(mut self, profile: &str) -> AgentConfig {
        self.aws().profile = Some(profile.into());
        self
    }

    /// `credentials-file: <path>`: keys from that file only.
    pub(crate) fn credentials_file(mut self, path: &Path) -> AgentConfig {
        self.aws().credentials_file = Some(path.display().to_string());
        self
    }

    pub(crate) fn assume_role(mut self, role: AssumeRole) -> AgentConfig {
        self.aws().assume_role = Some(role);
        self
    }

    pub(crate) fn sts_endpoint(mut self, url: &str) -> AgentConfig {
        self.aws().sts_endpoint = Some(url.into());
        self
    }

    pub(crate) fn sts_region(mut self, region: &str) -> AgentConfig {
        self.aws().sts_region = Some(region.into());
        self
    }

    /// `secret-manager.aws.max-roles`.
    pub(crate) fn max_roles(mut self, limit: usize) -> AgentConfig {
        self.aws().max_roles = Some(limit);
        self
    }

    pub(crate) fn max_concurrent_calls(mut self, limit: usize) -> AgentConfig {
        self.aws().max_concurrent_calls = Some(limit);
        self
    }

    /// `convert-to-base64: true` for the secret agent protocol.
    pub(crate) fn convert_to_base64(mut self) -> AgentConfig {
        self.aws().convert_to_base64 = Some(true);
        self
    }

    /// `secret-manager.aws.events`: refresh on the events of this SQS queue.
    pub(crate) fn events(mut self, queue_url: &str, endpoint: &str) -> AgentConfig {
        self.aws().events = Some(Events {
            queue_url: queue_url.into(),
            endpoint: Some(endpoint.into()),
        });
        self
    }

    fn aws(&mut self) -> &mut Aws {
        &mut self.secret_manager.aws
    }

    // cache, auth, log

    /// Changes the `cache:` section, e.g. `.cache(|c| c.ttl("0s"))`.
    pub(crate) fn cache(mut self, change: impl FnOnce(Cache) -> Cache) -> AgentConfig {
        self.cache = change(self.cache);
        self
    }

    /// A client token read from the variable `env`, for `resources`.
    pub(crate) fn token_env(self, env: &str, resources: &[&str]) -> AgentConfig {
        self.token(Token {
            token_file: None,
            token_env: Some(env.into()),
            resources: resources.iter().map(|r| r.to_string()).collect(),
            roles: Vec::new(),
        })
    }

    /// `roles` of the last token: the roles it may read as.
    pub(crate) fn token_roles(mut self, roles: &[&str]) -> AgentConfig {
        let auth = self.auth.as_mut().expect("a token first");
        auth.tokens.last_mut().expect("a token first").roles =
            roles.iter().map(|r| r.to_string()).collect();
        self
    }

    /// A client token read from `file`, for `resources`.
    pub(crate) fn token_file(self, file: &Path, resources: &[&str]) -> AgentConfig {
        self.token(Token {
            token_file: Some(file.into()),
            token_env: None,
            resources: resources.iter().map(|r| r.to_string()).collect(),
            roles: Vec::new(),
        })
    }

    fn token(mut self, token: Token) -> AgentConfig {
        self.auth
            .get_or_insert_with(|| Auth {
                tokens: Vec::new(),
                secret_agent_protocol: None,
                token_headers: None,
            })
            .tokens
            .push(token);
        self
    }

    /// `auth.secret-agent-protocol.resources`; after a token.
    pub(crate) fn protocol_resources(mut self, resources: &[&str]) -> AgentConfig {
        self.auth
            .as_mut()
            .expect("a token first")
            .secret_agent_protocol = Some(ProtocolGrant {
            resources: resources.iter().map(|r| r.to_string()).collect(),
        });
        self
    }

    /// `auth.token-headers`; after a token.
    pub(crate) fn token_headers(mut self, headers: &[&str]) -> AgentConfig {
        self.auth.as_mut().expect("a token first").token_headers =
            Some(headers.iter().map(|h| h.to_string()).collect());
        self
    }

    /// A `render:` entry.
    pub(crate) fn render(mut self, entry: Render) -> AgentConfig {
        self.render.push(entry);
        self
    }

    /// The `prefetch` section.
    pub(crate) fn prefetch(mut self, section: serde_json::Value) -> AgentConfig {
        self.prefetch = Some(section);
        self
    }

    /// `log.level`; the kit also sets `RUST_LOG`, which wins.
    pub(crate) fn log_level(mut self, level: &str) -> AgentConfig {
        self.log = Some(Log {
            level: level.into(),
        });
        self
    }
}
