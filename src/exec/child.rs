//! The program exec runs: started without a shell, signalled, stopped, and
//! its end turned into exec's exit code; and the signals exec forwards.

use std::ffi::OsString;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::process::ExitStatusExt;
use std::process::ExitStatus;
use std::time::Duration;

use bytes::Bytes;
use tokio::signal::unix::{SignalKind, signal};
use tokio::time::{Instant, sleep_until};

use super::exit;
use super::spec::Signal;

/// The signals exec forwards to its program: SIGTERM, SIGINT and SIGHUP.
/// Watched from the start of `main`, so that none of them kills exec with
/// its default action before the program runs.
pub struct ExecSignals {
    term: tokio::signal::unix::Signal,
    int: tokio::signal::unix::Signal,
    hup: tokio::signal::unix::Signal,
}

impl ExecSignals {
    /// Installs the handlers. Needs a tokio runtime.
    pub fn install() -> std::io::Result<ExecSignals> {
        Ok(ExecSignals {
            term: signal(SignalKind::terminate())?,
            int: signal(SignalKind::interrupt())?,
            hup: signal(SignalKind::hangup())?,
        })
    }

    /// The next signal that arrives.
    pub(crate) async fn recv(&mut self) -> Signal {
        tokio::select! {
            _ = self.term.recv() => Signal::Term,
            _ = self.int.recv() => Signal::Int,
            _ = self.hup.recv() => Signal::Hup,
        }
    }
}

/// Why the program could not be started; exec exits with [`Self::exit_code`].
#[derive(Debug, thiserror::Error)]
#[error("cannot run {program}: {error}")]
pub(crate) struct SpawnError {
    program: String,
    error: std::io::Error,
}

impl SpawnError {
    /// 127 when there is no such program, else 126, as a shell answers.
    pub(crate) fn exit_code(&self) -> u8 {
        if self.error.kind() == std::io::ErrorKind::NotFound {
            exit::NOT_FOUND
        } else {
            exit::CANNOT_RUN
        }
    }
}

/// A running program.
#[derive(Debug)]
pub(crate) struct Child {
    child: tokio::process::Child,
    /// What logs call it: the program as given.
    shown: String,
}

impl Child {
    /// Starts `program` with `args`, exec's own environment and `env` on
    /// top; standard input, output and error are exec's.
    pub(crate) fn spawn<'a>(
        program: &OsString,
        args: &[OsString],
        env: impl Iterator<Item = (&'a str, &'a Bytes)>,
    ) -> Result<Child, SpawnError> {
        let shown = program.to_string_lossy().into_owned();
        let mut command = tokio::process::Command::new(program);
        command.args(args);
        for (name, value) in env {
            command.env(name, std::ffi::OsStr::from_bytes(value));
        }
        // Should exec itself be killed, the program must not go on alone
        // with nobody to forward signals to it or restart it.
        command.kill_on_drop(true);
        match command.spawn() {
            Ok(child) => {
                log::info!(
                    "exec: started {shown} (pid {})",
                    child.id().unwrap_or_default()
                );
                Ok(Child { child, shown })
            }
            Err(error) => Err(SpawnError {
                program: shown,
                error,
            }),
        }
    }

    /// Sends `signal`; a program that already exited is not an error.
    pub(crate) fn signal(&self, signal: Signal) {
        let Some(pid) = self.child.id() else {
            return;
        };
        let sent = i32::try_from(pid)
            .ok()
            .and_then(rustix::process::Pid::from_raw)
            .zip(rustix::process::Signal::from_named_raw(signal.number()))
            .map(|(pid, sig)| rustix::process::kill_process(pid, sig));
        match sent {
            Some(Ok(())) => log::debug!("exec: sent {signal} to {} (pid {pid})", self.shown),
            Some(Err(e)) if e == rustix::io::Errno::SRCH => {}
            Some(Err(e)) => log::warn!("exec: cannot send {signal} to {}: {e}", self.shown),
            None => log::warn!("exec: cannot send {signal} to {}", self.shown),
        }
    }

    /// Waits for the program to exit.
    pub(crate) async fn wait(&mut self) -> ExitStatus {
        match self.child.wait().await {
            Ok(status) => status,
            // Only when the child was reaped elsewhere, which nothing does.
            Err(e) => {
                log::error!("exec: cannot wait for {}: {e}", self.shown);
                ExitStatus::from_raw(i32::from(exit::FAILED) << 8)
            }
        }
    }

    /// SIGTERM, then SIGKILL if it has not exited within `timeout`; returns
    /// how it ended. Signals that arrive meanwhile are forwarded; the
    /// returned flag says whether one asked exec to stop (SIGTERM, SIGINT).
    pub(crate) async fn stop(
        &mut self,
        timeout: Duration,
        signals: &mut ExecSignals,
    ) -> (ExitStatus, bool) {
        self.signal(Signal::Term);
        let deadline = Instant::now() + timeout;
        let mut killed = false;
        let mut stop_asked = false;
        loop {
            tokio::select! {
                status = self.wait() => return (status, stop_asked),
                signal = signals.recv() => {
                    stop_asked |= signal != Signal::Hup;
                    self.signal(signal);
                }
                () = sleep_until(deadline), if !killed => {
                    log::warn!(
                        "exec: {} did not exit within {} of SIGTERM (service.shutdown-timeout): SIGKILL",
                        self.shown,
                        humantime::format_duration(timeout)
                    );
                    killed = true;
                    if let Err(e) = self.child.start_kill() {
                        log::warn!("exec: cannot kill {}: {e}", self.shown);
                    }
                }
            }
        }
    }

    pub(crate) fn shown(&self) -> &str {
        &self.shown
    }
}

/// exec's exit code for the program's end: its exit code, or 128 + the
/// signal's number when a signal killed it, as a shell reports it.
pub(crate) fn exit_code(status: ExitStatus) -> u8 {
    match (status.code(), status.signal()) {
        // An exit code is 0 to 255 on Unix.
        (Some(code), _) => u8::try_from(code & 0xff).unwrap_or(exit::FAILED),
        (None, Some(signal)) => u8::try_from(128 + signal).unwrap_or(exit::FAILED),
        (None, None) => exit::FAILED,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exit_codes_pass_on_and_signals_add_128() {
        // A wait status: the code in the second byte, or the signal in the first.
        let exited = |code: i32| ExitStatus::from_raw(code << 8);
        assert_eq!(exit_code(exited(0)), 0);
        assert_eq!(exit_code(exited(3)), 3);
        assert_eq!(exit_code(exited(255)), 255);
        assert_eq!(exit_code(ExitStatus::from_raw(libc::SIGTERM)), 143);
        assert_eq!(exit_code(ExitStatus::from_raw(libc::SIGKILL)), 137);
        assert_eq!(exit_code(ExitStatus::from_raw(libc::SIGHUP)), 129);
        // Killed with a core dump: still 128 + the signal.
        assert_eq!(exit_code(ExitStatus::from_raw(libc::SIGSEGV | 0x80)), 139);
    }

    #[tokio::test]
    async fn a_program_that_is_missing_or_not_executable_gives_127_or_126() {
        let none = std::iter::empty();
        let missing = Child::spawn(&"/nonexistent/program".into(), &[], none).unwrap_err();
        assert_eq!(missing.exit_code(), 127);
        assert!(
            missing.to_string().contains("/nonexistent/program"),
            "{missing}"
        );
        let dir = tempfile::tempdir().unwrap();
        let not_executable = Child::spawn(&dir.path().into(), &[], std::iter::empty());
        assert_eq!(not_executable.unwrap_err().exit_code(), 126);
    }
}
