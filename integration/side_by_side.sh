#!/usr/bin/env bash
# Our agent beside the AWS Secrets Manager Agent (see integration/side_by_side.py
# and docs/performance.md#beside-the-aws-agent). Its source stays outside this
# repository:
#
#   git clone https://github.com/aws/aws-secretsmanager-agent /work/peer/aws-agent
#   integration/side_by_side.sh /work/peer/aws-agent
#   BENCH_ROUNDS=5 BENCH_SECONDS=10 integration/side_by_side.sh /work/peer/aws-agent
#
# Builds it there (release, its own target dir) and ours here, then runs the
# benchmark. Needs wrk and integration/.venv (integration/bench.sh sets both up).
set -euo pipefail
if [ $# -ne 1 ] || [ ! -f "$1/aws_secretsmanager_agent/Cargo.toml" ]; then
  echo "usage: $0 <path to the AWS agent's source>" >&2
  exit 2
fi
peer=$(cd "$1" && pwd)
cd "$(dirname "$0")/.."

command -v wrk >/dev/null || { echo "wrk is missing (integration/bench.sh installs it)" >&2; exit 1; }
venv=integration/.venv
"$venv/bin/python" -c 'import moto, boto3' 2>/dev/null \
  || { echo "$venv lacks moto (integration/bench.sh installs it)" >&2; exit 1; }

echo "== building the AWS agent (release) in $peer" >&2
(cd "$peer" && cargo build --quiet --release --locked -p aws_secretsmanager_agent)
echo "== building ours (release)" >&2
cargo build --quiet --release --bin secret-agent --example ceiling

AWS_AGENT_BIN="$peer/target/release/aws_secretsmanager_agent" "$venv/bin/python" integration/side_by_side.py
