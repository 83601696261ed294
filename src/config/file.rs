//! Reading a file the agent is given: the config, token files, TLS PEM
//! files, the AWS agent's TOML. Only a regular file is read, and at most a
//! bound per kind of file: a wrong path (a FIFO, `/dev/zero`, a log) is
//! refused at once instead of blocking the caller or filling memory.
//! `/dev/null` reads as an empty file.
//!
//! The file is opened with `O_NONBLOCK`, so that opening a FIFO or a device
//! does not wait for a writer, then checked with `fstat` on the open file
//! (no window between the check and the read), then read through
//! `take(bound + 1)`, which also bounds a file that grows while it is read.

use std::fmt;
use std::fs::{File, FileType, Metadata};
use std::io::{self, Read};
use std::os::unix::fs::{FileTypeExt, OpenOptionsExt};
use std::path::Path;

use zeroize::Zeroize;

/// Largest config file (this agent's YAML, the AWS agent's TOML): 1 MiB.
pub(crate) const CONFIG_BYTES: u64 = 1024 * 1024;
/// Largest client token file (`token-file`, `file://` of `token-env`):
/// 64 KiB, far more than any token.
pub(crate) const TOKEN_BYTES: u64 = 64 * 1024;
/// Largest TLS PEM file (certificate chain, key, CA bundle): 1 MiB; a
/// system CA bundle is about 200 KiB.
pub(crate) const PEM_BYTES: u64 = 1024 * 1024;

/// Why a path was refused before or while reading it.
#[derive(Debug, thiserror::Error)]
pub(crate) enum Refusal {
    /// Not a regular file: a FIFO, a device, a directory, a socket.
    #[error("it is {0}, not a regular file")]
    NotRegular(Kind),
    /// Larger than the bound of its kind of file, in bytes.
    #[error("it is larger than {0} bytes")]
    TooLarge(u64),
    #[error("it is not UTF-8 text")]
    NotUtf8,
}

/// What a path that is not a regular file is, for messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    Directory,
    Fifo,
    CharDevice,
    BlockDevice,
    Socket,
    Other,
}

impl Kind {
    fn of(file_type: FileType) -> Kind {
        if file_type.is_dir() {
            Kind::Directory
        } else if file_type.is_fifo() {
            Kind::Fifo
        } else if file_type.is_char_device() {
            Kind::CharDevice
        } else if file_type.is_block_device() {
            Kind::BlockDevice
        } else if file_type.is_socket() {
            Kind::Socket
        } else {
            Kind::Other
        }
    }
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Kind::Directory => "a directory",
            Kind::Fifo => "a named pipe (FIFO)",
            Kind::CharDevice => "a character device",
            Kind::BlockDevice => "a block device",
            Kind::Socket => "a socket",
            Kind::Other => "not a file",
        })
    }
}

/// Whether `meta` is `/dev/null`'s (by device number, so under any name):
/// the usual way to say "no such file" (`AWS_CONFIG_FILE=/dev/null`), read
/// as an empty file. Asked only of character devices.
fn is_null_device(meta: &Metadata) -> bool {
    use std::os::unix::fs::MetadataExt;
    meta.file_type().is_char_device()
        && std::fs::metadata("/dev/null").is_ok_and(|null| null.rdev() == meta.rdev())
}

/// The refusal inside an error of [`read`], if it is one.
pub(crate) fn refusal(error: &io::Error) -> Option<&Refusal> {
    error.get_ref()?.downcast_ref::<Refusal>()
}

fn refused(refusal: Refusal) -> io::Error {
    let kind = match refusal {
        Refusal::NotRegular(_) => io::ErrorKind::InvalidInput,
        Refusal::TooLarge(_) => io::ErrorKind::FileTooLarge,
        Refusal::NotUtf8 => io::ErrorKind::InvalidData,
    };
    io::Error::new(kind, refusal)
}

/// The bytes of the regular file at `path`, at most `bound` of them. The
/// error says why, not which file: callers name the file and the key.
pub(crate) fn read(path: &Path, bound: u64) -> io::Result<Vec<u8>> {
    let file = File::options()
        .read(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_NOCTTY)
        .open(path)?;
    let meta = file.metadata()?;
    if is_null_device(&meta) {
        return Ok(Vec::new());
    }
    if !meta.file_type().is_file() {
        return Err(refused(Refusal::NotRegular(Kind::of(meta.file_type()))));
    }
    if meta.len() > bound {
        return Err(refused(Refusal::TooLarge(bound)));
    }
    // The size is a hint only: the file may change while it is read.
    let mut bytes = Vec::with_capacity(meta.len() as usize);
    let read = file.take(bound + 1).read_to_end(&mut bytes);
    if let Err(e) = read {
        bytes.zeroize();
        return Err(e);
    }
    if bytes.len() as u64 > bound {
        bytes.zeroize();
        return Err(refused(Refusal::TooLarge(bound)));
    }
    Ok(bytes)
}

/// The metadata of `path` (symbolic links followed) when it is a regular
/// file of at most `bound` bytes, or `/dev/null`, for a file that another
/// reads (the AWS SDK). Asks `stat` only: nothing is opened, so nothing
/// blocks.
pub(crate) fn regular(path: &Path, bound: u64) -> io::Result<Metadata> {
    let meta = std::fs::metadata(path)?;
    if is_null_device(&meta) {
        return Ok(meta);
    }
    if !meta.file_type().is_file() {
        return Err(refused(Refusal::NotRegular(Kind::of(meta.file_type()))));
    }
    if meta.len() > bound {
        return Err(refused(Refusal::TooLarge(bound)));
    }
    Ok(meta)
}

/// [`read`], as UTF-8 text without a leading byte order mark (editors on
/// Windows save one; it is not part of the text).
pub(crate) fn read_text(path: &Path, bound: u64) -> io::Result<String> {
    let mut text = String::from_utf8(read(path, bound)?).map_err(|e| {
        e.into_bytes().zeroize();
        refused(Refusal::NotUtf8)
    })?;
    if text.starts_with('\u{feff}') {
        text.drain(..'\u{feff}'.len_utf8());
    }
    Ok(text)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    use tokio::time::Instant;

    fn refusal_of(result: io::Result<String>) -> String {
        let e = result.unwrap_err();
        refusal(&e).unwrap_or_else(|| panic!("{e}")).to_string()
    }

    #[test]
    fn a_regular_file_is_read_whole() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("token");
        std::fs::write(&path, "abc\n").unwrap();
        assert_eq!(read_text(&path, 4).unwrap(), "abc\n");
        assert_eq!(read(&path, 4).unwrap(), b"abc\n");
        std::fs::write(&path, "").unwrap();
        assert_eq!(read_text(&path, 4).unwrap(), "");
    }

    #[test]
    fn over_the_bound_is_refused_without_reading() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("big");
        std::fs::write(&path, "abcde").unwrap();
        assert_eq!(refusal_of(read_text(&path, 4)), "it is larger than 4 bytes");
        assert_eq!(
            read(&path, 4).unwrap_err().kind(),
            io::ErrorKind::FileTooLarge
        );
        // A sparse file of 1 TiB costs no memory and no time.
        let sparse = dir.path().join("sparse");
        File::create(&sparse)
            .unwrap()
            .set_len(1024 * 1024 * 1024 * 1024)
            .unwrap();
        assert_eq!(
            refusal_of(read_text(&sparse, TOKEN_BYTES)),
            "it is larger than 65536 bytes"
        );
    }

    #[test]
    fn a_fifo_is_refused_at_once() {
        let dir = tempfile::tempdir().unwrap();
        let fifo = dir.path().join("fifo");
        let made = std::process::Command::new("mkfifo")
            .arg(&fifo)
            .status()
            .unwrap();
        assert!(made.success());
        let started = Instant::now();
        // No writer: a blocking open would wait for one for good.
        assert_eq!(
            refusal_of(read_text(&fifo, CONFIG_BYTES)),
            "it is a named pipe (FIFO), not a regular file"
        );
        assert!(started.elapsed() < Duration::from_secs(5));
    }

    #[test]
    fn devices_and_directories_are_refused() {
        assert_eq!(
            refusal_of(read_text(Path::new("/dev/zero"), TOKEN_BYTES)),
            "it is a character device, not a regular file"
        );
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(
            refusal_of(read_text(dir.path(), TOKEN_BYTES)),
            "it is a directory, not a regular file"
        );
        // /dev/null is an empty file.
        assert_eq!(read_text(Path::new("/dev/null"), TOKEN_BYTES).unwrap(), "");
        regular(Path::new("/dev/null"), 0).unwrap();
        let missing = read_text(&dir.path().join("missing"), TOKEN_BYTES).unwrap_err();
        assert_eq!(missing.kind(), io::ErrorKind::NotFound);
        assert!(refusal(&missing).is_none());
    }

    #[test]
    fn regular_asks_stat_only() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("cert.pem");
        std::fs::write(&path, "12345").unwrap();
        assert_eq!(regular(&path, 5).unwrap().len(), 5);
        let e = regular(&path, 4).unwrap_err();
        assert_eq!(
            refusal(&e).unwrap().to_string(),
            "it is larger than 4 bytes"
        );
        let e = regular(Path::new("/dev/zero"), 4).unwrap_err();
        assert_eq!(
            refusal(&e).unwrap().to_string(),
            "it is a character device, not a regular file"
        );
        let e = regular(dir.path(), 4).unwrap_err();
        assert_eq!(
            refusal(&e).unwrap().to_string(),
            "it is a directory, not a regular file"
        );
    }

    #[test]
    fn a_byte_order_mark_is_dropped_and_bad_utf8_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("bom.yaml");
        std::fs::write(&path, "\u{feff}service:\n  x: 1\n").unwrap();
        assert_eq!(read_text(&path, 100).unwrap(), "service:\n  x: 1\n");
        // Only at the start.
        std::fs::write(&path, "a\u{feff}").unwrap();
        assert_eq!(read_text(&path, 100).unwrap(), "a\u{feff}");
        std::fs::write(&path, [0xff, 0xfe]).unwrap();
        assert_eq!(refusal_of(read_text(&path, 100)), "it is not UTF-8 text");
    }
}
