"""The nodes of a network as Ray actors: ``build_network(mode="ray")``.

Each node is a :class:`NodeActor`: its own X25519 and Sui keys, its own attestation by the
network's (simulated) TEE vendor, its own engine, placed by Ray's scheduler (spread over the
cluster's machines, a GPU each where the cluster has them). The proxy stays in the driver beside
its ledger, so that ``net.ledger``, ``net.proxy``, clients, capture and fault injection work as
in-process; it reaches the nodes over the transport seam with
:class:`~atoma_lab.transport.ray.RayTransport` (one actor call per message), registered in the
network's :class:`~atoma_lab.transport.inprocess.InProcessTransport` so that faults and capture
apply to Ray nodes as to in-process ones. A node looks up stack owners as a node in its own
process does (a signed ``GET /v1/stacks`` at the proxy), through the driver's
:class:`~atoma_lab.transport.ray.Relay`.

Ray is optional (``pip install 'atoma-lab[ray]'``): only this module and
:mod:`atoma_lab.transport.ray` import it, and only when used.
"""

from __future__ import annotations

import contextlib
import functools
import os
import secrets
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from atoma_lab.crypto.attestation import AttestationEvidence, SimulatedTEE, evidence_from_json
from atoma_lab.crypto.signing import SuiSigner
from atoma_lab.errors import AtomaLabError
from atoma_lab.services.node import PROFILES, NodeService, ProxyStackDirectory
from atoma_lab.transport.base import error_response
from atoma_lab.transport.ray import (
    Message,
    RelayTransport,
    Reply,
    request_from_message,
    response_to_reply,
)

ACTOR_ADDRESS = "actor://node-{}"  # how the proxy names a node actor
NODE_START_TIMEOUT_S = 300.0  # seconds for every node actor to start (a model loads in each)
_LOOPBACK = ("127.0.0.1", "localhost")
#: CPUs a node actor reserves: a token share, so that a 2-core machine holds many nodes, yet not
#: zero: Ray's SPREAD strategy placed actors reserving nothing unevenly (3:1 over two raylets,
#: where 0.01 CPU alternated 2:2 in the same run).
NODE_ACTOR_CPUS = 0.01
STACK_LOOKUP_TIMEOUT_S = 10.0  # a node's stack look-up at the proxy, through the relay


def ensure_ray(address: str | None = None) -> bool:
    """Connect to Ray unless this process already is: ``address=None`` starts a local instance
    that advertises loopback (no dashboard), or joins the cluster that ``RAY_ADDRESS`` names
    (Ray's own variable), or one ``ray start`` left running on this machine; ``"auto"``,
    ``"host:port"`` or ``"ray://host:port"`` joins an existing cluster (on this machine, over
    loopback). Returns whether this call connected. Call ``ray.init`` yourself first for other
    options (a ``runtime_env`` that installs atoma-lab on a cluster, resources, ...)."""
    import ray

    if ray.is_initialized():
        return False
    if address is None:
        address = os.environ.get("RAY_ADDRESS") or None
    if address is None:
        ray.init(include_dashboard=False, _node_ip_address="127.0.0.1")
    elif address.split("://")[-1].rsplit(":", 1)[0] in _LOOPBACK:
        ray.init(address=address, _node_ip_address="127.0.0.1")  # a cluster on this machine
    else:
        ray.init(address=address)
    return True


def gpus_per_node(nodes: int, num_gpus: float | None) -> float:
    """GPUs each node actor asks for: ``num_gpus`` when given; else one each when the cluster
    has a GPU per node, a fair share when it has fewer, none when it has none."""
    if num_gpus is not None:
        if num_gpus < 0:
            raise ValueError("num_gpus must be >= 0")
        return float(num_gpus)
    import ray

    total = float(ray.cluster_resources().get("GPU", 0.0))
    if total >= nodes:
        return 1.0
    return total / nodes if total > 0 else 0.0


class NodeActor:
    """One node inside a Ray actor (made with ``ray.remote(NodeActor)``).

    ``embedder`` is an embedder (a copy of it arrives by pickle) or a callable without arguments
    that returns one, called here, where the node runs (so a model loads on the actor's machine
    and GPU). Every method is ``async``: they run on the actor's event loop, one at a time
    between awaits, as the node's services expect.
    """

    def __init__(self, *, node_small_id: int, embedder: Any, tee_seed: bytes, relay: Any,
                 proxy_address: str, grace_window_s: float = 0.0,
                 profiles: Sequence[str] = PROFILES, replay_protection: bool = True,
                 metrics_token: str | None = None) -> None:
        if not hasattr(embedder, "embed") and callable(embedder):
            embedder = embedder()
        self.transport = RelayTransport(relay, timeout_s=STACK_LOOKUP_TIMEOUT_S)
        directory = ProxyStackDirectory(self.transport, proxy_address, node_small_id,
                                        timeout_s=STACK_LOOKUP_TIMEOUT_S)
        self.node = NodeService(
            node_small_id=node_small_id, embedder=embedder, stack_owner=directory,
            tee=SimulatedTEE(SuiSigner.from_ed25519_seed(tee_seed)),
            grace_window_s=grace_window_s, profiles=profiles,
            replay_protection=replay_protection, metrics_token=metrics_token)
        directory.signer = self.node.signer
        self._server: Any = None

    async def handle(self, message: Message) -> Reply:
        try:
            request = request_from_message(message)
        except AtomaLabError as exc:  # a malformed message: its JSON 4xx
            return response_to_reply(error_response(exc))
        return response_to_reply(await self.node.handle(request))

    async def info(self) -> dict[str, Any]:
        """Identity, models and where Ray placed this node (no key material but public keys)."""
        import socket

        import ray

        ctx = ray.get_runtime_context()
        return {"node_small_id": self.node.node_small_id, "sui_address": self.node.sui_address,
                "models": list(self.node.models), "profiles": list(self.node.profiles),
                "replay_protection": self.node.replay_protection,
                # the fake engine's modelled device capacity (None: a real engine, or no model)
                "tokens_per_s": getattr(getattr(self.node.embedder, "engine", None),
                                        "tokens_per_s", None),
                "ray_node_id": ctx.get_node_id(), "hostname": socket.gethostname(),
                "ip": ray.util.get_node_ip_address(), "pid": os.getpid(),
                "gpu_ids": [str(g) for g in ray.get_gpu_ids()]}

    async def key(self) -> tuple[bytes, int]:
        return self.node.public_key, self.node.key_rotation_counter

    async def evidence(self) -> bytes:
        return self.node.evidence.to_json()

    async def rotate_key(self, rotation_nonce: int | None = None) -> bytes:
        return self.node.rotate_key(rotation_nonce).to_json()

    async def announcement(self) -> tuple[bytes, str]:
        """The current key's evidence and the node's signature over it, for the proxy's
        ``POST /v1/nodes/attestation``."""
        return self.node.announcement()

    async def serve_http(self, host: str = "127.0.0.1") -> str:
        """Also serve this node over HTTP on ``host`` (a free port); returns its URL. For
        measuring HTTP between actors against actor calls (``benchmarks/test_ray.py``)."""
        import asyncio

        from atoma_lab.server import ServerGroup, asgi_app
        from atoma_lab.transport.inprocess import InProcessTransport
        from atoma_lab.transport.loop import LoopTransport

        if self._server is None:
            # The listener runs on a thread of its own; each request hops onto this actor's
            # loop, where actor calls run, so that the node is served on one loop either way.
            inner = InProcessTransport(capture=False)
            inner.register("node", self.node.handle)
            line = LoopTransport(inner, asyncio.get_running_loop(), address="node")
            app = asgi_app(line.handle, precheck=self.node.check_head)
            self._server = ServerGroup([(app, host, 0)],
                                       allow_public=host not in ("127.0.0.1", "localhost", "::1"))
            self._server.start()
        return str(self._server.urls[0])


class RayNode:
    """The driver's handle on one :class:`NodeActor`, with the attributes a network's nodes
    have (``node_small_id``, ``sui_address``, ``public_key``, ``key_rotation_counter``,
    ``evidence``, ``rotate_key``) plus ``placement`` and :meth:`kill`. Keys are read from the
    actor on each access (the actor may rotate)."""

    def __init__(self, actor: Any, info: Mapping[str, Any], *, timeout_s: float = 60.0) -> None:
        self.actor = actor
        self.node_small_id = int(info["node_small_id"])
        self.sui_address = str(info["sui_address"])
        self.models = tuple(info["models"])
        self.profiles = tuple(info["profiles"])
        self.replay_protection = bool(info["replay_protection"])
        self.placement = dict(info)
        self.address = ACTOR_ADDRESS.format(self.node_small_id)
        self.timeout_s = timeout_s
        self.killed = False

    def _get(self, ref: Any) -> Any:
        import ray

        return ray.get(ref, timeout=self.timeout_s)

    @property
    def public_key(self) -> bytes:
        return bytes(self._get(self.actor.key.remote())[0])

    @property
    def key_rotation_counter(self) -> int:
        return int(self._get(self.actor.key.remote())[1])

    @property
    def evidence(self) -> AttestationEvidence:
        return evidence_from_json(self._get(self.actor.evidence.remote()))  # type: ignore[return-value]

    def rotate_key(self, rotation_nonce: int | None = None) -> AttestationEvidence:
        return evidence_from_json(  # type: ignore[return-value]
            self._get(self.actor.rotate_key.remote(rotation_nonce)))

    def announcement(self) -> tuple[bytes, str]:
        body, signature = self._get(self.actor.announcement.remote())
        return bytes(body), str(signature)

    @property
    def ray_node_id(self) -> str:
        """The Ray node (machine, or raylet) this node runs on."""
        return str(self.placement["ray_node_id"])

    def kill(self) -> None:
        """Kill the actor (no restart): the node is down, as a crashed machine is."""
        import ray

        self.killed = True
        ray.kill(self.actor, no_restart=True)

    def __repr__(self) -> str:
        state = "killed" if self.killed else f"on {self.placement.get('hostname')}"
        return f"RayNode(node_small_id={self.node_small_id}, {state})"


def start_nodes(count: int, *, embedders: Sequence[Any], tee_seed: bytes, relay: Any,
                proxy_address: str, num_gpus: float | None = None,
                actor_options: Mapping[str, Any] | None = None,
                start_timeout_s: float = NODE_START_TIMEOUT_S,
                **node_options: Any) -> list[RayNode]:
    """Start ``count`` node actors (ids 1..count) and wait until each answers.

    Each asks for :func:`gpus_per_node` GPUs and a token share of a CPU
    (:data:`NODE_ACTOR_CPUS`), spread over the cluster's machines;
    ``actor_options`` (``num_cpus``, ``resources``, ``scheduling_strategy``, ``runtime_env``,
    ...) override that. A node that cannot start in ``start_timeout_s`` (no machine has the
    resources, the model fails to load) stops them all and raises :class:`RuntimeError`.
    """
    import ray

    options = {"num_cpus": NODE_ACTOR_CPUS, "num_gpus": gpus_per_node(count, num_gpus),
               "scheduling_strategy": "SPREAD", "max_restarts": 0,
               **(actor_options or {})}
    remote: Any = ray.remote(NodeActor).options(**options)
    actors: list[Any] = []
    try:
        for i in range(count):
            actors.append(remote.remote(node_small_id=i + 1, embedder=embedders[i],
                                        tee_seed=tee_seed, relay=relay,
                                        proxy_address=proxy_address, **node_options))
    except TypeError as exc:  # Ray could not pickle an argument: the embedder, in practice
        stop_actors(actors)
        raise TypeError("mode='ray' copies the embedder into each node actor and this one does "
                        "not pickle: pass a callable that builds it (called in the actor), or "
                        "None to load the model there") from exc
    try:
        infos = ray.get([a.info.remote() for a in actors], timeout=start_timeout_s)
    except BaseException as exc:
        stop_actors(actors)
        if isinstance(exc, ray.exceptions.GetTimeoutError):
            raise RuntimeError(
                f"{count} node actor(s) did not start within {start_timeout_s} s: does the cluster "
                f"have the resources asked for ({options.get('num_gpus')} GPU each)?") from exc
        if isinstance(exc, ray.exceptions.RayError):
            raise RuntimeError(f"a node actor failed to start: {exc}") from exc
        raise
    return [RayNode(actor, info) for actor, info in zip(actors, infos, strict=True)]


def node_embedders(nodes: int, model: str, embedder: Any, *,
                   fake_tokens_per_s: float | None = None) -> list[Any]:
    """What each node actor builds its embedder from: for ``None``, the default embedder of
    ``model`` (loaded in the actor; the fake engine with ``fake_tokens_per_s`` of capacity);
    one embedder or factory for all; or one per node."""
    if embedder is None:
        from atoma_lab.lab.network import default_embedder

        return [functools.partial(default_embedder, model,
                                  fake_tokens_per_s=fake_tokens_per_s)] * nodes
    if isinstance(embedder, Sequence) and not isinstance(embedder, str | bytes):
        items = list(embedder)
        if len(items) != nodes:
            raise ValueError("give one embedder, or one per node")
        return items
    return [embedder] * nodes


def ray_vendor() -> tuple[bytes, SimulatedTEE]:
    """A fresh simulated TEE vendor: its seed (sent to the node actors, which attest with it)
    and the TEE. The seed is a secret of this simulation: whoever holds it can forge reports."""
    seed = secrets.token_bytes(32)
    return seed, SimulatedTEE(SuiSigner.from_ed25519_seed(seed))


def stop_actors(actors: Sequence[Any]) -> None:
    """Kill actors, best effort (a network closing)."""
    import ray

    if not ray.is_initialized():
        return
    for actor in actors:
        with contextlib.suppress(Exception):
            ray.kill(actor, no_restart=True)


def start_proxy_relay(runner: Any, transport: Any, address: str) -> Any:
    """A relay actor through which actors reach ``address`` on ``transport``, served from
    ``runner``'s event loop (a :class:`~atoma_lab.transport.loop.LoopThread`) until it stops;
    :func:`stop_actors` kills the relay."""
    from atoma_lab.transport.ray import serve_relay, start_relay

    relay = start_relay()
    runner.spawn(serve_relay(relay, transport, address))
    return relay


def require_real_clock(clock: Callable[[], float]) -> None:
    if clock is not time.time:
        raise ValueError("mode='ray': node actors keep their own clock (time.time); a test "
                         "clock applies only to in-process and HTTP networks")


__all__ = [
    "ACTOR_ADDRESS",
    "NodeActor",
    "RayNode",
    "ensure_ray",
    "gpus_per_node",
    "node_embedders",
    "ray_vendor",
    "start_nodes",
    "start_proxy_relay",
    "stop_actors",
]
