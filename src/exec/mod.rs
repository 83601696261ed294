//! `secret-agent exec`: runs a program with secrets in its environment.
//!
//! It reads every `--env` value through the one read path (the cache,
//! credentials, refreshes and events the agent serves from), and starts the
//! program only when all of them are there. It forwards SIGTERM, SIGINT
//! and SIGHUP to the program and exits with the program's exit code (128 +
//! the signal's number when a signal killed it). While the program runs,
//! it reads the values again every second (which keeps them refreshed) and
//! applies `--on-change` when one changes.
//!
//! - [`spec`]: `--env NAME=RESOURCE[/KEY]` and `--on-change`, parsed.
//! - [`values`]: the values, read and watched for changes.
//! - [`child`]: the program: started, signalled, stopped; exit codes.

mod child;
mod spec;
mod values;

use std::ffi::OsString;
use std::time::Duration;

pub use child::ExecSignals;
pub use spec::{ArgError, EnvVar, OnChange, Signal};

use crate::read::Reader;
use child::{Child, exit_code};
use values::Values;

/// exec's own exit codes, beside the program's; documented in
/// docs/files-and-environment.md.
pub mod exit {
    /// The arguments or the config are not valid (as for the agent).
    pub const USAGE: u8 = 2;
    /// A value could not be read (or exec failed otherwise) before the
    /// program started: as `env`, `timeout` and `docker run` use 125.
    pub const FAILED: u8 = 125;
    /// The program exists but cannot be run.
    pub const CANNOT_RUN: u8 = 126;
    /// There is no such program.
    pub const NOT_FOUND: u8 = 127;
}

/// What `secret-agent exec` was asked to run.
#[derive(Debug, Clone)]
pub struct Exec {
    /// The variables to set, each from a resource (or one key of it).
    pub env: Vec<EnvVar>,
    pub on_change: OnChange,
    pub program: OsString,
    pub args: Vec<OsString>,
}

impl Exec {
    /// Refuses what parsing each argument alone cannot see: a variable
    /// named twice.
    pub fn validate(&self) -> Result<(), ArgError> {
        spec::no_duplicates(&self.env)
    }
}

/// Runs `exec` to its end and returns exec's exit code. `shutdown_timeout`
/// bounds the wait for the program to exit after SIGTERM on a change
/// (`restart`, `exit`), after which it is killed.
pub(crate) async fn run(
    exec: Exec,
    reader: Reader,
    mut signals: ExecSignals,
    shutdown_timeout: Duration,
) -> u8 {
    let fetched = tokio::select! {
        fetched = Values::fetch(reader, exec.env.clone()) => fetched,
        signal = stop_signal(&mut signals) => {
            log::info!("exec: {signal} before {} started: not starting it", exec.program.to_string_lossy());
            return 128 + u8::try_from(signal.number()).unwrap_or(0);
        }
    };
    let mut values = match fetched {
        Ok(values) => values,
        Err(missing) => {
            for m in &missing {
                eprintln!("secret-agent: exec: {m}");
            }
            eprintln!(
                "secret-agent: exec: {} not started: {} of {} value(s) missing",
                exec.program.to_string_lossy(),
                missing.len(),
                exec.env.len()
            );
            return exit::FAILED;
        }
    };
    let mut child = match Child::spawn(&exec.program, &exec.args, values.env()) {
        Ok(child) => child,
        Err(e) => {
            eprintln!("secret-agent: exec: {e}");
            return e.exit_code();
        }
    };
    let watch = exec.on_change != OnChange::None;
    // Set by SIGTERM or SIGINT: the program is stopping, nothing restarts it.
    let mut stopping = false;
    loop {
        tokio::select! {
            status = child.wait() => {
                let code = exit_code(status);
                log::info!("exec: {} exited: {status}; exiting with {code}", child.shown());
                return code;
            }
            signal = signals.recv() => {
                stopping |= signal != Signal::Hup;
                child.signal(signal);
            }
            changed = values.changed(), if watch && !stopping => {
                log::info!(
                    "exec: {} changed; on-change: {}",
                    changed.join(", "),
                    exec.on_change
                );
                match exec.on_change {
                    OnChange::None => {}
                    OnChange::Signal(signal) => child.signal(signal),
                    OnChange::Exit => {
                        let (status, _) = child.stop(shutdown_timeout, &mut signals).await;
                        let code = exit_code(status);
                        log::info!("exec: {} exited: {status}; exiting with {code}", child.shown());
                        return code;
                    }
                    OnChange::Restart => {
                        let (status, stop_asked) = child.stop(shutdown_timeout, &mut signals).await;
                        if stop_asked {
                            let code = exit_code(status);
                            log::info!("exec: {} exited: {status}; asked to stop, exiting with {code}", child.shown());
                            return code;
                        }
                        log::info!("exec: {} exited: {status}; starting it again", child.shown());
                        child = match Child::spawn(&exec.program, &exec.args, values.env()) {
                            Ok(child) => child,
                            Err(e) => {
                                eprintln!("secret-agent: exec: {e}");
                                return e.exit_code();
                            }
                        };
                    }
                }
            }
        }
    }
}

/// The next SIGTERM or SIGINT; a SIGHUP before the program runs has nobody
/// to go to, and is dropped.
async fn stop_signal(signals: &mut ExecSignals) -> Signal {
    loop {
        match signals.recv().await {
            Signal::Hup => log::info!("exec: SIGHUP before the program started: ignored"),
            signal => return signal,
        }
    }
}
