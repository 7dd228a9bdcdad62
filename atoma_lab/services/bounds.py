"""How large a node's answer may be, derived from the request it answers (issue 16, item 2).

The proxy reads a node's answer only up to this bound; past it the answer is 502
``BAD_PEER_RESPONSE``, the connection dropped, the lock released and nothing charged. Every
figure is an upper bound with room to spare, so that no honest answer comes near it:

* an embedding's vector as JSON floats takes at most :data:`FLOAT_JSON_BYTES` bytes a
  component (a node writes float32 values the serde_json way, as f64: ``-1.2345678901234567e-38,``
  is 24 bytes), as base64 float32 at most :data:`FLOAT_BASE64_BYTES`; each embedding adds its
  object's keys and index, the answer its model name, usage, hash and signature;
* the plain route's request names its inputs, ``dimensions`` and ``encoding_format``; without
  ``dimensions`` the model's is taken to be at most ``max_dimensions``;
* the confidential route's plaintext is sealed, so the proxy bounds it from what it sees: the
  ciphertext's length (each input costs at least :data:`MIN_INPUT_JSON_BYTES` bytes of the
  request's JSON) and ``num_compute_units`` (each input at least one token), with the model's
  dimension at ``max_dimensions`` and JSON floats; the answer is that, sealed (base64 of the
  ciphertext, its tag, the envelope's fields).

The whole is then doubled (:data:`SPARE`) and never more than a ceiling (default
:data:`~atoma_lab.transport.base.DEFAULT_MAX_RESPONSE_BYTES`).
"""

from __future__ import annotations

from atoma_lab.protocol.openai import CreateEmbeddingRequest
from atoma_lab.transport.base import DEFAULT_MAX_RESPONSE_BYTES

DEFAULT_MAX_DIMENSIONS = 4096  # components a served model's vector has at most, when not told
FLOAT_JSON_BYTES = 26  # bytes one float32 takes as an f64 JSON number and its comma, at most
FLOAT_BASE64_BYTES = 6  # bytes one float32 takes in base64 (4 bytes -> 5.34 characters), at most
EMBEDDING_OVERHEAD_BYTES = 96  # {"object":"embedding","embedding":...,"index":N}, at most
ANSWER_OVERHEAD_BYTES = 16 * 1024  # object, model, usage, response_hash, signature, nonce, ...
MIN_INPUT_JSON_BYTES = 3  # the shortest input in a request's JSON: "",
SPARE = 2  # the bound is this many times the largest honest answer
STACK_LOOKUP_MAX_BYTES = 4096  # a proxy's answer to a node's stack look-up
NODE_INFO_MAX_BYTES = 1 << 20  # a node's attestation (a TDX quote with its certificates) or model list


def _embeddings_bytes(inputs: int, dimensions: int, base64: bool) -> int:
    per_float = FLOAT_BASE64_BYTES if base64 else FLOAT_JSON_BYTES
    return inputs * (dimensions * per_float + EMBEDDING_OVERHEAD_BYTES)


def plain_response_limit(request: CreateEmbeddingRequest, *, request_bytes: int,
                         max_dimensions: int = DEFAULT_MAX_DIMENSIONS) -> int:
    """The most bytes a node's answer to the plain ``request`` (``request_bytes`` long) may
    have."""
    dimensions = request.dimensions or max_dimensions
    body = _embeddings_bytes(len(request.inputs()), dimensions,
                             request.encoding_format == "base64")
    return SPARE * (body + ANSWER_OVERHEAD_BYTES + request_bytes)


def confidential_response_limit(*, ciphertext_bytes: int, num_compute_units: int,
                                request_bytes: int,
                                max_dimensions: int = DEFAULT_MAX_DIMENSIONS) -> int:
    """The most bytes a node's sealed answer may have, for a sealed request whose ciphertext is
    ``ciphertext_bytes`` long (the plaintext is no longer), allowed ``num_compute_units``."""
    inputs = max(1, min(ciphertext_bytes // MIN_INPUT_JSON_BYTES + 1, num_compute_units))
    plaintext = _embeddings_bytes(inputs, max_dimensions, False) + ANSWER_OVERHEAD_BYTES \
        + request_bytes
    sealed = (plaintext + 2) // 3 * 4  # base64 of the ciphertext, its tag inside the spare
    return SPARE * (sealed + ANSWER_OVERHEAD_BYTES)


__all__ = [
    "DEFAULT_MAX_DIMENSIONS",
    "DEFAULT_MAX_RESPONSE_BYTES",
    "NODE_INFO_MAX_BYTES",
    "STACK_LOOKUP_MAX_BYTES",
    "confidential_response_limit",
    "plain_response_limit",
]
