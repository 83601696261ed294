//! The one rule for repeating outside input (a client's or a config file's)
//! in a message: a short prefix, escaped; and an error's chain of causes
//! in one line.

/// Most characters of a client's input that a message repeats.
pub(crate) const ECHO_CHARS: usize = 32;

/// A client's input as a message may repeat it: [`shorten`] to
/// [`ECHO_CHARS`].
pub(crate) fn echo(text: &str) -> String {
    shorten(text, ECHO_CHARS)
}

/// At most `max_chars` characters of `text`, each escaped as Rust's
/// `Debug` would (quotes, controls), with `...` when cut.
pub(crate) fn shorten(text: &str, max_chars: usize) -> String {
    let mut chars = text.chars();
    let mut out: String = chars
        .by_ref()
        .take(max_chars)
        .flat_map(char::escape_debug)
        .collect();
    if chars.next().is_some() {
        out.push_str("...");
    }
    out
}

/// `first`, then each error of the chain from `source` on whose words are
/// not already in the text, joined by `: `: the SDK's errors often repeat
/// their cause's message in their own.
pub(crate) fn chain_text(
    first: String,
    mut source: Option<&(dyn std::error::Error + 'static)>,
) -> String {
    let mut text = first;
    while let Some(e) = source {
        let part = e.to_string();
        if !text.contains(&part) {
            text.push_str(": ");
            text.push_str(&part);
        }
        source = e.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_escaped_and_marked_when_cut() {
        assert_eq!(shorten("prod/db", 32), "prod/db");
        assert_eq!(shorten(&"a".repeat(32), 32), "a".repeat(32));
        assert_eq!(
            shorten(&"a".repeat(33), 32),
            format!("{}...", "a".repeat(32))
        );
        assert_eq!(shorten("a`b\n\u{0}\"c", 32), "a`b\\n\\0\\\"c");
    }

    #[test]
    fn a_chain_skips_causes_already_said() {
        #[derive(Debug, thiserror::Error)]
        #[error("outer: inner failed")]
        struct Outer(#[source] Inner);
        #[derive(Debug, thiserror::Error)]
        #[error("inner failed")]
        struct Inner(#[source] std::io::Error);
        let err = Outer(Inner(std::io::Error::other("disk")));
        assert_eq!(
            chain_text(err.to_string(), std::error::Error::source(&err)),
            "outer: inner failed: disk"
        );
    }
}
