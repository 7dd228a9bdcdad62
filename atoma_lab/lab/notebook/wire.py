"""Bytes on the wire: previews, a message field by field, and what each service saw."""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from typing import Any

from atoma_lab.encoding import b64decode

# Wire fields that carry base64 bytes, in a ConfidentialComputeRequest or its response.
BINARY_FIELDS = frozenset({"ciphertext", "nonce", "salt", "client_dh_public_key",
                           "node_dh_public_key", "plaintext_body_hash", "response_hash",
                           "signature"})


def preview(data: bytes, n: int = 16) -> str:
    """The first ``n`` bytes in hex, then an ellipsis and the length if there are more."""
    if not isinstance(data, bytes | bytearray | memoryview):
        raise TypeError(f"data must be bytes, not {type(data).__name__}")
    data = bytes(data)
    if len(data) <= n:
        return data.hex()
    return f"{data[:n].hex()}… ({len(data)} bytes)"


def shorten(text: str, n: int = 44) -> str:
    """``text`` cut to ``n`` characters with an ellipsis and its full length."""
    return text if len(text) <= n else f"{text[:n]}… ({len(text)} chars)"


def wire_fields(wire: Mapping[str, Any], *, n: int = 40) -> list[dict[str, Any]]:
    """One row per field of a wire message: the JSON value (shortened), and for base64 fields
    the number of bytes it decodes to and their hex preview (empty strings for other fields)."""
    rows = []
    for name, value in wire.items():
        row: dict[str, Any] = {"field": name, "wire value": shorten(json.dumps(value), n),
                               "bytes": "", "hex": ""}
        if name in BINARY_FIELDS and isinstance(value, str):
            raw = b64decode(value, field=name)
            row["bytes"] = len(raw)
            row["hex"] = preview(raw, 8)
        rows.append(row)
    return rows


def _forms(secret: str) -> list[bytes]:
    """How a string can appear inside a JSON body: raw UTF-8 and ASCII-escaped."""
    raw = secret.encode("utf-8")
    escaped = json.dumps(secret)[1:-1].encode("ascii")
    return list(dict.fromkeys([raw, escaped]))


def reveals(body: bytes, secrets: Iterable[str]) -> bool:
    """Whether ``body`` contains any of ``secrets`` (raw or JSON-escaped)."""
    return any(form in body for s in secrets if s for form in _forms(s))


def captured_rows(captured: Iterable[Any], secrets: Iterable[str] = ()) -> list[dict[str, Any]]:
    """What each service saw (``Network.captured``), one row per message: where, what, sizes and
    whether the request or response body contains any of ``secrets`` in clear."""
    secrets = list(secrets)
    rows = []
    for m in captured:
        resp = m.response
        rows.append({
            "address": m.address,
            "method": m.request.method,
            "path": m.request.path,
            "status": None if resp is None else resp.status,
            "request bytes": len(m.request.body),
            "response bytes": None if resp is None else len(resp.body),
            "plaintext visible": reveals(m.request.body, secrets)
            or (resp is not None and reveals(resp.body, secrets)),
        })
    return rows
