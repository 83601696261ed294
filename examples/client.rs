//! A secret-agent client in Rust (reqwest and tokio).
//!
//! ```text
//! cargo run --example client -- demo/db            # the whole secret
//! cargo run --example client -- demo/db username   # one key of a JSON secret
//! ```
//!
//! `SECRET_AGENT_URL` defaults to `http://127.0.0.1:2773`. When the agent
//! requires a client token, set `SECRET_AGENT_TOKEN` to it, or
//! `SECRET_AGENT_TOKEN_FILE` to the file holding it (read on every request,
//! so a rotated token is picked up). Errors come back as JSON
//! `{"error": code, "message": text}`; this client prints them and exits 1.

use std::fmt;
use std::io::Write;
use std::process::ExitCode;
use std::time::Duration;

use reqwest::header::{AUTHORIZATION, HeaderValue};
use reqwest::{Client, Url};

/// Why a read failed.
#[derive(Debug)]
enum Error {
    /// The agent answered with an error: its HTTP status and JSON body.
    Agent {
        status: u16,
        code: String,
        message: String,
    },
    /// No answer from the agent (not running, wrong URL, timeout).
    Http(reqwest::Error),
    /// A bad URL, or an unreadable or unusable token.
    Setup(String),
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Agent {
                status,
                code,
                message,
            } => write!(f, "{status} {code}: {message}"),
            Error::Http(e) => write!(f, "no answer from the agent: {e}"),
            Error::Setup(e) => f.write_str(e),
        }
    }
}

/// `SECRET_AGENT_TOKEN`, else the contents of `SECRET_AGENT_TOKEN_FILE`.
fn client_token() -> Result<Option<String>, Error> {
    if let Some(token) = std::env::var("SECRET_AGENT_TOKEN")
        .ok()
        .filter(|t| !t.is_empty())
    {
        return Ok(Some(token));
    }
    let Some(path) = std::env::var_os("SECRET_AGENT_TOKEN_FILE") else {
        return Ok(None);
    };
    let text = std::fs::read_to_string(&path).map_err(|e| {
        Error::Setup(format!(
            "cannot read the token file {}: {e}",
            path.to_string_lossy()
        ))
    })?;
    Ok(Some(text.trim().to_owned()).filter(|t| !t.is_empty()))
}

/// Reads a secret, or one key of a JSON secret, as bytes. 5xx answers and
/// failed connections are retried twice, with a short backoff.
async fn get_secret(
    client: &Client,
    base: &Url,
    name: &str,
    key: Option<&str>,
) -> Result<Vec<u8>, Error> {
    // /secrets/<name>[/<key>], each part percent-encoded: the name keeps its
    // slashes as path separators, the key is one segment.
    let mut url = base.clone();
    {
        let mut segments = url
            .path_segments_mut()
            .map_err(|()| Error::Setup(format!("{base} cannot be a base URL")))?;
        segments
            .pop_if_empty()
            .push("secrets")
            .extend(name.split('/'));
        if let Some(key) = key {
            segments.push(key);
        }
    }
    let mut attempt = 0;
    loop {
        attempt += 1;
        let mut request = client.get(url.clone());
        if let Some(token) = client_token()? {
            let mut value = HeaderValue::try_from(format!("Bearer {token}"))
                .map_err(|_| Error::Setup("the token is not a valid header value".into()))?;
            value.set_sensitive(true); // never shown by Debug
            request = request.header(AUTHORIZATION, value);
        }
        let error = match request.send().await {
            Ok(response) if response.status().is_success() => {
                return Ok(response.bytes().await.map_err(Error::Http)?.to_vec());
            }
            Ok(response) => {
                let status = response.status().as_u16();
                let body = response.bytes().await.map_err(Error::Http)?;
                let json: serde_json::Value = serde_json::from_slice(&body).unwrap_or_default();
                let text = |field: &str| json[field].as_str().map(str::to_owned);
                Error::Agent {
                    status,
                    code: text("error").unwrap_or_else(|| "unknown".into()),
                    message: text("message").unwrap_or_else(|| {
                        String::from_utf8_lossy(&body).chars().take(200).collect()
                    }),
                }
            }
            Err(e) => Error::Http(e),
        };
        let retriable = match &error {
            Error::Agent { status, .. } => *status >= 500,
            _ => true,
        };
        if !retriable || attempt == 3 {
            return Err(error);
        }
        tokio::time::sleep(Duration::from_millis(200 << attempt)).await;
    }
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (name, key) = match args.as_slice() {
        [name] => (name, None),
        [name, key] => (name, Some(key.as_str())),
        _ => {
            eprintln!("usage: client NAME [KEY]");
            return ExitCode::from(2);
        }
    };
    let base = std::env::var("SECRET_AGENT_URL").unwrap_or_else(|_| "http://127.0.0.1:2773".into());
    let result = async {
        let base = Url::parse(&base).map_err(|e| Error::Setup(format!("{base}: {e}")))?;
        let client = Client::builder()
            .timeout(Duration::from_secs(10))
            .build()
            .map_err(Error::Http)?;
        get_secret(&client, &base, name, key).await
    };
    match result.await {
        Ok(value) => {
            let mut stdout = std::io::stdout().lock();
            stdout
                .write_all(&value)
                .and_then(|()| stdout.write_all(b"\n"))
                .ok();
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("secret-agent: {e}");
            ExitCode::FAILURE
        }
    }
}
