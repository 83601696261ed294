//! The Python harness (`harness.py`): moto, the IMDSv2 double and the
//! recording, fault-injecting proxy, driven by one JSON command a line.

use std::io::{BufRead, BufReader, Write};
use std::path::PathBuf;
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::sync::{Mutex, OnceLock};

use serde_json::{Value, json};

use super::{AgentConfig, REGION, root, unique};

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
pub(crate) struct World {
    pub moto: String,
    io: Mutex<(ChildStdin, BufReader<ChildStdout>)>,
    _child: Child,
}

impl World {
    /// The world shared by tests that need nothing special; tests keep apart
    /// by using unique secret names.
    pub(crate) fn shared() -> &'static World {
        static WORLD: OnceLock<World> = OnceLock::new();
        WORLD.get_or_init(|| World::start(&[]))
    }

    /// A world of its own, e.g. with moto settings in `env`.
    pub(crate) fn start(env: &[(&str, &str)]) -> World {
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
    pub(crate) fn try_cmd(&self, command: Value) -> Result<Value, String> {
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

    pub(crate) fn cmd(&self, command: Value) -> Value {
        let shown = command.to_string();
        self.try_cmd(command)
            .unwrap_or_else(|e| panic!("harness command {shown} failed: {e}"))
    }

    /// A boto3 call against moto.
    pub(crate) fn call(&self, service: &str, region: &str, method: &str, args: Value) -> Value {
        self.cmd(json!({"op": "call", "service": service, "region": region, "method": method, "args": args}))
    }

    /// Asserts that moto refuses unsigned calls now: the world's
    /// `INITIAL_NO_AUTH_ACTION_COUNT` is spent, so every key is checked.
    pub(crate) fn assert_iam_enforced(&self) {
        assert!(
            self.try_cmd(json!({"op": "call", "service": "iam", "region": REGION,
                "method": "list_users", "args": {}}))
                .is_err(),
            "moto should enforce IAM by now"
        );
    }

    /// An IAM user with an access key, allowed `actions` on every resource
    /// (moto checks the action, not the resource); no policy when `actions`
    /// is empty. Three IAM calls (two without a policy), which count against
    /// `INITIAL_NO_AUTH_ACTION_COUNT`. Returns (access key id, secret key).
    pub(crate) fn iam_user(&self, user: &str, actions: &[&str]) -> (String, String) {
        self.call("iam", REGION, "create_user", json!({"UserName": user}));
        let key = self.call(
            "iam",
            REGION,
            "create_access_key",
            json!({"UserName": user}),
        );
        if !actions.is_empty() {
            let policy = json!({"Version": "2012-10-17",
                "Statement": [{"Effect": "Allow", "Action": actions, "Resource": "*"}]});
            self.call(
                "iam",
                REGION,
                "put_user_policy",
                json!({"UserName": user, "PolicyName": "allow", "PolicyDocument": policy.to_string()}),
            );
        }
        let key = &key["AccessKey"];
        let text = |field: &str| key[field].as_str().expect(field).to_owned();
        (text("AccessKeyId"), text("SecretAccessKey"))
    }

    /// Creates a string secret in [`REGION`] under a name no other test uses.
    pub(crate) fn secret(&self, prefix: &str, value: &str) -> Secret {
        let name = unique(prefix);
        let arn = self.create_secret(REGION, &name, value);
        Secret { name, arn }
    }

    /// A config that reads from moto directly, signed with the test keys.
    pub(crate) fn config(&self) -> AgentConfig {
        AgentConfig::new().endpoint(&self.moto).test_keys()
    }

    /// Puts a parameter of `kind` (`String`, `StringList`, `SecureString`),
    /// a new version when it exists; returns its version number.
    pub(crate) fn put_parameter(&self, region: &str, name: &str, value: &str, kind: &str) -> u64 {
        let out = self.call(
            "ssm",
            region,
            "put_parameter",
            json!({"Name": name, "Value": value, "Type": kind, "Overwrite": true}),
        );
        out["Version"].as_u64().unwrap()
    }

    /// Labels `version` of the parameter `name` with `label`.
    pub(crate) fn label_parameter_version(
        &self,
        region: &str,
        name: &str,
        version: u64,
        label: &str,
    ) {
        self.call(
            "ssm",
            region,
            "label_parameter_version",
            json!({"Name": name, "ParameterVersion": version, "Labels": [label]}),
        );
    }

    /// Creates a string secret; returns its full ARN.
    pub(crate) fn create_secret(&self, region: &str, name: &str, value: &str) -> String {
        let out = self.call(
            "secretsmanager",
            region,
            "create_secret",
            json!({"Name": name, "SecretString": value}),
        );
        out["ARN"].as_str().unwrap().to_owned()
    }

    /// Creates a binary secret; returns its full ARN.
    pub(crate) fn create_binary_secret(&self, region: &str, name: &str, value: &[u8]) -> String {
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
    pub(crate) fn put_secret_value(&self, region: &str, arn: &str, value: &str) -> String {
        let out = self.call(
            "secretsmanager",
            region,
            "put_secret_value",
            json!({"SecretId": arn, "SecretString": value}),
        );
        out["VersionId"].as_str().unwrap().to_owned()
    }

    /// Starts a recording, fault-injecting proxy in front of moto.
    pub(crate) fn proxy(&self) -> Proxy<'_> {
        self.proxy_to(&self.moto)
    }

    /// Starts a recording, fault-injecting proxy in front of `upstream`.
    pub(crate) fn proxy_to(&self, upstream: &str) -> Proxy<'_> {
        let out = self.cmd(json!({"op": "start_proxy", "upstream": upstream}));
        Proxy {
            world: self,
            id: out["id"].as_str().unwrap().to_owned(),
            url: out["url"].as_str().unwrap().to_owned(),
        }
    }

    /// Starts a hostile upstream answering every call with `kind`
    /// (`endless`, `garbage`, `value`, `foreign_arn`, `stall`; see
    /// harness.py), tuned by `settings` (`size_mb`, `value_bytes`, `pace_ms`).
    pub(crate) fn hostile(&self, kind: &str, settings: Value) -> Hostile<'_> {
        let mut command = json!({"op": "start_hostile", "kind": kind});
        if let (Some(command), Some(settings)) = (command.as_object_mut(), settings.as_object()) {
            command.extend(settings.clone());
        }
        let out = self.cmd(command);
        Hostile {
            world: self,
            id: out["id"].as_str().unwrap().to_owned(),
            url: out["url"].as_str().unwrap().to_owned(),
        }
    }

    /// Starts an IMDSv2 double whose credentials live `lifetime` seconds.
    pub(crate) fn imds(&self, lifetime: u64, key_prefix: &str) -> Imds<'_> {
        self.imds_in(REGION, lifetime, key_prefix)
    }

    /// Like [`World::imds`], for an instance in `region`.
    pub(crate) fn imds_in(&self, region: &str, lifetime: u64, key_prefix: &str) -> Imds<'_> {
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

/// The ARN AWS (and moto, whose account is [`MOTO_ACCOUNT`]) gives the
/// parameter `name`: without the leading `/` of a hierarchical name.
pub(crate) fn parameter_arn(region: &str, name: &str) -> String {
    format!(
        "arn:aws:ssm:{region}:{MOTO_ACCOUNT}:parameter/{}",
        name.strip_prefix('/').unwrap_or(name)
    )
}

/// The account of everything moto creates.
pub(crate) const MOTO_ACCOUNT: &str = "123456789012";

/// A secret a test created.
pub(crate) struct Secret {
    /// Unique to the test; [`Proxy::gets`] counts the calls for it.
    pub name: String,
    pub arn: String,
}

/// What most tests start from: the shared world, and a fresh proxy in front
/// of moto that records the agent's calls and injects faults.
pub(crate) struct Fixture {
    pub world: &'static World,
    pub proxy: Proxy<'static>,
}

impl Fixture {
    pub(crate) fn new() -> Fixture {
        let world = World::shared();
        Fixture {
            world,
            proxy: world.proxy(),
        }
    }

    /// See [`World::secret`].
    pub(crate) fn secret(&self, prefix: &str, value: &str) -> Secret {
        self.world.secret(prefix, value)
    }

    /// A config that reads through the proxy, signed with the test keys.
    pub(crate) fn config(&self) -> AgentConfig {
        AgentConfig::new().endpoint(&self.proxy.url).test_keys()
    }
}

/// One call the proxy saw. `Debug` leaves out the session tokens and the
/// credentials an AssumeRole returned.
#[derive(Clone)]
pub(crate) struct Call {
    pub action: String,
    pub secret_id: Option<String>,
    /// BatchGetSecretValue's `SecretIdList`, else empty.
    pub secret_ids: Vec<String>,
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
    /// An SSM call's `WithDecryption`.
    pub with_decryption: Option<bool>,
}

impl std::fmt::Debug for Call {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Call")
            .field("action", &self.action)
            .field("secret_id", &self.secret_id)
            .field("secret_ids", &self.secret_ids)
            .field("access_key_id", &self.access_key_id)
            .field("region", &self.region)
            .field("session_token", &self.session_token.as_ref().map(|_| ".."))
            .field("form", &self.form)
            .field("time", &self.time)
            .field("returned_key_id", &self.returned["AccessKeyId"])
            .field("with_decryption", &self.with_decryption)
            .finish()
    }
}

/// A hostile upstream double (see [`World::hostile`]).
pub(crate) struct Hostile<'w> {
    world: &'w World,
    pub id: String,
    pub url: String,
}

impl Hostile<'_> {
    /// From now on, answers with `kind` (as [`World::hostile`]).
    pub(crate) fn set(&self, kind: &str, settings: Value) {
        let mut command = json!({"op": "hostile_set", "id": self.id, "kind": kind});
        if let (Some(command), Some(settings)) = (command.as_object_mut(), settings.as_object()) {
            command.extend(settings.clone());
        }
        self.world.cmd(command);
    }

    /// The action (`GetSecretValue`...) of each call it answered, in order.
    pub(crate) fn calls(&self) -> Vec<String> {
        let out = self
            .world
            .cmd(json!({"op": "hostile_calls", "id": self.id}));
        out.as_array()
            .unwrap()
            .iter()
            .map(|a| a.as_str().unwrap_or_default().to_owned())
            .collect()
    }
}

#[derive(Clone)]
pub(crate) struct Proxy<'w> {
    world: &'w World,
    pub id: String,
    pub url: String,
}

impl Proxy<'_> {
    pub(crate) fn calls(&self) -> Vec<Call> {
        let out = self.world.cmd(json!({"op": "proxy_calls", "id": self.id}));
        out.as_array()
            .unwrap()
            .iter()
            .map(|c| Call {
                action: c["action"].as_str().unwrap_or_default().to_owned(),
                secret_id: c["secret_id"].as_str().map(str::to_owned),
                secret_ids: c["secret_ids"]
                    .as_array()
                    .map(|ids| {
                        ids.iter()
                            .filter_map(|i| i.as_str().map(str::to_owned))
                            .collect()
                    })
                    .unwrap_or_default(),
                access_key_id: c["access_key_id"].as_str().map(str::to_owned),
                region: c["region"].as_str().map(str::to_owned),
                session_token: c["session_token"].as_str().map(str::to_owned),
                form: c["form"].clone(),
                time: c["time"].as_f64().unwrap_or_default(),
                returned: c["returned"].clone(),
                with_decryption: c["with_decryption"].as_bool(),
            })
            .collect()
    }

    /// GetSecretValue calls for secrets whose id contains `needle`.
    pub(crate) fn gets(&self, needle: &str) -> usize {
        self.calls()
            .iter()
            .filter(|c| c.action == "GetSecretValue")
            .filter(|c| c.secret_id.as_deref().is_some_and(|s| s.contains(needle)))
            .count()
    }

    /// GetParameter calls for parameters whose name (as sent: `name`,
    /// `name:3`, `name:label`) contains `needle`.
    pub(crate) fn parameter_gets(&self, needle: &str) -> usize {
        self.calls()
            .iter()
            .filter(|c| c.action == "GetParameter")
            .filter(|c| c.secret_id.as_deref().is_some_and(|s| s.contains(needle)))
            .count()
    }

    /// BatchGetSecretValue calls that name a secret whose id contains `needle`.
    pub(crate) fn batch_gets(&self, needle: &str) -> usize {
        self.calls()
            .iter()
            .filter(|c| c.action == "BatchGetSecretValue")
            .filter(|c| c.secret_ids.iter().any(|s| s.contains(needle)))
            .count()
    }

    /// The most calls the proxy was handling at once (from a request's
    /// arrival to the start of its answer) since it started or was cleared.
    pub(crate) fn max_in_flight(&self) -> u64 {
        self.world
            .cmd(json!({"op": "proxy_in_flight", "id": self.id}))["max"]
            .as_u64()
            .unwrap()
    }

    /// The calls the proxy is handling now (arrived, not yet answered): one
    /// means the agent's call is under way.
    pub(crate) fn in_flight(&self) -> u64 {
        self.world
            .cmd(json!({"op": "proxy_in_flight", "id": self.id}))["now"]
            .as_u64()
            .unwrap()
    }

    /// `fault`: none, status, reset, delay or hang; see harness.py.
    pub(crate) fn set_fault(&self, fault: Value) {
        let mut command = json!({"op": "proxy_set", "id": self.id});
        for (k, v) in fault.as_object().unwrap() {
            command[k] = v.clone();
        }
        self.world.cmd(command);
    }
}

pub(crate) struct Imds<'w> {
    world: &'w World,
    pub id: String,
    pub url: String,
}

impl Imds<'_> {
    pub(crate) fn state(&self) -> Value {
        self.world.cmd(json!({"op": "imds_state", "id": self.id}))
    }

    /// Changes `lifetime`, `role`, `region` or `rotate_ahead` (seconds before
    /// expiry from which new credentials are handed out).
    pub(crate) fn set(&self, settings: Value) {
        let mut command = json!({"op": "imds_set", "id": self.id});
        for (k, v) in settings.as_object().unwrap() {
            command[k] = v.clone();
        }
        self.world.cmd(command);
    }

    /// The requests the double received: `{method, path, had_token}`.
    pub(crate) fn requests(&self) -> Vec<Value> {
        self.state()["requests"].as_array().unwrap().clone()
    }

    /// Every credential set the double minted, oldest first:
    /// `{access_key_id, secret_access_key, session_token, expiration}`.
    pub(crate) fn issued(&self) -> Vec<Value> {
        self.state()["issued"].as_array().unwrap().clone()
    }
}
