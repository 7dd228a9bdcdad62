"""What the services log: the events an operator follows (nodes registered, down and back, keys
rotated and accepted, attestation refused, stacks bought, expired locks given back, replays
refused, the embedding backend failing), and never an input text, a vector or key material, with
every ``atoma_lab`` logger at DEBUG."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator

import numpy as np
import pytest
from fakes import MODEL, FakeClock, encodings, fake_embed, leaks, network, private_key_material

from atoma_lab.crypto.attestation import SimulatedTEE
from atoma_lab.errors import AtomaLabError, BackendUnavailableError
from atoma_lab.lab.network import Network
from atoma_lab.protocol.openai import CreateEmbeddingRequest, EmbeddingUsage
from atoma_lab.services.embedders import CallableEmbedder
from atoma_lab.transport.base import Headers, Request
from atoma_lab.transport.inprocess import Fault
from atoma_lab.transport.intercept import InterceptTransport

SECRETS = ["patient 4711 has appendicitis", "the vault code is sunflower",
           "Zürich «quoted» text"]  # the last one JSON-escapes differently
BACKEND_DOWN = "this input makes the embedding backend fail"
CONF = "/v1/confidential/embeddings"


def _embed(request: CreateEmbeddingRequest) -> tuple[bytes, EmbeddingUsage]:
    if BACKEND_DOWN in request.inputs():
        raise BackendUnavailableError("the embedding backend cannot be reached")
    return fake_embed(request)


class Records(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)

    def text(self) -> str:
        formatter = logging.Formatter("%(name)s %(levelname)s %(message)s")
        return "\n".join(formatter.format(r) for r in self.records)  # with any traceback


@pytest.fixture
def records() -> Iterator[Records]:
    handler = Records()
    root = logging.getLogger("atoma_lab")
    loggers = [root] + [logging.getLogger(name) for name in list(logging.root.manager.loggerDict)
                        if name.startswith("atoma_lab.")]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.DEBUG)
    root.addHandler(handler)
    try:
        yield handler
    finally:
        root.removeHandler(handler)
        for lg, level in zip(loggers, levels, strict=True):
            lg.setLevel(level)


def _round_trips(net: Network, clock: FakeClock) -> dict[str, object]:
    """Everything the test puts the services through; returns what must not be logged."""
    client = net.client(verify_attestation=True)
    seen: dict[str, object] = {"material": private_key_material(net), "vectors": []}
    vectors: list[np.ndarray] = []
    publics: list[bytes] = [n.public_key for n in net.nodes]
    try:
        # A confidential and a plain round trip.
        vectors.append(client.confidential_embeddings.create(input=SECRETS, model=MODEL).to_numpy())
        vectors.append(client.embeddings.create(input=SECRETS[:2], model=MODEL).to_numpy())
        # A replay: the proxy's captured request sent again, with a lock of the user's open.
        spy = InterceptTransport(net.client_transport())
        net.client(transport=spy).confidential_embeddings.create(input=SECRETS[0], model=MODEL)
        captured = next(r.body for r, _ in spy.seen if r.path == CONF)
        client.nodes.lock(MODEL)
        replayed = net.send(Request("POST", CONF, Headers({
            "content-type": "application/json", "authorization": f"Bearer {net.api_key}"}),
            captured))
        assert replayed.error_code() == "REPLAYED_REQUEST"
        # A key rotation, announced to the proxy.
        net.rotate(0)
        publics.append(net.nodes[0].public_key)
        seen["material"].update(private_key_material(net))  # type: ignore[attr-defined]
        # A key whose attestation does not verify (another vendor signed it).
        node = net.nodes[1]
        rogue = SimulatedTEE().attest(node_small_id=node.node_small_id, key_rotation_counter=1,
                                      rotation_nonce=1, public_key=node.public_key,
                                      signer_address=node.sui_address, now=clock())
        assert net.proxy.accept_node_key(rogue) is False
        assert net.proxy.accept_node_key(node.evidence)  # its real key again
        # The embedding backend failing.
        with pytest.raises(AtomaLabError):
            client.confidential_embeddings.create(input=[BACKEND_DOWN], model=MODEL)
        # A node that cannot be reached, then comes back.
        assert net.transport is not None
        net.transport.inject("inproc://node-1", Fault(drop=True))
        vectors.append(client.confidential_embeddings.create(input=SECRETS[1:], model=MODEL)
                       .to_numpy())  # retried on node 2
        net.transport.inject("inproc://node-1", None)
        assert net.run(net.proxy.check_nodes()) == {1: True, 2: True}
        # A lock nobody uses, expired and given back.
        client.nodes.lock(MODEL, timeout=2)
        clock.advance(10)
        assert net.proxy.sweep_locks() >= 1
    finally:
        client.close()
    seen["vectors"] = vectors
    seen["publics"] = publics
    return seen


def test_service_logs_hold_the_events_and_no_text_vector_or_key(records: Records) -> None:
    clock = FakeClock()
    with network(nodes=2, clock=clock, lock_sweep_interval_s=None,
                 embedder=CallableEmbedder([MODEL], _embed)) as net:
        seen = _round_trips(net, clock)
    text = records.text()
    assert len(records.records) > 20

    # What an operator needs, each at least once.
    for event in ("node 1 registered at inproc://node-1", "key 1 accepted, attested",
                  "bought stack", "node 1 refused a replayed confidential request",
                  "node 1 rotated its key: counter 2", "node 1: key 2 accepted",
                  "node 2: attestation refused for key 1 (UntrustedSignerError)",
                  "the embedding backend failed a confidential request (503 BACKEND_UNAVAILABLE)",
                  "node 1 is down", "node 1 is back", "expired lock"):
        assert event in text, event
    by_level = {r.getMessage(): r.levelno for r in records.records}
    assert any(level == logging.WARNING for msg, level in by_level.items() if "is down" in msg)
    assert any(level == logging.DEBUG for msg, level in by_level.items() if "settled" in msg)

    # What must never be there.
    for secret in [*SECRETS, BACKEND_DOWN]:
        for form in (secret, json.dumps(secret)[1:-1], secret.encode("unicode_escape").decode()):
            assert form not in text, secret
    floats = []
    for block in seen["vectors"]:  # type: ignore[attr-defined]
        for v in np.asarray(block).ravel():
            floats += [repr(float(v)), str(np.float32(v)), f"{v:.6f}", f"{v:.4f}"]
    assert not [f for f in set(floats) if len(f) >= 6 and f in text]
    assert leaks(text, seen["material"]) == []  # type: ignore[arg-type]
    for key in seen["publics"]:  # type: ignore[attr-defined]
        assert not [form for form in encodings(key) if form in text]
