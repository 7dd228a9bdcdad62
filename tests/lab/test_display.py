"""What a notebook shows: the network, a result, its trace, a lock, the captured traffic, the
ledger and a load run render as HTML and as DataFrames; their plain reprs stay one short line;
and none of them shows key material, input text or vectors."""

from __future__ import annotations

import math
from collections.abc import Iterator
from html import escape

import numpy as np
import pytest
from fakes import MODEL, leaks, network, private_key_material

from atoma_lab.client import AtomaLabClient
from atoma_lab.display import fingerprint
from atoma_lab.lab.load import run_load
from atoma_lab.lab.network import Network
from atoma_lab.services.ledger import LEDGER_TABLES
from atoma_lab.transport.inprocess import Captured

SECRET = "the confidential sentence about patient 4711"
OTHER = "a second, equally private line"


@pytest.fixture(scope="module")
def net() -> Iterator[Network]:
    with network(nodes=2) as n:
        yield n


@pytest.fixture(scope="module")
def client(net: Network) -> Iterator[AtomaLabClient]:
    c = net.client(verify_attestation=True)
    yield c
    c.close()


def _floats(vectors: np.ndarray) -> list[str]:
    """How a vector's values would look if something printed them."""
    out = []
    for v in vectors.ravel()[:16]:
        out += [repr(float(v)), str(np.float32(v)), f"{v:.6f}"]
    return [s for s in out if len(s) >= 6]


def test_the_network_shows_nodes_keys_health_models_prices_profiles_and_the_user(
        net: Network, client: AtomaLabClient) -> None:
    result = client.confidential_embeddings.create(input=[SECRET], model=MODEL)
    html = net._repr_html_()
    for node in net.nodes:
        assert fingerprint(node.public_key) in html
        assert f"inproc://node-{node.node_small_id}" in html
    assert MODEL in html and "atoma-lab/hardened-v1" in html and "node policy" in html
    assert "Your user" in html and str(net.ledger.balance(net.user_id)) in html
    assert f"<td style='padding:1px 8px;text-align:left;vertical-align:top'>{result.stack_small_id}" \
        in html  # the stack bought for the request
    up = html.count(">yes<")
    net.ledger.set_node_health(2, False)
    try:
        assert net._repr_html_().count(">yes<") == up - 1  # node 2's "healthy" cell
    finally:
        net.ledger.set_node_health(2, True)
    assert repr(net) == f"Network(in-process, nodes=2, models={[MODEL]!r})"


def test_a_closed_network_says_so() -> None:
    n = network()
    n.close()
    assert "closed" in n._repr_html_()


def test_no_key_material_input_text_or_vectors_in_any_repr_or_html(
        net: Network, client: AtomaLabClient) -> None:
    result = client.confidential_embeddings.create(input=[SECRET, OTHER], model=MODEL)
    plain = client.embeddings.create(input=[SECRET], model=MODEL)
    material = private_key_material(net)
    net.rotate(0)  # a key rotated away, and its successor
    material.update(private_key_material(net))
    lock = client.nodes.lock(MODEL)
    shown = {
        "network": (repr(net), net._repr_html_()),
        "result": (repr(result), result._repr_html_(), str(result)),
        "plain result": (repr(plain), plain._repr_html_()),
        "trace": (repr(result.trace), str(result.trace), result.trace._repr_html_()),
        "lock": (repr(lock), lock._repr_html_()),
        "captured": (net.captured._repr_html_(),),
    }
    assert len(material) >= 9  # two nodes (one rotated), their signers, proxy, vendor, API key
    floats = _floats(result.to_numpy())
    for name, texts in shown.items():
        for text in texts:
            assert leaks(text, material) == [], name
            assert SECRET not in text and escape(SECRET) not in text and OTHER not in text, name
            assert not [f for f in floats if f in text], name
    for name in ("network", "result", "plain result", "lock"):
        assert len(shown[name][0]) < 160 and "\n" not in shown[name][0], shown[name][0]


def test_a_lock_names_its_key_by_fingerprint(client: AtomaLabClient) -> None:
    lock = client.nodes.lock(MODEL)
    for text in (repr(lock), lock._repr_html_()):
        assert fingerprint(lock.public_key) in text
        assert lock.public_key.hex() not in text
        assert str(lock.stack_small_id) in text


def test_a_result_shows_shape_model_usage_node_attempts_and_stages(
        client: AtomaLabClient) -> None:
    result = client.confidential_embeddings.create(input=["one two", "three"], model=MODEL)
    html = result._repr_html_()
    assert "confidential" in html and "2 x 32" in html and escape(MODEL) in html
    assert f">{result.usage.total_tokens}<" in html and f">{result.node_small_id}<" in html
    assert all(stage in html for stage in result.trace.stages_ms)
    assert result.shape == (2, 32)
    assert result.summary()["attempts"] == 1 == result.attempts
    plain = client.embeddings.create(input="x", model=MODEL)
    assert "plain" in plain._repr_html_() and plain.summary()["node"] is None


def test_a_trace_as_a_frame_and_a_chart(client: AtomaLabClient) -> None:
    trace = client.confidential_embeddings.create(input="x", model=MODEL).trace
    frame = trace.to_frame()
    assert list(frame.index) == list(trace.stages_ms)
    assert list(frame.columns) == ["side", "ms", "share"]
    assert frame["ms"].tolist() == list(trace.stages_ms.values())
    assert set(frame["side"]) == {"client", "proxy", "node"}
    assert math.isclose(frame.loc["node_embed", "share"],
                        trace.stages_ms["node_embed"] / trace.total_ms)
    html = trace._repr_html_()
    assert html.count("<div style='background:") == len(trace.stages_ms)


def test_captured_traffic_as_a_frame_marks_where_text_is_visible(
        net: Network, client: AtomaLabClient) -> None:
    start = len(net.captured)
    client.embeddings.create(input=[SECRET], model=MODEL)
    client.confidential_embeddings.create(input=[SECRET], model=MODEL)
    recent = net.captured[start:]
    assert isinstance(recent, Captured) and isinstance(net.captured[start], type(recent[0]))
    frame = recent.to_frame(secrets=[SECRET])
    visible = dict(zip(frame["path"] + " @ " + frame["address"], frame["plaintext visible"],
                       strict=False))
    assert visible["/v1/embeddings @ inproc://proxy"]  # the plain route shows the text
    assert not visible["/v1/confidential/embeddings @ inproc://proxy"]
    assert not frame[frame["path"] == "/v1/confidential/embeddings"]["plaintext visible"].any()
    assert frame["request bytes"].gt(0).all() and list(frame["status"]) == [200] * len(frame)
    assert "/v1/nodes/lock" in recent._repr_html_()


def test_the_ledger_as_frames(net: Network, client: AtomaLabClient) -> None:
    client.confidential_embeddings.create(input="x", model=MODEL)
    users = net.ledger.to_frame("users")
    assert users.loc[net.user_id, "balance_usdc"] == net.ledger.balance(net.user_id)
    assert users.loc[net.user_id, "stacks"] == len(net.ledger.stacks(net.user_id))
    nodes = net.ledger.to_frame("nodes")
    assert nodes.loc[1, "key_fingerprint"] == fingerprint(net.nodes[0].public_key)
    stacks = net.ledger.to_frame("stacks")
    assert (stacks["free_units"] == stacks["num_compute_units"] - stacks["already_computed_units"]
            - stacks["locked_compute_units"]).all()
    settlements = net.ledger.to_frame("settlements")
    assert len(settlements) == len(net.ledger.settlements())
    assert settlements["units_charged"].sum() == sum(
        int(str(s["units_charged"])) for s in net.ledger.settlements())
    locks = net.ledger.to_frame("locks")
    assert list(locks.columns) == ["stack_small_id", "user_id", "max_num_tokens", "expires_at",
                                   "state"]
    for table in LEDGER_TABLES:  # the plain rows are the frame's, row for row, column for column
        rows, frame = net.ledger.rows(table), net.ledger.to_frame(table)
        assert all(set(row) == {frame.index.name, *frame.columns} for row in rows), table
        assert [row[frame.index.name] for row in rows] == list(frame.index), table
        assert table == "locks" or rows, table  # locks: the request above settled its own
    with pytest.raises(ValueError, match="table must be one of"):
        net.ledger.to_frame("api_tokens")


def test_a_load_run_as_a_frame_and_a_summary(net: Network) -> None:
    inputs: list[str | list[str]] = [f"load {i}" for i in range(11)] + [[]]  # the last is refused
    result = run_load(lambda: net.client(), inputs, concurrency=3, model=MODEL, timeout_s=120)
    frame = result.to_frame()
    assert list(frame.index) == list(range(12))
    assert frame["ok"].tolist() == [True] * 11 + [False]
    assert frame.loc[11, "error"] == "INVALID_FIELD"  # the empty input, refused by the client
    assert frame["latency_ms"].notna().all() and (frame["latency_ms"] > 0).all()
    assert set(frame["node"].dropna()) <= {1, 2}
    assert frame["total_tokens"].iloc[:11].tolist() == [r.usage.total_tokens for r in result.results[:11]]
    html = result._repr_html_()
    assert "Load run" in html and "failures" in html and "p99" in html
    assert "requests=12, failures=1" in repr(result)
