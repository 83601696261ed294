#!/usr/bin/env bash
# Reading secrets from a local secret-agent with curl.
#
#   examples/curl.sh [name] [key]
#
# SECRET_AGENT_URL defaults to http://127.0.0.1:2773. When the agent requires
# a client token, set SECRET_AGENT_TOKEN to it, or SECRET_AGENT_TOKEN_FILE to
# the file holding it (e.g. /run/secret-agent-token/app.token); the file is
# read on every run, so a rotated token is picked up.
set -euo pipefail
url="${SECRET_AGENT_URL:-http://127.0.0.1:2773}"
name="${1:-demo/db}"
key="${2:-}"

token="${SECRET_AGENT_TOKEN:-}"
if [[ -z "$token" && -n "${SECRET_AGENT_TOKEN_FILE:-}" ]]; then
    token="$(tr -d '[:space:]' <"$SECRET_AGENT_TOKEN_FILE")"
fi

path="/secrets/$name${key:+/$key}"
# --fail-with-body: a non-2xx answer exits non-zero and still shows the JSON error.
if [[ -n "$token" ]]; then
    # The header goes through stdin (-H @-), so the token never shows in the
    # process list as a command-line argument would.
    printf 'Authorization: Bearer %s\n' "$token" |
        curl --silent --show-error --fail-with-body --max-time 10 -H @- "$url$path"
else
    curl --silent --show-error --fail-with-body --max-time 10 "$url$path"
fi
echo
