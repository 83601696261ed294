"""A client written for the AWS Secrets Manager Agent, as its documentation
shows one (Python, requests): it runs unchanged against secret-agent.

    python3 get_secret.py <secret name or ARN>

It reads the SSRF token from /var/run/awssmatoken and asks
http://localhost:2773/secretsmanager/get. AWS_AGENT_URL and
AWS_AGENT_TOKEN_FILE override those two (the tests use them); nothing else
differs from a client of the AWS agent.
"""

import os
import sys

import requests

AGENT_URL = os.environ.get("AWS_AGENT_URL", "http://localhost:2773")
TOKEN_FILE = os.environ.get("AWS_AGENT_TOKEN_FILE", "/var/run/awssmatoken")


def get_secret(secret_id):
    url = f"{AGENT_URL}/secretsmanager/get"
    with open(TOKEN_FILE) as token_file:
        token = token_file.read().strip()
    headers = {"X-Aws-Parameters-Secrets-Token": token}
    response = requests.get(url, params={"secretId": secret_id}, headers=headers, timeout=10)
    if response.status_code == 200:
        return response.text
    raise Exception(f"Status code {response.status_code} - {response.text}")


if __name__ == "__main__":
    print(get_secret(sys.argv[1] if len(sys.argv) > 1 else "MyTest"))
