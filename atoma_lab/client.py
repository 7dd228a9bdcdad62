"""The SDK-shaped client: ``client.embeddings.create(...)`` and
``client.confidential_embeddings.create(...)``, with the official atoma-sdk's arguments.

Over and above Atoma's SDKs it checks ``response_hash`` always, the node's signature by default,
and, when asked, the node's attestation before trusting the key the proxy hands out (with a cache
of verified keys). A request sealed to a key that rotated meanwhile (409 ``STALE_NODE_KEY``) is
retried once with a fresh lock. Every call exposes a :class:`~atoma_lab.services.trace.Trace`.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np

from atoma_lab.crypto.attestation import (
    AttestationPolicy,
    AttestationVerifier,
    SimulatedVerifier,
    evidence_from_dict,
)
from atoma_lab.encoding import loads
from atoma_lab.errors import (
    AtomaLabError,
    NodeKeyMismatchError,
    PeerProtocolError,
    ServiceUnavailableError,
    error_from_response,
)
from atoma_lab.protocol import hardened
from atoma_lab.protocol.atoma.envelope import open_response, seal_request
from atoma_lab.protocol.atoma.messages import (
    ConfidentialComputeResponse,
    NodesCreateLockRequest,
    NodesCreateLockResponse,
)
from atoma_lab.protocol.openai import CreateEmbeddingRequest, CreateEmbeddingResponse, EmbeddingInput
from atoma_lab.services.trace import ServerTiming, Trace
from atoma_lab.transport.base import Headers, Request, Response

DEFAULT_MODEL = "sentence-transformers/all-MiniLM-L6-v2"


class Channel(Protocol):
    """A synchronous line to the proxy: HTTP (:class:`~atoma_lab.transport.http.HttpChannel`) or
    an in-process network (``atoma_lab.lab.network``)."""

    def request(self, request: Request) -> Response: ...


@dataclass
class EmbeddingsResult:
    """An OpenAI-shaped embeddings response with numpy access and the request's trace."""

    response: CreateEmbeddingResponse
    trace: Trace
    node_small_id: int | None = None
    stack_small_id: int | None = None
    attempts: int = 1
    raw: dict[str, Any] = field(default_factory=dict, repr=False)

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


class AtomaLabClient:
    """A client of an atoma-lab (or Atoma) proxy."""

    def __init__(
        self,
        base_url: str | None = None,
        *,
        api_key: str,
        channel: Channel | None = None,
        network: Any = None,
        timeout_s: float = 60.0,
        verify_signature: bool = True,
        check_usage: bool = True,
        verify_attestation: bool | None = None,
        attestation_policy: AttestationPolicy | None = None,
        attestation_verifier: AttestationVerifier | None = None,
        profile: str = "atoma",
        clock: Callable[[], float] = time.time,
    ) -> None:
        names = {"atoma": "atoma", "hardened": hardened.PROFILE, "hpke": hardened.PROFILE_HPKE,
                 **{p: p for p in hardened.PROFILES}}
        if profile not in names:
            raise ValueError(f"profile must be one of {sorted(names)}")
        self.profile = names[profile]
        self.clock = clock  # the hardened profiles' timestamps, and attestation freshness
        if verify_attestation is None:  # the hardened profiles verify by default
            verify_attestation = self.profile != "atoma"
        if channel is None:
            if network is not None:
                channel = network.channel()
            elif base_url is not None:
                from atoma_lab.transport.http import HttpChannel

                channel = HttpChannel(base_url, timeout_s=timeout_s)
            else:
                raise ValueError("give a base_url, a network, or a channel")
        if verify_attestation and attestation_policy is None and attestation_verifier is None:
            if network is None or not hasattr(network, "attestation_policy"):
                raise ValueError("verify_attestation needs an attestation_policy")
            attestation_policy = network.attestation_policy()
        self.channel = channel
        self.api_key = api_key
        self.verify_signature = verify_signature
        self.check_usage = check_usage  # the clear usage must equal the sealed one (Atoma's SDKs skip it)
        self.verify_attestation = verify_attestation
        self.attestation_policy = attestation_policy  # the simulated TEE's, unless a verifier is given
        self.attestation_verifier = attestation_verifier
        self.verified_nodes: dict[tuple[int, bytes], VerifiedNode] = {}
        self.embeddings = _Embeddings(self)
        self.confidential_embeddings = _ConfidentialEmbeddings(self)
        self.nodes = _Nodes(self)
        self.models = _Models(self)

    def _call(self, method: str, path: str, payload: bytes | None = None, *,
              auth: bool = True) -> Response:
        headers = Headers({"content-type": "application/json", "accept": "application/json"})
        if auth:
            headers["authorization"] = f"Bearer {self.api_key}"
        return self.channel.request(Request(method, path, headers, payload or b""))

    def verify_node(self, node_small_id: int, public_key: bytes) -> VerifiedNode:
        """Fetch and verify a node's attestation for ``public_key`` (cached once verified)."""
        cached = self.verified_nodes.get((node_small_id, public_key))
        if cached is not None:
            return cached
        verifier = self.attestation_verifier or (
            None if self.attestation_policy is None else SimulatedVerifier(self.attestation_policy))
        if verifier is None:
            raise ValueError("no attestation_policy or attestation_verifier configured")
        resp = self._call("GET", f"/v1/nodes/attestation?node_small_id={node_small_id}", auth=False)
        _raise_for(resp)
        info = loads(resp.body)
        report = verifier.verify(evidence_from_dict(info.get("evidence")), public_key=public_key,
                                 node_small_id=node_small_id, now=self.clock())
        node = VerifiedNode(node_small_id, public_key, report.signer_address,
                            report.key_rotation_counter)
        self.verified_nodes[(node_small_id, public_key)] = node
        return node

    def close(self) -> None:
        close = getattr(self.channel, "close", None)
        if close is not None:
            close()

    def __enter__(self) -> AtomaLabClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class _Nodes:
    def __init__(self, client: AtomaLabClient) -> None:
        self._c = client

    def lock(self, model: str, *, max_num_tokens: int | None = None,
             timeout: int | None = None) -> NodesCreateLockResponse:
        """``POST /v1/nodes/lock``: a node key and a stack with units locked for one request."""
        body = NodesCreateLockRequest(model, max_num_tokens, timeout).to_json()
        resp = self._c._call("POST", "/v1/nodes/lock", body)
        _raise_for(resp)
        return NodesCreateLockResponse.from_json(resp.body)


class _Models:
    def __init__(self, client: AtomaLabClient) -> None:
        self._c = client

    def list(self) -> list[str]:
        resp = self._c._call("GET", "/v1/models")
        _raise_for(resp)
        return [m["id"] for m in loads(resp.body)["data"]]


class _Embeddings:
    def __init__(self, client: AtomaLabClient) -> None:
        self._c = client

    def create(self, *, input: EmbeddingInput | Sequence[str], model: str = DEFAULT_MODEL,
               encoding_format: str | None = None, dimensions: int | None = None,
               user: str | None = None) -> EmbeddingsResult:
        """Plain ``POST /v1/embeddings`` (the proxy and node see the text)."""
        trace = Trace()
        t0 = time.perf_counter_ns()
        req = CreateEmbeddingRequest(input=list(input) if isinstance(input, tuple) else input,  # type: ignore[arg-type]
                                     model=model, encoding_format=encoding_format,  # type: ignore[arg-type]
                                     dimensions=dimensions, user=user)
        t1 = time.perf_counter_ns()
        resp = self._c._call("POST", "/v1/embeddings", req.to_json())
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


class _ConfidentialEmbeddings:
    def __init__(self, client: AtomaLabClient) -> None:
        self._c = client

    def create(self, *, input: EmbeddingInput | Sequence[str], model: str = DEFAULT_MODEL,
               encoding_format: str | None = None, dimensions: int | None = None,
               user: str | None = None, max_num_tokens: int | None = None) -> EmbeddingsResult:
        """``POST /v1/confidential/embeddings``: lock, seal, send, open, check.

        Retries once, with a fresh lock and a fresh seal, when the node key rotated in between
        (409) or the proxy found the node down (503: it released the units, and the new lock
        goes to another node).
        """
        req = CreateEmbeddingRequest(input=list(input) if isinstance(input, tuple) else input,  # type: ignore[arg-type]
                                     model=model, encoding_format=encoding_format,  # type: ignore[arg-type]
                                     dimensions=dimensions, user=user)
        plaintext = req.to_json()
        for attempt in (1, 2):
            try:
                return self._once(req, plaintext, max_num_tokens, attempt)
            except (NodeKeyMismatchError, ServiceUnavailableError):
                if attempt == 2:
                    raise
        raise AssertionError("unreachable")

    def _once(self, req: CreateEmbeddingRequest, plaintext: bytes, max_num_tokens: int | None,
              attempt: int) -> EmbeddingsResult:
        c = self._c
        trace = Trace()
        t0 = time.perf_counter_ns()
        lock = c.nodes.lock(req.model, max_num_tokens=max_num_tokens)
        t1 = time.perf_counter_ns()
        trace.add("lock", (t1 - t0) / 1e6)
        expected_signer: str | None = None
        if c.verify_attestation:
            expected_signer = c.verify_node(lock.node_small_id, lock.public_key).sui_address
            t1b = time.perf_counter_ns()
            trace.add("attest", (t1b - t1) / 1e6)
            t1 = t1b
        if c.profile != "atoma":
            sealed_h = hardened.seal_request(
                plaintext, node_public_key=lock.public_key, model_name=req.model,
                stack_small_id=lock.stack_small_id, num_compute_units=max_num_tokens,
                now=c.clock(), profile=c.profile)
            body = sealed_h.request.to_json()
        else:
            sealed = seal_request(plaintext, node_public_key=lock.public_key,
                                  stack_small_id=lock.stack_small_id, model_name=req.model,
                                  num_compute_units=max_num_tokens, stream=False)
            body = sealed.request.to_json()
        t2 = time.perf_counter_ns()
        trace.add("seal", (t2 - t1) / 1e6)
        resp = c._call("POST", "/v1/confidential/embeddings", body)
        t3 = time.perf_counter_ns()
        server = ServerTiming.parse(resp.headers.get("server-timing"))
        trace.add("transport", (t3 - t2) / 1e6 - sum(server.values()))
        trace.merge(server)
        _raise_for(resp)
        clear_usage: Any
        try:  # a malformed answer is the proxy's (or node's) fault, not the caller's
            answer_h = hardened.parse_response(loads(resp.body)) \
                if c.profile != "atoma" else None
            answer = ConfidentialComputeResponse.from_json(resp.body) if answer_h is None else None
        except AtomaLabError as exc:
            raise PeerProtocolError(f"the confidential answer is malformed: {exc.message}") from exc
        if answer_h is not None:
            # The answer must name this request; the signature over both hashes always checks.
            opened_h = hardened.open_response(answer_h, sealed_h.context,
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
                                raw={"request": loads(body), "response": loads(resp.body),
                                     "plaintext": plaintext, "response_plaintext": response_plaintext})


__all__ = ["AtomaLabClient", "Channel", "EmbeddingsResult", "VerifiedNode"]
