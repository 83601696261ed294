//! An entry's key, (ARN, version), and the borrowed view of it that the
//! hot path looks slots up by.

use crate::domain::Arn;
use crate::domain::Version;
use crate::upstream::UpstreamError;

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(super) struct Key {
    pub(super) arn: Arn,
    pub(super) version: Version,
}

/// A [`Key`] seen through its parts, so that the hot path looks a slot up
/// by borrowed parts without building a `Key` (which takes a reference on
/// the ARN that every worker thread shares). Hashes and compares as `Key`'s
/// derived impls do: the ARN, then the version.
pub(super) trait KeyParts {
    fn arn(&self) -> &Arn;
    fn version(&self) -> &Version;
}

impl KeyParts for Key {
    fn arn(&self) -> &Arn {
        &self.arn
    }
    fn version(&self) -> &Version {
        &self.version
    }
}

impl KeyParts for (&Arn, &Version) {
    fn arn(&self) -> &Arn {
        self.0
    }
    fn version(&self) -> &Version {
        self.1
    }
}

impl<'a> std::borrow::Borrow<dyn KeyParts + 'a> for Key {
    fn borrow(&self) -> &(dyn KeyParts + 'a) {
        self
    }
}

impl std::hash::Hash for dyn KeyParts + '_ {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.arn().hash(state);
        self.version().hash(state);
    }
}

impl PartialEq for dyn KeyParts + '_ {
    fn eq(&self, other: &Self) -> bool {
        self.arn() == other.arn() && self.version() == other.version()
    }
}

impl Eq for dyn KeyParts + '_ {}

impl Key {
    pub(super) fn new(arn: &Arn, version: &Version) -> Key {
        Key {
            arn: arn.clone(),
            version: version.clone(),
        }
    }

    /// For log lines: which version, never one a client wrote.
    pub(super) fn version_note(&self) -> &'static str {
        match self.version {
            Version::Current => "",
            Version::Stage(_) => " (a version stage asked for by a client)",
            Version::Id(_) => " (a version id asked for by a client)",
            Version::IdAndStage { .. } => " (a version id and stage asked for by a client)",
            Version::Number(_) | Version::Label(_) | Version::Encrypted(_) => {
                " (a parameter version, label or encrypted form asked for by a client)"
            }
        }
    }

    /// For log lines: AWS's message, or only the kind of failure where AWS
    /// may repeat a version a client wrote.
    pub(super) fn error_note(&self, err: &UpstreamError) -> String {
        if self.version.chosen_by_client() {
            err.kind().to_owned()
        } else {
            err.to_string()
        }
    }
}
