"""The helpers the notebooks call (atoma_lab.lab.notebook) and the notebook runner.

Networks here serve the fake embedder (tests/fakes.py): these tests are about bytes, tables and
status codes, not vectors.
"""

from __future__ import annotations

import base64
import json
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from fakes import MODEL, network

from atoma_lab.lab.network import Network
from atoma_lab.lab.notebook import (
    NEGATIVE_CASES,
    STAGE_GROUPS,
    NegativeCase,
    agreement,
    captured_rows,
    error_of,
    flip_b64,
    grouped_stages,
    ledger_summary,
    negative_matrix,
    preview,
    repo_root,
    reveals,
    rowwise_cosine,
    save_figure,
    sdk_python,
    sdk_roundtrip,
    shorten,
    size_label,
    stage_group,
    stage_medians,
    synthetic_texts,
    wire_fields,
)
from atoma_lab.protocol.atoma.envelope import seal_request
from atoma_lab.tools import notebook_runner
from atoma_lab.transport.base import Response

SECRET = "confidential «texte» 7f3a"


@pytest.fixture
def net(make_net: Callable[..., Network]) -> Network:
    return make_net(nodes=1)


# ------------------------------------------------------------------------------------------------
# Bytes and wire messages
# ------------------------------------------------------------------------------------------------


def test_preview_and_shorten() -> None:
    assert preview(b"\x01\x02") == "0102"
    assert preview(bytes(range(20)), 4) == "00010203… (20 bytes)"
    assert preview(bytes(16), 16) == "00" * 16
    with pytest.raises(TypeError):
        preview("not bytes")  # type: ignore[arg-type]
    assert shorten("abc", 5) == "abc"
    assert shorten("abcdefgh", 3) == "abc… (8 chars)"


def test_wire_fields_decode_binary_fields() -> None:
    sealed = seal_request(b'{"input":"x","model":"m"}', node_public_key=bytes(range(1, 33)),
                          stack_small_id=7, model_name="m")
    rows = {r["field"]: r for r in wire_fields(sealed.request.to_dict())}
    assert rows["nonce"]["bytes"] == 12
    assert rows["salt"]["bytes"] == 16
    assert rows["client_dh_public_key"]["bytes"] == 32
    assert rows["ciphertext"]["bytes"] == len(b'{"input":"x","model":"m"}') + 16
    assert rows["node_dh_public_key"]["hex"].startswith(bytes(range(1, 9)).hex())
    assert rows["stack_small_id"] == {"field": "stack_small_id", "wire value": "7", "bytes": "",
                                      "hex": ""}


def test_reveals_finds_raw_and_json_escaped_text() -> None:
    assert reveals(SECRET.encode(), [SECRET])
    assert reveals(json.dumps({"input": SECRET}).encode("ascii"), [SECRET])  # «» escaped
    assert not reveals(b"nothing here", [SECRET])
    assert not reveals(b"anything", [""])


def test_captured_rows_show_what_each_service_saw(net: Network) -> None:
    client = net.client()
    n0 = len(net.captured)
    client.confidential_embeddings.create(input=[SECRET, "second"], model=MODEL)
    confidential = captured_rows(net.captured[n0:], [SECRET])
    n1 = len(net.captured)
    client.embeddings.create(input=[SECRET], model=MODEL)
    plain = captured_rows(net.captured[n1:], [SECRET])

    conf_hops = [r for r in confidential if r["path"] == "/v1/confidential/embeddings"]
    assert {r["address"] for r in conf_hops} == {"inproc://proxy", "inproc://node-1"}
    assert all(r["status"] == 200 and r["request bytes"] > 0 for r in conf_hops)
    assert not any(r["plaintext visible"] for r in confidential)
    plain_hops = [r for r in plain if r["path"] == "/v1/embeddings"]
    assert len(plain_hops) == 2 and all(r["plaintext visible"] for r in plain_hops)


# ------------------------------------------------------------------------------------------------
# Stage timings
# ------------------------------------------------------------------------------------------------


def test_stage_group() -> None:
    assert stage_group("node_embed") == "model (node_embed)"
    assert stage_group("seal") == stage_group("decode")
    assert stage_group("node_somethingnew") == stage_group("node_open")
    assert stage_group("proxy_somethingnew") == stage_group("proxy_check")
    assert stage_group("mystery") == "other"
    every = [s for stages in STAGE_GROUPS.values() for s in stages]
    assert len(every) == len(set(every))


def test_stage_medians_count_missing_stages_as_zero() -> None:
    traces = [{"a": 1.0, "b": 10.0}, {"a": 3.0}, {"a": 2.0, "c": 5.0}]
    assert stage_medians(traces) == {"a": 2.0, "b": 0.0, "c": 0.0}
    assert list(stage_medians(traces)) == ["a", "b", "c"]


def test_grouped_stages_sum_groups_in_order_and_clip_negatives() -> None:
    traces = {
        "conf": [{"lock": 1.0, "seal": 0.5, "open": 0.5, "node_embed": 10.0, "transport": -0.2}],
        "plain": [{"encode": 0.1, "node_embed": 12.0, "proxy_check": 1.0}],
    }
    rows = grouped_stages(traces)
    got = {(r["label"], r["group"]): r["ms"] for r in rows}
    assert got[("conf", "client: seal/open or JSON")] == 1.0
    assert got[("conf", "lock and attestation")] == 1.0
    assert got[("conf", "transport")] == 0.0  # a negative remainder is drawn as nothing
    assert got[("plain", "model (node_embed)")] == 12.0
    assert got[("plain", "proxy: checks, verification")] == 1.0
    groups = [r["group"] for r in rows if r["label"] == "conf"]
    assert groups == [*STAGE_GROUPS, "other"]


# ------------------------------------------------------------------------------------------------
# Vectors, inputs, sizes
# ------------------------------------------------------------------------------------------------


def test_rowwise_cosine_and_agreement() -> None:
    a = np.array([[1.0, 0.0], [0.0, 2.0], [0.0, 0.0]], dtype=np.float32)
    b = np.array([[2.0, 0.0], [1.0, 0.0], [0.0, 0.0]], dtype=np.float32)
    np.testing.assert_allclose(rowwise_cosine(a, b), [1.0, 0.0, 0.0])
    same = agreement(a, a)
    assert same == {"min cosine": 0.0, "mean cosine": pytest.approx(2 / 3), "max abs diff": 0.0,
                    "n": 3}
    rng = np.random.default_rng(0)
    x = rng.standard_normal((5, 8)).astype(np.float32)
    got = agreement(x, x + np.float32(1e-3))
    assert got["min cosine"] > 0.999 and got["max abs diff"] == pytest.approx(1e-3, rel=1e-3)
    with pytest.raises(ValueError, match="one shape"):
        rowwise_cosine(a, b[:2])


def test_synthetic_texts() -> None:
    texts = synthetic_texts(50, 12, seed=3)
    assert texts == synthetic_texts(50, 12, seed=3)
    assert texts != synthetic_texts(50, 12, seed=4)
    assert len(set(texts)) == 50
    assert all(len(t.split()) == 12 for t in texts)
    assert synthetic_texts(2, 1) == ["0", "1"]
    assert synthetic_texts(0, 5) == []
    with pytest.raises(ValueError):
        synthetic_texts(1, 0)


def test_size_label() -> None:
    assert [size_label(n) for n in (64, 1000, 1024, 16 << 10, 1 << 20, 1536)] == [
        "64 B", "1000 B", "1 KiB", "16 KiB", "1 MiB", "1536 B"]


# ------------------------------------------------------------------------------------------------
# Ledger, errors, the negative matrix
# ------------------------------------------------------------------------------------------------


def test_ledger_summary_matches_usage(net: Network) -> None:
    assert ledger_summary(net.ledger)["units charged"] == 0
    client = net.client()
    conf = client.confidential_embeddings.create(input=["a b c", "d"], model=MODEL)
    plain = client.embeddings.create(input="e f", model=MODEL)
    books = ledger_summary(net.ledger)
    assert books["units charged (confidential)"] == conf.usage.total_tokens
    assert books["units charged (plain)"] == plain.usage.total_tokens
    assert books["units charged"] == books["stack units computed"] == (
        conf.usage.total_tokens + plain.usage.total_tokens)
    assert (books["charged requests"], books["refused requests"]) == (2, 0)


def test_error_of_and_flip_b64() -> None:
    assert error_of(Response(409, b'{"error":{"code":"STALE_NODE_KEY","message":"m"}}')) == (
        409, "STALE_NODE_KEY")
    assert error_of(Response(502, b"<html>")) == (502, None)
    value = base64.b64encode(bytes(8)).decode()
    flipped = base64.b64decode(flip_b64(value, 3))
    assert flipped == bytes(3) + b"\x01" + bytes(4)
    assert base64.b64decode(flip_b64(value, -1))[-1] == 1


@pytest.mark.parametrize("mode", ["inprocess", pytest.param("http", marks=pytest.mark.integration)])
def test_negative_matrix_gets_every_expected_error_and_charges_nothing(mode: str) -> None:
    with network(nodes=1, mode=mode) as n:
        rows = negative_matrix(n, model=MODEL)
        assert [r["case"] for r in rows] == [c.name for c in NEGATIVE_CASES]
        wrong = [r for r in rows if not r["as expected"]]
        assert wrong == []
        assert all(r["units charged"] == 0 for r in rows)
        assert all(400 <= r["status"] < 500 and r["message"] for r in rows if r["code"])
        # Its own rotation took: the proxy now hands out the node's new key.
        client = n.client()
        assert client.nodes.lock(MODEL).public_key == n.nodes[0].public_key
        assert n.nodes[0].key_rotation_counter == 2


def test_a_failing_case_is_reported_not_hidden(net: Network) -> None:
    no_key = next(c for c in NEGATIVE_CASES if c.name == "no API key")
    wrong = NegativeCase("expects the wrong code", 400, "NOPE", no_key.make)
    (row,) = negative_matrix(net, model=MODEL, cases=[wrong])
    assert (row["status"], row["code"], row["as expected"]) == (401, "AUTH_ERROR", False)


# ------------------------------------------------------------------------------------------------
# The official SDK, figures
# ------------------------------------------------------------------------------------------------


def test_sdk_python_honours_the_environment(monkeypatch: pytest.MonkeyPatch,
                                           tmp_path: Path) -> None:
    monkeypatch.setenv("ATOMA_LAB_SDK_PYTHON", str(tmp_path / "missing"))
    assert sdk_python() is None
    python = tmp_path / "python"
    python.write_text("")
    monkeypatch.setenv("ATOMA_LAB_SDK_PYTHON", str(python))
    assert sdk_python() == python
    monkeypatch.delenv("ATOMA_LAB_SDK_PYTHON")
    default = repo_root() / ".venv-sdk" / "bin" / "python"
    assert sdk_python() == (default if default.exists() else None)
    # Relative, as the Makefile passes it, from another working directory (nbmake's notebooks/).
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("ATOMA_LAB_SDK_PYTHON", "pyproject.toml")
    assert sdk_python() == repo_root() / "pyproject.toml"
    monkeypatch.setenv("ATOMA_LAB_SDK_PYTHON", "python")
    assert sdk_python() == Path("python")  # the working directory wins


@pytest.mark.sdk
@pytest.mark.integration
def test_sdk_roundtrip_against_an_http_network() -> None:
    python = sdk_python()
    if python is None:
        pytest.skip("the SDK venv is missing (make sdk-setup)")
    with network(nodes=1, mode="http") as n:
        got = sdk_roundtrip(python, base_url=n.base_url or "", api_key=n.api_key,
                            texts=["one two", "three"], model=MODEL)
        ours = n.client().confidential_embeddings.create(input=["one two", "three"], model=MODEL)
    np.testing.assert_array_equal(got["confidential"], ours.to_numpy())
    np.testing.assert_array_equal(got["plain"], ours.to_numpy())
    assert got["confidential_usage"] == got["plain_usage"] == ours.usage.total_tokens


def test_sdk_roundtrip_failure_raises(tmp_path: Path) -> None:
    with pytest.raises(RuntimeError, match="atoma-sdk round trip failed"):
        sdk_roundtrip(sys.executable, base_url="http://127.0.0.1:9", api_key="k", texts=["x"])


class _Figure:
    def __init__(self) -> None:
        self.calls: list[tuple[Path, int]] = []

    def savefig(self, path: Path, *, dpi: int, bbox_inches: str) -> None:
        self.calls.append((path, dpi))
        Path(path).write_bytes(b"\x89PNG")


def test_save_figure_only_when_asked(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    fig = _Figure()
    monkeypatch.delenv("ATOMA_LAB_FIGURES_DIR", raising=False)
    assert save_figure(fig, "x") is None and fig.calls == []
    monkeypatch.setenv("ATOMA_LAB_FIGURES_DIR", str(tmp_path / "figs"))
    path = save_figure(fig, "02_aead_latency", dpi=50)
    assert path == tmp_path / "figs" / "02_aead_latency.png" and path.read_bytes() == b"\x89PNG"
    assert fig.calls == [(path, 50)]


# ------------------------------------------------------------------------------------------------
# The runner (make notebooks)
# ------------------------------------------------------------------------------------------------


def _notebook(path: Path, *sources: str) -> None:
    import nbformat
    from nbformat.v4 import new_code_cell, new_notebook

    nb = new_notebook(cells=[new_code_cell(s) for s in sources])
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nbformat.write(nb, path)


def test_find_notebooks_sorted(tmp_path: Path) -> None:
    for name in ("02_b.ipynb", "01_a.ipynb", "notes.txt"):
        (tmp_path / name).write_text("{}")
    assert [p.name for p in notebook_runner.find_notebooks(tmp_path)] == ["01_a.ipynb", "02_b.ipynb"]


def test_runner_without_notebooks_fails(tmp_path: Path) -> None:
    assert notebook_runner.main([str(tmp_path), str(tmp_path / "out")]) == 1


@pytest.mark.slow
def test_runner_executes_renders_and_fails_loudly(tmp_path: Path) -> None:
    src, out = tmp_path / "nb", tmp_path / "out"
    src.mkdir()
    _notebook(src / "01_ok.ipynb",
              "import os\nQUICK = os.environ['ATOMA_LAB_QUICK']\nprint('quick', QUICK)",
              "import pathlib\npathlib.Path(os.environ['ATOMA_LAB_FIGURES_DIR'], '01_ok.png')"
              ".write_bytes(b'png')")
    _notebook(src / "02_bad.ipynb", "raise RuntimeError('boom')", "print('never')")
    done = subprocess.run([sys.executable, "-m", "atoma_lab.tools.notebook_runner", str(src), str(out),
                           "--quick"], capture_output=True, text=True, timeout=300, check=False)
    assert done.returncode == 1, done.stdout + done.stderr
    assert "FAILED 02_bad.ipynb" in done.stderr and "RuntimeError" in done.stderr
    assert {p.name for p in out.iterdir()} == {"01_ok.ipynb", "01_ok.html", "01_ok.png",
                                                "02_bad.ipynb", "02_bad.html"}
    executed = json.loads((out / "01_ok.ipynb").read_text())
    assert "".join(executed["cells"][0]["outputs"][0]["text"]) == "quick 1\n"
    assert "boom" in (out / "02_bad.html").read_text()
