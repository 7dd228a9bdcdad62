"""OpenAI request -> response bytes: key order, float and base64 encodings, usage, errors."""

from __future__ import annotations

import asyncio
import base64
import json
from typing import Any

import numpy as np
import pytest

from atoma_lab.errors import InvalidFieldError, ModelNotFoundError
from atoma_lab.inference import (
    DynamicBatcher,
    FakeEngine,
    NodeEmbedder,
    aembed_request,
    embed_request,
    encode_embeddings_response,
)
from atoma_lab.protocol.openai import CreateEmbeddingRequest, CreateEmbeddingResponse

from .conftest import MIXED_CORPUS


def _openai_python_decode(data: str) -> np.ndarray:
    """What openai-python does with a base64 embedding (``embeddings.py``)."""
    return np.frombuffer(base64.b64decode(data), dtype="float32")


def test_response_layout_and_key_order() -> None:
    vectors = np.array([[0.1, -0.25, 3.0], [1e-8, 0.0, -1.5]], dtype=np.float32)
    body = encode_embeddings_response(vectors, model="m", prompt_tokens=7)
    parsed = json.loads(body)
    assert list(parsed) == ["object", "data", "model", "usage"]
    assert parsed["object"] == "list" and parsed["model"] == "m"
    assert parsed["usage"] == {"prompt_tokens": 7, "total_tokens": 7}
    assert list(parsed["usage"]) == ["prompt_tokens", "total_tokens"]
    for i, item in enumerate(parsed["data"]):
        assert list(item) == ["object", "embedding", "index"]
        assert item["object"] == "embedding" and item["index"] == i
        # JSON floats read back as float64 round to exactly the float32 we had.
        assert np.array_equal(np.asarray(item["embedding"], dtype=np.float32), vectors[i])
    assert body.startswith(b'{"object":"list","data":[{"object":"embedding","embedding":[0.1,')


def test_float_json_round_trips_exactly_for_real_vectors(engine: Any) -> None:
    vectors = engine.embed(MIXED_CORPUS).vectors
    parsed = json.loads(encode_embeddings_response(vectors, model="m", prompt_tokens=1))
    got = np.asarray([d["embedding"] for d in parsed["data"]], dtype=np.float32)
    assert np.array_equal(got, vectors)


def test_base64_decodes_to_the_float_vectors(engine: Any) -> None:
    vectors = engine.embed(MIXED_CORPUS[:5]).vectors
    body = encode_embeddings_response(vectors, model="m", prompt_tokens=3,
                                      encoding_format="base64")
    parsed = json.loads(body)
    for i, item in enumerate(parsed["data"]):
        assert isinstance(item["embedding"], str)
        decoded = _openai_python_decode(item["embedding"])
        assert np.array_equal(decoded, vectors[i])
        # Little-endian float32 whatever the host: same bytes as an explicit '<f4' encoding.
        assert base64.b64decode(item["embedding"]) == vectors[i].astype("<f4").tobytes()
    # The protocol's own response parser agrees.
    assert np.array_equal(CreateEmbeddingResponse.from_json(body).to_numpy(), vectors)


def test_response_arguments() -> None:
    v = np.zeros((1, 4), np.float64)  # any float dtype is written as float32
    assert json.loads(encode_embeddings_response(v, model="m", prompt_tokens=0,
                                                 encoding_format=None))["data"][0][
        "embedding"] == [0.0] * 4
    assert json.loads(encode_embeddings_response(v, model="m", prompt_tokens=2,
                                                 total_tokens=5))["usage"]["total_tokens"] == 5
    with pytest.raises(InvalidFieldError):
        encode_embeddings_response(v, model="m", prompt_tokens=0,
                                   encoding_format="hex")  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        encode_embeddings_response(np.zeros(3), model="m", prompt_tokens=0)


def test_embed_request_with_the_real_model(engine: Any, st_model: Any) -> None:
    req = CreateEmbeddingRequest(input=["hello world", "Привет 🌍"], model=engine.model_name)
    body, usage = embed_request(engine, req)
    resp = CreateEmbeddingResponse.from_json(body)
    want = st_model.encode(["hello world", "Привет 🌍"], normalize_embeddings=True)
    assert float(np.abs(resp.to_numpy() - want).max()) <= 1e-5
    counts = [len(st_model.tokenizer(t)["input_ids"]) for t in ["hello world", "Привет 🌍"]]
    assert usage.prompt_tokens == usage.total_tokens == sum(counts)
    assert resp.usage == usage and resp.model == engine.model_name


def test_single_string_tokens_dimensions_and_base64(engine: Any) -> None:
    ids = engine.tokenize("token ids").sequences[0][1:-1]
    reqs = {
        "string": CreateEmbeddingRequest(input="token ids", model=engine.model_name),
        "ids": CreateEmbeddingRequest(input=ids, model=engine.model_name),
        "id-lists": CreateEmbeddingRequest(input=[ids, ids], model=engine.model_name),
    }
    full = engine.embed(["token ids"]).vectors[0]
    n = engine.count_tokens("token ids")[0]
    assert n == len(ids) + 2
    for name, req in reqs.items():
        body, usage = embed_request(engine, req)
        vecs = CreateEmbeddingResponse.from_json(body).to_numpy()
        assert float(np.abs(vecs - full).max()) <= 1e-6, name
        assert usage.prompt_tokens == n * len(vecs)
    req = CreateEmbeddingRequest(input=["a", "b"], model=engine.model_name, dimensions=128,
                                 encoding_format="base64")
    body, _ = embed_request(engine, req)
    items = json.loads(body)["data"]
    assert [len(_openai_python_decode(d["embedding"])) for d in items] == [128, 128]
    assert np.allclose(np.linalg.norm(_openai_python_decode(items[0]["embedding"])), 1.0)


def test_request_errors(engine: Any) -> None:
    with pytest.raises(ModelNotFoundError):
        embed_request(engine, CreateEmbeddingRequest(input="x", model="other/model"))
    with pytest.raises(InvalidFieldError) as err:
        embed_request(engine, CreateEmbeddingRequest(input="x", model=engine.model_name,
                                                     dimensions=4096))
    assert err.value.field == "dimensions"
    with pytest.raises(InvalidFieldError) as err:
        embed_request(engine, CreateEmbeddingRequest(input=[[1, 2], [40_000]],
                                                     model=engine.model_name))
    assert err.value.field == "input[1]"
    from atoma_lab.errors import InputTooLongError

    with pytest.raises(InputTooLongError):
        embed_request(engine, CreateEmbeddingRequest(input=["a", "b " * 400],
                                                     model=engine.model_name), truncate=False)
    # An empty input list never reaches the engine: the request itself is a 400.
    with pytest.raises(InvalidFieldError) as err:
        CreateEmbeddingRequest.from_dict({"input": [], "model": engine.model_name})
    assert err.value.status == 400 and err.value.field == "input"


def test_served_names_and_the_async_path() -> None:
    engine = FakeEngine(model_name="fake/a")
    req = CreateEmbeddingRequest(input=["x y", "z"], model="alias")
    with pytest.raises(ModelNotFoundError):
        embed_request(engine, req)
    body, usage = embed_request(engine, req, served_names=["fake/a", "alias"])
    assert json.loads(body)["model"] == "alias" and usage.prompt_tokens == 7
    with DynamicBatcher(engine, max_wait_ms=1) as batcher:
        body2, usage2 = asyncio.run(aembed_request(batcher, req, served_names=["alias"]))
    assert body2 == body and usage2 == usage


def test_node_embedder_shape() -> None:
    node = NodeEmbedder(FakeEngine(model_name="fake/a"), aliases=["fake/b", "fake/a"])
    try:
        assert list(node.models) == ["fake/a", "fake/b"]
        req = CreateEmbeddingRequest(input="one two", model="fake/b", encoding_format="base64")
        out = asyncio.run(node.embed(req))
        assert out.usage.total_tokens == 4
        assert node.embed_sync(req) == out
        with pytest.raises(ModelNotFoundError):
            asyncio.run(node.embed(CreateEmbeddingRequest(input="x", model="fake/c")))
    finally:
        node.close()
