//! secret-agent: a local daemon that hands applications their secrets from
//! AWS Secrets Manager (and parameters from Systems Manager Parameter
//! Store), so no application holds AWS credentials or calls AWS.
//!
//! A request flows one way: [`listen`] accepts the connection, [`http`]
//! resolves the name through [`resources`], asks the [`cache`], which calls
//! [`upstream`] on a miss, signed with [`credentials`]. [`config`] reads and
//! validates the YAML; [`app`] wires it all and runs it.
//!
//! - [`domain`]: parsed values: resource names, ARNs, versions, the zeroized value.
//! - [`read`]: the one read path both front ends take: gate, admission, cache, one error.
//! - [`access`]: tokens and scopes -> grants; no protocol types.
//! - [`config`]: YAML -> validated [`Config`], errors that name file, key and line;
//!   it asks libyaml how deep the YAML nests before serde_yaml loads it.
//! - [`resources`]: patterns and the name -> ARN table, path resolution.
//! - [`credentials`]: static keys, the default chain, IMDS, a credentials file, assume-role.
//! - [`account`]: the caller's own account (`caller` in ARNs), learnt once at start.
//! - [`roles`]: the roles clients read as (`roleArn`), each with its own
//!   credentials, clients and cache, least recently used dropped.
//! - [`aws`]: the SDK settings every AWS client shares (region, timeouts, retries).
//! - [`aws_http`]: the HTTP client every AWS call goes through, answer bodies capped.
//! - [`upstream`]: Secrets Manager and SSM clients per region, error classification.
//! - [`cache`]: single flight, refresh ahead, bounded stale, eviction.
//! - [`backoff`]: the one jittered exponential backoff between retries.
//! - [`warmup`]: the `prefetch` plan: names and tag keys, as the agent or a role.
//! - [`events`]: refreshes on the Secrets Manager events an SQS queue brings.
//! - [`http`]: routes (the Lambda extension's Parameter Store route too) and
//!   the API error table.
//! - [`metrics`]: Prometheus metrics.
//! - [`listen`]: TCP, TLS and Unix-socket listeners; per-connection limits;
//!   the first bytes choose HTTP or the [`aerospike`] secret agent protocol.
//! - [`logging`]: the log, kept free of key ids and bounded against clients.
//! - [`text`]: the one rule for echoing outside input in a message.
//! - [`reload`]: SIGHUP, compared by value and applied atomically.
//! - [`render`]: files kept written with secrets (templates, atomic safe
//!   writes, `on-change`), read through [`read`].
//! - [`exec`]: `secret-agent exec`: a program run with secrets in its environment.
//! - [`app`]: wiring, signals and lifecycle.
//! - [`notify`]: readiness, reloads and stops, told to systemd (sd_notify).

// The map links the private modules: `cargo doc --document-private-items`
// renders it with working links.
#![allow(rustdoc::private_intra_doc_links)]

mod access;
mod account;
mod aerospike;
mod app;
mod aws;
mod aws_http;
mod backoff;
mod cache;
mod config;
mod credentials;
mod domain;
mod events;
pub mod exec;
mod http;
mod listen;
mod logging;
mod metrics;
mod notify;
mod read;
mod reload;
mod render;
mod resources;
mod roles;
mod text;
mod upstream;
mod warmup;

pub use account::resolve_caller_account;
pub use app::{Application, Serving, Signals};
pub use aws::aws_agent_config;
pub use config::{
    Config, ConfigError, Conversion, ConversionError, TomlProblem, convert_aws_agent_config,
    read_config_file,
};
pub use logging::install as install_logging;
