"""Properties of the sealed exchange through the running services (in-process), with hypothesis:

* random inputs, under a node key rotated to a fresh random one, come back as their vectors;
* any single-bit change of the sealed request's wire bytes (every field's value, key names and
  JSON punctuation) is refused with a typed 4xx JSON error and leaves the books and node keys as
  they were, unless it provably changes nothing that matters;
* any single-bit change of the sealed response's wire bytes makes the client raise a typed
  :class:`~atoma_lab.errors.AtomaLabError`, unless it touched only the clear ``usage`` copy,
  and then the client still returns the authentic vectors.

The envelope's own round trip and per-field bit flips on the Python objects are in
``tests/protocol/test_envelope.py``; these work on the JSON bytes and through proxy and node.
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Iterator
from typing import Any

import numpy as np
import orjson
import pytest
from fakes import MODEL, error_of, expected_vectors
from hypothesis import given, settings
from hypothesis import strategies as st

from atoma_lab.errors import AtomaLabError, error_table
from atoma_lab.protocol.atoma.envelope import open_response, seal_request
from atoma_lab.protocol.atoma.messages import ConfidentialComputeRequest, ConfidentialComputeResponse
from atoma_lab.protocol.openai import CreateEmbeddingRequest, CreateEmbeddingResponse
from atoma_lab.transport.base import Request, Response
from atoma_lab.transport.intercept import InterceptTransport

from .support import CONF, Adversary, start_adversary

CODES = {code for _, code, _, _ in error_table()}
REQUEST_FIELDS = ["ciphertext", "stack_small_id", "nonce", "salt", "client_dh_public_key",
                  "node_dh_public_key", "plaintext_body_hash", "stream", "model_name"]
RESPONSE_FIELDS = ["nonce", "ciphertext", "response_hash", "signature", "usage"]
AUTHENTICATED = ["nonce", "ciphertext", "response_hash", "signature"]
TEXT = st.text(st.characters(exclude_categories=("Cs",)), max_size=40)
INPUTS = st.lists(TEXT, min_size=1, max_size=4)
PROPERTY = settings(max_examples=40, deadline=None, derandomize=True, database=None)
FLIPS = settings(PROPERTY, max_examples=150)


@pytest.fixture(scope="module")
def inproc() -> Iterator[Adversary]:
    with start_adversary("inprocess") as adversary:
        yield adversary


def flip(data: bytes, bit: int) -> bytes:
    out = bytearray(data)
    out[bit // 8] ^= 1 << (bit % 8)
    return bytes(out)


def value_span(wire: bytes, key: str) -> tuple[int, int]:
    """Where the value of top-level ``key`` lies in compact JSON (values hold no ``,"``)."""
    start = wire.index(b'"' + key.encode() + b'":') + len(key) + 3
    end = wire.find(b',"', start)
    return start, (len(wire) - 1 if end < 0 else end)


def pick_bit(data: st.DataObject, wire: bytes, fields: list[str]) -> int:
    """Anywhere in the bytes, or (as often) inside one named field's value."""
    target = data.draw(st.sampled_from(["anywhere", *fields]), label="target")
    lo, hi = (0, len(wire)) if target == "anywhere" else value_span(wire, target)
    return data.draw(st.integers(8 * lo, 8 * hi - 1), label="bit")


def _masked(key: bytes) -> bytes:
    """X25519 ignores bit 255 of a public key (RFC 7748 section 5)."""
    return key[:31] + bytes([key[31] & 0x7F])


def harmless(original: ConfidentialComputeRequest, changed_wire: bytes) -> bool:
    """Whether the changed bytes still mean the same request: only ``stream`` (ignored for
    embeddings) or the masked top bit of the client key differ."""
    try:
        changed = ConfidentialComputeRequest.from_json(changed_wire)
    except AtomaLabError:
        return False
    same = changed.replace(stream=original.stream,
                           client_dh_public_key=_masked(changed.client_dh_public_key))
    return same == original.replace(
        client_dh_public_key=_masked(original.client_dh_public_key))


# ------------------------------------------------------------------------------------------------
# Round trips
# ------------------------------------------------------------------------------------------------


@PROPERTY
@given(inputs=INPUTS, encoding=st.sampled_from([None, "float", "base64"]), rotate=st.booleans())
def test_random_inputs_under_random_keys_come_back(inproc: Adversary, inputs: list[str],
                                                  encoding: str | None, rotate: bool) -> None:
    if rotate:  # a fresh random X25519 key for the node, announced to the proxy
        inproc.net.rotate(0)
    result = inproc.client.confidential_embeddings.create(input=inputs, model=MODEL,
                                                          encoding_format=encoding)
    np.testing.assert_array_equal(result.to_numpy(), expected_vectors(inputs))
    assert result.raw["plaintext"] == CreateEmbeddingRequest(
        input=inputs, model=MODEL, encoding_format=encoding).to_json()  # type: ignore[arg-type]


# ------------------------------------------------------------------------------------------------
# Single-bit changes of the sealed request
# ------------------------------------------------------------------------------------------------


@FLIPS
@given(data=st.data(), inputs=INPUTS)
def test_any_bit_flip_of_a_sealed_request_is_refused(inproc: Adversary, data: st.DataObject,
                                                     inputs: list[str]) -> None:
    a = inproc
    a.expire()
    books, nodes = a.books(), a.node_state()
    lock = a.lock()
    plaintext = CreateEmbeddingRequest(input=inputs, model=MODEL).to_json()
    sealed = seal_request(plaintext, node_public_key=lock.public_key,
                          stack_small_id=lock.stack_small_id, model_name=MODEL, stream=False)
    wire = sealed.request.to_json()
    changed = flip(wire, pick_bit(data, wire, REQUEST_FIELDS))
    resp = a.post(CONF, changed)
    if harmless(sealed.request, changed):
        assert resp.status == 200, resp.body
        opened = open_response(ConfidentialComputeResponse.from_json(resp.body), sealed.context)
        vectors = CreateEmbeddingResponse.from_json(opened.plaintext).to_numpy()
        np.testing.assert_array_equal(vectors, expected_vectors(inputs))
        return
    status, code = error_of(resp)
    assert 400 <= status < 500 and code in CODES, (status, code)
    assert all(lk.state == "open" for lk in a.net.ledger.open_locks())
    a.expire()
    assert a.books() == books
    assert a.node_state() == nodes


def test_the_harmless_test_is_narrow() -> None:
    """Only ``stream`` and the key's top bit count as harmless; a changed stack id does not."""
    sealed = seal_request(b"{}", node_public_key=bytes(range(1, 33)), stack_small_id=12,
                          model_name="m", stream=False)
    wire = sealed.request.to_json()
    assert harmless(sealed.request, wire.replace(b'"stream":false', b'"strean":false'))
    assert harmless(sealed.request, wire)
    assert not harmless(sealed.request, wire.replace(b'"stack_small_id":12', b'"stack_small_id":13'))
    assert not harmless(sealed.request, wire.replace(b'"model_name":"m"', b'"model_name":"l"'))
    top = sealed.request.replace(
        client_dh_public_key=flip(sealed.request.client_dh_public_key, 255))
    assert harmless(sealed.request, top.to_json())
    low = sealed.request.replace(
        client_dh_public_key=flip(sealed.request.client_dh_public_key, 254))
    assert not harmless(sealed.request, low.to_json())


# ------------------------------------------------------------------------------------------------
# Single-bit changes of the sealed response
# ------------------------------------------------------------------------------------------------


@dataclasses.dataclass
class ResponseFlipper:
    """A client-side hook that flips one bit of the confidential answer."""

    data: st.DataObject
    original: bytes = b""
    changed: bytes = b""

    def __call__(self, request: Request, response: Response) -> Response | None:
        if request.path != CONF or not response.ok:
            return None
        self.original = response.body
        self.changed = flip(response.body, pick_bit(self.data, response.body, RESPONSE_FIELDS))
        return Response(response.status, self.changed, response.headers)

    def only_usage_changed(self) -> bool:
        try:
            before: dict[str, Any] = orjson.loads(self.original)
            after = orjson.loads(self.changed)
        except orjson.JSONDecodeError:
            return False
        return isinstance(after, dict) and all(after.get(k) == before[k] for k in AUTHENTICATED)


@FLIPS
@given(data=st.data(), inputs=INPUTS)
def test_any_bit_flip_of_a_sealed_response_is_refused(inproc: Adversary, data: st.DataObject,
                                                      inputs: list[str]) -> None:
    flipper = ResponseFlipper(data)
    # Awaited here, the hook runs in this thread, where hypothesis can draw.
    client = inproc.net.async_client(
        transport=InterceptTransport(inproc.net.client_transport(), after=flipper))
    try:
        result = asyncio.run(client.confidential_embeddings.create(input=inputs, model=MODEL))
    except AtomaLabError:
        assert flipper.changed != flipper.original
        return
    # Accepted: then only the clear copy of usage (outside the envelope) was touched, and the
    # vectors are the authentic ones.
    assert flipper.only_usage_changed(), (flipper.original, flipper.changed)
    np.testing.assert_array_equal(result.to_numpy(), expected_vectors(inputs))


@pytest.mark.parametrize("change", [b'"nonce":"!', b'"nonce":"A', b"{{"])
def test_a_malformed_confidential_answer_is_the_peers_fault(inproc: Adversary, change: bytes) -> None:
    def after(request: Request, response: Response) -> Response | None:
        if request.path != CONF or not response.ok:
            return None
        body = response.body.replace(b'"nonce":"', change, 1)
        return Response(response.status, body, response.headers)

    client = inproc.net.client()
    client.transport = InterceptTransport(client.transport, after=after)
    with pytest.raises(AtomaLabError) as caught:
        client.confidential_embeddings.create(input="x", model=MODEL)
    assert caught.value.fault == "peer", type(caught.value).__name__
