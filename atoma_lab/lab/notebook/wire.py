"""Bytes on the wire: previews, a message field by field, and what each service saw."""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from typing import Any

from atoma_lab.encoding import b64decode
from atoma_lab.transport.inprocess import Captured, reveals

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


def captured_rows(captured: Iterable[Any], secrets: Iterable[str] = ()) -> list[dict[str, Any]]:
    """What each service saw (``Network.captured``), one row per message: where, what, sizes and
    whether the request or response body contains any of ``secrets`` in clear (the rows of
    :meth:`Captured.rows <atoma_lab.transport.inprocess.Captured.rows>`)."""
    return [{k: v for k, v in row.items() if k != "error"}
            for row in Captured(captured).rows(secrets)]


__all__ = ["BINARY_FIELDS", "captured_rows", "preview", "reveals", "shorten", "wire_fields"]
