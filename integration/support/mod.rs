//! Spawn helpers for the end-to-end tests: the Python harness (moto, the
//! IMDSv2 double and the recording proxy, see `harness.py`) and the real
//! `secret-agent` binary.

#![allow(dead_code)] // each test file uses a different part of the kit

use std::io::{BufRead, BufReader, Write};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

pub const REGION: &str = "us-west-1";

/// The repository root.
pub fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Installs moto and boto3 into `integration/.venv` once, when missing.
fn python() -> PathBuf {
    static PYTHON: OnceLock<PathBuf> = OnceLock::new();
    PYTHON
        .get_or_init(|| {
            let venv = root().join("integration/.venv");
            let python = venv.join("bin/python");
            let ready = python.exists()
                && Command::new(&python)
                    .args(["-c", "import moto, boto3, werkzeug"])
                    .status()
                    .is_ok_and(|s| s.success());
            if !ready {
                eprintln!("installing moto into {} ...", venv.display());
                let ok = Command::new("python3")
                    .args(["-m", "venv"])
                    .arg(&venv)
                    .status()
                    .is_ok_and(|s| s.success())
                    && Command::new(venv.join("bin/pip"))
                        .args(["install", "--quiet", "--disable-pip-version-check", "-r"])
                        .arg(root().join("integration/requirements.txt"))
                        .status()
                        .is_ok_and(|s| s.success());
                assert!(ok, "could not install moto into {}", venv.display());
            }
            python
        })
        .clone()
}

/// One harness process: moto plus whatever doubles a test starts in it.
/// It exits by itself when this process closes its stdin (at exit).
pub struct World {
    pub moto: String,
    io: Mutex<(ChildStdin, BufReader<ChildStdout>)>,
    _child: Child,
}

impl World {
    /// The world shared by tests that need nothing special; tests keep apart
    /// by using unique secret names.
    pub fn shared() -> &'static World {
        static WORLD: OnceLock<World> = OnceLock::new();
        WORLD.get_or_init(|| World::start(&[]))
    }

    /// A world of its own, e.g. with moto settings in `env`.
    pub fn start(env: &[(&str, &str)]) -> World {
        let mut child = Command::new(python())
            .arg(root().join("integration/harness.py"))
            .envs(env.iter().copied())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start integration/harness.py");
        let stdin = child.stdin.take().unwrap();
        let mut stdout = BufReader::new(child.stdout.take().unwrap());
        let mut line = String::new();
        stdout.read_line(&mut line).expect("harness ready line");
        let ready: Value =
            serde_json::from_str(&line).unwrap_or_else(|e| panic!("harness said {line:?}: {e}"));
        World {
            moto: ready["moto"].as_str().expect("moto url").to_owned(),
            io: Mutex::new((stdin, stdout)),
            _child: child,
        }
    }

    /// Sends one command; returns its result or the harness's error text.
    pub fn try_cmd(&self, command: Value) -> Result<Value, String> {
        let mut io = self.io.lock().unwrap_or_else(|e| e.into_inner());
        let (stdin, stdout) = &mut *io;
        writeln!(stdin, "{command}").expect("write to harness");
        stdin.flush().unwrap();
        let mut line = String::new();
        stdout.read_line(&mut line).expect("read from harness");
        let answer: Value = serde_json::from_str(&line).expect("harness answer is JSON");
        if answer["ok"] == json!(true) {
            Ok(answer["result"].clone())
        } else {
            Err(answer["error"].as_str().unwrap_or("?").to_owned())
        }
    }

    pub fn cmd(&self, command: Value) -> Value {
        let shown = command.to_string();
        self.try_cmd(command)
            .unwrap_or_else(|e| panic!("harness command {shown} failed: {e}"))
    }

    /// A boto3 call against moto.
    pub fn call(&self, service: &str, region: &str, method: &str, args: Value) -> Value {
        self.cmd(json!({"op": "call", "service": service, "region": region, "method": method, "args": args}))
    }

    /// Creates a string secret; returns its full ARN.
    pub fn create_secret(&self, region: &str, name: &str, value: &str) -> String {
        let out = self.call(
            "secretsmanager",
            region,
            "create_secret",
            json!({"Name": name, "SecretString": value}),
        );
        out["ARN"].as_str().unwrap().to_owned()
    }

    /// Creates a binary secret; returns its full ARN.
    pub fn create_binary_secret(&self, region: &str, name: &str, value: &[u8]) -> String {
        use base64::Engine;
        let b64 = base64::engine::general_purpose::STANDARD.encode(value);
        let out = self.call(
            "secretsmanager",
            region,
            "create_secret",
            json!({"Name": name, "SecretBinary": {"$b64": b64}}),
        );
        out["ARN"].as_str().unwrap().to_owned()
    }

    /// Puts a new AWSCURRENT version; returns its version id.
    pub fn put_secret_value(&self, region: &str, arn: &str, value: &str) -> String {
        let out = self.call(
            "secretsmanager",
            region,
            "put_secret_value",
            json!({"SecretId": arn, "SecretString": value}),
        );
        out["VersionId"].as_str().unwrap().to_owned()
    }

    /// Starts a recording, fault-injecting proxy in front of moto.
    pub fn proxy(&self) -> Proxy<'_> {
        self.proxy_to(&self.moto)
    }

    /// Starts a recording, fault-injecting proxy in front of `upstream`.
    pub fn proxy_to(&self, upstream: &str) -> Proxy<'_> {
        let out = self.cmd(json!({"op": "start_proxy", "upstream": upstream}));
        Proxy {
            world: self,
            id: out["id"].as_str().unwrap().to_owned(),
            url: out["url"].as_str().unwrap().to_owned(),
        }
    }

    /// Starts an IMDSv2 double whose credentials live `lifetime` seconds.
    pub fn imds(&self, lifetime: u64, key_prefix: &str) -> Imds<'_> {
        self.imds_in(REGION, lifetime, key_prefix)
    }

    /// Like [`World::imds`], for an instance in `region`.
    pub fn imds_in(&self, region: &str, lifetime: u64, key_prefix: &str) -> Imds<'_> {
        let out = self.cmd(
            json!({"op": "start_imds", "lifetime": lifetime, "role": "secret-agent-role",
            "region": region, "key_prefix": key_prefix}),
        );
        Imds {
            world: self,
            id: out["id"].as_str().unwrap().to_owned(),
            url: out["url"].as_str().unwrap().to_owned(),
        }
    }
}

/// One call the proxy saw. `Debug` leaves out the session tokens and the
/// credentials an AssumeRole returned.
#[derive(Clone)]
pub struct Call {
    pub action: String,
    pub secret_id: Option<String>,
    pub access_key_id: Option<String>,
    /// The region of the SigV4 credential scope.
    pub region: Option<String>,
    /// The `X-Amz-Security-Token` header.
    pub session_token: Option<String>,
    /// Parameters of a form-encoded call (AssumeRole), else `Null`.
    pub form: Value,
    /// Seconds since the epoch when the proxy received it.
    pub time: f64,
    /// For AssumeRole: the credentials STS answered with (AccessKeyId,
    /// SecretAccessKey, SessionToken, Expiration), else `Null`.
    pub returned: Value,
}

impl std::fmt::Debug for Call {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Call")
            .field("action", &self.action)
            .field("secret_id", &self.secret_id)
            .field("access_key_id", &self.access_key_id)
            .field("region", &self.region)
            .field("session_token", &self.session_token.as_ref().map(|_| ".."))
            .field("form", &self.form)
            .field("time", &self.time)
            .field("returned_key_id", &self.returned["AccessKeyId"])
            .finish()
    }
}

#[derive(Clone)]
pub struct Proxy<'w> {
    world: &'w World,
    pub id: String,
    pub url: String,
}

impl Proxy<'_> {
    pub fn calls(&self) -> Vec<Call> {
        let out = self.world.cmd(json!({"op": "proxy_calls", "id": self.id}));
        out.as_array()
            .unwrap()
            .iter()
            .map(|c| Call {
                action: c["action"].as_str().unwrap_or_default().to_owned(),
                secret_id: c["secret_id"].as_str().map(str::to_owned),
                access_key_id: c["access_key_id"].as_str().map(str::to_owned),
                region: c["region"].as_str().map(str::to_owned),
                session_token: c["session_token"].as_str().map(str::to_owned),
                form: c["form"].clone(),
                time: c["time"].as_f64().unwrap_or_default(),
                returned: c["returned"].clone(),
            })
            .collect()
    }

    /// GetSecretValue calls for secrets whose id contains `needle`.
    pub fn gets(&self, needle: &str) -> usize {
        self.calls()
            .iter()
            .filter(|c| c.action == "GetSecretValue")
            .filter(|c| c.secret_id.as_deref().is_some_and(|s| s.contains(needle)))
            .count()
    }

    pub fn clear(&self) {
        self.world.cmd(json!({"op": "proxy_clear", "id": self.id}));
    }

    /// The most calls the proxy was handling at once (from a request's
    /// arrival to the start of its answer) since it started or was cleared.
    pub fn max_in_flight(&self) -> u64 {
        self.world
            .cmd(json!({"op": "proxy_in_flight", "id": self.id}))["max"]
            .as_u64()
            .unwrap()
    }

    /// `fault`: none, status, reset, delay or hang; see harness.py.
    pub fn set_fault(&self, fault: Value) {
        let mut command = json!({"op": "proxy_set", "id": self.id});
        for (k, v) in fault.as_object().unwrap() {
            command[k] = v.clone();
        }
        self.world.cmd(command);
    }
}

pub struct Imds<'w> {
    world: &'w World,
    pub id: String,
    pub url: String,
}

impl Imds<'_> {
    pub fn state(&self) -> Value {
        self.world.cmd(json!({"op": "imds_state", "id": self.id}))
    }

    /// Changes `lifetime`, `role`, `region` or `rotate_ahead` (seconds before
    /// expiry from which new credentials are handed out).
    pub fn set(&self, settings: Value) {
        let mut command = json!({"op": "imds_set", "id": self.id});
        for (k, v) in settings.as_object().unwrap() {
            command[k] = v.clone();
        }
        self.world.cmd(command);
    }

    /// The requests the double received: `{method, path, had_token}`.
    pub fn requests(&self) -> Vec<Value> {
        self.state()["requests"].as_array().unwrap().clone()
    }

    /// Every credential set the double minted, oldest first:
    /// `{access_key_id, secret_access_key, session_token, expiration}`.
    pub fn issued(&self) -> Vec<Value> {
        self.state()["issued"].as_array().unwrap().clone()
    }

    pub fn rotate(&self) -> String {
        self.world
            .cmd(json!({"op": "imds_rotate", "id": self.id}))
            .as_str()
            .unwrap()
            .to_owned()
    }
}

/// A name no other test uses.
pub fn unique(prefix: &str) -> String {
    static N: AtomicUsize = AtomicUsize::new(0);
    format!(
        "{prefix}-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    )
}

pub fn agent_binary() -> &'static str {
    env!("CARGO_BIN_EXE_secret-agent")
}

/// The executable of `examples/client.rs`, built once per test run (a no-op
/// after `cargo test`, which builds the examples; needed after `cargo test
/// --test integration`, which does not).
pub fn rust_client() -> &'static Path {
    static CLIENT: OnceLock<PathBuf> = OnceLock::new();
    CLIENT.get_or_init(|| {
        let mut cargo = Command::new(env!("CARGO"));
        // What cargo set for this test process describes this package, not
        // the build; ring's build script would take it for a change and
        // rebuild half the dependencies.
        for (var, _) in std::env::vars_os() {
            let var = var.to_string_lossy();
            let ours = [
                "CARGO_PKG_",
                "CARGO_MANIFEST_",
                "CARGO_CRATE_",
                "CARGO_BIN_",
            ];
            if ours.iter().any(|p| var.starts_with(p))
                || var == "CARGO_PRIMARY_PACKAGE"
                || var == "CARGO_TARGET_TMPDIR"
            {
                cargo.env_remove(&*var);
            }
        }
        let out = cargo
            .args([
                "build",
                "--quiet",
                "--example",
                "client",
                "--message-format=json",
            ])
            .current_dir(root())
            .stderr(Stdio::inherit())
            .output()
            .expect("run cargo build --example client");
        assert!(out.status.success(), "cargo build --example client failed");
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter_map(|line| serde_json::from_str::<Value>(line).ok())
            .filter(|m| m["reason"] == "compiler-artifact" && m["target"]["name"] == "client")
            .find_map(|m| m["executable"].as_str().map(PathBuf::from))
            .expect("cargo build --example client names its executable")
    })
}

/// A running `secret-agent`, killed on drop. Its stderr (the log) is kept.
pub struct Agent {
    child: Child,
    pub addr: SocketAddr,
    log: Arc<Mutex<String>>,
    pub dir: tempfile::TempDir,
}

/// Environment for an agent that must not find any credentials or instance
/// metadata of the machine it runs on.
pub fn isolated_env(dir: &Path) -> Vec<(String, String)> {
    vec![
        ("HOME".into(), dir.display().to_string()),
        (
            "AWS_SHARED_CREDENTIALS_FILE".into(),
            dir.join("no-credentials").display().to_string(),
        ),
        (
            "AWS_CONFIG_FILE".into(),
            dir.join("no-config").display().to_string(),
        ),
        ("AWS_EC2_METADATA_DISABLED".into(), "true".into()),
        ("RUST_LOG".into(), "debug".into()),
    ]
}

/// Standard AWS variables cleared from the agent's environment, so the
/// machine's own settings never leak into a test.
const CLEARED: &[&str] = &[
    "AWS_ACCESS_KEY_ID",
    "AWS_SECRET_ACCESS_KEY",
    "AWS_SESSION_TOKEN",
    "AWS_PROFILE",
    "AWS_DEFAULT_PROFILE",
    "AWS_REGION",
    "AWS_DEFAULT_REGION",
    "AWS_ENDPOINT_URL",
    "AWS_ENDPOINT_URL_SECRETS_MANAGER",
    "AWS_ENDPOINT_URL_STS",
    "AWS_EC2_METADATA_SERVICE_ENDPOINT",
    "AWS_ROLE_ARN",
    "AWS_WEB_IDENTITY_TOKEN_FILE",
    "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI",
    "AWS_CONTAINER_CREDENTIALS_FULL_URI",
];

impl Agent {
    /// Starts the agent on `yaml` (whose TCP endpoint should use port 0),
    /// with `env` on top of [`isolated_env`]; waits until it listens. A
    /// variable given an empty value is removed instead, e.g.
    /// `("AWS_EC2_METADATA_DISABLED", "")` to let the agent reach IMDS.
    pub fn start(yaml: &str, env: &[(&str, &str)]) -> Agent {
        Agent::try_start(yaml, env).unwrap_or_else(|log| panic!("agent did not start:\n{log}"))
    }

    /// Like [`Agent::start`], but returns the log if it does not come up.
    pub fn try_start(yaml: &str, env: &[(&str, &str)]) -> Result<Agent, String> {
        let dir = tempfile::tempdir().unwrap();
        let config = dir.path().join("config.yaml");
        std::fs::write(&config, yaml).unwrap();
        let mut command = Command::new(agent_binary());
        command.arg("--config").arg(&config);
        for var in CLEARED {
            command.env_remove(var);
        }
        command.envs(isolated_env(dir.path()));
        for (name, value) in env {
            if value.is_empty() {
                command.env_remove(name);
            } else {
                command.env(name, value);
            }
        }
        let mut child = command
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start secret-agent");
        let log = Arc::new(Mutex::new(String::new()));
        let (tx, rx) = std::sync::mpsc::channel();
        let stderr = child.stderr.take().unwrap();
        let sink = log.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                {
                    let mut log = sink.lock().unwrap();
                    log.push_str(&line);
                    log.push('\n');
                }
                // TCP listeners are logged first, then the "serving" line.
                if let Some(rest) = line.split("listening on ").nth(1) {
                    if let Some(addr) = rest
                        .strip_prefix("http://")
                        .or(rest.strip_prefix("https://"))
                    {
                        let _ = tx.send(Some(addr.trim().to_owned()));
                    }
                } else if line.contains("] serving ") {
                    let _ = tx.send(None);
                }
            }
        });
        // The TCP address, or 0.0.0.0:0 for an agent with only a Unix socket.
        let addr = match rx.recv_timeout(Duration::from_secs(20)) {
            Ok(addr) => addr.map_or(SocketAddr::from(([0, 0, 0, 0], 0)), |a| a.parse().unwrap()),
            Err(_) => {
                let _ = child.kill();
                let _ = child.wait();
                std::thread::sleep(Duration::from_millis(100));
                return Err(log.lock().unwrap().clone());
            }
        };
        Ok(Agent {
            child,
            addr,
            log,
            dir,
        })
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    pub fn log(&self) -> String {
        self.log.lock().unwrap().clone()
    }

    /// Waits until the log contains `needle`.
    pub fn wait_for_log(&self, needle: &str, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if self.log().contains(needle) {
                return true;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        false
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Sends a signal by name (`TERM`, `HUP`, ...).
    pub fn signal(&self, name: &str) {
        let status = Command::new("kill")
            .args([&format!("-{name}"), &self.pid().to_string()])
            .status()
            .unwrap();
        assert!(status.success(), "kill -{name}");
    }

    /// Waits for the process to exit by itself.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<std::process::ExitStatus> {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Some(status);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        None
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Runs `secret-agent --check` (or other args) and returns (exit code, stdout, stderr).
pub fn run_cli(args: &[&str]) -> (i32, String, String) {
    run_cli_with_env(args, &[])
}

/// [`run_cli`] with `env` added to the (cleared) environment.
pub fn run_cli_with_env(args: &[&str], env: &[(&str, &str)]) -> (i32, String, String) {
    let mut command = Command::new(agent_binary());
    for var in CLEARED {
        command.env_remove(var);
    }
    let out = command
        .args(args)
        .envs(env.iter().copied())
        .output()
        .expect("run secret-agent");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// A config with a port-0 listener, `endpoint` for Secrets Manager and
/// `resources` as (name, ARN); `extra` goes under `secret-manager.aws`
/// (indented four spaces) and `tail` at the top level.
pub fn config(
    endpoint: Option<&str>,
    resources: &[(&str, &str)],
    extra: &str,
    tail: &str,
) -> String {
    let mut yaml = String::from(
        "service:\n  tcp:\n    endpoint: 127.0.0.1:0\n\nsecret-manager:\n  aws:\n    region: us-west-1\n",
    );
    if let Some(endpoint) = endpoint {
        yaml.push_str(&format!("    endpoint: {endpoint}\n"));
    }
    yaml.push_str("    resources:\n");
    for (name, arn) in resources {
        yaml.push_str(&format!("      {name}: {arn}\n"));
    }
    for line in extra.lines() {
        yaml.push_str(&format!("    {line}\n"));
    }
    yaml.push_str(tail);
    yaml
}

/// Static keys for tests that do not care about credentials.
pub const TEST_KEYS: &str =
    "access-key-id: AKIATESTTESTTESTTEST\nsecret-access-key: test-secret-key-never-logged";

/// An HTTP answer, read whole.
pub struct Reply {
    pub status: u16,
    pub headers: reqwest::header::HeaderMap,
    pub body: Vec<u8>,
}

impl Reply {
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.text()))
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    /// Asserts the error shape: status, stable code, a message.
    pub fn assert_error(&self, status: u16, code: &str) {
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

pub fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap()
}

pub async fn get(url: &str) -> Reply {
    get_with(url, &[]).await
}

/// `GET url` with extra headers, e.g. `("Authorization", "Bearer ...")`.
pub async fn get_with(url: &str, headers: &[(&str, &str)]) -> Reply {
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
pub fn exchange(mut stream: impl std::io::Read + Write, request: &str) -> (u16, String) {
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
pub fn body_of(answer: &str) -> String {
    answer
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default()
}

/// A TCP connection with a read timeout, for [`exchange`].
pub fn connect(addr: SocketAddr) -> std::net::TcpStream {
    let stream = std::net::TcpStream::connect(addr).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    stream
}

/// Sends `GET <path>` exactly as given and returns the status and body.
pub fn raw_get(addr: SocketAddr, path: &str) -> (u16, String) {
    let (status, answer) = exchange(
        connect(addr),
        &format!("GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n"),
    );
    (status, body_of(&answer))
}

/// Polls `check` every 50 ms until it holds or `timeout` passes.
pub async fn eventually(timeout: Duration, mut check: impl AsyncFnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if check().await {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    false
}

/// Borrows owned (name, ARN) pairs for [`config`].
pub fn pairs(owned: &[(String, String)]) -> Vec<(&str, &str)> {
    owned
        .iter()
        .map(|(n, a)| (n.as_str(), a.as_str()))
        .collect()
}
