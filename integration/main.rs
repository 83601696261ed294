//! End-to-end tests: the real `secret-agent` binary against moto and the
//! test doubles in `harness.py`. One module per capability.

// The agent runs as a real process: its time is the wall clock's, and the
// kit's clean-up (killing children, removing sockets) may fail harmlessly.
#![allow(
    clippy::disallowed_types,
    reason = "a real process runs on the wall clock, not tokio's paused one"
)]
#![allow(
    clippy::let_underscore_must_use,
    reason = "clean-up of test processes and files may fail harmlessly"
)]

mod support;

mod aerospike;
mod aws_agent;
mod cache;
mod core;
mod cost;
mod credentials;
mod events;
mod examples;
mod exec;
mod file_credentials;
mod hardening;
mod hostile_files;
mod hostile_upstream;
mod log_hygiene;
mod packaging;
mod patterns;
mod production;
mod render;
mod security;
mod soak;
mod ssm;
mod upstream_tls;
mod workload;
