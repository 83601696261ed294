//! Templates of rendered files: Jinja syntax (minijinja), undefined values
//! strict, and one function, `secret("<resource name>")`: a JSON object
//! secret as a map, any other secret as its text.
//!
//! The names a template reads are found in its text: each
//! `secret("...")` call with a string literal. They are checked against
//! the configured resources at load, and read before each rendering; a
//! call with any other argument fails when the template is rendered.
//!
//! Error messages carry the kind of failure and its line, never a detail
//! minijinja wrote from a value (a filter may quote what it was given).

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};

use minijinja::{Environment, Error, ErrorKind, UndefinedBehavior, Value};
use zeroize::Zeroizing;

use crate::domain::{Kind, Secret};

/// The name templates are compiled and rendered under, in messages.
const NAME: &str = "template";

/// An environment with the settings every template gets: strict
/// undefined values, the trailing newline kept, no auto-escaping.
fn environment() -> Environment<'static> {
    let mut env = Environment::new();
    env.set_undefined_behavior(UndefinedBehavior::Strict);
    env.set_keep_trailing_newline(true);
    env.set_auto_escape_callback(|_| minijinja::AutoEscape::None);
    env
}

/// Compiles `source` (a syntax check, at load) and returns the resource
/// names its `secret("...")` calls read, each once, in order.
pub(crate) fn check(source: &str) -> Result<Vec<String>, String> {
    let env = environment();
    env.template_from_named_str(NAME, source)
        .map_err(|e| syntax_message(&e))?;
    Ok(names(source))
}

fn syntax_message(e: &Error) -> String {
    // A syntax error's detail is the parser's, about the template's own
    // text (config, not secret).
    let line = e
        .line()
        .map(|l| format!(" at line {l}"))
        .unwrap_or_default();
    match e.detail() {
        Some(detail) => format!("{}{line}: {detail}", e.kind()),
        None => format!("{}{line}", e.kind()),
    }
}

/// The string literals of `secret(...)` calls in `source`, each once.
pub(crate) fn names(source: &str) -> Vec<String> {
    let mut names: Vec<String> = Vec::new();
    let bytes = source.as_bytes();
    let mut from = 0;
    while let Some(at) = source[from..].find("secret") {
        let start = from + at;
        from = start + "secret".len();
        // A whole word: not `my_secret(` nor `secrets(`.
        let before = start.checked_sub(1).map(|i| bytes[i]);
        if before.is_some_and(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'.') {
            continue;
        }
        let rest = source[from..].trim_start();
        let Some(rest) = rest.strip_prefix('(') else {
            continue;
        };
        let rest = rest.trim_start();
        let Some(quote) = rest.chars().next().filter(|c| *c == '"' || *c == '\'') else {
            continue;
        };
        let Some((name, after)) = rest[1..].split_once(quote) else {
            continue;
        };
        if name.contains('\\') || !after.trim_start().starts_with(')') {
            continue;
        }
        if !names.iter().any(|n| n == name) {
            names.push(name.to_owned());
        }
    }
    names
}

/// Why a template did not render; no secret material.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub(crate) struct TemplateError(String);

/// Renders `source` with `values`, the secrets of the names [`names`]
/// found. The text is wiped from memory when dropped (minijinja's own
/// copies of the values are not).
pub(crate) fn render(
    source: &str,
    values: &HashMap<String, Arc<Secret>>,
) -> Result<Zeroizing<Vec<u8>>, TemplateError> {
    let mut env = environment();
    let mut converted: HashMap<String, Value> = HashMap::with_capacity(values.len());
    for (name, secret) in values {
        converted.insert(name.clone(), value_of(name, secret)?);
    }
    // What `secret()` itself refused, said in our words.
    let refused: Arc<Mutex<Option<String>>> = Arc::default();
    let said = Arc::clone(&refused);
    env.add_function("secret", move |name: Value| -> Result<Value, Error> {
        let refuse = |message: String| {
            *said.lock().unwrap_or_else(PoisonError::into_inner) = Some(message);
            Error::new(ErrorKind::InvalidOperation, "secret() refused")
        };
        let Some(name) = name.as_str() else {
            return Err(refuse(
                "secret() takes a resource name written as a string literal".to_owned(),
            ));
        };
        converted.get(name).cloned().ok_or_else(|| {
            refuse(format!(
                "secret({}) is not read by this template: write the name as a string literal",
                crate::text::echo(name)
            ))
        })
    });
    let rendered = env
        .render_named_str(NAME, source, ())
        .map(|text| Zeroizing::new(text.into_bytes()));
    rendered.map_err(|e| {
        let line = e
            .line()
            .map(|l| format!(" at line {l}"))
            .unwrap_or_default();
        let ours = refused
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        TemplateError(match ours {
            Some(message) => format!("{message}{line}"),
            // The kind and line only: a detail may quote a value.
            None => format!("{}{line}", e.kind()),
        })
    })
}

/// What `secret(name)` gives: a JSON object as a map, other text as a string.
fn value_of(name: &str, secret: &Secret) -> Result<Value, TemplateError> {
    if secret.kind == Kind::Binary {
        return Err(TemplateError(format!(
            "{} is a binary secret; a template takes text (render it with `resource:` instead)",
            crate::text::echo(name)
        )));
    }
    if secret.kind == Kind::Json
        && let Ok(object @ serde_json::Value::Object(_)) =
            serde_json::from_slice::<serde_json::Value>(&secret.value)
    {
        return Ok(Value::from_serialize(&object));
    }
    let text = std::str::from_utf8(&secret.value)
        .map_err(|_| TemplateError(format!("{} is not UTF-8 text", crate::text::echo(name))))?;
    Ok(Value::from(text))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secret(text: &str) -> Arc<Secret> {
        Arc::new(Secret::of_text(text))
    }

    fn values(pairs: &[(&str, &str)]) -> HashMap<String, Arc<Secret>> {
        pairs
            .iter()
            .map(|(n, v)| (n.to_string(), secret(v)))
            .collect()
    }

    fn text(source: &str, pairs: &[(&str, &str)]) -> Result<String, TemplateError> {
        render(source, &values(pairs)).map(|b| String::from_utf8(b.to_vec()).unwrap())
    }

    #[test]
    fn names_are_the_string_literals_of_secret_calls() {
        assert_eq!(
            names(
                r#"{{ secret("db").user }} {{ secret( 'api/key' ) }} {{ secret("db").password }}"#
            ),
            ["db", "api/key"]
        );
        // Other functions, other arguments and escapes are not names.
        assert!(
            names(
                r#"{{ my_secret("x") }} {{ secrets("y") }} {{ secret(name) }} {{ secret("a\"b") }}"#
            )
            .is_empty()
        );
        assert!(names("{{ x.secret('z') }}").is_empty());
    }

    #[test]
    fn check_compiles_and_reports_the_line_of_a_syntax_error() {
        assert_eq!(check("A={{ secret('a').k }}\n").unwrap(), ["a"]);
        let err = check("line one\n{{ secret('a') \n").unwrap_err();
        assert!(
            err.contains("syntax error") && err.contains("line 2"),
            "{err}"
        );
        assert!(check("{% if %}").is_err());
    }

    #[test]
    fn a_json_secret_is_a_map_and_text_is_a_string() {
        let source = "DB_USER={{ secret(\"db\").username }}\nDB_PASSWORD={{ secret(\"db\").password }}\nTOKEN={{ secret('t') }}\n";
        let out = text(
            source,
            &[
                ("db", r#"{"username":"app","password":"hunter2"}"#),
                ("t", "plain-token"),
            ],
        )
        .unwrap();
        assert_eq!(
            out, "DB_USER=app\nDB_PASSWORD=hunter2\nTOKEN=plain-token\n",
            "the trailing newline is kept"
        );
        // Numbers and other JSON that is no object are their text.
        assert_eq!(text("{{ secret('n') }}", &[("n", "5432")]).unwrap(), "5432");
        // `tojson` quotes a value for the reader of the file.
        assert_eq!(
            text(
                "{{ secret('h').p | tojson }}",
                &[("h", r#"{"p":"a\"b\nc"}"#)]
            )
            .unwrap(),
            r#""a\"b\nc""#
        );
        // No HTML escaping, whatever the characters.
        assert_eq!(
            text("{{ secret('h') }}", &[("h", "<a&b>\"")]).unwrap(),
            "<a&b>\""
        );
    }

    #[test]
    fn undefined_is_strict_and_errors_never_show_a_value() {
        let db = [("db", r#"{"username":"app","password":"hunter2"}"#)];
        let err = text("a\n{{ secret('db').missing }}", &db).unwrap_err();
        assert_eq!(err.to_string(), "undefined value at line 2");
        let err = text("{{ nothing }}", &db).unwrap_err();
        assert_eq!(err.to_string(), "undefined value at line 1");
        // A filter that quotes its input in its message: not shown.
        let err = text("{{ secret('db').password | int }}", &db).unwrap_err();
        assert!(!err.to_string().contains("hunter2"), "{err}");
        // A name the template does not read (not a literal), a text secret's key.
        let err = text("{% set n = 'db' %}{{ secret(n) }}", &[]).unwrap_err();
        assert!(err.to_string().contains("string literal"), "{err}");
        let err = text("{{ secret('t').key }}", &[("t", "plain")]).unwrap_err();
        assert!(err.to_string().contains("undefined"), "{err}");
        assert!(!err.to_string().contains("plain"), "{err}");
    }

    #[test]
    fn a_binary_secret_is_refused() {
        let mut binary = (*secret("x")).clone();
        binary.kind = Kind::Binary;
        let values = HashMap::from([("b".to_owned(), Arc::new(binary))]);
        let err = render("{{ secret('b') }}", &values).unwrap_err();
        assert!(err.to_string().contains("binary"), "{err}");
    }
}
