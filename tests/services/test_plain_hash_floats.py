"""The plain route's response_hash must survive the proxy's re-serialisation for every float.

orjson writes float32 arrays with its own layout (``0.0000010337674``) where serde_json, parsing
the text into f64 and writing it back, uses ``1.0337674e-6``. The node hashes the serde-compact
form, as Atoma's node does with TEI's answer.
"""

from __future__ import annotations

import numpy as np
import orjson
from fakes import MODEL, network

from atoma_lab.protocol.openai import CreateEmbeddingRequest, EmbeddingUsage
from atoma_lab.services.embedders import CallableEmbedder

# Values across the layouts: tiny, around 1e-6 .. 1e-5 (where orjson's f32 and f64 writers
# disagree), ordinary, and large.
VALUES = np.array([1.0337674e-6, -1.054276e-6, 3.2e-7, 9.99e-6, 1.2345e-5, 0.1, -0.5, 123.25, 1e-8],
                  dtype=np.float32)


def _embed(request: CreateEmbeddingRequest) -> tuple[bytes, EmbeddingUsage]:
    n = len(request.inputs())
    body = orjson.dumps({"object": "list",
                         "data": [{"object": "embedding", "embedding": VALUES, "index": i}
                                  for i in range(n)],
                         "model": request.model, "usage": {"prompt_tokens": n, "total_tokens": n}},
                        option=orjson.OPT_SERIALIZE_NUMPY)
    return body, EmbeddingUsage(n, n)


def test_float32_layouts_survive_the_proxy_check() -> None:
    assert orjson.dumps(VALUES, option=orjson.OPT_SERIALIZE_NUMPY) != orjson.dumps(
        orjson.loads(orjson.dumps(VALUES, option=orjson.OPT_SERIALIZE_NUMPY)))  # the trap exists
    net = network(nodes=1, embedder=CallableEmbedder([MODEL], _embed))
    try:
        got = net.client().embeddings.create(input=["a", "b"], model=MODEL).to_numpy()
        np.testing.assert_array_equal(got, np.stack([VALUES, VALUES]))
    finally:
        net.close()
