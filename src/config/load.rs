//! The I/O of loading: the file (bounded in size), the YAML nesting check
//! and serde's parse, and [`System`], which answers validation's questions
//! (token files, environment variables, DNS, file modes) from the real system.

use std::io;
use std::net::{SocketAddr, ToSocketAddrs};
use std::path::Path;

use super::error::explain_serde_message;
use super::raw::RawConfig;
use super::validate::Inputs;
use super::{ConfigError, file, yaml};

/// Largest config file read: far more than any real configuration, small
/// enough that a wrong path (a log) is refused at once.
pub(super) const MAX_FILE_BYTES: u64 = file::CONFIG_BYTES;

/// Deepest nesting of YAML collections accepted. A valid configuration
/// nests at most 5 deep (`auth.tokens[0].resources[0]`); a deeper file is
/// refused before serde_yaml parses it (see [`yaml`]).
pub(super) const MAX_NESTING: usize = 32;

/// The text of the regular file at `path`, at most [`MAX_FILE_BYTES`] of
/// UTF-8, without a leading byte order mark (see [`file::read_text`]).
pub(crate) fn read(path: &Path) -> Result<String, ConfigError> {
    file::read_text(path, MAX_FILE_BYTES).map_err(|source| {
        if let Some(file::Refusal::TooLarge(_)) = file::refusal(&source) {
            too_large(path)
        } else {
            ConfigError::Read {
                file: path.to_owned(),
                source,
            }
        }
    })
}

/// Parses YAML text into the raw structs; `source` is only used in messages.
pub(super) fn parse(text: &str, source: &Path) -> Result<RawConfig, ConfigError> {
    if text.len() as u64 > MAX_FILE_BYTES {
        return Err(too_large(source));
    }
    if let Err(deep) = yaml::check_depth(text, MAX_NESTING) {
        return Err(ConfigError::Parse {
            file: source.to_owned(),
            line: Some(deep.line),
            path: String::new(),
            message: format!(
                "nested more than {MAX_NESTING} levels deep; a configuration nests at most 5"
            ),
        });
    }
    let deserializer = serde_yaml::Deserializer::from_str(text);
    serde_path_to_error::deserialize(deserializer).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner();
        let (path, message) = explain_serde_message(&inner, path);
        ConfigError::Parse {
            file: source.to_owned(),
            line: inner.location().map(|l| l.line()),
            path,
            message,
        }
    })
}

fn too_large(file: &Path) -> ConfigError {
    ConfigError::Parse {
        file: file.to_owned(),
        line: None,
        path: String::new(),
        message: format!(
            "the file is larger than {MAX_FILE_BYTES} bytes (1 MiB); is it the config file?"
        ),
    }
}

/// Validation's inputs, from the file system, the environment and DNS.
pub(super) struct System;

impl Inputs for System {
    fn read_token(&self, path: &Path) -> io::Result<String> {
        file::read_text(path, file::TOKEN_BYTES)
    }

    fn var(&self, name: &str) -> Option<String> {
        std::env::var(name).ok()
    }

    fn resolve(&self, host_port: &str) -> Option<SocketAddr> {
        host_port.to_socket_addrs().ok()?.next()
    }

    fn metadata(&self, path: &Path) -> io::Result<()> {
        file::regular(path, file::PEM_BYTES).map(drop)
    }

    fn mode(&self, path: &Path) -> Option<u32> {
        use std::os::unix::fs::PermissionsExt;
        Some(std::fs::metadata(path).ok()?.permissions().mode())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::tests::{SAMPLE, load};
    use crate::config::{Config, ConfigError};
    use std::time::Duration;

    #[test]
    fn every_file_in_config_dir_loads() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("config");
        let mut seen = 0;
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.extension().is_some_and(|e| e == "yaml" || e == "yml") {
                Config::load(&path).unwrap_or_else(|e| panic!("{e}"));
                seen += 1;
            }
        }
        assert!(
            seen >= 4,
            "expected the Aerospike agent's samples and demo.yaml in config/"
        );
    }

    /// Deep nesting of every kind is refused at once, by line; the time
    /// bound only catches a hang (integration/bench.sh measures it).
    #[test]
    fn deep_nesting_is_refused_at_once() {
        let size = 200 * 1024;
        let shapes = [
            "[".repeat(size),
            "{a: ".repeat(size / 4),
            format!("service: {}", "{tcp: ".repeat(size / 6)),
            "- ".repeat(size / 2),
            "a: [".repeat(size / 4),
            (0..600).map(|i| format!("{}a:\n", " ".repeat(i))).collect(),
        ];
        let started = tokio::time::Instant::now();
        for text in &shapes {
            let err = load(text).unwrap_err().to_string();
            assert!(
                err.starts_with("test.yaml:") && err.contains(": nested more than 32 levels deep"),
                "{err}"
            );
        }
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "{:?}",
            started.elapsed()
        );
        // 32 levels (the root, service, uds and 29 lists) pass the depth
        // check and meet the schema; 33 do not.
        let mode = |levels: usize| {
            let yaml = SAMPLE.replace(
                "    endpoint: 0.0.0.0:3005\n",
                &format!(
                    "    endpoint: 0.0.0.0:3005\n  uds:\n    socket-path: /s\n    mode: {}{}\n",
                    "[".repeat(levels - 3),
                    "]".repeat(levels - 3)
                ),
            );
            load(&yaml).unwrap_err().to_string()
        };
        let err = mode(MAX_NESTING);
        assert!(err.contains("service.uds.mode: must be octal"), "{err}");
        assert_eq!(
            mode(MAX_NESTING + 1),
            "test.yaml:7: nested more than 32 levels deep; a configuration nests at most 5"
        );
    }

    #[test]
    fn a_file_over_a_mebibyte_is_refused() {
        let big = format!("{SAMPLE}{}", "#".repeat(MAX_FILE_BYTES as usize));
        let expected = "larger than 1048576 bytes (1 MiB); is it the config file?";
        let err = load(&big).unwrap_err().to_string();
        assert!(
            err.starts_with("test.yaml: the file is ") && err.ends_with(expected),
            "{err}"
        );
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("big.yaml");
        std::fs::write(&path, &big).unwrap();
        let err = Config::load(&path).unwrap_err().to_string();
        assert!(err.ends_with(expected), "{err}");
        // Cut inside a multi-byte character, it is still too large, not bad UTF-8.
        std::fs::write(&path, "é".repeat(MAX_FILE_BYTES as usize)).unwrap();
        let err = Config::load(&path).unwrap_err().to_string();
        assert!(err.ends_with(expected), "{err}");
        std::fs::write(&path, &big[..MAX_FILE_BYTES as usize]).unwrap();
        Config::load(&path).unwrap();
    }

    #[test]
    fn a_token_file_that_is_no_file_or_too_large_is_refused_by_key() {
        let dir = tempfile::tempdir().unwrap();
        let fifo = dir.path().join("fifo");
        assert!(
            std::process::Command::new("mkfifo")
                .arg(&fifo)
                .status()
                .unwrap()
                .success()
        );
        let big = dir.path().join("big");
        std::fs::File::create(&big)
            .unwrap()
            .set_len(300 * 1024 * 1024)
            .unwrap();
        let token = |file: &Path| {
            let yaml = format!(
                "{SAMPLE}auth:\n  tokens:\n    - token-file: {}\n      resources: [\"*\"]\n",
                file.display()
            );
            load(&yaml).unwrap_err().to_string()
        };
        let prefix = "test.yaml: auth.tokens[0].token-file: cannot read";
        assert_eq!(
            token(Path::new("/dev/zero")),
            format!("{prefix} /dev/zero: it is a character device, not a regular file")
        );
        assert_eq!(
            token(&fifo),
            format!(
                "{prefix} {}: it is a named pipe (FIFO), not a regular file",
                fifo.display()
            )
        );
        assert_eq!(
            token(&big),
            format!("{prefix} {}: it is larger than 65536 bytes", big.display())
        );
        // The config itself.
        let err = Config::load(&fifo).unwrap_err().to_string();
        assert_eq!(
            err,
            format!(
                "{}: cannot read the config file: it is a named pipe (FIFO), not a regular file",
                fifo.display()
            )
        );
    }

    #[test]
    fn a_byte_order_mark_is_accepted_and_lines_stay_right() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("bom.yaml");
        std::fs::write(&path, format!("\u{feff}{SAMPLE}")).unwrap();
        Config::load(&path).unwrap();
        // SAMPLE starts with an empty line: `tcp:` is on line 3.
        std::fs::write(
            &path,
            format!("\u{feff}{}", SAMPLE.replace("  tcp:", "  tpc:")),
        )
        .unwrap();
        let err = Config::load(&path).unwrap_err().to_string();
        assert!(
            err.starts_with(&format!("{}:3: service: unknown key `tpc`", path.display())),
            "{err}"
        );
        let toml = dir.path().join("bom.toml");
        std::fs::write(&toml, "\u{feff}region = \"eu-west-1\"\n").unwrap();
        let agent = crate::config::AwsAgentFile::read(Some(&toml)).unwrap();
        assert_eq!(agent.region().unwrap().as_deref(), Some("eu-west-1"));
    }

    #[test]
    fn garbage_is_a_clear_error() {
        for text in ["", "[", "- a\n- b", "service: 5", "\t\u{0}"] {
            let err = load(text).unwrap_err().to_string();
            assert!(err.starts_with("test.yaml"), "{err}");
        }
    }

    /// Property tests: any input gives a config or a clear error, never a
    /// panic. `PROPTEST_CASES=100000 cargo test --lib proptests` runs longer.
    mod proptests {
        use super::*;
        use proptest::prelude::*;

        fn samples() -> Vec<String> {
            let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("config");
            let mut texts: Vec<String> = std::fs::read_dir(dir)
                .unwrap()
                .map(|e| std::fs::read_to_string(e.unwrap().path()).unwrap())
                .collect();
            texts.push(SAMPLE.to_owned());
            texts
        }

        fn assert_clear(result: Result<Config, ConfigError>) {
            if let Err(e) = result {
                let text = e.to_string();
                assert!(text.starts_with("test.yaml"), "{text}");
                assert!(text.len() < 2000, "{text}");
            }
        }

        /// Fragments that make YAML of the agent's shape likely.
        fn yamlish() -> impl Strategy<Value = String> {
            let token = prop_oneof![
                Just("service:".to_owned()),
                Just("tcp:".to_owned()),
                Just("endpoint: 127.0.0.1:0".to_owned()),
                Just("secret-manager:".to_owned()),
                Just("aws:".to_owned()),
                Just("resources:".to_owned()),
                Just("a: arn:aws:secretsmanager:us-west-1:123456789012:secret:a".to_owned()),
                Just("cache:".to_owned()),
                Just("ttl: 5m".to_owned()),
                Just("auth:".to_owned()),
                Just("tokens:".to_owned()),
                Just("- token-env: HOME".to_owned()),
                Just("resources: [\"*\"]".to_owned()),
                Just("assume-role:".to_owned()),
                Just("uds:".to_owned()),
                Just("mode: 0660".to_owned()),
                Just("[".to_owned()),
                Just("{".to_owned()),
                Just("&a".to_owned()),
                Just("*a".to_owned()),
                Just("!!binary".to_owned()),
                "[ -~]{0,12}",
            ];
            prop::collection::vec((0usize..4, token), 0..24).prop_map(|lines| {
                lines
                    .into_iter()
                    .map(|(indent, t)| format!("{}{t}\n", "  ".repeat(indent)))
                    .collect()
            })
        }

        proptest! {
            #[test]
            fn arbitrary_text(text in "\\PC{0,300}") {
                assert_clear(Config::from_yaml(&text, Path::new("test.yaml")));
            }

            /// Any mix of flow and block nesting past the limit is refused
            /// by the depth check, wherever it starts.
            #[test]
            fn deep_nesting_of_any_mix(
                prefix in prop::sample::select(vec!["", "a: ", "service:\n  tcp: ", "- "]),
                levels in prop::collection::vec(0usize..4, MAX_NESTING + 1..400),
            ) {
                let mut text = prefix.to_owned();
                for (i, kind) in levels.iter().enumerate() {
                    text.push_str(match kind {
                        0 => "[",
                        1 => "{k: ",
                        2 => "[x, ",
                        _ => "{a: 1, b: ",
                    });
                    if i % 7 == 6 {
                        text.push('\n');
                    }
                }
                let err = Config::from_yaml(&text, Path::new("test.yaml")).unwrap_err().to_string();
                prop_assert!(err.contains("nested more than 32 levels deep"), "{}", err);
            }

            #[test]
            fn yaml_of_the_right_shape(text in yamlish()) {
                assert_clear(Config::from_yaml(&text, Path::new("test.yaml")));
            }

            #[test]
            fn mutated_samples(
                pick in any::<prop::sample::Index>(),
                at in any::<prop::sample::Index>(),
                len in 0usize..20,
                insert in "[ -~\n\t]{0,10}",
            ) {
                let samples = samples();
                let text = pick.get(&samples);
                let chars: Vec<char> = text.chars().collect();
                let start = at.index(chars.len() + 1);
                let end = (start + len).min(chars.len());
                let mutated: String = chars[..start]
                    .iter()
                    .chain(insert.chars().collect::<Vec<_>>().iter())
                    .chain(chars[end..].iter())
                    .collect();
                assert_clear(Config::from_yaml(&mutated, Path::new("test.yaml")));
            }
        }
    }
}
