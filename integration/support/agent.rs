//! The real `secret-agent` binary: started on an [`AgentConfig`], up once
//! it answers `GET /healthz`, killed on drop; and its command line.

use std::io::{BufRead, BufReader};
use std::net::{SocketAddr, TcpStream};
use std::os::unix::fs::MetadataExt;
use std::os::unix::net::{UnixDatagram, UnixStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use super::{AgentConfig, exchange, get_request};

/// How long an agent may take to come up.
const START_TIMEOUT: Duration = Duration::from_secs(20);

pub(crate) fn agent_binary() -> &'static str {
    env!("CARGO_BIN_EXE_secret-agent")
}

/// Environment for an agent that must not find any credentials or instance
/// metadata of the machine it runs on.
pub(crate) fn isolated_env(dir: &Path) -> Vec<(String, String)> {
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
    "AWS_ENDPOINT_URL_SSM",
    "AWS_ENDPOINT_URL_STS",
    "AWS_EC2_METADATA_SERVICE_ENDPOINT",
    "AWS_ROLE_ARN",
    "AWS_WEB_IDENTITY_TOKEN_FILE",
    "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI",
    "AWS_CONTAINER_CREDENTIALS_FULL_URI",
    "AWS_CONTAINER_AUTHORIZATION_TOKEN",
    "AWS_ACCOUNT_ID",
    "AWS_TOKEN",
];

/// A running `secret-agent`, killed on drop. Its stderr (the log) is kept.
pub(crate) struct Agent {
    child: Child,
    /// The TCP listener's address; `0.0.0.0:0` for an agent with only a
    /// Unix socket.
    pub addr: SocketAddr,
    log: Arc<Mutex<String>>,
    /// Holds `config.yaml` (see [`Agent::reload`]) and is the agent's `HOME`.
    pub dir: tempfile::TempDir,
}

impl Agent {
    /// Starts the agent on `config`, with `env` on top of [`isolated_env`];
    /// returns once it answers. A variable given an empty value is removed
    /// instead, e.g. `("AWS_EC2_METADATA_DISABLED", "")` to let the agent
    /// reach IMDS.
    pub(crate) fn start(config: &AgentConfig, env: &[(&str, &str)]) -> Agent {
        Agent::try_start(config, env).unwrap_or_else(|log| panic!("agent did not start:\n{log}"))
    }

    /// Like [`Agent::start`], but returns the whole log if the agent exits
    /// or does not come up within 20 s.
    pub(crate) fn try_start(config: &AgentConfig, env: &[(&str, &str)]) -> Result<Agent, String> {
        Agent::try_start_under_umask(config, env, None)
    }

    /// Like [`Agent::try_start`], with the process started under `umask`
    /// (through `sh`, which sets it and execs the agent).
    pub(crate) fn try_start_under_umask(
        config: &AgentConfig,
        env: &[(&str, &str)],
        umask: Option<u32>,
    ) -> Result<Agent, String> {
        let dir = tempfile::tempdir().unwrap();
        let config_path = dir.path().join("config.yaml");
        std::fs::write(&config_path, config.yaml()).unwrap();
        // A socket already at the path (a stale one, or a live agent's) is
        // not this agent's: it is up once a new one answers there.
        let old_socket = config.socket_path().and_then(file_identity);
        let mut command = agent_command(dir.path(), env);
        if let Some(umask) = umask {
            command = under_umask(&command, umask);
        }
        command.arg("--config").arg(&config_path);
        let mut child = command
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start secret-agent");
        let (log, reader, addresses) = record_log(&mut child);
        let up = Starting {
            child: &mut child,
            deadline: Instant::now() + START_TIMEOUT,
        }
        .up(config, &addresses, old_socket);
        match up {
            Some(addr) => Ok(Agent {
                child,
                addr,
                log,
                dir,
            }),
            None => {
                let _ = child.kill();
                let _ = child.wait();
                // The process is gone, so its stderr is closed: once the
                // reader has seen the end, the log is complete.
                let _ = reader.join();
                let log = log.lock().unwrap().clone();
                Err(log)
            }
        }
    }

    /// Starts the agent with `args` alone, as users of the AWS agent do
    /// (`--config agent.toml`, `-l`), in `dir` (its working directory and
    /// `HOME`), with `env` as in [`Agent::start`]. Like the AWS agent's own
    /// test harness, it takes the first line of standard output, which must
    /// say `listening on http://<address>`, and returns it with the agent
    /// once `/ping` answers; else the log.
    pub(crate) fn try_start_with_args(
        args: &[&str],
        env: &[(&str, &str)],
        dir: tempfile::TempDir,
    ) -> Result<(Agent, String), String> {
        let mut child = agent_command(dir.path(), env)
            .args(args)
            .current_dir(dir.path())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start secret-agent");
        let (log, reader, _) = record_log(&mut child);
        let stdout = child.stdout.take().unwrap();
        let (tx, first_line) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut lines = BufReader::new(stdout).lines();
            if let Some(Ok(first)) = lines.next() {
                let _ = tx.send(first);
            }
            lines.for_each(drop);
        });
        let first = first_line.recv_timeout(START_TIMEOUT).ok();
        let addr = first.as_deref().and_then(|line| {
            line.split_once("listening on http://")?
                .1
                .trim()
                .parse::<SocketAddr>()
                .ok()
        });
        let up = addr.and_then(|addr| {
            Starting {
                child: &mut child,
                deadline: Instant::now() + START_TIMEOUT,
            }
            .until(|| pings(addr))
        });
        match (first, addr, up) {
            (Some(first), Some(addr), Some(())) => Ok((
                Agent {
                    child,
                    addr,
                    log,
                    dir,
                },
                first,
            )),
            (first, ..) => {
                let _ = child.kill();
                let _ = child.wait();
                let _ = reader.join();
                let log = log.lock().unwrap().clone();
                Err(format!("first line of stdout: {first:?}\n{log}"))
            }
        }
    }

    /// Starts the agent on `config` with `NOTIFY_SOCKET` set to `notify`,
    /// as systemd starts a `Type=notify` unit, and returns as soon as the
    /// first notification arrives, without asking the agent anything: with
    /// that message, or the log if none came within 20 s.
    pub(crate) fn try_start_notifying(
        config: &AgentConfig,
        notify: &NotifySocket,
    ) -> Result<(Agent, String), String> {
        let dir = tempfile::tempdir().unwrap();
        let config_path = dir.path().join("config.yaml");
        std::fs::write(&config_path, config.yaml()).unwrap();
        let notify_path = notify.path.to_str().unwrap();
        let mut child = agent_command(dir.path(), &[("NOTIFY_SOCKET", notify_path)])
            .arg("--config")
            .arg(&config_path)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start secret-agent");
        let (log, reader, addresses) = record_log(&mut child);
        let deadline = Instant::now() + START_TIMEOUT;
        let mut message = None;
        while message.is_none() && Instant::now() < deadline {
            if !matches!(child.try_wait(), Ok(None)) {
                break;
            }
            message = notify.recv(Duration::from_millis(50));
        }
        // The agent logs each address before it notifies anyone.
        let addr = if config.has_tcp() {
            addresses.recv_timeout(Duration::from_secs(5)).ok()
        } else {
            Some(SocketAddr::from(([0, 0, 0, 0], 0)))
        };
        match (message, addr) {
            (Some(message), Some(addr)) => Ok((
                Agent {
                    child,
                    addr,
                    log,
                    dir,
                },
                message,
            )),
            (message, _) => {
                let _ = child.kill();
                let _ = child.wait();
                let _ = reader.join();
                let log = log.lock().unwrap().clone();
                Err(format!("first notification: {message:?}\n{log}"))
            }
        }
    }

    /// `GET /healthz` answers 200 on every listener of `config`, asked once.
    pub(crate) fn answers_at_once(&self, config: &AgentConfig) -> bool {
        (!config.has_tcp() || healthy(self.addr)) && config.socket_path().is_none_or(socket_healthy)
    }

    pub(crate) fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    pub(crate) fn log(&self) -> String {
        self.log.lock().unwrap().clone()
    }

    /// Waits until the log contains `needle`.
    pub(crate) fn wait_for_log(&self, needle: &str, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if self.log().contains(needle) {
                return true;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        false
    }

    pub(crate) fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The agent's resident memory in KiB, from /proc; `None` once it exited.
    pub(crate) fn rss_kib(&self) -> Option<u64> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid())).ok()?;
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
    }

    /// The agent's peak resident memory in KiB (`VmHWM`), from /proc;
    /// `None` once it exited.
    pub(crate) fn peak_rss_kib(&self) -> Option<u64> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid())).ok()?;
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmHWM:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
    }

    /// The file the agent was started on.
    pub(crate) fn config_path(&self) -> PathBuf {
        self.dir.path().join("config.yaml")
    }

    /// Replaces the agent's config file with `config` and sends SIGHUP.
    pub(crate) fn reload(&self, config: &AgentConfig) {
        std::fs::write(self.config_path(), config.yaml()).unwrap();
        self.signal("HUP");
    }

    /// Sends a signal by name (`TERM`, `HUP`, ...).
    pub(crate) fn signal(&self, name: &str) {
        let status = Command::new("kill")
            .args([&format!("-{name}"), &self.pid().to_string()])
            .status()
            .unwrap();
        assert!(status.success(), "kill -{name}");
    }

    /// Waits for the process to exit by itself.
    pub(crate) fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
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

/// A service manager's notification socket, as systemd gives a
/// `Type=notify` unit in `NOTIFY_SOCKET`: a Unix datagram socket, bound in a
/// directory of its own that goes when it is dropped.
pub(crate) struct NotifySocket {
    socket: UnixDatagram,
    pub path: PathBuf,
    _dir: tempfile::TempDir,
}

impl NotifySocket {
    pub(crate) fn bind() -> NotifySocket {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("notify");
        let socket = UnixDatagram::bind(&path).unwrap();
        NotifySocket {
            socket,
            path,
            _dir: dir,
        }
    }

    /// The next message, or `None` after `timeout`.
    pub(crate) fn recv(&self, timeout: Duration) -> Option<String> {
        self.socket.set_read_timeout(Some(timeout)).unwrap();
        let mut buf = [0u8; 4096];
        let n = self.socket.recv(&mut buf).ok()?;
        Some(String::from_utf8_lossy(&buf[..n]).into_owned())
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The agent's command with a clean AWS environment: [`CLEARED`] removed,
/// [`isolated_env`] for `dir`, then `env` (an empty value removes the
/// variable).
pub(crate) fn agent_command(dir: &Path, env: &[(&str, &str)]) -> Command {
    let mut command = Command::new(agent_binary());
    for var in CLEARED {
        command.env_remove(var);
    }
    command.envs(isolated_env(dir));
    for (name, value) in env {
        if value.is_empty() {
            command.env_remove(name);
        } else {
            command.env(name, value);
        }
    }
    command
}

/// `agent` run by `sh` under `umask`: the same program, environment and
/// arguments to come.
fn under_umask(agent: &Command, umask: u32) -> Command {
    let mut shell = Command::new("/bin/sh");
    shell
        .arg("-c")
        .arg(format!("umask {umask:04o} && exec \"$0\" \"$@\""))
        .arg(agent.get_program());
    for (name, value) in agent.get_envs() {
        match value {
            Some(value) => shell.env(name, value),
            None => shell.env_remove(name),
        };
    }
    shell
}

/// Copies the child's stderr into the returned log, line by line, on a
/// thread that ends with the process. Each TCP address the agent reports
/// binding is sent on the channel after its line is in the log.
fn record_log(child: &mut Child) -> (Arc<Mutex<String>>, JoinHandle<()>, Receiver<SocketAddr>) {
    let log = Arc::new(Mutex::new(String::new()));
    let (tx, rx) = std::sync::mpsc::channel();
    let stderr = child.stderr.take().unwrap();
    let sink = log.clone();
    let reader = std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines() {
            let Ok(line) = line else { break };
            {
                let mut log = sink.lock().unwrap();
                log.push_str(&line);
                log.push('\n');
            }
            // With port 0 the log is the only place the port is told.
            if let Some(addr) = line
                .split_once("listening on ")
                .and_then(|(_, rest)| rest.split_once("://"))
                .and_then(|(_, addr)| addr.trim().parse().ok())
            {
                let _ = tx.send(addr);
            }
        }
    });
    (log, reader, rx)
}

/// An agent on its way up; every wait ends when it exits or at `deadline`.
struct Starting<'a> {
    child: &'a mut Child,
    deadline: Instant,
}

impl Starting<'_> {
    /// Waits until every listener in `config` answers; returns the TCP
    /// address (`0.0.0.0:0` without TCP).
    fn up(
        &mut self,
        config: &AgentConfig,
        addresses: &Receiver<SocketAddr>,
        old_socket: Option<FileIdentity>,
    ) -> Option<SocketAddr> {
        let mut addr = SocketAddr::from(([0, 0, 0, 0], 0));
        if config.has_tcp() {
            addr = self.tcp_address(addresses)?;
            // A TLS handshake needs the test's certificates; that the port
            // accepts is enough there.
            let tls = config.has_tls();
            self.until(|| if tls { connects(addr) } else { healthy(addr) })?;
        }
        if let Some(socket) = config.socket_path() {
            self.until(|| {
                file_identity(socket).is_some_and(|id| Some(id) != old_socket)
                    && socket_healthy(socket)
            })?;
        }
        Some(addr)
    }

    fn running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// The TCP address the agent bound.
    fn tcp_address(&mut self, addresses: &Receiver<SocketAddr>) -> Option<SocketAddr> {
        while Instant::now() < self.deadline {
            match addresses.recv_timeout(Duration::from_millis(50)) {
                Ok(addr) => return Some(addr),
                Err(RecvTimeoutError::Timeout) if self.running() => {}
                Err(_) => return None,
            }
        }
        None
    }

    /// Polls `up` every 20 ms.
    fn until(&mut self, mut up: impl FnMut() -> bool) -> Option<()> {
        while Instant::now() < self.deadline && self.running() {
            if up() {
                return Some(());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    }
}

/// Tells a file from the one at the same path before: a replaced file
/// may get the same inode number, but not the same change time too.
type FileIdentity = (u64, i64, i64);

fn file_identity(path: &Path) -> Option<FileIdentity> {
    let meta = std::fs::metadata(path).ok()?;
    Some((meta.ino(), meta.ctime(), meta.ctime_nsec()))
}

fn connects(addr: SocketAddr) -> bool {
    TcpStream::connect_timeout(&addr, Duration::from_secs(1)).is_ok()
}

/// `GET /healthz` answers 200.
fn healthy(addr: SocketAddr) -> bool {
    let Ok(stream) = TcpStream::connect_timeout(&addr, Duration::from_secs(1)) else {
        return false;
    };
    let _ = stream.set_read_timeout(Some(Duration::from_secs(2)));
    exchange(stream, &get_request("/healthz", &[])).0 == 200
}

/// `GET /ping` (the AWS agent's health check) answers 200.
fn pings(addr: SocketAddr) -> bool {
    let Ok(stream) = TcpStream::connect_timeout(&addr, Duration::from_secs(1)) else {
        return false;
    };
    let _ = stream.set_read_timeout(Some(Duration::from_secs(2)));
    exchange(stream, &get_request("/ping", &[])).0 == 200
}

fn socket_healthy(socket: &Path) -> bool {
    let Ok(stream) = UnixStream::connect(socket) else {
        return false;
    };
    let _ = stream.set_read_timeout(Some(Duration::from_secs(2)));
    exchange(stream, &get_request("/healthz", &[])).0 == 200
}

/// Runs `secret-agent` with `args` (e.g. `--check`) and returns (exit code,
/// stdout, stderr).
pub(crate) fn run_cli(args: &[&str]) -> (i32, String, String) {
    run_cli_with_env(args, &[])
}

/// [`run_cli_with_env`] with a deadline: `None` (the process killed) when
/// it has not exited within `timeout`, so that a hang fails the test
/// instead of holding up the suite.
pub(crate) fn run_cli_within(
    args: &[&str],
    env: &[(&str, &str)],
    timeout: Duration,
) -> Option<(i32, String, String)> {
    let mut command = Command::new(agent_binary());
    for var in CLEARED {
        command.env_remove(var);
    }
    let mut child = command
        .args(args)
        .envs(env.iter().copied())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run secret-agent");
    let drain = |mut pipe: Box<dyn std::io::Read + Send>| {
        std::thread::spawn(move || {
            let mut bytes = Vec::new();
            let _ = pipe.read_to_end(&mut bytes);
            String::from_utf8_lossy(&bytes).into_owned()
        })
    };
    let out = drain(Box::new(child.stdout.take().unwrap()));
    let err = drain(Box::new(child.stderr.take().unwrap()));
    let deadline = Instant::now() + timeout;
    let status = loop {
        if let Ok(Some(status)) = child.try_wait() {
            break Some(status);
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let (out, err) = (out.join().unwrap(), err.join().unwrap());
    status.map(|status| (status.code().unwrap_or(-1), out, err))
}

/// [`run_cli`] with `env` added to the (cleared) environment.
pub(crate) fn run_cli_with_env(args: &[&str], env: &[(&str, &str)]) -> (i32, String, String) {
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
