//! secret-agent: a local daemon that hands applications their secrets from
//! AWS Secrets Manager, so no application holds AWS credentials or calls AWS.
//!
//! A request flows one way: [`http`] resolves the name through
//! [`resources`], asks the [`cache`], which calls [`upstream`] on a miss,
//! signed with [`credentials`]. [`config`] reads and validates the YAML;
//! [`server`] wires it all and runs it.
//!
//! - [`config`]: YAML -> validated [`config::Config`], errors that name file, key and line.
//! - `yaml`: how deep YAML nests, asked before serde_yaml loads it (the only unsafe code).
//! - [`resources`]: resource names, secret ARNs, path resolution.
//! - [`credentials`]: static keys, the default chain, IMDS, assume-role.
//! - [`upstream`]: Secrets Manager clients per region, error classification.
//! - [`secret`]: the fetched value, shared and wiped on drop.
//! - [`cache`]: single flight, refresh ahead, bounded stale, eviction.
//! - [`http`]: routes and the API error table.
//! - [`metrics`]: Prometheus metrics.
//! - [`server`]: listeners, reload and lifecycle.

pub mod cache;
pub mod config;
pub mod credentials;
pub mod http;
pub mod metrics;
pub mod resources;
pub mod secret;
pub mod server;
pub mod upstream;
mod yaml;
