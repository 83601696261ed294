"""The benchmark behind integration/bench.sh. Prints one `name: value` line per figure.

It drives integration/harness.py (moto, the fault-injecting proxy) and the
release builds of secret-agent and of the ceiling server (integration/ceiling.rs),
and uses wrk for load. Everything runs on 127.0.0.1.
"""

import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PYTHON = os.path.join(ROOT, "integration/.venv/bin/python")
AGENT = os.path.join(ROOT, "target/release/secret-agent")
CEILING = os.path.join(ROOT, "target/release/examples/ceiling")
REGION = "us-west-1"
KEYS = "    access-key-id: AKIABENCHBENCHBENCH0\n    secret-access-key: bench-secret-key\n"

ROUNDS = int(os.environ.get("BENCH_ROUNDS", "3"))
# BENCH_STEPS=hot_path,memory runs only those steps.
SECONDS = int(os.environ.get("BENCH_SECONDS", "5"))
CONNECTIONS = 32


def figure(name: str, value) -> None:
    print(f"{name}: {value}", flush=True)


class Harness:
    """moto and the test doubles, over harness.py's JSON-lines protocol."""

    def __init__(self) -> None:
        self.proc = subprocess.Popen([PYTHON, os.path.join(ROOT, "integration/harness.py")],
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        self.moto = json.loads(self.proc.stdout.readline())["moto"]

    def cmd(self, **command):
        self.proc.stdin.write(json.dumps(command) + "\n")
        self.proc.stdin.flush()
        answer = json.loads(self.proc.stdout.readline())
        if not answer["ok"]:
            raise RuntimeError(answer["error"])
        return answer["result"]

    def create_secret(self, name: str, value: str) -> str:
        return self.cmd(op="call", service="secretsmanager", region=REGION, method="create_secret",
                        args={"Name": name, "SecretString": value})["ARN"]

    def close(self) -> None:
        self.proc.stdin.close()
        self.proc.wait(timeout=10)


class Agent:
    """A release secret-agent on a generated config; its address from its log."""

    def __init__(self, endpoint: str, resources: dict[str, str], cache: str = "", env=None) -> None:
        self.dir = tempfile.TemporaryDirectory()
        lines = ["service:", "  tcp:", "    endpoint: 127.0.0.1:0", "secret-manager:", "  aws:",
                 f"    region: {REGION}", f"    endpoint: {endpoint}", KEYS.rstrip("\n"), "    resources:"]
        lines += [f"      {name}: {arn}" for name, arn in resources.items()]
        lines += [cache, "log:", "  level: info"]
        path = os.path.join(self.dir.name, "config.yaml")
        with open(path, "w") as f:
            f.write("\n".join(lines) + "\n")
        os.chmod(path, 0o600)
        self.started = time.monotonic()
        environment = {k: v for k, v in os.environ.items() if not k.startswith("AWS_") and k != "RUST_LOG"}
        environment.update({"AWS_EC2_METADATA_DISABLED": "true", "HOME": self.dir.name,
                            "AWS_SHARED_CREDENTIALS_FILE": os.devnull, "AWS_CONFIG_FILE": os.devnull})
        environment.update(env or {})
        self.proc = subprocess.Popen([AGENT, "--config", path], stderr=subprocess.PIPE, text=True,
                                     env=environment)
        for line in self.proc.stderr:
            match = re.search(r"listening on http://(\S+)", line)
            if match:
                self.url = "http://" + match.group(1)
                break
        else:
            raise RuntimeError("the agent did not start")
        threading.Thread(target=lambda: [None for _ in self.proc.stderr], daemon=True).start()

    def rss_mb(self) -> float:
        with open(f"/proc/{self.proc.pid}/status") as f:
            kib = next(int(l.split()[1]) for l in f if l.startswith("VmRSS:"))
        return kib / 1024

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(timeout=15)


def get(url: str) -> bytes:
    with urllib.request.urlopen(url, timeout=30) as r:
        return r.read()


def wrk(url: str) -> tuple[float, float, float]:
    """Requests per second, p50 and p99 in ms."""
    out = subprocess.run(["wrk", "-t2", f"-c{CONNECTIONS}", f"-d{SECONDS}s", "--latency", url],
                         capture_output=True, text=True, check=True).stdout
    if re.search(r"Non-2xx or 3xx responses", out) or re.search(r"Socket errors", out):
        raise RuntimeError(f"errors under load:\n{out}")
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))

    def ms(pct: str) -> float:
        value, unit = re.search(rf"\s{pct}%\s+([\d.]+)(us|ms|s)\b", out).groups()
        return float(value) * {"us": 0.001, "ms": 1.0, "s": 1000.0}[unit]

    return rps, ms("50"), ms("99")


def hot_path(h: Harness) -> None:
    value = json.dumps({"username": "bench", "password": "x" * 900, "port": 5432})
    arn = h.create_secret("bench/hot", value)
    agent = Agent(h.moto, {"hot": arn}, "cache:\n  ttl: 1h")
    body = tempfile.NamedTemporaryFile(delete=False)
    body.write(value.encode())
    body.close()
    ceiling = subprocess.Popen([CEILING, body.name, "application/json"], stdout=subprocess.PIPE, text=True)
    ceiling_url = "http://" + ceiling.stdout.readline().strip() + "/secrets/hot"
    agent_url = agent.url + "/secrets/hot"
    assert get(agent_url) == value.encode() and get(ceiling_url) == value.encode()
    wrk(agent_url), wrk(ceiling_url)  # warm-up
    agent_runs, ceiling_runs = [], []
    for _ in range(ROUNDS):  # alternate, so both see the same machine
        agent_runs.append(wrk(agent_url))
        ceiling_runs.append(wrk(ceiling_url))
    ceiling.terminate()
    os.unlink(body.name)
    agent.stop()
    med = lambda runs, i: statistics.median(r[i] for r in runs)  # noqa: E731
    figure("hot_path_rps", f"{med(agent_runs, 0):.0f}")
    figure("hot_path_p50_ms", f"{med(agent_runs, 1):.3f}")
    figure("hot_path_p99_ms", f"{med(agent_runs, 2):.3f}")
    figure("ceiling_rps", f"{med(ceiling_runs, 0):.0f}")
    figure("ceiling_p50_ms", f"{med(ceiling_runs, 1):.3f}")
    figure("ceiling_p99_ms", f"{med(ceiling_runs, 2):.3f}")
    figure("hot_path_to_ceiling_ratio", f"{med(agent_runs, 0) / med(ceiling_runs, 0):.3f}")


def miss_storm(h: Harness) -> None:
    arn = h.create_secret("bench/storm", "storm-value")
    proxy = h.cmd(op="start_proxy", upstream=h.moto)
    h.cmd(op="proxy_set", id=proxy["id"], fault="delay", delay_ms=1500)
    agent = Agent(proxy["url"], {"storm": arn})
    with ThreadPoolExecutor(200) as pool:
        bodies = list(pool.map(lambda _: get(agent.url + "/secrets/storm"), range(200)))
    assert all(b == b"storm-value" for b in bodies)
    calls = [c for c in h.cmd(op="proxy_calls", id=proxy["id"]) if c["action"] == "GetSecretValue"]
    agent.stop()
    figure("miss_storm_readers", 200)
    figure("miss_storm_upstream_calls", len(calls))


def memory(h: Harness) -> None:
    resources = {}
    for i in range(1000):
        value = json.dumps({"i": i, "blob": f"{i:04d}" * 1000})[:4096].ljust(4096)
        resources[f"m{i}"] = h.create_secret(f"bench/mem/{i}", value)
    agent = Agent(h.moto, resources, os.environ.get("BENCH_MEMORY_CACHE", "cache:\n  ttl: 1h\n  max-entries: 2000"))
    before = agent.rss_mb()
    with ThreadPoolExecutor(8) as pool:
        sizes = list(pool.map(lambda n: len(get(f"{agent.url}/secrets/{n}")), resources))
    assert all(s == 4096 for s in sizes), set(sizes)
    time.sleep(0.5)
    figure("memory_rss_mb_empty", f"{before:.1f}")
    figure("memory_rss_mb_1000x4kb", f"{agent.rss_mb():.1f}")
    agent.stop()


def startup(h: Harness) -> None:
    resources = {f"p{i}": h.create_secret(f"bench/pre/{i}", f"prefetched-{i}") for i in range(100)}
    agent = Agent(h.moto, resources, "cache:\n  prefetch: true")
    while True:
        try:
            get(agent.url + "/readyz")
            break
        except OSError:
            time.sleep(0.005)
    figure("startup_to_ready_ms_100_prefetched", f"{(time.monotonic() - agent.started) * 1000:.0f}")
    agent.stop()


def config_reject(_h: Harness) -> None:
    """How long `--check` takes to refuse 200 KB of deeply nested YAML; a
    reload (SIGHUP) runs the same loader."""
    shapes = {"flow_seq": "[" * 200_000, "flow_map": "{a: " * 50_000, "block_seq": "- " * 100_000}
    with tempfile.TemporaryDirectory() as d:
        for name, text in shapes.items():
            path = os.path.join(d, f"{name}.yaml")
            with open(path, "w") as f:
                f.write(text)
            times = []
            for _ in range(max(ROUNDS, 5)):
                started = time.monotonic()
                out = subprocess.run([AGENT, "--check", "--config", path], capture_output=True, text=True,
                                     timeout=120)
                times.append(time.monotonic() - started)
                if out.returncode != 2 or "nested more than" not in out.stderr:
                    raise RuntimeError(f"{name}: exit {out.returncode}: {out.stderr[:300]}")
            figure(f"config_reject_200kb_{name}_ms", f"{statistics.median(times) * 1000:.1f}")


def main() -> None:
    figure("machine", f"{os.cpu_count()} cores, {os.uname().machine}, {os.uname().release}")
    steps = {s.__name__: s for s in (hot_path, miss_storm, memory, startup, config_reject)}
    chosen = os.environ.get("BENCH_STEPS", ",".join(steps)).split(",")
    h = Harness()
    try:
        for name in chosen:
            steps[name](h)
    finally:
        h.close()


if __name__ == "__main__":
    sys.exit(main())
