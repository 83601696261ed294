//! The log: env_logger behind a filter that keeps what a client or the AWS
//! SDK could put there within bounds.
//!
//! - Other crates' trace records are dropped: at that level the AWS SDK
//!   prints whole signed requests, session token header included.
//! - AWS access key ids in other crates' records (aws-config logs the
//!   credentials it loads, key id included) keep only their last four
//!   characters.
//! - A client's malformed request (actix-http's parse errors, rustls'
//!   alerts) is logged at debug; at the levels above, one line per
//!   [`CLIENT_ERRORS_EVERY`] counts them, so a flood of bad requests cannot
//!   grow the log.

use std::sync::Mutex;
use std::time::Duration;

use tokio::time::Instant;

use log::{Level, LevelFilter, Log, Metadata, Record};

/// How often the count of clients' malformed requests may be logged.
pub(crate) const CLIENT_ERRORS_EVERY: Duration = Duration::from_secs(60);

/// Installs the logger. The level comes from `RUST_LOG` when it is set,
/// else from the config (`log.level`), and a reload may move the latter.
pub fn install(config_level: LevelFilter) {
    let inner = env_logger::Builder::new()
        .filter_level(LevelFilter::Trace)
        .parse_env("RUST_LOG")
        .build();
    let max_level = match std::env::var_os("RUST_LOG") {
        Some(_) => inner.filter(),
        None => config_level,
    };
    let logger = AgentLogger {
        inner,
        client_errors: Mutex::new(ClientErrors::default()),
    };
    if log::set_boxed_logger(Box::new(logger)).is_err() {
        eprintln!("secret-agent: a logger was already installed");
    }
    log::set_max_level(max_level);
}

struct AgentLogger {
    inner: env_logger::Logger,
    client_errors: Mutex<ClientErrors>,
}

/// Clients' malformed requests since the last line that counted them.
#[derive(Default)]
struct ClientErrors {
    /// When the last count was logged; `None` before the first.
    logged: Option<Instant>,
    unlogged: u64,
}

impl ClientErrors {
    /// Counts one; the number to log now (this one included) once
    /// [`CLIENT_ERRORS_EVERY`] has passed since the last line.
    fn count(&mut self, now: Instant) -> Option<u64> {
        self.unlogged += 1;
        let due = self
            .logged
            .is_none_or(|at| now.duration_since(at) >= CLIENT_ERRORS_EVERY);
        due.then(|| {
            self.logged = Some(now);
            std::mem::take(&mut self.unlogged)
        })
    }
}

fn ours(target: &str) -> bool {
    target.starts_with("secret_agent")
}

/// A record a client causes by sending something malformed: the HTTP/1
/// parser's errors (a bad header byte, `HTTP/9.9`, an HTTP/2 preface, TLS
/// sent to the plain port) and rustls' alerts and handshake failures.
fn from_client(metadata: &Metadata) -> bool {
    let target = metadata.target();
    // rustls::client is the agent's own connections to AWS.
    metadata.level() <= Level::Info
        && (target.starts_with("actix_http::h1")
            || target.starts_with("actix_http::h2")
            || (target.starts_with("rustls") && !target.starts_with("rustls::client")))
}

impl Log for AgentLogger {
    fn enabled(&self, metadata: &Metadata) -> bool {
        (metadata.level() < Level::Trace || ours(metadata.target())) && self.inner.enabled(metadata)
    }

    fn log(&self, record: &Record) {
        let target = record.target();
        if ours(target) {
            self.inner.log(record);
            return;
        }
        if record.level() == Level::Trace {
            return;
        }
        if from_client(record.metadata()) {
            self.client_error(record);
            return;
        }
        // Formatted only when it will be written.
        if !self.inner.enabled(record.metadata()) {
            return;
        }
        let text = record.args().to_string();
        let shown = redact_key_ids(&text);
        self.inner.log(
            &Record::builder()
                .args(format_args!("{shown}"))
                .metadata(record.metadata().clone())
                .module_path(record.module_path())
                .file(record.file())
                .line(record.line())
                .build(),
        );
    }

    fn flush(&self) {
        self.inner.flush();
    }
}

impl AgentLogger {
    /// At debug, the record itself; above, a count now and then.
    fn client_error(&self, record: &Record) {
        if log::max_level() >= LevelFilter::Debug {
            let text = record.args().to_string();
            self.inner.log(
                &Record::builder()
                    .args(format_args!("from a client: {}", redact_key_ids(&text)))
                    .level(Level::Debug)
                    .target(record.target())
                    .build(),
            );
        }
        let due = self
            .client_errors
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .count(Instant::now());
        if let Some(n) = due
            && log::max_level() >= LevelFilter::Info
        {
            self.inner.log(
                &Record::builder()
                    .args(format_args!(
                        "{n} malformed request(s) or TLS failure(s) from clients since the last such line (details at debug level; counted at most once per {}s)",
                        CLIENT_ERRORS_EVERY.as_secs()
                    ))
                    .level(Level::Info)
                    .target("secret_agent::logging")
                    .build(),
            );
        }
    }
}

/// `text` with every AWS access key id (`AKIA…`, `ASIA…`: four capitals
/// and sixteen capitals or digits) and every quoted `access_key_id` value
/// cut to its last four characters.
fn redact_key_ids(text: &str) -> std::borrow::Cow<'_, str> {
    let bytes = text.as_bytes();
    let needs = text.contains("access_key_id") || (0..bytes.len()).any(|i| key_id_at(bytes, i));
    if !needs {
        return std::borrow::Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len());
    let mut i = 0;
    while i < bytes.len() {
        if let Some(len) = quoted_key_id_value(&bytes[i..]) {
            let (field, value) = text[i..i + len].split_at(text[i..i + len].find('"').unwrap_or(0));
            out.push_str(field);
            out.push('"');
            out.push_str(&last_four(value.trim_matches('"')));
            out.push('"');
            i += len;
        } else if key_id_at(bytes, i) {
            out.push_str(&last_four(&text[i..i + KEY_ID_LEN]));
            i += KEY_ID_LEN;
        } else {
            let ch = text[i..].chars().next().unwrap_or(' ');
            out.push(ch);
            i += ch.len_utf8();
        }
    }
    std::borrow::Cow::Owned(out)
}

const KEY_ID_LEN: usize = 20;

/// A key id, shown by its last four characters.
fn last_four(value: &str) -> String {
    let chars: Vec<char> = value.chars().collect();
    let tail: String = chars[chars.len().saturating_sub(4)..].iter().collect();
    format!("…{tail}")
}

/// At the start of `bytes`: `access_key_id: "…"` (or `=`); its length.
fn quoted_key_id_value(bytes: &[u8]) -> Option<usize> {
    let rest = bytes.strip_prefix(b"access_key_id")?;
    let spaces = rest
        .iter()
        .take_while(|b| matches!(b, b' ' | b':' | b'='))
        .count();
    let rest = &rest[spaces..];
    let value = rest.strip_prefix(b"\"")?;
    let end = value.iter().position(|&b| b == b'"')?;
    Some("access_key_id".len() + spaces + 1 + end + 1)
}

fn key_id_at(bytes: &[u8], i: usize) -> bool {
    let Some(candidate) = bytes.get(i..i + KEY_ID_LEN) else {
        return false;
    };
    let starts_word = i == 0 || !bytes[i - 1].is_ascii_alphanumeric();
    let ends_word = bytes
        .get(i + KEY_ID_LEN)
        .is_none_or(|b| !b.is_ascii_alphanumeric());
    starts_word
        && ends_word
        && (candidate.starts_with(b"AKIA") || candidate.starts_with(b"ASIA"))
        && candidate[4..]
            .iter()
            .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trace_records_of_other_crates_are_dropped() {
        let logger = AgentLogger {
            inner: env_logger::Builder::new()
                .filter_level(LevelFilter::Trace)
                .build(),
            client_errors: Mutex::default(),
        };
        let at = |level, target| {
            logger.enabled(&Metadata::builder().level(level).target(target).build())
        };
        assert!(!at(
            Level::Trace,
            "aws_smithy_runtime::client::orchestrator"
        ));
        assert!(!at(Level::Trace, "aws_sigv4::http_request::sign"));
        assert!(at(Level::Debug, "aws_smithy_runtime::client::orchestrator"));
        assert!(at(Level::Trace, "secret_agent::cache"));
    }

    #[test]
    fn key_ids_keep_their_last_four_characters() {
        let text = r#"loaded base credentials creds=Credentials { provider_name: "ProfileFile", access_key_id: "AKIAIOSFODNN7EXAMPLE", secret_access_key: "** redacted **" } and ASIAZZZZZZZZZZZZ1234 then access_key_id="short""#;
        let shown = redact_key_ids(text);
        assert!(!shown.contains("AKIAIOSFODNN7EXAMPLE"), "{shown}");
        assert!(!shown.contains("ASIAZZZZZZZZZZZZ1234"), "{shown}");
        assert!(shown.contains(r#"access_key_id: "…MPLE""#), "{shown}");
        assert!(shown.contains(" and …1234 then"), "{shown}");
        assert!(shown.contains(r#"access_key_id="…hort""#), "{shown}");
        assert!(shown.contains("provider_name: \"ProfileFile\""), "{shown}");
        // Nothing to redact: the text as it was, not copied.
        let plain = "a request to secretsmanager.us-west-1 (AKIA is a prefix)";
        assert!(matches!(
            redact_key_ids(plain),
            std::borrow::Cow::Borrowed(_)
        ));
        // A longer word that merely contains one is not a key id.
        assert_eq!(
            redact_key_ids("XAKIAIOSFODNN7EXAMPLE"),
            "XAKIAIOSFODNN7EXAMPLE"
        );
        assert_eq!(redact_key_ids("é AKIAIOSFODNN7EXAMPLE é"), "é …MPLE é");
    }

    #[test]
    fn client_errors_are_counted_once_per_interval() {
        let mut errors = ClientErrors::default();
        let start = Instant::now();
        assert_eq!(errors.count(start), Some(1), "the first is told at once");
        for i in 1..1000 {
            assert_eq!(errors.count(start + Duration::from_millis(i)), None);
        }
        assert_eq!(errors.count(start + CLIENT_ERRORS_EVERY), Some(1000));
        assert_eq!(errors.count(start + CLIENT_ERRORS_EVERY), None);
    }

    #[test]
    fn client_records_are_the_parsers_and_tls_errors() {
        let meta = |level, target| Metadata::builder().level(level).target(target).build();
        assert!(from_client(&meta(
            Level::Error,
            "actix_http::h1::dispatcher"
        )));
        assert!(from_client(&meta(Level::Warn, "rustls::conn")));
        assert!(!from_client(&meta(
            Level::Debug,
            "actix_http::h1::dispatcher"
        )));
        assert!(!from_client(&meta(Level::Error, "actix_server::worker")));
        assert!(!from_client(&meta(Level::Warn, "rustls::client::hs")));
        assert!(!from_client(&meta(Level::Error, "secret_agent::listen")));
    }
}
