//! [`Paced`]: the reader and writer between a client and actix-http's
//! HTTP/1 parser, with the deadlines actix-http does not keep.
//!
//! actix-http bounds the first request head of a connection and idle
//! keep-alive time, but not the heads that follow on a kept-alive
//! connection, and it keeps answering pipelined requests while the client
//! reads none of the answers. [`Paced`] closes both gaps below the parser:
//! every request head must arrive within `service.request-timeout`, and a
//! connection hands the parser its next request only once the answer to the
//! previous one has started to leave and the socket is not full. It also
//! bounds writes: answers that a client does not take within
//! `service.request-timeout` close its connection, so clients that never
//! read cannot hold every connection slot.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll, ready};
use std::time::Duration;

use bytes::{Buf, BytesMut};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::{Instant, Sleep};

/// Most bytes read from a client in one go and held before the parser
/// takes them.
pub(super) const READ_CHUNK: usize = 8 * 1024;

/// A client stream that hands the HTTP parser one request head at a time.
///
/// - Each request head must be complete within `timeout` of its first byte,
///   and the first one by [`Paced::first_head_by`] (else the read fails and
///   the connection closes): a client cannot hold a connection by trickling
///   bytes.
/// - The next request is handed over only once the answer to the previous
///   one has started to leave and the last write did not find the socket
///   full: a client that pipelines requests and reads no answers leaves at
///   most about two answers buffered, and at most two [`READ_CHUNK`]s more
///   of its requests are read (what followed a head in one read).
/// - While an answer is due and nothing is held, a read waits on the
///   socket itself, so the usual request (one head, then its answer) costs
///   no extra wake-up of the connection's task.
/// - Once a write or a flush finds the socket full, what the agent has
///   written must reach the kernel (a flush completes) within `timeout`,
///   else writes fail with [`io::ErrorKind::TimedOut`] and the dispatcher
///   closes the connection: a client that does not read cannot hold its
///   connection. Writes that do not block never start a timer.
///
/// No route reads a request body, so body bytes are treated like the start
/// of the next request: they reach the parser after the answer.
pub(super) struct Paced<IO> {
    io: IO,
    /// Read from the client, not yet handed to the parser.
    pending: BytesMut,
    scan: Scan,
    /// While a request head is incomplete: when it must be complete.
    deadline: Option<Pin<Box<Sleep>>>,
    /// Until the first head is complete: when it must be (one
    /// `request-timeout` after accept), even before its first byte.
    first_head_by: Option<Instant>,
    /// From the first write or flush that found the socket full until a
    /// flush completes: when the written bytes must have left.
    write_deadline: Option<Pin<Box<Sleep>>>,
    /// `service.request-timeout`: the bound of a head and of a stalled write.
    timeout: Duration,
    /// A complete head went to the parser and no answer byte has been
    /// written since.
    awaiting_answer: bool,
    /// The last write found the socket full: the client is not reading.
    write_blocked: bool,
    /// A read returned `Pending` for one of the two reasons above with bytes
    /// (or the end of the stream) held; the next successful write wakes the
    /// task so that it reads again.
    read_parked: bool,
    /// The client closed its side; told to the parser once nothing is held.
    eof: bool,
    /// Client connections open when this one was accepted, itself included
    /// (for `over-limit: refuse`).
    open_at_accept: usize,
}

/// Where the byte stream stands, seen from the request heads.
#[derive(Debug, PartialEq)]
enum Scan {
    /// Between requests (empty lines before a request are allowed).
    Between,
    /// Inside a head; counts the line ends seen in a row (`\r` ignored).
    Head { line_ends: u8 },
}

impl<IO> Paced<IO> {
    #[cfg(test)]
    fn new(io: IO, timeout: Duration) -> Paced<IO> {
        Paced::with_pending(io, timeout, BytesMut::new())
    }

    /// A stream whose first bytes, `pending`, were already read.
    pub(super) fn with_pending(io: IO, timeout: Duration, pending: BytesMut) -> Paced<IO> {
        Paced {
            io,
            pending,
            scan: Scan::Between,
            deadline: None,
            first_head_by: None,
            write_deadline: None,
            timeout,
            awaiting_answer: false,
            write_blocked: false,
            read_parked: false,
            eof: false,
            open_at_accept: 1,
        }
    }

    /// Sets when the first request head must be complete.
    pub(super) fn first_head_by(mut self, at: Instant) -> Paced<IO> {
        self.first_head_by = Some(at);
        self
    }

    /// Records how many connections were open when this one was accepted.
    pub(super) fn opened_with(mut self, open_at_accept: usize) -> Paced<IO> {
        self.open_at_accept = open_at_accept;
        self
    }

    /// Client connections open when this one was accepted, itself included.
    pub(super) fn open_at_accept(&self) -> usize {
        self.open_at_accept
    }

    /// How many of the pending bytes (at most `room`) may go to the parser
    /// now: up to and including the end of the next request head.
    fn release(&mut self, room: usize) -> usize {
        let take = self.pending.len().min(room);
        let pending = std::mem::take(&mut self.pending);
        let n = self.scan(&pending[..take]);
        self.pending = pending;
        n
    }

    /// How many of `bytes`, which follow those scanned before, may go to
    /// the parser: up to and including the end of a request head, if one
    /// ends there. A head left incomplete gets its deadline (a head that
    /// arrives whole, the usual case, never needs a timer).
    fn scan(&mut self, bytes: &[u8]) -> usize {
        let mut i = 0;
        while i < bytes.len() {
            match &mut self.scan {
                Scan::Between if bytes[i] == b'\r' || bytes[i] == b'\n' => i += 1,
                Scan::Between => self.scan = Scan::Head { line_ends: 0 },
                // Inside a line: on to its end (`\r` changes nothing here).
                Scan::Head { line_ends: 0 } => match memchr::memchr(b'\n', &bytes[i..]) {
                    Some(at) => {
                        i += at + 1;
                        self.scan = Scan::Head { line_ends: 1 };
                    }
                    None => i = bytes.len(),
                },
                // At the start of a line: an empty one ends the head.
                Scan::Head { line_ends } => match bytes[i] {
                    b'\n' => {
                        self.scan = Scan::Between;
                        self.deadline = None;
                        self.first_head_by = None;
                        self.awaiting_answer = true;
                        return i + 1;
                    }
                    b'\r' => i += 1,
                    _ => {
                        *line_ends = 0;
                        i += 1;
                    }
                },
            }
        }
        let head_due = matches!(self.scan, Scan::Head { .. }) || self.first_head_by.is_some();
        if head_due && self.deadline.is_none() {
            let at = self
                .first_head_by
                .unwrap_or_else(|| Instant::now() + self.timeout);
            self.deadline = Some(Box::pin(tokio::time::sleep_until(at)));
        }
        bytes.len()
    }

    /// A write or flush found the socket full: starts the write deadline
    /// unless it runs, and registers the task with it; an error once it has
    /// passed.
    fn stalled(&mut self, cx: &mut Context<'_>) -> io::Result<()> {
        let timeout = self.timeout;
        let deadline = self
            .write_deadline
            .get_or_insert_with(|| Box::pin(tokio::time::sleep(timeout)));
        if deadline.as_mut().poll(cx).is_ready() {
            return Err(io::Error::new(
                io::ErrorKind::TimedOut,
                "answer not taken by the client within service.request-timeout",
            ));
        }
        Ok(())
    }

    fn wrote(&mut self, cx: &Context<'_>) {
        self.awaiting_answer = false;
        self.write_blocked = false;
        if std::mem::take(&mut self.read_parked) {
            cx.waker().wake_by_ref();
        }
    }
}

impl<IO: AsyncRead + Unpin> AsyncRead for Paced<IO> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        loop {
            if let Some(deadline) = &mut this.deadline
                && deadline.as_mut().poll(cx).is_ready()
            {
                return Poll::Ready(Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    "request head not complete within service.request-timeout",
                )));
            }
            if !this.pending.is_empty() || this.eof {
                if this.awaiting_answer || this.write_blocked {
                    this.read_parked = true;
                    return Poll::Pending;
                }
                if this.pending.is_empty() {
                    return Poll::Ready(Ok(())); // the end of the stream
                }
                let n = this.release(buf.remaining());
                buf.put_slice(&this.pending[..n]);
                this.pending.advance(n);
                return Poll::Ready(Ok(()));
            }
            // Nothing held and no answer due: read straight into the
            // parser's buffer (actix-http offers 8 KB at a time; one that
            // offers more is read through `pending` instead, so that what
            // is kept back stays bounded), and keep back what follows a
            // head's end.
            let room = buf.remaining();
            if !this.awaiting_answer && !this.write_blocked && room > 0 && room <= 2 * READ_CHUNK {
                let start = buf.filled().len();
                ready!(Pin::new(&mut this.io).poll_read(cx, buf))?;
                let read = buf.filled().len() - start;
                if read == 0 {
                    return Poll::Ready(Ok(())); // the end of the stream
                }
                let n = this.scan(&buf.filled()[start..]);
                if n < read {
                    this.pending.extend_from_slice(&buf.filled()[start + n..]);
                    buf.set_filled(start + n);
                }
                return Poll::Ready(Ok(()));
            }
            // Nothing held: read the socket. `Pending` registers the task with
            // it, so that new bytes wake it whether or not an answer is due.
            this.pending.reserve(READ_CHUNK);
            let n = ready!(tokio_util::io::poll_read_buf(
                Pin::new(&mut this.io),
                cx,
                &mut this.pending
            ))?;
            this.eof = n == 0;
        }
    }
}

impl<IO: AsyncWrite + Unpin> AsyncWrite for Paced<IO> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        match Pin::new(&mut this.io).poll_write(cx, buf) {
            Poll::Pending => {
                this.write_blocked = true;
                this.stalled(cx)?;
                Poll::Pending
            }
            Poll::Ready(Ok(n)) => {
                this.wrote(cx);
                Poll::Ready(Ok(n))
            }
            Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        match Pin::new(&mut this.io).poll_flush(cx) {
            Poll::Ready(Ok(())) => {
                // Everything written has reached the kernel.
                this.write_deadline = None;
                Poll::Ready(Ok(()))
            }
            Poll::Pending => {
                this.stalled(cx)?;
                Poll::Pending
            }
            Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    const TIMEOUT: Duration = Duration::from_secs(5);

    /// Reads what the parser would get now, without waiting.
    fn poll_once(paced: &mut Paced<tokio::io::DuplexStream>) -> Poll<io::Result<Vec<u8>>> {
        let waker = futures_util::task::noop_waker();
        let mut cx = Context::from_waker(&waker);
        let mut space = [0u8; 1024];
        let mut buf = ReadBuf::new(&mut space);
        Pin::new(paced)
            .poll_read(&mut cx, &mut buf)
            .map_ok(|()| buf.filled().to_vec())
    }

    #[tokio::test(start_paused = true)]
    async fn one_head_at_a_time_until_the_answer_leaves() {
        let (mut client, server) = tokio::io::duplex(64 * 1024);
        let mut paced = Paced::new(server, TIMEOUT);
        client
            .write_all(b"GET /a HTTP/1.1\r\nHost: x\r\n\r\nGET /b HTTP/1.1\r\n\r\n")
            .await
            .unwrap();
        let first = paced.read(&mut [0u8; 1024]).await.unwrap();
        assert_eq!(first, b"GET /a HTTP/1.1\r\nHost: x\r\n\r\n".len());
        assert!(poll_once(&mut paced).is_pending(), "second head held");
        paced.write_all(b"HTTP/1.1 200 OK\r\n\r\n").await.unwrap();
        match poll_once(&mut paced) {
            Poll::Ready(Ok(bytes)) => assert_eq!(bytes, b"GET /b HTTP/1.1\r\n\r\n"),
            other => panic!("second head not released: {other:?}"),
        }
        let mut answer = [0u8; 19];
        client.read_exact(&mut answer).await.unwrap();
    }

    /// Counts the wake-ups it is given.
    struct CountingWaker(std::sync::atomic::AtomicUsize);

    impl std::task::Wake for CountingWaker {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        }
    }

    #[tokio::test(start_paused = true)]
    async fn an_answer_due_with_nothing_held_waits_on_the_socket() {
        let (mut client, server) = tokio::io::duplex(64 * 1024);
        let mut paced = Paced::new(server, TIMEOUT);
        client.write_all(b"GET /a HTTP/1.1\r\n\r\n").await.unwrap();
        assert_eq!(paced.read(&mut [0u8; 1024]).await.unwrap(), 19);
        let counter = Arc::new(CountingWaker(0.into()));
        let waker = std::task::Waker::from(counter.clone());
        let mut cx = Context::from_waker(&waker);
        let mut space = [0u8; 1024];
        let mut buf = ReadBuf::new(&mut space);
        assert!(
            Pin::new(&mut paced)
                .poll_read(&mut cx, &mut buf)
                .is_pending()
        );
        assert!(
            !paced.read_parked,
            "nothing held, so nothing to release later"
        );
        // The answer leaves: no wake-up, as no bytes wait to be handed over.
        assert!(
            Pin::new(&mut paced)
                .poll_write(&mut cx, b"HTTP/1.1 200 OK\r\n\r\n")
                .is_ready()
        );
        assert_eq!(counter.0.load(std::sync::atomic::Ordering::SeqCst), 0);
        // The next request wakes the task through the socket, and is read.
        client.write_all(b"GET /b HTTP/1.1\r\n\r\n").await.unwrap();
        assert_eq!(counter.0.load(std::sync::atomic::Ordering::SeqCst), 1);
        match poll_once(&mut paced) {
            Poll::Ready(Ok(bytes)) => assert_eq!(bytes, b"GET /b HTTP/1.1\r\n\r\n"),
            other => panic!("next head not read: {other:?}"),
        }
    }

    #[tokio::test(start_paused = true)]
    async fn the_end_of_the_stream_waits_for_the_answer() {
        let (mut client, server) = tokio::io::duplex(1024);
        let mut paced = Paced::new(server, TIMEOUT);
        client.write_all(b"GET / HTTP/1.1\r\n\r\n").await.unwrap();
        client.shutdown().await.unwrap();
        assert_eq!(paced.read(&mut [0u8; 64]).await.unwrap(), 18);
        assert!(poll_once(&mut paced).is_pending(), "held until the answer");
        paced.write_all(b"HTTP/1.1 200 OK\r\n\r\n").await.unwrap();
        match poll_once(&mut paced) {
            Poll::Ready(Ok(bytes)) => assert!(bytes.is_empty(), "the end, after the answer"),
            other => panic!("end of stream not told: {other:?}"),
        }
    }

    #[tokio::test(start_paused = true)]
    async fn heads_are_handed_over_one_at_a_time_whatever_room_the_parser_offers() {
        for room in [1, 7, 1024, 2 * READ_CHUNK, 64 * 1024] {
            let (mut client, server) = tokio::io::duplex(64 * 1024);
            let mut paced = Paced::new(server, TIMEOUT);
            let heads: &[&[u8]] = &[b"GET /a HTTP/1.1\r\n\r\n", b"GET /bb HTTP/1.1\r\n\r\n"];
            client.write_all(&heads.concat()).await.unwrap();
            for head in heads {
                let mut got = Vec::new();
                while got.len() < head.len() {
                    let mut space = vec![0u8; room];
                    let n = paced.read(&mut space).await.unwrap();
                    assert!(n > 0, "room {room}");
                    got.extend_from_slice(&space[..n]);
                }
                assert_eq!(got, *head, "room {room}");
                paced.write_all(b"HTTP/1.1 200 OK\r\n\r\n").await.unwrap();
            }
        }
    }

    #[tokio::test(start_paused = true)]
    async fn every_head_has_a_deadline() {
        let (mut client, server) = tokio::io::duplex(1024);
        let mut paced = Paced::new(server, TIMEOUT);
        client.write_all(b"GET / HTTP/1.1\n\n").await.unwrap();
        assert_eq!(paced.read(&mut [0u8; 64]).await.unwrap(), 16);
        // A head that arrived whole needed no timer.
        assert!(paced.deadline.is_none());
        paced.write_all(b"HTTP/1.1 200 OK\r\n\r\n").await.unwrap();
        // A kept-alive connection that trickles the next head.
        client.write_all(b"G").await.unwrap();
        assert_eq!(paced.read(&mut [0u8; 64]).await.unwrap(), 1);
        let started = tokio::time::Instant::now();
        let err = paced.read(&mut [0u8; 64]).await.unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::TimedOut);
        assert_eq!(started.elapsed(), TIMEOUT);
    }

    #[tokio::test(start_paused = true)]
    async fn idle_connections_and_empty_lines_have_no_deadline() {
        let (mut client, server) = tokio::io::duplex(1024);
        let mut paced = Paced::new(server, TIMEOUT);
        client.write_all(b"\r\n").await.unwrap();
        assert_eq!(paced.read(&mut [0u8; 64]).await.unwrap(), 2);
        tokio::time::sleep(TIMEOUT * 3).await;
        client.write_all(b"GET / HTTP/1.1\r\n\r\n").await.unwrap();
        assert_eq!(paced.read(&mut [0u8; 64]).await.unwrap(), 18);
    }

    #[tokio::test(start_paused = true)]
    async fn the_first_head_is_due_one_timeout_after_accept() {
        for first_bytes in [&b"G"[..], b"\r\n"] {
            let accepted = tokio::time::Instant::now();
            let (mut client, server) = tokio::io::duplex(1024);
            // The sniff took most of the window to see the first bytes.
            tokio::time::sleep(TIMEOUT * 4 / 5).await;
            let mut paced = Paced::with_pending(server, TIMEOUT, first_bytes.into())
                .first_head_by(accepted + TIMEOUT);
            assert_eq!(paced.read(&mut [0u8; 64]).await.unwrap(), first_bytes.len());
            client.write_all(b"ET / HTTP/1.1\r\n").await.unwrap();
            let read = async {
                loop {
                    if let Err(e) = paced.read(&mut [0u8; 64]).await {
                        return e;
                    }
                }
            };
            let err = tokio::time::timeout(TIMEOUT * 3, read).await.unwrap();
            assert_eq!(err.kind(), io::ErrorKind::TimedOut, "{first_bytes:?}");
            assert_eq!(accepted.elapsed(), TIMEOUT, "{first_bytes:?}");
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_first_head_in_time_leaves_later_heads_their_own_window() {
        let accepted = tokio::time::Instant::now();
        let (mut client, server) = tokio::io::duplex(1024);
        let mut paced = Paced::with_pending(server, TIMEOUT, b"GET / HTTP/1.1\r\n\r\n"[..].into())
            .first_head_by(accepted + TIMEOUT);
        assert_eq!(paced.read(&mut [0u8; 64]).await.unwrap(), 18);
        assert!(paced.deadline.is_none() && paced.first_head_by.is_none());
        paced.write_all(b"HTTP/1.1 200 OK\r\n\r\n").await.unwrap();
        tokio::time::sleep(TIMEOUT * 2).await;
        client.write_all(b"GET / HTTP/1.1\r\n\r\n").await.unwrap();
        assert_eq!(paced.read(&mut [0u8; 64]).await.unwrap(), 18);
    }

    #[tokio::test(start_paused = true)]
    async fn an_answer_the_client_does_not_take_fails_after_the_timeout() {
        let (_client, server) = tokio::io::duplex(1024);
        let mut paced = Paced::new(server, TIMEOUT);
        let started = tokio::time::Instant::now();
        // The timer wakes the task: without it this would wait forever.
        let write = tokio::time::timeout(TIMEOUT * 3, paced.write_all(&[b'x'; 4096]))
            .await
            .expect("the write deadline woke the task");
        assert_eq!(write.unwrap_err().kind(), io::ErrorKind::TimedOut);
        assert_eq!(started.elapsed(), TIMEOUT);
    }

    #[tokio::test(start_paused = true)]
    async fn writes_that_do_not_block_start_no_timer() {
        let (mut client, server) = tokio::io::duplex(1024);
        let mut paced = Paced::new(server, TIMEOUT);
        for _ in 0..3 {
            paced.write_all(&[b'x'; 512]).await.unwrap();
            paced.flush().await.unwrap();
            assert!(paced.write_deadline.is_none());
            client.read_exact(&mut [0u8; 512]).await.unwrap();
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_completed_flush_clears_the_write_deadline() {
        let (mut client, server) = tokio::io::duplex(1024);
        let mut paced = Paced::new(server, TIMEOUT);
        // Each answer stalls, and the client takes it after most of a
        // window: answers keep flowing, for several windows in all.
        let started = tokio::time::Instant::now();
        for _ in 0..3 {
            let reader = async {
                tokio::time::sleep(TIMEOUT * 4 / 5).await;
                client.read_exact(&mut [0u8; 2048]).await.unwrap();
            };
            let writer = async {
                paced.write_all(&[b'x'; 2048]).await?;
                paced.flush().await
            };
            let (written, ()) = tokio::join!(writer, reader);
            written.unwrap();
            assert!(paced.write_deadline.is_none());
        }
        assert!(started.elapsed() > TIMEOUT * 2);
        // An answer that stalls from the start must have left within one
        // window of that first stall, even if part of it leaves sooner.
        let started = tokio::time::Instant::now();
        let reader = async {
            tokio::time::sleep(TIMEOUT / 2).await;
            client.read_exact(&mut [0u8; 1024]).await.unwrap();
        };
        let writer = async {
            paced.write_all(&[b'x'; 4096]).await?;
            paced.flush().await
        };
        let both = async { tokio::join!(writer, reader) };
        let (written, ()) = tokio::time::timeout(TIMEOUT * 3, both)
            .await
            .expect("the write deadline woke the task");
        assert_eq!(written.unwrap_err().kind(), io::ErrorKind::TimedOut);
        assert_eq!(started.elapsed(), TIMEOUT);
    }

    /// Where the first head of `bytes` ends, a byte at a time: after a
    /// `\n` and an empty line (`\r` ignored), leading empty lines skipped.
    fn head_end(bytes: &[u8]) -> Option<usize> {
        let (mut started, mut line_ends) = (false, 0);
        for (i, &byte) in bytes.iter().enumerate() {
            match byte {
                b'\r' => {}
                b'\n' if !started => {}
                b'\n' if line_ends == 1 => return Some(i + 1),
                b'\n' => line_ends = 1,
                _ => (started, line_ends) = (true, 0),
            }
        }
        None
    }

    proptest::proptest! {
        #[test]
        fn heads_end_where_a_byte_at_a_time_scan_ends_them(
            bytes in proptest::collection::vec(proptest::sample::select(b"GET/ a:\r\n".to_vec()), 0..80),
            chunk in 1usize..20,
        ) {
            let rt = tokio::runtime::Builder::new_current_thread().enable_time().build().unwrap();
            let _guard = rt.enter();
            let (_client, server) = tokio::io::duplex(64);
            let mut paced = Paced::new(server, TIMEOUT);
            // Fed in chunks: the scan carries its state across them.
            let mut released = 0;
            let mut ended = None;
            for piece in bytes.chunks(chunk) {
                paced.pending.extend_from_slice(piece);
                let n = paced.release(usize::MAX);
                paced.pending.advance(n);
                released += n;
                if paced.awaiting_answer {
                    ended = Some(released);
                    break;
                }
            }
            proptest::prop_assert_eq!(ended, head_end(&bytes));
        }
    }

    #[test]
    fn heads_end_at_an_empty_line_with_or_without_cr() {
        for (bytes, released) in [
            (&b"GET / HTTP/1.1\r\nA: b\r\n\r\nrest"[..], 24),
            (b"GET / HTTP/1.1\nA: b\n\nrest", 21),
            (b"GET / HTTP/1.1\r\nA: b\r\n", 22),
            (b"\r\n\r\nGET / HTTP/1.1\r\n\r\nX", 22),
        ] {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_time()
                .build()
                .unwrap();
            let _guard = rt.enter();
            let (_client, server) = tokio::io::duplex(64);
            let mut paced = Paced::new(server, TIMEOUT);
            paced.pending.extend_from_slice(bytes);
            assert_eq!(paced.release(usize::MAX), released, "{bytes:?}");
        }
    }
}
