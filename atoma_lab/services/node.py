"""A node: an X25519 key that rotates with attestation, the confidential and plain embeddings
routes, and a Sui-style signing identity (atoma-protocol.md sections 1.4, 3, 6).

Checks on ``POST /v1/confidential/embeddings`` run in Atoma's order: the proxy's signature over
``plaintext_body_hash``, the node key is current, decryption, the hash, the stack is owned by the
signer. Unlike Atoma, every failure is a specific 4xx (a stale key is 409 ``STALE_NODE_KEY``), the
model inside the envelope must match ``model_name``, and usage may not exceed
``num_compute_units``.

Keys and replays: one :class:`~atoma_lab.protocol.keyring.NodeKeyRing` holds the node's keys
(the current one with its counter and evidence, the retired ones for ``grace_window_s``) and the
replay memories of both profiles. Atoma's node decrypts and serves a byte-identical request as
often as it comes (nothing in the envelope is single-use), and the proxy charges each time. Here
every node key remembers the ``salt`` and ``nonce`` of each request it opened, and a repeat is
409 ``REPLAYED_REQUEST`` (checked after decryption, so only a sealed request's owner can fill the
memory). A key that has opened ``replay_cache_size`` requests is rotated (a retired one stops
serving), which bounds that memory. ``replay_protection=False`` behaves as Atoma's node does (for
attack demonstrations).

Profiles: the same route takes Atoma's envelope and the hardened one
(:mod:`atoma_lab.protocol.hardened`, a body with ``"profile"``), as ``profiles`` allows; a node
limited to the hardened profile refuses Atoma's (400 ``INVALID_FIELD`` on ``profile``). For a
hardened request the proxy's X-Signature covers ``request_hash`` (the AAD and ciphertext), the
key is named by its id, and replays are refused by the ring's timestamp window and replay guard
(at most ``replay_window_entries`` requests inside the window; beyond that 503).

The plain route (``POST /v1/embeddings``): Atoma's proxy signs the body alone, so a captured
request replays, and its stack and units headers can be changed. Where the proxy also sends the
hardened binding (``X-Request-Signature`` over body, stack, units, request id and timestamp:
:mod:`atoma_lab.protocol.hardened.plain`), the node checks it and uses each request id once
inside the replay window (409 ``REPLAYED_REQUEST``); a node limited to the hardened profiles
requires it (400 ``MISSING_HEADER``), one that takes Atoma's serves Atoma's form as Atoma does,
and one limited to Atoma's profile ignores the binding altogether (Atoma's node).

A node's keys are ordered by ``(boot_epoch, key_rotation_counter)``: the counter starts at 1
at every start, and :attr:`NodeService.boot_epoch` (the start's wall-clock time, in the key's
evidence) puts a restarted node's keys after those it had before, so that a proxy takes them.

Errors: under Atoma's profile the node's errors travel in clear through the proxy, as Atoma's
do (they can tell the proxy about the sealed input: "request needs 131072 compute units",
"input[1]: expected a string"). A hardened request refused after it was opened gets its error
sealed to the client instead (:meth:`NodeService._sealed_error`): the proxy sees 400 (500 for
the node's own failure) ``SEALED_ERROR`` and passes the sealed part on; the client opens it and
raises the node's error.

Before a body is read (:meth:`NodeService.check_head`), the POST routes need ``X-Signature``
(the proxy's); ``/metrics`` needs the metrics token.
"""

from __future__ import annotations

import inspect
import logging
import secrets
import threading
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, Protocol

from atoma_lab.crypto.attestation import AttestationEvidence, SimulatedTEE
from atoma_lab.crypto.hashing import blake2b_256
from atoma_lab.crypto.keys import X25519KeyPair
from atoma_lab.crypto.signing import SuiSignature, SuiSigner, verify_sui_signature
from atoma_lab.display.html import fingerprint
from atoma_lab.encoding import b64encode, dumps, loads, parse_uint, serde_compact
from atoma_lab.errors import (
    AtomaLabError,
    ComputeUnitsExceededError,
    InferenceError,
    MissingHeaderError,
    ModelMismatchError,
    ModelNotFoundError,
    NodeKeyMismatchError,
    PermissionDeniedError,
    ProfileMismatchError,
    ReplayedRequestError,
    SealedNodeError,
    ServiceUnavailableError,
    StackNotFoundError,
    quoted,
)
from atoma_lab.inference.serving import EmbedResponse
from atoma_lab.protocol import hardened
from atoma_lab.protocol.atoma.envelope import open_request, seal_response
from atoma_lab.protocol.atoma.messages import DEFAULT_MAX_NUM_TOKENS, Usage
from atoma_lab.protocol.hardened.plain import (
    PLAIN_REPLAY_PREFIX,
    parse_request_id,
    plain_request_digest,
)
from atoma_lab.protocol.keyring import DEFAULT_OPENED_PER_KEY, NodeKey, NodeKeyRing
from atoma_lab.protocol.lookup import stack_lookup_digest
from atoma_lab.protocol.openai import CreateEmbeddingRequest
from atoma_lab.protocol.replay import DEFAULT_REPLAY_CACHE_ENTRIES, ReplayGuard
from atoma_lab.services.bounds import STACK_LOOKUP_MAX_BYTES
from atoma_lab.services.metrics import (
    ServiceMetrics,
    check_metrics_token,
    log_node_failure,
    metrics_response,
)
from atoma_lab.services.routing import Router
from atoma_lab.services.trace import ServerTiming
from atoma_lab.transport.base import Headers, Request, Response, Transport, error_response

#: What an operator needs to follow: keys rotated, replays refused, the embedding backend
#: failing, requests refused (by code). Ids, codes and key fingerprints only: never a request's
#: text, a vector or key bytes.
log = logging.getLogger("atoma_lab.node")

CONFIDENTIAL_EMBEDDINGS_PATH = "/v1/confidential/embeddings"
DEFAULT_REPLAY_CACHE_SIZE = DEFAULT_OPENED_PER_KEY  # requests one key opens before it is rotated
ATOMA_PROFILE = "atoma"
PROFILES = (ATOMA_PROFILE, *hardened.PROFILES)
EMBEDDINGS_PATH = "/v1/embeddings"
PLAIN_UNITS_UNBOUNDED = 2**63 - 1  # a plain request without X-Num-Compute-Units (Atoma's proxy sends it)


_last_boot_epoch = 0
_boot_lock = threading.Lock()


def next_boot_epoch() -> int:
    """A node start's epoch: the wall clock in microseconds, above every epoch this process
    handed out before (two nodes started in one microsecond still differ)."""
    global _last_boot_epoch
    with _boot_lock:
        _last_boot_epoch = max(time.time_ns() // 1000, _last_boot_epoch + 1)
        return _last_boot_epoch


#: What an embedder returns: the OpenAI response JSON bytes and the usage they contain.
EmbedOutput = EmbedResponse


class RequestEmbedder(Protocol):
    """What the node needs from the inference layer: served models and ``async embed`` of an
    OpenAI request (the inference layer's own ``Embedder`` embeds inputs, synchronously).

    An embedder whose ``embed`` also takes the keywords ``max_tokens`` and ``flow`` (as
    :class:`~atoma_lab.inference.serving.NodeEmbedder` does) is given the units the request may
    use, to refuse it before the model runs, and the request's stack, to share its queue fairly;
    any other is asked plainly and its usage checked afterwards.
    """

    @property
    def models(self) -> Sequence[str]: ...

    async def embed(self, request: CreateEmbeddingRequest) -> EmbedOutput: ...


def _takes_limits(embedder: object) -> bool:
    """Whether ``embedder.embed`` takes ``max_tokens`` and ``flow``."""
    try:
        params = inspect.signature(embedder.embed).parameters  # type: ignore[attr-defined]
    except (AttributeError, TypeError, ValueError):
        return False
    return "max_tokens" in params and "flow" in params


#: A stack's owner address (``None``: not a stack of this node), as the chain tells a node; may
#: be a coroutine function (a lookup over the network).
StackOwner = Callable[[int], "str | Awaitable[str | None] | None"]


class ProxyStackDirectory:
    """Stack owners read from a proxy's ``GET /v1/stacks`` (for a node in its own process, where
    Atoma's node would read the chain), signed by the node's ``signer``
    (:mod:`atoma_lab.protocol.lookup`; set it before the first look-up). A stack assigned to
    another node is unknown here; answers are cached, since a stack's owner and node never
    change. An answer is read up to :data:`~atoma_lab.services.bounds.STACK_LOOKUP_MAX_BYTES`
    within ``timeout_s`` (502 or 504 past them)."""

    def __init__(self, transport: Transport, proxy_address: str, node_small_id: int, *,
                 timeout_s: float = 5.0, signer: SuiSigner | None = None) -> None:
        self.transport = transport
        self.proxy_address = proxy_address
        self.node_small_id = node_small_id
        self.timeout_s = timeout_s
        self.signer = signer
        self._owners: dict[int, str] = {}

    async def __call__(self, stack_small_id: int) -> str | None:
        if stack_small_id in self._owners:
            return self._owners[stack_small_id]
        headers = Headers({"accept": "application/json"})
        if self.signer is not None:
            headers["x-node-small-id"] = str(self.node_small_id)
            headers["x-signature"] = self.signer.sign(
                stack_lookup_digest(self.node_small_id, stack_small_id)).to_base64()
        req = Request("GET", f"/v1/stacks?stack_small_id={stack_small_id}", headers, b"",
                      address=self.proxy_address, timeout_s=self.timeout_s,
                      max_response_bytes=STACK_LOOKUP_MAX_BYTES)
        resp = await self.transport.handle(req)  # the transport holds it to both bounds
        if resp.status == 404:
            return None
        if not resp.ok:
            raise ServiceUnavailableError(f"stack lookup at the proxy failed ({resp.status})")
        info = loads(resp.body, what="stack lookup")
        if not isinstance(info, dict) or not isinstance(info.get("owner_address"), str):
            raise ServiceUnavailableError("stack lookup at the proxy answered badly")
        if info.get("node_small_id") != self.node_small_id:
            return None
        self._owners[stack_small_id] = info["owner_address"]
        return info["owner_address"]


class NodeService:
    """One node. ``handle`` is its whole HTTP surface."""

    def __init__(
        self,
        *,
        node_small_id: int,
        embedder: RequestEmbedder,
        stack_owner: StackOwner,
        signer: SuiSigner | None = None,
        tee: SimulatedTEE | None = None,
        grace_window_s: float = 0.0,
        clock: Callable[[], float] = time.time,
        on_rotate: Callable[[NodeService], None] | None = None,
        replay_cache_size: int = DEFAULT_REPLAY_CACHE_SIZE,
        replay_protection: bool = True,
        profiles: Sequence[str] = PROFILES,
        replay_window_s: float = hardened.DEFAULT_REPLAY_WINDOW_S,
        replay_window_entries: int = DEFAULT_REPLAY_CACHE_ENTRIES,
        metrics_token: str | None = None,
        boot_epoch: int | None = None,
    ) -> None:
        if replay_cache_size < 1:
            raise ValueError("replay_cache_size must be at least 1")
        unknown = set(profiles) - set(PROFILES)
        if unknown or not profiles:
            raise ValueError(f"profiles must be a non-empty subset of {PROFILES}")
        self.profiles = tuple(profiles)
        self.node_small_id = node_small_id
        self.embedder = embedder
        self.stack_owner = stack_owner
        self.signer = signer or SuiSigner.generate()
        self.tee = tee or SimulatedTEE()
        self.clock = clock
        self.on_rotate = on_rotate
        self.metrics = ServiceMetrics()
        self.metrics_token = metrics_token  # None: /metrics answers nobody
        # Counters start at 1 again at every start: this start's epoch orders its keys after
        # those of every earlier start (the proxy takes a restarted node's key by it).
        self.boot_epoch = next_boot_epoch() if boot_epoch is None else boot_epoch
        now = self.clock()
        pair, evidence = self._attested_key(1, now, None)
        self.key_ring = NodeKeyRing(
            pair, counter=1, evidence=evidence, grace_s=grace_window_s,
            guard=ReplayGuard(window_s=replay_window_s, max_entries=replay_window_entries),
            opened_per_key=replay_cache_size, remember_opened=replay_protection)
        if self.on_rotate is not None:
            self.on_rotate(self)
        self._limits_for: tuple[object, bool] = (None, False)  # (embedder, takes max_tokens)
        self.router = Router()
        signed = self._check_signature_header
        self.router.add("POST", CONFIDENTIAL_EMBEDDINGS_PATH, self._confidential_embeddings,
                        guard=signed)
        self.router.add("POST", EMBEDDINGS_PATH, self._embeddings, guard=signed)
        self.router.add("GET", "/v1/models", self._models)
        self.router.add("GET", "/health", self._health)
        self.router.add("GET", "/metrics", self._metrics, guard=self._check_metrics_token)
        self.router.add("GET", "/v1/attestation", self._attestation)

    # ------------------------------------------------------------------ keys
    @property
    def current(self) -> NodeKey:
        return self.key_ring.current_key

    @property
    def public_key(self) -> bytes:
        return self.key_ring.current_key.public_key

    @property
    def key_rotation_counter(self) -> int:
        return self.key_ring.counter

    @property
    def evidence(self) -> AttestationEvidence:
        evidence = self.key_ring.evidence
        assert evidence is not None  # every key of a node is attested when it is made
        return evidence

    def announcement(self) -> tuple[bytes, str]:
        """The current key's evidence and this node's signature over it (base64), the body and
        ``x-signature`` of the proxy's ``POST /v1/nodes/attestation``."""
        body = self.evidence.to_json()
        return body, self.signer.sign(blake2b_256(body)).to_base64()

    @property
    def models(self) -> Sequence[str]:
        """The models this node serves (its embedder's)."""
        return self.embedder.models

    @property
    def sui_address(self) -> str:
        return self.signer.address

    @property
    def grace_window_s(self) -> float:
        """How long a rotated-away key still serves requests sealed to it."""
        return self.key_ring.grace_s

    @property
    def replay_protection(self) -> bool:
        """Whether each key remembers the Atoma-profile requests it opened."""
        return self.key_ring.remember_opened

    @property
    def replay_cache_size(self) -> int:
        """Atoma-profile requests one key opens before it is rotated."""
        return self.key_ring.opened_per_key

    @replay_cache_size.setter
    def replay_cache_size(self, value: int) -> None:
        self.key_ring.opened_per_key = value

    @property
    def replay_guard(self) -> ReplayGuard:
        """The hardened profiles' timestamp window and replay cache."""
        return self.key_ring.guard

    def _attested_key(self, counter: int, now: float,
                      rotation_nonce: int | None) -> tuple[X25519KeyPair, AttestationEvidence]:
        pair = X25519KeyPair.generate()
        evidence = self.tee.attest(
            node_small_id=self.node_small_id,
            key_rotation_counter=counter,
            rotation_nonce=secrets.randbits(64) if rotation_nonce is None else rotation_nonce,
            public_key=pair.public_bytes,
            signer_address=self.signer.address,
            now=now,
            boot_epoch=self.boot_epoch,
        )
        return pair, evidence

    def rotate_key(self, rotation_nonce: int | None = None) -> AttestationEvidence:
        """A new X25519 key, counter + 1, and fresh evidence binding it.

        The old key keeps serving requests already sealed to it for ``grace_window_s`` seconds
        (0: not at all, as in Atoma). Then ``on_rotate`` tells whoever publishes keys.
        """
        now = self.clock()
        pair, evidence = self._attested_key(self.key_ring.counter + 1, now, rotation_nonce)
        self.key_ring.rotate(pair, now=now, evidence=evidence)
        log.info("node %d rotated its key: counter %d, fingerprint %s (the old key serves %g s "
                 "more)", self.node_small_id, self.key_ring.counter, fingerprint(pair.public_bytes),
                 self.key_ring.grace_s)
        if self.on_rotate is not None:
            self.on_rotate(self)
        return evidence

    def _refused(self, route: str, exc: AtomaLabError) -> None:
        """Count and log a request this node did not serve (by its error code)."""
        self.metrics.count_failure(exc.code)
        if isinstance(exc, ReplayedRequestError):
            log.warning("node %d refused a replayed %s request (%s)", self.node_small_id, route,
                        exc.code)
        elif isinstance(exc, InferenceError):
            log.warning("node %d: the embedding backend failed a %s request (%d %s)",
                        self.node_small_id, route, exc.status, exc.code)
        elif isinstance(exc, NodeKeyMismatchError):
            log.info("node %d refused a %s request sealed to a key it no longer serves (%s)",
                     self.node_small_id, route, exc.code)
        else:
            log_node_failure(log, self.node_small_id, route, exc)

    # ------------------------------------------------------------------ routes
    async def handle(self, request: Request) -> Response:
        return await self.router(request)

    def check_head(self, request: Request) -> None:
        """What the HTTP server asks before reading a body: the route, the proxy's
        ``X-Signature`` on the POST routes (400 ``MISSING_HEADER`` without reading on)."""
        self.router.check_head(request)

    def _check_signature_header(self, request: Request) -> None:
        if request.headers.get("x-signature") is None:
            self.metrics.count_failure(MissingHeaderError.code)
            raise MissingHeaderError("missing required header X-Signature")

    def _check_metrics_token(self, request: Request) -> None:
        check_metrics_token(request, self.metrics_token)

    def _proxy_signature(self, request: Request, message: bytes) -> SuiSignature:
        # The route's guard (_check_signature_header) refused a request without the header.
        return verify_sui_signature(request.headers["x-signature"], message, field="X-Signature")

    async def _check_stack(self, stack_small_id: int, signer_address: str) -> None:
        owner = self.stack_owner(stack_small_id)
        if inspect.isawaitable(owner):
            owner = await owner
        if owner is None:
            raise StackNotFoundError(f"stack {stack_small_id} is not known to this node")
        if owner != signer_address:
            raise PermissionDeniedError(f"stack {stack_small_id} is not owned by the signer")

    def _check_plain_binding(self, request: Request, body_hash: bytes, stack_small_id: int,
                             proxy_address: str) -> int:
        """The hardened plain route: ``X-Request-Signature`` by the proxy's key over the body,
        stack, units, request id and timestamp; the request id used once inside the replay
        window. Returns the units the proxy locked."""
        def header(name: str) -> str:
            value = request.headers.get(name)
            if value is None:
                raise MissingHeaderError(f"missing required header {name}")
            return str(value)

        units = parse_uint(header("X-Num-Compute-Units"), field="X-Num-Compute-Units")
        request_id = parse_request_id(header("X-Request-Id"))
        timestamp = parse_uint(header("X-Request-Timestamp"), field="X-Request-Timestamp")
        digest = plain_request_digest(body_hash, stack_small_id=stack_small_id,
                                      num_compute_units=units, request_id=request_id,
                                      timestamp=timestamp)
        verify_sui_signature(header("X-Request-Signature"), digest,
                             expected_address=proxy_address, field="X-Request-Signature")
        self.key_ring.guard.check(PLAIN_REPLAY_PREFIX + request_id, timestamp, self.clock())
        return units

    async def _embed(self, request: CreateEmbeddingRequest, max_tokens: int,
                     flow: int) -> EmbedOutput:
        """Embed within ``max_tokens`` units: refused before the model runs where the embedder
        can tell (see :class:`RequestEmbedder`), and checked on its usage in any case."""
        embedder = self.embedder
        if self._limits_for[0] is not embedder:
            self._limits_for = (embedder, _takes_limits(embedder))
        if self._limits_for[1]:
            out = await embedder.embed(request, max_tokens=max_tokens,  # type: ignore[call-arg]
                                       flow=flow)
        else:
            out = await embedder.embed(request)
        if out.usage.total_tokens > max_tokens:
            raise ComputeUnitsExceededError(
                f"request needs {out.usage.total_tokens} compute units; {max_tokens} are allowed")
        return out

    def _check_model(self, model: str) -> None:
        if model not in self.embedder.models:
            raise ModelNotFoundError(f"this node does not serve model {quoted(model)}",
                                     field="model")

    async def _confidential_embeddings(self, request: Request) -> Response:
        timing = ServerTiming()
        started = time.perf_counter()
        model = "unknown"
        sealed_to: hardened.HardenedNodeContext | None = None  # a hardened client's, once opened
        try:
            with timing.stage("node_check"):
                ccr = hardened.parse_request(loads(request.body, what="confidential request"),
                                             accept_atoma=ATOMA_PROFILE in self.profiles)
                if isinstance(ccr, hardened.HardenedRequest):
                    if ccr.profile not in self.profiles:
                        raise ProfileMismatchError(f"this node does not take {ccr.profile}",
                                                   field="profile")
                    signed = ccr.request_hash()
                else:
                    signed = ccr.plaintext_body_hash
                model = ccr.model_name
                proxy_sig = self._proxy_signature(request, signed)
            with timing.stage("node_open"):
                opened: Any
                now = self.clock()
                if isinstance(ccr, hardened.HardenedRequest):
                    opened = hardened.open_hardened_request(ccr, self.key_ring, now=now)
                    sealed_to = opened.context
                else:
                    key = self.key_ring.by_public_key(ccr.node_dh_public_key, now=now)
                    opened = open_request(ccr, key.pair)
                    self.key_ring.remember(key, ccr.salt + ccr.nonce)
                    if self.key_ring.rotation_due:
                        self.rotate_key()
            with timing.stage("node_check"):
                await self._check_stack(ccr.stack_small_id, proxy_sig.address)
                oai = CreateEmbeddingRequest.from_json(opened.plaintext)
                if oai.model != ccr.model_name:
                    raise ModelMismatchError("model_name differs from the sealed request's model",
                                             field="model_name")
                self._check_model(oai.model)
            limit = DEFAULT_MAX_NUM_TOKENS if ccr.num_compute_units is None else ccr.num_compute_units
            with timing.stage("node_embed"):
                out = await self._embed(oai, limit, ccr.stack_small_id)
            with timing.stage("node_seal"):
                usage = Usage(out.usage.prompt_tokens, out.usage.total_tokens)
                if isinstance(ccr, hardened.HardenedRequest):
                    body = hardened.seal_hardened_response(out.body, opened.context, signer=self.signer,
                                                  usage=usage).to_json()
                else:
                    body = seal_response(out.body, opened.context, usage=usage,
                                         signer=self.signer).to_json()
        except AtomaLabError as exc:
            self._refused("confidential", exc)
            resp = error_response(exc) if sealed_to is None else self._sealed_error(exc, sealed_to)
            resp.headers["server-timing"] = timing.header()
            return resp
        log.debug("node %d served a confidential request: %d tokens", self.node_small_id,
                  out.usage.total_tokens)
        self.metrics.confidential_requests.labels(model).inc()
        self.metrics.completed.inc()
        self.metrics.tokens.labels(model).inc(out.usage.total_tokens)
        self.metrics.latency.labels(model, "confidential").observe(time.perf_counter() - started)
        return Response.json(body, headers={"server-timing": timing.header()})

    def _sealed_error(self, exc: AtomaLabError, context: hardened.HardenedNodeContext) -> Response:
        """A hardened request refused after it was opened: the error sealed to its client as
        the answer to it (no usage), beside a status and code that tell the proxy nothing of the
        sealed input (400 ``SEALED_ERROR``, 500 when the node failed)."""
        status = 400 if exc.status < 500 else 500
        generic = SealedNodeError("the node's reason is sealed to the client")
        detail = dumps({"status": exc.status, "error": {"code": exc.code, "message": exc.message}})
        try:
            sealed = hardened.seal_hardened_response(detail, context, signer=self.signer)
        except ValueError:  # the context sealed an answer already: the reason cannot follow
            return Response.json(generic.to_dict(), status=status)
        return Response.json({**generic.to_dict(), "sealed_error": sealed.to_dict()},
                             status=status)

    async def _embeddings(self, request: Request) -> Response:
        """Plain route: the proxy signs BLAKE2b-256(serde-compact(body)); the answer is the OpenAI
        JSON plus ``signature`` and ``response_hash`` over its serde-compact bytes."""
        timing = ServerTiming()
        started = time.perf_counter()
        try:
            with timing.stage("node_check"):
                parsed = loads(request.body, what="embeddings request")
                body_hash = blake2b_256(serde_compact(parsed))
                proxy_sig = self._proxy_signature(request, body_hash)
                stack_header = request.headers.get("x-stack-small-id")
                if stack_header is None:
                    raise MissingHeaderError("missing required header X-Stack-Small-Id")
                stack_small_id = parse_uint(stack_header, field="X-Stack-Small-Id")
                units = request.headers.get("x-num-compute-units")
                if self.profiles != (ATOMA_PROFILE,) \
                        and request.headers.get("x-request-signature") is not None:
                    limit = self._check_plain_binding(request, body_hash, stack_small_id,
                                                      proxy_sig.address)
                elif ATOMA_PROFILE not in self.profiles:
                    raise MissingHeaderError("missing required header X-Request-Signature: this "
                                             "node takes the hardened profile only")
                else:  # Atoma's plain route: the units header is not signed
                    limit = parse_uint(units, field="X-Num-Compute-Units") \
                        if units is not None and units.isascii() and units.isdigit() \
                        else PLAIN_UNITS_UNBOUNDED
                await self._check_stack(stack_small_id, proxy_sig.address)
                oai = CreateEmbeddingRequest.from_dict(parsed)
                self._check_model(oai.model)
            with timing.stage("node_embed"):
                out = await self._embed(oai, limit, stack_small_id)
            with timing.stage("node_seal"):
                # As Atoma's node does with TEI's answer: parse it and write it back the serde_json
                # way (f64 floats), so that the proxy's re-serialisation gives the same bytes. The
                # engine's float32 text can differ in layout (0.0000010337674 vs 1.0337674e-6).
                canonical = serde_compact(loads(out.body, what="engine response"))
                digest = blake2b_256(canonical)
                signature = self.signer.sign(digest).to_base64()
                body = (canonical[:-1] + b',"signature":"' + signature.encode()
                        + b'","response_hash":"' + b64encode(digest).encode() + b'"}')
        except AtomaLabError as exc:
            self._refused("plain", exc)
            resp = error_response(exc)
            resp.headers["server-timing"] = timing.header()
            return resp
        log.debug("node %d served a plain request: %d tokens", self.node_small_id,
                  out.usage.total_tokens)
        self.metrics.embs_requests.labels(oai.model).inc()
        self.metrics.completed.inc()
        self.metrics.tokens.labels(oai.model).inc(out.usage.total_tokens)
        self.metrics.latency.labels(oai.model, "non-confidential").observe(time.perf_counter() - started)
        return Response.json(body, headers={"server-timing": timing.header()})

    async def _health(self, request: Request) -> Response:
        return Response.json({"status": "ok"})

    async def _models(self, request: Request) -> Response:
        """The served model names (a proxy registering this node reads them)."""
        return Response.json({"object": "list", "data": [
            {"id": m, "object": "model", "owned_by": f"node-{self.node_small_id}"}
            for m in self.embedder.models]})

    async def _metrics(self, request: Request) -> Response:
        return metrics_response(self.metrics)

    async def _attestation(self, request: Request) -> Response:
        cur = self.current
        assert cur.evidence is not None  # every key of a node is attested when it is made
        return Response.json({
            "node_small_id": self.node_small_id,
            "public_key": b64encode(cur.public_key),
            "key_rotation_counter": cur.counter,
            "sui_address": self.signer.address,
            "evidence": cur.evidence.to_dict(),
        })

    def __repr__(self) -> str:
        return (f"NodeService(node_small_id={self.node_small_id}, "
                f"key_rotation_counter={self.key_rotation_counter})")
