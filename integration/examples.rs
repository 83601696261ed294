//! The deployment files and client snippets in `examples/` (and the sample
//! configs in `config/`). Docker, systemd, Kubernetes and Lambda cannot run
//! here, so these tests keep the files honest: every YAML and JSON file
//! parses, every agent config passes `--check`, the paths the files refer to
//! exist, every shell script passes `bash -n`, and the example clients send
//! the client token.

use std::io::{Read, Write};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, Mutex};

use serde::Deserialize;
use serde_yaml::Value as Yaml;

use crate::support::*;

/// Every file under `examples/` and `config/` whose name ends in one of
/// `extensions`, sorted.
fn example_files(extensions: &[&str]) -> Vec<PathBuf> {
    fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                if path.file_name() != Some("__pycache__".as_ref()) {
                    walk(&path, out);
                }
            } else {
                out.push(path);
            }
        }
    }
    let mut files = Vec::new();
    walk(&root().join("examples"), &mut files);
    walk(&root().join("config"), &mut files);
    files.retain(|p| {
        p.extension()
            .is_some_and(|e| extensions.iter().any(|x| e == *x))
    });
    files.sort();
    files
}

/// `path` relative to the repository root, for messages.
fn rel(path: &Path) -> String {
    path.strip_prefix(root())
        .unwrap_or(path)
        .display()
        .to_string()
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", rel(path)))
}

/// Every document of a YAML file (`---` separates them).
fn yaml_documents(path: &Path) -> Vec<Yaml> {
    serde_yaml::Deserializer::from_str(&read(path))
        .map(|doc| Yaml::deserialize(doc).unwrap_or_else(|e| panic!("{}: {e}", rel(path))))
        .collect()
}

#[test]
fn every_json_and_yaml_file_parses() {
    let json = example_files(&["json"]);
    let yaml = example_files(&["yaml", "yml"]);
    // The walk found the files at all: 3 IAM policies; 5 sample configs, 4
    // example configs, the compose file and the Kubernetes manifests.
    assert!(json.len() >= 3, "{json:?}");
    assert!(yaml.len() >= 10, "{yaml:?}");
    for path in &json {
        serde_json::from_str::<serde_json::Value>(&read(path))
            .unwrap_or_else(|e| panic!("{}: {e}", rel(path)));
    }
    for path in &yaml {
        let docs = yaml_documents(path);
        assert!(!docs.is_empty(), "{}: no YAML document", rel(path));
        for doc in &docs {
            assert!(
                doc.is_mapping(),
                "{}: a document is not a mapping",
                rel(path)
            );
        }
    }

    let kinds: Vec<_> = yaml_documents(&root().join("examples/kubernetes/pod.yaml"))
        .iter()
        .map(|doc| {
            assert!(doc["apiVersion"].is_string(), "{doc:?}");
            doc["kind"].as_str().unwrap().to_owned()
        })
        .collect();
    assert_eq!(kinds, ["ServiceAccount", "ConfigMap", "Secret", "Pod"]);

    for path in example_files(&["json"])
        .iter()
        .filter(|p| rel(p).starts_with("examples/iam/"))
    {
        let policy: serde_json::Value = serde_json::from_str(&read(path)).unwrap();
        assert_eq!(policy["Version"], "2012-10-17", "{}", rel(path));
        let text = policy.to_string();
        assert!(
            !text.contains("DescribeSecret"),
            "{}: more than needed",
            rel(path)
        );
        assert!(
            !text.contains(r#""Action":"*""#),
            "{}: more than needed",
            rel(path)
        );
    }
}

/// The agent configs in `examples/`: each `config.yaml`, and the one in the
/// Kubernetes ConfigMap (written to `dir`). Returns (label, path).
fn agent_configs(dir: &Path) -> Vec<(String, PathBuf)> {
    let mut configs: Vec<_> = example_files(&["yaml"])
        .into_iter()
        .filter(|p| rel(p).starts_with("examples/") && p.ends_with("config.yaml"))
        .map(|p| (rel(&p), p))
        .collect();
    for doc in yaml_documents(&root().join("examples/kubernetes/pod.yaml")) {
        if doc["kind"] == "ConfigMap" {
            let name = doc["metadata"]["name"].as_str().unwrap();
            let path = dir.join(format!("configmap-{name}.yaml"));
            std::fs::write(&path, doc["data"]["config.yaml"].as_str().unwrap()).unwrap();
            configs.push((
                format!("examples/kubernetes/pod.yaml (ConfigMap {name})"),
                path,
            ));
        }
    }
    configs
}

/// `--check` with the client token variable set, as a deployment sets it.
fn check(path: &Path) -> (i32, String, String) {
    run_cli_with_env(
        &["--check", "--config", path.to_str().unwrap()],
        &[("SECRET_AGENT_TOKEN", "token-for-check")],
    )
}

#[test]
fn every_agent_config_in_examples_passes_check() {
    let dir = tempfile::tempdir().unwrap();
    // Token files are read by --check; stand in for the ones a deployment
    // creates at boot (e.g. the systemd token unit's).
    let token = dir.path().join("app.token");
    std::fs::write(&token, "token-for-check\n").unwrap();
    let configs = agent_configs(dir.path());
    assert!(configs.len() >= 4, "{configs:?}");
    for (label, path) in &configs {
        let mut text = read(path);
        if text.contains("token-file:") {
            text = text
                .lines()
                .map(|line| match line.split_once("token-file:") {
                    Some((indent, _)) => format!("{indent}token-file: {}", token.display()),
                    None => line.to_owned(),
                })
                .collect::<Vec<_>>()
                .join("\n");
        }
        let checked = dir.path().join("checked.yaml");
        std::fs::write(&checked, text).unwrap();
        let (code, out, err) = check(&checked);
        assert_eq!(code, 0, "{label}: {err}");
        assert!(
            out.contains("auth: 1 token(s)"),
            "{label} has no client token:\n{out}"
        );
        assert!(
            !out.contains("token-for-check"),
            "{label}: --check prints the token"
        );
    }
}

#[test]
fn deployment_files_refer_to_files_that_exist() {
    // The compose file's bind mounts, relative to its folder.
    let compose_dir = root().join("examples/docker");
    let compose = &yaml_documents(&compose_dir.join("docker-compose.yml"))[0];
    assert_eq!(compose["services"]["agent"]["network_mode"], "service:app");
    for service in compose["services"].as_mapping().unwrap().values() {
        for volume in service["volumes"].as_sequence().into_iter().flatten() {
            let source = volume.as_str().unwrap().split(':').next().unwrap();
            if source.starts_with('.') {
                assert!(
                    compose_dir.join(source).exists(),
                    "docker-compose.yml mounts {source}"
                );
            }
        }
    }
    let build = &compose["services"]["agent"]["build"];
    let context = compose_dir.join(build["context"].as_str().unwrap());
    assert!(
        context
            .join(build["dockerfile"].as_str().unwrap())
            .is_file()
    );

    // The Dockerfile's COPY sources, relative to the build context (the
    // repository root).
    let dockerfile = read(&root().join("examples/docker/Dockerfile"));
    for line in dockerfile
        .lines()
        .filter(|l| l.starts_with("COPY ") && !l.contains("--from"))
    {
        let words: Vec<_> = line.split_whitespace().skip(1).collect();
        for source in &words[..words.len() - 1] {
            assert!(root().join(source).exists(), "Dockerfile: {line}");
        }
    }
}

#[test]
fn every_shell_script_in_examples_passes_bash_n() {
    let scripts: Vec<_> = example_files(&["sh"]);
    assert!(scripts.len() >= 2, "{scripts:?}");
    for script in scripts {
        let out = Command::new("bash")
            .arg("-n")
            .arg(&script)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}: {}",
            rel(&script),
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

/// A tiny HTTP server that answers every request `200 ok` and keeps the
/// request heads, lower-cased. Returns its URL and the heads.
fn recording_server() -> (String, Arc<Mutex<Vec<String>>>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let heads = Arc::new(Mutex::new(Vec::new()));
    let seen = heads.clone();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            let mut head = Vec::new();
            let mut byte = [0u8];
            while !head.ends_with(b"\r\n\r\n") && stream.read(&mut byte).unwrap_or(0) == 1 {
                head.push(byte[0]);
            }
            seen.lock()
                .unwrap()
                .push(String::from_utf8_lossy(&head).to_lowercase());
            let _ = stream
                .write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok");
        }
    });
    (url, heads)
}

#[test]
fn example_clients_send_the_token_from_the_environment_or_a_file() {
    let (url, heads) = recording_server();
    let dir = tempfile::tempdir().unwrap();
    let token_file = dir.path().join("app.token");
    std::fs::write(&token_file, "file-token-5e1f\n").unwrap();
    let token_file = token_file.to_str().unwrap();

    let root = root();
    let py = root.join("examples/client.py");
    let sh = root.join("examples/curl.sh");
    let clients: [(&str, Vec<&str>); 3] = [
        ("python3", vec![py.to_str().unwrap()]),
        ("bash", vec![sh.to_str().unwrap()]),
        (rust_client().to_str().unwrap(), vec![]),
    ];
    let cases = [
        (vec![], None),
        (
            vec![("SECRET_AGENT_TOKEN", "env-token-9a7c")],
            Some("env-token-9a7c"),
        ),
        (
            vec![("SECRET_AGENT_TOKEN_FILE", token_file)],
            Some("file-token-5e1f"),
        ),
        (
            vec![
                ("SECRET_AGENT_TOKEN", "env-token-9a7c"),
                ("SECRET_AGENT_TOKEN_FILE", token_file),
            ],
            Some("env-token-9a7c"),
        ),
    ];
    for (program, args) in &clients {
        for (env, want) in &cases {
            heads.lock().unwrap().clear();
            let out = Command::new(program)
                .args(args)
                .arg("demo/db")
                .env("SECRET_AGENT_URL", &url)
                .env_remove("SECRET_AGENT_TOKEN")
                .env_remove("SECRET_AGENT_TOKEN_FILE")
                .envs(env.iter().copied())
                .output()
                .unwrap();
            let shown = format!("{program} {args:?} with {env:?}");
            assert!(
                out.status.success(),
                "{shown}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            assert_eq!(String::from_utf8_lossy(&out.stdout), "ok\n", "{shown}");
            let seen = heads.lock().unwrap();
            assert_eq!(seen.len(), 1, "{shown}: {seen:?}");
            assert!(
                seen[0].starts_with("get /secrets/demo/db "),
                "{shown}: {seen:?}"
            );
            let auth = seen[0]
                .lines()
                .find_map(|l| l.strip_prefix("authorization:"))
                .map(str::trim);
            let want = want.map(|t| format!("bearer {t}"));
            assert_eq!(auth, want.as_deref(), "{shown}");
        }
    }
}

/// `examples/lambda/extension.sh` against a double of the Lambda Extensions
/// API: it registers for INVOKE and SHUTDOWN, starts the agent with `-l`,
/// which serves nothing until the first INVOKE (no secret is fetched during
/// init, so a SnapStart snapshot holds none), and stops it on SHUTDOWN.
#[tokio::test]
async fn the_lambda_extension_serves_from_the_first_invoke_to_shutdown() {
    let f = Fixture::new();
    let secret = f.secret("lambda-ext", "from-the-extension");
    let port = free_port();
    let config = f
        .config()
        .tcp(&format!("127.0.0.1:{port}"))
        .resource("prod/db", &secret.arn)
        .token_env("SECRET_AGENT_TOKEN", &["*"]);
    let dir = tempfile::tempdir().unwrap();
    let config_path = dir.path().join("config.yaml");
    std::fs::write(&config_path, config.yaml()).unwrap();
    let api = f
        .world
        .cmd(serde_json::json!({"op": "start_extensions_api"}));
    let (api_id, api_url) = (api["id"].as_str().unwrap(), api["url"].as_str().unwrap());
    let state = || {
        f.world
            .cmd(serde_json::json!({"op": "extensions_state", "id": api_id}))
    };
    let push = |event: &str| {
        f.world
            .cmd(serde_json::json!({"op": "extensions_push", "id": api_id, "event_type": event}));
    };
    let agent_url = format!("http://127.0.0.1:{port}");
    let mut script = Command::new("bash")
        .arg(root().join("examples/lambda/extension.sh"))
        .env(
            "AWS_LAMBDA_RUNTIME_API",
            api_url.trim_start_matches("http://"),
        )
        .env("SECRET_AGENT_BIN", agent_binary())
        .env("SECRET_AGENT_CONFIG", &config_path)
        .env("SECRET_AGENT_URL", &agent_url)
        .env("SECRET_AGENT_TOKEN", "lambda-ext-token")
        .env("HOME", dir.path())
        .stdin(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let secret_url = format!("{agent_url}/secrets/prod/db");
    let read = || get_with(&secret_url, &[("Authorization", "Bearer lambda-ext-token")]);

    // Init ends with the first event/next: by then the agent answers, but
    // serves nothing and has fetched nothing.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(15);
    while state()["waiting"] != 1 {
        assert!(std::time::Instant::now() < deadline, "{}", state());
        assert!(script.try_wait().unwrap().is_none(), "the extension exited");
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    let registered = state()["registered"].clone();
    assert_eq!(registered[0]["name"], "extension.sh");
    assert_eq!(
        registered[0]["events"],
        serde_json::json!(["INVOKE", "SHUTDOWN"])
    );
    assert_eq!(read().await.status, 503);
    assert_eq!(f.proxy.gets(&secret.name), 0);

    // The first INVOKE: served from then on.
    push("INVOKE");
    assert!(
        eventually(std::time::Duration::from_secs(10), async || read()
            .await
            .status
            == 200)
        .await,
        "served after the first INVOKE"
    );
    assert_eq!(read().await.text(), "from-the-extension");
    push("INVOKE");
    assert_eq!(read().await.status, 200);

    // SHUTDOWN: the agent stops and the extension exits 0.
    push("SHUTDOWN");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    let status = loop {
        if let Some(status) = script.try_wait().unwrap() {
            break status;
        }
        if std::time::Instant::now() > deadline {
            let _ = script.kill();
            panic!("the extension did not exit on SHUTDOWN");
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    };
    assert!(status.success(), "{status}");
    assert!(
        std::net::TcpStream::connect(("127.0.0.1", port)).is_err(),
        "the agent still listens"
    );
    assert_eq!(state()["errors"], serde_json::json!([]));
}
