#!/usr/bin/env bash
# The benchmark: builds in release, installs wrk and openssl (Debian)
# when missing, starts moto, seeds secrets, runs the agent and a minimal
# actix-web ceiling server (plain and TLS), drives them with wrk and with
# integration/protoload.rs (the secret agent protocol, new connections,
# TLS handshakes), and prints one `name: value` line per figure, with its
# target where it has one (see integration/bench.py), then runs the soak
# test for 60 s.
#
#   integration/bench.sh            # everything
#   BENCH_ROUNDS=5 BENCH_SECONDS=10 integration/bench.sh
#   BENCH_STEPS=hot_path,tls,protocol integration/bench.sh
#   SKIP_SOAK=1 integration/bench.sh
set -euo pipefail
cd "$(dirname "$0")/.."

# wrk for load; openssl for the `tls` step's self-signed certificate.
missing=()
for tool in wrk openssl; do
  command -v "$tool" >/dev/null || missing+=("$tool")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "== installing ${missing[*]}" >&2
  if [ "$(id -u)" = 0 ]; then
    apt-get update -qq && apt-get install -y -qq "${missing[@]}" >/dev/null
  else
    sudo apt-get update -qq && sudo apt-get install -y -qq "${missing[@]}" >/dev/null
  fi
fi

venv=integration/.venv
if ! "$venv/bin/python" -c 'import moto, boto3' 2>/dev/null; then
  echo "== installing moto into $venv" >&2
  python3 -m venv "$venv"
  "$venv/bin/pip" install --quiet --disable-pip-version-check -r integration/requirements.txt
fi

echo "== building (release)" >&2
cargo build --quiet --release --bin secret-agent --example ceiling --example protoload

"$venv/bin/python" integration/bench.py

# The soak measures sturdiness, not speed: the test build (debug) will do,
# and spares a second whole-program-optimised build.
if [ -z "${SKIP_SOAK:-}" ]; then
  echo "== soak, 60 s" >&2
  SOAK_SECONDS=60 cargo test --quiet --test integration soak -- --nocapture 2>&1 \
    | grep -E '^soak: [0-9]+ reads|^test result'
fi
