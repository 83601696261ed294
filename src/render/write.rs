//! The safe, atomic write of one rendered file.
//!
//! - The parent directory is opened once and everything after goes through
//!   that handle (`openat`, `renameat`): a directory swapped meanwhile is not
//!   written to. It must not be writable by group or others, unless it is
//!   sticky (`/tmp`) and owned by root or by the agent's user.
//! - The destination must be absent or a regular file: a symlink (or a
//!   FIFO, a device, a directory) there is refused, and left as it is with
//!   what it points to. `renameat` never follows a link at the destination
//!   anyway, so one planted after the check is replaced, never followed.
//! - The temporary file is created in the same directory, exclusively
//!   (`O_CREAT | O_EXCL | O_NOFOLLOW`), with at most the final mode (the
//!   umask can only take bits away), set to exactly that mode with `fchmod`
//!   before a byte is written; then written, flushed (`fsync`), renamed over
//!   the destination, and the directory flushed. Readers see the old bytes
//!   or the new ones, never a part. On any failure the temporary file is
//!   removed.

use std::fs::File;
use std::io::{self, Read, Write};
use std::os::fd::{AsFd, OwnedFd};
use std::path::{Path, PathBuf};

use rustix::fs::{AtFlags, FileType, Mode, OFlags};

/// Why a file was not written; names paths, never content.
#[derive(Debug, thiserror::Error)]
pub(crate) enum WriteError {
    #[error("{}: has no parent directory or file name", .0.display())]
    BadPath(PathBuf),
    #[error("cannot open the directory {}: {source}", dir.display())]
    Dir { dir: PathBuf, source: io::Error },
    #[error(
        "the directory {} is writable by {who} (mode {mode:04o}) and not sticky and owned by root or the agent; \
         others could swap the file: chmod go-w it",
        dir.display()
    )]
    LooseDir {
        dir: PathBuf,
        mode: u32,
        who: &'static str,
    },
    #[error("{} is a {kind}, not a regular file; refused (it is left as it is)", path.display())]
    NotAFile { path: PathBuf, kind: &'static str },
    #[error("writing {} failed: {source}", path.display())]
    Io { path: PathBuf, source: io::Error },
}

/// What the destination holds now, as far as the writer is concerned.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Current {
    /// A regular file with exactly these bytes.
    Same,
    /// Absent, or a regular file with other bytes.
    Different,
}

/// Compares the destination with `bytes` without following a link; a
/// destination that is no regular file is an error, as for [`replace`].
pub(crate) fn compare(path: &Path, bytes: &[u8]) -> Result<Current, WriteError> {
    let (dir, dir_path, name) = open_parent(path)?;
    check_destination(&dir, path, name)?;
    let io = |source| WriteError::Io {
        path: path.to_owned(),
        source,
    };
    let fd = match rustix::fs::openat(
        &dir,
        name,
        OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::NONBLOCK | OFlags::CLOEXEC,
        Mode::empty(),
    ) {
        Ok(fd) => fd,
        Err(rustix::io::Errno::NOENT) => return Ok(Current::Different),
        Err(e) => return Err(io(e.into())),
    };
    drop(dir_path);
    let stat = rustix::fs::fstat(&fd).map_err(|e| io(e.into()))?;
    if FileType::from_raw_mode(stat.st_mode) != FileType::RegularFile {
        return Err(not_a_file(path, stat.st_mode));
    }
    if u64::try_from(stat.st_size).ok() != Some(bytes.len() as u64) {
        return Ok(Current::Different);
    }
    // Wiped after the comparison: it holds the old secret.
    let mut old = zeroize::Zeroizing::new(Vec::with_capacity(bytes.len() + 1));
    File::from(fd)
        .take(bytes.len() as u64 + 1)
        .read_to_end(&mut old)
        .map_err(io)?;
    Ok(if old.as_slice() == bytes {
        Current::Same
    } else {
        Current::Different
    })
}

/// Replaces the file at `path` with `bytes`, mode `mode`, atomically.
pub(crate) fn replace(path: &Path, bytes: &[u8], mode: u32) -> Result<(), WriteError> {
    let (dir, dir_path, name) = open_parent(path)?;
    check_destination(&dir, path, name)?;
    let io = |source: io::Error| WriteError::Io {
        path: path.to_owned(),
        source,
    };
    let (tmp_name, fd) = create_temporary(&dir, name, mode).map_err(io)?;
    let written = (|| {
        rustix::fs::fchmod(&fd, Mode::from_raw_mode(mode))?;
        let mut file = File::from(fd);
        file.write_all(bytes)?;
        file.sync_all()?;
        drop(file);
        rustix::fs::renameat(&dir, &tmp_name, &dir, name)?;
        Ok::<_, io::Error>(())
    })();
    if let Err(e) = written {
        if let Err(left) = rustix::fs::unlinkat(&dir, &tmp_name, AtFlags::empty()) {
            log::warn!(
                "could not remove the temporary file {}: {left}",
                dir_path.join(&tmp_name).display()
            );
        }
        return Err(io(e));
    }
    // The rename is durable once the directory is flushed.
    rustix::fs::fsync(&dir).map_err(|e| io(e.into()))?;
    Ok(())
}

/// The parent directory, opened, after its permissions are checked; its
/// path; and the destination's file name.
fn open_parent(path: &Path) -> Result<(OwnedFd, PathBuf, &std::ffi::OsStr), WriteError> {
    let (Some(dir), Some(name)) = (path.parent(), path.file_name()) else {
        return Err(WriteError::BadPath(path.to_owned()));
    };
    let dir = if dir.as_os_str().is_empty() {
        Path::new(".")
    } else {
        dir
    };
    let fd = rustix::fs::open(
        dir,
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .map_err(|e| WriteError::Dir {
        dir: dir.to_owned(),
        source: e.into(),
    })?;
    let stat = rustix::fs::fstat(&fd).map_err(|e| WriteError::Dir {
        dir: dir.to_owned(),
        source: e.into(),
    })?;
    let mode = stat.st_mode & 0o7777;
    let sticky = mode & 0o1000 != 0;
    let owner = stat.st_uid;
    let trusted_owner = owner == 0 || owner == rustix::process::geteuid().as_raw();
    if mode & 0o022 != 0 && !(sticky && trusted_owner) {
        return Err(WriteError::LooseDir {
            dir: dir.to_owned(),
            mode,
            who: if mode & 0o002 != 0 {
                "others"
            } else {
                "its group"
            },
        });
    }
    Ok((fd, dir.to_owned(), name))
}

/// Refuses a destination that exists and is no regular file.
fn check_destination(
    dir: &impl AsFd,
    path: &Path,
    name: &std::ffi::OsStr,
) -> Result<(), WriteError> {
    match rustix::fs::statat(dir, name, AtFlags::SYMLINK_NOFOLLOW) {
        Ok(stat) if FileType::from_raw_mode(stat.st_mode) == FileType::RegularFile => Ok(()),
        Ok(stat) => Err(not_a_file(path, stat.st_mode)),
        Err(rustix::io::Errno::NOENT) => Ok(()),
        Err(e) => Err(WriteError::Io {
            path: path.to_owned(),
            source: e.into(),
        }),
    }
}

fn not_a_file(path: &Path, mode: u32) -> WriteError {
    let kind = match FileType::from_raw_mode(mode) {
        FileType::Symlink => "symbolic link",
        FileType::Directory => "directory",
        FileType::Fifo => "FIFO",
        FileType::Socket => "socket",
        FileType::CharacterDevice | FileType::BlockDevice => "device",
        _ => "special file",
    };
    WriteError::NotAFile {
        path: path.to_owned(),
        kind,
    }
}

/// Creates `.<name>.secret-agent-<random>` beside the destination, never
/// following a link, with at most `mode`.
fn create_temporary(
    dir: &impl AsFd,
    name: &std::ffi::OsStr,
    mode: u32,
) -> io::Result<(PathBuf, OwnedFd)> {
    let mut last = io::Error::from(io::ErrorKind::AlreadyExists);
    for _ in 0..8 {
        let mut tmp = std::ffi::OsString::from(".");
        tmp.push(name);
        tmp.push(format!(".secret-agent-{:016x}", fastrand::u64(..)));
        let tmp = PathBuf::from(tmp);
        match rustix::fs::openat(
            dir,
            &tmp,
            OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::from_raw_mode(mode),
        ) {
            Ok(fd) => return Ok((tmp, fd)),
            Err(rustix::io::Errno::EXIST) => last = io::Error::from(io::ErrorKind::AlreadyExists),
            Err(e) => return Err(e.into()),
        }
    }
    Err(last)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::{MetadataExt, PermissionsExt};

    fn private_dir() -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o700)).unwrap();
        dir
    }

    fn leftovers(dir: &Path) -> Vec<String> {
        std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| n.contains(".secret-agent-"))
            .collect()
    }

    #[test]
    fn writes_with_the_mode_and_replaces_atomically() {
        let dir = private_dir();
        let path = dir.path().join("db-password");
        assert_eq!(compare(&path, b"one").unwrap(), Current::Different);
        replace(&path, b"one", 0o600).unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"one");
        assert_eq!(std::fs::metadata(&path).unwrap().mode() & 0o7777, 0o600);
        assert_eq!(compare(&path, b"one").unwrap(), Current::Same);
        assert_eq!(compare(&path, b"two").unwrap(), Current::Different);
        assert_eq!(compare(&path, b"on").unwrap(), Current::Different);
        // A new inode each time: a reader holding the old one keeps it whole.
        let before = std::fs::metadata(&path).unwrap().ino();
        let mut reader = File::open(&path).unwrap();
        replace(&path, b"two, longer", 0o640).unwrap();
        let mut old = String::new();
        reader.read_to_string(&mut old).unwrap();
        assert_eq!(old, "one");
        let meta = std::fs::metadata(&path).unwrap();
        assert_ne!(meta.ino(), before);
        assert_eq!(meta.mode() & 0o7777, 0o640);
        assert_eq!(std::fs::read(&path).unwrap(), b"two, longer");
        assert!(leftovers(dir.path()).is_empty());
    }

    #[test]
    fn the_mode_is_exact_whatever_the_file_was() {
        let dir = private_dir();
        let path = dir.path().join("f");
        std::fs::write(&path, "old").unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        replace(&path, b"new", 0o600).unwrap();
        assert_eq!(std::fs::metadata(&path).unwrap().mode() & 0o7777, 0o600);
    }

    #[test]
    fn a_symlink_at_the_destination_is_refused_and_its_target_left_alone() {
        let dir = private_dir();
        let target = dir.path().join("target");
        std::fs::write(&target, "precious").unwrap();
        let path = dir.path().join("link");
        std::os::unix::fs::symlink(&target, &path).unwrap();
        let err = replace(&path, b"secret", 0o600).unwrap_err();
        assert!(err.to_string().contains("symbolic link"), "{err}");
        assert!(matches!(
            compare(&path, b"precious"),
            Err(WriteError::NotAFile { .. })
        ));
        assert_eq!(std::fs::read(&target).unwrap(), b"precious");
        assert!(std::fs::symlink_metadata(&path).unwrap().is_symlink());
        // A dangling link too: nothing is created where it points.
        let dangling = dir.path().join("dangling");
        std::os::unix::fs::symlink(dir.path().join("nowhere"), &dangling).unwrap();
        assert!(replace(&dangling, b"secret", 0o600).is_err());
        assert!(!dir.path().join("nowhere").exists());
        assert!(leftovers(dir.path()).is_empty());
    }

    #[test]
    fn a_fifo_or_directory_at_the_destination_is_refused_without_blocking() {
        let dir = private_dir();
        let fifo = dir.path().join("fifo");
        assert!(
            std::process::Command::new("mkfifo")
                .arg(&fifo)
                .status()
                .unwrap()
                .success()
        );
        assert!(matches!(
            compare(&fifo, b"x"),
            Err(WriteError::NotAFile { kind: "FIFO", .. })
        ));
        assert!(replace(&fifo, b"x", 0o600).is_err());
        let sub = dir.path().join("sub");
        std::fs::create_dir(&sub).unwrap();
        assert!(matches!(
            replace(&sub, b"x", 0o600),
            Err(WriteError::NotAFile {
                kind: "directory",
                ..
            })
        ));
    }

    #[test]
    fn a_directory_others_can_write_is_refused_unless_sticky() {
        let dir = private_dir();
        let loose = dir.path().join("loose");
        std::fs::create_dir(&loose).unwrap();
        for (mode, who) in [(0o777, "others"), (0o770, "its group")] {
            std::fs::set_permissions(&loose, std::fs::Permissions::from_mode(mode)).unwrap();
            let err = replace(&loose.join("f"), b"x", 0o600).unwrap_err();
            assert!(
                matches!(&err, WriteError::LooseDir { who: w, .. } if *w == who),
                "{err}"
            );
            assert!(!loose.join("f").exists());
        }
        // Sticky and owned by the agent's user (or root): as /tmp, fine.
        std::fs::set_permissions(&loose, std::fs::Permissions::from_mode(0o1777)).unwrap();
        replace(&loose.join("f"), b"x", 0o600).unwrap();
        assert_eq!(std::fs::read(loose.join("f")).unwrap(), b"x");
        // A missing directory says which.
        let err = replace(&dir.path().join("none/f"), b"x", 0o600).unwrap_err();
        assert!(err.to_string().contains("none"), "{err}");
    }

    #[test]
    fn a_failed_write_leaves_the_old_file_and_no_temporary() {
        let dir = private_dir();
        let path = dir.path().join("f");
        replace(&path, b"old", 0o600).unwrap();
        // A read-only directory: the temporary cannot even be created
        // (unless this runs as root, which ignores the mode).
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o500)).unwrap();
        let failed = replace(&path, b"new", 0o600);
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o700)).unwrap();
        if rustix::process::geteuid().as_raw() != 0 {
            assert!(matches!(failed, Err(WriteError::Io { .. })));
            assert_eq!(std::fs::read(&path).unwrap(), b"old");
        }
        assert!(leftovers(dir.path()).is_empty());
    }

    #[test]
    fn concurrent_readers_never_see_a_partial_file() {
        let dir = private_dir();
        let path = dir.path().join("f");
        let a = vec![b'a'; 256 * 1024];
        let b = vec![b'b'; 128 * 1024];
        replace(&path, &a, 0o600).unwrap();
        let stop = std::sync::atomic::AtomicBool::new(false);
        std::thread::scope(|scope| {
            let reader = scope.spawn(|| {
                let mut reads = 0;
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    let seen = std::fs::read(&path).unwrap();
                    assert!(
                        seen == a || seen == b,
                        "a partial read of {} bytes",
                        seen.len()
                    );
                    reads += 1;
                }
                reads
            });
            for i in 0..200 {
                replace(&path, if i % 2 == 0 { &b } else { &a }, 0o600).unwrap();
            }
            stop.store(true, std::sync::atomic::Ordering::Relaxed);
            assert!(reader.join().unwrap() > 0);
        });
    }
}
