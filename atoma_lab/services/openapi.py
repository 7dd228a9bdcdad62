"""The proxy's HTTP surface as an OpenAPI 3.1 document (served at ``GET /openapi.json``).

The schemas say what :class:`~atoma_lab.services.proxy.ProxyService` really accepts and answers,
not more: binary fields are strict standard base64 of their exact size (canonical: the unused
trailing bits of the last symbol are zero, as :func:`atoma_lab.encoding.b64decode` requires),
integers are u64 unless the code bounds them further, unknown request keys are ignored (serde's
rule, so ``additionalProperties`` is left open on requests), and every error is Atoma's
``{"error": {"code", "message"}}`` with the status its :class:`~atoma_lab.errors.AtomaLabError`
class carries. Node refusals that are the caller's fault pass through the proxy with their own
status and code, so the confidential and plain routes list those statuses too.

The document is built by a pure function; tests validate it against the OpenAPI 3.1 meta-schema
and run schemathesis against a live proxy.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from atoma_lab.crypto.aead import NONCE_SIZE, TAG_SIZE
from atoma_lab.crypto.attestation import NVIDIA_CC_GPU_DEVICE_SLOT
from atoma_lab.crypto.hashing import HASH_SIZE
from atoma_lab.crypto.kdf import SALT_SIZE
from atoma_lab.crypto.keys import X25519_KEY_SIZE
from atoma_lab.protocol import hardened
from atoma_lab.protocol.atoma.messages import DEFAULT_LOCK_TIMEOUT_S, DEFAULT_MAX_NUM_TOKENS
from atoma_lab.protocol.openai import MAX_INPUTS, MAX_TOKEN_ID
from atoma_lab.services.metrics import PROMETHEUS_CONTENT_TYPE

OPENAPI_VERSION = "3.1.0"
U64_MAX = 2**64 - 1
U32_MAX = 2**32 - 1
_B64 = "[A-Za-z0-9+/]"
# The last symbol before padding may carry only data bits: 2 of them before "==", 4 before "=".
_LAST_BEFORE_TWO_PADS = "[AQgw]"
_LAST_BEFORE_ONE_PAD = "[AEIMQUYcgkosw048]"
JSON = "application/json"
ERROR_REF = "#/components/schemas/Error"


def b64_pattern(size: int | None = None) -> str:
    """A regular expression for canonical padded standard base64, of ``size`` bytes if given."""
    if size is None:
        return (f"^(?:{_B64}{{4}})*(?:{_B64}{_LAST_BEFORE_TWO_PADS}==|"
                f"{_B64}{{2}}{_LAST_BEFORE_ONE_PAD}=)?$")
    full, rest = divmod(size, 3)
    tail = {0: "", 1: f"{_B64}{_LAST_BEFORE_TWO_PADS}==",
            2: f"{_B64}{{2}}{_LAST_BEFORE_ONE_PAD}="}[rest]
    return f"^(?:{_B64}{{4}}){{{full}}}{tail}$"


def _b64(size: int | None = None, *, description: str, min_bytes: int = 0) -> dict[str, Any]:
    schema: dict[str, Any] = {"type": "string", "contentEncoding": "base64",
                              "pattern": b64_pattern(size), "description": description}
    if size is not None:
        schema["minLength"] = schema["maxLength"] = 4 * ((size + 2) // 3)
    elif min_bytes:
        schema["minLength"] = 4 * ((min_bytes + 2) // 3)
    return schema


def _int(minimum: int = 0, maximum: int = U64_MAX, **extra: Any) -> dict[str, Any]:
    return {"type": "integer", "minimum": minimum, "maximum": maximum, **extra}


def _nullable(schema: dict[str, Any]) -> dict[str, Any]:
    return {"anyOf": [schema, {"type": "null"}]}


def _object(properties: dict[str, Any], required: Sequence[str], *, closed: bool = False,
            description: str | None = None) -> dict[str, Any]:
    schema: dict[str, Any] = {"type": "object", "properties": properties,
                              "required": list(required)}
    if closed:
        schema["additionalProperties"] = False
    if description:
        schema["description"] = description
    return schema


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def _schemas(models: Sequence[str]) -> dict[str, Any]:
    model_name: dict[str, Any] = {"type": "string", "minLength": 1}
    if models:
        model_name["examples"] = list(models)
    usage = _object({"prompt_tokens": _int(), "total_tokens": _int()},
                    ["prompt_tokens", "total_tokens"], closed=True)
    sui_signature = {"type": "string", "pattern": b64_pattern(),
                     "description": "Sui signature: base64 of flag || signature || public key"}
    token_ids = {"type": "array", "items": _int(0, MAX_TOKEN_ID), "minItems": 1}
    return {
        "Error": _object({
            "error": _object({"code": {"type": "string", "pattern": "^[A-Z][A-Z0-9_]*$"},
                              "message": {"type": "string"}}, ["code", "message"], closed=True),
        }, ["error"], closed=True, description="Atoma's ErrorResponse"),
        "NodesCreateLockRequest": _object({
            "model": model_name,
            "max_num_tokens": _nullable(_int(1, description=(
                f"compute units to lock (default {DEFAULT_MAX_NUM_TOKENS})"))),
            "timeout": _nullable(_int(1, description=(
                f"seconds the lock lives (default {DEFAULT_LOCK_TIMEOUT_S})"))),
        }, ["model"]),
        "NodesCreateLockResponse": _object({
            "public_key": _b64(X25519_KEY_SIZE, description="the node's X25519 public key"),
            "node_small_id": _int(),
            "stack_entry_digest": _nullable({"type": "string", "minLength": 1}),
            "stack_small_id": _int(),
        }, ["public_key", "node_small_id", "stack_entry_digest", "stack_small_id"], closed=True),
        "ConfidentialComputeRequest": _object({
            "ciphertext": _b64(description="AES-256-GCM output, tag appended", min_bytes=TAG_SIZE),
            "stack_small_id": _int(),
            "nonce": _b64(NONCE_SIZE, description="AES-GCM nonce"),
            "salt": _b64(SALT_SIZE, description="HKDF salt"),
            "client_dh_public_key": _b64(X25519_KEY_SIZE, description="ephemeral X25519 key"),
            "node_dh_public_key": _b64(X25519_KEY_SIZE, description="the node key it is sealed to"),
            "plaintext_body_hash": _b64(HASH_SIZE, description="BLAKE2b-256 of the plaintext"),
            "stream": _nullable({"type": "boolean"}),
            "model_name": {"type": "string"},
            "num_compute_units": _nullable(_int(description=(
                f"units the request may use (default {DEFAULT_MAX_NUM_TOKENS})"))),
        }, ["ciphertext", "stack_small_id", "nonce", "salt", "client_dh_public_key",
            "node_dh_public_key", "plaintext_body_hash", "model_name"]),
        "ConfidentialComputeResponse": _object({
            "nonce": _b64(NONCE_SIZE, description="AES-GCM nonce of the response"),
            "ciphertext": _b64(description="the sealed OpenAI response", min_bytes=TAG_SIZE),
            "response_hash": _b64(HASH_SIZE, description="BLAKE2b-256 of the response plaintext"),
            "signature": sui_signature,
            "usage": _ref("Usage"),
        }, ["nonce", "ciphertext", "response_hash", "signature", "usage"], closed=True),
        "HardenedComputeRequest": _object({
            "profile": {"enum": list(hardened.PROFILES)},
            "model_name": {"type": "string", "minLength": 1},
            "stack_small_id": _int(),
            "node_key_id": _b64(hardened.KEY_ID_SIZE,
                                description="BLAKE2b-256 of the node key it is sealed to"),
            "client_dh_public_key": _b64(X25519_KEY_SIZE,
                                         description="ephemeral X25519 key (HPKE enc)"),
            "salt": _b64(SALT_SIZE, description="HKDF salt"),
            "nonce": _b64(NONCE_SIZE, description="AES-GCM nonce (bound in the AAD)"),
            "timestamp": _int(description="client Unix time, seconds (replay window)"),
            "request_id": _b64(hardened.REQUEST_ID_SIZE, description="random request id"),
            "num_compute_units": _int(),
            "ciphertext": _b64(description="AES-256-GCM output with the AAD, tag appended",
                               min_bytes=TAG_SIZE),
        }, ["profile", "model_name", "stack_small_id", "node_key_id", "client_dh_public_key",
            "salt", "nonce", "timestamp", "request_id", "ciphertext"], closed=True,
            description="atoma-lab's hardened profile (not Atoma's)"),
        "HardenedComputeResponse": _object({
            "profile": {"enum": list(hardened.PROFILES)},
            "request_id": _b64(hardened.REQUEST_ID_SIZE, description="the request it answers"),
            "request_hash": _b64(HASH_SIZE, description="BLAKE2b-256 of request AAD and ciphertext"),
            "nonce": _b64(NONCE_SIZE, description="AES-GCM nonce of the response"),
            "ciphertext": _b64(description="the sealed OpenAI response", min_bytes=TAG_SIZE),
            "signature": sui_signature,
            "usage": _ref("Usage"),
        }, ["profile", "request_id", "request_hash", "nonce", "ciphertext", "signature"],
            closed=True),
        "Usage": usage,
        "CreateEmbeddingRequest": _object({
            "input": {"anyOf": [
                {"type": "string"},
                {"type": "array", "items": {"type": "string"}, "minItems": 1,
                 "maxItems": MAX_INPUTS},
                token_ids,
                {"type": "array", "items": token_ids, "minItems": 1, "maxItems": MAX_INPUTS},
            ]},
            "model": model_name,
            "encoding_format": _nullable({"enum": ["float", "base64"]}),
            "dimensions": _nullable(_int(1, U32_MAX)),
            "user": _nullable({"type": "string"}),
        }, ["input", "model"]),
        "SignedEmbeddingResponse": _object({
            "object": {"const": "list"},
            "data": {"type": "array", "items": _object({
                "object": {"const": "embedding"},
                "embedding": {"anyOf": [
                    {"type": "array", "items": {"type": "number"}},
                    _b64(description="little-endian float32 values"),
                ]},
                "index": _int(),
            }, ["object", "embedding", "index"], closed=True)},
            "model": {"type": "string"},
            "usage": usage,
            "signature": sui_signature,
            "response_hash": _b64(HASH_SIZE, description="BLAKE2b-256 of the rest, serde-compact"),
        }, ["object", "data", "model", "usage", "signature", "response_hash"], closed=True),
        "ModelList": _object({
            "object": {"const": "list"},
            "data": {"type": "array", "items": _object({
                "id": {"type": "string"}, "object": {"const": "model"}, "created": _int(),
                "owned_by": {"type": "string"},
            }, ["id", "object", "created", "owned_by"], closed=True)},
        }, ["object", "data"], closed=True),
        "AttestationReport": _object({
            "device_type": _int(0, 2**16 - 1, examples=[NVIDIA_CC_GPU_DEVICE_SLOT]),
            "issued_at": {"type": "number"},
            "key_rotation_counter": _int(),
            "measurement": {"type": "string"},
            "node_small_id": _int(),
            "public_key": _b64(X25519_KEY_SIZE, description="the attested X25519 key"),
            "report_data": _b64(32, description="BLAKE3(nonce || key || device_type)"),
            "rotation_nonce": _int(),
            "signer_address": {"type": "string"},
        }, ["device_type", "issued_at", "key_rotation_counter", "measurement", "node_small_id",
            "public_key", "report_data", "rotation_nonce", "signer_address"]),
        "AttestationEvidence": _object({
            "evidence_type": {"const": "device"},
            "report": _ref("AttestationReport"),
            "vendor_signature": sui_signature,
        }, ["evidence_type", "report", "vendor_signature"]),
        "NodeAttestation": _object({
            "node_small_id": _int(),
            "sui_address": {"type": "string"},
            "key_rotation_counter": _int(),
            "evidence": _ref("AttestationEvidence"),
        }, ["node_small_id", "sui_address", "key_rotation_counter", "evidence"], closed=True),
        "StackInfo": _object({"stack_small_id": _int(), "owner_address": {"type": "string"},
                              "node_small_id": _int()},
                             ["stack_small_id", "owner_address", "node_small_id"], closed=True),
        "KeyAccepted": _object({"node_small_id": _int(), "valid": {"type": "boolean"}},
                               ["node_small_id", "valid"], closed=True),
        "Health": _object({"message": {"const": "ok"}}, ["message"], closed=True),
    }


# What each status means where it is listed (the error codes are those of atoma_lab.errors).
_ERRORS = {
    400: "malformed request: INVALID_JSON, INVALID_FIELD, MISSING_FIELD, INVALID_BASE64, "
         "INVALID_LENGTH, MODEL_MISMATCH, INPUT_TOO_LONG, DECRYPTION_FAILED, HASH_MISMATCH, "
         "INVALID_PUBLIC_KEY, ATTESTATION_FAILED",
    401: "AUTH_ERROR (missing, malformed or unknown bearer token) or INVALID_SIGNATURE",
    402: "BALANCE_ERROR: the user cannot pay for a new stack",
    403: "FORBIDDEN: the stack belongs to another user",
    404: "NOT_FOUND, MODEL_NOT_FOUND or STACK_NOT_FOUND",
    409: "STALE_NODE_KEY: sealed to a key the node no longer holds; lock and seal again",
    413: "BODY_TOO_LARGE, or COMPUTE_UNITS_EXCEEDED (more units than num_compute_units)",
    423: "LOCKED: the stack is claimed or settling",
    425: "UNAVAILABLE_STACK: no unexpired lock covers the request, or a lock larger than a stack",
    502: "BAD_PEER_RESPONSE or NODE_ERROR: the node failed or answered badly; nothing charged",
    503: "SERVICE_UNAVAILABLE: no attested, healthy node, or the node is unreachable",
    504: "GATEWAY_TIMEOUT: the node did not answer in time",
}
_FORWARDED = (400, 401, 402, 403, 404, 409, 413, 423, 425, 502, 503, 504)


def _json_body(schema: dict[str, Any]) -> dict[str, Any]:
    return {"required": True, "content": {JSON: {"schema": schema}}}


def _responses(ok: dict[str, Any] | None, errors: Sequence[int], *,
               ok_description: str = "success", media: str = JSON) -> dict[str, Any]:
    out: dict[str, Any] = {}
    if ok is not None:
        out["200"] = {"description": ok_description, "content": {media: {"schema": ok}}}
    for status in errors:
        out[str(status)] = {"description": _ERRORS[status],
                            "content": {JSON: {"schema": {"$ref": ERROR_REF}}}}
    return out


def _operation(summary: str, operation_id: str, responses: dict[str, Any], *,
               auth: bool | str, body: dict[str, Any] | None = None,
               parameters: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    """``auth``: ``True`` for the user's bearer token, a scheme's name for another, ``False``
    for none."""
    scheme = "bearerAuth" if auth is True else auth
    op: dict[str, Any] = {"summary": summary, "operationId": operation_id,
                          "security": [{scheme: []}] if scheme else [],
                          "responses": responses}
    if body is not None:
        op["requestBody"] = _json_body(body)
    if parameters:
        op["parameters"] = parameters
    return op


def openapi_document(*, models: Sequence[str] = (), server_url: str | None = None) -> dict[str, Any]:
    """The OpenAPI 3.1 description of the proxy's routes. ``models`` become examples of the
    ``model`` fields; ``server_url`` fills ``servers``."""
    paths = {
        "/v1/nodes/lock": {"post": _operation(
            "Lock compute units on a stack and get the node's X25519 key", "nodesCreateLock",
            _responses(_ref("NodesCreateLockResponse"), (400, 401, 402, 404, 413, 425, 503)),
            auth=True, body=_ref("NodesCreateLockRequest"))},
        "/v1/confidential/embeddings": {"post": _operation(
            "Embeddings of a sealed request; the answer is sealed to the client",
            "confidentialEmbeddingsCreate",
            _responses({"oneOf": [_ref("ConfidentialComputeResponse"),
                                  _ref("HardenedComputeResponse")]}, _FORWARDED),
            auth=True, body={"oneOf": [_ref("ConfidentialComputeRequest"),
                                       _ref("HardenedComputeRequest")]})},
        "/v1/embeddings": {"post": _operation(
            "Plain OpenAI embeddings (the proxy and node see the text)", "embeddingsCreate",
            _responses(_ref("SignedEmbeddingResponse"), _FORWARDED),
            auth=True, body=_ref("CreateEmbeddingRequest"))},
        "/v1/models": {"get": _operation(
            "Models some node serves", "modelsList", _responses(_ref("ModelList"), (401,)),
            auth=True)},
        "/v1/nodes/attestation": {
            "get": _operation(
                "A node's current key and its attestation evidence", "nodeAttestationGet",
                _responses(_ref("NodeAttestation"), (400, 404)), auth=False,
                parameters=[{"name": "node_small_id", "in": "query", "required": True,
                             "schema": _int()}]),
            "post": _operation(
                "A node announces a rotated key (X-Signature: the node's Sui signature over "
                "BLAKE2b-256 of the body)", "nodeAttestationPublish",
                _responses(_ref("KeyAccepted"), (400, 401, 404, 413)), auth=False,
                body=_ref("AttestationEvidence"),
                parameters=[{"name": "X-Signature", "in": "header", "required": True,
                             "schema": {"type": "string"}}]),
        },
        "/v1/stacks": {"get": _operation(
            "A stack's owner address and node, for the node it is assigned to (X-Signature: "
            "that node's Sui signature over BLAKE2b-256 of 'atoma-lab/stack-lookup-v1', the "
            "node's and the stack's ids as big-endian u64)", "stackInfo",
            _responses(_ref("StackInfo"), (400, 401, 404)), auth=False,
            parameters=[{"name": "stack_small_id", "in": "query", "required": True,
                         "schema": _int()},
                        {"name": "X-Node-Small-Id", "in": "header", "required": True,
                         "schema": {"type": "string", "pattern": "^[0-9]{1,20}$"}},
                        {"name": "X-Signature", "in": "header", "required": True,
                         "schema": {"type": "string"}}])},
        "/health": {"get": _operation("Liveness", "health", _responses(_ref("Health"), ()),
                                      auth=False)},
        "/metrics": {"get": _operation(
            "Prometheus text exposition (for the operator's metrics token)", "metrics",
            _responses({"type": "string"}, (401,), media=PROMETHEUS_CONTENT_TYPE.split(";")[0]),
            auth="metricsToken")},
        "/openapi.json": {"get": _operation(
            "This document", "openapi", _responses({"type": "object"}, ()), auth=False)},
    }
    doc: dict[str, Any] = {
        "openapi": OPENAPI_VERSION,
        "info": {"title": "atoma-lab proxy", "version": "0.1.0",
                 "description": "Atoma's proxy API for confidential embeddings, as atoma-lab "
                                "simulates it."},
        "jsonSchemaDialect": "https://spec.openapis.org/oas/3.1/dialect/base",
        "paths": paths,
        "components": {
            "schemas": _schemas(models),
            "securitySchemes": {"bearerAuth": {"type": "http", "scheme": "bearer",
                                               "description": "the user's API token"},
                                "metricsToken": {"type": "http", "scheme": "bearer",
                                                 "description": "the operator's metrics token"}},
        },
    }
    if server_url is not None:
        doc["servers"] = [{"url": server_url}]
    return doc


__all__ = ["OPENAPI_VERSION", "b64_pattern", "openapi_document"]
