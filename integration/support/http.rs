//! HTTP from the test side: a client that reads whole answers, and raw
//! requests written byte for byte on TCP or a Unix socket.

use std::io::Write;
use std::net::SocketAddr;
use std::path::Path;
use std::time::{Duration, Instant};

use serde_json::Value;

/// An HTTP answer, read whole.
pub(crate) struct Reply {
    pub status: u16,
    pub headers: reqwest::header::HeaderMap,
    pub body: Vec<u8>,
}

impl Reply {
    pub(crate) fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    pub(crate) fn json(&self) -> Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.text()))
    }

    pub(crate) fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    /// Asserts the error shape: status, stable code, a message.
    pub(crate) fn assert_error(&self, status: u16, code: &str) {
        assert_eq!(self.status, status, "body: {}", self.text());
        let body = self.json();
        assert_eq!(body["error"], code, "body: {body}");
        assert!(
            body["message"].as_str().is_some_and(|m| !m.is_empty()),
            "body: {body}"
        );
        assert_eq!(self.header("content-type"), Some("application/json"));
    }
}

pub(crate) fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap()
}

pub(crate) async fn get(url: &str) -> Reply {
    get_with(url, &[]).await
}

/// `GET url` `n` times at once, on one client's connection pool; each
/// answer's status and text, in order.
pub(crate) async fn get_at_once(url: &str, n: usize) -> Vec<(u16, String)> {
    let client = client();
    let reads: Vec<_> = (0..n)
        .map(|_| {
            let (client, url) = (client.clone(), url.to_owned());
            tokio::spawn(async move {
                let r = client.get(&url).send().await.unwrap();
                (r.status().as_u16(), r.text().await.unwrap())
            })
        })
        .collect();
    let mut answers = Vec::with_capacity(n);
    for read in reads {
        answers.push(read.await.unwrap());
    }
    answers
}

/// `GET url` with extra headers, e.g. `("Authorization", "Bearer ...")`.
pub(crate) async fn get_with(url: &str, headers: &[(&str, &str)]) -> Reply {
    let mut request = client().get(url);
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let response = request
        .send()
        .await
        .unwrap_or_else(|e| panic!("GET {url}: {e}"));
    Reply {
        status: response.status().as_u16(),
        headers: response.headers().clone(),
        body: response.bytes().await.unwrap().to_vec(),
    }
}

/// Writes `request` as is on `stream` (no client-side normalisation) and
/// reads until the server closes; returns the status (0 when the
/// connection closed before one) and the whole answer.
pub(crate) fn exchange(mut stream: impl std::io::Read + Write, request: &str) -> (u16, String) {
    let _ = stream.write_all(request.as_bytes());
    let mut answer = Vec::new();
    let _ = stream.read_to_end(&mut answer);
    let answer = String::from_utf8_lossy(&answer).into_owned();
    let status = answer
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    (status, answer)
}

/// The body of an HTTP answer read by [`exchange`].
pub(crate) fn body_of(answer: &str) -> String {
    answer
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default()
}

/// A TCP connection with a read timeout, for [`exchange`].
pub(crate) fn connect(addr: SocketAddr) -> std::net::TcpStream {
    let stream = std::net::TcpStream::connect(addr).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    stream
}

/// A TCP connection that the agent has accepted and served one
/// `GET /healthz` on, kept open (keep-alive): the agent counts it among
/// its open connections from now until it is dropped.
pub(crate) fn served_connection(addr: SocketAddr) -> std::net::TcpStream {
    use std::io::Read;
    let mut stream = connect(addr);
    stream
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: localhost\r\n\r\n")
        .unwrap();
    let mut answer = Vec::new();
    let mut chunk = [0u8; 1024];
    let complete = |answer: &[u8]| {
        let text = String::from_utf8_lossy(answer);
        let (head, body) = text.split_once("\r\n\r\n")?;
        let length: usize = head
            .lines()
            .find_map(|l| {
                l.to_ascii_lowercase()
                    .strip_prefix("content-length:")
                    .map(|v| v.trim().parse())
            })?
            .ok()?;
        (body.len() >= length).then(|| head.split_whitespace().nth(1).map(str::to_owned))
    };
    let status = loop {
        if let Some(status) = complete(&answer) {
            break status;
        }
        let n = stream.read(&mut chunk).expect("an answer to /healthz");
        assert!(
            n > 0,
            "closed before answering: {}",
            String::from_utf8_lossy(&answer)
        );
        answer.extend_from_slice(&chunk[..n]);
    };
    assert_eq!(
        status.as_deref(),
        Some("200"),
        "{}",
        String::from_utf8_lossy(&answer)
    );
    stream
}

/// A `GET path` request, as sent by [`raw_get`] and [`uds_get`]: the
/// path is not normalised, and the server closes after answering.
pub(crate) fn get_request(path: &str, headers: &[(&str, &str)]) -> String {
    let mut request = format!("GET {path} HTTP/1.1\r\nHost: localhost\r\n");
    for (name, value) in headers {
        request.push_str(&format!("{name}: {value}\r\n"));
    }
    request + "Connection: close\r\n\r\n"
}

/// Sends `GET <path>` exactly as given and returns the status and body.
pub(crate) fn raw_get(addr: SocketAddr, path: &str) -> (u16, String) {
    let (status, answer) = raw_request(addr, &get_request(path, &[]));
    (status, body_of(&answer))
}

/// [`exchange`] on a new TCP connection.
pub(crate) fn raw_request(addr: SocketAddr, request: &str) -> (u16, String) {
    exchange(connect(addr), request)
}

/// `GET <path>` with `headers` on the Unix socket at `socket`; the status
/// and body.
pub(crate) fn uds_get(socket: &Path, path: &str, headers: &[(&str, &str)]) -> (u16, String) {
    let stream = std::os::unix::net::UnixStream::connect(socket).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let (status, answer) = exchange(stream, &get_request(path, headers));
    (status, body_of(&answer))
}

/// Polls `check` every 50 ms until it holds or `timeout` passes.
pub(crate) async fn eventually(timeout: Duration, mut check: impl AsyncFnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if check().await {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    false
}
