//! Resource names and the ARNs they stand for (Secrets Manager secrets and
//! Parameter Store parameters): exact names, and patterns (`prod/*`, `*`)
//! that map a name prefix to an ARN prefix.

use std::borrow::Cow;
use std::collections::HashMap;

use std::sync::Arc;

use crate::domain::{Arn, NameError, ResourceName, truncate};

/// Why a pattern (`prod/*: arn:...:secret:prod/*`) is refused; the ARN and
/// a key that is not a pattern are cut to 80 characters.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum PatternError {
    /// The key is not `*` and does not end in `/*`, or has another `*`.
    #[error("pattern `{0}` must be `*` or end in `/*`, with no other `*`")]
    Key(String),
    /// The name prefix before `/*` is not a valid name.
    #[error(transparent)]
    Name(#[from] NameError),
    /// The ARN does not end in its only `*`.
    #[error(
        "pattern `{key}` maps to `{arn}`, which must end in `*` (and have no other): \
         arn:aws:secretsmanager:<region>:<account>:secret:<name prefix>* \
         or arn:aws:ssm:<region>:<account>:parameter/<name prefix>*"
    )]
    ArnEnd { key: String, arn: String },
    /// No name completes the ARN prefix into a secret or parameter ARN.
    #[error(
        "pattern `{key}`: `{arn}` is not a secret ARN prefix \
         (arn:aws:secretsmanager:<region>:<account>:secret:<name prefix>*) \
         nor a parameter ARN prefix (arn:aws:ssm:<region>:<account>:parameter/<name prefix>*)"
    )]
    ArnPrefix { key: String, arn: String },
}

/// `prod/*: arn:...:secret:prod/*` or `*: arn:...:secret:*`: every name
/// that starts with the name prefix stands for the secret whose name is the
/// ARN prefix's name part followed by the rest. The suffix-less partial ARN
/// that AWS accepts is what gets requested.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Pattern {
    /// As written, `prod/*`; a label for scopes, logs and warnings.
    label: ResourceName,
    /// `prod/`, or empty for `*`.
    name_prefix: Arc<str>,
    /// The ARN without its final `*`.
    arn_prefix: Arc<str>,
}

impl Pattern {
    /// Whether `key` is written as a pattern: `*`, or ending in `/*`.
    pub(crate) fn is_pattern(key: &str) -> bool {
        key == "*" || key.ends_with("/*")
    }

    /// Parses a pattern and its ARN; both must end in `*`, and the rest
    /// of each must be a valid name (prefix) and ARN (prefix).
    pub(crate) fn parse(key: &str, arn: &str) -> Result<Pattern, PatternError> {
        let name_prefix = key.strip_suffix('*').unwrap_or(key);
        if !Pattern::is_pattern(key) || name_prefix.contains('*') {
            return Err(PatternError::Key(truncate(key)));
        }
        if let Some(prefix) = name_prefix.strip_suffix('/') {
            ResourceName::parse(prefix)?;
        }
        let Some(arn_prefix) = arn.strip_suffix('*').filter(|p| !p.contains('*')) else {
            return Err(PatternError::ArnEnd {
                key: key.to_owned(),
                arn: truncate(arn),
            });
        };
        // A prefix is valid when some name completes it into an ARN.
        Arn::parse(&format!("{arn_prefix}x")).map_err(|_| PatternError::ArnPrefix {
            key: key.to_owned(),
            arn: truncate(arn),
        })?;
        Ok(Pattern {
            label: ResourceName::pattern_label(key),
            name_prefix: name_prefix.into(),
            arn_prefix: arn_prefix.into(),
        })
    }

    /// `prod/*`, as written.
    pub(crate) fn label(&self) -> &ResourceName {
        &self.label
    }

    /// The region of the secrets it maps.
    pub(crate) fn region(&self) -> &str {
        self.arn_prefix.split(':').nth(3).unwrap_or_default()
    }

    /// The name and ARN it maps `name` to, if `name` is under it.
    fn map(&self, name: &str) -> Option<(ResourceName, Arn)> {
        let rest = name.strip_prefix(&*self.name_prefix)?;
        if rest.is_empty() {
            return None;
        }
        let name = ResourceName::parse(name).ok()?;
        let arn = Arn::parse(&format!("{}{rest}", self.arn_prefix)).ok()?;
        Some((name, arn))
    }

    /// The name and ARN of a full or partial ARN under its ARN prefix.
    fn map_arn(&self, arn: &str) -> Option<(ResourceName, Arn)> {
        let rest = arn.strip_prefix(&*self.arn_prefix)?;
        if rest.is_empty() {
            return None;
        }
        let name = ResourceName::parse(&format!("{}{rest}", self.name_prefix)).ok()?;
        Some((name, Arn::parse(arn).ok()?))
    }
}

/// Whether a token scope entry (`prod/*`) and a name or pattern prefix
/// can meet: one is a prefix of the other.
pub(crate) fn prefixes_meet(a: &str, b: &str) -> bool {
    a.starts_with(b) || b.starts_with(a)
}

/// A resource a request resolved to: configured by name, or under a pattern.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Found<'a> {
    pub name: Cow<'a, ResourceName>,
    pub arn: Cow<'a, Arn>,
    /// The configured entry: the name itself, or the pattern (`prod/*`).
    /// Logs and warnings name this, never a name a client made up.
    pub entry: &'a ResourceName,
}

impl Found<'_> {
    /// Whether the name came from a pattern (and so from the client).
    pub(crate) fn by_pattern(&self) -> bool {
        self.name.as_ref() != self.entry
    }
}

/// The configured name -> ARN table.
#[derive(Debug, Clone, Default)]
pub(crate) struct Resources {
    by_name: HashMap<Arc<str>, (ResourceName, Arn), foldhash::fast::RandomState>,
    /// Every name of each ARN, sorted: several names may stand for one
    /// secret, and a request by ARN may be allowed through any of them.
    by_arn: HashMap<Arn, Vec<ResourceName>, foldhash::fast::RandomState>,
    /// Longest name prefix first: a longer pattern wins over a shorter.
    patterns: Vec<Pattern>,
}

/// What a request path resolves to.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Resolved<'a> {
    pub found: Found<'a>,
    /// The rest of the path after `<name>/`, naming a key of a JSON secret.
    pub key: Option<&'a str>,
}

impl Resources {
    pub(crate) fn new(entries: impl IntoIterator<Item = (ResourceName, Arn)>) -> Resources {
        let by_name: HashMap<_, _, _> = entries
            .into_iter()
            .map(|(name, arn)| (name.shared(), (name, arn)))
            .collect();
        let mut by_arn: HashMap<Arn, Vec<ResourceName>, _> = HashMap::default();
        for (name, arn) in by_name.values() {
            by_arn.entry(arn.clone()).or_default().push(name.clone());
        }
        for names in by_arn.values_mut() {
            names.sort();
        }
        Resources {
            by_name,
            by_arn,
            patterns: Vec::new(),
        }
    }

    /// Adds patterns; a longer name prefix is tried first.
    pub(crate) fn with_patterns(mut self, mut patterns: Vec<Pattern>) -> Resources {
        patterns.sort_by_key(|p| std::cmp::Reverse(p.name_prefix.len()));
        self.patterns = patterns;
        self
    }

    /// Configured names and patterns.
    pub(crate) fn len(&self) -> usize {
        self.by_name.len() + self.patterns.len()
    }

    /// The patterns, longest name prefix first.
    pub(crate) fn patterns(&self) -> &[Pattern] {
        &self.patterns
    }

    /// Whether a token scope's name prefix (`prod/` of `prod/*`) covers any
    /// configured name or meets any pattern.
    pub(crate) fn prefix_matches_any(&self, prefix: &str) -> bool {
        self.by_name.keys().any(|n| n.starts_with(prefix))
            || self
                .patterns
                .iter()
                .any(|p| prefixes_meet(prefix, &p.name_prefix))
    }

    /// A whole name: configured exactly, else under the longest pattern.
    pub(crate) fn lookup<'a>(&'a self, name: &str) -> Option<Found<'a>> {
        if let Some((n, a)) = self.get(name) {
            return Some(Found {
                name: Cow::Borrowed(n),
                arn: Cow::Borrowed(a),
                entry: n,
            });
        }
        self.patterns.iter().find_map(|p| {
            let (n, a) = p.map(name)?;
            Some(Found {
                name: Cow::Owned(n),
                arn: Cow::Owned(a),
                entry: &p.label,
            })
        })
    }

    /// A full or partial ARN under a pattern's ARN prefix (the longest
    /// name prefix first), with the name it stands for.
    pub(crate) fn by_arn_pattern<'a>(&'a self, arn: &str) -> Option<Found<'a>> {
        self.patterns.iter().find_map(|p| {
            let (n, a) = p.map_arn(arn)?;
            Some(Found {
                name: Cow::Owned(n),
                arn: Cow::Owned(a),
                entry: &p.label,
            })
        })
    }

    /// The configured parameter ARN whose parameter name is `name`
    /// (`/app/db`, `plain`) and every name configured for it, sorted; the
    /// smallest such ARN when parameters of several regions or accounts
    /// share the name.
    pub(crate) fn by_parameter_name(&self, name: &str) -> Option<(&Arn, &[ResourceName])> {
        self.by_arn
            .iter()
            .filter(|(arn, _)| arn.parameter_name() == Some(name))
            .min_by(|a, b| a.0.as_str().cmp(b.0.as_str()))
            .map(|(arn, names)| (arn, names.as_slice()))
    }

    /// The parameter named `name` (`/app/db`) under a parameter pattern's
    /// ARN prefix (the longest name prefix first), with its resource name;
    /// not when that resource name is configured exactly, which shadows the
    /// pattern (a token granted that name was granted the exact entry).
    pub(crate) fn by_parameter_name_pattern<'a>(&'a self, name: &str) -> Option<Found<'a>> {
        const KIND: &str = ":parameter/";
        self.patterns.iter().find_map(|p| {
            let base = &p.arn_prefix[..p.arn_prefix.find(KIND)? + KIND.len()];
            let arn = format!("{base}{}", name.strip_prefix('/').unwrap_or(name));
            let (n, a) = p.map_arn(&arn)?;
            if self.get(n.as_str()).is_some() {
                return None;
            }
            (a.parameter_name() == Some(name)).then_some(Found {
                name: Cow::Owned(n),
                arn: Cow::Owned(a),
                entry: &p.label,
            })
        })
    }

    /// Names in sorted order.
    pub(crate) fn names(&self) -> Vec<&ResourceName> {
        let mut names: Vec<_> = self.by_name.values().map(|(n, _)| n).collect();
        names.sort();
        names
    }

    pub(crate) fn iter(&self) -> impl Iterator<Item = (&ResourceName, &Arn)> {
        self.by_name.values().map(|(n, a)| (n, a))
    }

    pub(crate) fn get(&self, name: &str) -> Option<(&ResourceName, &Arn)> {
        self.by_name.get(name).map(|(n, a)| (n, a))
    }

    /// The ARN whose text is `arn` and every name configured for it, sorted.
    pub(crate) fn by_arn(&self, arn: &str) -> Option<(&Arn, &[ResourceName])> {
        self.by_arn
            .get_key_value(arn)
            .map(|(arn, names)| (arn, names.as_slice()))
    }

    /// Resolves `<name>` or `<name>/<key>`: the longest configured name that
    /// is the whole path or a prefix of it ending at a `/` wins; else the
    /// longest pattern the whole path is under (a pattern serves whole
    /// secrets: names may hold `/`, so the rest is all name).
    pub(crate) fn resolve<'a>(&'a self, path: &'a str) -> Option<Resolved<'a>> {
        let exact = |name: &'a ResourceName, arn: &'a Arn, key| Resolved {
            found: Found {
                name: Cow::Borrowed(name),
                arn: Cow::Borrowed(arn),
                entry: name,
            },
            key,
        };
        if let Some((name, arn)) = self.get(path) {
            return Some(exact(name, arn, None));
        }
        let mut end = path.len();
        while let Some(slash) = path[..end].rfind('/') {
            if let Some((name, arn)) = self.get(&path[..slash]) {
                let key = &path[slash + 1..];
                // An empty key (`name/`) names nothing.
                return (!key.is_empty()).then(|| exact(name, arn, Some(key)));
            }
            end = slash;
        }
        self.lookup(path).map(|found| Resolved { found, key: None })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ARN: &str = "arn:aws:secretsmanager:us-west-1:999999999999:secret:TestingSecret-tN6s2j";

    fn table(names: &[&str]) -> Resources {
        Resources::new(names.iter().map(|n| {
            (
                ResourceName::parse(n).unwrap(),
                Arn::parse(&format!("{ARN}{}", n.len())).unwrap(),
            )
        }))
    }

    #[test]
    fn parameter_patterns() {
        const PREFIX: &str = "arn:aws:ssm:us-east-1:123456789012:parameter/";
        let t = table(&[]).with_patterns(vec![
            Pattern::parse("app/*", &format!("{PREFIX}app/*")).unwrap(),
            Pattern::parse("*", &format!("{PREFIX}*")).unwrap(),
        ]);
        let found = |name: &str| {
            let f = t.lookup(name).unwrap();
            (
                f.arn.to_string(),
                f.arn.parameter_name().unwrap().to_owned(),
            )
        };
        assert_eq!(
            found("app/db"),
            (format!("{PREFIX}app/db"), "/app/db".to_owned())
        );
        assert_eq!(
            found("plain"),
            (format!("{PREFIX}plain"), "plain".to_owned())
        );
        // Names a parameter cannot have are not found.
        assert!(t.lookup("app/a@b").is_none());
        let f = t.by_arn_pattern(&format!("{PREFIX}app/x")).unwrap();
        assert_eq!((f.name.as_str(), f.entry.as_str()), ("app/x", "app/*"));
        // By parameter name: the longest pattern whose prefix holds it.
        let f = t.by_parameter_name_pattern("/app/db").unwrap();
        assert_eq!((f.name.as_str(), f.entry.as_str()), ("app/db", "app/*"));
        let f = t.by_parameter_name_pattern("plain").unwrap();
        assert_eq!((f.name.as_str(), f.entry.as_str()), ("plain", "*"));
        let f = t.by_parameter_name_pattern("/other/x").unwrap();
        assert_eq!((f.name.as_str(), f.entry.as_str()), ("other/x", "*"));
        // `/plain` is not `plain`; a secret pattern holds no parameter.
        assert!(t.by_parameter_name_pattern("/plain").is_none());
        let secrets = table(&[]).with_patterns(vec![
            Pattern::parse(
                "*",
                "arn:aws:secretsmanager:us-east-1:123456789012:secret:*",
            )
            .unwrap(),
        ]);
        assert!(secrets.by_parameter_name_pattern("plain").is_none());
        // A name configured exactly shadows the pattern: `ext` is a secret
        // here, so the parameter `ext` under `*` is not reached by that name.
        let shadowed = table(&["ext"])
            .with_patterns(vec![Pattern::parse("*", &format!("{PREFIX}*")).unwrap()]);
        assert!(shadowed.by_parameter_name_pattern("ext").is_none());
        assert!(shadowed.by_parameter_name_pattern("other").is_some());

        // Configured parameters by parameter name.
        let name = |n: &str| ResourceName::parse(n).unwrap();
        let east = Arn::parse(&format!("{PREFIX}app/db")).unwrap();
        let west = Arn::parse("arn:aws:ssm:us-west-2:123456789012:parameter/app/db").unwrap();
        let t = Resources::new([
            (name("db"), east.clone()),
            (name("db-west"), west),
            (name("also-db"), east.clone()),
        ]);
        let (arn, names) = t.by_parameter_name("/app/db").unwrap();
        assert_eq!((arn, names), (&east, &[name("also-db"), name("db")][..]));
        assert!(t.by_parameter_name("app/db").is_none());
        assert!(t.by_parameter_name("db").is_none());
        assert!(Pattern::parse("app/*", &format!("{PREFIX}app:*")).is_err());
    }

    /// The kinds callers may match on, and the words messages show.
    #[test]
    fn errors_name_their_kind_and_the_text() {
        let name = |text: &str| ResourceName::parse(text).unwrap_err();
        assert_eq!(name(""), NameError::Length(String::new()));
        assert_eq!(
            name(&"a".repeat(513)).to_string(),
            format!(
                "resource name `{}` must be 1 to 512 characters",
                "a".repeat(80)
            )
        );
        assert_eq!(
            name("a\u{0}").to_string(),
            "resource name `a\u{0}` has `\\u{0}`; use letters, digits and / _ + = . @ -"
        );
        assert_eq!(name("a//b"), NameError::Slashes("a//b".into()));
        assert_eq!(
            name("a/../b").to_string(),
            "resource name `a/../b` must not have `.` or `..` segments"
        );
        assert_eq!(
            Arn::parse("x").unwrap_err().to_string(),
            "`x` is not a Secrets Manager secret ARN \
             (arn:aws:secretsmanager:<region>:<account>:secret:<name>) \
             nor a Parameter Store parameter ARN (arn:aws:ssm:<region>:<account>:parameter/<name>)"
        );
        const PREFIX: &str = "arn:aws:secretsmanager:us-east-1:123456789012:secret:";
        let pattern = |key: &str, arn: &str| Pattern::parse(key, arn).unwrap_err();
        assert_eq!(pattern("p*d/*", PREFIX), PatternError::Key("p*d/*".into()));
        assert_eq!(
            pattern("a b/*", PREFIX),
            PatternError::Name(NameError::Character {
                name: "a b".into(),
                bad: ' '
            })
        );
        assert_eq!(
            pattern("prod/*", &format!("{PREFIX}prod/")).to_string(),
            format!(
                "pattern `prod/*` maps to `{PREFIX}prod/`, which must end in `*` (and have no \
                 other): arn:aws:secretsmanager:<region>:<account>:secret:<name prefix>* or \
                 arn:aws:ssm:<region>:<account>:parameter/<name prefix>*"
            )
        );
        assert_eq!(
            pattern("*", "arn:aws:s3:::b/*").to_string(),
            "pattern `*`: `arn:aws:s3:::b/*` is not a secret ARN prefix \
             (arn:aws:secretsmanager:<region>:<account>:secret:<name prefix>*) nor a parameter \
             ARN prefix (arn:aws:ssm:<region>:<account>:parameter/<name prefix>*)"
        );
    }

    #[test]
    fn longest_prefix_wins() {
        let t = table(&["prod", "prod/db", "other"]);
        let r = t.resolve("prod/db").unwrap();
        assert_eq!((r.found.name.as_str(), r.key), ("prod/db", None));
        let r = t.resolve("prod/db/password").unwrap();
        assert_eq!(
            (r.found.name.as_str(), r.key),
            ("prod/db", Some("password"))
        );
        let r = t.resolve("prod/dbx").unwrap();
        assert_eq!((r.found.name.as_str(), r.key), ("prod", Some("dbx")));
        let r = t.resolve("prod/db/a/b").unwrap();
        assert_eq!((r.found.name.as_str(), r.key), ("prod/db", Some("a/b")));
    }

    #[test]
    fn every_name_of_an_arn() {
        let arn = |n: &str| Arn::parse(&format!("{ARN}{n}")).unwrap();
        let name = |n: &str| ResourceName::parse(n).unwrap();
        let t = Resources::new([
            (name("b"), arn("1")),
            (name("c"), arn("2")),
            (name("a"), arn("1")),
        ]);
        let (found, names) = t.by_arn(&format!("{ARN}1")).unwrap();
        assert_eq!(found, &arn("1"));
        assert_eq!(names, [name("a"), name("b")]);
        assert_eq!(t.by_arn(&format!("{ARN}2")).unwrap().1, [name("c")]);
        assert!(t.by_arn(ARN).is_none());
        assert!(t.by_arn("a").is_none());
    }

    #[test]
    fn patterns() {
        const PREFIX: &str = "arn:aws:secretsmanager:us-east-1:123456789012:secret:";
        let pattern =
            |key: &str, arn: &str| Pattern::parse(key, &format!("{PREFIX}{arn}")).unwrap();
        let t = table(&["prod/db", "prod"]).with_patterns(vec![
            pattern("*", "*"),
            pattern("prod/*", "prod/*"),
            pattern("prod/team/*", "team-a/*"),
        ]);
        let found = |name: &str| {
            let f = t.lookup(name).unwrap();
            (f.name.to_string(), f.arn.to_string(), f.entry.to_string())
        };
        // Exact beats pattern; a longer pattern beats a shorter.
        assert_eq!(found("prod/db").2, "prod/db");
        assert_eq!(
            found("prod/web"),
            (
                "prod/web".into(),
                format!("{PREFIX}prod/web"),
                "prod/*".into()
            )
        );
        assert_eq!(
            found("prod/team/x"),
            (
                "prod/team/x".into(),
                format!("{PREFIX}team-a/x"),
                "prod/team/*".into()
            )
        );
        assert_eq!(found("other").1, format!("{PREFIX}other"));
        assert_eq!(found("other").2, "*");
        // An exact name with a key still wins over a pattern.
        let r = t.resolve("prod/db/password").unwrap();
        assert_eq!(
            (r.found.name.as_str(), r.key),
            ("prod/db", Some("password"))
        );
        // A pattern serves the whole path as a name.
        let r = t.resolve("stage/db/password").unwrap();
        assert_eq!((r.found.name.as_str(), r.key), ("stage/db/password", None));
        assert!(r.found.by_pattern());
        // Names a pattern cannot make are not found.
        assert!(t.lookup("a b").is_none());
        assert!(t.lookup(&format!("{PREFIX}x")).is_none());

        // ARNs: under a pattern's prefix, full or partial; never outside.
        let f = t
            .by_arn_pattern(&format!("{PREFIX}prod/web-AbCdEf"))
            .unwrap();
        assert_eq!(
            (f.name.as_str(), f.entry.as_str()),
            ("prod/web-AbCdEf", "prod/*")
        );
        let f = t.by_arn_pattern(&format!("{PREFIX}team-a/x")).unwrap();
        assert_eq!(f.name.as_str(), "prod/team/x");
        let other_account = "arn:aws:secretsmanager:us-east-1:210987654321:secret:prod/web";
        assert!(t.by_arn_pattern(other_account).is_none());
        let only_prod = table(&[]).with_patterns(vec![pattern("prod/*", "prod/*")]);
        assert!(
            only_prod
                .by_arn_pattern(&format!("{PREFIX}dev/web"))
                .is_none()
        );
        assert!(only_prod.lookup("dev/web").is_none());
        assert!(only_prod.lookup("prod/").is_none());

        for (key, arn) in [
            ("prod/*", format!("{PREFIX}prod/")),
            ("prod*", format!("{PREFIX}prod*")),
            ("p*d/*", format!("{PREFIX}prod/*")),
            ("prod/*", format!("{PREFIX}pr*d/*")),
            (
                "*",
                "arn:aws:secretsmanager:us-east-1:123:secret:*".to_owned(),
            ),
            ("*", "arn:aws:s3:::bucket/*".to_owned()),
        ] {
            assert!(Pattern::parse(key, &arn).is_err(), "{key}: {arn}");
        }
        assert_eq!(pattern("*", "*").region(), "us-east-1");
        assert!(prefixes_meet("prod/", "") && prefixes_meet("prod/", "prod/team/"));
        assert!(!prefixes_meet("prod/", "dev/"));
    }

    #[test]
    fn nothing_else_matches() {
        let t = table(&["prod/db"]);
        for path in [
            "", "prod", "prod/", "prod/db/", "/prod/db", "prod//db", "Prod/db", "prod/d",
        ] {
            assert_eq!(t.resolve(path), None, "{path:?}");
        }
        // `..` is just a key, never a way to another resource.
        assert_eq!(t.resolve("prod/db/../x").unwrap().key, Some("../x"));
    }

    mod proptests {
        use super::*;
        use proptest::prelude::*;

        proptest! {
            /// A resolution is always a configured name, exactly or as a
            /// prefix ending at `/` with a non-empty key: never anything else.
            #[test]
            fn resolve_only_matches_configured_names(path in "[a-z/.%@+=_-]{0,40}") {
                let t = table(&["a", "a/b", "c.d", "x/y/z"]);
                if let Some(r) = t.resolve(&path) {
                    let name = r.found.name.as_str();
                    prop_assert!(t.get(name).is_some());
                    match r.key {
                        None => prop_assert_eq!(path.as_str(), name),
                        Some(key) => {
                            prop_assert!(!key.is_empty());
                            prop_assert_eq!(path.clone(), format!("{name}/{key}"));
                            // And no longer configured name would have matched.
                            for longer in ["a/b", "x/y/z"] {
                                if longer.len() > name.len() {
                                    let prefix = format!("{longer}/");
                                    prop_assert!(path != longer && !path.starts_with(&prefix));
                                }
                            }
                        }
                    }
                }
            }

            /// Whatever a client asks, by name or by ARN, what a pattern
            /// serves lies under that pattern's name and ARN prefixes.
            #[test]
            fn patterns_never_reach_outside_their_prefix(
                asked in "(arn:aws:secretsmanager:us-(east|west)-1:(123456789012|210987654321):secret:)?(prod|dev|prod/team)?/?[a-z/.:*-]{0,12}",
            ) {
                const P: &str = "arn:aws:secretsmanager:us-east-1:123456789012:secret:";
                let t = Resources::new([]).with_patterns(vec![
                    Pattern::parse("prod/*", &format!("{P}prod/*")).unwrap(),
                    Pattern::parse("prod/team/*", &format!("{P}team-a/*")).unwrap(),
                ]);
                for found in [t.lookup(&asked), t.by_arn_pattern(&asked)].into_iter().flatten() {
                    let name = found.name.as_str();
                    let arn = found.arn.as_str();
                    prop_assert!(ResourceName::parse(name).is_ok());
                    let (name_prefix, arn_prefix) = match found.entry.as_str() {
                        "prod/team/*" => ("prod/team/", format!("{P}team-a/")),
                        "prod/*" => ("prod/", format!("{P}prod/")),
                        other => panic!("entry {other}"),
                    };
                    prop_assert!(name.len() > name_prefix.len() && name.starts_with(name_prefix), "{}", name);
                    prop_assert!(arn.len() > arn_prefix.len() && arn.starts_with(&arn_prefix), "{}", arn);
                }
            }

            #[test]
            fn name_and_arn_parsing_never_panic(text in "\\PC{0,100}") {
                ResourceName::parse(&text).ok();
                Arn::parse(&text).ok();
                let arn = format!("arn:aws:secretsmanager:{text}");
                if let Ok(parsed) = Arn::parse(&arn) {
                    prop_assert!(!parsed.region().is_empty());
                    let account = parsed.as_str().split(':').nth(4).unwrap_or_default();
                    prop_assert_eq!(account.len(), 12);
                }
            }
        }
    }
}
