#!/bin/bash
# Runs the AWS Workload Credentials Provider's integration suite (its newest
# commit, unchanged) against secret-agent installed under its name, with moto
# (IAM enforced after setup) in place of AWS. The suite stays outside this
# repository, in PEER; see docs/aws-agent.md.
set -euo pipefail
AGENT=${AGENT:-$(cd "$(dirname "$0")/.." && pwd)/target/debug/secret-agent}
PEER=${PEER:-/work/peer/wcp}
PY=${PY:-$(cd "$(dirname "$0")" && pwd)/.venv/bin/python}
PORT=${PORT:-5577}
mkdir -p "$PEER/target/debug"
cp "$AGENT" "$PEER/target/debug/aws-workload-credentials-provider"
# Six setup calls unauthenticated, then IAM is enforced.
INITIAL_NO_AUTH_ACTION_COUNT=6 "$PY" -m moto.server -p "$PORT" > "${MOTO_LOG:-/dev/null}" 2>&1 &
MOTO=$!
trap 'kill $MOTO' EXIT
for _ in $(seq 50); do curl -s "http://127.0.0.1:$PORT/moto-api/" >/dev/null && break; sleep 0.2; done
KEYS=$("$PY" - "$PORT" <<'PYEOF'
import json, sys, boto3
kw = dict(endpoint_url=f"http://127.0.0.1:{sys.argv[1]}", region_name="us-east-1",
          aws_access_key_id="testing", aws_secret_access_key="testing")
iam = boto3.client("iam", **kw)
iam.create_user(UserName="admin")
key = iam.create_access_key(UserName="admin")["AccessKey"]
allow = lambda actions: json.dumps({"Version": "2012-10-17", "Statement": [
    {"Effect": "Allow", "Action": actions, "Resource": "*"}]})
iam.put_user_policy(UserName="admin", PolicyName="all", PolicyDocument=allow("*"))
trust = json.dumps({"Version": "2012-10-17", "Statement": [{"Effect": "Allow",
    "Principal": {"AWS": "*"}, "Action": "sts:AssumeRole"}]})
iam.create_role(RoleName="asm-role-chaining-role", AssumeRolePolicyDocument=trust)
iam.put_role_policy(RoleName="asm-role-chaining-role", PolicyName="read",
                    PolicyDocument=allow(["secretsmanager:*"]))
iam.create_role(RoleName="provider-no-access-role", AssumeRolePolicyDocument=trust)
# The provider takes only temporary keys from a credentials file, and its
# file tests write the suite's own keys there: the suite runs as a role.
admin = dict(kw, aws_access_key_id=key["AccessKeyId"],
             aws_secret_access_key=key["SecretAccessKey"])
iam = boto3.client("iam", **admin)
role = iam.create_role(RoleName="suite-admin", AssumeRolePolicyDocument=trust)["Role"]
iam.put_role_policy(RoleName="suite-admin", PolicyName="all", PolicyDocument=allow("*"))
creds = boto3.client("sts", **admin).assume_role(
    RoleArn=role["Arn"], RoleSessionName="suite", DurationSeconds=3600)["Credentials"]
print(creds["AccessKeyId"], creds["SecretAccessKey"], creds["SessionToken"])
PYEOF
)
read -r KEY SECRET TOKEN <<< "$KEYS"
cd "$PEER/integration-tests"
AWS_ENDPOINT_URL="http://127.0.0.1:$PORT" AWS_REGION=us-east-1 \
AWS_ACCESS_KEY_ID="$KEY" AWS_SECRET_ACCESS_KEY="$SECRET" AWS_SESSION_TOKEN="$TOKEN" \
  cargo test --no-fail-fast ${TESTS:---test cache_behavior --test configuration --test file_credentials \
    --test prefetch --test role_chaining --test secret_retrieval --test security \
    --test version_management} -- --test-threads=1 "$@"
