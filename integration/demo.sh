#!/usr/bin/env bash
# The local demo: builds the agent, starts moto (the AWS emulator) with two
# example secrets on 127.0.0.1:4566, starts the agent on config/demo.yaml
# (127.0.0.1:2773) and reads a secret and a key with curl. Everything it
# starts is stopped when it exits; pass --serve to keep both running until
# Ctrl-C.
set -euo pipefail
cd "$(dirname "$0")/.."

venv=integration/.venv
if ! "$venv/bin/python" -c 'import moto, boto3' 2>/dev/null; then
  echo "== installing moto into $venv"
  python3 -m venv "$venv"
  "$venv/bin/pip" install --quiet --disable-pip-version-check -r integration/requirements.txt
fi

echo "== building secret-agent"
cargo build --quiet --bin secret-agent

pids=()
cleanup() { for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done; }
trap cleanup EXIT

wait_for() { # url
  for _ in $(seq 1 100); do
    curl -s -o /dev/null "$1" && return 0
    sleep 0.1
  done
  echo "nothing answers at $1" >&2
  return 1
}

echo "== starting moto on 127.0.0.1:4566"
"$venv/bin/moto_server" -H 127.0.0.1 -p 4566 >/dev/null 2>&1 &
pids+=($!)
wait_for http://127.0.0.1:4566/moto-api/

echo "== seeding example secrets"
"$venv/bin/python" - <<'PY'
import boto3
sm = boto3.client("secretsmanager", region_name="us-west-1", endpoint_url="http://127.0.0.1:4566",
                  aws_access_key_id="demo", aws_secret_access_key="demo")
sm.create_secret(Name="demo/db", SecretString='{"username":"tiexin","password":"demo-password","port":5432}')
sm.create_secret(Name="greeting", SecretString="hello from Secrets Manager")
PY

echo "== starting secret-agent on config/demo.yaml"
target/debug/secret-agent --config config/demo.yaml &
pids+=($!)
wait_for http://127.0.0.1:2773/secrets/greeting

for path in demo/db demo/db/username demo/db/port greeting; do
  echo
  echo "\$ curl http://127.0.0.1:2773/secrets/$path"
  curl -s "http://127.0.0.1:2773/secrets/$path"
  echo
done

if [ "${1:-}" = "--serve" ]; then
  echo
  echo "== serving; Ctrl-C stops moto and the agent"
  wait
fi
