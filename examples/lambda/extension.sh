#!/usr/bin/env bash
# secret-agent as an AWS Lambda external extension.
#
# Layer layout (Lambda mounts a layer at /opt and starts every executable in
# /opt/extensions; the file name is the extension's name):
#   extensions/secret-agent       this script
#   bin/secret-agent              the binary, built for the function's
#                                 architecture against a glibc no newer than
#                                 the runtime's (build it in amazonlinux:2023)
#   secret-agent/config.yaml      examples/lambda/config.yaml
#
# It registers for INVOKE and SHUTDOWN, starts the agent in Lambda mode
# (`-l`: it listens, but serves and fetches nothing yet), waits (briefly)
# until it answers, and on the first INVOKE calls /start_serving: secrets are
# fetched only once the function runs, never during init, so a SnapStart
# snapshot (taken at the end of init) holds none. On SHUTDOWN it stops the
# agent with SIGTERM. The function reads http://127.0.0.1:2773 with the token
# in SECRET_AGENT_TOKEN, which the function's configuration sets for both
# (see config.yaml).
set -euo pipefail

NAME="$(basename "$0")" # Lambda-Extension-Name must be the file name
API="http://${AWS_LAMBDA_RUNTIME_API}/2020-01-01/extension"
AGENT="${SECRET_AGENT_BIN:-/opt/bin/secret-agent}"
CONFIG="${SECRET_AGENT_CONFIG:-/opt/secret-agent/config.yaml}"
AGENT_URL="${SECRET_AGENT_URL:-http://127.0.0.1:2773}" # service.tcp.endpoint

log() { echo "[$NAME] $*" >&2; }

# Registration answers with the extension's id in a header; keep the headers.
headers="$(curl -sS --fail -D - -o /dev/null -X POST "$API/register" \
    -H "Lambda-Extension-Name: $NAME" \
    -H "Content-Type: application/json" \
    -d '{"events": ["INVOKE", "SHUTDOWN"]}')"
id="$(printf '%s\n' "$headers" | tr -d '\r' |
    sed -n 's/^[Ll]ambda-[Ee]xtension-[Ii]dentifier: *//p')"
if [[ -z "$id" ]]; then
    log "registration returned no Lambda-Extension-Identifier"
    exit 1
fi

# Tells Lambda why the extension failed; it then fails the init (or resets
# the environment) and shows the error type in the function's logs.
report_error() { # path error-type
    curl -sS -X POST "$API/$1" -H "Lambda-Extension-Identifier: $id" \
        -H "Lambda-Extension-Function-Error-Type: $2" -o /dev/null || true
}

# A bad config fails the init with a clear log line instead of leaving the
# function to time out against an agent that never started.
if ! "$AGENT" --config "$CONFIG" --check >/dev/null; then
    report_error init/error Extension.ConfigInvalid
    exit 1
fi

"$AGENT" -l --config "$CONFIG" >/dev/null &
agent_pid=$!

# The first /event/next ends this extension's init. Waiting for the agent to
# answer first means the first invocation finds it listening. Bounded: the
# whole init phase has 10 seconds.
deadline=$((SECONDS + 5))
until [[ "$(curl -s --max-time 1 "$AGENT_URL/ping" || true)" == healthy ]]; do
    if ! kill -0 "$agent_pid" 2>/dev/null; then
        report_error init/error Extension.AgentExited
        exit 1
    fi
    if ((SECONDS >= deadline)); then
        log "agent not answering yet; going on (the function should retry)"
        break
    fi
    sleep 0.1
done

# Lambda allows external extensions about 2 seconds for SHUTDOWN, then
# kills them; the agent's shutdown-timeout stays below that.
shutdown_re='"eventType"[[:space:]]*:[[:space:]]*"SHUTDOWN"'
invoke_re='"eventType"[[:space:]]*:[[:space:]]*"INVOKE"'
serving=false
while true; do
    if ! event="$(curl -sS --fail -H "Lambda-Extension-Identifier: $id" "$API/event/next")"; then
        log "event/next failed; stopping the agent"
        kill -TERM "$agent_pid" 2>/dev/null || true
        wait "$agent_pid" || true
        report_error exit/error Extension.EventNextFailed
        exit 1
    fi
    if [[ "$event" =~ $invoke_re ]] && ! $serving; then
        # Before the function's code runs on: it may read at once.
        if curl -s --fail --max-time 2 -o /dev/null "$AGENT_URL/start_serving"; then
            serving=true
        else
            log "the agent did not answer /start_serving; trying again on the next invoke"
        fi
    fi
    if [[ "$event" =~ $shutdown_re ]]; then
        kill -TERM "$agent_pid" 2>/dev/null || true
        status=0
        wait "$agent_pid" || status=$?
        log "agent stopped (status $status)"
        exit 0
    fi
done
