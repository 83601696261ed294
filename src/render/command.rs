//! `on-change`: the command run after a rendered file changed.
//!
//! Run without a shell, from its argv, with standard input closed and the
//! agent's environment minus the AWS variables (`AWS_*`, which may hold
//! keys) and `NOTIFY_SOCKET` (the command is not the service). Within its
//! timeout it may finish; past it, it is killed. Its output is read and
//! counted but never logged: a command may well print the secret it was
//! given (`cat`, a verbose reload). The log says the exit status and how
//! many bytes it wrote.
//!
//! One run at a time per file: changes while a run is under way are
//! coalesced into one more run after it ([`OnChange::changed`]).

use std::path::PathBuf;
use std::process::{ExitStatus, Stdio};
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt};
use tokio::process::Command;
use tokio::sync::Notify;
use tokio::task::JoinHandle;

use crate::metrics::{Metrics, RenderFailure};

/// The runner of one file's `on-change`; stops with its handle.
pub(crate) struct OnChange {
    wake: Arc<Notify>,
    task: JoinHandle<()>,
}

impl Drop for OnChange {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl OnChange {
    /// Starts the runner of `argv` for the file at `path`.
    pub(crate) fn start(
        path: PathBuf,
        argv: Vec<String>,
        timeout: Duration,
        metrics: Arc<Metrics>,
    ) -> OnChange {
        let wake = Arc::new(Notify::new());
        let woken = Arc::clone(&wake);
        let task = tokio::spawn(async move {
            loop {
                // One stored permit: changes during a run make one more run.
                woken.notified().await;
                match run(&argv, timeout).await {
                    Ok(Outcome { status, output }) if status.success() => log::info!(
                        "render {}: on-change {} ran ({output} bytes of output, not logged)",
                        path.display(),
                        argv[0]
                    ),
                    Ok(Outcome { status, output }) => {
                        metrics.render_failure(RenderFailure::OnChange);
                        log::warn!(
                            "render {}: on-change {} failed: {status} ({output} bytes of output, not logged)",
                            path.display(),
                            argv[0]
                        );
                    }
                    Err(e) => {
                        metrics.render_failure(RenderFailure::OnChange);
                        log::warn!("render {}: on-change {}: {e}", path.display(), argv[0]);
                    }
                }
            }
        });
        OnChange { wake, task }
    }

    /// The file changed: run the command once more (after a run under way).
    pub(crate) fn changed(&self) {
        self.wake.notify_one();
    }
}

/// How a run ended.
#[derive(Debug)]
pub(crate) struct Outcome {
    pub(crate) status: ExitStatus,
    /// Bytes written to standard output and error, together.
    pub(crate) output: u64,
}

/// Why a run did not end by itself.
#[derive(Debug, thiserror::Error)]
pub(crate) enum RunError {
    #[error("could not be started: {0}")]
    Spawn(std::io::Error),
    #[error("did not finish within {}; killed", humantime::format_duration(*.0))]
    TimedOut(Duration),
    #[error("waiting for it failed: {0}")]
    Wait(std::io::Error),
}

/// Runs `argv` once, within `timeout`.
pub(crate) async fn run(argv: &[String], timeout: Duration) -> Result<Outcome, RunError> {
    let mut command = Command::new(&argv[0]);
    command
        .args(&argv[1..])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    for (name, _) in std::env::vars_os() {
        if !passed_on(&name) {
            command.env_remove(name);
        }
    }
    let mut child = command.spawn().map_err(RunError::Spawn)?;
    let (stdout, stderr) = (child.stdout.take(), child.stderr.take());
    let ran = tokio::time::timeout(timeout, async {
        let (out, err) = tokio::join!(count(stdout), count(stderr));
        let status = child.wait().await.map_err(RunError::Wait)?;
        Ok::<_, RunError>(Outcome {
            status,
            output: out + err,
        })
    })
    .await;
    match ran {
        Ok(outcome) => outcome,
        Err(_) => {
            // kill_on_drop would too; this waits for it.
            if child.start_kill().is_ok() {
                drop(child.wait().await);
            }
            Err(RunError::TimedOut(timeout))
        }
    }
}

/// Whether the agent's variable `name` is in the command's environment.
fn passed_on(name: &std::ffi::OsStr) -> bool {
    !(name.as_encoded_bytes().starts_with(b"AWS_") || name == "NOTIFY_SOCKET")
}

/// Reads a pipe to its end, keeping only the count.
async fn count(pipe: Option<impl AsyncRead + Unpin>) -> u64 {
    let Some(mut pipe) = pipe else { return 0 };
    let mut buf = [0u8; 8192];
    let mut total = 0u64;
    while let Ok(n) = pipe.read(&mut buf).await {
        if n == 0 {
            break;
        }
        total += n as u64;
    }
    buf.fill(0);
    total
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sh(script: &str) -> Vec<String> {
        vec!["/bin/sh".into(), "-c".into(), script.into()]
    }

    #[tokio::test]
    async fn runs_without_a_shell_and_counts_the_output() {
        let outcome = run(
            &sh("printf 'hunter2'; printf 'xy' >&2"),
            Duration::from_secs(30),
        )
        .await
        .unwrap();
        assert!(outcome.status.success());
        assert_eq!(outcome.output, 9);
        // No shell between: a `;` in an argument is the program's.
        let outcome = run(
            &["/bin/echo".into(), "a; exit 3".into()],
            Duration::from_secs(30),
        )
        .await
        .unwrap();
        assert!(outcome.status.success());
        assert_eq!(outcome.output, "a; exit 3\n".len() as u64);
        let outcome = run(&sh("exit 3"), Duration::from_secs(30)).await.unwrap();
        assert_eq!(outcome.status.code(), Some(3));
    }

    #[tokio::test]
    async fn a_command_past_its_timeout_is_killed() {
        let started = tokio::time::Instant::now();
        let err = run(&sh("sleep 30"), Duration::from_millis(200))
            .await
            .unwrap_err();
        assert!(matches!(err, RunError::TimedOut(_)), "{err}");
        assert!(started.elapsed() < Duration::from_secs(20));
        let err = run(&["/nonexistent/program".into()], Duration::from_secs(1))
            .await
            .unwrap_err();
        assert!(matches!(err, RunError::Spawn(_)), "{err}");
    }

    #[test]
    fn aws_variables_and_the_notify_socket_are_not_passed_on() {
        for name in [
            "AWS_SECRET_ACCESS_KEY",
            "AWS_SESSION_TOKEN",
            "NOTIFY_SOCKET",
        ] {
            assert!(!passed_on(name.as_ref()), "{name}");
        }
        for name in ["PATH", "HOME", "LANG", "MY_AWS_THING"] {
            assert!(passed_on(name.as_ref()), "{name}");
        }
    }
}
