"""Raw HTTP/1.1 over a socket on loopback, for tests that send what an HTTP client would refuse
to: connect, read every byte until the server closes, and pick out the status and error code."""

from __future__ import annotations

import socket

import orjson


def connect(port: int, timeout_s: float = 10.0, host: str = "127.0.0.1") -> socket.socket:
    sock = socket.create_connection((host, port), timeout=timeout_s)
    sock.settimeout(timeout_s)
    return sock


def read_until_closed(sock: socket.socket) -> bytes:
    """Everything the server sends until it closes (a reset after its answer counts as closed)."""
    out = b""
    while True:
        try:
            chunk = sock.recv(65536)
        except ConnectionResetError:
            return out
        if not chunk:
            return out
        out += chunk


def status_and_code(raw: bytes) -> tuple[int, str | None]:
    """The status of a raw answer and its JSON error code (``None`` where its body has none)."""
    head, _, body = raw.partition(b"\r\n\r\n")
    status = int(head.split(b" ", 2)[1])
    try:
        return status, orjson.loads(body)["error"]["code"]
    except (orjson.JSONDecodeError, KeyError, TypeError):
        return status, None
