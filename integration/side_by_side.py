"""Our agent beside the AWS Secrets Manager Agent, run by integration/side_by_side.sh.
Prints one `name: value` line per figure, as integration/bench.py does.

One moto (integration/harness.py), one 1 KB JSON secret (bench.py's hot_path),
a client token on both agents. Four servers, each in turn first in three
interleaved rounds of `wrk -t1 -d5s --latency` at 32 and at 256 connections:

  ceiling       integration/ceiling.rs, fixed bytes from memory
  aws_agent     the AWS agent's GET /secretsmanager/get?secretId=<name>
  ours_secrets  our GET /secrets/<name>
  ours_compat   our GET /secretsmanager/get?secretId=<name>

Then the resident memory (VmRSS) of each agent holding 1,000 cached 4 KB
secrets, each read once, as bench.py's memory step.

AWS_AGENT_BIN is the AWS agent's release binary (built from its source,
outside this repository); BENCH_AGENT and BENCH_CEILING as in bench.py.
"""

import json
import os
import re
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse
import urllib.request
from concurrent.futures import ThreadPoolExecutor

from bench import CEILING, REGION, Agent, Harness, figure

AWS_AGENT = os.environ.get("AWS_AGENT_BIN", "")
ROUNDS = int(os.environ.get("BENCH_ROUNDS", "3"))
SECONDS = int(os.environ.get("BENCH_SECONDS", "5"))
CONNECTIONS = (32, 256)
TOKEN = "side-by-side-token-0123456789abcdef"
HEADER = "X-Aws-Parameters-Secrets-Token"  # the AWS agent's; ours takes it too (auth.token-headers)
AUTH = "auth:\n  tokens:\n    - token-env: BENCH_TOKEN\n      resources: [\"*\"]"
HOT = "side-by-side-hot"
SERVERS = ("ceiling", "aws_agent", "ours_secrets", "ours_compat")


def note(message: str) -> None:
    print(f"# {message}", file=sys.stderr, flush=True)


def free_port() -> int:
    """A port free now (the AWS agent takes no port 0)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def get(url: str) -> bytes:
    """A GET with the client token."""
    request = urllib.request.Request(url, headers={HEADER: TOKEN})
    with urllib.request.urlopen(request, timeout=30) as r:
        return r.read()


class AwsAgent:
    """The AWS Secrets Manager Agent (AWS_AGENT) on a generated TOML, pointed at
    moto by AWS_ENDPOINT_URL, with static keys and AWS_TOKEN in its environment."""

    def __init__(self, endpoint: str, cache_size: int = 1000) -> None:
        self.dir = tempfile.TemporaryDirectory()
        port = free_port()
        path = os.path.join(self.dir.name, "config.toml")
        with open(path, "w") as f:
            f.write(f'http_port = "{port}"\nregion = "{REGION}"\nttl_seconds = "3600"\n'
                    f'cache_size = "{cache_size}"\nmax_conn = "800"\nlog_level = "INFO"\n'
                    'log_to_file = false\n')
        environment = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
        environment.update({"AWS_ACCESS_KEY_ID": "AKIABENCHBENCHBENCH0",
                            "AWS_SECRET_ACCESS_KEY": "bench-secret-key", "AWS_REGION": REGION,
                            "AWS_ENDPOINT_URL": endpoint, "AWS_TOKEN": TOKEN,
                            "AWS_EC2_METADATA_DISABLED": "true", "HOME": self.dir.name,
                            "AWS_SHARED_CREDENTIALS_FILE": os.devnull, "AWS_CONFIG_FILE": os.devnull})
        self.log = open(os.path.join(self.dir.name, "stderr.log"), "w+")
        self.proc = subprocess.Popen([AWS_AGENT, "--config", path], cwd=self.dir.name,
                                     stdout=subprocess.PIPE, stderr=self.log, text=True, env=environment)
        for line in self.proc.stdout:
            match = re.search(r"listening on (http://\S+)", line)
            if match:
                self.url = match.group(1)
                break
        else:
            self.proc.kill()
            self.proc.wait(timeout=15)
            self.log.seek(0)
            raise RuntimeError(f"the AWS agent did not start:\n{self.log.read()[-2000:]}")
        threading.Thread(target=lambda: [None for _ in self.proc.stdout], daemon=True).start()

    def rss_mb(self) -> float:
        with open(f"/proc/{self.proc.pid}/status") as f:
            kib = next(int(l.split()[1]) for l in f if l.startswith("VmRSS:"))
        return kib / 1024

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(timeout=15)
        self.log.close()


class Ceiling:
    """integration/ceiling.rs answering `body` from memory."""

    def __init__(self, body: str) -> None:
        self.file = tempfile.NamedTemporaryFile(delete=False)
        self.file.write(body.encode())
        self.file.close()
        self.proc = subprocess.Popen([CEILING, self.file.name, "application/json"],
                                     stdout=subprocess.PIPE, text=True)
        self.url = "http://" + self.proc.stdout.readline().strip()

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(timeout=15)
        os.unlink(self.file.name)


def wrk(url: str, connections: int, seconds: int = SECONDS) -> tuple[float, float, float, int]:
    """Requests per second, p50 and p99 in ms, and socket errors, one wrk
    thread, with the token. A non-2xx answer is an error; socket errors are
    counted and reported."""
    out = subprocess.run(["wrk", "-t1", f"-c{connections}", f"-d{seconds}s", "--latency",
                          "-H", f"{HEADER}: {TOKEN}", url],
                         capture_output=True, text=True, check=True).stdout
    if re.search(r"Non-2xx or 3xx responses", out):
        raise RuntimeError(f"errors under load:\n{out}")
    errors = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    if errors:
        note(f"socket errors at {url} ({connections} connections): {errors.group(0)}")
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))

    def ms(pct: str) -> float:
        value, unit = re.search(rf"\s{pct}%\s+([\d.]+)(us|ms|s)\b", out).groups()
        return float(value) * {"us": 0.001, "ms": 1.0, "s": 1000.0}[unit]

    return rps, ms("50"), ms("99"), sum(map(int, errors.groups())) if errors else 0


class Ours(Agent):
    """bench.py's Agent, keeping its log's warnings and errors (never a
    secret value: the agent logs none) to show beside socket errors."""

    def __init__(self, *args, **kwargs) -> None:
        self.warnings: list[str] = []
        super().__init__(*args, **kwargs)

    def _drain_log(self) -> None:
        for line in self.proc.stderr:
            self.log_bytes += len(line.encode())
            if re.search(r"^\[\S+ (WARN|ERROR)", line):
                self.warnings.append(line.rstrip()[:300])


def hot_path(h: Harness, started: list) -> None:
    value = json.dumps({"username": "bench", "password": "x" * 900, "port": 5432})
    arn = h.create_secret(HOT, value)
    ceiling = Ceiling(value)
    started.append(ceiling)
    aws = AwsAgent(h.moto)
    started.append(aws)
    ours = Ours(h.moto, {HOT: arn}, "cache:\n  ttl: 1h", env={"BENCH_TOKEN": TOKEN}, sections=AUTH)
    started.append(ours)
    urls = {"ceiling": f"{ceiling.url}/secrets/{HOT}",
            "aws_agent": f"{aws.url}/secretsmanager/get?secretId={HOT}",
            "ours_secrets": f"{ours.url}/secrets/{HOT}",
            "ours_compat": f"{ours.url}/secretsmanager/get?secretId={HOT}"}
    assert get(urls["ceiling"]) == value.encode() and get(urls["ours_secrets"]) == value.encode()
    for name in ("aws_agent", "ours_compat"):
        answer = json.loads(get(urls[name]))
        assert answer["SecretString"] == value and answer["Name"] == HOT, name
    note("answer bytes: " + ", ".join(f"{n} {len(get(u))}" for n, u in urls.items()))
    for url in urls.values():  # warm-up
        wrk(url, CONNECTIONS[-1], 1)
    runs = {(name, c): [] for name in SERVERS for c in CONNECTIONS}
    for i in range(ROUNDS):  # alternate, so all see the same machine, each in turn first
        for c in CONNECTIONS:
            for name in SERVERS[i % 4:] + SERVERS[:i % 4]:
                rps, p50, p99, errors = wrk(urls[name], c)
                runs[name, c].append((rps, p50, p99, errors))
                figure(f"side_by_side_round{i + 1}_{name}_c{c}",
                       f"{rps:.0f} rps, p99 {p99:.3f} ms" + (f", {errors} socket errors" if errors else ""))
    med = lambda name, c, i: statistics.median(r[i] for r in runs[name, c])  # noqa: E731
    for c in CONNECTIONS:
        for name in SERVERS:
            figure(f"side_by_side_{name}_c{c}_rps", f"{med(name, c, 0):.0f}")
            figure(f"side_by_side_{name}_c{c}_p50_ms", f"{med(name, c, 1):.3f}")
            figure(f"side_by_side_{name}_c{c}_p99_ms", f"{med(name, c, 2):.3f}")
            figure(f"side_by_side_{name}_c{c}_socket_errors", sum(r[3] for r in runs[name, c]))
        for name in ("ours_secrets", "ours_compat"):  # target: p99 ratio <= 1.0
            figure(f"{name}_to_aws_agent_p99_ratio_c{c}",
                   f"{med(name, c, 2) / med('aws_agent', c, 2):.3f}")
            figure(f"{name}_to_aws_agent_rps_ratio_c{c}",
                   f"{med(name, c, 0) / med('aws_agent', c, 0):.3f}")
        figure(f"aws_agent_to_ceiling_rps_ratio_c{c}",
               f"{med('aws_agent', c, 0) / med('ceiling', c, 0):.3f}")
    for line in ours.warnings:
        note(f"our agent's log: {line}")
    figure("side_by_side_aws_agent_rss_mb_after_load", f"{aws.rss_mb():.1f}")
    figure("side_by_side_ours_rss_mb_after_load", f"{ours.rss_mb():.1f}")
    for server in (ours, aws, ceiling):
        server.stop()
        started.remove(server)


def memory(h: Harness, started: list) -> None:
    """1,000 4 KB secrets, each read once through each agent (ours by
    /secrets/<name>, as bench.py's memory step; the AWS agent by secretId)."""
    names = [f"side-by-side-mem-{i}" for i in range(1000)]
    resources = {}
    for i, name in enumerate(names):
        value = json.dumps({"i": i, "blob": f"{i:04d}" * 1000})[:4096].ljust(4096)
        resources[name] = h.create_secret(name, value)
    aws = AwsAgent(h.moto, cache_size=1000)
    started.append(aws)
    ours = Agent(h.moto, resources, "cache:\n  ttl: 1h\n  max-entries: 2000",
                 env={"BENCH_TOKEN": TOKEN}, sections=AUTH)
    started.append(ours)
    aws_before, ours_before = aws.rss_mb(), ours.rss_mb()
    quote = urllib.parse.quote
    with ThreadPoolExecutor(8) as pool:
        ours_sizes = list(pool.map(lambda n: len(get(f"{ours.url}/secrets/{n}")), names))
        aws_values = list(pool.map(
            lambda n: json.loads(get(f"{aws.url}/secretsmanager/get?secretId={quote(n)}"))["SecretString"],
            names))
    assert all(s == 4096 for s in ours_sizes), set(ours_sizes)
    assert all(len(v) == 4096 for v in aws_values), {len(v) for v in aws_values}
    time.sleep(0.5)
    aws_after, ours_after = aws.rss_mb(), ours.rss_mb()
    figure("side_by_side_aws_agent_rss_mb_empty", f"{aws_before:.1f}")
    figure("side_by_side_ours_rss_mb_empty", f"{ours_before:.1f}")
    figure("side_by_side_aws_agent_rss_mb_1000x4kb", f"{aws_after:.1f}")
    figure("side_by_side_ours_rss_mb_1000x4kb", f"{ours_after:.1f}")  # target: <= 16 and <= the AWS agent's
    figure("ours_to_aws_agent_rss_ratio_1000x4kb", f"{ours_after / aws_after:.3f}")
    for server in (ours, aws):
        server.stop()
        started.remove(server)


def main() -> None:
    if not AWS_AGENT or not os.access(AWS_AGENT, os.X_OK):
        sys.exit("AWS_AGENT_BIN: the AWS agent's binary (see integration/side_by_side.sh)")
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # unwind through the finally below
    figure("machine", f"{os.cpu_count()} cores, {os.uname().machine}, {os.uname().release}")
    steps = {s.__name__: s for s in (hot_path, memory)}
    chosen = os.environ.get("BENCH_STEPS", ",".join(steps)).split(",")
    started: list = []
    h = Harness()
    try:
        for name in chosen:
            steps[name](h, started)
    finally:
        for server in reversed(started):
            try:
                server.stop()
            except Exception as error:  # noqa: BLE001 - stop the rest anyway
                note(f"stopping {type(server).__name__}: {error}")
        h.close()


if __name__ == "__main__":
    sys.exit(main())
