"""A node's embedder that forwards to an embedding server over HTTP (infinity, vLLM, TEI).

:class:`RemoteEmbedder` has the node's ``Embedder`` shape (``models`` and ``async embed``) and
answers what the in-process engine answers: the same OpenAI JSON, written by
:func:`~atoma_lab.inference.serving.encode_embeddings_response` (same key order, ``float`` or
``base64``), ``dimensions`` applied here with :func:`~atoma_lab.inference.engine.apply_dimensions`
(keep the first ``d`` components, normalise again), ``model`` the name the request used. The
backend is asked for full-length vectors; the node never forwards ``dimensions``.

Two wire APIs:

* ``"openai"``: ``POST {base_url}/embeddings``, ``base_url`` as the OpenAI SDK takes it
  (``http://host:8000/v1`` for vLLM and TEI; infinity serves at its root unless started with
  ``--url-prefix /v1``). Vectors travel as base64 float32 by default (exact, and cheaper to
  parse than JSON floats).
* ``"tei"``: TEI's own ``POST {base_url}/embed`` (bare vectors; ``truncate`` and ``normalize``
  sent), ``base_url`` the server's root. Its
  token count comes from the ``x-compute-tokens`` header TEI sets on every answer, else from
  ``POST /tokenize`` (capped at ``/info``'s ``max_input_length`` when truncating).

``usage`` is the model's real token count (special tokens included, after truncation). vLLM and
TEI report it; infinity (0.0.78) reports *characters*, or tokens without the special ones with
``--lengths-via-tokenize``. For such a backend give a ``token_counter`` (a local tokenizer, e.g.
an engine's ``count_tokens``); :func:`~atoma_lab.inference.remote_embedder` with
``api="infinity"`` does that with the model's own tokenizer.

Failures (never a hang, never a 500): the backend cannot be reached ->
:class:`~atoma_lab.errors.BackendUnavailableError` (503); no answer within ``timeout_s`` ->
:class:`~atoma_lab.errors.BackendTimeoutError` (504); a 5xx, a body that is not the expected
JSON, the wrong number of vectors, non-finite values -> :class:`~atoma_lab.errors.BadBackendResponseError`
(502); a 4xx for the caller's fault -> ours (an over-long input is
:class:`~atoma_lab.errors.InputTooLongError`, other refused input a 400
:class:`~atoma_lab.errors.RequestError`); a 4xx that is the node's misconfiguration (401, 403,
404, a batch too large) -> 502. A backend's error text is read to classify it, never repeated:
it may quote the input, which must not leave the node in the clear.

Retries: embedding has no side effect, so a request whose connection failed (refused, reset,
dropped before an answer: a stale pooled connection) is sent again, at most ``retries`` times,
within the same overall ``timeout_s``. Timeouts and HTTP error answers are not retried.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Callable, Sequence
from typing import Any, Literal

import httpx
import numpy as np

from atoma_lab.encoding import loads
from atoma_lab.errors import (
    AtomaLabError,
    BackendTimeoutError,
    BackendUnavailableError,
    BadBackendResponseError,
    InputTooLongError,
    InvalidFieldError,
    ModelNotFoundError,
    PeerProtocolError,
    RequestError,
    quoted,
)
from atoma_lab.inference.engine import apply_dimensions
from atoma_lab.inference.registry import DEFAULT_MODEL
from atoma_lab.inference.serving import EmbedResponse, encode_embeddings_response
from atoma_lab.protocol.openai import CreateEmbeddingRequest, CreateEmbeddingResponse, EmbeddingUsage

Api = Literal["openai", "tei"]
FactoryApi = Literal["openai", "tei", "infinity"]
WireFormat = Literal["float", "base64"]
Inputs = list[str] | list[list[int]]
#: Each input's token count (special tokens included, after truncation), in input order.
TokenCounter = Callable[[Inputs], Sequence[int]]

OPENAI_PATH = "/embeddings"  # under base_url, as the OpenAI SDK appends it
TEI_EMBED_PATH = "/embed"
TEI_TOKENIZE_PATH = "/tokenize"
TEI_INFO_PATH = "/info"
TEI_TOKENS_HEADER = "x-compute-tokens"  # TEI: prompt tokens of the whole request
TEI_MAX_CLIENT_BATCH_SIZE = 32  # inputs per request, TEI's default --max-client-batch-size
DEFAULT_TIMEOUT_S = 60.0  # whole call, retries included
DEFAULT_CONNECT_TIMEOUT_S = 5.0
DEFAULT_RETRIES = 1
DEFAULT_MAX_CONNECTIONS = 32

# How backends say an input is too long (TEI: "`inputs` must have less than 512 tokens";
# vLLM: "This model's maximum context length is 512 tokens"; others: "too long").
_TOO_LONG = re.compile(r"must have less than|maximum context length|too long|longer than|"
                       r"exceeds? the max|maximum (?:input|sequence) length", re.IGNORECASE)
_BATCH_TOO_LARGE = re.compile(r"batch size", re.IGNORECASE)
# Connection failures after which resending is safe (no answer was read).
_RETRYABLE = (httpx.ConnectError, httpx.ReadError, httpx.WriteError, httpx.RemoteProtocolError)


class RemoteEmbedder:
    """Serve ``served_name`` (and ``aliases``) with the embedding server at ``base_url``.

    ``model`` is the backend's name for the model (sent as ``model`` on the OpenAI API);
    ``served_name`` is what this node advertises and answers with (default: ``model``).
    ``timeout_s`` bounds a whole call (retries and the TEI token count included);
    ``connect_timeout_s`` bounds each connection attempt. ``max_inputs_per_call`` splits a
    request into concurrent backend calls (default: TEI's 32 for ``api="tei"``, none for
    ``"openai"``). ``truncate`` is sent to TEI's ``/embed``; the OpenAI API has no such field
    (infinity truncates, TEI follows its ``--auto-truncate``). ``api_key`` goes in
    ``Authorization: Bearer``.

    The :class:`httpx.AsyncClient` is pooled and created in the event loop that first uses it;
    :meth:`aclose` it from that loop (or :meth:`close` from another thread).
    """

    def __init__(self, base_url: str, *, api: Api = "openai", model: str,
                 served_name: str | None = None, aliases: Sequence[str] = (),
                 timeout_s: float = DEFAULT_TIMEOUT_S,
                 connect_timeout_s: float = DEFAULT_CONNECT_TIMEOUT_S,
                 retries: int = DEFAULT_RETRIES, max_inputs_per_call: int | None = None,
                 wire_format: WireFormat = "base64", truncate: bool = True,
                 token_counter: TokenCounter | None = None, api_key: str | None = None,
                 max_connections: int = DEFAULT_MAX_CONNECTIONS) -> None:
        if api not in ("openai", "tei"):
            raise ValueError(f"api must be 'openai' or 'tei', not {api!r}")
        if wire_format not in ("float", "base64"):
            raise ValueError(f"wire_format must be 'float' or 'base64', not {wire_format!r}")
        if not base_url.startswith(("http://", "https://")):
            raise ValueError("base_url must be an http:// or https:// URL")
        if timeout_s <= 0 or connect_timeout_s <= 0:
            raise ValueError("timeouts must be positive")
        if retries < 0:
            raise ValueError("retries must be >= 0")
        if max_inputs_per_call is None and api == "tei":
            max_inputs_per_call = TEI_MAX_CLIENT_BATCH_SIZE
        if max_inputs_per_call is not None and max_inputs_per_call < 1:
            raise ValueError("max_inputs_per_call must be >= 1")
        self.base_url = base_url.rstrip("/")
        self.api: Api = api
        self.model = model
        self.timeout_s = float(timeout_s)
        self.connect_timeout_s = float(connect_timeout_s)
        self.retries = retries
        self.max_inputs_per_call = max_inputs_per_call
        self.wire_format: WireFormat = wire_format
        self.truncate = truncate
        self.token_counter = token_counter
        self._models = tuple(dict.fromkeys([served_name or model, *aliases]))
        self._headers = {"authorization": f"Bearer {api_key}"} if api_key else {}
        self._limits = httpx.Limits(max_connections=max_connections,
                                    max_keepalive_connections=max_connections)
        self._http: httpx.AsyncClient | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._dimensions: int | None = None  # learnt from the first answer
        self._tei_max_input_length: int | None = None

    # ------------------------------------------------------------------ the node's interface
    @property
    def models(self) -> Sequence[str]:
        return self._models

    @property
    def dimensions(self) -> int | None:
        """The backend's vector length, once an answer has shown it."""
        return self._dimensions

    async def embed(self, request: CreateEmbeddingRequest) -> EmbedResponse:
        """The OpenAI answer to ``request``, computed by the backend."""
        if request.model not in self._models:
            raise ModelNotFoundError(f"model {quoted(request.model)} is not served here; "
                                     f"this embedder serves {list(self._models)}", field="model")
        inputs = request.inputs()
        if not inputs:
            raise InvalidFieldError("input: must not be an empty list", field="input")
        if request.dimensions is not None and self._dimensions is not None:
            apply_dimensions(np.zeros((0, self._dimensions), np.float32), request.dimensions,
                             model_dimensions=self._dimensions)  # refuse before the work
        try:
            async with asyncio.timeout(self.timeout_s):
                vectors, prompt_tokens = await self._embed_inputs(inputs)
        except TimeoutError as exc:
            raise BackendTimeoutError(
                f"the embedding backend did not answer within {self.timeout_s:g} s") from exc
        self._dimensions = int(vectors.shape[1])
        vectors = apply_dimensions(vectors, request.dimensions, model_dimensions=self._dimensions)
        body = encode_embeddings_response(vectors, model=request.model, prompt_tokens=prompt_tokens,
                                          encoding_format=request.encoding_format)
        return EmbedResponse(body=body, usage=EmbeddingUsage(prompt_tokens, prompt_tokens))

    async def _embed_inputs(self, inputs: Inputs) -> tuple[np.ndarray, int]:
        counting = (asyncio.ensure_future(asyncio.to_thread(self._count, inputs))
                    if self.token_counter is not None else None)
        step = self.max_inputs_per_call or len(inputs)
        chunks = [inputs[i:i + step] for i in range(0, len(inputs), step)]
        calls = asyncio.gather(*(self._call(chunk) for chunk in chunks))
        try:
            counted = await counting if counting is not None else None  # the caller's errors first
            results = await calls
        except BaseException:
            calls.cancel()
            if counting is not None:
                counting.cancel()
            raise
        vectors = results[0][0] if len(results) == 1 else np.concatenate([r[0] for r in results])
        if counted is not None:
            return vectors, sum(counted)
        return vectors, sum(r[1] for r in results)

    def _count(self, inputs: Inputs) -> list[int]:
        assert self.token_counter is not None
        counts = [int(n) for n in self.token_counter(inputs)]
        if len(counts) != len(inputs) or any(n < 0 for n in counts):
            raise ValueError("token_counter must return one count >= 0 per input")
        return counts

    # ------------------------------------------------------------------ one backend call
    async def _call(self, inputs: Inputs) -> tuple[np.ndarray, int]:
        """Vectors ``(len(inputs), d)`` float32 and the backend's token count (-1 when a
        ``token_counter`` makes it unnecessary)."""
        if self.api == "openai":
            body: dict[str, Any] = {"input": inputs, "model": self.model,
                                    "encoding_format": self.wire_format}
            resp = await self._post(OPENAI_PATH, body)
            return self._parse_openai(resp, len(inputs))
        resp = await self._post(TEI_EMBED_PATH, {"inputs": inputs, "truncate": self.truncate,
                                                 "normalize": True})
        vectors = _parse_tei_vectors(_json(resp), len(inputs))
        if self.token_counter is not None:
            return vectors, -1
        header = resp.headers.get(TEI_TOKENS_HEADER)
        if header is not None:
            if not (header.isascii() and header.isdigit()):
                raise BadBackendResponseError(f"the embedding backend's {TEI_TOKENS_HEADER} "
                                              "header is not a count")
            return vectors, int(header)
        return vectors, await self._tei_tokenize(inputs)

    def _parse_openai(self, resp: httpx.Response, n: int) -> tuple[np.ndarray, int]:
        try:
            parsed = CreateEmbeddingResponse.from_dict(_json(resp))
        except PeerProtocolError as exc:
            raise BadBackendResponseError(f"the embedding backend's answer is not an embeddings "
                                          f"response: {exc.message}") from exc
        if len(parsed.data) != n:
            raise BadBackendResponseError(
                f"the embedding backend returned {len(parsed.data)} vectors for {n} inputs")
        if sorted(e.index for e in parsed.data) != list(range(n)):
            raise BadBackendResponseError("the embedding backend's vector indices are not "
                                          f"0..{n - 1}")
        if len({e.embedding.shape[0] for e in parsed.data}) != 1:
            raise BadBackendResponseError("the embedding backend's vectors differ in length")
        return _checked(parsed.to_numpy()), parsed.usage.prompt_tokens

    async def _tei_tokenize(self, inputs: Inputs) -> int:
        """TEI's count when ``/embed`` did not send it: ``/tokenize`` (special tokens added),
        each input capped at ``/info``'s ``max_input_length`` when truncating."""
        resp = await self._post(TEI_TOKENIZE_PATH, {"inputs": inputs, "add_special_tokens": True})
        tokens = _json(resp)
        if not (isinstance(tokens, list) and len(tokens) == len(inputs)
                and all(isinstance(t, list) for t in tokens)):
            raise BadBackendResponseError(
                f"the embedding backend's {TEI_TOKENIZE_PATH} answer is not one token list per input")
        counts = [len(t) for t in tokens]
        if self.truncate:
            limit = await self._tei_max_length()
            counts = [min(c, limit) for c in counts]
        return sum(counts)

    async def _tei_max_length(self) -> int:
        if self._tei_max_input_length is None:
            info = _json(await self._request("GET", TEI_INFO_PATH, None))
            limit = info.get("max_input_length") if isinstance(info, dict) else None
            if isinstance(limit, bool) or not isinstance(limit, int) or limit < 1:
                raise BadBackendResponseError(
                    f"the embedding backend's {TEI_INFO_PATH} has no max_input_length")
            self._tei_max_input_length = limit
        return self._tei_max_input_length

    # ------------------------------------------------------------------ HTTP
    def _client(self) -> httpx.AsyncClient:
        loop = asyncio.get_running_loop()
        if self._http is None or self._loop is not loop:
            self._drop_client()
            timeout = httpx.Timeout(self.timeout_s, connect=self.connect_timeout_s)
            self._http = httpx.AsyncClient(base_url=self.base_url, timeout=timeout,
                                           limits=self._limits, headers=self._headers)
            self._loop = loop
        return self._http

    def _drop_client(self) -> None:
        """Forget the client of another loop, closing it there when that loop still runs."""
        client, loop = self._http, self._loop
        self._http = self._loop = None
        if client is not None and loop is not None and loop.is_running() and not loop.is_closed():
            asyncio.run_coroutine_threadsafe(client.aclose(), loop)

    async def _post(self, path: str, body: dict[str, Any]) -> httpx.Response:
        return await self._request("POST", path, body)

    async def _request(self, method: str, path: str, body: dict[str, Any] | None) -> httpx.Response:
        client = self._client()
        attempt = 0
        while True:
            try:
                resp = await client.request(method, path, json=body)
                break
            except httpx.TimeoutException as exc:
                if isinstance(exc, httpx.ConnectTimeout | httpx.PoolTimeout):
                    raise BackendUnavailableError(
                        f"cannot reach the embedding backend: {type(exc).__name__}") from exc
                raise BackendTimeoutError(
                    f"the embedding backend did not answer within {self.timeout_s:g} s") from exc
            except _RETRYABLE as exc:
                if attempt < self.retries:
                    attempt += 1
                    continue
                if isinstance(exc, httpx.RemoteProtocolError):
                    raise BadBackendResponseError(
                        f"the embedding backend broke the connection: {type(exc).__name__}") from exc
                raise BackendUnavailableError(
                    f"cannot reach the embedding backend: {type(exc).__name__}") from exc
            except httpx.HTTPError as exc:  # decoding, redirects, other transport failures
                raise BadBackendResponseError(
                    f"the embedding backend's answer could not be read: {type(exc).__name__}"
                ) from exc
        if resp.status_code != 200:
            raise _status_error(resp)
        return resp

    async def aclose(self) -> None:
        """Close the pooled connections (from the loop that used them)."""
        client, loop = self._http, self._loop
        if client is None:
            return
        self._http = self._loop = None
        if loop is asyncio.get_running_loop():
            await client.aclose()
        elif loop is not None and loop.is_running():
            await asyncio.wrap_future(asyncio.run_coroutine_threadsafe(client.aclose(), loop))

    def close(self, timeout_s: float = 5.0) -> None:
        """Close from a thread that is not running the client's loop (e.g. ``Network.close``)."""
        client, loop = self._http, self._loop
        if client is None or loop is None:
            return
        self._http = self._loop = None
        if loop.is_running() and not loop.is_closed():
            future = asyncio.run_coroutine_threadsafe(client.aclose(), loop)
            try:
                running = asyncio.get_running_loop()
            except RuntimeError:
                running = None
            if running is not loop:
                future.result(timeout_s)

    def __repr__(self) -> str:
        return (f"RemoteEmbedder({self.base_url!r}, api={self.api!r}, model={self.model!r}, "
                f"models={list(self._models)})")


# ---------------------------------------------------------------------- parsing and mapping


def _json(resp: httpx.Response) -> Any:
    try:
        return loads(resp.content, what="embedding backend answer")
    except AtomaLabError as exc:
        raise BadBackendResponseError("the embedding backend's answer is not JSON") from exc


def _parse_tei_vectors(payload: Any, n: int) -> np.ndarray:
    if not isinstance(payload, list):
        raise BadBackendResponseError("the embedding backend's answer is not a list of vectors")
    if len(payload) != n:
        raise BadBackendResponseError(
            f"the embedding backend returned {len(payload)} vectors for {n} inputs")
    if not all(isinstance(row, list) and set(map(type, row)) <= {float, int} for row in payload):
        raise BadBackendResponseError("the embedding backend's vectors are not lists of numbers")
    if len({len(row) for row in payload}) != 1 or not payload[0]:
        raise BadBackendResponseError("the embedding backend's vectors differ in length or are empty")
    with np.errstate(over="ignore"):  # a float beyond float32 becomes inf, refused below
        vectors = np.array(payload, dtype=np.float32)
    return _checked(vectors)


def _checked(vectors: np.ndarray) -> np.ndarray:
    if vectors.ndim != 2 or vectors.shape[1] == 0:
        raise BadBackendResponseError("the embedding backend returned empty vectors")
    if not np.isfinite(vectors).all():
        raise BadBackendResponseError("the embedding backend returned non-finite values")
    return np.ascontiguousarray(vectors, dtype=np.float32)


def _error_text(resp: httpx.Response) -> str:
    """The backend's error message, for classification only (never repeated: it may quote the
    input). TEI: ``{"error": str}``; OpenAI style: ``{"error": {"message": str}}``; vLLM's
    older form and others: ``{"message": str}`` or ``{"detail": ...}``."""
    try:
        payload = loads(resp.content)
    except AtomaLabError:
        return resp.text[:2000]
    if not isinstance(payload, dict):
        return ""
    err = payload.get("error")
    if isinstance(err, dict):
        err = err.get("message")
    return str(err if err is not None else payload.get("message", payload.get("detail", "")))


def _status_error(resp: httpx.Response) -> AtomaLabError:
    """The error a node answers for the backend's non-200 answer."""
    status = resp.status_code
    if status in (400, 413, 422):
        text = _error_text(resp)
        if _TOO_LONG.search(text):
            return InputTooLongError(
                f"input: an input is longer than the model accepts (the embedding backend "
                f"answered {status}); send shorter inputs", field="input")
        if _BATCH_TOO_LARGE.search(text):
            return BadBackendResponseError(
                f"the embedding backend refused the batch size ({status}); lower the node's "
                "max_inputs_per_call")
        return RequestError(f"the embedding backend refused the input as invalid ({status})")
    if status in (429, 503):
        return BackendUnavailableError(f"the embedding backend is unavailable or overloaded "
                                       f"({status})")
    if status == 504:
        return BackendTimeoutError("the embedding backend timed out (504)")
    if 400 <= status < 500:
        return BadBackendResponseError(
            f"the embedding backend refused the node's request ({status}); check the node's "
            "backend URL, model name and key")
    return BadBackendResponseError(f"the embedding backend failed ({status})")


def remote_embedder(url: str, *, api: FactoryApi = "openai", model: str = DEFAULT_MODEL,
                    served_name: str | None = None, timeout_s: float = DEFAULT_TIMEOUT_S,
                    token_counter: TokenCounter | None = None, truncate: bool = True,
                    **options: Any) -> RemoteEmbedder:
    """A node embedder forwarding to the embedding server at ``url``.

    ``api``: ``"openai"`` (``POST {url}/embeddings``: vLLM or TEI at ``http://host:port/v1``),
    ``"tei"`` (TEI's native ``/embed`` at the server's root) or ``"infinity"``: the OpenAI API as
    infinity serves it (at its root by default), whose ``usage`` counts characters, so tokens
    are counted here by ``model``'s own tokenizer (:func:`~atoma_lab.inference.load_engine` on
    the CPU, its ``count_tokens``) unless a ``token_counter`` is given. ``model`` is the
    backend's name for the model; the node serves it as ``served_name`` (default: ``model``).
    ``options`` go to :class:`RemoteEmbedder`.
    """
    if api not in ("openai", "tei", "infinity"):
        raise ValueError(f"api must be 'openai', 'tei' or 'infinity', not {api!r}")
    if api == "infinity" and token_counter is None:
        from atoma_lab.inference import load_engine

        engine = load_engine(model, device="cpu")

        def count(inputs: Inputs) -> Sequence[int]:
            return engine.count_tokens(inputs, truncate=truncate)

        token_counter = count
    return RemoteEmbedder(url, api="tei" if api == "tei" else "openai", model=model,
                          served_name=served_name, timeout_s=timeout_s,
                          token_counter=token_counter, truncate=truncate, **options)


__all__ = [
    "Api",
    "FactoryApi",
    "RemoteEmbedder",
    "TokenCounter",
    "WireFormat",
    "remote_embedder",
]
