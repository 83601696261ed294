//! End-to-end tests: the real `secret-agent` binary against moto and the
//! test doubles in `harness.py`. One module per capability.

mod support;

mod aerospike;
mod aws_agent;
mod cache;
mod core;
mod cost;
mod credentials;
mod events;
mod examples;
mod hardening;
mod hostile_files;
mod hostile_upstream;
mod log_hygiene;
mod packaging;
mod patterns;
mod production;
mod security;
mod soak;
mod ssm;
