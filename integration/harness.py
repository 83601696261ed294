"""End-to-end test harness for secret-agent: moto plus IMDS and proxy test doubles.

Protocol (line-delimited JSON):
  * On start, moto runs in-process and one line is printed:
    {"ready": true, "moto": "http://127.0.0.1:PORT"}
  * Each stdin line is a command {"op": ...}; each gets exactly one stdout line,
    {"ok": true, "result": ...} or {"ok": false, "error": "<type>: <message>"}.
  * EOF on stdin stops every server and exits 0.

Commands:
  ping                                                  -> "pong"
  call service region method args [access_key_id secret_access_key]
        boto3 call against moto; {"$b64": ...} <-> bytes, datetimes -> ISO-8601
  start_imds lifetime role region key_prefix            -> {"id", "url"}  (IMDSv2 double; its
        /container-credentials path serves the same credentials as an ECS
        container endpoint, with Authorization: container-auth-token-for-tests)
  imds_set id [lifetime role region rotate_ahead]   imds_rotate id
        (rotate_ahead: seconds before expiry from which new credentials are handed out,
         as EC2 does minutes ahead; default 0, at expiry)
  imds_state id        -> {access_key_id, generation, requests: [{method, path, had_token}],
                           issued: [{access_key_id, secret_access_key, session_token, expiration}]}
  start_proxy [upstream]                                -> {"id", "url"}  (recording reverse proxy)
  proxy_set id fault(none|status|reset|delay|hang) [status delay_ms only_action only_secret
                       error_type]  (`error_type`: the AWS error code a `status` fault answers
                       with, default ServiceUnavailableException)
                       (`only_secret`: calls naming a secret id containing it, batch calls too)
  proxy_calls id       -> [{action, secret_id, secret_ids, access_key_id, region, session_token,
                            form, host, time, returned, with_decryption}]  (`secret_id`: the
                            SecretId, or an SSM call's parameter Name; `with_decryption`: an SSM
                            call's WithDecryption; `secret_ids`: BatchGetSecretValue's
                            SecretIdList; `region`: the SigV4 credential scope's; `form`:
                            the parameters of a form-encoded call such as AssumeRole; `returned`:
                            the credentials an AssumeRole answer carried)
  proxy_clear id       (also restarts max_in_flight from the calls in flight now)
  proxy_in_flight id   -> {"now", "max"}: calls the proxy was handling at once, counted from
                          when a request arrives until its answer starts (so a caller that
                          sends its next call on the answer is never counted twice)
  proxy_sts_lifetime id seconds   AssumeRole answers passing through say the credentials
                            expire `seconds` from now (null: as STS said); real STS
                            grants at least 15 minutes, too long for a test to see a refresh

  start_hostile kind [size_mb value_bytes pace_ms]  -> {"id", "url"}  (a hostile upstream
        that answers every Secrets Manager or SSM call with `kind`: `endless` (a chunked
        body that never ends, 64 KiB chunks, `pace_ms` apart; it gives up after 120 s),
        `garbage` (`size_mb` MB of random bytes with their Content-Length), `value` (a
        well-formed answer for what was asked whose value is `value_bytes` bytes),
        `foreign_arn` (a well-formed small answer naming account 999999999999), `stall`
        (a head and 10 bytes of a 1000-byte body, then nothing for 60 s))
  hostile_set id kind [size_mb value_bytes pace_ms]   hostile_calls id -> [action]

  start_extensions_api  -> {"id", "url"}  (the Lambda Extensions API double: register,
                          event/next blocking until an event is pushed, init/error, exit/error)
  extensions_push id event_type       queues an INVOKE or SHUTDOWN event for event/next
  extensions_state id  -> {registered: [{name, events}], waiting: n, next_calls: n,
                           errors: [{path, type}]}

Nothing but protocol lines is written to stdout (sys.stdout is redirected to stderr).
"""

import base64
import datetime as dt
import http.client
import json
import logging
import os
import re
import secrets
import socket
import struct
import sys
import threading
import time
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Callable

for _var, _value in (("AWS_ACCESS_KEY_ID", "testing"), ("AWS_SECRET_ACCESS_KEY", "testing"),
                     ("AWS_DEFAULT_REGION", "us-east-1")):
    os.environ.setdefault(_var, _value)
os.environ["AWS_CONFIG_FILE"] = os.environ["AWS_SHARED_CREDENTIALS_FILE"] = os.devnull
os.environ.pop("AWS_PROFILE", None)
os.environ.pop("AWS_DEFAULT_PROFILE", None)

import boto3  # noqa: E402
from botocore.config import Config  # noqa: E402
from botocore.exceptions import ClientError  # noqa: E402
from moto.moto_server.threaded_moto_server import ThreadedMotoServer  # noqa: E402

PROTOCOL_OUT = sys.stdout
sys.stdout = sys.stderr
logging.getLogger("werkzeug").setLevel(logging.ERROR)

HOP_BY_HOP = {"connection", "keep-alive", "proxy-authenticate", "proxy-authorization",
              "proxy-connection", "te", "trailer", "transfer-encoding", "upgrade"}
CREDENTIAL_RE = re.compile(r"Credential=([^/,\s]+)/[^/,\s]+/([^/,\s]+)/")
RETURNED_RE = {name: re.compile(rf"<{name}>([^<]*)</{name}>")
               for name in ("AccessKeyId", "SecretAccessKey", "SessionToken", "Expiration")}


def iso_utc(ts: float) -> str:
    return dt.datetime.fromtimestamp(ts, dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def decode_args(value: Any) -> Any:
    """Turn every {"$b64": "..."} object into bytes."""
    if isinstance(value, dict):
        if set(value) == {"$b64"}:
            return base64.b64decode(value["$b64"])
        return {k: decode_args(v) for k, v in value.items()}
    if isinstance(value, list):
        return [decode_args(v) for v in value]
    return value


def encode_result(value: Any) -> Any:
    if isinstance(value, (bytes, bytearray)):
        return {"$b64": base64.b64encode(value).decode()}
    if isinstance(value, (dt.datetime, dt.date)):
        return value.isoformat()
    raise TypeError(f"cannot encode {type(value).__name__}")


class QuietServer(ThreadingHTTPServer):
    """Clients that drop their connection (the agent during fault tests,
    or at exit) are normal here: no traceback for those."""

    def handle_error(self, request: Any, client_address: Any) -> None:
        if isinstance(sys.exc_info()[1], (ConnectionError, TimeoutError)):
            return
        super().handle_error(request, client_address)


class Server:
    """A ThreadingHTTPServer on 127.0.0.1:0 served from a daemon thread."""

    def __init__(self, handler: type[BaseHTTPRequestHandler], owner: Any) -> None:
        self.httpd = QuietServer(("127.0.0.1", 0), handler)
        self.httpd.daemon_threads = True
        self.httpd.owner = owner  # handlers reach their state via self.server.owner
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05},
                         daemon=True).start()

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


class Handler(BaseHTTPRequestHandler):
    """HTTP/1.1 keep-alive handler base with a quiet log and a reply helper."""

    protocol_version = "HTTP/1.1"

    def setup(self) -> None:
        super().setup()
        # Headers and body go out in separate writes; avoid Nagle/delayed-ACK stalls.
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def reply(self, status: int, body: bytes, headers: list[tuple[str, str]] | None = None,
              content_type: str = "text/plain") -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        for name, value in headers or []:
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def read_body(self) -> bytes:
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            body = bytearray()
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip(), 16)
                if size == 0:
                    while self.rfile.readline().strip():  # trailers up to the blank line
                        pass
                    return bytes(body)
                body += self.rfile.read(size)
                self.rfile.readline()
        return self.rfile.read(int(self.headers.get("Content-Length") or 0))


class Imds:
    """IMDSv2 double with rotating instance-profile credentials."""

    def __init__(self, lifetime: int = 3600, role: str = "secret-agent-role",
                 region: str = "us-west-1", key_prefix: str = "ASIAIMDS",
                 rotate_ahead: float = 0) -> None:
        self.lock = threading.Lock()
        self.lifetime, self.role, self.region, self.key_prefix = int(lifetime), role, region, key_prefix
        self.rotate_ahead = float(rotate_ahead)
        self.tokens: dict[str, float] = {}
        self.requests: list[dict[str, Any]] = []
        self.issued: list[dict[str, Any]] = []
        self.generation = 0
        self.rotate()
        self.server = Server(ImdsHandler, self)

    def rotate(self) -> str:
        """Mint a new credential set valid for `lifetime` seconds (caller holds the lock)."""
        self.generation += 1
        self.access_key_id = f"{self.key_prefix}{self.generation:08d}".ljust(20, "X")
        self.secret_access_key = secrets.token_urlsafe(30)[:40]
        self.session_token = secrets.token_urlsafe(96)
        self.expiration = int(time.time()) + self.lifetime
        self.issued.append({"access_key_id": self.access_key_id,
                            "secret_access_key": self.secret_access_key,
                            "session_token": self.session_token, "expiration": self.expiration})
        return self.access_key_id

    def credentials(self) -> dict[str, str]:
        """The current credential document, rotating first if (nearly) expired (caller holds the lock)."""
        if time.time() >= self.expiration - self.rotate_ahead:
            self.rotate()
        return {"Code": "Success", "LastUpdated": iso_utc(time.time()), "Type": "AWS-HMAC",
                "AccessKeyId": self.access_key_id, "SecretAccessKey": self.secret_access_key,
                "Token": self.session_token, "Expiration": iso_utc(self.expiration)}


class ImdsHandler(Handler):
    def do_PUT(self) -> None:
        self.read_body()
        self.reply(*self.route())

    def do_GET(self) -> None:
        self.reply(*self.route())

    def route(self) -> tuple[int, bytes, list[tuple[str, str]], str]:
        """Record the request and compute (status, body, headers, content type)."""
        imds: Imds = self.server.owner
        token = self.headers.get("X-aws-ec2-metadata-token")
        path = self.path.split("?")[0]
        creds_path = "/latest/meta-data/iam/security-credentials"
        with imds.lock:
            imds.requests.append({"method": self.command, "path": self.path,
                                  "had_token": token is not None})
            if self.command == "PUT":
                if path != "/latest/api/token":
                    return 404, b"Not Found", [], "text/plain"
                ttl = self.headers.get("X-aws-ec2-metadata-token-ttl-seconds", "").strip()
                if not (ttl.isdigit() and 1 <= int(ttl) <= 21600):
                    return 400, b"Bad Request", [], "text/plain"
                token = secrets.token_urlsafe(32)
                imds.tokens[token] = time.time() + int(ttl)
                return 200, token.encode(), [("X-aws-ec2-metadata-token-ttl-seconds", ttl)], "text/plain"
            if path == "/container-credentials":
                # The ECS / EKS Pod Identity container credentials endpoint:
                # the same document, behind AWS_CONTAINER_AUTHORIZATION_TOKEN.
                if self.headers.get("Authorization") != CONTAINER_AUTH_TOKEN:
                    return 401, b"Unauthorized", [], "text/plain"
                body = json.dumps(imds.credentials(), indent=2)
                return 200, body.encode(), [], "application/json"
            if token is None or imds.tokens.get(token, 0) <= time.time():
                return 401, b"Unauthorized", [], "text/plain"
            if path in (creds_path, creds_path + "/"):
                return 200, imds.role.encode(), [], "text/plain"
            if path == f"{creds_path}/{imds.role}":
                body = json.dumps(imds.credentials(), indent=2)
                return 200, body.encode(), [], "application/json"
            if path == "/latest/meta-data/placement/region":
                return 200, imds.region.encode(), [], "text/plain"
            if path == "/latest/dynamic/instance-identity/document":
                doc = {"region": imds.region, "accountId": "123456789012",
                       "instanceId": "i-0123456789abcdef0"}
                return 200, json.dumps(doc).encode(), [], "application/json"
        return 404, b"Not Found", [], "text/plain"


FAULTS = {"none", "status", "reset", "delay", "hang"}
CONTAINER_AUTH_TOKEN = "container-auth-token-for-tests"


class Proxy:
    """Recording, fault-injecting reverse proxy in front of `upstream`."""

    def __init__(self, upstream: str) -> None:
        parsed = urllib.parse.urlsplit(upstream)
        self.upstream = (parsed.hostname or "127.0.0.1", parsed.port or 80)
        self.lock = threading.Lock()
        self.calls: list[dict[str, Any]] = []
        self.in_flight = 0
        self.max_in_flight = 0
        self.sts_lifetime: int | None = None
        self.configure()
        self.server = Server(ProxyHandler, self)

    def configure(self, fault: str = "none", status: int = 503, delay_ms: int | None = None,
                  only_action: str | None = None, only_secret: str | None = None,
                  error_type: str = "ServiceUnavailableException") -> None:
        if fault not in FAULTS:
            raise ValueError(f"unknown fault {fault!r}, expected one of {sorted(FAULTS)}")
        if delay_ms is None:
            delay_ms = 60000 if fault == "hang" else 1000
        with self.lock:
            self.fault = {"fault": fault, "status": int(status), "delay_ms": int(delay_ms),
                          "only_action": only_action, "only_secret": only_secret,
                          "error_type": error_type}

    def fault_for(self, call: dict[str, Any]) -> dict[str, Any]:
        with self.lock:
            fault = dict(self.fault)
        if fault["only_action"] is not None and call["action"] != fault["only_action"]:
            return {"fault": "none"}
        if fault["only_secret"] is not None and not any(
                fault["only_secret"] in i for i in [call["secret_id"] or ""] + (call["secret_ids"] or [])):
            return {"fault": "none"}
        return fault


class ProxyHandler(Handler):
    def handle_any(self) -> None:
        proxy: Proxy = self.server.owner
        body = self.read_body()
        call = self.describe(body)
        self.call = call
        with proxy.lock:
            proxy.calls.append(call)
            proxy.in_flight += 1
            proxy.max_in_flight = max(proxy.max_in_flight, proxy.in_flight)
        self.counted = True
        try:
            self.handle_call(call, body)
        finally:
            self.answered()

    def answered(self) -> None:
        """Count this call out of the calls in flight, once."""
        if getattr(self, "counted", False):
            self.counted = False
            proxy: Proxy = self.server.owner
            with proxy.lock:
                proxy.in_flight -= 1

    def send_response_only(self, code: int, message: str | None = None) -> None:
        self.answered()
        super().send_response_only(code, message)

    def handle_call(self, call: dict[str, Any], body: bytes) -> None:
        proxy: Proxy = self.server.owner
        fault = proxy.fault_for(call)
        kind = fault["fault"]
        if kind == "status":
            payload = json.dumps({"__type": fault["error_type"], "message": "injected"})
            return self.reply(fault["status"], payload.encode(),
                              [("x-amzn-ErrorType", fault["error_type"])],
                              content_type="application/x-amz-json-1.1")
        if kind == "reset":
            self.close_connection = True
            self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            os.close(self.connection.detach())
            return
        if kind in ("delay", "hang"):
            time.sleep(fault["delay_ms"] / 1000)
            if kind == "hang":
                self.close_connection = True
                return
        self.forward(body)

    do_GET = do_POST = do_PUT = do_DELETE = do_PATCH = do_HEAD = do_OPTIONS = handle_any

    def describe(self, body: bytes) -> dict[str, Any]:
        """Extract action, secret id, access key id and host from a request."""
        target = self.headers.get("X-Amz-Target")
        action = target.rsplit(".", 1)[-1] if target else None
        secret_id, secret_ids, with_decryption = None, None, None
        try:
            parsed = json.loads(body) if body else None
            if isinstance(parsed, dict) and isinstance(parsed.get("SecretId"), str):
                secret_id = parsed["SecretId"]
            if target and target.startswith("AmazonSSM.") and isinstance(parsed, dict):
                if isinstance(parsed.get("Name"), str):
                    secret_id = parsed["Name"]
                if isinstance(parsed.get("WithDecryption"), bool):
                    with_decryption = parsed["WithDecryption"]
            if isinstance(parsed, dict) and isinstance(parsed.get("SecretIdList"), list):
                secret_ids = [i for i in parsed["SecretIdList"] if isinstance(i, str)]
        except ValueError:
            pass
        if action is None:
            form = urllib.parse.parse_qs(urllib.parse.urlsplit(self.path).query)
            if "x-www-form-urlencoded" in self.headers.get("Content-Type", ""):
                form.update(urllib.parse.parse_qs(body.decode("utf-8", "replace")))
            action = form.get("Action", [None])[0]
        form = None
        if "x-www-form-urlencoded" in self.headers.get("Content-Type", ""):
            parsed_form = urllib.parse.parse_qs(body.decode("utf-8", "replace"))
            form = {k: v[0] for k, v in parsed_form.items()}
        match = CREDENTIAL_RE.search(self.headers.get("Authorization", ""))
        return {"action": action, "secret_id": secret_id, "secret_ids": secret_ids,
                "access_key_id": match.group(1) if match else None,
                "region": match.group(2) if match else None,
                "session_token": self.headers.get("X-Amz-Security-Token"), "form": form,
                "host": self.headers.get("Host"), "time": time.time(), "returned": None,
                "with_decryption": with_decryption}

    def forward(self, body: bytes) -> None:
        proxy: Proxy = self.server.owner
        connection_tokens = {t.strip().lower() for t in self.headers.get("Connection", "").split(",")}
        drop = HOP_BY_HOP | connection_tokens | {"content-length"}
        conn = http.client.HTTPConnection(*proxy.upstream, timeout=30)
        try:
            conn.putrequest(self.command, self.path, skip_host=True, skip_accept_encoding=True)
            for name, value in self.headers.items():
                if name.lower() not in drop:
                    conn.putheader(name, value)
            if body or "Content-Length" in self.headers or self.command in ("POST", "PUT", "PATCH"):
                conn.putheader("Content-Length", str(len(body)))
            conn.endheaders(body or None)
            response = conn.getresponse()
            data = response.read()
            headers = response.getheaders()
        except (OSError, http.client.HTTPException) as error:
            message = json.dumps({"message": f"upstream error: {type(error).__name__}: {error}"})
            return self.reply(502, message.encode(), content_type="application/json")
        finally:
            conn.close()
        if self.call["action"] in ("AssumeRole", "AssumeRoleWithWebIdentity") and response.status == 200:
            text = data.decode("utf-8", "replace")
            with proxy.lock:
                lifetime = proxy.sts_lifetime
            if lifetime is not None:
                expiration = iso_utc(time.time() + lifetime)
                text = re.sub(r"<Expiration>[^<]*</Expiration>",
                              f"<Expiration>{expiration}</Expiration>", text)
                data = text.encode()
            found = {name: rx.search(text) for name, rx in RETURNED_RE.items()}
            with proxy.lock:
                self.call["returned"] = {name: m.group(1) if m else None
                                         for name, m in found.items()}
        self.send_response_only(response.status, response.reason)
        for name, value in headers:
            if name.lower() not in HOP_BY_HOP | {"content-length"}:
                self.send_header(name, value)
        length = response.getheader("Content-Length") if self.command == "HEAD" else None
        self.send_header("Content-Length", length or str(len(data)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(data)


HOSTILE_KINDS = {"endless", "garbage", "value", "foreign_arn", "stall"}
FOREIGN_ACCOUNT = "999999999999"
# Every loop of the hostile double ends within this long.
HOSTILE_LIMIT_S = 120


class Hostile:
    """An upstream (a custom endpoint, a proxy, a compromised path) whose
    every answer is hostile in the way `kind` says."""

    def __init__(self, kind: str, **settings: Any) -> None:
        self.lock = threading.Lock()
        self.calls: list[str | None] = []
        self.configure(kind, **settings)
        self.server = Server(HostileHandler, self)

    def configure(self, kind: str, size_mb: int = 100, value_bytes: int = 60 << 20,
                  pace_ms: int = 0) -> None:
        if kind not in HOSTILE_KINDS:
            raise ValueError(f"unknown kind {kind!r}, expected one of {sorted(HOSTILE_KINDS)}")
        with self.lock:
            self.settings = {"kind": kind, "size_mb": int(size_mb),
                             "value_bytes": int(value_bytes), "pace_ms": int(pace_ms)}


def answered_arn(asked: str, foreign: bool) -> str:
    """The ARN AWS answers for `asked` (an ARN, as the agent sends): a
    secret's gets AWS's six-character suffix unless it has one; `foreign`
    puts another account in it."""
    arn = asked
    if ":secret:" in arn and not re.search(r"-[A-Za-z0-9]{6}$", arn):
        arn += "-AbCdEf"
    if foreign:
        parts = arn.split(":", 5)
        if len(parts) == 6:
            parts[4] = FOREIGN_ACCOUNT
            arn = ":".join(parts)
    return arn


class HostileHandler(Handler):
    def do_POST(self) -> None:
        hostile: Hostile = self.server.owner
        body = self.read_body()
        target = self.headers.get("X-Amz-Target") or ""
        action = target.rsplit(".", 1)[-1] if target else None
        with hostile.lock:
            hostile.calls.append(action)
            settings = dict(hostile.settings)
        try:
            request = json.loads(body) if body else {}
        except ValueError:
            request = {}
        kind = settings["kind"]
        self.close_connection = True
        try:
            if kind == "endless":
                self.endless(settings["pace_ms"])
            elif kind == "garbage":
                self.garbage(settings["size_mb"] * 1_000_000)
            elif kind == "stall":
                self.send_response(200)
                self.send_header("Content-Type", "application/x-amz-json-1.1")
                self.send_header("Content-Length", "1000")
                self.end_headers()
                self.wfile.write(b'{"ARN": "a')
                self.wfile.flush()
                self.connection.settimeout(HOSTILE_LIMIT_S / 2)
                self.connection.recv(1)  # returns when the agent gives up
            else:
                value = b"x" * (settings["value_bytes"] if kind == "value" else 8)
                self.well_formed(action, request, value, foreign=kind == "foreign_arn")
        except (ConnectionError, TimeoutError, OSError):
            pass

    def endless(self, pace_ms: int) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "application/x-amz-json-1.1")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        chunk = b'{"SecretString": "' + b"x" * (65536 - 18)
        deadline = time.monotonic() + HOSTILE_LIMIT_S
        while time.monotonic() < deadline:
            self.wfile.write(b"%x\r\n%s\r\n" % (len(chunk), chunk))
            chunk = b"x" * 65536
            if pace_ms:
                self.wfile.flush()
                time.sleep(pace_ms / 1000)

    def garbage(self, size: int) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "application/x-amz-json-1.1")
        self.send_header("Content-Length", str(size))
        self.end_headers()
        block = os.urandom(1 << 20)
        deadline = time.monotonic() + HOSTILE_LIMIT_S
        while size > 0 and time.monotonic() < deadline:
            self.wfile.write(block[:size])
            size -= len(block)

    def well_formed(self, action: str | None, request: dict[str, Any], value: bytes,
                    foreign: bool) -> None:
        now = time.time()
        def secret(asked: str) -> bytes:
            arn = answered_arn(asked, foreign)
            name = arn.split(":secret:", 1)[-1][:-7]
            head = json.dumps({"ARN": arn, "Name": name, "VersionId": "v-1",
                               "VersionStages": ["AWSCURRENT"], "CreatedDate": now})
            return head[:-1].encode() + b', "SecretString": "' + value + b'"}'
        if action == "GetSecretValue":
            payload = secret(str(request.get("SecretId", "")))
        elif action == "BatchGetSecretValue":
            entries = [secret(str(i)) for i in request.get("SecretIdList") or []]
            payload = b'{"SecretValues": [' + b", ".join(entries) + b'], "Errors": []}'
        elif action == "GetParameter":
            asked = str(request.get("Name", "")).split(":parameter", 1)
            base = ":parameter".join(asked[:1] + [asked[1].split(":", 1)[0]]) if len(asked) == 2 else ""
            arn = answered_arn(base, foreign)
            name = "/" + arn.split(":parameter/", 1)[-1]
            head = json.dumps({"Parameter": {"ARN": arn, "Name": name, "Type": "String",
                                             "Version": 1, "LastModifiedDate": now,
                                             "DataType": "text"}})
            payload = head[:-2].encode() + b', "Value": "' + value + b'"}}'
        else:
            payload = json.dumps({"__type": "UnknownOperationException"}).encode()
            return self.reply(400, payload, content_type="application/x-amz-json-1.1")
        self.reply(200, payload, content_type="application/x-amz-json-1.1")


class ExtensionsApi:
    """The Lambda Extensions API as an external extension sees it."""

    def __init__(self) -> None:
        self.lock = threading.Condition()
        self.registered: list[dict[str, Any]] = []
        self.events: list[dict[str, Any]] = []
        self.waiting = 0
        self.next_calls = 0
        self.errors: list[dict[str, str]] = []
        self.server = Server(ExtensionsHandler, self)


class ExtensionsHandler(Handler):
    def do_POST(self) -> None:
        api: ExtensionsApi = self.server.owner
        body = self.read_body()
        path = self.path.removeprefix("/2020-01-01/extension/")
        if path == "register":
            events = json.loads(body or b"{}").get("events", [])
            with api.lock:
                api.registered.append(
                    {"name": self.headers.get("Lambda-Extension-Name"), "events": events})
            answer = {"functionName": "fn", "functionVersion": "$LATEST", "handler": "h"}
            self.reply(200, json.dumps(answer).encode(),
                       [("Lambda-Extension-Identifier", "ext-id-1")], "application/json")
        elif path in ("init/error", "exit/error"):
            with api.lock:
                api.errors.append({"path": path, "type": self.headers.get(
                    "Lambda-Extension-Function-Error-Type", "")})
            self.reply(202, b"{}", content_type="application/json")
        else:
            self.reply(404, b"not found")

    def do_GET(self) -> None:
        api: ExtensionsApi = self.server.owner
        if self.path != "/2020-01-01/extension/event/next":
            self.reply(404, b"not found")
            return
        if self.headers.get("Lambda-Extension-Identifier") != "ext-id-1":
            self.reply(403, b'{"errorType":"Extension.Forbidden"}', content_type="application/json")
            return
        with api.lock:
            api.next_calls += 1
            api.waiting += 1
            ready = api.lock.wait_for(lambda: api.events, timeout=60)
            api.waiting -= 1
            event = api.events.pop(0) if ready else {"eventType": "SHUTDOWN"}
        self.reply(200, json.dumps(event).encode(), content_type="application/json")


class Harness:
    """Dispatches protocol commands; owns moto, the doubles and the boto3 clients."""

    def __init__(self) -> None:
        self.moto = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
        self.moto.start()
        host, port = self.moto.get_host_and_port()
        self.moto_url = f"http://{host}:{port}"
        self.clients: dict[tuple[str, str, str, str], Any] = {}
        self.imds: dict[str, Imds] = {}
        self.proxies: dict[str, Proxy] = {}
        self.extensions: dict[str, ExtensionsApi] = {}
        self.hostiles: dict[str, Hostile] = {}

    def dispatch(self, command: dict[str, Any]) -> Any:
        op = command.pop("op", None)
        handler: Callable[..., Any] | None = getattr(self, f"op_{op}", None)
        if not isinstance(op, str) or handler is None:
            raise ValueError(f"unknown op {op!r}")
        return handler(**command)

    def op_ping(self) -> str:
        return "pong"

    def op_call(self, service: str, method: str, region: str = "us-west-1",
                args: dict[str, Any] | None = None, access_key_id: str | None = None,
                secret_access_key: str | None = None) -> Any:
        key = (service, region, access_key_id or "testing", secret_access_key or "testing")
        if key not in self.clients:
            config = Config(retries={"total_max_attempts": 1}, connect_timeout=10, read_timeout=10)
            self.clients[key] = boto3.session.Session().client(
                service, region_name=region, endpoint_url=self.moto_url,
                aws_access_key_id=key[2], aws_secret_access_key=key[3], config=config)
        response = getattr(self.clients[key], method)(**decode_args(args or {}))
        response.pop("ResponseMetadata", None)
        return response

    def op_start_imds(self, **settings: Any) -> dict[str, str]:
        imds_id = f"imds-{len(self.imds) + 1}"
        self.imds[imds_id] = Imds(**settings)
        return {"id": imds_id, "url": self.imds[imds_id].server.url}

    def op_imds_set(self, id: str, lifetime: int | None = None, role: str | None = None,
                    region: str | None = None, rotate_ahead: float | None = None) -> None:
        imds = self.imds[id]
        with imds.lock:
            if rotate_ahead is not None:
                imds.rotate_ahead = float(rotate_ahead)
            imds.lifetime = int(lifetime) if lifetime is not None else imds.lifetime
            imds.role = role if role is not None else imds.role
            imds.region = region if region is not None else imds.region

    def op_imds_rotate(self, id: str) -> str:
        imds = self.imds[id]
        with imds.lock:
            return imds.rotate()

    def op_imds_state(self, id: str) -> dict[str, Any]:
        imds = self.imds[id]
        with imds.lock:
            return {"access_key_id": imds.access_key_id, "generation": imds.generation,
                    "requests": list(imds.requests), "issued": list(imds.issued)}

    def op_start_proxy(self, upstream: str | None = None) -> dict[str, str]:
        proxy_id = f"proxy-{len(self.proxies) + 1}"
        self.proxies[proxy_id] = Proxy(upstream or self.moto_url)
        return {"id": proxy_id, "url": self.proxies[proxy_id].server.url}

    def op_proxy_set(self, id: str, **fault: Any) -> None:
        self.proxies[id].configure(**fault)

    def op_proxy_calls(self, id: str) -> list[dict[str, Any]]:
        proxy = self.proxies[id]
        with proxy.lock:
            return list(proxy.calls)

    def op_proxy_sts_lifetime(self, id: str, seconds: int | None) -> None:
        proxy = self.proxies[id]
        with proxy.lock:
            proxy.sts_lifetime = None if seconds is None else int(seconds)

    def op_proxy_clear(self, id: str) -> None:
        proxy = self.proxies[id]
        with proxy.lock:
            proxy.calls.clear()
            proxy.max_in_flight = proxy.in_flight

    def op_proxy_in_flight(self, id: str) -> dict[str, int]:
        proxy = self.proxies[id]
        with proxy.lock:
            return {"now": proxy.in_flight, "max": proxy.max_in_flight}

    def op_start_hostile(self, kind: str, **settings: Any) -> dict[str, str]:
        hostile_id = f"hostile-{len(self.hostiles) + 1}"
        self.hostiles[hostile_id] = Hostile(kind, **settings)
        return {"id": hostile_id, "url": self.hostiles[hostile_id].server.url}

    def op_hostile_set(self, id: str, kind: str, **settings: Any) -> None:
        self.hostiles[id].configure(kind, **settings)

    def op_hostile_calls(self, id: str) -> list[str | None]:
        hostile = self.hostiles[id]
        with hostile.lock:
            return list(hostile.calls)

    def op_start_extensions_api(self) -> dict[str, str]:
        api_id = f"extensions-{len(self.extensions) + 1}"
        self.extensions[api_id] = ExtensionsApi()
        return {"id": api_id, "url": self.extensions[api_id].server.url}

    def op_extensions_push(self, id: str, event_type: str) -> None:
        api = self.extensions[id]
        with api.lock:
            event: dict[str, Any] = {"eventType": event_type, "deadlineMs": int(time.time() * 1000) + 3000}
            if event_type == "INVOKE":
                event["requestId"] = secrets.token_hex(8)
            else:
                event["shutdownReason"] = "spindown"
            api.events.append(event)
            api.lock.notify_all()

    def op_extensions_state(self, id: str) -> dict[str, Any]:
        api = self.extensions[id]
        with api.lock:
            return {"registered": list(api.registered), "waiting": api.waiting,
                    "next_calls": api.next_calls, "errors": list(api.errors)}

    def stop(self) -> None:
        """Stop every server concurrently, waiting at most about a second."""
        stoppers = [d.server.stop for d in (*self.imds.values(), *self.proxies.values(),
                                             *self.extensions.values(), *self.hostiles.values())]
        threads = [threading.Thread(target=f, daemon=True) for f in (*stoppers, self.moto.stop)]
        for thread in threads:
            thread.start()
        deadline = time.monotonic() + 1
        for thread in threads:
            thread.join(max(0.0, deadline - time.monotonic()))


def emit(message: dict[str, Any]) -> None:
    PROTOCOL_OUT.write(json.dumps(message, default=encode_result) + "\n")
    PROTOCOL_OUT.flush()


def answer(harness: Harness, line: str) -> dict[str, Any]:
    try:
        command = json.loads(line)
        if not isinstance(command, dict):
            raise ValueError("command must be a JSON object")
        result = harness.dispatch(command)
        json.dumps(result, default=encode_result)  # surface encoding errors as protocol errors
        return {"ok": True, "result": result}
    except ClientError as error:
        info = error.response.get("Error", {})
        return {"ok": False, "error": f"ClientError: {info.get('Code')}: {info.get('Message')}"}
    except Exception as error:  # noqa: BLE001 - every failure becomes a protocol error
        return {"ok": False, "error": f"{type(error).__name__}: {error}"}


def main() -> None:
    sys.stdin.reconfigure(errors="replace")
    harness = Harness()
    try:
        emit({"ready": True, "moto": harness.moto_url})
        for line in iter(sys.stdin.readline, ""):
            if line.strip():
                emit(answer(harness, line))
    except BrokenPipeError:  # the test process is gone; clean up as on EOF
        pass
    harness.stop()
    sys.stderr.flush()
    os._exit(0)


if __name__ == "__main__":
    main()
