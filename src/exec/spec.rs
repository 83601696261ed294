//! What `secret-agent exec` is asked for on its command line: the
//! `--env NAME=RESOURCE[/KEY]` variables and the `--on-change` action,
//! parsed once, before the config is read.

use std::collections::HashSet;
use std::fmt;
use std::str::FromStr;

use crate::text;

/// `--env NAME=RESOURCE[/KEY]`: the variable `NAME` gets the value of
/// `RESOURCE[/KEY]`, resolved against the configured resources exactly as
/// `GET /secrets/<RESOURCE>[/<KEY>]` is (the longest configured name wins,
/// the rest after its `/` is a key of its JSON value; else a name under a
/// pattern, all of it the name).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EnvVar {
    /// A portable variable name: a letter or `_`, then letters, digits, `_`.
    name: String,
    /// `RESOURCE` or `RESOURCE/KEY`, as given; resolved at each read.
    path: String,
}

impl EnvVar {
    /// The variable's name.
    pub(crate) fn name(&self) -> &str {
        &self.name
    }

    /// `RESOURCE[/KEY]`, as given.
    pub(crate) fn path(&self) -> &str {
        &self.path
    }
}

impl fmt::Display for EnvVar {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}={}", self.name, text::echo(&self.path))
    }
}

/// A `--env` or `--on-change` argument that does not parse; it repeats a
/// short echo of the argument, which names resources, never values.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ArgError {
    #[error("`{0}` is not NAME=RESOURCE[/KEY]")]
    NoEquals(String),
    #[error(
        "`{0}` is not a variable name: a letter or `_`, then letters, digits and `_` (as in DB_PASSWORD)"
    )]
    Name(String),
    #[error("`{0}=` names no resource: give NAME=RESOURCE[/KEY]")]
    NoResource(String),
    #[error("--env {0} is given twice: each variable gets one value")]
    Duplicate(String),
    #[error(
        "`{0}` is not an on-change action: restart, exit, none or signal:<NAME> (HUP, INT, QUIT, TERM, USR1, USR2, WINCH)"
    )]
    OnChange(String),
    #[error("`{0}` is not a signal exec sends: HUP, INT, QUIT, TERM, USR1, USR2 or WINCH")]
    Signal(String),
}

impl FromStr for EnvVar {
    type Err = ArgError;

    fn from_str(arg: &str) -> Result<EnvVar, ArgError> {
        let (name, path) = arg
            .split_once('=')
            .ok_or_else(|| ArgError::NoEquals(text::echo(arg)))?;
        let mut chars = name.chars();
        let valid = chars
            .next()
            .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
            && chars.all(|c| c.is_ascii_alphanumeric() || c == '_');
        if !valid {
            return Err(ArgError::Name(text::echo(name)));
        }
        if path.is_empty() {
            return Err(ArgError::NoResource(name.to_owned()));
        }
        Ok(EnvVar {
            name: name.to_owned(),
            path: path.to_owned(),
        })
    }
}

/// Refuses a variable named twice, which would leave it unclear which
/// value the program sees.
pub(crate) fn no_duplicates(vars: &[EnvVar]) -> Result<(), ArgError> {
    let mut seen = HashSet::new();
    for var in vars {
        if !seen.insert(var.name()) {
            return Err(ArgError::Duplicate(var.name().to_owned()));
        }
    }
    Ok(())
}

/// A signal exec forwards or sends on a change.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Signal {
    Hup,
    Int,
    Quit,
    Term,
    Usr1,
    Usr2,
    Winch,
}

impl Signal {
    /// Every signal `signal:<NAME>` accepts, with its name.
    const ALL: [(Signal, &'static str); 7] = [
        (Signal::Hup, "HUP"),
        (Signal::Int, "INT"),
        (Signal::Quit, "QUIT"),
        (Signal::Term, "TERM"),
        (Signal::Usr1, "USR1"),
        (Signal::Usr2, "USR2"),
        (Signal::Winch, "WINCH"),
    ];

    /// `HUP`, `TERM`...
    pub(crate) fn name(self) -> &'static str {
        Signal::ALL
            .iter()
            .find(|(s, _)| *s == self)
            .map_or("?", |(_, name)| name)
    }

    /// The signal's number on this system.
    pub(crate) fn number(self) -> i32 {
        match self {
            Signal::Hup => libc::SIGHUP,
            Signal::Int => libc::SIGINT,
            Signal::Quit => libc::SIGQUIT,
            Signal::Term => libc::SIGTERM,
            Signal::Usr1 => libc::SIGUSR1,
            Signal::Usr2 => libc::SIGUSR2,
            Signal::Winch => libc::SIGWINCH,
        }
    }
}

impl fmt::Display for Signal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SIG{}", self.name())
    }
}

impl FromStr for Signal {
    type Err = ArgError;

    /// `HUP`, `SIGHUP` or `hup`.
    fn from_str(text: &str) -> Result<Signal, ArgError> {
        let upper = text.to_ascii_uppercase();
        let bare = upper.strip_prefix("SIG").unwrap_or(&upper);
        Signal::ALL
            .iter()
            .find(|(_, name)| *name == bare)
            .map(|(signal, _)| *signal)
            .ok_or_else(|| ArgError::Signal(text::echo(text)))
    }
}

/// `--on-change`: what exec does when a value it handed the program changes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum OnChange {
    /// Nothing: the program keeps the values it started with (and exec
    /// does not poll them).
    #[default]
    None,
    /// SIGTERM, wait up to `service.shutdown-timeout` (then SIGKILL), start
    /// the program again with the new values.
    Restart,
    /// Send this signal. A running process's environment cannot change:
    /// this is for programs that re-read something else (a rendered file).
    Signal(Signal),
    /// Stop the program as `restart` does, and exit with its code, for a
    /// supervisor to start it again.
    Exit,
}

impl FromStr for OnChange {
    type Err = ArgError;

    fn from_str(text: &str) -> Result<OnChange, ArgError> {
        match text {
            "none" => Ok(OnChange::None),
            "restart" => Ok(OnChange::Restart),
            "exit" => Ok(OnChange::Exit),
            _ => match text.strip_prefix("signal:") {
                Some(name) => name.parse().map(OnChange::Signal),
                None => Err(ArgError::OnChange(text::echo(text))),
            },
        }
    }
}

impl fmt::Display for OnChange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            OnChange::None => f.write_str("none"),
            OnChange::Restart => f.write_str("restart"),
            OnChange::Exit => f.write_str("exit"),
            OnChange::Signal(signal) => write!(f, "signal:{}", signal.name()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn env_vars_parse() {
        let var: EnvVar = "DB_PASSWORD=prod/db/password".parse().unwrap();
        assert_eq!(
            (var.name(), var.path()),
            ("DB_PASSWORD", "prod/db/password")
        );
        // Only the first `=` splits: a key may hold one.
        let var: EnvVar = "_x1=a/b=c".parse().unwrap();
        assert_eq!((var.name(), var.path()), ("_x1", "a/b=c"));
        for (bad, error) in [
            ("DB_PASSWORD", ArgError::NoEquals("DB_PASSWORD".into())),
            ("=res", ArgError::Name(String::new())),
            ("1A=res", ArgError::Name("1A".into())),
            ("A-B=res", ArgError::Name("A-B".into())),
            ("A B=res", ArgError::Name("A B".into())),
            ("É=res", ArgError::Name("É".into())),
            ("A=", ArgError::NoResource("A".into())),
        ] {
            assert_eq!(bad.parse::<EnvVar>(), Err(error), "{bad}");
        }
        // A long argument is echoed short.
        let long = format!("{}=x", "A-".repeat(100));
        let Err(ArgError::Name(echo)) = long.parse::<EnvVar>() else {
            panic!("{long}")
        };
        assert!(echo.len() < 40, "{echo}");
    }

    #[test]
    fn a_variable_named_twice_is_refused() {
        let vars: Vec<EnvVar> = ["A=x", "B=x", "A=y"]
            .iter()
            .map(|v| v.parse().unwrap())
            .collect();
        assert_eq!(no_duplicates(&vars), Err(ArgError::Duplicate("A".into())));
        assert_eq!(no_duplicates(&vars[..2]), Ok(()));
    }

    #[test]
    fn on_change_parses() {
        for (text, action) in [
            ("none", OnChange::None),
            ("restart", OnChange::Restart),
            ("exit", OnChange::Exit),
            ("signal:HUP", OnChange::Signal(Signal::Hup)),
            ("signal:SIGHUP", OnChange::Signal(Signal::Hup)),
            ("signal:usr1", OnChange::Signal(Signal::Usr1)),
            ("signal:USR2", OnChange::Signal(Signal::Usr2)),
            ("signal:TERM", OnChange::Signal(Signal::Term)),
        ] {
            assert_eq!(text.parse::<OnChange>(), Ok(action), "{text}");
        }
        // Shown as it is written.
        assert_eq!(OnChange::Signal(Signal::Usr1).to_string(), "signal:USR1");
        assert_eq!(OnChange::default(), OnChange::None);
        for bad in ["", "Restart", "signal", "reload", "restart "] {
            assert!(
                matches!(bad.parse::<OnChange>(), Err(ArgError::OnChange(_))),
                "{bad}"
            );
        }
        for bad in [
            "signal:",
            "signal:KILL",
            "signal:9",
            "signal:STOP",
            "signal:HUPX",
        ] {
            assert!(
                matches!(bad.parse::<OnChange>(), Err(ArgError::Signal(_))),
                "{bad}"
            );
        }
        assert_eq!(
            "signal:KILL".parse::<OnChange>().unwrap_err().to_string(),
            "`KILL` is not a signal exec sends: HUP, INT, QUIT, TERM, USR1, USR2 or WINCH"
        );
    }
}
