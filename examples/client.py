#!/usr/bin/env python3
"""A minimal secret-agent client using only the standard library.

    python3 examples/client.py demo/db              # the whole secret
    python3 examples/client.py demo/db username     # one key of a JSON secret

SECRET_AGENT_URL defaults to http://127.0.0.1:2773. When the agent requires
a client token, set SECRET_AGENT_TOKEN to it, or SECRET_AGENT_TOKEN_FILE to
the file holding it (read on every request, so a rotated token is picked up);
it is sent as "Authorization: Bearer <token>". Errors come back as JSON
{"error": code, "message": text}; the client prints them and exits 1.
"""

import json
import os
import sys
import time
import urllib.error
import urllib.parse
import urllib.request

BASE_URL = os.environ.get("SECRET_AGENT_URL", "http://127.0.0.1:2773")


class SecretAgentError(Exception):
    def __init__(self, status: int, code: str, message: str):
        super().__init__(f"{status} {code}: {message}")
        self.status, self.code = status, code


def client_token() -> str | None:
    """SECRET_AGENT_TOKEN, else the contents of SECRET_AGENT_TOKEN_FILE, else None."""
    token = os.environ.get("SECRET_AGENT_TOKEN")
    if not token and os.environ.get("SECRET_AGENT_TOKEN_FILE"):
        with open(os.environ["SECRET_AGENT_TOKEN_FILE"], encoding="utf-8") as file:
            token = file.read().strip()
    return token or None


def get_secret(name: str, key: str | None = None, *, retries: int = 3) -> bytes:
    """Returns the secret (or one key of it) as bytes; retries 5xx answers."""
    path = "/secrets/" + urllib.parse.quote(name, safe="/")
    if key is not None:
        path += "/" + urllib.parse.quote(key, safe="")
    for attempt in range(retries):
        headers = {}
        if token := client_token():
            headers["Authorization"] = f"Bearer {token}"
        request = urllib.request.Request(BASE_URL + path, headers=headers)
        try:
            with urllib.request.urlopen(request, timeout=10) as response:
                return response.read()
        except urllib.error.HTTPError as err:
            body = err.read()
            try:
                detail = json.loads(body)
                error = SecretAgentError(err.code, detail["error"], detail["message"])
            except (ValueError, KeyError):
                error = SecretAgentError(err.code, "unknown", body[:200].decode(errors="replace"))
            if err.code < 500 or attempt == retries - 1:
                raise error from None
        except urllib.error.URLError:
            if attempt == retries - 1:
                raise
        time.sleep(0.2 * 2**attempt)
    raise AssertionError("unreachable")


def get_json_secret(name: str) -> dict:
    return json.loads(get_secret(name))


if __name__ == "__main__":
    if len(sys.argv) not in (2, 3):
        sys.exit(__doc__)
    try:
        value = get_secret(sys.argv[1], sys.argv[2] if len(sys.argv) == 3 else None)
    except SecretAgentError as err:
        print(f"secret-agent: {err}", file=sys.stderr)
        sys.exit(1)
    sys.stdout.buffer.write(value + b"\n")
