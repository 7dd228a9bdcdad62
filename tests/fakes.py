"""A deterministic fake embedder and small helpers for the service, transport, client, sim and
server tests.

The fake is about bytes, not vectors (ARCHITECTURE.md, "Tests"): each input's vector is the 32
bytes of BLAKE2b-256(input) scaled to [0, 1] as float32, and usage is the number of
whitespace-separated words plus two special tokens per input (a token-id input counts its ids
plus two). It honours ``encoding_format="base64"`` (little-endian float32, OpenAI's format) so
that both encodings can be compared.
"""

from __future__ import annotations

import base64
import hashlib
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from typing import Any

import numpy as np
import orjson

from atoma_lab.encoding import loads
from atoma_lab.lab.attacks import with_json
from atoma_lab.lab.network import Network, build_network
from atoma_lab.protocol.openai import CreateEmbeddingRequest, EmbeddingUsage
from atoma_lab.services.embedders import CallableEmbedder
from atoma_lab.transport.base import Headers, Request, Response

MODEL = "fake/embedder-32"
DIM = 32  # floats per fake vector


def fake_vector(item: str | list[int]) -> np.ndarray:
    """The fake's vector for one input."""
    digest = hashlib.blake2b(str(item).encode("utf-8"), digest_size=DIM).digest()
    return np.frombuffer(digest, dtype=np.uint8).astype(np.float32) / np.float32(255)


def fake_units(item: str | list[int]) -> int:
    """The fake's token count for one input (special tokens included)."""
    n = len(item.split()) if isinstance(item, str) else len(item)
    return n + 2


def expected_vectors(inputs: str | list[str]) -> np.ndarray:
    items = [inputs] if isinstance(inputs, str) else list(inputs)
    return np.stack([fake_vector(x) for x in items])


def expected_units(inputs: str | list[str]) -> int:
    items = [inputs] if isinstance(inputs, str) else list(inputs)
    return sum(fake_units(x) for x in items)


def fake_embed(request: CreateEmbeddingRequest) -> tuple[bytes, EmbeddingUsage]:
    """The fake engine: OpenAI JSON bytes and the usage they contain."""
    items = request.inputs()
    data = []
    for i, item in enumerate(items):
        vec = fake_vector(item)
        if request.dimensions is not None:
            vec = vec[: request.dimensions]
        emb: Any = (base64.b64encode(vec.astype("<f4").tobytes()).decode("ascii")
                    if request.encoding_format == "base64" else vec)
        data.append({"object": "embedding", "embedding": emb, "index": i})
    n = sum(fake_units(x) for x in items)
    body = orjson.dumps(
        {"object": "list", "data": data, "model": request.model,
         "usage": {"prompt_tokens": n, "total_tokens": n}},
        option=orjson.OPT_SERIALIZE_NUMPY,
    )
    return body, EmbeddingUsage(n, n)


def fake_embedder(models: Iterable[str] = (MODEL,)) -> CallableEmbedder:
    return CallableEmbedder(list(models), fake_embed)


def network(**options: Any) -> Network:
    """``build_network`` with the fake embedder serving :data:`MODEL` unless told otherwise."""
    options.setdefault("model", MODEL)
    options.setdefault("embedder", fake_embedder([options["model"]]))
    return build_network(**options)


@contextmanager
def networks(**fixed: Any) -> Iterator[Callable[..., Network]]:
    """Build networks with :func:`network` (``fixed`` options over the caller's) and close every
    one on leaving: the body of a test's network-factory fixture."""
    nets: list[Network] = []

    def make(**options: Any) -> Network:
        net = network(**{**options, **fixed})
        nets.append(net)
        return net

    try:
        yield make
    finally:
        for net in nets:
            net.close()


class FakeClock:
    """A clock tests move by hand (starts at the real time, so evidence looks fresh)."""

    def __init__(self, start: float | None = None) -> None:
        self.now = time.time() if start is None else start

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> float:
        self.now += seconds
        return self.now


# ------------------------------------------------------------------------------------------------
# Raw requests
# ------------------------------------------------------------------------------------------------


def headers(token: str | None) -> Headers:
    h = Headers({"content-type": "application/json", "accept": "application/json"})
    if token is not None:
        h["authorization"] = f"Bearer {token}"
    return h


def send(net: Network, method: str, path: str, body: bytes | dict[str, Any] | None = None, *,
         token: str | None = "default", extra_headers: dict[str, str] | None = None) -> Response:
    """One raw request to the proxy, as a client sends it (in-process or HTTP: ``net.send``).

    ``token="default"`` means the network's own API key; ``None`` sends no Authorization.
    """
    payload = body if isinstance(body, bytes) else b"" if body is None else orjson.dumps(body)
    h = headers(net.api_key if token == "default" else token)
    for k, v in (extra_headers or {}).items():
        h[k] = v
    return net.send(Request(method, path, h, payload))


def error_of(resp: Response) -> tuple[int, str]:
    """``(status, error.code)`` of an error answer, asserting Atoma's JSON error shape."""
    assert resp.headers.get("content-type", "").startswith("application/json"), resp.headers
    body = loads(resp.body)
    assert set(body) == {"error"}, body
    assert set(body["error"]) == {"code", "message"}, body
    assert isinstance(body["error"]["code"], str) and isinstance(body["error"]["message"], str)
    return resp.status, body["error"]["code"]


# ------------------------------------------------------------------------------------------------
# Ledger views
# ------------------------------------------------------------------------------------------------


def balances(net: Network) -> dict[int, int]:
    balances: Any = net.ledger.snapshot()["balances"]
    return dict(balances)


def money(net: Network) -> dict[str, Any]:
    """What a failed request must never change: units used per stack and every balance."""
    return {
        "already": {s.stack_small_id: s.already_computed_units for s in net.ledger.stacks()},
        "balances": balances(net),
    }


def full_state(net: Network) -> dict[str, Any]:
    """Stacks (all columns), open locks and balances."""
    return {"stacks": net.ledger.stacks(), "locks": net.ledger.open_locks(),
            "balances": balances(net)}


def settlements(net: Network) -> list[dict[str, Any]]:
    return list(net.ledger.settlements())


with_body = with_json  # a response with another JSON body (atoma_lab.lab.attacks)


# ------------------------------------------------------------------------------------------------
# Key material, to look for where it must never appear (reprs, HTML, logs)
# ------------------------------------------------------------------------------------------------


def private_key_material(net: Network) -> dict[str, bytes]:
    """Every private key and seed of a network that the tests can reach: each node's X25519
    keys (current and retired) and Sui key, the proxy's wallet seed and key, the TEE vendor's
    key; and the user's API key."""
    out: dict[str, bytes] = {}
    for node in net.nodes:
        for key in node.key_ring.keys:
            out[f"node {node.node_small_id} x25519 {key.counter}"] = key.pair.private_bytes()
        out[f"node {node.node_small_id} sui"] = _signer_private(node.signer)
    out["proxy seed"] = net.ledger.proxy_signing_seed()
    out["proxy sui"] = _signer_private(net.proxy.signer)
    out["tee vendor"] = _signer_private(net.tee.vendor)
    out["api key"] = net.api_key.encode()
    return out


def _signer_private(signer: Any) -> bytes:
    from cryptography.hazmat.primitives import serialization

    key = signer._ed or signer._ec
    return key.private_bytes(serialization.Encoding.Raw if signer._ed else serialization.Encoding.DER,
                             serialization.PrivateFormat.Raw if signer._ed
                             else serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


def encodings(data: bytes) -> list[str]:
    """How bytes may be written in text: hex (either case), standard and URL-safe base64 (with
    and without padding), and the bytes themselves where they are text."""
    b64 = base64.b64encode(data).decode()
    forms = [data.hex(), data.hex().upper(), b64, b64.rstrip("="),
             base64.urlsafe_b64encode(data).decode().rstrip("=")]
    if data.isascii():
        forms.append(data.decode("ascii"))
    return forms


def leaks(text: str, material: dict[str, bytes]) -> list[str]:
    """The names of the pieces of ``material`` found in ``text`` in any of :func:`encodings`."""
    return [name for name, data in material.items()
            if any(form in text for form in encodings(data))]
