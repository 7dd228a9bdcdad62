"""The proxy's OpenAPI 3.1 document: valid, complete (every route the router serves), true to
what the proxy answers, and schemathesis finds no 5xx and no answer outside it on a live
loopback proxy."""

from __future__ import annotations

import base64
import copy
import os
import re
from collections.abc import Iterator
from typing import Any

import jsonschema
import orjson
import pytest
import schemathesis
from fakes import MODEL, send
from hypothesis import HealthCheck, settings
from referencing import Registry
from referencing.jsonschema import DRAFT202012
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)
from schemathesis.specs.openapi.definitions import OPENAPI_31

from atoma_lab.protocol import Usage
from atoma_lab.protocol.lookup import stack_lookup_digest
from atoma_lab.protocol.openai import SignedEmbeddingResponse
from atoma_lab.protocol.wire import UInt, json_schema, wire, wire_fields, wire_names
from atoma_lab.services.openapi import (
    OPENAPI_VERSION,
    WIRE_COMPONENTS,
    b64_pattern,
    openapi_document,
)

from .support import CONF, LOCK, Adversary, start_adversary

DOC = openapi_document(models=[MODEL])
SCHEMA = schemathesis.openapi.from_dict(DOC)


def _validator(name: str) -> jsonschema.Draft202012Validator:
    """A validator for one component schema, with the document's $refs resolvable."""
    return _pointer_validator(f"/components/schemas/{name}")


def _pointer_validator(pointer: str) -> jsonschema.Draft202012Validator:
    """A validator for the schema at a JSON pointer into the document."""
    registry: Registry = Registry().with_resource("urn:doc", DRAFT202012.create_resource(DOC))
    return jsonschema.Draft202012Validator({"$ref": f"urn:doc#{pointer}"}, registry=registry)


CONF_ANSWER = ("/paths/~1v1~1confidential~1embeddings/post/responses/200/content/"
               "application~1json/schema")


@pytest.fixture(scope="module")
def live() -> Iterator[Adversary]:
    """A proxy on loopback HTTP (the fake embedder behind it)."""
    with start_adversary("http") as adversary:
        yield adversary


# ------------------------------------------------------------------------------------------------
# The document itself
# ------------------------------------------------------------------------------------------------


def test_the_document_is_valid_openapi_31() -> None:
    assert DOC["openapi"] == OPENAPI_VERSION and OPENAPI_VERSION.startswith("3.1.")
    errors = sorted(jsonschema.Draft202012Validator(OPENAPI_31).iter_errors(DOC), key=str)
    assert errors == []
    for name, schema in DOC["components"]["schemas"].items():
        jsonschema.Draft202012Validator.check_schema(schema)
        assert schema.get("type") == "object", name


def test_the_meta_schema_check_is_not_blind() -> None:
    broken = {**DOC, "paths": {"/x": {"get": {"responses": {"200": {"content": {}}}}}}}
    assert list(jsonschema.Draft202012Validator(OPENAPI_31).iter_errors(broken))


def _operations(doc: dict[str, Any]) -> set[tuple[str, str]]:
    return {(method.upper(), path) for path, item in doc["paths"].items() for method in item}


def test_every_route_the_proxy_serves_is_documented(live: Adversary) -> None:
    served = set(live.net.proxy.router.paths)
    assert served == _operations(DOC)


def test_the_proxy_serves_the_document(live: Adversary) -> None:
    """With a valid token the document names the served models; without one it does not (as
    ``/v1/models`` lists them only to a valid token)."""
    resp = send(live.net, "GET", "/openapi.json")
    assert resp.status == 200 and resp.headers["content-type"] == "application/json"
    served = orjson.loads(resp.body)
    assert served == openapi_document(models=live.net.ledger.models())
    assert MODEL in served["components"]["schemas"]["CreateEmbeddingRequest"]["properties"][
        "model"]["examples"]
    for token in (None, "atl-not-a-real-token"):
        anonymous = send(live.net, "GET", "/openapi.json", token=token)
        assert anonymous.status == 200
        assert orjson.loads(anonymous.body) == openapi_document()
        assert MODEL.encode() not in anonymous.body


def test_every_operation_has_its_security_and_error_body() -> None:
    public = {("GET", "/v1/nodes/attestation"), ("POST", "/v1/nodes/attestation"),
              ("GET", "/v1/stacks"), ("GET", "/health"), ("GET", "/openapi.json")}
    operator = {("GET", "/metrics")}
    for path, item in DOC["paths"].items():
        for method, op in item.items():
            key = (method.upper(), path)
            expected = ([] if key in public else [{"metricsToken": []}] if key in operator
                        else [{"bearerAuth": []}])
            assert op["security"] == expected, key
            if key not in public:
                assert "401" in op["responses"], key
            for status, resp in op["responses"].items():
                if status != "200":
                    assert resp["content"] == {"application/json": {"schema": {
                        "$ref": "#/components/schemas/Error"}}}, key


@pytest.mark.parametrize("size", [0, 1, 2, 11, 12, 15, 16, 31, 32, 33, 97])
def test_base64_patterns_accept_exactly_strict_base64(size: int) -> None:
    for _ in range(20):
        text = base64.b64encode(os.urandom(size)).decode()
        assert re.fullmatch(b64_pattern(size), text)
        assert re.fullmatch(b64_pattern(), text)
    if size:
        text = base64.b64encode(bytes(size)).decode()
        assert not re.fullmatch(b64_pattern(size + 1), text)
        for bad in (text.rstrip("="), "-" + text[1:], text[:4] + " " + text[5:]):
            if bad != text:
                assert not re.fullmatch(b64_pattern(size), bad), bad
        if text.endswith("="):  # trailing bits set: not canonical (b64decode refuses it)
            i = len(text.rstrip("=")) - 1
            assert not re.fullmatch(b64_pattern(size), text[:i] + "B" + text[i + 1:])


# ------------------------------------------------------------------------------------------------
# Real answers validate against it
# ------------------------------------------------------------------------------------------------


def test_real_answers_match_their_schemas(live: Adversary) -> None:
    a = live
    lock = a.lock()
    _validator("NodesCreateLockResponse").validate(orjson.loads(
        send(a.net, "POST", LOCK, {"model": MODEL}).body))
    sealed = a.seal(lock)
    _validator("ConfidentialComputeRequest").validate(sealed)
    conf = send(a.net, "POST", CONF, orjson.dumps(sealed))
    assert conf.status == 200
    _validator("ConfidentialComputeResponse").validate(orjson.loads(conf.body))
    _pointer_validator(CONF_ANSWER).validate(orjson.loads(conf.body))
    for fmt in ("float", "base64"):
        body = {"input": ["a b", "c"], "model": MODEL, "encoding_format": fmt}
        _validator("CreateEmbeddingRequest").validate(body)
        plain = send(a.net, "POST", "/v1/embeddings", body)
        assert plain.status == 200
        _validator("SignedEmbeddingResponse").validate(orjson.loads(plain.body))
        assert SignedEmbeddingResponse.from_json(plain.body).to_numpy().shape[0] == 2
    _validator("ModelList").validate(orjson.loads(send(a.net, "GET", "/v1/models").body))
    attestation = send(a.net, "GET", "/v1/nodes/attestation?node_small_id=1", token=None)
    _validator("NodeAttestation").validate(orjson.loads(attestation.body))
    _validator("AttestationEvidence").validate(a.net.nodes[0].evidence.to_dict())
    node = next(n for n in a.net.nodes if n.node_small_id == lock.node_small_id)
    signature = node.signer.sign(stack_lookup_digest(node.node_small_id, lock.stack_small_id))
    stack = send(a.net, "GET", f"/v1/stacks?stack_small_id={lock.stack_small_id}", token=None,
                 extra_headers={"x-node-small-id": str(node.node_small_id),
                                "x-signature": signature.to_base64()})
    assert stack.status == 200, stack.body
    _validator("StackInfo").validate(orjson.loads(stack.body))
    _validator("Health").validate(orjson.loads(send(a.net, "GET", "/health", token=None).body))
    error = send(a.net, "POST", CONF, b"{", token=None)
    _validator("Error").validate(orjson.loads(error.body))
    for profile in ("hardened", "hpke"):  # atoma-lab's own profiles, on the same route
        result = a.net.client(profile=profile).confidential_embeddings.create(input="h",
                                                                              model=MODEL)
        _validator("HardenedComputeRequest").validate(result.raw["request"])
        _validator("HardenedComputeResponse").validate(result.raw["response"])
    a.expire()


def test_the_schemas_are_not_blind() -> None:
    with pytest.raises(jsonschema.ValidationError):
        _validator("Error").validate({"error": {"code": "X"}})
    with pytest.raises(jsonschema.ValidationError):
        _validator("NodesCreateLockResponse").validate(
            {"public_key": "AAAA", "node_small_id": 1, "stack_entry_digest": None,
             "stack_small_id": 1})
    with pytest.raises(jsonschema.ValidationError):
        _validator("ConfidentialComputeResponse").validate(
            {"nonce": "A" * 16, "ciphertext": "A" * 24, "response_hash": "A" * 43 + "=",
             "signature": "AA==", "usage": {"prompt_tokens": -1, "total_tokens": 1}})
    # The confidential route answers only with a hashed, signed and metered Atoma answer, which
    # the operation states over the model's own schema (where these fields are optional).
    unsigned = {"nonce": "A" * 16, "ciphertext": "A" * 24, "response_hash": "A" * 43 + "=",
                "usage": {"prompt_tokens": 1, "total_tokens": 1}}
    _validator("ConfidentialComputeResponse").validate(unsigned)
    with pytest.raises(jsonschema.ValidationError):
        _pointer_validator(CONF_ANSWER).validate(unsigned)


# ------------------------------------------------------------------------------------------------
# The wire models' components are derived from their one declaration
# ------------------------------------------------------------------------------------------------


def _undocumented(doc: dict[str, Any]) -> dict[str, set[str]]:
    """Per derived component, the fields its model and its schema do not share."""
    out = {}
    for name, (model, _) in WIRE_COMPONENTS.items():
        differ = set(wire_names(model)) ^ set(doc["components"]["schemas"][name]["properties"])
        if differ:
            out[name] = differ
    return out


def test_every_wire_model_field_is_in_the_document() -> None:
    assert _undocumented(DOC) == {}
    for name, (model, _) in WIRE_COMPONENTS.items():
        schema = DOC["components"]["schemas"][name]
        assert {f.name for f in wire_fields(model) if f.required} <= set(schema["required"]), name
    # Nothing but the served models' names is added to what the declarations derive.
    names = {model: name for name, (model, _) in WIRE_COMPONENTS.items()}
    for name, (model, written) in WIRE_COMPONENTS.items():
        schema = copy.deepcopy(DOC["components"]["schemas"][name])
        for prop in schema["properties"].values():
            prop.pop("examples", None)

        def place(nested: Any, written: bool = written) -> dict[str, Any]:
            if nested in names:
                return {"$ref": f"#/components/schemas/{names[nested]}"}
            return json_schema(nested, written=written, ref=place, description=False)

        assert schema == json_schema(model, written=written, ref=place), name


def test_a_field_a_model_gains_reaches_the_document(monkeypatch: pytest.MonkeyPatch) -> None:
    class UsageWithCache(Usage):
        """Usage that reports cached tokens too."""

        cached_tokens: int | None = wire(UInt(), default=None)

    assert "cached_tokens" in json_schema(UsageWithCache, written=True)["properties"]
    monkeypatch.setitem(WIRE_COMPONENTS, "Usage", (UsageWithCache, True))
    grown = openapi_document(models=[MODEL])
    assert "cached_tokens" in grown["components"]["schemas"]["Usage"]["properties"]
    assert _undocumented(grown) == {}
    # ... and the comparison above would catch a document that lacked it.
    stale = copy.deepcopy(grown)
    del stale["components"]["schemas"]["Usage"]["properties"]["cached_tokens"]
    assert _undocumented(stale) == {"Usage": {"cached_tokens"}}


# ------------------------------------------------------------------------------------------------
# schemathesis against the live proxy
# ------------------------------------------------------------------------------------------------

CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance,
          response_schema_conformance]


@pytest.mark.integration
@pytest.mark.timeout(240)
@SCHEMA.parametrize()
@settings(max_examples=25, deadline=None, derandomize=True, database=None,
          suppress_health_check=list(HealthCheck))
def test_schemathesis_finds_no_5xx_and_no_answer_outside_the_schema(
        case: schemathesis.Case, live: Adversary) -> None:
    live.expire()  # locks the generated requests took do not pile up
    case.call_and_validate(base_url=live.net.base_url,
                           headers={"Authorization": f"Bearer {live.net.api_key}"},
                           checks=CHECKS)
