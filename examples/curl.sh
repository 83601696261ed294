#!/usr/bin/env bash
# Reading secrets from a local secret-agent with curl.
#
#   examples/curl.sh [name] [key]
#
# SECRET_AGENT_URL defaults to http://127.0.0.1:2773.
set -euo pipefail
url="${SECRET_AGENT_URL:-http://127.0.0.1:2773}"
name="${1:-demo/db}"
key="${2:-}"

path="/secrets/$name${key:+/$key}"
# --fail-with-body: a non-2xx answer exits non-zero and still shows the JSON error.
curl --silent --show-error --fail-with-body --max-time 10 "$url$path"
echo
