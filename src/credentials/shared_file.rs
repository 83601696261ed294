//! The shared credentials file, re-read when it changes, told by the
//! files' metadata alone ([`Stamp`], also what [`super::file`] compares).

use std::sync::{Arc, Mutex, PoisonError};

use aws_config::profile::ProfileFileCredentialsProvider;
use aws_config::provider_config::ProviderConfig;
use aws_credential_types::provider::error::CredentialsError;
use aws_credential_types::provider::{ProvideCredentials, future};
use aws_sdk_secretsmanager::config::Region;
use aws_smithy_runtime_api::client::http::SharedHttpClient;

use super::Source;
use crate::config::file;
use crate::config::{ChainSource, shared_config_path, shared_credentials_path};

/// The shared credentials file, re-read when it changes: the Aerospike agent
/// "fetches the latest credentials from the shared credentials file".
/// aws-config's `ProfileFileCredentialsProvider` parses the files once per
/// `ProviderConfig` and keeps them, so this builds a new one whenever the
/// files change (their metadata tells: see [`Stamp`]).
#[derive(Debug)]
pub(super) struct SharedFile {
    profile: Option<String>,
    /// For profiles that assume a role through STS.
    region: Option<Region>,
    /// The agent's HTTP client, answer bodies capped, for those STS calls.
    http: Option<SharedHttpClient>,
    /// The provider for the file as last seen, and that file's fingerprint.
    current: Mutex<Option<(Fingerprint, Arc<ProfileFileCredentialsProvider>)>>,
}

/// Largest shared credentials or config file: 1 MiB, far more than any
/// real one; a larger one (or a FIFO, a device) is refused, since the SDK
/// reads it whole.
pub(super) const SHARED_FILE_BYTES: u64 = 1024 * 1024;

/// Each file's [`Stamp`] (`None`: absent).
type Fingerprint = Vec<Option<Stamp>>;

/// What tells that a file changed, from its metadata alone: its identity
/// (device, inode: a file renamed onto it), size, and modification and
/// change times to the nanosecond. Two writes of the same size within one
/// tick of the kernel's file clock (a few ms) can share a stamp.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Stamp {
    device: u64,
    inode: u64,
    size: u64,
    modified: (i64, i64),
    changed: (i64, i64),
    /// Permission bits, for the warning on a file others may read (a
    /// chmod changes `changed` too).
    mode: u32,
}

impl Stamp {
    /// The stamp of the file at `path`, `None` when it is absent or cannot
    /// be looked at (the reader then finds nothing there, or says why); an
    /// error when it is not a regular file of at most
    /// [`SHARED_FILE_BYTES`]. Asks `stat` only: no file is opened.
    pub(super) fn at(path: &std::path::Path) -> Result<Option<Stamp>, std::io::Error> {
        match file::regular(path, SHARED_FILE_BYTES) {
            Ok(meta) => Ok(Some(Stamp::of(&meta))),
            Err(e) if file::refusal(&e).is_some() => Err(e),
            Err(_) => Ok(None),
        }
    }

    /// The permission bits of the file this stamp is of.
    pub(super) fn mode(&self) -> u32 {
        self.mode
    }

    fn of(meta: &std::fs::Metadata) -> Stamp {
        use std::os::unix::fs::MetadataExt;
        Stamp {
            device: meta.dev(),
            inode: meta.ino(),
            size: meta.size(),
            modified: (meta.mtime(), meta.mtime_nsec()),
            changed: (meta.ctime(), meta.ctime_nsec()),
            mode: meta.mode(),
        }
    }
}

impl SharedFile {
    pub(super) fn new(
        profile: Option<String>,
        region: Option<Region>,
        http: Option<SharedHttpClient>,
    ) -> SharedFile {
        SharedFile {
            profile,
            region,
            http,
            current: Mutex::new(None),
        }
    }

    /// The files' stamps; an error when one is not a regular file of at
    /// most [`SHARED_FILE_BYTES`]. Asks `stat` only: no file is opened.
    fn fingerprint(&self) -> Result<Fingerprint, CredentialsError> {
        [
            (shared_credentials_path(), "the shared AWS credentials file"),
            (shared_config_path(), "the shared AWS config file"),
        ]
        .iter()
        .map(|(path, what)| {
            Stamp::at(path).map_err(|e| {
                CredentialsError::invalid_configuration(format!(
                    "{} ({what}) is refused: {e}",
                    path.display()
                ))
            })
        })
        .collect()
    }

    /// The provider for the files as they are now: the one of the last
    /// call while their stamps are unchanged, else a new one, which reads
    /// them again.
    fn provider(&self) -> Result<Arc<ProfileFileCredentialsProvider>, CredentialsError> {
        let fingerprint = self.fingerprint()?;
        let mut current = self.current.lock().unwrap_or_else(PoisonError::into_inner);
        Ok(match &*current {
            Some((seen, provider)) if *seen == fingerprint => provider.clone(),
            _ => {
                log::debug!("reading the shared AWS credentials and config files");
                // A fresh ProviderConfig: it caches the parsed files.
                let mut provider_config =
                    ProviderConfig::default().with_region(self.region.clone());
                if let Some(http) = &self.http {
                    provider_config = provider_config.with_http_client(http.clone());
                }
                let mut builder =
                    ProfileFileCredentialsProvider::builder().configure(&provider_config);
                if let Some(profile) = &self.profile {
                    builder = builder.profile_name(profile);
                }
                let provider = Arc::new(builder.build());
                if current.is_some() {
                    log::info!("the shared AWS credentials or config file changed; re-reading it");
                }
                *current = Some((fingerprint, provider.clone()));
                provider
            }
        })
    }
}

impl ProvideCredentials for SharedFile {
    fn provide_credentials<'a>(&'a self) -> future::ProvideCredentials<'a>
    where
        Self: 'a,
    {
        future::ProvideCredentials::new(async move {
            let mut creds = self.provider()?.provide_credentials().await?;
            let label = ChainSource::SharedFile.label(self.profile.as_deref());
            creds.set_property(Source(label));
            Ok(creds)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stamp_changes_with_the_file_not_with_a_read() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("credentials");
        let stamp = || Stamp::of(&std::fs::metadata(&path).unwrap());
        std::fs::write(&path, "[default]\n").unwrap();
        let first = stamp();
        std::fs::read(&path).unwrap();
        assert_eq!(stamp(), first);
        std::fs::write(&path, "[default]\nx = 1\n").unwrap();
        let rewritten = stamp();
        assert_ne!(rewritten, first);
        // Same size, renamed onto it: another inode.
        let other = dir.path().join("new");
        std::fs::write(&other, "[default]\nx = 2\n").unwrap();
        std::fs::rename(&other, &path).unwrap();
        assert_ne!(stamp(), rewritten);
    }
}
