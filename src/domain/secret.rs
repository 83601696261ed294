//! A fetched secret value, shared (not copied) between requests and wiped
//! from memory when the last reference goes away.

use std::collections::HashMap;
use std::fmt;
use std::sync::OnceLock;
use std::time::SystemTime;

use bytes::Bytes;
use serde_json::value::RawValue;
use zeroize::Zeroize;

/// Owned secret bytes that are zeroized on drop. Wrapped by [`Bytes::from_owner`]
/// so clones share one allocation and the last drop wipes it.
struct SecretBuf(Vec<u8>);

impl AsRef<[u8]> for SecretBuf {
    fn as_ref(&self) -> &[u8] {
        &self.0
    }
}

impl Drop for SecretBuf {
    fn drop(&mut self) {
        self.0.zeroize();
    }
}

/// Shareable bytes that are wiped once no clone is left.
pub(crate) fn secret_bytes(data: Vec<u8>) -> Bytes {
    Bytes::from_owner(SecretBuf(data))
}

/// What kind of payload a secret holds, decided once at fetch time.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Kind {
    /// A `SecretString` that parses as JSON.
    Json,
    /// Any other `SecretString`.
    Text,
    /// A `SecretBinary`.
    Binary,
}

impl Kind {
    pub(crate) fn content_type(self) -> &'static str {
        match self {
            Kind::Json => "application/json",
            Kind::Text => "text/plain; charset=utf-8",
            Kind::Binary => "application/octet-stream",
        }
    }
}

/// An answer built from one secret version on its first read and shared by
/// every read of that version after it (the AWS agent's GetSecretValue
/// JSON): built once, not per request. A clone starts empty, so a secret
/// copied with other fields never carries an answer built from the old ones.
#[derive(Default)]
pub(crate) struct BuiltOnce(OnceLock<Bytes>);

impl BuiltOnce {
    /// The answer, built by `build` if this is its first use.
    pub(crate) fn get_or_build(&self, build: impl FnOnce() -> Bytes) -> Bytes {
        self.0.get_or_init(build).clone()
    }
}

impl Clone for BuiltOnce {
    fn clone(&self) -> BuiltOnce {
        BuiltOnce::default()
    }
}

/// What GetParameter says of a parameter besides its value, for the Lambda
/// extension's answer.
#[derive(Clone, PartialEq, Eq)]
pub(crate) struct ParameterInfo {
    /// `String`, `StringList` or `SecureString`.
    pub parameter_type: Option<String>,
    /// `text`, or `aws:ec2:image` and the like.
    pub data_type: Option<String>,
    /// The version number.
    pub version: i64,
    /// `:<version>` or `:<label>` when one was asked for, as AWS answers.
    pub selector: Option<String>,
    /// Set by AWS for parameters that reference other services: what that
    /// service answered, which may hold secret material. Never logged.
    pub source_result: Option<String>,
}

impl fmt::Debug for ParameterInfo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ParameterInfo")
            .field("parameter_type", &self.parameter_type)
            .field("data_type", &self.data_type)
            .field("version", &self.version)
            .field("selector", &self.selector)
            .field(
                "source_result",
                &self
                    .source_result
                    .as_ref()
                    .map(|s| format!("<{} bytes redacted>", s.len())),
            )
            .finish()
    }
}

/// One version of a secret as Secrets Manager returned it, or of a
/// parameter as Parameter Store did (its version number as `version_id`,
/// its last-modified date as `created_date`).
#[derive(Clone)]
pub(crate) struct Secret {
    pub arn: String,
    pub name: String,
    pub version_id: Option<String>,
    pub version_stages: Vec<String>,
    pub created_date: Option<SystemTime>,
    pub kind: Kind,
    /// The payload. Never logged; `Debug` shows only its length.
    pub value: Bytes,
    /// For a parameter, what else GetParameter said; `None` for a secret.
    pub parameter: Option<ParameterInfo>,
    /// The compatible routes' answer, built on its first read (it holds
    /// the value, and is wiped with it).
    pub compat_answer: BuiltOnce,
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Secret")
            .field("arn", &self.arn)
            .field("version_id", &self.version_id)
            .field("version_stages", &self.version_stages)
            .field("kind", &self.kind)
            .field("parameter", &self.parameter)
            .field(
                "value",
                &format_args!("<{} bytes redacted>", self.value.len()),
            )
            .finish()
    }
}

/// Why a key cannot be read from a secret. Carries no secret material.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub(crate) enum KeyError {
    #[error("the secret is not a JSON object, so it has no keys")]
    NotJsonObject,
    #[error("the secret has no key `{0}`")]
    NoSuchKey(String),
}

impl Secret {
    /// Builds a secret from a `SecretString`, deciding JSON or text once.
    pub(crate) fn text_kind(value: &[u8]) -> Kind {
        if serde_json::from_slice::<serde::de::IgnoredAny>(value).is_ok() {
            Kind::Json
        } else {
            Kind::Text
        }
    }

    /// One top-level key of a JSON object secret: a string value as its
    /// text, any other value as its JSON text. Returns the bytes and whether
    /// they are JSON.
    pub(crate) fn key(&self, key: &str) -> Result<(Bytes, Kind), KeyError> {
        if self.kind != Kind::Json {
            return Err(KeyError::NotJsonObject);
        }
        let map: HashMap<String, &RawValue> =
            serde_json::from_slice(&self.value).map_err(|_| KeyError::NotJsonObject)?;
        let raw = map
            .get(key)
            .ok_or_else(|| KeyError::NoSuchKey(key.chars().take(200).collect()))?;
        let text = raw.get();
        if text.starts_with('"') {
            // A string: unescape into wiped memory.
            let string: String = serde_json::from_str(text).map_err(|_| KeyError::NotJsonObject)?;
            Ok((secret_bytes(string.into_bytes()), Kind::Text))
        } else {
            // Any other value is served as its JSON text, sliced without a copy.
            Ok((self.value.slice_ref(text.as_bytes()), Kind::Json))
        }
    }
}

#[cfg(test)]
impl Secret {
    /// A secret whose value is `text`, for tests of what reads values.
    pub(crate) fn of_text(text: &str) -> Secret {
        let value = secret_bytes(text.as_bytes().to_vec());
        Secret {
            arn: "arn".into(),
            name: "n".into(),
            version_id: None,
            version_stages: vec![],
            created_date: None,
            kind: Secret::text_kind(&value),
            value,
            parameter: None,
            compat_answer: BuiltOnce::default(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secret(text: &str) -> Secret {
        Secret::of_text(text)
    }

    #[test]
    fn kinds() {
        assert_eq!(secret(r#"{"a":1}"#).kind, Kind::Json);
        assert_eq!(secret("5432").kind, Kind::Json);
        assert_eq!(secret("hunter2").kind, Kind::Text);
        assert_eq!(secret("{broken").kind, Kind::Text);
    }

    #[test]
    fn keys() {
        let s = secret(
            r#"{"user":"tiexin","port":5432,"tls":true,"opts":{"a":[1,2]},"esc":"a\"b\u00e9"}"#,
        );
        let get = |k: &str| {
            s.key(k)
                .map(|(b, kind)| (String::from_utf8(b.to_vec()).unwrap(), kind))
        };
        assert_eq!(get("user").unwrap(), ("tiexin".into(), Kind::Text));
        assert_eq!(get("port").unwrap(), ("5432".into(), Kind::Json));
        assert_eq!(get("tls").unwrap(), ("true".into(), Kind::Json));
        assert_eq!(get("opts").unwrap(), (r#"{"a":[1,2]}"#.into(), Kind::Json));
        assert_eq!(get("esc").unwrap(), ("a\"bé".into(), Kind::Text));
        assert_eq!(get("nope"), Err(KeyError::NoSuchKey("nope".into())));
        assert_eq!(secret("[1,2]").key("0"), Err(KeyError::NotJsonObject));
        assert_eq!(secret("plain").key("a"), Err(KeyError::NotJsonObject));
    }

    #[test]
    fn an_answer_is_built_once_and_not_cloned() {
        let s = secret("hunter2");
        let builds = std::cell::Cell::new(0);
        let build = || {
            builds.set(builds.get() + 1);
            secret_bytes(b"answer".to_vec())
        };
        let first = s.compat_answer.get_or_build(build);
        let second = s.compat_answer.get_or_build(build);
        assert_eq!((builds.get(), &first[..]), (1, &b"answer"[..]));
        // The same bytes, shared: not built again.
        assert_eq!(first.as_ptr(), second.as_ptr());
        // A copy with another value must build its own.
        let copy = Secret {
            value: secret_bytes(b"other".to_vec()),
            ..s.clone()
        };
        copy.compat_answer.get_or_build(build);
        assert_eq!(builds.get(), 2);
    }

    #[test]
    fn debug_hides_the_value() {
        let mut p = secret("hunter2");
        p.parameter = Some(ParameterInfo {
            parameter_type: Some("SecureString".into()),
            data_type: Some("text".into()),
            version: 3,
            selector: None,
            source_result: Some("{\"SecretString\":\"swordfish\"}".into()),
        });
        let shown = format!("{p:?}");
        assert!(
            !shown.contains("hunter2") && !shown.contains("swordfish"),
            "{shown}"
        );
        assert!(shown.contains("SecureString"), "{shown}");
        let s = secret("hunter2");
        let shown = format!("{s:?}");
        assert!(!shown.contains("hunter2"), "{shown}");
        assert!(shown.contains("7 bytes redacted"), "{shown}");
    }

    #[test]
    fn shared_bytes_are_one_allocation() {
        let s = secret("hunter2");
        let copy = s.clone();
        assert_eq!(s.value.as_ptr(), copy.value.as_ptr());
    }

    mod proptests {
        use super::*;
        use proptest::prelude::*;

        proptest! {
            #[test]
            fn key_lookup_never_panics(value in "\\PC{0,80}", key in "\\PC{0,10}") {
                let s = secret(&value);
                match s.key(&key) {
                    Ok((bytes, _)) => prop_assert!(bytes.len() <= value.len()),
                    Err(KeyError::NoSuchKey(k)) => prop_assert_eq!(k, key),
                    Err(KeyError::NotJsonObject) => {}
                }
            }

            #[test]
            fn keys_of_generated_objects(map in prop::collection::btree_map("[a-z]{1,5}", "\\PC{0,10}", 0..5)) {
                let json = serde_json::to_string(&map).unwrap();
                let s = secret(&json);
                for (k, v) in &map {
                    let (bytes, kind) = s.key(k).unwrap();
                    prop_assert_eq!(kind, Kind::Text);
                    prop_assert_eq!(bytes.as_ref(), v.as_bytes());
                }
            }
        }
    }
}
