//! Which version of a secret or parameter a read asks for.

/// Which version of a secret or parameter to read.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) enum Version {
    /// `AWSCURRENT` of a secret, the latest version of a parameter: the default.
    Current,
    /// A secret's staging label such as `AWSPREVIOUS`.
    Stage(String),
    /// A secret's version id.
    Id(String),
    /// A secret's version id that must carry this staging label (both are
    /// sent; AWS refuses the pair when the label is elsewhere).
    IdAndStage { id: String, stage: String },
    /// A parameter's version number (`name:3`).
    Number(u64),
    /// A parameter's label (`name:prod`).
    Label(String),
    /// A parameter as GetParameter answers without decryption (a
    /// SecureString's encrypted form), at a version: cached apart from the
    /// decrypted value, so that one is never served for the other.
    Encrypted(Box<Version>),
}

impl Version {
    /// Whether a client chose it: then it, and AWS's messages that repeat
    /// it, stay out of the log (a client may put anything there).
    pub(crate) fn chosen_by_client(&self) -> bool {
        !matches!(self, Version::Current)
    }
}
