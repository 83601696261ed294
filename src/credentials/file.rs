//! `credentials-file`: keys from one file that a rotation system rewrites
//! (IAM Roles Anywhere's helper, on-premises credential delivery), as the
//! AWS agent's `credentials_file_path` has them.
//!
//! Before each AWS call the file's [`Stamp`] is compared with the one of
//! the last read (one `stat`, no file opened); the file is read again only
//! when it changed, so a rewrite is used from the next call on. A missing,
//! empty or malformed file gives no credentials (the agent runs, and reads
//! fail as without credentials); a rewrite that breaks keeps the last good
//! keys, and the log says so once per version of the file.

use std::path::Path;

use aws_config::profile::ProfileFileCredentialsProvider;
use aws_config::provider_config::ProviderConfig;
use aws_credential_types::Credentials;
use aws_credential_types::provider::error::CredentialsError;
use aws_credential_types::provider::{ProvideCredentials, future};
use aws_runtime::env_config::file::{EnvConfigFileKind, EnvConfigFiles};
use aws_sdk_secretsmanager::config::Region;
use aws_smithy_runtime_api::client::http::SharedHttpClient;
use zeroize::Zeroizing;

use super::shared_file::{SHARED_FILE_BYTES, Stamp};
use super::{Source, describe_error};
use crate::config::{CredentialsFile, file, loose_mode};

/// The file and what its last read gave.
#[derive(Debug)]
pub(super) struct FileCredentials {
    file: CredentialsFile,
    /// For a profile that assumes a role through STS.
    region: Option<Region>,
    /// The agent's HTTP client, answer bodies capped, for those STS calls.
    http: Option<SharedHttpClient>,
    /// An async mutex: one read at a time, and calls wait for it rather
    /// than read the file again themselves.
    state: tokio::sync::Mutex<State>,
}

#[derive(Debug, Default)]
struct State {
    /// The stamp of the file as last looked at (inner `None`: absent);
    /// `None` before the first look.
    seen: Option<Option<Stamp>>,
    /// The last good credentials, kept through a broken rewrite.
    good: Option<Credentials>,
    /// Why the file as it is now gives no credentials.
    problem: Option<String>,
}

impl FileCredentials {
    pub(super) fn new(
        file: CredentialsFile,
        region: Option<Region>,
        http: Option<SharedHttpClient>,
    ) -> FileCredentials {
        FileCredentials {
            file,
            region,
            http,
            state: tokio::sync::Mutex::new(State::default()),
        }
    }

    async fn credentials(&self) -> Result<Credentials, CredentialsError> {
        let path = &self.file.path;
        let mut state = self.state.lock().await;
        let stamp = Stamp::at(path);
        // `None`: refused, looked at again on every call (`stat` is all it
        // costs until it is a regular file).
        let now = stamp.as_ref().ok().copied();
        let changed = state.seen != now;
        if changed || now.is_none() {
            let result = match stamp {
                Ok(Some(stamp)) => self.read(path, stamp).await,
                Ok(None) => Err(format!("{} does not exist (yet)", path.display())),
                Err(e) => Err(format!("{} is refused: {e}", path.display())),
            };
            state.seen = now;
            match result {
                Ok(creds) => {
                    if state.good.is_some() {
                        log::info!("{}: changed; using its new credentials", self.file.label());
                    } else {
                        log::info!("{}: credentials read", self.file.label());
                    }
                    state.good = Some(creds);
                    state.problem = None;
                }
                Err(problem) => {
                    // Once per version of the file, and per reason.
                    if changed || state.problem.as_deref() != Some(problem.as_str()) {
                        if state.good.is_some() {
                            log::warn!(
                                "{}: {problem}; keeping the last good credentials until it holds new ones",
                                self.file.label()
                            );
                        } else {
                            log::warn!(
                                "{}: {problem}; AWS calls fail until it holds credentials",
                                self.file.label()
                            );
                        }
                    }
                    state.problem = Some(problem);
                }
            }
        }
        match (&state.good, &state.problem) {
            (Some(creds), _) => Ok(creds.clone()),
            (None, problem) => Err(CredentialsError::not_loaded(format!(
                "{}: {}",
                self.file.label(),
                problem.as_deref().unwrap_or("no credentials")
            ))),
        }
    }

    /// Reads and parses the file as it is now (`stamp`): its credentials,
    /// else why there are none, never a key.
    async fn read(&self, path: &Path, stamp: Stamp) -> Result<Credentials, String> {
        if let Some(warning) = loose_mode(path, stamp.mode(), "it holds AWS keys") {
            log::warn!("{warning}");
        }
        let text = Zeroizing::new(
            file::read_text(path, SHARED_FILE_BYTES)
                .map_err(|e| format!("cannot read {}: {e}", path.display()))?,
        );
        if text.trim().is_empty() {
            return Err(format!("{} is empty", path.display()));
        }
        let files = EnvConfigFiles::builder()
            .with_contents(EnvConfigFileKind::Credentials, text.as_str())
            .build();
        let mut provider_config = ProviderConfig::default().with_region(self.region.clone());
        if let Some(http) = &self.http {
            provider_config = provider_config.with_http_client(http.clone());
        }
        let mut builder = ProfileFileCredentialsProvider::builder()
            .configure(&provider_config)
            .profile_files(files);
        if let Some(profile) = &self.file.profile {
            builder = builder.profile_name(profile);
        }
        let mut creds = builder
            .build()
            .provide_credentials()
            .await
            .map_err(|e| describe_error(&e))?;
        if self.file.require_session_token && creds.session_token().is_none() {
            return Err(
                "it holds long-term keys without aws_session_token; temporary credentials are required (require-session-token)"
                    .to_owned(),
            );
        }
        creds.set_property(Source(self.file.label()));
        Ok(creds)
    }
}

impl ProvideCredentials for FileCredentials {
    fn provide_credentials<'a>(&'a self) -> future::ProvideCredentials<'a>
    where
        Self: 'a,
    {
        future::ProvideCredentials::new(self.credentials())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn provider(path: &Path, require_session_token: bool) -> FileCredentials {
        FileCredentials::new(
            CredentialsFile {
                path: path.to_owned(),
                profile: Some("default".into()),
                require_session_token,
            },
            None,
            None,
        )
    }

    fn keys(id: &str, token: Option<&str>) -> String {
        let mut text = format!(
            "[default]\naws_access_key_id = {id}\naws_secret_access_key = secret-of-{id}\n"
        );
        if let Some(token) = token {
            text.push_str(&format!("aws_session_token = {token}\n"));
        }
        text
    }

    async fn key_id(p: &FileCredentials) -> Result<String, String> {
        p.provide_credentials()
            .await
            .map(|c| c.access_key_id().to_owned())
            .map_err(|e| describe_error(&e))
    }

    #[tokio::test]
    async fn missing_then_present_then_rotated_then_broken() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("credentials");
        let p = provider(&path, false);
        let err = key_id(&p).await.unwrap_err();
        assert!(err.contains("does not exist"), "{err}");
        assert!(err.starts_with("credentials file "), "{err}");

        std::fs::write(&path, keys("AKIDFIRST", None)).unwrap();
        assert_eq!(key_id(&p).await.unwrap(), "AKIDFIRST");
        std::fs::write(&path, keys("AKIDSECOND", Some("token-2"))).unwrap();
        assert_eq!(key_id(&p).await.unwrap(), "AKIDSECOND");

        // Broken rewrites keep the last good keys.
        for broken in [
            "",
            "this is not a credentials file",
            "[default]\naws_access_key_id = X\n",
        ] {
            std::fs::write(&path, broken).unwrap();
            assert_eq!(key_id(&p).await.unwrap(), "AKIDSECOND", "{broken:?}");
        }
        std::fs::remove_file(&path).unwrap();
        assert_eq!(key_id(&p).await.unwrap(), "AKIDSECOND");
        std::fs::write(&path, keys("AKIDTHIRD", None)).unwrap();
        assert_eq!(key_id(&p).await.unwrap(), "AKIDTHIRD");
    }

    #[tokio::test]
    async fn empty_or_malformed_files_give_no_credentials_and_say_why() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("credentials");
        let p = provider(&path, false);
        std::fs::write(&path, "").unwrap();
        assert!(key_id(&p).await.unwrap_err().contains("is empty"));
        std::fs::write(&path, "[default]\naws_secret_access_key = hidden-value\n").unwrap();
        let err = key_id(&p).await.unwrap_err();
        assert!(!err.contains("hidden-value"), "{err}");
        let dir_as_file = provider(dir.path(), false);
        assert!(key_id(&dir_as_file).await.unwrap_err().contains("refused"));
    }

    #[tokio::test]
    async fn a_session_token_may_be_required() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("credentials");
        std::fs::write(&path, keys("AKIDLONGTERM", None)).unwrap();
        let strict = provider(&path, true);
        let err = key_id(&strict).await.unwrap_err();
        assert!(err.contains("aws_session_token"), "{err}");
        std::fs::write(&path, keys("ASIATEMPORARY", Some("token"))).unwrap();
        assert_eq!(key_id(&strict).await.unwrap(), "ASIATEMPORARY");
    }

    #[tokio::test]
    async fn an_unchanged_file_is_not_read_again() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("credentials");
        std::fs::write(&path, keys("AKIDSTAMPED", None)).unwrap();
        let p = provider(&path, false);
        assert_eq!(key_id(&p).await.unwrap(), "AKIDSTAMPED");
        // What the last read gave is served while the stamp is unchanged.
        p.state.lock().await.good = Some(Credentials::new("AKIDKEPT", "s", None, None, "test"));
        assert_eq!(key_id(&p).await.unwrap(), "AKIDKEPT");
        std::fs::write(&path, keys("AKIDREWRITTEN", None)).unwrap();
        assert_eq!(key_id(&p).await.unwrap(), "AKIDREWRITTEN");
    }
}
