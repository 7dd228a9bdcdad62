"""The plain route in the hardened profile: what the proxy signs beside Atoma's signature. Pure.

Atoma's proxy signs only BLAKE2b-256 of the plain request's body (``X-Signature``), so a captured
proxy->node request replays to the node as often as one likes, and its ``X-Stack-Small-Id`` and
``X-Num-Compute-Units`` can be changed on the way. The hardened profile adds three headers,
which Atoma's nodes ignore:

* ``X-Request-Id``: 16 random bytes, hex, drawn by the proxy for this request;
* ``X-Request-Timestamp``: the proxy's clock, Unix seconds;
* ``X-Request-Signature``: the proxy's Sui signature over :func:`plain_request_digest` of the
  body's hash, the stack, the units, the request id and the timestamp.

A node of the hardened profile requires them, checks the signature (by the same key as
``X-Signature``) and remembers the request id inside its replay window, refusing a second use
(409 ``REPLAYED_REQUEST``) and a timestamp outside the window.
"""

from __future__ import annotations

from atoma_lab.crypto.hashing import HASH_SIZE, blake2b_256
from atoma_lab.errors import InvalidFieldError
from atoma_lab.protocol.hardened.layout import _u64

PLAIN_REQUEST_LABEL = b"atoma-lab/plain-request-v1\x00"
PLAIN_REQUEST_ID_SIZE = 16  # bytes
#: Where a plain request's id lives in the node's replay guard (apart from confidential ones).
PLAIN_REPLAY_PREFIX = b"plain:"


def plain_request_digest(body_hash: bytes, *, stack_small_id: int, num_compute_units: int,
                         request_id: bytes, timestamp: int) -> bytes:
    """BLAKE2b-256 of ``atoma-lab/plain-request-v1 0x00 ‖ body_hash ‖ stack_small_id (u64 BE)
    ‖ num_compute_units (u64 BE) ‖ request_id ‖ timestamp (u64 BE)``."""
    if len(body_hash) != HASH_SIZE:
        raise ValueError(f"body_hash must be {HASH_SIZE} bytes")
    if len(request_id) != PLAIN_REQUEST_ID_SIZE:
        raise ValueError(f"request_id must be {PLAIN_REQUEST_ID_SIZE} bytes")
    return blake2b_256(PLAIN_REQUEST_LABEL + body_hash + _u64(stack_small_id)
                       + _u64(num_compute_units) + request_id + _u64(timestamp))


def parse_request_id(text: str) -> bytes:
    """The bytes of an ``X-Request-Id`` header (32 lower-case hex digits), or
    :class:`InvalidFieldError` naming the header."""
    if len(text) != 2 * PLAIN_REQUEST_ID_SIZE or not all(c in "0123456789abcdef" for c in text):
        raise InvalidFieldError(f"X-Request-Id: expected {2 * PLAIN_REQUEST_ID_SIZE} lower-case "
                                "hex digits", field="X-Request-Id")
    return bytes.fromhex(text)


__all__ = [
    "PLAIN_REPLAY_PREFIX",
    "PLAIN_REQUEST_ID_SIZE",
    "PLAIN_REQUEST_LABEL",
    "parse_request_id",
    "plain_request_digest",
]
