//! `render:`: files kept written with secrets, against moto and the real
//! binary: written at start, rewritten on a rotation only when the bytes
//! change, atomically, never through a symlink, kept as they were when
//! AWS or a key fails, and `/readyz` waits for them.

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use serde_json::json;

use crate::support::*;

/// A directory only this user can write, as the agent requires.
fn private_dir() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o700)).unwrap();
    dir
}

fn read(path: &Path) -> Option<String> {
    std::fs::read_to_string(path).ok()
}

/// Lines in the counter file an `on-change` appends to.
fn runs(counter: &Path) -> usize {
    read(counter).map_or(0, |t| t.lines().count())
}

/// `on-change` that appends a line to `counter`, through a shell named
/// explicitly (the agent runs argv without one).
fn count_into(counter: &Path) -> Vec<String> {
    vec![
        "/bin/sh".into(),
        "-c".into(),
        format!("echo run >> '{}'", counter.display()),
    ]
}

fn argv(v: &[String]) -> Vec<&str> {
    v.iter().map(String::as_str).collect()
}

async fn wait_for_file(path: &Path, want: &str) -> bool {
    eventually(Duration::from_secs(10), async || {
        read(path).as_deref() == Some(want)
    })
    .await
}

async fn ready(agent: &Agent) -> bool {
    eventually(Duration::from_secs(10), async || {
        get(&agent.url("/readyz")).await.status == 200
    })
    .await
}

fn metric(m: &std::collections::HashMap<String, f64>, key: &str) -> f64 {
    m.get(key).copied().unwrap_or(0.0)
}

/// A rotation event naming `arns`, as EventBridge delivers it.
fn rotation_event(arns: &[&str]) -> String {
    json!({
        "version": "0",
        "detail-type": "AWS API Call via CloudTrail",
        "source": "aws.secretsmanager",
        "region": REGION,
        "resources": arns,
        "detail": {"eventName": "PutSecretValue", "eventSource": "secretsmanager.amazonaws.com",
                   "requestParameters": {}}
    })
    .to_string()
}

#[tokio::test]
async fn a_file_is_written_at_start_with_mode_0600_and_readyz_waits_for_it() {
    let f = Fixture::new();
    let secret = f.secret(
        "render-start",
        r#"{"username":"app","password":"hunter2-start"}"#,
    );
    let dir = private_dir();
    let path = dir.path().join("db-password");
    // AWS answers slowly: the agent answers before the file is written.
    f.proxy
        .set_fault(json!({"fault": "delay", "delay_ms": 1500}));
    let agent = Agent::start(
        &f.config()
            .resource("db", &secret.arn)
            .render(Render::resource(&path, "db").key("password")),
        &[],
    );
    let r = get(&agent.url("/readyz")).await;
    assert_eq!(r.status, 503, "{}", r.text());
    let missing = r.json()["missing"].to_string();
    assert!(
        missing.contains("render: 1 of 1 file(s) not written yet"),
        "{missing}"
    );
    assert!(
        !missing.contains("db-password"),
        "no path for anyone: {missing}"
    );
    assert!(ready(&agent).await, "{}", agent.log());
    // Ready means written.
    assert_eq!(read(&path).as_deref(), Some("hunter2-start"));
    let meta = std::fs::metadata(&path).unwrap();
    assert_eq!(meta.mode() & 0o7777, 0o600);
    assert!(meta.is_file());
    let m = metrics(&agent).await;
    assert_eq!(metric(&m, "secret_agent_render_writes_total{}"), 1.0);
    assert!(!agent.log().contains("hunter2-start"), "{}", agent.log());
}

#[tokio::test]
async fn a_template_with_two_keys_and_a_reload_that_adds_a_file() {
    let f = Fixture::new();
    let secret = f.secret(
        "render-template",
        r#"{"username":"app-user","password":"pw-template"}"#,
    );
    let token = f.secret("render-token", "plain-token");
    let dir = private_dir();
    let env = dir.path().join("db.env");
    let template =
        "DB_USER={{ secret(\"db\").username }}\nDB_PASSWORD={{ secret(\"db\").password }}\n";
    let config = f
        .config()
        .resource("db", &secret.arn)
        .resource("token", &token.arn)
        .render(Render::template(&env, template).mode("0640"));
    let agent = Agent::start(&config, &[]);
    assert!(
        wait_for_file(&env, "DB_USER=app-user\nDB_PASSWORD=pw-template\n").await,
        "{}",
        agent.log()
    );
    assert_eq!(std::fs::metadata(&env).unwrap().mode() & 0o7777, 0o640);

    // SIGHUP: a new entry is written, the unchanged one is left alone.
    let inode = std::fs::metadata(&env).unwrap().ino();
    let added = dir.path().join("token");
    agent.reload(&config.clone().render(Render::resource(&added, "token")));
    assert!(
        wait_for_file(&added, "plain-token").await,
        "{}",
        agent.log()
    );
    assert_eq!(std::fs::metadata(&env).unwrap().ino(), inode);
    assert!(!agent.log().contains("pw-template"));
}

#[tokio::test]
async fn a_rotation_rewrites_the_file_and_runs_on_change_once() {
    let f = Fixture::new();
    let db = f.secret("render-rot-db", r#"{"password":"p1"}"#);
    let api = f.secret("render-rot-api", "k1");
    let marker = f.secret("render-rot-marker", "m1");
    let queue = f.world.call(
        "sqs",
        REGION,
        "create_queue",
        json!({"QueueName": unique("render-events")}),
    )["QueueUrl"]
        .as_str()
        .unwrap()
        .to_owned();
    let dir = private_dir();
    let (path, counter) = (dir.path().join("app.conf"), dir.path().join("runs"));
    let (marked, marker_runs) = (dir.path().join("marker"), dir.path().join("marker-runs"));
    let agent = Agent::start(
        &f.config()
            .resource("db", &db.arn)
            .resource("api", &api.arn)
            .resource("marker", &marker.arn)
            .events(&queue, &f.world.moto)
            .cache(|c| c.ttl("1h"))
            .render(
                Render::template(
                    &path,
                    "password={{ secret('db').password }}\napi={{ secret('api') }}\n",
                )
                .on_change(&argv(&count_into(&counter))),
            )
            .render(
                Render::resource(&marked, "marker").on_change(&argv(&count_into(&marker_runs))),
            ),
        &[],
    );
    assert!(wait_for_file(&path, "password=p1\napi=k1\n").await);
    // Written at start (the file was not there): on-change ran once.
    assert!(
        eventually(Duration::from_secs(10), async || runs(&counter) == 1).await,
        "{}",
        agent.log()
    );

    // Both secrets rotate; one event names both: one rewrite, one run.
    f.world
        .put_secret_value(REGION, &db.arn, r#"{"password":"p2"}"#);
    f.world.put_secret_value(REGION, &api.arn, "k2");
    let sent = std::time::Instant::now();
    f.world.call(
        "sqs",
        REGION,
        "send_message",
        json!({"QueueUrl": queue, "MessageBody": rotation_event(&[&db.arn, &api.arn])}),
    );
    assert!(
        wait_for_file(&path, "password=p2\napi=k2\n").await,
        "{}",
        agent.log()
    );
    eprintln!("event to file rewritten: {:?}", sent.elapsed());
    assert!(eventually(Duration::from_secs(10), async || runs(&counter) == 2).await);

    // A marker: a later change of another file, and its command run.
    assert!(eventually(Duration::from_secs(10), async || runs(&marker_runs) == 1).await);
    f.world.put_secret_value(REGION, &marker.arn, "m2");
    get(&agent.url("/secrets/marker?refresh=true")).await;
    assert!(wait_for_file(&marked, "m2").await);
    assert!(eventually(Duration::from_secs(10), async || runs(&marker_runs) == 2).await);
    assert_eq!(
        runs(&counter),
        2,
        "one run for the rotation\n{}",
        agent.log()
    );
    let m = metrics(&agent).await;
    // Two files at start, one rewrite each since.
    assert_eq!(metric(&m, "secret_agent_render_writes_total{}"), 4.0);
    assert!(!agent.log().contains("password=p2"), "{}", agent.log());
}

#[tokio::test]
async fn rendered_resources_are_kept_fresh_without_any_reader() {
    let f = Fixture::new();
    let secret = f.secret("render-fresh", "first");
    let dir = private_dir();
    let path = dir.path().join("fresh");
    let started = std::time::Instant::now();
    let agent = Agent::start(
        &f.config()
            .resource("s", &secret.arn)
            .cache(|c| c.ttl("4s"))
            .render(Render::resource(&path, "s")),
        &[],
    );
    assert!(wait_for_file(&path, "first").await);
    // No HTTP reader, no event: the refresh ahead brings the new value.
    f.world.put_secret_value(REGION, &secret.arn, "second");
    assert!(
        eventually(Duration::from_secs(15), async || read(&path).as_deref()
            == Some("second"))
        .await,
        "{}",
        agent.log()
    );
    // About one call per TTL, not one per once-a-second rendering.
    let calls = f.proxy.gets(&secret.name) + f.proxy.batch_gets(&secret.name);
    let bound = 2 + started.elapsed().as_secs() as usize / 2;
    assert!(calls <= bound, "{calls} calls, at most {bound}");
    let m = metrics(&agent).await;
    assert_eq!(
        m.get("secret_agent_requests_total{route=secrets,status=200}"),
        Some(&0.0),
        "no HTTP read"
    );
}

#[tokio::test]
async fn a_refresh_that_changes_nothing_rewrites_nothing_and_runs_nothing() {
    let f = Fixture::new();
    let same = f.secret("render-same", "unchanged");
    let marker = f.secret("render-same-marker", "m1");
    let dir = private_dir();
    let (path, counter) = (dir.path().join("same"), dir.path().join("runs"));
    let marked = dir.path().join("marker");
    let config = f
        .config()
        .resource("same", &same.arn)
        .resource("marker", &marker.arn)
        .cache(|c| c.ttl("1h"))
        .render(Render::resource(&path, "same").on_change(&argv(&count_into(&counter))))
        .render(Render::resource(&marked, "marker"));
    let agent = Agent::start(&config, &[]);
    assert!(wait_for_file(&path, "unchanged").await);
    assert!(eventually(Duration::from_secs(10), async || runs(&counter) == 1).await);
    let before = std::fs::metadata(&path).unwrap();
    let gets = f.proxy.gets(&same.name);

    // A forced refresh brings the same bytes.
    assert_eq!(
        get(&agent.url("/secrets/same?refresh=true")).await.text(),
        "unchanged"
    );
    assert_eq!(f.proxy.gets(&same.name), gets + 1, "AWS was asked");
    // A later change elsewhere is written: the round that followed is done.
    f.world.put_secret_value(REGION, &marker.arn, "m2");
    get(&agent.url("/secrets/marker?refresh=true")).await;
    assert!(wait_for_file(&marked, "m2").await);
    let after = std::fs::metadata(&path).unwrap();
    assert_eq!(
        (after.ino(), after.mtime(), after.mtime_nsec()),
        (before.ino(), before.mtime(), before.mtime_nsec())
    );
    assert_eq!(runs(&counter), 1);
    drop(agent);

    // Started again on files that already hold the bytes: nothing is
    // written, nothing runs.
    let agent = Agent::start(&config, &[]);
    assert!(ready(&agent).await, "{}", agent.log());
    let log = agent.log();
    assert!(!log.contains(": written"), "{log}");
    let again = std::fs::metadata(&path).unwrap();
    assert_eq!(again.ino(), before.ino());
    assert_eq!(runs(&counter), 1);
}

#[tokio::test]
async fn concurrent_readers_never_see_an_empty_or_partial_file() {
    let f = Fixture::new();
    let value = |c: char| c.to_string().repeat(40_000);
    let secret = f.secret("render-big", &value('a'));
    let dir = private_dir();
    let path = dir.path().join("big");
    let agent = Agent::start(
        &f.config()
            .resource("big", &secret.arn)
            .render(Render::resource(&path, "big")),
        &[],
    );
    assert!(wait_for_file(&path, &value('a')).await);
    let stop = Arc::new(AtomicBool::new(false));
    let reader = {
        let (stop, path) = (Arc::clone(&stop), path.clone());
        let allowed: Vec<String> = "abcdef".chars().map(value).collect();
        std::thread::spawn(move || {
            let mut reads = 0u64;
            while !stop.load(Ordering::Relaxed) {
                let seen = std::fs::read_to_string(&path).expect("the file is always there");
                assert!(
                    allowed.contains(&seen),
                    "read {} bytes that are no whole version",
                    seen.len()
                );
                reads += 1;
            }
            reads
        })
    };
    for c in "bcdef".chars() {
        f.world.put_secret_value(REGION, &secret.arn, &value(c));
        // Forced refreshes past a burst of 3 wait for min-refresh-interval.
        let rewritten = eventually(Duration::from_secs(10), async || {
            get(&agent.url("/secrets/big?refresh=true")).await;
            read(&path) == Some(value(c))
        })
        .await;
        assert!(rewritten, "{}", agent.log());
    }
    stop.store(true, Ordering::Relaxed);
    let reads = reader.join().expect("no partial read");
    assert!(reads > 10, "{reads}");
    let leftovers: Vec<PathBuf> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p != &path)
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
}

#[tokio::test]
async fn a_symlink_at_the_destination_is_refused_and_its_target_left_unchanged() {
    let f = Fixture::new();
    let secret = f.secret("render-link", "secret-through-link");
    let dir = private_dir();
    let target = dir.path().join("precious");
    std::fs::write(&target, "precious bytes").unwrap();
    let planted = dir.path().join("planted");
    std::os::unix::fs::symlink(&target, &planted).unwrap();
    let later = dir.path().join("later");
    let agent = Agent::start(
        &f.config()
            .resource("s", &secret.arn)
            .render(Render::resource(&planted, "s"))
            .render(Render::resource(&later, "s")),
        &[],
    );
    assert!(wait_for_file(&later, "secret-through-link").await);
    assert!(
        agent.wait_for_log(
            "is a symbolic link, not a regular file",
            Duration::from_secs(10)
        ),
        "{}",
        agent.log()
    );
    let r = get(&agent.url("/readyz")).await;
    assert_eq!(r.status, 503);
    assert!(r.text().contains("render: 1 of 2"), "{}", r.text());
    // A link planted over a file already written: refused at the next change.
    std::fs::remove_file(&later).unwrap();
    std::os::unix::fs::symlink(&target, &later).unwrap();
    f.world.put_secret_value(REGION, &secret.arn, "rotated");
    get(&agent.url("/secrets/s?refresh=true")).await;
    let m = eventually(Duration::from_secs(10), async || {
        metric(
            &metrics(&agent).await,
            "secret_agent_render_failures_total{reason=write}",
        ) >= 2.0
    })
    .await;
    assert!(m, "{}", agent.log());
    assert_eq!(read(&target).as_deref(), Some("precious bytes"));
    assert!(std::fs::symlink_metadata(&planted).unwrap().is_symlink());
    assert!(std::fs::symlink_metadata(&later).unwrap().is_symlink());
    // Logged once per file, not at each retry.
    let log = agent.log();
    let planted_lines = log
        .lines()
        .filter(|l| l.contains("planted") && l.contains("symbolic link"))
        .count();
    assert_eq!(planted_lines, 1, "{log}");
}

#[tokio::test]
async fn a_missing_key_writes_nothing_and_keeps_the_old_file() {
    let f = Fixture::new();
    let secret = f.secret("render-key", r#"{"password":"kept"}"#);
    let dir = private_dir();
    let path = dir.path().join("password");
    let never = dir.path().join("never");
    let agent = Agent::start(
        &f.config()
            .resource("db", &secret.arn)
            .cache(|c| c.ttl("1h"))
            .render(Render::resource(&path, "db").key("password"))
            .render(Render::template(&never, "{{ secret('db').nope }}")),
        &[],
    );
    assert!(wait_for_file(&path, "kept").await);
    assert!(agent.wait_for_log("undefined value at line 1", Duration::from_secs(10)));
    assert!(!never.exists(), "a template that fails writes nothing");
    // The password key goes away in a new version.
    f.world
        .put_secret_value(REGION, &secret.arn, r#"{"user":"only-user"}"#);
    get(&agent.url("/secrets/db?refresh=true")).await;
    assert!(
        agent.wait_for_log("has no key `password`", Duration::from_secs(10)),
        "{}",
        agent.log()
    );
    assert_eq!(read(&path).as_deref(), Some("kept"));
    let m = metrics(&agent).await;
    assert_eq!(
        metric(&m, "secret_agent_render_failures_total{reason=template}"),
        2.0,
        "each file once"
    );
    assert!(!agent.log().contains("only-user"));
}

#[tokio::test]
async fn aws_down_keeps_the_last_good_file() {
    let f = Fixture::new();
    let secret = f.secret("render-down", "last-good");
    let dir = private_dir();
    let path = dir.path().join("down");
    let agent = Agent::start(
        &f.config()
            .resource("s", &secret.arn)
            .cache(|c| c.ttl("1s").refresh_ahead("0s").max_stale("2s"))
            .render(Render::resource(&path, "s")),
        &[],
    );
    assert!(wait_for_file(&path, "last-good").await);
    f.proxy.set_fault(json!({"fault": "status", "status": 503}));
    f.world.put_secret_value(REGION, &secret.arn, "unreachable");
    // Past ttl + max-stale the read fails: logged once, the file kept.
    assert!(
        agent.wait_for_log("failed (upstream_", Duration::from_secs(20)),
        "{}",
        agent.log()
    );
    let calls = f.proxy.gets(&secret.name);
    assert!(
        eventually(Duration::from_secs(20), async || f.proxy.gets(&secret.name)
            >= calls + 3)
        .await,
        "retried"
    );
    assert_eq!(read(&path).as_deref(), Some("last-good"));
    let log = agent.log();
    let lines = log
        .lines()
        .filter(|l| l.contains("render ") && l.contains("left as it was"))
        .count();
    assert_eq!(lines, 1, "{log}");
    let m = metrics(&agent).await;
    assert_eq!(
        metric(&m, "secret_agent_render_failures_total{reason=upstream}"),
        1.0
    );
    // AWS answers again: the new value is written.
    f.proxy.set_fault(json!({"fault": "none"}));
    assert!(wait_for_file(&path, "unreachable").await, "{}", agent.log());
    assert!(agent.wait_for_log("up to date again", Duration::from_secs(10)));
}

#[test]
fn check_validates_the_render_section() {
    let dir = tempfile::tempdir().unwrap();
    let base = "service:\n  tcp:\n    endpoint: 127.0.0.1:0\nsecret-manager:\n  aws:\n    region: us-west-1\n    resources:\n      database: arn:aws:secretsmanager:us-west-1:123456789012:secret:db\n";
    let cases = [
        (
            "render:\n  - path: /run/x\n    resource: database\n    mode: \"0644\"\n",
            "render[0].mode: 0644 gives others access",
        ),
        (
            "render:\n  - path: run/x\n    resource: database\n",
            "render[0].path: `run/x` is not an absolute path",
        ),
        (
            "render:\n  - path: /run/x\n    template: \"{{ secret('database') \"\n",
            "render[0].template: syntax error",
        ),
        (
            "render:\n  - path: /run/x\n    template: \"{{ secret('databse').password }}\"\n",
            "`databse` is not a configured resource nor under a pattern (did you mean `database`?)",
        ),
        (
            "render:\n  - path: /run/x\n    resource: database\n    on-chang: [/bin/true]\n",
            "did you mean `on-change`?",
        ),
        (
            "render:\n  - path: /run/x\n    resource: database\n    template: a\n",
            "give exactly one of resource and template",
        ),
    ];
    for (i, (render, want)) in cases.iter().enumerate() {
        let path = dir.path().join(format!("bad{i}.yaml"));
        std::fs::write(&path, format!("{base}{render}")).unwrap();
        let (code, out, err) = run_cli(&["--check", "-c", path.to_str().unwrap()]);
        assert_eq!(code, 2, "{render}: {out}{err}");
        assert!(err.contains(want), "want {want:?} in {err:?}");
    }
    let good = dir.path().join("good.yaml");
    std::fs::write(
        &good,
        format!(
            "{base}render:\n  - path: /run/x\n    resource: database\n    key: password\n    on-change: [/usr/bin/systemctl, reload, nginx]\n"
        ),
    )
    .unwrap();
    let (code, out, err) = run_cli(&["--check", "-c", good.to_str().unwrap()]);
    assert_eq!(code, 0, "{err}");
    assert!(
        out.contains("render: /run/x from key password of resource database, mode 0600, on-change /usr/bin/systemctl (timeout 30s)"),
        "{out}"
    );
}
