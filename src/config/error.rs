//! [`ConfigError`], and the rewriting of serde's messages into ones that
//! name the key path and suggest the closest valid key.

use std::path::PathBuf;

/// A configuration problem, reported before the agent serves anything.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{file}: cannot read the config file: {source}")]
    Read {
        file: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// The YAML does not parse, or does not fit the schema.
    #[error("{file}{line}: {path}{message}", line = fmt_line(*.line), path = fmt_path(.path))]
    Parse {
        file: PathBuf,
        line: Option<usize>,
        path: String,
        message: String,
    },
    /// The YAML fits the schema but a value is not acceptable.
    #[error("{file}: {path}: {message}")]
    Invalid {
        file: PathBuf,
        path: String,
        message: String,
    },
}

/// Most characters of a configured value that an error message repeats.
const SHOWN_CHARS: usize = 80;

/// A value from the file as an error message shows it: at most
/// [`SHOWN_CHARS`] characters, escaped, with `...` when cut.
pub(crate) fn shown(text: &str) -> String {
    crate::text::shorten(text, SHOWN_CHARS)
}

fn fmt_line(line: Option<usize>) -> String {
    line.map(|l| format!(":{l}")).unwrap_or_default()
}

fn fmt_path(path: &str) -> String {
    if path.is_empty() || path == "." {
        String::new()
    } else {
        format!("{path}: ")
    }
}

/// Rewrites serde's messages into ones that help: an unknown key gets the
/// closest valid key as a suggestion and the path of the map it is in; the
/// parser's own path prefix and location suffix are dropped because both are
/// reported separately. Returns the key path and the message.
pub(super) fn explain_serde_message(err: &serde_yaml::Error, mut path: String) -> (String, String) {
    let mut message = err.to_string();
    if let Some(at) = message.rfind(" at line ") {
        message.truncate(at);
    }
    if let Some((prefix, rest)) = message.split_once(": ")
        && path.starts_with(prefix)
    {
        message = rest.to_owned();
    }
    if message.starts_with("unknown field `") {
        // The path names the unknown key itself; report the map it is in.
        path = path
            .rsplit_once('.')
            .map(|(parent, _)| parent.to_owned())
            .unwrap_or_default();
    }
    (path, explain_message(message))
}

fn explain_message(mut message: String) -> String {
    // serde names the target struct ("expected struct RawService"); say what the YAML needs.
    if let Some(at) = message.find("struct Raw") {
        let end = message[at + 7..]
            .find(|c: char| !c.is_alphanumeric())
            .map_or(message.len(), |e| at + 7 + e);
        message.replace_range(at..end, "a mapping");
    }
    // serde's wording: "unknown field `x`, expected one of `a`, `b`" or "expected `a`".
    if let Some(rest) = message.strip_prefix("unknown field `") {
        let mut ticked = rest.split('`').step_by(2);
        let unknown = ticked.next().unwrap_or_default().to_owned();
        let valid: Vec<&str> = ticked.collect();
        let mut text = format!("unknown key `{unknown}`");
        if let Some(best) = closest(&unknown, &valid) {
            text.push_str(&format!(" (did you mean `{best}`?)"));
        }
        if !valid.is_empty() {
            text.push_str(&format!("; valid keys here: {}", valid.join(", ")));
        }
        return text;
    }
    if let Some(rest) = message.strip_prefix("missing field `") {
        let key = rest.split('`').next().unwrap_or_default();
        return format!("missing required key `{key}`");
    }
    message
}

/// The valid key most like `word`, if any is close enough to be a likely typo.
pub(super) fn closest<'a>(word: &str, candidates: &[&'a str]) -> Option<&'a str> {
    candidates
        .iter()
        .map(|c| (strsim::jaro_winkler(word, c), *c))
        .filter(|(score, _)| *score > 0.7)
        .max_by(|a, b| a.0.total_cmp(&b.0))
        .map(|(_, c)| c)
}

#[cfg(test)]
mod tests {
    use crate::config::tests::{SAMPLE, load};

    #[test]
    fn unknown_key_is_named_with_path_line_and_suggestion() {
        let yaml = SAMPLE.replace("region: us-west-1", "regoin: us-west-1");
        let err = load(&yaml).unwrap_err().to_string();
        assert!(
            err.starts_with("test.yaml:8: secret-manager.aws: unknown key `regoin`"),
            "{err}"
        );
        assert!(err.contains("did you mean `region`?"), "{err}");
    }

    #[test]
    fn unknown_top_level_key_suggests() {
        let err = load(&format!("{SAMPLE}\ncahce:\n  ttl: 5s\n"))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("unknown key `cahce` (did you mean `cache`?)"),
            "{err}"
        );
    }

    #[test]
    fn missing_key_is_named() {
        let err = load("service:\n  tcp:\n    endpoint: 127.0.0.1:1\n")
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("missing required key `secret-manager`"),
            "{err}"
        );
    }
}
