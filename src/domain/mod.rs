//! The domain's values, parsed once and valid from then on: resource
//! names, the ARNs they stand for, IAM roles a client reads as, the version a read asks for, and the
//! fetched value itself (wiped from memory when dropped).

mod arn;
mod name;
mod role;
mod secret;
mod version;

pub(crate) use arn::Arn;
pub(crate) use name::{NameError, ResourceName};
pub(crate) use role::{RoleArn, RoleScope};
pub(crate) use secret::{BuiltOnce, KeyError, Kind, ParameterInfo, Secret, secret_bytes};
pub(crate) use version::Version;

/// Outside input as a config error shows it: at most 80 characters.
pub(crate) fn truncate(text: &str) -> String {
    text.chars().take(80).collect()
}
