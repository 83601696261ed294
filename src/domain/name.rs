//! The friendly names applications ask for.

use std::fmt;
use std::sync::Arc;

use super::truncate;

/// A friendly name an application asks for: letters, digits and `/_+=.@-`,
/// 1 to 512 characters (the Secrets Manager name rules).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(crate) struct ResourceName(Arc<str>);

/// Why a resource name is refused. Each holds the name as the message
/// shows it: cut to 80 characters where it may be long.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum NameError {
    #[error("resource name `{0}` must be 1 to 512 characters")]
    Length(String),
    #[error("resource name `{name}` has `{}`; use letters, digits and / _ + = . @ -", .bad.escape_default())]
    Character { name: String, bad: char },
    #[error("resource name `{0}` must not start or end with `/` or have empty segments")]
    Slashes(String),
    #[error("resource name `{0}` must not have `.` or `..` segments")]
    DotSegment(String),
}

impl ResourceName {
    pub(crate) fn parse(text: &str) -> Result<ResourceName, NameError> {
        if text.is_empty() || text.len() > 512 {
            return Err(NameError::Length(truncate(text)));
        }
        if let Some(bad) = text
            .chars()
            .find(|c| !(c.is_ascii_alphanumeric() || "/_+=.@-".contains(*c)))
        {
            return Err(NameError::Character {
                name: truncate(text),
                bad,
            });
        }
        if text.starts_with('/') || text.ends_with('/') || text.contains("//") {
            return Err(NameError::Slashes(text.to_owned()));
        }
        if text.split('/').any(|seg| seg == "." || seg == "..") {
            return Err(NameError::DotSegment(text.to_owned()));
        }
        Ok(ResourceName(text.into()))
    }

    /// A pattern's key (`prod/*`), as the configured entry that the names
    /// under it are logged and throttled by; never a name to read.
    pub(crate) fn pattern_label(key: &str) -> ResourceName {
        ResourceName(key.into())
    }

    pub(crate) fn as_str(&self) -> &str {
        &self.0
    }

    /// The name's text, shared rather than copied.
    pub(crate) fn shared(&self) -> Arc<str> {
        Arc::clone(&self.0)
    }
}

impl fmt::Display for ResourceName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        for good in ["TestingSecret", "prod/db", "a.b@c+d=e_f-g", "x"] {
            ResourceName::parse(good).unwrap();
        }
        for bad in [
            "", "a b", "a\u{0}", "é", "/a", "a/", "a//b", "a/../b", "..", "a?b", "a%2Fb",
        ] {
            assert!(ResourceName::parse(bad).is_err(), "{bad:?}");
        }
        assert!(ResourceName::parse(&"a".repeat(513)).is_err());
    }
}
