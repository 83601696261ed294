#!/usr/bin/env bash
# A client written for the AWS Secrets Manager Agent, as its documentation
# shows one (curl): it runs unchanged against secret-agent.
#
#   examples/aws-agent/get_secret.sh <secret name or ARN>
#
# The SSRF token comes from /var/run/awssmatoken and the agent is
# http://localhost:2773; AWS_AGENT_TOKEN_FILE and AWS_AGENT_URL override
# them (the tests use them).
set -euo pipefail
url="${AWS_AGENT_URL:-http://localhost:2773}"
token_file="${AWS_AGENT_TOKEN_FILE:-/var/run/awssmatoken}"
secret_id="${1:-MyTest}"

curl --silent --show-error --fail-with-body --max-time 10 -G \
    -H "X-Aws-Parameters-Secrets-Token: $(<"$token_file")" \
    --data-urlencode "secretId=$secret_id" \
    "$url/secretsmanager/get"
echo
