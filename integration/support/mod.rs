//! The kit for the end-to-end tests: the Python harness (moto, the IMDSv2
//! double and the recording proxy, see `harness.py`), a typed config for the
//! real `secret-agent` binary, the agent itself, HTTP helpers and test
//! certificates.

mod agent;
mod config;
mod http;
mod metrics;
mod tls;
mod world;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicUsize, Ordering};

use serde_json::Value;

pub(crate) use agent::*;
pub(crate) use config::*;
pub(crate) use http::*;
pub(crate) use metrics::*;
pub(crate) use tls::*;
pub(crate) use world::*;

/// The region of the shared world's secrets and of [`AgentConfig::new`].
pub(crate) const REGION: &str = "us-west-1";

/// The repository root.
pub(crate) fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// A TCP port on 127.0.0.1 that was free a moment ago, for programs that
/// cannot be given port 0 (the AWS agent's `http_port`).
pub(crate) fn free_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap().port()
}

/// A name no other test uses.
pub(crate) fn unique(prefix: &str) -> String {
    static N: AtomicUsize = AtomicUsize::new(0);
    format!(
        "{prefix}-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    )
}

/// The executable of `examples/client.rs`, built once per test run (a no-op
/// after `cargo test`, which builds the examples; needed after `cargo test
/// --test integration`, which does not).
pub(crate) fn rust_client() -> &'static Path {
    static CLIENT: OnceLock<PathBuf> = OnceLock::new();
    CLIENT.get_or_init(|| {
        let mut cargo = Command::new(env!("CARGO"));
        // What cargo set for this test process describes this package, not
        // the build; ring's build script would take it for a change and
        // rebuild half the dependencies.
        for (var, _) in std::env::vars_os() {
            let var = var.to_string_lossy();
            let ours = [
                "CARGO_PKG_",
                "CARGO_MANIFEST_",
                "CARGO_CRATE_",
                "CARGO_BIN_",
            ];
            if ours.iter().any(|p| var.starts_with(p))
                || var == "CARGO_PRIMARY_PACKAGE"
                || var == "CARGO_TARGET_TMPDIR"
            {
                cargo.env_remove(&*var);
            }
        }
        let out = cargo
            .args([
                "build",
                "--quiet",
                "--example",
                "client",
                "--message-format=json",
            ])
            .current_dir(root())
            .stderr(Stdio::inherit())
            .output()
            .expect("run cargo build --example client");
        assert!(out.status.success(), "cargo build --example client failed");
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter_map(|line| serde_json::from_str::<Value>(line).ok())
            .filter(|m| m["reason"] == "compiler-artifact" && m["target"]["name"] == "client")
            .find_map(|m| m["executable"].as_str().map(PathBuf::from))
            .expect("cargo build --example client names its executable")
    })
}

/// A `http://` URL on which nothing listens.
pub(crate) fn closed_url() -> String {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    format!("http://{}", listener.local_addr().unwrap())
}

/// Raises this process's soft limit of open files to the hard one (with
/// `prlimit`) for floods of more than a thousand connections; agents
/// started later inherit it. Panics if `needed` files are still not allowed.
pub(crate) fn raise_fd_limit(needed: u64) {
    let limits = || {
        let text = std::fs::read_to_string("/proc/self/limits").unwrap_or_default();
        let line = text.lines().find(|l| l.starts_with("Max open files"));
        let mut numbers = line
            .into_iter()
            .flat_map(|l| l.split_whitespace())
            .filter_map(|w| w.parse::<u64>().ok());
        (numbers.next().unwrap_or(0), numbers.next())
    };
    let (soft, hard) = limits();
    if soft >= needed {
        return;
    }
    // `unlimited` does not parse: then ask for what is needed.
    let target = hard.unwrap_or(needed.max(1 << 16));
    let _ = Command::new("prlimit")
        .arg(format!("--pid={}", std::process::id()))
        .arg(format!("--nofile={target}:{target}"))
        .stderr(Stdio::null())
        .status();
    let (soft, _) = limits();
    assert!(
        soft >= needed,
        "this test needs {needed} open files; the limit is {soft} (ulimit -n)"
    );
}
