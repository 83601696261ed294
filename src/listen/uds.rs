//! The Unix-socket listener: bound in a private directory, then linked
//! into place, so that no other user can connect before its mode is set.

use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::path::Path;

use anyhow::{Context as _, bail};

use crate::config::UdsConfig;

/// Binds the Unix socket: a stale socket file from an earlier run is
/// removed, but never a live one or anything that is not a socket.
///
/// The socket is bound in a private directory (mode 0700) beside the path,
/// given its mode there, and only then linked into place (a link, unlike a
/// rename, never replaces a file that appeared at the path meanwhile):
/// whatever the umask, no other user can connect while its mode is still
/// the umask's.
pub(super) fn bind(uds: &UdsConfig) -> anyhow::Result<std::os::unix::net::UnixListener> {
    let path = &uds.socket_path;
    let cannot_listen = || {
        format!(
            "cannot listen on {} (service.uds.socket-path)",
            path.display()
        )
    };
    remove_stale_socket(path)?;
    let parent = match path.parent() {
        Some(parent) if !parent.as_os_str().is_empty() => parent,
        _ => Path::new("."),
    };
    let private = tempfile::Builder::new()
        .prefix(".secret-agent-")
        .permissions(std::fs::Permissions::from_mode(0o700))
        .tempdir_in(parent)
        .with_context(cannot_listen)?;
    let staged = private.path().join("socket");
    let listener = std::os::unix::net::UnixListener::bind(&staged).with_context(cannot_listen)?;
    std::fs::set_permissions(&staged, std::fs::Permissions::from_mode(uds.mode))
        .with_context(|| format!("cannot set the mode of {}", path.display()))?;
    std::fs::hard_link(&staged, path).with_context(cannot_listen)?;
    Ok(listener)
}

fn remove_stale_socket(path: &Path) -> anyhow::Result<()> {
    let Ok(meta) = std::fs::symlink_metadata(path) else {
        return Ok(());
    };
    if !meta.file_type().is_socket() {
        bail!(
            "{} exists and is not a socket; refusing to replace it (service.uds.socket-path)",
            path.display()
        );
    }
    if std::os::unix::net::UnixStream::connect(path).is_ok() {
        bail!(
            "{} is in use by a running process (service.uds.socket-path)",
            path.display()
        );
    }
    log::info!("removing stale socket {}", path.display());
    std::fs::remove_file(path).with_context(|| format!("cannot remove {}", path.display()))
}
