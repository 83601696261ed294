//! Files that are not what the config says: a FIFO or `/dev/zero` given as
//! the config or a token file, a huge token file, a huge shared credentials
//! file, a config saved with a byte order mark. Each is refused at once
//! with an error that names the file and the key, in bounded memory; a
//! running agent keeps its config and still answers SIGHUP and SIGTERM.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::time::Duration;

use crate::support::*;

/// Only catches a hang: each refusal takes milliseconds.
const AT_ONCE: Duration = Duration::from_secs(20);

fn mkfifo(path: &Path) {
    let made = std::process::Command::new("mkfifo")
        .arg(path)
        .status()
        .unwrap();
    assert!(made.success(), "mkfifo {}", path.display());
}

fn write_token(path: &Path, token: &str) {
    let _ = std::fs::remove_file(path);
    std::fs::write(path, format!("{token}\n")).unwrap();
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).unwrap();
}

/// A config with one resource, valid without AWS.
fn offline_config() -> AgentConfig {
    AgentConfig::new().test_keys().resource(
        "s",
        "arn:aws:secretsmanager:us-west-1:123456789012:secret:s",
    )
}

/// `--check -c <config>` (and more `args`) within [`AT_ONCE`]: exit code and stderr.
fn check(args: &[&str]) -> (i32, String) {
    let (code, _, err) = run_cli_within(args, &[], AT_ONCE)
        .unwrap_or_else(|| panic!("secret-agent {args:?} still runs after {AT_ONCE:?}"));
    (code, err)
}

#[test]
fn check_refuses_a_device_or_a_fifo_as_a_token_file_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let fifo = dir.path().join("token.fifo");
    mkfifo(&fifo);
    let config = dir.path().join("config.yaml");
    for (token, what) in [
        (Path::new("/dev/zero"), "a character device"),
        (fifo.as_path(), "a named pipe (FIFO)"),
    ] {
        std::fs::write(&config, offline_config().token_file(token, &["*"]).yaml()).unwrap();
        let (code, err) = check(&["--check", "-c", config.to_str().unwrap()]);
        assert_eq!(code, 2, "{err}");
        assert!(
            err.contains(&format!(
                "auth.tokens[0].token-file: cannot read {}: it is {what}, not a regular file",
                token.display()
            )),
            "{err}"
        );
    }
}

#[test]
fn check_refuses_a_fifo_as_the_config_at_once() {
    let dir = tempfile::tempdir().unwrap();
    for name in ["config.yaml", "agent.toml"] {
        let fifo = dir.path().join(name);
        mkfifo(&fifo);
        let shown = fifo.display().to_string();
        let expected = format!(
            "{shown}: cannot read the config file: it is a named pipe (FIFO), not a regular file"
        );
        let (code, err) = check(&["--check", "-c", &shown]);
        assert_eq!(code, 2, "{err}");
        assert!(err.contains(&expected), "{err}");
        if name.ends_with(".toml") {
            let (code, err) = check(&["convert-aws-agent-config", &shown]);
            assert_eq!(code, 2, "{err}");
            assert!(err.contains(&expected), "{err}");
        }
    }
    let (code, err) = check(&["--check", "-c", "/dev/zero"]);
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains("/dev/zero: cannot read the config file: it is a character device"),
        "{err}"
    );
}

/// A running agent whose token file becomes a 300 MB sparse file, then a
/// FIFO: each SIGHUP is refused with a clear line, the old tokens keep
/// working, memory stays small; a fixed file then applies, and SIGTERM
/// stops it within its shutdown-timeout.
#[tokio::test]
async fn a_reload_refuses_a_huge_or_fifo_token_file_and_keeps_serving() {
    let world = World::shared();
    let value = format!("value-{}", unique("hf"));
    let arn = world.secret("hostile-token", &value).arn;
    let dir = tempfile::tempdir().unwrap();
    let token_file = dir.path().join("app.token");
    write_token(&token_file, "tok-old-8c1f0e");
    let config = world
        .config()
        .resource("s", &arn)
        .token_file(&token_file, &["*"])
        .shutdown_timeout("3s");
    let mut agent = Agent::start(&config, &[]);
    let read = async |token: &str| {
        get_with(
            &agent.url("/secrets/s"),
            &[("Authorization", &format!("Bearer {token}"))],
        )
        .await
    };
    assert_eq!(read("tok-old-8c1f0e").await.status, 200);
    let rss_before = agent.rss_kib().unwrap();

    let refused = "reload refused, the running config stays in effect";
    std::fs::remove_file(&token_file).unwrap();
    std::fs::File::create(&token_file)
        .unwrap()
        .set_len(300 * 1024 * 1024)
        .unwrap();
    agent.signal("HUP");
    let line = format!(
        "auth.tokens[0].token-file: cannot read {}: it is larger than 65536 bytes",
        token_file.display()
    );
    assert!(agent.wait_for_log(&line, AT_ONCE), "{}", agent.log());
    assert!(agent.log().contains(refused), "{}", agent.log());
    let r = read("tok-old-8c1f0e").await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.text(), value);
    // Loose: the file is 300 MB; the agent must not have read it.
    let rss = agent.rss_kib().unwrap();
    assert!(
        rss < rss_before + 100 * 1024,
        "{rss_before} KiB -> {rss} KiB"
    );

    std::fs::remove_file(&token_file).unwrap();
    mkfifo(&token_file);
    agent.signal("HUP");
    let line = format!(
        "cannot read {}: it is a named pipe (FIFO), not a regular file",
        token_file.display()
    );
    assert!(agent.wait_for_log(&line, AT_ONCE), "{}", agent.log());
    assert_eq!(read("tok-old-8c1f0e").await.status, 200);

    // A third SIGHUP, with a good file, applies.
    write_token(&token_file, "tok-new-41d7a2");
    agent.signal("HUP");
    assert!(agent.wait_for_log("reloaded ", AT_ONCE), "{}", agent.log());
    assert_eq!(read("tok-new-41d7a2").await.status, 200);
    assert_eq!(read("tok-old-8c1f0e").await.status, 401);
    assert_eq!(agent.log().matches(refused).count(), 2, "{}", agent.log());
    for token in ["tok-old-8c1f0e", "tok-new-41d7a2"] {
        assert!(!agent.log().contains(token), "a token in the log");
    }

    agent.signal("TERM");
    let exit = agent.wait_exit(Duration::from_secs(3 + 7));
    assert!(
        exit.is_some_and(|e| e.success()),
        "{exit:?}\n{}",
        agent.log()
    );
}

/// A secret behind a recording proxy, read with credentials from a shared
/// file only.
struct SharedFile {
    fixture: Fixture,
    arn: String,
    value: String,
    dir: tempfile::TempDir,
}

impl SharedFile {
    fn new(prefix: &str) -> SharedFile {
        let fixture = Fixture::new();
        let value = format!("value-{}", unique(prefix));
        let arn = fixture.secret(prefix, &value).arn;
        SharedFile {
            fixture,
            arn,
            value,
            dir: tempfile::tempdir().unwrap(),
        }
    }

    fn path(&self) -> std::path::PathBuf {
        self.dir.path().join("credentials")
    }

    /// Writes the file anew (a new inode) with `key_id`, and `padding`
    /// comment bytes after it.
    fn write(&self, key_id: &str, padding: usize) {
        let mut text = format!(
            "[default]\naws_access_key_id = {key_id}\naws_secret_access_key = shared-secret-9d2e\n"
        );
        let line = format!("# {}\n", "x".repeat(77));
        while text.len() < padding {
            text.push_str(&line);
        }
        let next = self.dir.path().join("credentials.new");
        std::fs::write(&next, text).unwrap();
        std::fs::rename(&next, self.path()).unwrap();
    }

    fn start(&self) -> Agent {
        let config = AgentConfig::new()
            .endpoint(&self.fixture.proxy.url)
            .resource("s", &self.arn)
            .cache(|c| c.ttl("0s"));
        let file = self.path().display().to_string();
        // /dev/null, the usual "no config file", is an empty file, not a device to refuse.
        Agent::start(
            &config,
            &[
                ("AWS_SHARED_CREDENTIALS_FILE", &file),
                ("AWS_CONFIG_FILE", "/dev/null"),
            ],
        )
    }

    fn last_signer(&self) -> Option<String> {
        let calls = self.fixture.proxy.calls();
        let call = calls.iter().rev().find(|c| c.action == "GetSecretValue")?;
        call.access_key_id.clone()
    }
}

#[tokio::test]
async fn a_huge_shared_credentials_file_is_refused_by_name() {
    let s = SharedFile::new("hostile-shared-big");
    s.write("AKIAHOSTILEBIG000001", 50 * 1024 * 1024);
    let agent = s.start();
    let r = get(&agent.url("/secrets/s")).await;
    assert_ne!(r.status, 200, "{}", r.text());
    let line = format!(
        "{} (the shared AWS credentials file) is refused: it is larger than 1048576 bytes",
        s.path().display()
    );
    assert!(agent.wait_for_log(&line, AT_ONCE), "{}", agent.log());
    assert!(
        !agent.log().contains("shared-secret-9d2e"),
        "a secret in the log"
    );
    assert!(
        !agent.log().contains("xxxxxxxx"),
        "the file's content in the log"
    );
}

/// The file is read once while it stays the same, however many calls
/// sign with it, and again at the next call once it is rewritten.
#[tokio::test]
async fn the_shared_file_is_reread_only_when_it_changes() {
    let s = SharedFile::new("hostile-shared-stamp");
    s.write("AKIAHOSTILESTAMP0001", 900 * 1024);
    let agent = s.start();
    let reads = || {
        agent
            .log()
            .matches("reading the shared AWS credentials and config files")
            .count()
    };
    let answers = get_at_once(&agent.url("/secrets/s"), 20).await;
    for (status, text) in &answers {
        assert_eq!((*status, text.as_str()), (200, s.value.as_str()));
    }
    assert_eq!(s.last_signer().as_deref(), Some("AKIAHOSTILESTAMP0001"));
    assert_eq!(reads(), 1, "{}", agent.log());

    s.write("AKIAHOSTILESTAMP0002", 0);
    let r = get(&agent.url("/secrets/s")).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(s.last_signer().as_deref(), Some("AKIAHOSTILESTAMP0002"));
    assert_eq!(reads(), 2, "{}", agent.log());
    assert!(agent.log().contains("re-reading it"), "{}", agent.log());
}

#[tokio::test]
async fn a_config_with_a_byte_order_mark_is_accepted() {
    let world = World::shared();
    let value = format!("value-{}", unique("bom"));
    let arn = world.secret("hostile-bom", &value).arn;
    let config = world.config().resource("s", &arn);
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bom.yaml");
    std::fs::write(&path, format!("\u{feff}{}", config.yaml())).unwrap();
    let shown = path.display().to_string();
    let (code, err) = check(&["--check", "-c", &shown]);
    assert_eq!(code, 0, "{err}");

    // Started on it, and reloaded onto it.
    let (agent, _) = Agent::try_start_with_args(&["--config", &shown], &[], dir)
        .unwrap_or_else(|log| panic!("did not start:\n{log}"));
    let r = get(&agent.url("/secrets/s")).await;
    assert_eq!((r.status, r.text()), (200, value.clone()));
    let agent = Agent::start(&config, &[]);
    std::fs::write(
        agent.config_path(),
        format!("\u{feff}{}", config.clone().resource("t", &arn).yaml()),
    )
    .unwrap();
    agent.signal("HUP");
    assert!(agent.wait_for_log("reloaded ", AT_ONCE), "{}", agent.log());
    let r = get(&agent.url("/secrets/t")).await;
    assert_eq!((r.status, r.text()), (200, value));
}
