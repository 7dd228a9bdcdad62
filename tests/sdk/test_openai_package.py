"""The `openai` package, unmodified, on the plain route of `build_network(mode="http")`.

What most code already calls: ``OpenAI(base_url=..., api_key=...).embeddings.create(model=...,
input=...)``, with its default base64 encoding and with floats, gets the engine's vectors (equal
to what atoma-lab's own client gets through the confidential route) and the tokenizer's usage.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator

import numpy as np
import pytest

from atoma_lab import build_network
from atoma_lab.client import DEFAULT_MODEL
from atoma_lab.lab.network import Network

openai = pytest.importorskip("openai")

pytestmark = [pytest.mark.integration]

TEXTS = ["Confidential embeddings through the openai package.", "Deuxième phrase.", "🙂 ok"]


@pytest.fixture(scope="module")
def net() -> Iterator[Network]:
    with build_network(nodes=1, mode="http") as network:
        yield network


@pytest.fixture(scope="module")
def expected(net: Network) -> tuple[np.ndarray, int]:
    client = net.client()
    try:
        result = client.confidential_embeddings.create(input=TEXTS, model=DEFAULT_MODEL)
        return result.to_numpy(), result.usage.total_tokens
    finally:
        client.close()


@pytest.mark.parametrize("encoding_format", [None, "float", "base64"])
def test_openai_package_gets_the_engines_vectors(net: Network, expected: tuple[np.ndarray, int],
                                                encoding_format: str | None) -> None:
    vectors, tokens = expected
    client = openai.OpenAI(base_url=f"{net.base_url}/v1", api_key=net.api_key, max_retries=0)
    options = {} if encoding_format is None else {"encoding_format": encoding_format}
    try:
        raw = client.embeddings.with_raw_response.create(model=DEFAULT_MODEL, input=TEXTS, **options)
        resp = raw.parse()
    finally:
        client.close()
    sent = json.loads(raw.http_request.content)
    assert sent["encoding_format"] == (encoding_format or "base64")  # the package's default
    rows = [d.embedding for d in sorted(resp.data, key=lambda d: d.index)]
    if encoding_format == "base64":  # asked for explicitly, the package hands the text back
        rows = [np.frombuffer(base64.b64decode(r), dtype="<f4") for r in rows]
    else:  # by default it asks for base64 itself and decodes it
        assert all(isinstance(r, list) for r in rows)
    got = np.asarray(rows, dtype=np.float32)
    assert got.shape == vectors.shape == (len(TEXTS), 384)
    assert np.array_equal(got, vectors)  # float32 values survive JSON and base64 exactly
    assert resp.model == DEFAULT_MODEL
    assert resp.usage.prompt_tokens == resp.usage.total_tokens == tokens


def test_openai_package_sees_our_errors_as_its_own(net: Network) -> None:
    client = openai.OpenAI(base_url=f"{net.base_url}/v1", api_key="atl-not-a-key", max_retries=0)
    try:
        with pytest.raises(openai.AuthenticationError) as info:
            client.embeddings.create(model=DEFAULT_MODEL, input="x")
        assert info.value.status_code == 401
    finally:
        client.close()
    client = openai.OpenAI(base_url=f"{net.base_url}/v1", api_key=net.api_key, max_retries=0)
    try:
        with pytest.raises(openai.NotFoundError):
            client.embeddings.create(model="no/such-model", input="x")
    finally:
        client.close()
