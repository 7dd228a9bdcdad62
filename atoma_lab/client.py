"""The SDK-shaped clients: ``client.embeddings.create(...)`` and
``client.confidential_embeddings.create(...)``, with the official atoma-sdk's arguments.

Over and above Atoma's SDKs they check ``response_hash`` always, the node's signature by
default, and, when asked, the node's attestation before trusting the key the proxy hands out
(with a cache of verified keys). A request sealed to a key that rotated meanwhile (409
``STALE_NODE_KEY``), or refused because the proxy found its node down (503), is retried once with
a fresh lock. Every call exposes a :class:`~atoma_lab.services.trace.Trace`. Under the hardened
profiles a node's error comes sealed (``SEALED_ERROR``): the client opens it and raises the
node's own error.

Whole corpora go through ``client.embed_corpus(texts, ...)``: length-sorted chunks that fit the
route's limits (:mod:`atoma_lab.protocol.chunking`), sent concurrently, each with the retry
above, the vectors back in corpus order (:class:`CorpusResult`).

There is one implementation, :class:`AsyncAtomaLabClient` (``await client...create(...)``, safe
for concurrent use in one event loop, a notebook's included). :class:`AtomaLabClient` has the same
surface without ``await``: it drives the async client's coroutines on the event loop of an
in-process network, or else on a loop thread of its own. Either reaches the proxy through a
:class:`~atoma_lab.transport.base.Transport`: one given, or HTTP to ``base_url``.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import os
import ssl
import threading
import time
import weakref
from collections.abc import Callable, Coroutine, Sequence
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

import numpy as np

from atoma_lab.crypto.attestation import (
    AttestationPolicy,
    AttestationVerifier,
    evidence_from_dict,
    verifier_for,
)
from atoma_lab.display.frames import to_frame
from atoma_lab.display.html import bars, kv_table, section, table
from atoma_lab.display.progressbar import progress
from atoma_lab.encoding import loads
from atoma_lab.errors import (
    AtomaLabError,
    NodeKeyMismatchError,
    PeerProtocolError,
    ServiceUnavailableError,
    TransportError,
    error_from_response,
)
from atoma_lab.inference.registry import DEFAULT_MODEL
from atoma_lab.protocol import hardened
from atoma_lab.protocol.atoma.envelope import open_response, seal_request
from atoma_lab.protocol.atoma.messages import (
    DEFAULT_MAX_NUM_TOKENS,
    ConfidentialComputeResponse,
    NodesCreateLockRequest,
    NodesCreateLockResponse,
)
from atoma_lab.protocol.chunking import Chunk, plan_chunks
from atoma_lab.protocol.openai import (
    CreateEmbeddingRequest,
    CreateEmbeddingResponse,
    EmbeddingInput,
    EmbeddingUsage,
)
from atoma_lab.services.trace import ServerTiming, Trace
from atoma_lab.transport.base import Headers, Request, Response, Transport
from atoma_lab.transport.loop import LoopThread, LoopTransport, run_on

T = TypeVar("T")
log = logging.getLogger("atoma_lab.client")
BASE_URL_ENV = "ATOMA_LAB_BASE_URL"  # the proxy, when neither base_url nor transport is given
API_KEY_ENV = "ATOMA_LAB_API_KEY"  # the API key, when api_key is not given
DEFAULT_CORPUS_CONCURRENCY = 4  # chunks of a corpus in flight at once


@dataclass(repr=False)
class EmbeddingsResult:
    """An OpenAI-shaped embeddings response with numpy access and the request's trace.

    In a notebook it shows its shape, model, usage, node, attempts and the trace's stages
    (``_repr_html_``); its ``repr`` is one short line. ``raw`` holds the sealed request, the
    answer and both plaintexts for inspection, and is shown by neither.
    """

    response: CreateEmbeddingResponse
    trace: Trace
    node_small_id: int | None = None
    stack_small_id: int | None = None
    attempts: int = 1
    raw: dict[str, Any] = field(default_factory=dict)
    confidential: bool = False

    @property
    def data(self) -> list[Any]:
        return self.response.data

    @property
    def model(self) -> str:
        return self.response.model

    @property
    def usage(self) -> Any:
        return self.response.usage

    @property
    def object(self) -> str:
        return self.response.object

    def to_numpy(self) -> np.ndarray:
        """The vectors as an ``(n, d)`` float32 array in input order."""
        return self.response.to_numpy()

    @property
    def shape(self) -> tuple[int, int]:
        """``(inputs, dimensions)`` of the vectors."""
        data = self.response.data
        return (len(data), int(data[0].embedding.shape[0]) if data else 0)

    def summary(self) -> dict[str, Any]:
        """What the result is, without its vectors: route, shape, model, usage, node, stack,
        attempts and total time."""
        usage = self.response.usage
        return {"route": "confidential" if self.confidential else "plain",
                "shape": f"{self.shape[0]} x {self.shape[1]}", "model": self.model,
                "prompt tokens": usage.prompt_tokens, "total tokens": usage.total_tokens,
                "node": self.node_small_id, "stack": self.stack_small_id,
                "attempts": self.attempts, "total ms": self.trace.total_ms}

    def __repr__(self) -> str:
        n, d = self.shape
        where = f", node={self.node_small_id}" if self.node_small_id is not None else ""
        return (f"EmbeddingsResult({'confidential' if self.confidential else 'plain'}, "
                f"{n}x{d}, model={self.model!r}, total_tokens={self.usage.total_tokens}"
                f"{where}, attempts={self.attempts}, total_ms={self.trace.total_ms:.3f})")

    def _repr_html_(self) -> str:
        return section("Embeddings result", kv_table(self.summary()),
                       bars(self.trace.stages_ms, title="stages (ms)"))


@dataclass(frozen=True, slots=True)
class VerifiedNode:
    """A node key whose attestation this client verified. ``sui_address`` is ``None`` where the
    evidence does not bind the node's signing address (a TDX quote binds the key only): any valid
    node signature is then taken."""

    node_small_id: int
    public_key: bytes
    sui_address: str | None
    key_rotation_counter: int | None


def _raise_for(resp: Response) -> None:
    if resp.ok:
        return
    try:
        err = loads(resp.body).get("error", {})
        code, message = str(err.get("code")), str(err.get("message"))
    except (AtomaLabError, AttributeError):
        code, message = "HTTP_ERROR", f"HTTP {resp.status} without a JSON error body"
    raise error_from_response(resp.status, code, message)



SEALED_MESSAGE_CHARS = 1000  # characters of a node's sealed error message a client repeats


def _raise_sealed(resp: Response, context: hardened.HardenedClientContext,
                  expected_signer: str | None) -> None:
    """Raise the node's own error, if the error answer to a hardened request carries it sealed
    (``sealed_error``: the node's answer to this request, without usage, signed by the node);
    :class:`PeerProtocolError` if it is there and does not open."""
    try:
        body = loads(resp.body)
    except AtomaLabError:
        return
    blob = body.get("sealed_error") if isinstance(body, dict) else None
    if blob is None:
        return
    try:
        answer = hardened.parse_response(blob)
        if answer.usage is not None:
            raise PeerProtocolError("a sealed error carries usage")
        opened = hardened.open_hardened_response(answer, context, expected_signer_address=expected_signer)
        detail = loads(opened.plaintext)
        status, code, message = (detail["status"], detail["error"]["code"],
                                 detail["error"]["message"])
        if not (isinstance(status, int) and 400 <= status < 600 and isinstance(code, str)
                and isinstance(message, str)):
            raise PeerProtocolError("a sealed error is not an error")
    except (AtomaLabError, KeyError, TypeError) as exc:
        reason = exc.message if isinstance(exc, AtomaLabError) else type(exc).__name__
        raise PeerProtocolError(f"the node's sealed error does not open: {reason}") from exc
    raise error_from_response(status, code, message[:SEALED_MESSAGE_CHARS])


def _embedding_request(input: EmbeddingInput | Sequence[str], model: str,
                       encoding_format: str | None, dimensions: int | None,
                       user: str | None) -> CreateEmbeddingRequest:
    return CreateEmbeddingRequest(input=list(input) if isinstance(input, tuple) else input,  # type: ignore[arg-type]
                                  model=model, encoding_format=encoding_format,  # type: ignore[arg-type]
                                  dimensions=dimensions, user=user)


# ------------------------------------------------------------------------------------- async


class AsyncAtomaLabClient:
    """A client of an atoma-lab (or Atoma) proxy, for ``asyncio`` code and notebook cells.

    ``transport`` reaches the proxy (an in-process network's, from ``net.client_transport()``,
    or any :class:`~atoma_lab.transport.base.Transport`); without one, HTTP to ``base_url``, by
    default ``$ATOMA_LAB_BASE_URL`` (what ``atoma-lab serve`` prints); ``https://`` with
    ``tls``, a context from :func:`~atoma_lab.transport.http.client_tls_context` (the proxy's
    CA, and a client certificate where the proxy asks for one). ``api_key`` defaults to
    ``$ATOMA_LAB_API_KEY``. Requests go to ``base_url`` when given, else to the transport's
    default destination.
    Concurrent calls from one event loop are safe: each has its own lock, seal and trace, and
    a node's attestation is fetched once however many requests wait for it.
    """

    def __init__(
        self,
        base_url: str | None = None,
        *,
        api_key: str | None = None,
        transport: Transport | None = None,
        timeout_s: float = 60.0,
        verify_signature: bool = True,
        check_usage: bool = True,
        verify_attestation: bool | None = None,
        attestation_policy: AttestationPolicy | None = None,
        attestation_verifier: AttestationVerifier | None = None,
        profile: str = "atoma",
        clock: Callable[[], float] = time.time,
        tls: ssl.SSLContext | None = None,
    ) -> None:
        names = {"atoma": "atoma", "hardened": hardened.PROFILE, "hpke": hardened.PROFILE_HPKE,
                 **{p: p for p in hardened.PROFILES}}
        if profile not in names:
            raise ValueError(f"profile must be one of {sorted(names)}")
        self.profile = names[profile]
        self.clock = clock  # the hardened profiles' timestamps, and attestation freshness
        if verify_attestation is None:  # the hardened profiles verify by default
            verify_attestation = self.profile != "atoma"
        if api_key is None:
            api_key = os.environ.get(API_KEY_ENV) or None
        if api_key is None:
            raise ValueError(f"give an api_key (or set {API_KEY_ENV})")
        if verify_attestation and attestation_policy is None and attestation_verifier is None:
            raise ValueError("verify_attestation needs an attestation_policy or verifier")
        if transport is None:
            if base_url is None:
                base_url = os.environ.get(BASE_URL_ENV) or None
            if base_url is None:
                raise ValueError(f"give a base_url or a transport (or set {BASE_URL_ENV})")
            from atoma_lab.transport.http import HttpTransport

            transport = HttpTransport(base_url, timeout_s=timeout_s, tls=tls)
        self.base_url = base_url
        self.transport = transport
        self.api_key = api_key
        self.timeout_s = timeout_s
        self.verify_signature = verify_signature
        self.check_usage = check_usage  # the clear usage must equal the sealed one (Atoma's SDKs skip it)
        self.verify_attestation = verify_attestation
        self.attestation_policy = attestation_policy  # the simulated TEE's, unless a verifier is given
        self.attestation_verifier = attestation_verifier
        self.verified_nodes: dict[tuple[int, bytes], VerifiedNode] = {}
        self._verifying: dict[tuple[int, bytes], asyncio.Task[VerifiedNode]] = {}
        self.embeddings = AsyncEmbeddings(self)
        self.confidential_embeddings = AsyncConfidentialEmbeddings(self)
        self.nodes = AsyncNodes(self)
        self.models = AsyncModels(self)

    async def _call(self, method: str, path: str, payload: bytes | None = None, *,
                    auth: bool = True) -> Response:
        headers = Headers({"content-type": "application/json", "accept": "application/json"})
        if auth:
            headers["authorization"] = f"Bearer {self.api_key}"
        return await self.transport.handle(Request(method, path, headers, payload or b"",
                                                   address=self.base_url or "",
                                                   timeout_s=self.timeout_s))

    async def verify_node(self, node_small_id: int, public_key: bytes) -> VerifiedNode:
        """Fetch and verify a node's attestation for ``public_key`` (cached once verified; one
        fetch however many requests ask at once)."""
        key = (node_small_id, public_key)
        cached = self.verified_nodes.get(key)
        if cached is not None:
            return cached
        if self.attestation_verifier is None and self.attestation_policy is None:
            raise ValueError("no attestation_policy or attestation_verifier configured")
        loop = asyncio.get_running_loop()
        pending = self._verifying.get(key)
        if pending is None or pending.get_loop() is not loop:
            pending = loop.create_task(self._verify_node(node_small_id, public_key))
            self._verifying[key] = pending
            pending.add_done_callback(functools.partial(self._verified, key))
        return await asyncio.shield(pending)  # a waiter cancelled leaves it to the others

    def _verified(self, key: tuple[int, bytes], task: asyncio.Task[VerifiedNode]) -> None:
        if self._verifying.get(key) is task:
            del self._verifying[key]
        if not task.cancelled():
            task.exception()  # retrieved here: every waiter raises it

    async def _verify_node(self, node_small_id: int, public_key: bytes) -> VerifiedNode:
        verifier = verifier_for(self.attestation_verifier, self.attestation_policy)
        assert verifier is not None  # verify_node checked
        resp = await self._call("GET", f"/v1/nodes/attestation?node_small_id={node_small_id}",
                                auth=False)
        _raise_for(resp)
        info = loads(resp.body)
        report = verifier.verify(evidence_from_dict(info.get("evidence")), public_key=public_key,
                                 node_small_id=node_small_id, now=self.clock())
        node = VerifiedNode(node_small_id, public_key, report.signer_address,
                            report.key_rotation_counter)
        self.verified_nodes[(node_small_id, public_key)] = node
        return node

    async def embed_corpus(self, texts: Sequence[str], *, model: str = DEFAULT_MODEL,
                           confidential: bool = True,
                           batch_tokens: int = DEFAULT_MAX_NUM_TOKENS,
                           concurrency: int = DEFAULT_CORPUS_CONCURRENCY,
                           show_progress: bool = True, encoding_format: str = "base64",
                           dimensions: int | None = None,
                           count_tokens: Callable[[str], int] | None = None) -> CorpusResult:
        """Embed a whole corpus: the texts are sorted by length and grouped into chunks within
        the route's limits (at most 2048 inputs, ``batch_tokens`` compute units locked per
        chunk, the text caps; :func:`~atoma_lab.protocol.chunking.plan_chunks`), at most
        ``concurrency`` chunks in flight, each sent with the route's ``create`` (so retried on
        its rules: once on 409 ``STALE_NODE_KEY`` or 503 on the confidential route).

        Returns the vectors in corpus order, the total usage and each chunk's trace
        (:class:`CorpusResult`). The first chunk that fails cancels the others and raises its
        error; chunks already served were charged. ``show_progress`` draws a ``tqdm.auto`` bar
        (a widget in Jupyter; nothing when ``TQDM_DISABLE`` is set or output is not a terminal).
        """
        return await _embed_corpus(self, texts, model=model, confidential=confidential,
                                   batch_tokens=batch_tokens, concurrency=concurrency,
                                   show_progress=show_progress, encoding_format=encoding_format,
                                   dimensions=dimensions, count_tokens=count_tokens)

    async def aclose(self) -> None:
        """Close the transport (its pooled connections)."""
        await self.transport.aclose()

    async def __aenter__(self) -> AsyncAtomaLabClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    def __repr__(self) -> str:
        return (f"{type(self).__name__}(base_url={self.base_url!r}, "
                f"transport={type(self.transport).__name__}, profile={self.profile!r})")


class AsyncNodes:
    def __init__(self, client: AsyncAtomaLabClient) -> None:
        self._c = client

    async def lock(self, model: str, *, max_num_tokens: int | None = None,
                   timeout: int | None = None) -> NodesCreateLockResponse:
        """``POST /v1/nodes/lock``: a node key and a stack with units locked for one request."""
        body = NodesCreateLockRequest(model, max_num_tokens, timeout).to_json()
        resp = await self._c._call("POST", "/v1/nodes/lock", body)
        _raise_for(resp)
        return NodesCreateLockResponse.from_json(resp.body)


class AsyncModels:
    def __init__(self, client: AsyncAtomaLabClient) -> None:
        self._c = client

    async def list(self) -> list[str]:
        """``GET /v1/models``: the ids of the models the proxy's nodes serve."""
        resp = await self._c._call("GET", "/v1/models")
        _raise_for(resp)
        return [m["id"] for m in loads(resp.body)["data"]]


class AsyncEmbeddings:
    def __init__(self, client: AsyncAtomaLabClient) -> None:
        self._c = client

    async def create(self, *, input: EmbeddingInput | Sequence[str], model: str = DEFAULT_MODEL,
                     encoding_format: str | None = None, dimensions: int | None = None,
                     user: str | None = None) -> EmbeddingsResult:
        """Plain ``POST /v1/embeddings`` (the proxy and node see the text)."""
        trace = Trace()
        t0 = time.perf_counter_ns()
        req = _embedding_request(input, model, encoding_format, dimensions, user)
        t1 = time.perf_counter_ns()
        resp = await self._c._call("POST", "/v1/embeddings", req.to_json())
        t2 = time.perf_counter_ns()
        _raise_for(resp)
        parsed = CreateEmbeddingResponse.from_json(resp.body)
        t3 = time.perf_counter_ns()
        server = ServerTiming.parse(resp.headers.get("server-timing"))
        trace.add("encode", (t1 - t0) / 1e6)
        trace.add("transport", (t2 - t1) / 1e6 - sum(server.values()))
        trace.merge(server)
        trace.add("decode", (t3 - t2) / 1e6)
        trace.total_ms = (t3 - t0) / 1e6
        return EmbeddingsResult(parsed, trace)


class AsyncConfidentialEmbeddings:
    def __init__(self, client: AsyncAtomaLabClient) -> None:
        self._c = client

    async def create(self, *, input: EmbeddingInput | Sequence[str], model: str = DEFAULT_MODEL,
                     encoding_format: str | None = None, dimensions: int | None = None,
                     user: str | None = None, max_num_tokens: int | None = None,
                     ) -> EmbeddingsResult:
        """``POST /v1/confidential/embeddings``: lock, seal, send, open, check.

        Retries once, with a fresh lock and a fresh seal, when the node key rotated in between
        (409) or the proxy found the node down (503: it released the units, and the new lock
        goes to another node).
        """
        req = _embedding_request(input, model, encoding_format, dimensions, user)
        plaintext = req.to_json()
        for attempt in (1, 2):
            try:
                return await self._once(req, plaintext, max_num_tokens, attempt)
            except (NodeKeyMismatchError, ServiceUnavailableError) as exc:
                if attempt == 2:
                    raise
                log.debug("retrying a confidential request with a fresh lock after %s", exc.code)
        raise AssertionError("unreachable")

    async def _once(self, req: CreateEmbeddingRequest, plaintext: bytes,
                    max_num_tokens: int | None, attempt: int) -> EmbeddingsResult:
        c = self._c
        trace = Trace()
        t0 = time.perf_counter_ns()
        lock = await c.nodes.lock(req.model, max_num_tokens=max_num_tokens)
        t1 = time.perf_counter_ns()
        trace.add("lock", (t1 - t0) / 1e6)
        expected_signer: str | None = None
        if c.verify_attestation:
            expected_signer = (await c.verify_node(lock.node_small_id, lock.public_key)).sui_address
            t1b = time.perf_counter_ns()
            trace.add("attest", (t1b - t1) / 1e6)
            t1 = t1b
        if c.profile != "atoma":
            sealed_h = hardened.seal_hardened_request(
                plaintext, node_public_key=lock.public_key, model_name=req.model,
                stack_small_id=lock.stack_small_id, num_compute_units=max_num_tokens,
                now=c.clock(), profile=c.profile)
            body, wire_request = sealed_h.request.to_json(), sealed_h.request.to_dict()
        else:
            sealed = seal_request(plaintext, node_public_key=lock.public_key,
                                  stack_small_id=lock.stack_small_id, model_name=req.model,
                                  num_compute_units=max_num_tokens, stream=False)
            body, wire_request = sealed.request.to_json(), sealed.request.to_dict()
        t2 = time.perf_counter_ns()
        trace.add("seal", (t2 - t1) / 1e6)
        resp = await c._call("POST", "/v1/confidential/embeddings", body)
        t3 = time.perf_counter_ns()
        server = ServerTiming.parse(resp.headers.get("server-timing"))
        trace.add("transport", (t3 - t2) / 1e6 - sum(server.values()))
        trace.merge(server)
        if not resp.ok and c.profile != "atoma":
            _raise_sealed(resp, sealed_h.context, expected_signer)
        _raise_for(resp)
        clear_usage: Any
        try:  # a malformed answer is the proxy's (or node's) fault, not the caller's
            wire_response = loads(resp.body, what="confidential compute response")
            answer_h = hardened.parse_response(wire_response) if c.profile != "atoma" else None
            answer = ConfidentialComputeResponse.from_dict(wire_response) \
                if answer_h is None else None
        except AtomaLabError as exc:
            raise PeerProtocolError(f"the confidential answer is malformed: {exc.message}") from exc
        if answer_h is not None:
            # The answer must name this request; the signature over both hashes always checks.
            opened_h = hardened.open_hardened_response(answer_h, sealed_h.context,
                                              expected_signer_address=expected_signer)
            response_plaintext, clear_usage = opened_h.plaintext, opened_h.usage
        else:
            assert answer is not None
            opened = open_response(answer, sealed.context,
                                   require_signature=c.verify_signature,
                                   expected_signer_address=expected_signer)
            response_plaintext, clear_usage = opened.plaintext, answer.usage
        parsed = CreateEmbeddingResponse.from_json(response_plaintext)
        if c.check_usage and clear_usage is not None and (
                clear_usage.total_tokens != parsed.usage.total_tokens
                or clear_usage.prompt_tokens != parsed.usage.prompt_tokens):
            raise PeerProtocolError("clear usage differs from the sealed usage")
        t4 = time.perf_counter_ns()
        trace.add("open", (t4 - t3) / 1e6)
        trace.total_ms = (t4 - t0) / 1e6
        return EmbeddingsResult(parsed, trace, node_small_id=lock.node_small_id,
                                stack_small_id=lock.stack_small_id, attempts=attempt,
                                raw={"request": wire_request, "response": wire_response,
                                     "plaintext": plaintext, "response_plaintext": response_plaintext},
                                confidential=True)


# -------------------------------------------------------------------------------------- sync


class _Shared(Generic[T]):
    """An attribute of the sync client that is its async client's (read and written there)."""

    def __set_name__(self, owner: type, name: str) -> None:
        self.name = name

    def __get__(self, obj: AtomaLabClient | None, objtype: type | None = None) -> T:
        if obj is None:
            return self  # type: ignore[return-value]
        return getattr(obj._async, self.name)

    def __set__(self, obj: AtomaLabClient, value: T) -> None:
        setattr(obj._async, self.name, value)


class AtomaLabClient:
    """A client of an atoma-lab (or Atoma) proxy, without ``await``.

    Takes the arguments of :class:`AsyncAtomaLabClient` and runs its coroutines: on an
    in-process network's event loop when its transport is that network's
    (:class:`~atoma_lab.transport.loop.LoopTransport`), else on an event loop thread of its own,
    started at the first request and stopped by :meth:`close` (or when the client is
    collected). Any thread may call it, several at once, and so may a notebook cell; a hook of
    an :class:`~atoma_lab.transport.intercept.InterceptTransport` may call another client.
    """

    base_url: _Shared[str | None] = _Shared()
    transport: _Shared[Transport] = _Shared()
    api_key: _Shared[str] = _Shared()
    timeout_s: _Shared[float] = _Shared()
    profile: _Shared[str] = _Shared()
    clock: _Shared[Callable[[], float]] = _Shared()
    verify_signature: _Shared[bool] = _Shared()
    check_usage: _Shared[bool] = _Shared()
    verify_attestation: _Shared[bool] = _Shared()
    attestation_policy: _Shared[AttestationPolicy | None] = _Shared()
    attestation_verifier: _Shared[AttestationVerifier | None] = _Shared()
    verified_nodes: _Shared[dict[tuple[int, bytes], VerifiedNode]] = _Shared()

    def __init__(
        self,
        base_url: str | None = None,
        *,
        api_key: str | None = None,
        transport: Transport | None = None,
        timeout_s: float = 60.0,
        verify_signature: bool = True,
        check_usage: bool = True,
        verify_attestation: bool | None = None,
        attestation_policy: AttestationPolicy | None = None,
        attestation_verifier: AttestationVerifier | None = None,
        profile: str = "atoma",
        clock: Callable[[], float] = time.time,
        tls: ssl.SSLContext | None = None,
    ) -> None:
        self._async = AsyncAtomaLabClient(
            base_url, api_key=api_key, transport=transport, timeout_s=timeout_s,
            verify_signature=verify_signature, check_usage=check_usage,
            verify_attestation=verify_attestation, attestation_policy=attestation_policy,
            attestation_verifier=attestation_verifier, profile=profile, clock=clock, tls=tls)
        self._thread: LoopThread | None = None
        self._finalizer: weakref.finalize | None = None
        self._thread_lock = threading.Lock()
        self.embeddings = Embeddings(self)
        self.confidential_embeddings = ConfidentialEmbeddings(self)
        self.nodes = Nodes(self)
        self.models = Models(self)

    def _loop_thread(self) -> LoopThread:
        with self._thread_lock:
            if self._thread is None or self._thread.stopped:
                thread = self._thread = LoopThread("atoma-lab-client", fast=True)
                # A client dropped unclosed closes its connections and ends its thread.
                self._finalizer = weakref.finalize(self, _shut_down, thread, self._async)
            return self._thread

    def _run(self, coro: Coroutine[Any, Any, T]) -> T:
        transport = self._async.transport
        if isinstance(transport, LoopTransport):
            # One hop onto the network's loop for the whole call, not one per message.
            try:
                return run_on(transport.loop, coro)
            except RuntimeError as exc:
                if transport.loop.is_closed() or not transport.loop.is_running():
                    raise TransportError("the network's event loop has stopped") from exc
                raise
        return self._loop_thread().run(coro)

    def verify_node(self, node_small_id: int, public_key: bytes) -> VerifiedNode:
        """Fetch and verify a node's attestation for ``public_key`` (cached once verified)."""
        return self._run(self._async.verify_node(node_small_id, public_key))

    def embed_corpus(self, texts: Sequence[str], *, model: str = DEFAULT_MODEL,
                     confidential: bool = True, batch_tokens: int = DEFAULT_MAX_NUM_TOKENS,
                     concurrency: int = DEFAULT_CORPUS_CONCURRENCY, show_progress: bool = True,
                     encoding_format: str = "base64", dimensions: int | None = None,
                     count_tokens: Callable[[str], int] | None = None) -> CorpusResult:
        """Embed a whole corpus in chunks, concurrently, in corpus order (see
        :meth:`AsyncAtomaLabClient.embed_corpus`)."""
        return self._run(self._async.embed_corpus(
            texts, model=model, confidential=confidential, batch_tokens=batch_tokens,
            concurrency=concurrency, show_progress=show_progress,
            encoding_format=encoding_format, dimensions=dimensions, count_tokens=count_tokens))

    def close(self) -> None:
        """Close the transport and stop this client's loop thread (if it started one)."""
        transport = self._async.transport
        if isinstance(transport, LoopTransport):
            if transport.loop.is_running():
                self._run(self._async.aclose())
        else:
            self._loop_thread()  # the transport's connections live on this client's loop
        with self._thread_lock:
            finalizer, self._finalizer, self._thread = self._finalizer, None, None
        if finalizer is not None:
            finalizer()  # closes the transport on that loop, then stops it

    def __enter__(self) -> AtomaLabClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return (f"{type(self).__name__}(base_url={self.base_url!r}, "
                f"transport={type(self.transport).__name__}, profile={self.profile!r})")


def _shut_down(thread: LoopThread, client: AsyncAtomaLabClient) -> None:
    """Close ``client``'s transport on ``thread``'s loop (where its connections live), then stop
    the loop. Best effort: a transport that cannot close has nothing left to give back."""
    if not thread.stopped and not thread.in_loop_thread:
        with contextlib.suppress(AtomaLabError, RuntimeError, TimeoutError):
            thread.run(client.aclose(), timeout_s=5)
    thread.stop()


class Nodes:
    def __init__(self, client: AtomaLabClient) -> None:
        self._c = client

    def lock(self, model: str, *, max_num_tokens: int | None = None,
             timeout: int | None = None) -> NodesCreateLockResponse:
        """``POST /v1/nodes/lock``: a node key and a stack with units locked for one request."""
        return self._c._run(self._c._async.nodes.lock(model, max_num_tokens=max_num_tokens,
                                                      timeout=timeout))


class Models:
    def __init__(self, client: AtomaLabClient) -> None:
        self._c = client

    def list(self) -> list[str]:
        """``GET /v1/models``: the ids of the models the proxy's nodes serve."""
        return self._c._run(self._c._async.models.list())


class Embeddings:
    def __init__(self, client: AtomaLabClient) -> None:
        self._c = client

    def create(self, *, input: EmbeddingInput | Sequence[str], model: str = DEFAULT_MODEL,
               encoding_format: str | None = None, dimensions: int | None = None,
               user: str | None = None) -> EmbeddingsResult:
        """Plain ``POST /v1/embeddings`` (the proxy and node see the text)."""
        return self._c._run(self._c._async.embeddings.create(
            input=input, model=model, encoding_format=encoding_format, dimensions=dimensions,
            user=user))


class ConfidentialEmbeddings:
    def __init__(self, client: AtomaLabClient) -> None:
        self._c = client

    def create(self, *, input: EmbeddingInput | Sequence[str], model: str = DEFAULT_MODEL,
               encoding_format: str | None = None, dimensions: int | None = None,
               user: str | None = None, max_num_tokens: int | None = None,
               ) -> EmbeddingsResult:
        """``POST /v1/confidential/embeddings``: lock, seal, send, open, check; retried once on
        409 ``STALE_NODE_KEY`` or 503 (see :meth:`AsyncConfidentialEmbeddings.create`)."""
        return self._c._run(self._c._async.confidential_embeddings.create(
            input=input, model=model, encoding_format=encoding_format, dimensions=dimensions,
            user=user, max_num_tokens=max_num_tokens))


# ------------------------------------------------------------------------------------ corpora


@dataclass(frozen=True)
class ChunkReport:
    """How one chunk of a corpus went: its texts' corpus positions, the units locked for it,
    the tokens it used, where it was served and its trace."""

    index: int
    positions: tuple[int, ...]
    units_locked: int
    prompt_tokens: int
    total_tokens: int
    node_small_id: int | None
    stack_small_id: int | None
    attempts: int
    trace: Trace

    def row(self) -> dict[str, Any]:
        return {"chunk": self.index, "texts": len(self.positions), "units_locked": self.units_locked,
                "prompt_tokens": self.prompt_tokens, "total_tokens": self.total_tokens,
                "node_small_id": self.node_small_id, "stack_small_id": self.stack_small_id,
                "attempts": self.attempts, "total_ms": self.trace.total_ms,
                **{f"{k}_ms": v for k, v in self.trace.stages_ms.items()}}


@dataclass
class CorpusResult:
    """A corpus's vectors (``(n, d)`` float32, in corpus order), the total usage over its
    chunks and each chunk's :class:`ChunkReport`."""

    vectors: np.ndarray = field(repr=False)
    usage: EmbeddingUsage
    chunks: list[ChunkReport] = field(repr=False)
    model: str
    confidential: bool
    wall_s: float

    def to_numpy(self) -> np.ndarray:
        return self.vectors

    def __len__(self) -> int:
        return int(self.vectors.shape[0])

    @property
    def traces(self) -> list[Trace]:
        return [c.trace for c in self.chunks]

    @property
    def retried_chunks(self) -> int:
        return sum(c.attempts > 1 for c in self.chunks)

    def summary(self) -> dict[str, object]:
        return {"texts": len(self), "dimensions": int(self.vectors.shape[1]), "model": self.model,
                "route": "confidential" if self.confidential else "plain",
                "chunks": len(self.chunks), "retried chunks": self.retried_chunks,
                "prompt tokens": self.usage.prompt_tokens, "total tokens": self.usage.total_tokens,
                "wall (s)": self.wall_s}

    def to_frame(self) -> Any:
        """One row per chunk (texts, units locked, tokens, node, stack, attempts, stage times
        in ms) as a pandas DataFrame (pandas is imported here, not before)."""
        return to_frame([c.row() for c in self.chunks])

    def _repr_html_(self) -> str:
        rows = [{k: v for k, v in c.row().items() if not k.endswith("_ms") or k == "total_ms"}
                for c in self.chunks]
        return section("Corpus embedded", kv_table(self.summary()),
                       table(rows) if rows else "")

    def __repr__(self) -> str:
        route = "confidential" if self.confidential else "plain"
        return (f"CorpusResult({len(self)} texts x {self.vectors.shape[1]} ({route}, "
                f"{self.model!r}), {len(self.chunks)} chunks, {self.usage.total_tokens} tokens, "
                f"{self.wall_s:.2f} s)")


async def _embed_corpus(client: AsyncAtomaLabClient, texts: Sequence[str], *, model: str,
                        confidential: bool, batch_tokens: int, concurrency: int,
                        show_progress: bool, encoding_format: str, dimensions: int | None,
                        count_tokens: Callable[[str], int] | None) -> CorpusResult:
    if isinstance(texts, str):
        raise TypeError("texts: expected a sequence of strings, not one string")
    if concurrency < 1:
        raise ValueError("concurrency must be at least 1")
    texts = list(texts)
    t0 = time.perf_counter()
    chunks = plan_chunks(texts, batch_tokens=batch_tokens, count_tokens=count_tokens)
    served: list[tuple[Chunk, EmbeddingsResult, np.ndarray] | None] = [None] * len(chunks)
    slots = asyncio.Semaphore(concurrency)
    bar = progress(total=len(texts), desc="embedding (sealed)" if confidential else "embedding",
                   unit="text", show=show_progress and bool(texts))

    async def one(chunk: Chunk) -> None:
        inputs = [texts[p] for p in chunk.positions]
        async with slots:
            if confidential:
                result = await client.confidential_embeddings.create(
                    input=inputs, model=model, encoding_format=encoding_format,
                    dimensions=dimensions, max_num_tokens=chunk.units)
            else:
                result = await client.embeddings.create(
                    input=inputs, model=model, encoding_format=encoding_format,
                    dimensions=dimensions)
        vectors = result.to_numpy()
        if vectors.ndim != 2 or vectors.shape[0] != len(chunk):
            raise PeerProtocolError(f"chunk {chunk.index}: {len(chunk)} inputs sent, "
                                    f"{vectors.shape[0] if vectors.ndim else 0} vectors back")
        served[chunk.index] = (chunk, result, vectors)
        bar.update(len(chunk))

    tasks = [asyncio.ensure_future(one(c)) for c in chunks]
    try:
        if tasks:
            _, pending = await asyncio.wait(tasks, return_when=asyncio.FIRST_EXCEPTION)
            failed = next((t for t in tasks if t.done() and not t.cancelled()
                           and t.exception() is not None), None)
            if failed is not None:
                for t in pending:
                    t.cancel()
                await asyncio.gather(*pending, return_exceptions=True)
                raise failed.exception()  # type: ignore[misc]
    except BaseException:
        for t in tasks:
            t.cancel()
        raise
    finally:
        bar.close()
    dims = {v.shape[1] for _, _, v in filter(None, served)}
    if len(dims) > 1:
        raise PeerProtocolError(f"chunks came back with different dimensions: {sorted(dims)}")
    out = np.empty((len(texts), dims.pop() if dims else 0), dtype=np.float32)
    reports: list[ChunkReport] = []
    prompt = total = 0
    for item in served:
        assert item is not None  # every task finished without an error
        chunk, result, vectors = item
        out[list(chunk.positions)] = vectors
        usage = result.usage
        prompt += usage.prompt_tokens
        total += usage.total_tokens
        reports.append(ChunkReport(chunk.index, chunk.positions, chunk.units, usage.prompt_tokens,
                                   usage.total_tokens, result.node_small_id,
                                   result.stack_small_id, result.attempts, result.trace))
    return CorpusResult(out, EmbeddingUsage(prompt, total), reports, model, confidential,
                        time.perf_counter() - t0)


__all__ = [
    "API_KEY_ENV",
    "BASE_URL_ENV",
    "AsyncAtomaLabClient",
    "AtomaLabClient",
    "ChunkReport",
    "CorpusResult",
    "EmbeddingsResult",
    "VerifiedNode",
]
