"""Atoma's confidential wire messages, with Atoma's JSON field names exactly.

Binary fields are ``bytes`` in Python and strict standard base64 on the wire
(atoma-protocol.md sections 1.1, 1.2, 1.4; structs in atoma-proxy ``src/server/types.rs`` and
atoma-node ``atoma-service/src/types.rs``). Each model is declared once, its fields in the Rust
struct's order (:mod:`atoma_lab.protocol.wire` derives the checks, the codec and the schema).
Parsing raises a subclass of :class:`~atoma_lab.errors.InvalidFieldError` that names the field;
messages never repeat values. A ``null`` required field counts as missing and unknown keys are
ignored, as serde does.
"""

from __future__ import annotations

from atoma_lab.crypto.aead import NONCE_SIZE, TAG_SIZE
from atoma_lab.crypto.hashing import HASH_SIZE
from atoma_lab.crypto.kdf import SALT_SIZE
from atoma_lab.crypto.keys import X25519_KEY_SIZE
from atoma_lab.display.html import fingerprint, kv_table, section
from atoma_lab.protocol.wire import (
    Base64Text,
    Bytes,
    Flag,
    Nested,
    Text,
    UInt,
    WireModel,
    wire,
    wire_fields,
)

DEFAULT_MAX_NUM_TOKENS = 8192  # MAX_NUM_TOKENS_FOR_CONFIDENTIAL_COMPUTE, atoma-proxy nodes.rs
DEFAULT_LOCK_TIMEOUT_S = 5  # MAX_TIMEOUT_FOR_CONFIDENTIAL_COMPUTE, seconds

SUI_SIGNATURE = "Sui signature: base64 of flag || signature || public key"


class ConfidentialComputeRequest(WireModel, root="body", what="confidential compute request"):
    """The body of ``POST /v1/confidential/embeddings`` (client -> proxy -> node)."""

    ciphertext: bytes = wire(Bytes(min_size=TAG_SIZE), repr=False,
                             description="AES-256-GCM output, tag appended")
    stack_small_id: int = wire(UInt())
    nonce: bytes = wire(Bytes(NONCE_SIZE), description="AES-GCM nonce")
    salt: bytes = wire(Bytes(SALT_SIZE), description="HKDF salt")
    client_dh_public_key: bytes = wire(Bytes(X25519_KEY_SIZE), description="ephemeral X25519 key")
    node_dh_public_key: bytes = wire(Bytes(X25519_KEY_SIZE),
                                     description="the node key it is sealed to")
    plaintext_body_hash: bytes = wire(Bytes(HASH_SIZE), description="BLAKE2b-256 of the plaintext")
    stream: bool | None = wire(Flag(), default=None, kw_only=True)  # before model_name, as in Rust
    model_name: str = wire(Text())
    num_compute_units: int | None = wire(UInt(), default=None, description=(
        f"units the request may use (default {DEFAULT_MAX_NUM_TOKENS})"))


_REQUEST_KINDS = {f.name: f.kind for f in wire_fields(ConfidentialComputeRequest)}
_check_stack = _REQUEST_KINDS["stack_small_id"].check
_check_model = _REQUEST_KINDS["model_name"].check
_check_stream = _REQUEST_KINDS["stream"].check
_check_units = _REQUEST_KINDS["num_compute_units"].check


def check_caller_fields(stack_small_id: object, model_name: object, stream: object,
                        num_compute_units: object) -> None:
    """The fields of a :class:`ConfidentialComputeRequest` its sender chooses rather than
    computes, checked by their declared kinds; ``seal_request`` checks these before building the
    request with ``trusted`` (called directly: a generic loop over them costs more than the
    construction it saves)."""
    _check_stack(stack_small_id, "stack_small_id")
    _check_model(model_name, "model_name")
    if stream is not None:
        _check_stream(stream, "stream")
    if num_compute_units is not None:
        _check_units(num_compute_units, "num_compute_units")


class Usage(WireModel, root="usage", what="usage"):
    """Atoma's ``Usage`` (clear-text copy beside a confidential response)."""

    prompt_tokens: int = wire(UInt())
    total_tokens: int = wire(UInt())
    completion_tokens: int | None = wire(UInt(), default=None)


class ConfidentialComputeResponse(WireModel, root="response",
                                  what="confidential compute response"):
    """The node's encrypted answer (node -> proxy -> client), keys in Atoma's order."""

    nonce: bytes = wire(Bytes(NONCE_SIZE), description="AES-GCM nonce of the response")
    ciphertext: bytes = wire(Bytes(min_size=TAG_SIZE), repr=False,
                             description="the sealed OpenAI response")
    response_hash: bytes | None = wire(Bytes(HASH_SIZE), default=None,
                                       description="BLAKE2b-256 of the response plaintext")
    signature: str | None = wire(Base64Text(), default=None, description=SUI_SIGNATURE)
    usage: Usage | None = wire(Nested(Usage), default=None)


class NodesCreateLockRequest(WireModel, root="body", what="lock request"):
    """Body of ``POST /v1/nodes/lock``."""

    model: str = wire(Text(nonempty=True))
    max_num_tokens: int | None = wire(UInt(1), default=None, description=(
        f"compute units to lock (default {DEFAULT_MAX_NUM_TOKENS})"))
    timeout: int | None = wire(UInt(1), default=None, description=(
        f"seconds the lock lives (default {DEFAULT_LOCK_TIMEOUT_S})"))

    @property
    def effective_max_num_tokens(self) -> int:
        return DEFAULT_MAX_NUM_TOKENS if self.max_num_tokens is None else self.max_num_tokens

    @property
    def effective_timeout_s(self) -> int:
        return DEFAULT_LOCK_TIMEOUT_S if self.timeout is None else self.timeout


class NodesCreateLockResponse(WireModel, root="response", what="lock response"):
    """Answer of ``POST /v1/nodes/lock``, keys in Atoma's struct order."""

    public_key: bytes = wire(Bytes(X25519_KEY_SIZE), description="the node's X25519 public key")
    node_small_id: int = wire(UInt())
    # Written as null when absent (Atoma's struct has no skip_serializing_if here).
    stack_entry_digest: str | None = wire(Text(), default=None, kw_only=True, write_null=True)
    stack_small_id: int = wire(UInt())

    # Shown in a notebook by the model itself (rendering is pure: fields in, a string out), so
    # a lock looks the same wherever it is displayed; the key appears as its fingerprint.
    def __repr__(self) -> str:
        return (f"NodesCreateLockResponse(node_small_id={self.node_small_id}, "
                f"stack_small_id={self.stack_small_id}, "
                f"public_key=<{fingerprint(self.public_key)}>, "
                f"stack_entry_digest={self.stack_entry_digest!r})")

    def _repr_html_(self) -> str:
        return section("Lock", kv_table({
            "node": self.node_small_id, "stack": self.stack_small_id,
            "node key (fingerprint)": fingerprint(self.public_key),
            "stack bought now (transaction digest)": self.stack_entry_digest,
        }))
