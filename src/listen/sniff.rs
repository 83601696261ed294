//! The first bytes of a connection decide its protocol: the secret agent
//! protocol's magic, or HTTP.

use bytes::BytesMut;
use tokio::io::AsyncRead;
use tokio::time::{Instant, timeout_at};

use super::paced::READ_CHUNK;
use crate::aerospike::{self, MAGIC};

/// The protocol a connection speaks.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Protocol {
    /// The secret agent protocol: the first bytes are its magic.
    Aerospike,
    /// Anything else.
    Http,
}

/// What the bytes read so far say.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Detection {
    Decided(Protocol),
    /// They could still be the start of the magic: read one more byte.
    NeedMore,
}

/// Decides from the first bytes of a connection, `first`.
pub(super) fn detect(first: &[u8]) -> Detection {
    if first.starts_with(&MAGIC) {
        Detection::Decided(Protocol::Aerospike)
    } else if first.len() < MAGIC.len() && MAGIC.starts_with(first) {
        Detection::NeedMore
    } else {
        Detection::Decided(Protocol::Http)
    }
}

/// Reads from `io` until its first bytes decide, by `by`: the protocol and
/// the bytes read (which the protocol's server takes over). `None` when the
/// client closed or sent too little in time.
pub(super) async fn sniff<IO: AsyncRead + Unpin>(
    io: &mut IO,
    by: Instant,
) -> Option<(Protocol, BytesMut)> {
    let mut first = BytesMut::with_capacity(READ_CHUNK);
    let read = async {
        loop {
            match detect(&first) {
                Detection::Decided(protocol) => return Some(protocol),
                Detection::NeedMore => {
                    let want = first.len() + 1;
                    if !aerospike::fill(io, &mut first, want).await {
                        return None;
                    }
                }
            }
        }
    };
    let protocol = timeout_at(by, read).await.ok().flatten()?;
    Some((protocol, first))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;
    use tokio::io::AsyncWriteExt;

    #[test]
    fn the_magic_decides_and_its_prefixes_wait() {
        assert_eq!(detect(&MAGIC), Detection::Decided(Protocol::Aerospike));
        let mut longer = MAGIC.to_vec();
        longer.extend_from_slice(b"rest");
        assert_eq!(detect(&longer), Detection::Decided(Protocol::Aerospike));
        for n in 0..MAGIC.len() {
            assert_eq!(detect(&MAGIC[..n]), Detection::NeedMore, "{n} bytes");
        }
        assert_eq!(detect(b"G"), Detection::Decided(Protocol::Http));
        assert_eq!(
            detect(b"GET / HTTP/1.1"),
            Detection::Decided(Protocol::Http)
        );
        assert_eq!(
            detect(&[MAGIC[0], MAGIC[1], b'x']),
            Detection::Decided(Protocol::Http)
        );
    }

    #[tokio::test(start_paused = true)]
    async fn sniff_keeps_what_it_read() {
        let (mut client, mut server) = tokio::io::duplex(1024);
        client.write_all(b"GET / HTTP/1.1\r\n").await.unwrap();
        let by = Instant::now() + Duration::from_secs(5);
        let (protocol, first) = sniff(&mut server, by).await.unwrap();
        assert_eq!(protocol, Protocol::Http);
        assert_eq!(&first[..], b"GET / HTTP/1.1\r\n");
    }

    #[tokio::test(start_paused = true)]
    async fn a_silent_or_closed_client_decides_nothing() {
        let (client, mut server) = tokio::io::duplex(1024);
        let timeout = Duration::from_secs(5);
        let started = Instant::now();
        assert!(sniff(&mut server, started + timeout).await.is_none());
        assert_eq!(started.elapsed(), timeout);
        drop(client);
        assert!(sniff(&mut server, Instant::now() + timeout).await.is_none());
    }
}
