#!/usr/bin/env python3
"""A client of the Aerospike Secret Agent protocol, as Aerospike servers speak it.

    python3 examples/aerospike/sa_client.py TestingSecret password
    SECRET_AGENT_ADDRESS=127.0.0.1:3005 python3 examples/aerospike/sa_client.py db
    SECRET_AGENT_SOCKET=/run/secret-agent/agent.sock python3 examples/aerospike/sa_client.py db key

Sends one request (an 8-byte header: the magic 0x51dec1cc and the JSON's
length, both big-endian 32-bit; then {"Resource": ..., "SecretKey": ...}),
reads one answer of the same shape, and prints the base64-decoded
SecretValue. An {"Error": ...} answer is printed to stderr, exit status 1.
"""

import base64
import json
import os
import socket
import struct
import sys

MAGIC = 0x51DEC1CC
MAX_ANSWER = 100 * 1024


class SecretAgentError(Exception):
    pass


def read_exactly(sock: socket.socket, n: int) -> bytes:
    data = b""
    while len(data) < n:
        chunk = sock.recv(n - len(data))
        if not chunk:
            raise SecretAgentError("the agent closed the connection")
        data += chunk
    return data


def request(sock: socket.socket, resource: str | None, key: str) -> bytes:
    """One request on an open connection; returns the decoded secret value."""
    body = {"SecretKey": key} if resource is None else {"Resource": resource, "SecretKey": key}
    payload = json.dumps(body).encode()
    sock.sendall(struct.pack(">II", MAGIC, len(payload)) + payload)
    magic, length = struct.unpack(">II", read_exactly(sock, 8))
    if magic != MAGIC:
        raise SecretAgentError(f"bad magic {magic:#x}")
    if length > MAX_ANSWER:
        raise SecretAgentError(f"answer too big ({length} bytes)")
    answer = json.loads(read_exactly(sock, length))
    if "Error" in answer:
        raise SecretAgentError(answer["Error"])
    return base64.b64decode(answer["SecretValue"].rstrip(" \t\n\r\f\v"), validate=True)


def connect() -> socket.socket:
    path = os.environ.get("SECRET_AGENT_SOCKET")
    if path:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(10)
        sock.connect(path)
        return sock
    host, _, port = os.environ.get("SECRET_AGENT_ADDRESS", "127.0.0.1:3005").rpartition(":")
    return socket.create_connection((host, int(port)), timeout=10)


def main() -> int:
    if len(sys.argv) not in (2, 3):
        print(__doc__, file=sys.stderr)
        return 2
    resource, key = sys.argv[1], sys.argv[2] if len(sys.argv) == 3 else ""
    try:
        with connect() as sock:
            value = request(sock, resource, key)
    except (OSError, SecretAgentError) as e:
        print(f"secret agent: {e}", file=sys.stderr)
        return 1
    sys.stdout.buffer.write(value)
    sys.stdout.buffer.write(b"\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
