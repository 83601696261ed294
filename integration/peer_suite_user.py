"""Creates, in a moto server that enforces IAM (INITIAL_NO_AUTH_ACTION_COUNT=3),
an IAM user for the AWS agent's own integration suite, and prints its keys as
AWS_ACCESS_KEY_ID=... AWS_SECRET_ACCESS_KEY=... lines for `env`.

Usage: python3 integration/peer_suite_user.py http://127.0.0.1:5055
See docs/aws-agent.md, "Its own test suite".
"""

import json
import sys

import boto3

POLICY = {
    "Version": "2012-10-17",
    "Statement": [
        {"Effect": "Allow", "Action": ["secretsmanager:*", "sts:GetCallerIdentity"], "Resource": "*"}
    ],
}


def main() -> None:
    endpoint = sys.argv[1]
    iam = boto3.client(
        "iam",
        endpoint_url=endpoint,
        region_name="us-east-1",
        aws_access_key_id="setup",
        aws_secret_access_key="setup",
    )
    iam.create_user(UserName="peer-suite")
    key = iam.create_access_key(UserName="peer-suite")["AccessKey"]
    iam.put_user_policy(
        UserName="peer-suite", PolicyName="suite", PolicyDocument=json.dumps(POLICY)
    )
    print(f"AWS_ACCESS_KEY_ID={key['AccessKeyId']}")
    print(f"AWS_SECRET_ACCESS_KEY={key['SecretAccessKey']}")


if __name__ == "__main__":
    main()
