//! `secret-agent exec`: a program run with secrets in its environment,
//! against moto and the real binary. The programs are `/bin/sh -c` scripts
//! that write what they see (values, trapped signals) into files of the
//! test's directory.

use std::io::Read;
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::support::*;

/// Loose bound for anything to happen: catches a hang, never a slow run.
const WAIT: Duration = Duration::from_secs(20);

/// A running `secret-agent exec`, killed on drop; its stderr is collected.
struct Exec {
    child: Child,
    stderr: Option<JoinHandle<String>>,
    dir: tempfile::TempDir,
}

impl Exec {
    /// `secret-agent exec --config <config> ARGS -- /bin/sh -c SCRIPT`, in a
    /// directory of its own (the script's working directory).
    fn start(config: &AgentConfig, args: &[&str], script: &str) -> Exec {
        let dir = tempfile::tempdir().unwrap();
        let config_path = dir.path().join("config.yaml");
        std::fs::write(&config_path, config.yaml()).unwrap();
        let mut child = agent_command(dir.path(), &[])
            .arg("exec")
            .arg("--config")
            .arg(&config_path)
            .args(args)
            .args(["--", "/bin/sh", "-c", script])
            .current_dir(dir.path())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start secret-agent exec");
        let mut pipe = child.stderr.take().unwrap();
        let stderr = std::thread::spawn(move || {
            let mut text = String::new();
            let _ = pipe.read_to_string(&mut text);
            text
        });
        Exec {
            child,
            stderr: Some(stderr),
            dir,
        }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// The text of a file the program writes, once it exists.
    fn file(&self, name: &str) -> Option<String> {
        std::fs::read_to_string(self.path(name)).ok()
    }

    /// Waits until the program has written the file `name` and its text
    /// satisfies `check`.
    fn wait_for_file(&mut self, name: &str, check: impl Fn(&str) -> bool) -> String {
        let deadline = Instant::now() + WAIT;
        loop {
            if let Some(text) = self.file(name)
                && check(&text)
            {
                return text;
            }
            if Instant::now() >= deadline || !matches!(self.child.try_wait(), Ok(None)) {
                let text = self.file(name);
                let log = self.finish_log();
                panic!("{name} is {text:?}\n{log}");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn signal(&self, name: &str) {
        let status = Command::new("kill")
            .args([&format!("-{name}"), &self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(status.success(), "kill -{name}");
    }

    /// Waits for exec to exit; its exit code and stderr, and the directory
    /// it ran in.
    fn wait(mut self) -> (i32, String, tempfile::TempDir) {
        let deadline = Instant::now() + WAIT;
        let status: ExitStatus = loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                break status;
            }
            if Instant::now() >= deadline {
                let _ = self.child.kill();
                let log = self.finish_log();
                panic!("exec did not exit\n{log}");
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        let log = self.finish_log();
        let dir = std::mem::replace(&mut self.dir, tempfile::tempdir().unwrap());
        (status.code().unwrap_or(-1), log, dir)
    }

    /// The whole of stderr, once exec has exited (killed if need be).
    fn finish_log(&mut self) -> String {
        if matches!(self.child.try_wait(), Ok(None)) {
            let _ = self.child.kill();
        }
        let _ = self.child.wait();
        self.stderr
            .take()
            .map(|reader| reader.join().unwrap())
            .unwrap_or_default()
    }
}

impl Drop for Exec {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Runs exec to its end on `config`; (exit code, stderr, the directory).
fn run(config: &AgentConfig, args: &[&str], script: &str) -> (i32, String, tempfile::TempDir) {
    Exec::start(config, args, script).wait()
}

fn read(dir: &Path, name: &str) -> String {
    std::fs::read_to_string(dir.join(name)).unwrap_or_else(|e| panic!("{name}: {e}"))
}

/// Whether something accepts connections on `port` of 127.0.0.1.
fn port_open(port: u16) -> bool {
    TcpStream::connect_timeout(&([127, 0, 0, 1], port).into(), Duration::from_secs(1)).is_ok()
}

#[test]
fn the_program_sees_a_value_and_a_key_of_a_json_value() {
    let world = World::shared();
    let plain = world.secret("exec-plain", "plain-value-7d1e");
    let json = world.secret(
        "exec-json",
        r#"{"username":"app","password":"pw with spaces & $dollars"}"#,
    );
    let config = world
        .config()
        .resource("plain", &plain.arn)
        .resource("app/db", &json.arn);
    let (code, log, dir) = run(
        &config,
        &[
            "--env",
            "PLAIN=plain",
            "--env",
            "DB_PASSWORD=app/db/password",
        ],
        r#"printf %s "$PLAIN" > plain; printf %s "$DB_PASSWORD" > password; printf %s "$HOME" > home"#,
    );
    assert_eq!(code, 0, "{log}");
    assert_eq!(read(dir.path(), "plain"), "plain-value-7d1e");
    assert_eq!(read(dir.path(), "password"), "pw with spaces & $dollars");
    // exec's own environment is passed on too.
    assert!(!read(dir.path(), "home").is_empty());
    // The log (at debug level) names the variables, never the values.
    assert!(log.contains("exec: started /bin/sh"), "{log}");
    for value in ["plain-value-7d1e", "pw with spaces"] {
        assert!(!log.contains(value), "the log holds a value:\n{log}");
    }
}

#[test]
fn a_missing_value_stops_exec_before_the_program_starts_and_is_named() {
    let world = World::shared();
    let plain = world.secret("exec-present", "present-value-51c0");
    let json = world.secret("exec-keys", r#"{"user":"u","password":"pw-9f3a"}"#);
    let gone = format!(
        "arn:aws:secretsmanager:{REGION}:{MOTO_ACCOUNT}:secret:{}-AbCdEf",
        unique("exec-gone")
    );
    let config = world
        .config()
        .resource("plain", &plain.arn)
        .resource("db", &json.arn)
        .resource("gone", &gone);
    let (code, log, dir) = run(
        &config,
        &[
            "--env",
            "OK=plain",
            "--env",
            "UNKNOWN=nowhere",
            "--env",
            "NO_KEY=db/nope",
            "--env",
            "NOT_JSON=plain/x",
            "--env",
            "GONE=gone",
        ],
        "touch started",
    );
    assert_eq!(code, 125, "{log}");
    assert!(!dir.path().join("started").exists(), "the program ran");
    for expected in [
        "UNKNOWN=nowhere: no resource `nowhere` is configured",
        "NO_KEY=db/nope: db: the secret has no key `nope`",
        "NOT_JSON=plain/x: plain: the secret is not a JSON object",
        "GONE=gone: gone: (upstream_secret_not_found)",
        "4 of 5 value(s) missing",
    ] {
        assert!(log.contains(expected), "no {expected:?} in:\n{log}");
    }
    assert!(!log.contains("OK=plain:"), "{log}");
    for value in ["present-value-51c0", "pw-9f3a"] {
        assert!(!log.contains(value), "the error holds a value:\n{log}");
    }
}

#[test]
fn bad_arguments_exit_2_before_anything_is_read() {
    for (args, expected) in [
        (vec!["--env", "1X=res"], "is not a variable name"),
        (vec!["--env", "NOEQUALS"], "is not NAME=RESOURCE[/KEY]"),
        (
            vec!["--env", "A=x", "--env", "A=y"],
            "--env A is given twice",
        ),
        (vec!["--on-change", "signal:KILL"], "`KILL` is not a signal"),
        (vec!["--on-change", "reload"], "is not an on-change action"),
    ] {
        let mut all = vec!["exec", "--config", "/nonexistent.yaml"];
        all.extend(&args);
        all.extend(["--", "/bin/true"]);
        let (code, _, err) = run_cli(&all);
        assert_eq!(code, 2, "{args:?}: {err}");
        assert!(err.contains(expected), "{args:?}: {err}");
    }
    // No program.
    let (code, _, err) = run_cli(&["exec", "--config", "/nonexistent.yaml"]);
    assert_eq!(code, 2, "{err}");
    // A config that does not load.
    let (code, _, err) = run_cli(&["exec", "--config", "/nonexistent.yaml", "--", "/bin/true"]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("/nonexistent.yaml"), "{err}");
}

#[test]
fn the_exit_code_and_the_killing_signal_are_passed_on() {
    let world = World::shared();
    let secret = world.secret("exec-codes", "v");
    let config = world.config().resource("s", &secret.arn);
    for (script, expected) in [
        ("exit 0", 0),
        ("exit 7", 7),
        ("exit 255", 255),
        ("kill -KILL $$", 137),
        ("kill -TERM $$", 143),
        ("kill -HUP $$", 129),
    ] {
        let (code, log, _dir) = run(&config, &["--env", "S=s"], script);
        assert_eq!(code, expected, "{script}\n{log}");
    }
    // No such program: 127; one that cannot be run: 126.
    let dir = tempfile::tempdir().unwrap();
    let config_path = dir.path().join("config.yaml");
    std::fs::write(&config_path, config.yaml()).unwrap();
    let config_arg = config_path.to_str().unwrap();
    for (program, expected) in [("/nonexistent/program", 127), ("/etc", 126)] {
        let out = agent_command(dir.path(), &[])
            .args([
                "exec", "--config", config_arg, "--env", "S=s", "--", program,
            ])
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(expected), "{program}: {err}");
        assert!(err.contains(&format!("cannot run {program}")), "{err}");
    }
}

#[test]
fn sighup_sigint_and_sigterm_to_exec_reach_the_program() {
    let world = World::shared();
    let secret = world.secret("exec-signals", "v");
    let config = world.config().resource("s", &secret.arn);
    let mut exec = Exec::start(
        &config,
        &["--env", "S=s"],
        r#"trap 'echo hup >> got' HUP; trap 'echo int >> got' INT; trap 'echo term >> got; exit 3' TERM
        touch started; while :; do sleep 0.05; done"#,
    );
    exec.wait_for_file("started", |_| true);
    exec.signal("HUP");
    exec.wait_for_file("got", |t| t == "hup\n");
    exec.signal("INT");
    exec.wait_for_file("got", |t| t == "hup\nint\n");
    exec.signal("TERM");
    let (code, log, dir) = exec.wait();
    // The program's own exit code, once it has handled the signal.
    assert_eq!(code, 3, "{log}");
    assert_eq!(read(dir.path(), "got"), "hup\nint\nterm\n");
}

#[test]
fn no_listener_is_bound_unless_listen_is_given() {
    let world = World::shared();
    let secret = world.secret("exec-listen", "v");
    let port = free_port();
    let config = world
        .config()
        .resource("s", &secret.arn)
        .tcp(&format!("127.0.0.1:{port}"));
    let script = "touch started; while [ ! -e stop ]; do sleep 0.05; done";
    let mut exec = Exec::start(&config, &["--env", "S=s"], script);
    exec.wait_for_file("started", |_| true);
    assert!(!port_open(port), "exec listens on the config's port");
    std::fs::write(exec.path("stop"), "").unwrap();
    let (code, log, _) = exec.wait();
    assert_eq!(code, 0, "{log}");

    // With --listen, the config's listeners serve while the program runs.
    let mut exec = Exec::start(&config, &["--listen", "--env", "S=s"], script);
    exec.wait_for_file("started", |_| true);
    let deadline = Instant::now() + WAIT;
    while !port_open(port) {
        assert!(Instant::now() < deadline, "--listen: nothing on {port}");
        std::thread::sleep(Duration::from_millis(20));
    }
    let stream = TcpStream::connect(("127.0.0.1", port)).unwrap();
    let (status, answer) = exchange(stream, &get_request("/secrets/s", &[]));
    assert_eq!((status, body_of(&answer).as_str()), (200, "v"), "{answer}");
    std::fs::write(exec.path("stop"), "").unwrap();
    let (code, log, _) = exec.wait();
    assert_eq!(code, 0, "{log}");
    // And they stop with it.
    assert!(!port_open(port), "still listening after exec exited");
}

/// A config whose cache refreshes `s` every second or so while it is read.
fn rotating(world: &World, prefix: &str, first: &str) -> (Secret, AgentConfig) {
    let secret = world.secret(prefix, first);
    let config = world
        .config()
        .resource("s", &secret.arn)
        .cache(|c| c.ttl("1s"));
    (secret, config)
}

#[test]
fn on_change_restart_stops_the_program_then_starts_it_with_the_new_value() {
    let world = World::shared();
    let (secret, config) = rotating(world, "exec-restart", "first-3b1");
    let mut exec = Exec::start(
        &config,
        &["--env", "V=s", "--on-change", "restart"],
        r#"echo "start $V" >> runs; trap 'echo "exit $V" >> runs; exit 0' TERM
        while :; do sleep 0.05; done"#,
    );
    exec.wait_for_file("runs", |t| t == "start first-3b1\n");
    world.put_secret_value(REGION, &secret.arn, "second-8c2");
    // The old program exited before the new one started.
    exec.wait_for_file("runs", |t| {
        t == "start first-3b1\nexit first-3b1\nstart second-8c2\n"
    });
    exec.signal("TERM");
    let (code, log, _) = exec.wait();
    assert_eq!(code, 0, "{log}");
    assert!(log.contains("exec: V changed; on-change: restart"), "{log}");
    for value in ["first-3b1", "second-8c2"] {
        assert!(!log.contains(value), "the log holds a value:\n{log}");
    }
}

#[test]
fn on_change_restart_kills_a_program_that_ignores_sigterm() {
    let world = World::shared();
    let (secret, config) = rotating(world, "exec-stubborn", "a");
    let config = config.shutdown_timeout("1s");
    let mut exec = Exec::start(
        &config,
        &["--env", "V=s", "--on-change", "restart"],
        // The first program ignores SIGTERM, the second does not.
        r#"if [ "$V" = a ]; then trap '' TERM; fi; echo "start $V" >> runs
        while :; do sleep 0.05; done"#,
    );
    exec.wait_for_file("runs", |t| t == "start a\n");
    world.put_secret_value(REGION, &secret.arn, "b");
    exec.wait_for_file("runs", |t| t == "start a\nstart b\n");
    exec.signal("TERM");
    let (code, log, _) = exec.wait();
    assert_eq!(code, 143, "{log}");
    assert!(log.contains("did not exit within 1s of SIGTERM"), "{log}");
}

#[test]
fn on_change_signal_hup_sends_hup_and_keeps_the_program() {
    let world = World::shared();
    let (secret, config) = rotating(world, "exec-hup", "one");
    let mut exec = Exec::start(
        &config,
        &["--env", "V=s", "--on-change", "signal:HUP"],
        r#"echo "start $V" >> runs; trap 'echo hup >> runs' HUP; trap 'exit 0' TERM
        while :; do sleep 0.05; done"#,
    );
    exec.wait_for_file("runs", |t| t == "start one\n");
    world.put_secret_value(REGION, &secret.arn, "two");
    // One change, one signal; the environment of the running program
    // cannot change, so it is not started again.
    exec.wait_for_file("runs", |t| t == "start one\nhup\n");
    exec.signal("TERM");
    let (code, log, _) = exec.wait();
    assert_eq!(code, 0, "{log}");
    assert_eq!(log.matches("on-change: signal:HUP").count(), 1, "{log}");
}

#[test]
fn on_change_exit_stops_the_program_and_exits_with_its_code() {
    let world = World::shared();
    let (secret, config) = rotating(world, "exec-exit", "old");
    let mut exec = Exec::start(
        &config,
        &["--env", "V=s", "--on-change", "exit"],
        r#"trap 'echo stopped >> runs; exit 4' TERM; echo "start $V" >> runs
        while :; do sleep 0.05; done"#,
    );
    exec.wait_for_file("runs", |t| t == "start old\n");
    world.put_secret_value(REGION, &secret.arn, "new");
    let (code, log, dir) = exec.wait();
    assert_eq!(code, 4, "{log}");
    assert_eq!(read(dir.path(), "runs"), "start old\nstopped\n");
}

#[test]
fn the_systemd_example_unit_runs_exec_and_passes_systemd_analyze() {
    let unit_path = root().join("examples/systemd/app-with-secrets.service");
    let unit = std::fs::read_to_string(&unit_path).unwrap();
    let exec_start = unit
        .lines()
        .find_map(|l| l.strip_prefix("ExecStart="))
        .expect("an ExecStart= line");
    let words: Vec<&str> = exec_start.split_whitespace().collect();
    assert_eq!(
        &words[..2],
        ["/usr/bin/secret-agent", "exec"],
        "{exec_start}"
    );
    let config_at = words.iter().position(|w| *w == "--config").unwrap() + 1;
    assert_eq!(words[config_at], "/etc/secret-agent/app-with-secrets.yaml");
    let dashes = words.iter().position(|w| *w == "--").expect("--");

    // Its config passes --check.
    let config = root().join("examples/systemd/app-with-secrets.yaml");
    let (code, _, err) = run_cli(&["--check", "--config", config.to_str().unwrap()]);
    assert_eq!(code, 0, "{err}");

    // Its arguments parse: against moto, where none of the example's
    // secrets exist, every --env is named as missing (125), not refused (2).
    let world = World::shared();
    let mut yaml: serde_yaml::Value =
        serde_yaml::from_str(&std::fs::read_to_string(&config).unwrap()).unwrap();
    let aws = &mut yaml["secret-manager"]["aws"];
    aws["endpoint"] = world.moto.clone().into();
    aws["access-key-id"] = TEST_KEY_ID.into();
    aws["secret-access-key"] = TEST_SECRET_KEY.into();
    let dir = tempfile::tempdir().unwrap();
    let local = dir.path().join("config.yaml");
    std::fs::write(&local, serde_yaml::to_string(&yaml).unwrap()).unwrap();
    let mut args: Vec<&str> = words[1..dashes].to_vec();
    args[config_at - 1] = local.to_str().unwrap();
    args.extend(["--", "/bin/true"]);
    let out = agent_command(dir.path(), &[]).args(&args).output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(125), "{err}");
    let vars = args.iter().filter(|a| **a == "--env").count();
    assert!(vars >= 2, "{exec_start}");
    assert!(
        err.contains(&format!("{vars} of {vars} value(s) missing")),
        "{err}"
    );

    // systemd-analyze verify, with the binaries it checks for put where
    // they are here; skipped where it cannot run at all.
    let probe_dir = tempfile::tempdir().unwrap();
    let probe = probe_dir.path().join("probe.service");
    std::fs::write(&probe, "[Service]\nExecStart=/bin/true\n").unwrap();
    let can_verify = Command::new("systemd-analyze")
        .arg("verify")
        .arg(&probe)
        .output()
        .is_ok_and(|o| o.status.success());
    if !can_verify {
        eprintln!("SKIPPED: systemd-analyze verify cannot run here");
        return;
    }
    let program = words[dashes + 1];
    let local_unit = unit
        .replace("/usr/bin/secret-agent", agent_binary())
        .replace(program, "/bin/true");
    let checked = probe_dir.path().join("app-with-secrets.service");
    std::fs::write(&checked, local_unit).unwrap();
    let out = Command::new("systemd-analyze")
        .arg("verify")
        .arg(&checked)
        .output()
        .unwrap();
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "{said}");
    assert!(
        said.trim().is_empty(),
        "systemd-analyze verify warns: {said}"
    );
}

#[test]
fn sigterm_while_the_values_are_read_stops_exec_without_starting_the_program() {
    let f = Fixture::new();
    let secret = f.secret("exec-early", "v");
    f.proxy
        .set_fault(serde_json::json!({"fault": "hang", "delay_ms": 10_000}));
    let mut exec = Exec::start(
        &f.config().resource("s", &secret.arn),
        &["--env", "S=s"],
        "touch started",
    );
    // The read is under way, held by the proxy.
    let deadline = Instant::now() + WAIT;
    while f.proxy.in_flight() == 0 {
        assert!(Instant::now() < deadline, "no call reached the proxy");
        assert!(matches!(exec.child.try_wait(), Ok(None)), "exec exited");
        std::thread::sleep(Duration::from_millis(20));
    }
    exec.signal("TERM");
    let (code, log, dir) = exec.wait();
    assert_eq!(code, 143, "{log}");
    assert!(!dir.path().join("started").exists(), "the program ran");
    assert!(log.contains("SIGTERM before /bin/sh started"), "{log}");
    f.proxy.set_fault(serde_json::json!({"fault": "none"}));
}
