//! The Aerospike Secret Agent protocol, spoken by Aerospike Database servers
//! (6.4+) for config values written `secrets:<resource>:<key>`.
//!
//! A request is an 8-byte header (the magic `0x51dec1cc`, then the length
//! of the JSON that follows, both big-endian 32-bit) and a JSON object
//! `{"Resource": "<name>", "SecretKey": "<key>"}`. The answer has the same
//! header and `{"SecretValue": "<value>"}` or `{"Error": "<message>"}`; the
//! client base64-decodes `SecretValue` and refuses answers over 100 KB.
//! Requests on one connection are answered in order, one at a time, so a
//! client that never reads its answers stops being read; an answer it does
//! not take within `service.request-timeout` closes its connection.
//!
//! Reads go through the same cache, single flight and stale rules as HTTP.
//! Clients of this protocol cannot send a token: with `auth` configured,
//! they read only what `auth.secret-agent-protocol.resources` grants.

use std::io;
use std::sync::Arc;
use std::time::Duration;

use actix_server::GracefulShutdownSignal;
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use bytes::{Buf, BytesMut};
use serde::Deserialize;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::time::{Instant, timeout, timeout_at};
use zeroize::Zeroizing;

use crate::domain::Version;
use crate::domain::{KeyError, Kind};
use crate::metrics::Metrics;
use crate::read::{ReadError, Reader};
use crate::text::echo;

/// The first four bytes of every request and answer ("sidekick").
pub(crate) const MAGIC: [u8; 4] = 0x51de_c1cc_u32.to_be_bytes();

/// Magic and length.
const HEADER: usize = 8;

/// Most bytes of JSON in a request or an answer: the C client refuses
/// larger answers, and no request needs more.
pub(crate) const MAX_JSON: usize = 100 * 1024;

#[derive(Deserialize)]
struct Request {
    #[serde(rename = "Resource")]
    resource: Option<String>,
    #[serde(rename = "SecretKey")]
    secret_key: Option<String>,
}

/// Why a connection is answered once more and closed.
enum Fatal {
    BadMagic,
    TooLong(usize),
    Slow,
}

impl Fatal {
    fn message(&self) -> String {
        match self {
            Fatal::BadMagic => "not a secret agent protocol request (wrong magic)".into(),
            Fatal::TooLong(len) => {
                format!("request of {len} bytes refused: at most {MAX_JSON} bytes of JSON")
            }
            Fatal::Slow => "request not complete within service.request-timeout".into(),
        }
    }
}

/// The time bounds of a connection.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Limits {
    /// `service.request-timeout`: the most a request may take to arrive
    /// (from its first byte), an idle connection may wait for the next, and
    /// an answer may take to be written.
    pub(crate) timeout: Duration,
    /// When the first request must be complete: one `timeout` after accept.
    pub(crate) first_request_by: Instant,
}

/// Serves requests on `io` until the client closes, stays idle for
/// `limits.timeout`, does not take an answer within it, sends something
/// that ends the connection, or the agent stops (`stopping`: an idle
/// connection closes at once, a busy one after its answer). `buf` holds the
/// bytes already read (the magic that chose this protocol).
pub(crate) async fn serve<IO>(
    mut io: IO,
    mut buf: BytesMut,
    reader: Reader,
    metrics: Arc<Metrics>,
    limits: Limits,
    stopping: GracefulShutdownSignal,
) where
    IO: AsyncRead + AsyncWrite + Unpin,
{
    let mut first_request_by = Some(limits.first_request_by);
    loop {
        if buf.is_empty() {
            // Idle between requests: wait up to `timeout` for the next one,
            // unless the agent stops first.
            let started = tokio::select! {
                read = timeout(limits.timeout, fill(&mut io, &mut buf, 1)) => {
                    matches!(read, Ok(true))
                }
                () = stopping.notified() => false,
            };
            if !started {
                return;
            }
        }
        let deadline = first_request_by
            .take()
            .unwrap_or_else(|| Instant::now() + limits.timeout);
        let json = match read_request(&mut io, &mut buf, deadline).await {
            Ok(Some(json)) => json,
            Ok(None) => return,
            Err(fatal) => {
                count(&metrics, "refused");
                let refusal = error_answer(&fatal.message());
                if write_answer(&mut io, &refusal, limits.timeout)
                    .await
                    .is_ok()
                {
                    timeout(limits.timeout, io.shutdown()).await.ok();
                }
                return;
            }
        };
        let answer = answer(&reader, &metrics, &json).await;
        if let Err(e) = write_answer(&mut io, &answer, limits.timeout).await {
            log::debug!("secret agent protocol connection closed: {e}");
            return;
        }
    }
}

/// The JSON of the request whose first bytes are in `buf`; `None` when the
/// client closed. The whole request must arrive by `deadline`.
async fn read_request<IO: AsyncRead + Unpin>(
    io: &mut IO,
    buf: &mut BytesMut,
    deadline: Instant,
) -> Result<Option<BytesMut>, Fatal> {
    let have = |buf: &BytesMut, n| buf.len() >= n;
    if !have(buf, HEADER) {
        match timeout_at(deadline, fill(io, buf, HEADER)).await {
            Ok(true) => {}
            Ok(false) => return Ok(None),
            Err(_) => return Err(Fatal::Slow),
        }
    }
    if buf[..4] != MAGIC {
        return Err(Fatal::BadMagic);
    }
    let len = u32::from_be_bytes([buf[4], buf[5], buf[6], buf[7]]) as usize;
    if len > MAX_JSON {
        return Err(Fatal::TooLong(len));
    }
    if !have(buf, HEADER + len) {
        match timeout_at(deadline, fill(io, buf, HEADER + len)).await {
            Ok(true) => {}
            Ok(false) => return Ok(None),
            Err(_) => return Err(Fatal::Slow),
        }
    }
    buf.advance(HEADER);
    Ok(Some(buf.split_to(len)))
}

/// Reads until `buf` holds `n` bytes; false at end of stream or on error.
pub(crate) async fn fill<IO: AsyncRead + Unpin>(io: &mut IO, buf: &mut BytesMut, n: usize) -> bool {
    while buf.len() < n {
        buf.reserve(n - buf.len());
        match io.read_buf(buf).await {
            Ok(0) | Err(_) => return false,
            Ok(_) => {}
        }
    }
    true
}

/// The answer's JSON, in memory that is wiped when dropped.
async fn answer(reader: &Reader, metrics: &Metrics, json: &[u8]) -> Zeroizing<Vec<u8>> {
    match value(reader, json).await {
        Ok(answer) => {
            count(metrics, "ok");
            answer
        }
        Err(refused) => {
            count(metrics, "error");
            error_answer(&refused.to_string())
        }
    }
}

/// Why a request gets an `Error` answer; the text is that answer.
#[derive(Debug, thiserror::Error)]
enum Refused {
    #[error("the request is not JSON")]
    NotJson,
    #[error("the request must be a JSON object {{\"Resource\": ..., \"SecretKey\": ...}}")]
    NotAnObject,
    #[error("the request names no Resource: write secrets:<resource>:<key> in the server's config")]
    NoResource,
    #[error("{0}")]
    NotServingYet(ReadError),
    /// With `auth` on, an absent name and a withheld one look the same.
    #[error(
        "resource `{0}` is not configured or not granted to secret agent protocol clients (auth.secret-agent-protocol.resources)"
    )]
    Withheld(String),
    #[error("no resource named `{0}`")]
    NotConfigured(String),
    /// The read failed: the name as the answer may show it, and the code.
    #[error("{0}: {code}", code = .1.code())]
    Read(String, ReadError),
    #[error("{0} has no key `{1}`")]
    NoSuchKey(String, String),
    #[error("{0}: {1}")]
    Key(String, KeyError),
    #[error("{0}: the value is too large for this protocol (over {MAX_JSON} bytes of JSON)")]
    TooLarge(String),
    #[error("internal error")]
    Internal,
}

async fn value(reader: &Reader, json: &[u8]) -> Result<Zeroizing<Vec<u8>>, Refused> {
    let request: Request = serde_json::from_slice(json).map_err(|e| {
        if e.is_data() {
            Refused::NotAnObject
        } else {
            Refused::NotJson
        }
    })?;
    let Some(resource) = request.resource.filter(|r| !r.is_empty()) else {
        return Err(Refused::NoResource);
    };
    if !reader.serving.is_open() {
        return Err(Refused::NotServingYet(ReadError::NotServingYet));
    }
    let snapshot = reader.current.load();
    // A configured name, or a name under a pattern (`prod/*`).
    let found = snapshot.resources.lookup(&resource);
    // With `auth` on, a name that is not configured and one that is not
    // granted get the same answer: a client without a token learns nothing
    // of which names exist.
    if !snapshot.access.is_open() {
        let grant = snapshot.access.protocol_grant();
        if !found
            .as_ref()
            .is_some_and(|found| grant.allows(&found.name))
        {
            return Err(Refused::Withheld(echo(&resource)));
        }
    }
    let Some(found) = found else {
        return Err(Refused::NotConfigured(echo(&resource)));
    };
    // A name under a pattern is the client's: messages repeat a short echo.
    let name = if found.by_pattern() {
        format!("`{}`", echo(found.name.as_str()))
    } else {
        found.name.to_string()
    };
    let (secret, _status) = reader
        .read(&found, &Version::Current, false)
        .await
        .map_err(|e| Refused::Read(name.clone(), e))?;
    let (bytes, kind) = match request.secret_key.as_deref().filter(|k| !k.is_empty()) {
        Some(key) => secret.key(key).map_err(|e| match e {
            KeyError::NoSuchKey(_) => Refused::NoSuchKey(name.clone(), echo(key)),
            other => Refused::Key(name.clone(), other),
        })?,
        None => (secret.value.clone(), secret.kind),
    };
    let encoded: Zeroizing<String> = if snapshot.convert_to_base64 || kind == Kind::Binary {
        Zeroizing::new(BASE64.encode(&bytes))
    } else {
        // Text and JSON secrets are SecretStrings: UTF-8.
        Zeroizing::new(String::from_utf8_lossy(&bytes).into_owned())
    };
    let mut out = Zeroizing::new(Vec::with_capacity(encoded.len() + 20));
    serde_json::to_writer(&mut *out, &SecretValue { value: &encoded })
        .map_err(|_| Refused::Internal)?;
    if out.len() > MAX_JSON {
        return Err(Refused::TooLarge(name));
    }
    Ok(out)
}

#[derive(serde::Serialize)]
struct SecretValue<'a> {
    #[serde(rename = "SecretValue")]
    value: &'a str,
}

fn error_answer(message: &str) -> Zeroizing<Vec<u8>> {
    #[derive(serde::Serialize)]
    struct Error<'a> {
        #[serde(rename = "Error")]
        error: &'a str,
    }
    Zeroizing::new(serde_json::to_vec(&Error { error: message }).unwrap_or_default())
}

/// Writes one answer; a client that has not taken it within `limit` gets
/// a [`io::ErrorKind::TimedOut`] error (and its connection closes).
async fn write_answer<IO: AsyncWrite + Unpin>(
    io: &mut IO,
    json: &[u8],
    limit: Duration,
) -> io::Result<()> {
    let mut frame = Zeroizing::new(Vec::with_capacity(HEADER + json.len()));
    frame.extend_from_slice(&MAGIC);
    frame.extend_from_slice(&(json.len() as u32).to_be_bytes());
    frame.extend_from_slice(json);
    let write = async {
        io.write_all(&frame).await?;
        io.flush().await
    };
    timeout(limit, write).await.unwrap_or_else(|_| {
        Err(io::Error::new(
            io::ErrorKind::TimedOut,
            "answer not taken by the client within service.request-timeout",
        ))
    })
}

fn count(metrics: &Metrics, outcome: &str) {
    metrics
        .protocol_requests
        .with_label_values(&["secret-agent", outcome])
        .inc();
}
