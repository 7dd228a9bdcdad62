"""The proxy: API tokens, the ledger of stacks and nodes, locks, signing and forwarding
(atoma-protocol.md sections 1.1, 1.3, 4, 5, 6, 8), with Atoma's leaks and 500s mended:

* a consumed lock's units stay reserved while the request is in flight, then settlement charges
  ``usage.total_tokens`` and gives back the rest; a failed request is charged nothing;
* ``stack_small_id`` must belong to the caller (403), an unknown stack is 404 (Atoma: 500);
* the node's signature must verify *and* come from the node's registered Sui address;
* node errors keep their status and JSON body when they are the caller's fault (4xx); node 5xx,
  bad answers and transport failures are 502/503/504 with a JSON body.

Node health and keys (Atoma learns both from the chain and its own probes): a node that cannot
be reached, or times out, is marked down at once and gets no new locks; :meth:`check_nodes`
(run every ``health_interval_s`` by :meth:`run_health_checks`) probes each node's
``GET /v1/attestation``, marks it up again, and takes a newer key whose evidence verifies. A
node's 409 ``STALE_NODE_KEY`` makes the proxy fetch the node's key before it answers, so the
client's retry gets the new one. Keys are ordered by ``(boot_epoch, key_rotation_counter)``, so a
node restarted (its counter at 1 again) comes back at the next probe or 409, under its old
signing identity or, at the same address, a new one. Nodes in other processes find stack owners with
``GET /v1/stacks?stack_small_id=N``, signed by the node (:mod:`atoma_lab.protocol.lookup`).

On the plain route the proxy signs, beside Atoma's ``X-Signature`` over the body, the body bound
to its stack, units, a request id and a timestamp (``X-Request-Signature``,
:mod:`atoma_lab.protocol.hardened.plain`), which hardened nodes require and remember.

A node's error to a hardened request is sealed to its client (``SEALED_ERROR``, the node's
reason inside): the proxy checks that the sealed part answers this request and is signed by the
node, and passes it on as ``sealed_error`` beside its own error.

Against hostile peers: the bearer token is checked from the request's head, before its body is
read (:meth:`ProxyService.check_head`); a node's refusal reaches the client only with a status
and code of the error table and the proxy's own words (any other answer is 502
``BAD_PEER_RESPONSE``); metric labels come from a fixed set; ``/metrics`` needs the metrics
token; ``/openapi.json`` names the models only to a valid token; open locks that expire are
given back every ``lock_sweep_interval_s`` (:meth:`ProxyService.run_lock_sweeper`), not only at
the next lock call.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import re
import secrets
import time
from collections.abc import Callable

from atoma_lab.crypto.attestation import (
    AttestationPolicy,
    AttestationVerifier,
    Evidence,
    evidence_from_dict,
    evidence_from_json,
    verifier_for,
)
from atoma_lab.crypto.hashing import blake2b_256
from atoma_lab.crypto.signing import SuiSigner, verify_sui_signature
from atoma_lab.display.html import fingerprint
from atoma_lab.encoding import b64decode, loads, parse_uint, require_int, serde_compact
from atoma_lab.errors import (
    APIError,
    AtomaLabError,
    AttestationError,
    AuthenticationError,
    InsufficientBalanceError,
    InvalidFieldError,
    ModelNotFoundError,
    NodeFailedError,
    NotFoundError,
    PeerBusyError,
    PeerProtocolError,
    ResponseTooLargeError,
    ServiceUnavailableError,
    SignatureError,
    StackLockedError,
    StackNotFoundError,
    StackUnavailableError,
    TransportError,
    TransportTimeoutError,
    known_error,
    quoted,
)
from atoma_lab.protocol import hardened
from atoma_lab.protocol.atoma.messages import (
    DEFAULT_MAX_NUM_TOKENS,
    ConfidentialComputeRequest,
    ConfidentialComputeResponse,
    NodesCreateLockRequest,
    NodesCreateLockResponse,
)
from atoma_lab.protocol.chunking import units_bound_of_length
from atoma_lab.protocol.hardened.plain import PLAIN_REQUEST_ID_SIZE, plain_request_digest
from atoma_lab.protocol.lookup import stack_lookup_digest
from atoma_lab.protocol.openai import CreateEmbeddingRequest
from atoma_lab.protocol.wire import wire_names
from atoma_lab.services.bounds import (
    DEFAULT_MAX_DIMENSIONS,
    DEFAULT_MAX_RESPONSE_BYTES,
    NODE_INFO_MAX_BYTES,
    confidential_response_limit,
    plain_response_limit,
)
from atoma_lab.services.ledger import STACK_SIZE_TO_BUY, Ledger, LockRecord, NodeRecord, StackRecord
from atoma_lab.services.metrics import (
    ServiceMetrics,
    check_metrics_token,
    log_node_failure,
    metrics_response,
)
from atoma_lab.services.policy import DEFAULT_NODE_POLICY, NodePolicy
from atoma_lab.services.policy import node_policy as node_policy_named
from atoma_lab.services.routing import Router
from atoma_lab.services.trace import ServerTiming
from atoma_lab.transport.base import Headers, Request, Response, Transport, error_response

#: What an operator needs to follow: nodes registered, down and back, keys accepted or refused,
#: stacks bought, expired locks given back, node failures. Ids, codes and key fingerprints only:
#: never a request's text, a vector, a token or key bytes.
log = logging.getLogger("atoma_lab.proxy")

MODELS_CREATED = 1686935002  # the fixed "created" Atoma's /v1/models reports
PLAIN_LOCK_TIMEOUT_S = 60  # seconds a plain-route reservation may stay in flight
NODE_PROBE_TIMEOUT_S = 5.0  # a health probe's limit
LOCK_SWEEP_INTERVAL_S = 1.0  # seconds between give-backs of expired open locks
HEALTH_INTERVAL_S = 5.0  # seconds between probes of every node, where they run on a timer
#: Codes a node never has cause to send: they are about the proxy's users, balances and locks.
#: A node answering one is not believed (502 ``BAD_PEER_RESPONSE``).
PROXY_ONLY_CODES = frozenset({AuthenticationError.code, InsufficientBalanceError.code,
                              StackUnavailableError.code, StackLockedError.code})
#: Field names a node's refusal may name (the proxy repeats the name, never the node's text):
#: the wire fields of the requests a node reads, the headers it checks, and ``input[i][j]``.
NODE_FIELD_NAMES = frozenset(
    {name for cls in (ConfidentialComputeRequest, hardened.HardenedRequest,
                      CreateEmbeddingRequest) for name in wire_names(cls)}
    | {"profile", "body", "X-Signature", "X-Stack-Small-Id", "X-Num-Compute-Units"})
_INPUT_FIELD = re.compile(r"input(\[\d{1,5}\]){0,2}")


def _node_error_answer(resp: Response) -> object:
    """A node's error answer parsed (``None`` when it is not JSON), read by the proxy's checks
    of its code, field and sealed error."""
    try:
        return loads(resp.body, what="node error")
    except AtomaLabError:
        return None


def _stored_order(node: NodeRecord) -> tuple[int, int]:
    """``(boot_epoch, key_rotation_counter)`` of the key the proxy holds for ``node``."""
    if node.evidence is None:
        return (-1, -1)
    try:
        return evidence_from_json(node.evidence).report.key_order
    except AtomaLabError:  # held before evidence named its boot: any new key is later
        return (-1, node.key_rotation_counter)


def estimate_plain_units(request: CreateEmbeddingRequest) -> int:
    """An upper bound on the tokens a plain request can use, reserved before forwarding.

    Each input is bounded as a client's chunk planner bounds it
    (:func:`~atoma_lab.protocol.chunking.units_bound_of_length`): a token covers at least one
    UTF-8 byte, plus two special tokens per input; a token-id input is its length plus two. The
    node's usage, never more than this, is what gets charged.
    """
    total = 0
    for item in request.inputs():
        n = len(item.encode("utf-8")) if isinstance(item, str) else len(item)
        total += units_bound_of_length(n)
    return total


class ProxyService:
    """The proxy. ``handle`` is its whole HTTP surface; ``transport`` reaches nodes."""

    def __init__(
        self,
        *,
        ledger: Ledger,
        transport: Transport,
        signer: SuiSigner | None = None,
        attestation_policy: AttestationPolicy | None = None,
        attestation_verifier: AttestationVerifier | None = None,
        clock: Callable[[], float] = time.time,
        node_timeout_s: float = 60.0,
        stack_size: int = STACK_SIZE_TO_BUY,
        node_policy: str | NodePolicy = DEFAULT_NODE_POLICY,
        policy_seed: int | None = 0,
        metrics_token: str | None = None,
        max_response_bytes: int = DEFAULT_MAX_RESPONSE_BYTES,
        max_dimensions: int = DEFAULT_MAX_DIMENSIONS,
    ) -> None:
        self.ledger = ledger
        self.transport = transport
        self.signer = signer or SuiSigner.generate()
        self.attestation_policy = attestation_policy  # the simulated TEE's, unless a verifier is given
        self.attestation_verifier = attestation_verifier
        self.clock = clock
        self.node_timeout_s = node_timeout_s
        self.stack_size = stack_size
        self.node_policy = node_policy_named(node_policy, seed=policy_seed)
        self.metrics_token = metrics_token  # None: /metrics answers nobody
        # A node's answer is read up to a bound derived from the request (services/bounds.py),
        # never past max_response_bytes; models' vectors are taken to have max_dimensions at most.
        self.max_response_bytes = max_response_bytes
        self.max_dimensions = max_dimensions
        self.metrics = ServiceMetrics()
        self.router = Router()
        user = self._check_token
        self.router.add("POST", "/v1/nodes/lock", self._nodes_lock, guard=user)
        self.router.add("POST", "/v1/confidential/embeddings", self._confidential_embeddings,
                        guard=user)
        self.router.add("POST", "/v1/embeddings", self._embeddings, guard=user)
        self.router.add("GET", "/v1/models", self._models, guard=user)
        self.router.add("GET", "/v1/nodes/attestation", self._node_attestation)
        self.router.add("POST", "/v1/nodes/attestation", self._publish_attestation)
        self.router.add("GET", "/v1/stacks", self._stack_info)
        self.router.add("GET", "/health", self._health)
        self.router.add("GET", "/metrics", self._metrics, guard=self._check_metrics_token)
        self.router.add("GET", "/openapi.json", self._openapi)

    @property
    def address(self) -> str:
        """The proxy's Sui address: it owns the stacks it buys for its users."""
        return self.signer.address

    async def handle(self, request: Request) -> Response:
        return await self.router(request)

    def check_head(self, request: Request) -> None:
        """What the HTTP server asks before reading a body: the route, and the bearer token
        of the routes that need one (401 without reading what follows)."""
        self.router.check_head(request)

    # ------------------------------------------------------------------ administration
    def register_node(self, node_small_id: int, *, address: str, sui_address: str,
                      models: list[str] | tuple[str, ...],
                      price_per_one_million_compute_units: int = 1) -> None:
        """Add (or update) a node; it gets confidential traffic once its key is attested."""
        log.info("node %d registered at %s (models %s; %d per 1M units)", node_small_id, address,
                 ", ".join(models), price_per_one_million_compute_units)
        self.ledger.upsert_node(node_small_id, address=address, sui_address=sui_address,
                                models=models,
                                price_per_one_million_compute_units=price_per_one_million_compute_units)

    def accept_node_key(self, evidence: Evidence) -> bool:
        """Record a node's new key. It is handed out only if the evidence verifies (with the
        attestation verifier, or the simulated TEE's under the policy, when there is one) and names
        the node's registered signing address. Returns whether the key is valid.

        Keys are ordered by ``(boot_epoch, key_rotation_counter)`` (a restarted node counts from
        1 again, in a later boot): evidence older than the key held changes nothing."""
        report = evidence.report
        node = self.ledger.node(report.node_small_id)
        if node is None:
            raise NotFoundError(f"node {report.node_small_id} is not registered")
        if report.key_order < _stored_order(node):
            log.debug("node %d: ignored key %d of boot %d, older than the key it holds",
                      node.node_small_id, report.key_rotation_counter, report.key_order[0])
            return node.attestation_valid  # an old announcement arriving late changes nothing
        return self._take_key(node, evidence)

    def _verification_failure(self, evidence: Evidence, signer_address: str) -> str | None:
        """Why ``evidence`` does not hold for ``signer_address`` (the check that failed), or
        ``None`` when it names that address and verifies (when there is a verifier)."""
        if evidence.report.signer_address != signer_address:
            return "the evidence names another signing address"
        verifier = verifier_for(self.attestation_verifier, self.attestation_policy)
        if verifier is not None:
            try:
                verifier.verify(evidence, now=self.clock())
            except AttestationError as exc:
                return type(exc).__name__  # the check that failed
        return None

    def _take_key(self, node: NodeRecord, evidence: Evidence) -> bool:
        report = evidence.report
        why = self._verification_failure(evidence, node.sui_address)
        valid = why is None
        counter = report.key_rotation_counter
        if not valid:
            log.warning("node %d: attestation refused for key %d (%s); it gets no confidential "
                        "traffic until a key verifies", node.node_small_id, counter, why)
        elif report.public_key != node.public_key or not node.attestation_valid:
            log.info("node %d: key %d accepted, attested (fingerprint %s)", node.node_small_id,
                     counter, fingerprint(report.public_key))
        self.ledger.set_node_key(report.node_small_id, public_key=report.public_key,
                                 key_rotation_counter=report.key_rotation_counter,
                                 evidence=evidence.to_json(), valid=valid)
        return valid

    async def _node_json(self, address: str, path: str) -> object:
        # Probes have connections of their own: requests stuck at a node do not hold them up.
        probe = Request("GET", path, Headers({"accept": "application/json"}), b"",
                        address=address, timeout_s=NODE_PROBE_TIMEOUT_S,
                        max_response_bytes=NODE_INFO_MAX_BYTES, lane="probe")
        resp = await self.transport.handle(probe)  # the transport holds it to both bounds
        if not resp.ok:
            raise NodeFailedError(f"{address}{path} answered {resp.status}")
        try:
            return loads(resp.body, what="node answer")
        except AtomaLabError as exc:
            raise PeerProtocolError(f"{address}{path}: {exc.message}") from exc

    async def _node_evidence(self, address: str) -> tuple[str, Evidence]:
        """A node's Sui address and current key evidence, from its ``GET /v1/attestation``."""
        info = await self._node_json(address, "/v1/attestation")
        if not isinstance(info, dict) or not isinstance(info.get("sui_address"), str):
            raise PeerProtocolError(f"{address}/v1/attestation: not an attestation answer")
        try:
            return info["sui_address"], evidence_from_dict(info.get("evidence"))
        except AtomaLabError as exc:
            raise PeerProtocolError(f"{address}/v1/attestation: {exc.message}") from exc

    async def add_remote_node(self, address: str, *,
                              price_per_one_million_compute_units: int = 1) -> int:
        """Register the node serving at ``address`` (another process or machine) from its own
        answers: identity and key from ``GET /v1/attestation``, models from ``GET /v1/models``.
        Returns its ``node_small_id``; raises if it cannot be reached or answers badly."""
        sui_address, evidence = await self._node_evidence(address)
        listed = await self._node_json(address, "/v1/models")
        data = listed.get("data") if isinstance(listed, dict) else None
        if not isinstance(data, list) or not all(
                isinstance(m, dict) and isinstance(m.get("id"), str) for m in data):
            raise PeerProtocolError(f"{address}/v1/models: not a model list")
        node_small_id = evidence.report.node_small_id
        self.register_node(node_small_id, address=address, sui_address=sui_address,
                           models=[m["id"] for m in data],
                           price_per_one_million_compute_units=price_per_one_million_compute_units)
        if not self.accept_node_key(evidence):
            raise AttestationError(f"{address}: the node's key evidence does not verify against "
                                   "this proxy's attestation policy")
        self.ledger.set_node_health(node_small_id, True)
        return node_small_id

    async def refresh_node(self, node_small_id: int) -> bool:
        """Probe one node; mark it up or down; take its key if newer (evidence permitting).
        Returns whether it is up.

        Up means the node answers with the key the proxy hands out for it: a newer key (by
        ``(boot_epoch, key_rotation_counter)``: a rotation, or a restart whose counter began at
        1 again) is taken first; an older one (a replayed answer) leaves the node down. A node
        that restarted under a new signing identity at the same address, with its own
        ``node_small_id`` and evidence that verifies for that identity, is registered afresh
        (its stacks stay its own); another ``node_small_id`` there is down."""
        node = self.ledger.node(node_small_id)
        if node is None:
            raise NotFoundError(f"node {node_small_id} is not registered")
        why = "it answers with another identity"
        try:
            sui_address, evidence = await self._node_evidence(node.address)
            report = evidence.report
            if report.node_small_id != node_small_id:
                healthy = False
            elif sui_address != node.sui_address:
                healthy = self._adopt_identity(node, sui_address, evidence)
                why = "it answers with a new identity whose evidence does not verify"
            else:
                if report.public_key != node.public_key \
                        and report.key_order > _stored_order(node):
                    self._take_key(node, evidence)
                now_held = self.ledger.node(node_small_id)
                healthy = now_held is not None and now_held.public_key == report.public_key
                why = "it answers with an older key than the one handed out"
        except AtomaLabError as exc:
            healthy, why = False, exc.code
        except TimeoutError:
            healthy, why = False, "timeout"
        node = self.ledger.node(node_small_id) or node
        if healthy != node.healthy:
            self.ledger.set_node_health(node_small_id, healthy)
            if healthy:
                log.info("node %d is back: its probe answered", node_small_id)
            else:
                log.warning("node %d is down: its probe failed (%s)", node_small_id, why)
        return healthy

    def _adopt_identity(self, node: NodeRecord, sui_address: str, evidence: Evidence) -> bool:
        """Register the new signing identity a node at ``node.address`` answers with, and its
        key, if its evidence verifies for it; else leave the node as it was. Whether adopted."""
        if self._verification_failure(evidence, sui_address) is not None:
            return False
        log.info("node %d restarted under a new signing identity at its address; registered "
                 "afresh", node.node_small_id)
        self.ledger.upsert_node(node.node_small_id, address=node.address, sui_address=sui_address,
                                models=node.models,
                                price_per_one_million_compute_units=(
                                    node.price_per_one_million_compute_units))
        fresh = self.ledger.node(node.node_small_id)
        assert fresh is not None
        return self._take_key(fresh, evidence)

    async def check_nodes(self) -> dict[int, bool]:
        """Probe every registered node at once; ``{node_small_id: up}``."""
        ids = [n.node_small_id for n in self.ledger.nodes()]
        return dict(zip(ids, await asyncio.gather(*(self.refresh_node(i) for i in ids)),
                        strict=True))

    async def run_health_checks(self, interval_s: float = HEALTH_INTERVAL_S) -> None:
        """:meth:`check_nodes` every ``interval_s`` seconds until cancelled."""
        while True:
            await self.check_nodes()
            await asyncio.sleep(interval_s)

    def sweep_locks(self) -> int:
        """Give back the units of every open lock that expired (by :attr:`clock`); how many."""
        expired = self.ledger.prune_expired(self.clock())
        if expired:
            log.info("gave back the units of %d expired lock(s)", expired)
        return expired

    async def run_lock_sweeper(self, interval_s: float = LOCK_SWEEP_INTERVAL_S) -> None:
        """:meth:`sweep_locks` every ``interval_s`` seconds until cancelled, so that an expired
        lock's units come back even when nobody takes another lock."""
        if interval_s <= 0:
            raise ValueError("interval_s must be positive")
        while True:
            self.sweep_locks()
            await asyncio.sleep(interval_s)

    def add_user(self, name: str, api_key: str, *, balance_usdc: int = 10**12) -> int:
        user_id = self.ledger.add_user(name, balance_usdc=balance_usdc)
        self.ledger.add_api_token(user_id, api_key)
        return user_id

    # ------------------------------------------------------------------ helpers
    def _auth(self, request: Request) -> int:
        user_id = self.ledger.user_for_token(request.bearer_token())
        if user_id is None:
            raise AuthenticationError("invalid API token")
        return user_id

    def _check_token(self, request: Request) -> None:
        self._auth(request)

    def _check_metrics_token(self, request: Request) -> None:
        check_metrics_token(request, self.metrics_token)

    async def _lock(self, user_id: int, model: str, max_num_tokens: int,
                    timeout_s: float) -> tuple[StackRecord, LockRecord, NodeRecord, bool]:
        """Lock units for one request on the node the policy places it on; the last item says
        whether a stack was bought for it.

        When no node serving ``model`` is up, the ones marked down are probed first (a fault
        may have passed) rather than refusing until the next scheduled health check.
        """
        eligible = self.ledger.nodes_for_model(model, confidential=True)
        if not eligible:
            down = [n.node_small_id for n in self.ledger.nodes()
                    if model in n.models and not n.healthy]
            if down:
                await asyncio.gather(*(self.refresh_node(i) for i in down))
                eligible = self.ledger.nodes_for_model(model, confidential=True)
        now = self.clock()
        if not eligible:
            if model not in self.ledger.models():
                raise ModelNotFoundError(f"no node serves model {quoted(model)}", field="model")
            raise ServiceUnavailableError(
                f"no attested, healthy node serves model {quoted(model)} now")
        # One ledger transaction: the placement and the lock see the same books.
        stack, lock, bought = self.ledger.place_and_lock(
            user_id=user_id, model=model, max_num_tokens=max_num_tokens, timeout_s=timeout_s,
            now=now, owner_address=self.address, size=self.stack_size,
            place=functools.partial(self.node_policy.place, eligible),
            needs_load=self.node_policy.needs_load)
        if bought:
            log.info("user %d bought stack %d on node %d: %d compute units at %d per 1M",
                     user_id, stack.stack_small_id, stack.node_small_id,
                     stack.num_compute_units, stack.price_per_one_million_compute_units)
        node = next(n for n in eligible if n.node_small_id == stack.node_small_id)
        return stack, lock, node, bought

    def _give_back(self, lock: LockRecord, route: str, outcome: str) -> None:
        """A failed request: release all of its lock, charge nothing, count the failure."""
        self.ledger.release(lock.lock_id, route=route, outcome=outcome, now=self.clock())
        self.metrics.count_failure(outcome)
        self.metrics.units_released.inc(lock.max_num_tokens)

    async def _forward(self, node: NodeRecord, path: str, body: bytes, headers: Headers,
                       limit: int) -> Response:
        req = Request("POST", path, headers, body, address=node.address,
                      timeout_s=self.node_timeout_s, max_response_bytes=limit)
        who = f"node {node.node_small_id}"
        try:  # the transport holds the exchange to timeout_s and the answer to limit
            return await self.transport.handle(req)
        except TransportTimeoutError as exc:  # in the proxy's words, as every node failure
            raise TransportTimeoutError(
                f"{who} did not answer within {self.node_timeout_s} s") from exc
        except ResponseTooLargeError as exc:
            raise ResponseTooLargeError(f"{who}'s answer is over the {limit} bytes this request "
                                        "can need; dropped unread") from exc
        except PeerBusyError as exc:
            raise PeerBusyError(f"{who} has too many requests waiting; try again") from exc

    @staticmethod
    def _node_failure(node: NodeRecord, status: int, answer: object) -> AtomaLabError:
        """Turn a node's error answer into ours, in the proxy's own words (a node's text never
        reaches the client). A refusal (4xx) keeps its status and code when the error table has
        them and a node may send them; anything else from a node is its fault: a 5xx is 502
        ``NODE_ERROR``, any other status or code 502 ``BAD_PEER_RESPONSE``."""
        error = answer.get("error") if isinstance(answer, dict) else None
        if not isinstance(error, dict):
            error = {}
        code = error.get("code") if isinstance(error.get("code"), str) else None
        known = known_error(status, code) if code is not None else None
        who = f"node {node.node_small_id}"
        if 400 <= status < 500:
            if known is None or code in PROXY_ONLY_CODES:
                return PeerProtocolError(f"{who} answered {status} with a code the proxy "
                                         "does not pass on")
            assert code is not None
            doc = " ".join((known.__doc__ or "").strip().split("\n\n")[0].split())
            field = ProxyService._node_field(error.get("message"))
            return APIError(f"{who} refused the request"
                            + (f" ({field})" if field is not None else "") + f": {doc}",
                            status=status, code=code, fault="caller")
        if 500 <= status < 600:
            return NodeFailedError(f"{who} failed with {status}"
                                   + (f" ({code})" if known is not None else ""))
        return PeerProtocolError(f"{who} answered with status {status}")

    @staticmethod
    def _node_field(message: object) -> str | None:
        """The field a node's error message starts with (``"input[1]: ..."``), if it is one a
        node may name; the rest of the message is the node's and is dropped."""
        if not isinstance(message, str):
            return None
        name = message.partition(":")[0]
        if name in NODE_FIELD_NAMES or _INPUT_FIELD.fullmatch(name):
            return name
        return None

    # ------------------------------------------------------------------ routes
    async def _nodes_lock(self, request: Request) -> Response:
        user_id = self._auth(request)
        body = NodesCreateLockRequest.from_json(request.body)
        stack, _, node, bought = await self._lock(user_id, body.model,
                                                  body.effective_max_num_tokens,
                                                  body.effective_timeout_s)
        assert node.public_key is not None
        return Response.json(NodesCreateLockResponse(
            public_key=node.public_key, node_small_id=node.node_small_id,
            stack_small_id=stack.stack_small_id,
            # Atoma sends the purchase's transaction digest only when it bought the stack now.
            stack_entry_digest=stack.tx_digest if bought else None,
        ).to_dict())

    async def _confidential_embeddings(self, request: Request) -> Response:
        timing = ServerTiming()
        with timing.stage("proxy_check"):
            user_id = self._auth(request)
            # Either profile; the node decides which it takes (the proxy sees ciphertext only).
            ccr = hardened.parse_request(loads(request.body, what="confidential request"),
                                         accept_atoma=True)
            units = DEFAULT_MAX_NUM_TOKENS if ccr.num_compute_units is None else ccr.num_compute_units
            stack = self.ledger.stack(ccr.stack_small_id)
            node = self.ledger.node(stack.node_small_id)
            lock = self.ledger.consume_lock(stack_small_id=ccr.stack_small_id, user_id=user_id,
                                            num_compute_units=units, now=self.clock())
            if node is None or not node.healthy:  # the request was sealed for it: give back
                log.info("a confidential request for stack %d came for node %d, which is down; "
                         "its lock was given back", stack.stack_small_id, stack.node_small_id)
                self._give_back(lock, "confidential", ServiceUnavailableError.code)
                raise ServiceUnavailableError(f"node of stack {stack.stack_small_id} is down; "
                                              "take a new lock (another node) and seal again")
            verify: Callable[[bytes, NodeRecord], int]
            sealed: Callable[[object, NodeRecord], dict[str, object] | None] | None = None
            if isinstance(ccr, hardened.HardenedRequest):
                digest = ccr.request_hash()
                verify = functools.partial(self._hardened_usage, digest)
                sealed = functools.partial(self._sealed_error, digest)
            else:
                digest, verify = ccr.plaintext_body_hash, self._confidential_usage
            headers = Headers({
                "content-type": "application/json",
                "x-signature": self.signer.sign(digest).to_base64(),
                "x-user-id": str(user_id),
            })
            limit = min(self.max_response_bytes, confidential_response_limit(
                ciphertext_bytes=len(ccr.ciphertext), num_compute_units=units,
                request_bytes=len(request.body), max_dimensions=self.max_dimensions))
        # The ledger's model names the metric (the client's model_name is free text).
        return await self._forward_and_settle(
            "confidential", stack.model, lock, node, "/v1/confidential/embeddings",
            request.body, headers, timing, verify, limit, sealed_error=sealed)

    async def _embeddings(self, request: Request) -> Response:
        timing = ServerTiming()
        with timing.stage("proxy_check"):
            user_id = self._auth(request)
            parsed = loads(request.body, what="embeddings request")
            oai = CreateEmbeddingRequest.from_dict(parsed)
            reserve = estimate_plain_units(oai)
            if reserve > self.stack_size:
                raise InvalidFieldError(
                    f"input: may need {reserve} compute units, more than a stack holds",
                    field="input")
            stack, open_lock, node, _ = await self._lock(user_id, oai.model, reserve,
                                                         PLAIN_LOCK_TIMEOUT_S)
            lock = self.ledger.start_lock(open_lock.lock_id)
            body = serde_compact(parsed)
            body_hash = blake2b_256(body)
            request_id = secrets.token_bytes(PLAIN_REQUEST_ID_SIZE)
            timestamp = int(self.clock())
            bound = plain_request_digest(body_hash, stack_small_id=stack.stack_small_id,
                                         num_compute_units=reserve, request_id=request_id,
                                         timestamp=timestamp)
            headers = Headers({
                "content-type": "application/json",
                "x-signature": self.signer.sign(body_hash).to_base64(),
                "x-user-id": str(user_id),
                "x-stack-small-id": str(stack.stack_small_id),
                "x-num-compute-units": str(reserve),
                # The hardened profile's binding (protocol/hardened/plain.py); Atoma's nodes
                # read only the headers above.
                "x-request-id": request_id.hex(),
                "x-request-timestamp": str(timestamp),
                "x-request-signature": self.signer.sign(bound).to_base64(),
            })
            limit = min(self.max_response_bytes, plain_response_limit(
                oai, request_bytes=len(body), max_dimensions=self.max_dimensions))
        return await self._forward_and_settle("plain", oai.model, lock, node, "/v1/embeddings", body,
                                              headers, timing, self._plain_usage, limit)

    async def _forward_and_settle(self, route: str, model: str, lock: LockRecord, node: NodeRecord,
                                  path: str, body: bytes, headers: Headers, timing: ServerTiming,
                                  verify: Callable[[bytes, NodeRecord], int],
                                  limit: int, *,
                                  sealed_error: Callable[[object, NodeRecord],
                                                         dict[str, object] | None] | None = None,
                                  ) -> Response:
        """Forward to the node, check its answer with ``verify`` (which returns the units it
        used), settle; on any failure release the whole lock and answer the error. The caller's
        lock is in flight on entry and never left so. The node's answer is read up to ``limit``
        bytes (502 past it). ``sealed_error`` finds, in a node's error answer, an error sealed
        to the client (hardened requests), passed on beside the proxy's own."""
        sealed: dict[str, object] | None = None
        try:
            t0 = time.perf_counter_ns()
            resp = await self._forward(node, path, body, headers, limit)
            node_stages = ServerTiming.parse(resp.headers.get("server-timing"))
            timing.add("proxy_forward",
                       (time.perf_counter_ns() - t0) / 1e6 - sum(node_stages.values()))
            if not resp.ok:
                answer = _node_error_answer(resp)  # parsed once for the checks below
                failure = self._node_failure(node, resp.status, answer)
                if sealed_error is not None:
                    sealed = sealed_error(answer, node)
                if failure.code == "STALE_NODE_KEY":  # the node rotated: learn its key now
                    await self.refresh_node(node.node_small_id)
                raise failure
            with timing.stage("proxy_verify"):
                used = verify(resp.body, node)
                if used > lock.max_num_tokens:
                    raise PeerProtocolError("node reports more usage than was locked")
                charged = self.ledger.settle(lock.lock_id, used, route=route, now=self.clock())
        except AtomaLabError as exc:
            if isinstance(exc, TransportError):  # down or hung: no new locks until a probe
                self.ledger.set_node_health(node.node_small_id, False)
                log.warning("node %d is down: a %s request failed on the way (%s); no new "
                            "locks on it until a probe answers", node.node_small_id, route,
                            exc.code)
            else:
                log_node_failure(log, node.node_small_id, route, exc)
            self._give_back(lock, route, exc.code)
            failed = error_response(exc) if sealed is None else Response.json(
                {**exc.to_dict(), "sealed_error": sealed}, status=exc.status)
            failed.headers["server-timing"] = timing.header()
            return failed
        except BaseException:  # cancelled (client went away) or a bug: never keep units locked
            self.ledger.release(lock.lock_id, route=route, outcome="ABORTED", now=self.clock())
            log.info("a %s request to node %d was aborted; its lock %d was given back", route,
                     node.node_small_id, lock.lock_id)
            raise
        log.debug("settled a %s request on stack %d (node %d): %d of %d units charged", route,
                  lock.stack_small_id, node.node_small_id, charged, lock.max_num_tokens)
        counter = (self.metrics.confidential_requests if route == "confidential"
                   else self.metrics.embs_requests)
        counter.labels(model).inc()
        self.metrics.completed.inc()
        self.metrics.units_charged.inc(charged)
        self.metrics.units_released.inc(lock.max_num_tokens - charged)
        out_timing = ServerTiming()
        out_timing.stages_ms = {**timing.stages_ms, **node_stages}
        return Response.json(resp.body, headers={"server-timing": out_timing.header()})

    @staticmethod
    def _confidential_usage(body: bytes, node: NodeRecord) -> int:
        """The confidential answer must be well-formed and signed by the node's registered key;
        the proxy cannot see the plaintext, so it bills the clear ``usage``."""
        try:
            answer = ConfidentialComputeResponse.from_json(body)
        except AtomaLabError as exc:
            raise PeerProtocolError(f"node answer is malformed: {exc.message}") from exc
        if answer.response_hash is None or answer.signature is None or answer.usage is None:
            raise PeerProtocolError("node answer lacks response_hash, signature or usage")
        try:
            verify_sui_signature(answer.signature, answer.response_hash,
                                 expected_address=node.sui_address)
        except SignatureError as exc:
            raise PeerProtocolError("node signature does not verify") from exc
        return answer.usage.total_tokens

    @staticmethod
    def _hardened_usage(request_hash: bytes, body: bytes, node: NodeRecord) -> int:
        """A hardened answer must name the request and carry the node's signature over both
        hashes (checkable without the plaintext); its clear usage is bound for the client."""
        try:
            answer = hardened.parse_response(loads(body, what="node response"))
        except AtomaLabError as exc:
            raise PeerProtocolError(f"node answer is malformed: {exc.message}") from exc
        if answer.request_hash != request_hash or answer.usage is None:
            raise PeerProtocolError("node answer names another request or lacks usage")
        try:
            hardened.verify_receipt(request_hash, answer, expected_signer_address=node.sui_address)
        except SignatureError as exc:
            raise PeerProtocolError("node signature does not verify") from exc
        return answer.usage.total_tokens

    @staticmethod
    def _sealed_error(request_hash: bytes, answer: object,
                      node: NodeRecord) -> dict[str, object] | None:
        """The error a node sealed to a hardened request's client, if its answer holds one that
        names the request, carries no usage, and is signed by the node; else ``None`` (the
        client then gets the proxy's error alone)."""
        if not isinstance(answer, dict) or "sealed_error" not in answer:
            return None
        try:
            sealed = hardened.parse_response(answer["sealed_error"])
            if sealed.request_hash != request_hash or sealed.usage is not None:
                return None
            hardened.verify_receipt(request_hash, sealed, expected_signer_address=node.sui_address)
        except (AtomaLabError, KeyError, TypeError):
            return None
        return sealed.to_dict()

    @staticmethod
    def _plain_usage(body: bytes, node: NodeRecord) -> int:
        """The plain answer's ``response_hash`` must equal BLAKE2b-256 of its serde-compact form
        without ``signature`` and ``response_hash``, signed by the node's registered key."""
        try:
            answer = loads(body, what="node response")
        except AtomaLabError as exc:  # the node's fault, not the caller's (not a 400)
            raise PeerProtocolError(f"node answer is not JSON: {exc.message}") from exc
        if not isinstance(answer, dict):
            raise PeerProtocolError("node answer is not a JSON object")
        signature = answer.pop("signature", None)
        response_hash = answer.pop("response_hash", None)
        if not isinstance(signature, str) or not isinstance(response_hash, str):
            raise PeerProtocolError("node answer lacks signature or response_hash")
        try:
            digest = b64decode(response_hash, field="response_hash", size=32)
            verify_sui_signature(signature, digest, expected_address=node.sui_address)
        except AtomaLabError as exc:
            raise PeerProtocolError("node signature does not verify") from exc
        if blake2b_256(serde_compact(answer)) != digest:
            raise PeerProtocolError("response_hash does not match the response")
        usage = answer.get("usage")
        if not isinstance(usage, dict):
            raise PeerProtocolError("node answer lacks usage")
        try:
            return require_int(usage.get("total_tokens"), field="usage.total_tokens")
        except AtomaLabError as exc:
            raise PeerProtocolError(f"node answer has a bad usage: {exc.message}") from exc

    async def _models(self, request: Request) -> Response:
        # The route's guard checked the token.
        return Response.json({"object": "list", "data": [
            {"id": m, "object": "model", "created": MODELS_CREATED, "owned_by": "atoma"}
            for m in self.ledger.models()]})

    async def _node_attestation(self, request: Request) -> Response:
        """Public: a node's current key, signing address and evidence, for clients to verify."""
        node_small_id = request.query_int("node_small_id")
        node = self.ledger.node(node_small_id)
        if node is None or node.evidence is None:
            raise NotFoundError(f"node {node_small_id} has no published key")
        return Response.json({"node_small_id": node.node_small_id, "sui_address": node.sui_address,
                              "key_rotation_counter": node.key_rotation_counter,
                              "evidence": loads(node.evidence)})

    async def _publish_attestation(self, request: Request) -> Response:
        """A node announces a rotated key: evidence signed by the node's Sui key (X-Signature
        over BLAKE2b-256 of the body)."""
        evidence = evidence_from_json(request.body)
        node = self.ledger.node(evidence.report.node_small_id)
        if node is None:
            raise NotFoundError(f"node {evidence.report.node_small_id} is not registered")
        sig = request.headers.get("x-signature")
        if sig is None:
            raise AuthenticationError("missing X-Signature")
        verify_sui_signature(sig, blake2b_256(request.body), expected_address=node.sui_address,
                             field="X-Signature")
        valid = self.accept_node_key(evidence)
        return Response.json({"node_small_id": node.node_small_id, "valid": valid})

    async def _stack_info(self, request: Request) -> Response:
        """A stack's owner and node, for the node it is assigned to (nodes elsewhere check stacks
        here): ``X-Node-Small-Id`` and ``X-Signature`` over :func:`stack_lookup_digest` by that
        node's registered key. A stack of another node is 404, as an unknown one."""
        stack_small_id = request.query_int("stack_small_id")
        node_header, sig = request.headers.get("x-node-small-id"), request.headers.get("x-signature")
        if node_header is None or sig is None:
            raise AuthenticationError("stack look-ups are for nodes: X-Node-Small-Id and "
                                      "X-Signature required")
        node = self.ledger.node(parse_uint(node_header, field="X-Node-Small-Id"))
        if node is None:
            raise AuthenticationError("X-Node-Small-Id names no registered node")
        verify_sui_signature(sig, stack_lookup_digest(node.node_small_id, stack_small_id),
                             expected_address=node.sui_address, field="X-Signature")
        stack = self.ledger.stack(stack_small_id)  # unknown: 404
        if stack.node_small_id != node.node_small_id:
            raise StackNotFoundError(f"stack {stack_small_id} is not assigned to node "
                                     f"{node.node_small_id}")
        return Response.json({"stack_small_id": stack.stack_small_id,
                              "owner_address": stack.owner_address,
                              "node_small_id": stack.node_small_id})

    async def _health(self, request: Request) -> Response:
        return Response.json({"message": "ok"})

    async def _metrics(self, request: Request) -> Response:
        return metrics_response(self.metrics)

    async def _openapi(self, request: Request) -> Response:
        """The OpenAPI document; the served models appear in it only for a valid token (as
        ``/v1/models`` lists them only to one)."""
        from atoma_lab.services.openapi import openapi_document

        try:
            self._auth(request)
        except AuthenticationError:
            return Response.json(openapi_document())
        return Response.json(openapi_document(models=self.ledger.models()))
