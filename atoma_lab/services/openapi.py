"""The proxy's HTTP surface as an OpenAPI 3.1 document (served at ``GET /openapi.json``).

The schemas say what :class:`~atoma_lab.services.proxy.ProxyService` really accepts and answers,
not more. The wire models' component schemas are derived from their one declaration
(:func:`atoma_lab.protocol.wire.json_schema`): a request as the proxy *accepts* it (binary fields
are strict standard base64 of their exact size, canonical as :func:`atoma_lab.encoding.b64decode`
requires; integers are u64 unless the code bounds them further; an optional field may be null;
unknown keys are ignored, serde's rule, so ``additionalProperties`` is left open except on the
hardened profile's), a response as it is *written* (exactly its keys). What an operation adds to a
model (the proxy answers a confidential request only with a signed, hashed, metered answer) is
stated on the operation. The paths, and the few bodies that are no wire model (errors, model list,
attestation, stacks, health), are written here. Every error is Atoma's
``{"error": {"code", "message"}}`` with the status its :class:`~atoma_lab.errors.AtomaLabError`
class carries. Node refusals that are the caller's fault pass through the proxy with their own
status and code, so the confidential and plain routes list those statuses too.

The document is built by a pure function; tests validate it against the OpenAPI 3.1 meta-schema
and run schemathesis against a live proxy.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from importlib import metadata
from typing import Any

from atoma_lab.crypto.attestation import NVIDIA_CC_GPU_DEVICE_SLOT
from atoma_lab.crypto.keys import X25519_KEY_SIZE
from atoma_lab.protocol.atoma.messages import (
    SUI_SIGNATURE,
    ConfidentialComputeRequest,
    ConfidentialComputeResponse,
    NodesCreateLockRequest,
    NodesCreateLockResponse,
    Usage,
)
from atoma_lab.protocol.hardened import HardenedRequest, HardenedResponse
from atoma_lab.protocol.openai import CreateEmbeddingRequest, SignedEmbeddingResponse
from atoma_lab.protocol.wire import U64_MAX, WireModel, b64_length, b64_pattern, json_schema
from atoma_lab.services.metrics import PROMETHEUS_CONTENT_TYPE

OPENAPI_VERSION = "3.1.0"
JSON = "application/json"
ERROR_REF = "#/components/schemas/Error"

# The components derived from wire models: name -> (model, whether it is written by the proxy
# rather than accepted). A nested model listed here is referenced; one not listed is inlined.
WIRE_COMPONENTS: dict[str, tuple[type[WireModel], bool]] = {
    "NodesCreateLockRequest": (NodesCreateLockRequest, False),
    "NodesCreateLockResponse": (NodesCreateLockResponse, True),
    "ConfidentialComputeRequest": (ConfidentialComputeRequest, False),
    "ConfidentialComputeResponse": (ConfidentialComputeResponse, True),
    "HardenedComputeRequest": (HardenedRequest, False),
    "HardenedComputeResponse": (HardenedResponse, True),
    "Usage": (Usage, True),
    "CreateEmbeddingRequest": (CreateEmbeddingRequest, False),
    "SignedEmbeddingResponse": (SignedEmbeddingResponse, True),
}
# Fields whose examples are the served model names.
_MODEL_NAME_FIELDS = (("NodesCreateLockRequest", "model"), ("CreateEmbeddingRequest", "model"))


def _b64(size: int, *, description: str) -> dict[str, Any]:
    return {"type": "string", "contentEncoding": "base64", "pattern": b64_pattern(size),
            "minLength": b64_length(size), "maxLength": b64_length(size),
            "description": description}


def _int(minimum: int = 0, maximum: int = U64_MAX, **extra: Any) -> dict[str, Any]:
    return {"type": "integer", "minimum": minimum, "maximum": maximum, **extra}


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


def _wire_schemas() -> dict[str, Any]:
    names = {model: name for name, (model, _) in WIRE_COMPONENTS.items()}

    def placer(written: bool) -> Callable[[type[WireModel]], dict[str, Any]]:
        def place(model: type[WireModel]) -> dict[str, Any]:
            if model in names:
                return _ref(names[model])
            return json_schema(model, written=written, ref=place, description=False)
        return place

    return {name: json_schema(model, written=written, ref=placer(written))
            for name, (model, written) in WIRE_COMPONENTS.items()}


def _schemas(models: Sequence[str]) -> dict[str, Any]:
    wire = _wire_schemas()
    if models:
        for component, field in _MODEL_NAME_FIELDS:
            wire[component]["properties"][field]["examples"] = list(models)
    sui_signature = {"type": "string", "pattern": b64_pattern(), "description": SUI_SIGNATURE}
    return {
        "Error": _object({
            "error": _object({"code": {"type": "string", "pattern": "^[A-Z][A-Z0-9_]*$"},
                              "message": {"type": "string"}}, ["code", "message"], closed=True),
            "sealed_error": {**_ref("HardenedComputeResponse"), "description": (
                "with SEALED_ERROR: the node's error sealed to the client of a hardened request "
                "(no usage); the client opens it and raises the node's error")},
        }, ["error"], closed=True, description="Atoma's ErrorResponse"),
        **wire,
        "ModelList": _object({
            "object": {"const": "list"},
            "data": {"type": "array", "items": _object({
                "id": {"type": "string"}, "object": {"const": "model"}, "created": _int(),
                "owned_by": {"type": "string"},
            }, ["id", "object", "created", "owned_by"], closed=True)},
        }, ["object", "data"], closed=True),
        "AttestationReport": _object({
            "boot_epoch": _int(description="the node's start; keys order by (boot_epoch, "
                                           "key_rotation_counter)"),
            "device_type": _int(0, 2**16 - 1, examples=[NVIDIA_CC_GPU_DEVICE_SLOT]),
            "issued_at": {"type": "number"},
            "key_rotation_counter": _int(),
            "measurement": {"type": "string"},
            "node_small_id": _int(),
            "public_key": _b64(X25519_KEY_SIZE, description="the attested X25519 key"),
            "report_data": _b64(32, description="BLAKE3(nonce || key || device_type)"),
            "rotation_nonce": _int(),
            "signer_address": {"type": "string"},
        }, ["boot_epoch", "device_type", "issued_at", "key_rotation_counter", "measurement",
            "node_small_id", "public_key", "report_data", "rotation_nonce", "signer_address"]),
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


def package_version() -> str:
    """atoma-lab's version as installed (``atoma_lab.__version__``, through the package
    metadata, since nothing inside the package imports its root); ``0+unknown`` if not installed."""
    try:
        return metadata.version("atoma-lab")
    except metadata.PackageNotFoundError:
        return "0+unknown"


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
            # The proxy passes on only an Atoma answer that is hashed, signed and metered.
            _responses({"oneOf": [{"allOf": [_ref("ConfidentialComputeResponse"), {"required": [
                "response_hash", "signature", "usage"]}]}, _ref("HardenedComputeResponse")]},
                _FORWARDED),
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
        "info": {"title": "atoma-lab proxy", "version": package_version(),
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


__all__ = ["OPENAPI_VERSION", "WIRE_COMPONENTS", "b64_pattern", "openapi_document"]
