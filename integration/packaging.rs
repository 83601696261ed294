//! What the Debian package and its systemd unit rely on (`.ci/package`
//! builds and installs the package itself): readiness told over sd_notify
//! (`Type=notify`), `--version` naming the commit, and the man pages and
//! completions generated from the CLI's own definitions.

use std::process::Command;
use std::time::Duration;

use crate::support::*;

/// Loose: only catches a hang.
const WAIT: Duration = Duration::from_secs(10);

#[test]
fn ready_is_notified_once_every_listener_answers_then_reload_and_stop() {
    let socket_dir = tempfile::tempdir().unwrap();
    // Nothing is fetched: the listeners answer /healthz without AWS.
    let config = AgentConfig::new()
        .uds(&socket_dir.path().join("agent.sock"))
        .resource(
            "pkg/db",
            "arn:aws:secretsmanager:us-west-1:123456789012:secret:pkg/db-AbCdEf",
        );
    let notify = NotifySocket::bind();
    let (mut agent, first) = Agent::try_start_notifying(&config, &notify)
        .unwrap_or_else(|log| panic!("no notification:\n{log}"));
    assert_eq!(first.lines().next(), Some("READY=1"), "{first}");
    // Asked once, straight after READY=1: both listeners already answer.
    assert!(agent.answers_at_once(&config), "{}", agent.log());

    agent.signal("HUP");
    let reloading = notify.recv(WAIT).expect("RELOADING=1 on SIGHUP");
    assert_eq!(reloading.lines().next(), Some("RELOADING=1"), "{reloading}");
    let ready = notify.recv(WAIT).expect("READY=1 after the reload");
    assert_eq!(ready.lines().next(), Some("READY=1"), "{ready}");
    assert!(agent.answers_at_once(&config), "{}", agent.log());

    agent.signal("TERM");
    let stopping = notify.recv(WAIT).expect("STOPPING=1 on SIGTERM");
    assert_eq!(stopping.lines().next(), Some("STOPPING=1"), "{stopping}");
    let status = agent.wait_exit(WAIT).expect("the agent exits on SIGTERM");
    assert!(status.success(), "{status:?}\n{}", agent.log());
}

#[test]
fn version_names_the_commit_it_was_built_from() {
    let (code, out, err) = run_cli(&["--version"]);
    assert_eq!(code, 0, "{err}");
    let head = Command::new("git")
        .args(["rev-parse", "--short=12", "HEAD"])
        .current_dir(root())
        .output()
        .ok()
        .filter(|out| out.status.success())
        .map(|out| String::from_utf8_lossy(&out.stdout).trim().to_owned());
    let commit = head.unwrap_or_else(|| "unknown: built without git".to_owned());
    assert_eq!(
        out.trim_end(),
        format!(
            "secret-agent {} (commit {commit})",
            env!("CARGO_PKG_VERSION")
        )
    );
}

/// The long options `--help` lists.
fn long_options() -> Vec<String> {
    let (code, help, err) = run_cli(&["--help"]);
    assert_eq!(code, 0, "{err}");
    let mut options: Vec<String> = help
        .split_whitespace()
        .filter_map(|word| word.strip_prefix("--"))
        .map(|name| name.trim_end_matches(|c: char| !c.is_ascii_alphanumeric()))
        .filter(|name| !name.is_empty())
        .map(str::to_owned)
        .collect();
    options.sort();
    options.dedup();
    assert!(options.contains(&"check".to_owned()), "{help}");
    options
}

#[test]
fn the_man_pages_and_completions_list_what_help_lists_and_nothing_hidden() {
    let options = long_options();
    let dir = tempfile::tempdir().unwrap();
    let out_dir = dir.path().to_str().unwrap();
    let (code, _, err) = run_cli(&["generate-man", out_dir]);
    assert_eq!(code, 0, "{err}");
    let page = std::fs::read_to_string(dir.path().join("secret-agent.1")).unwrap();
    assert!(
        page.starts_with(".ie") || page.contains(".TH secret-agent 1"),
        "{page}"
    );
    assert!(
        dir.path()
            .join("secret-agent-convert-aws-agent-config.1")
            .is_file()
    );
    for option in &options {
        let roff = format!("\\-\\-{}", option.replace('-', "\\-"));
        assert!(page.contains(&roff), "the man page lacks --{option}");
    }
    for shell in ["bash", "zsh", "fish"] {
        let (code, script, err) = run_cli(&["generate-completions", shell]);
        assert_eq!(code, 0, "{shell}: {err}");
        for option in &options {
            assert!(script.contains(option.as_str()), "{shell} lacks --{option}");
        }
        assert!(script.contains("convert-aws-agent-config"), "{shell}");
        assert!(
            !script.contains("generate-"),
            "{shell} offers a packaging command"
        );
    }
    let (_, help, _) = run_cli(&["--help"]);
    assert!(!help.contains("generate-"), "{help}");
    assert!(!page.contains("generate"), "{page}");

    let (code, _, err) = run_cli(&["generate-completions", "no-such-shell"]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("no-such-shell"), "{err}");
    let (code, _, err) = run_cli(&["generate-man", "/nonexistent/dir"]);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("/nonexistent/dir"), "{err}");
}
