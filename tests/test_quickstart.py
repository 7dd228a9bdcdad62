"""``notebooks/00_quickstart.ipynb`` in a Jupyter kernel (nbclient, as nbmake runs it): the
network and a result render as HTML (their ``_repr_html_``, with the key by fingerprint), and the
cell that ``await``s 64 concurrent confidential requests through ``net.async_client()`` gets all
64 right. ``make test`` also runs it with nbmake, like every notebook."""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

import nbformat
import pytest

pytestmark = [pytest.mark.slow]

REPO = Path(__file__).resolve().parent.parent
NOTEBOOK = REPO / "notebooks" / "00_quickstart.ipynb"
FINGERPRINT = re.compile(r"[0-9a-f]{4}:[0-9a-f]{4}:[0-9a-f]{4}:[0-9a-f]{4}")


def _tagged(nb: Any, tag: str) -> Any:
    (cell,) = [c for c in nb.cells if tag in c.metadata.get("tags", [])]
    return cell


def _html(cell: Any) -> str:
    return "".join(o["data"]["text/html"] for o in cell.outputs
                   if o.get("output_type") == "execute_result" and "text/html" in o.get("data", {}))


@pytest.fixture(scope="module")
def executed(tmp_path_factory: pytest.TempPathFactory) -> Any:
    from nbclient import NotebookClient

    nb = nbformat.read(NOTEBOOK, as_version=4)
    env = {"PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])),
           "ATOMA_LAB_QUICK": "1", "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)  # the kernel inherits them: it imports this checkout's atoma_lab
    try:
        NotebookClient(nb, timeout=600, kernel_name="python3",
                       resources={"metadata": {"path": str(NOTEBOOK.parent)}}).execute()
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
    return nb


def test_the_network_renders_as_html(executed: Any) -> None:
    html = _html(_tagged(executed, "network"))
    assert "Nodes" in html and "Your user" in html and "inproc://node-2" in html
    assert len(FINGERPRINT.findall(html)) >= 2  # each node's key, by fingerprint


def test_a_result_renders_as_html(executed: Any) -> None:
    html = _html(_tagged(executed, "result"))
    assert "Embeddings result" in html and "3 x 384" in html and "node_embed" in html


def test_64_concurrent_confidential_requests_come_back_right(executed: Any) -> None:
    cell = _tagged(executed, "concurrent")
    assert "await asyncio.gather(" in cell.source and "net.async_client(" in cell.source
    assert not [o for o in cell.outputs if o.get("output_type") == "error"]
    printed = "".join(o.get("text", "") for o in cell.outputs if o.get("output_type") == "stream")
    assert "64 of 64 concurrent confidential requests correct" in printed
