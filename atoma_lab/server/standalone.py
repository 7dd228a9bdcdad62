"""The proxy and its nodes as separate services (other processes, other machines), over HTTP.

    atoma-lab node  --port 8101 --node-id 1 --proxy http://127.0.0.1:8080 [--model M | --backend URL]
    atoma-lab node  --port 8102 --node-id 2 --proxy http://127.0.0.1:8080
    atoma-lab proxy --port 8080 --node http://127.0.0.1:8101 --node http://127.0.0.1:8102

:class:`build_network <atoma_lab.lab.network.build_network>` runs everything in one process; here each
service stands alone, as in Atoma, and the same :class:`~atoma_lab.services.proxy.ProxyService`
and :class:`~atoma_lab.services.node.NodeService` answer. What one process shared, the wire
carries instead:

* the proxy registers each node from the node's own ``GET /v1/attestation`` and
  ``GET /v1/models``, probes them every ``health_interval_s``, routes around nodes that are
  down and takes a rotated key when it sees one (or when a node answers ``STALE_NODE_KEY``);
* a node checks stack ownership with the proxy's ``GET /v1/stacks``, signing each look-up with
  its Sui key (Atoma's node reads the chain);
* the simulated TEE vendor is derived from a seed every process knows: a public development seed
  by default (so a simulation is not secure: anyone can forge its reports), or ``tee_seed``.
  The proxy's policy trusts that vendor's address, and clients check against the same.

Each service's listener holds to its :class:`~atoma_lab.server.limits.ServerLimits`; its
``/metrics`` needs its ``metrics_token`` (random when not given; the CLI prints it).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import ssl
import time
from collections.abc import Sequence
from typing import Any

from atoma_lab.crypto.attestation import DEFAULT_MEASUREMENT, AttestationPolicy, SimulatedTEE
from atoma_lab.crypto.hashing import blake2b_256
from atoma_lab.crypto.signing import SuiSigner
from atoma_lab.errors import NodeFailedError, TransportError
from atoma_lab.server import ServerGroup, asgi_app
from atoma_lab.server.limits import ServerLimits
from atoma_lab.server.tls import ServerTls
from atoma_lab.services.ledger import Ledger
from atoma_lab.services.node import NodeService, ProxyStackDirectory, RequestEmbedder
from atoma_lab.services.policy import DEFAULT_NODE_POLICY, NodePolicy
from atoma_lab.services.policy import node_policy as node_policy_named
from atoma_lab.services.proxy import HEALTH_INTERVAL_S, LOCK_SWEEP_INTERVAL_S, ProxyService
from atoma_lab.transport.http import (
    DEFAULT_MAX_CONNECTIONS_PER_PEER,
    DEFAULT_MAX_QUEUED_PER_PEER,
    HttpTransport,
)

log = logging.getLogger("atoma_lab.server")

#: The simulated TEE vendor's seed when none is given: public, for development only.
DEV_TEE_SEED = blake2b_256(b"atoma-lab simulated TEE vendor: development only, not a secret")


def simulated_tee(seed: bytes | None = None) -> SimulatedTEE:
    """The simulated TEE whose vendor key comes from ``seed`` (default :data:`DEV_TEE_SEED`)."""
    return SimulatedTEE(SuiSigner.from_ed25519_seed(seed or DEV_TEE_SEED))


def vendor_policy(seed: bytes | None = None, *, vendors: Sequence[str] = (),
                  max_age_s: float | None = None) -> AttestationPolicy:
    """A policy trusting the simulated vendor of ``seed`` (or the given vendor addresses)."""
    trusted = list(vendors) or [simulated_tee(seed).vendor_address]
    return AttestationPolicy.trusting(trusted, measurements=[DEFAULT_MEASUREMENT],
                                      max_age_s=max_age_s)


def _metrics_token(token: str | None) -> str:
    return token or "atl-metrics-" + secrets.token_urlsafe(24)


class _Service:
    """One ASGI app served on its own port from a background thread."""

    def __init__(self, service: Any, host: str, port: int, allow_public: bool,
                 limits: ServerLimits | None, tls: ServerTls | None = None) -> None:
        app = asgi_app(service.handle, precheck=service.check_head, limits=limits)
        self._group = ServerGroup([(app, host, port)], allow_public=allow_public, limits=limits,
                                  tls=tls)
        self.limits = self._group.limits
        self.url: str | None = None

    def _start(self) -> str:
        self.url = self._group.start()[0]
        return self.url

    def run(self, coro: Any, timeout_s: float | None = None) -> Any:
        return self._group.run(coro, timeout_s)

    def _stop(self, aclose: Any = None) -> None:
        self._group.cancel_background()
        if aclose is not None and self._group.loop is not None:
            with contextlib.suppress(Exception):  # best effort while shutting down
                self._group.run(aclose(), 5)
        self._group.stop()


class NodeServer(_Service):
    """A node on ``host:port`` that checks stacks at ``proxy_url``.

    ``rotate_every_s`` rotates its key on a timer (the proxy picks the new one up);
    ``signer_seed`` fixes its Sui identity (default: a fresh one per start), which also signs
    its stack look-ups at the proxy. ``tls`` makes it listen on HTTPS; ``peer_tls`` is the
    context for reaching an ``https://`` proxy (its CA, and a client certificate for mutual
    TLS).
    """

    def __init__(self, *, node_small_id: int, embedder: RequestEmbedder, proxy_url: str,
                 host: str = "127.0.0.1", port: int = 0, tee_seed: bytes | None = None,
                 signer_seed: bytes | None = None, grace_window_s: float = 0.0,
                 rotate_every_s: float | None = None, allow_public: bool = False,
                 limits: ServerLimits | None = None, metrics_token: str | None = None,
                 tls: ServerTls | None = None, peer_tls: ssl.SSLContext | None = None) -> None:
        if rotate_every_s is not None and rotate_every_s <= 0:
            raise ValueError("rotate_every_s must be positive")
        self.transport = HttpTransport(timeout_s=10.0, tls=peer_tls)
        directory = ProxyStackDirectory(self.transport, proxy_url, node_small_id)
        self.metrics_token = _metrics_token(metrics_token)
        self.node = NodeService(
            node_small_id=node_small_id, embedder=embedder, stack_owner=directory,
            signer=SuiSigner.from_ed25519_seed(signer_seed) if signer_seed else None,
            tee=simulated_tee(tee_seed), grace_window_s=grace_window_s,
            metrics_token=self.metrics_token)
        directory.signer = self.node.signer
        self.rotate_every_s = rotate_every_s
        super().__init__(self.node, host, port, allow_public, limits, tls)

    def start(self) -> str:
        url = self._start()
        log.info("node %d serving %s on %s (key counter %d%s)", self.node.node_small_id,
                 ", ".join(self.node.embedder.models), url, self.node.key_rotation_counter,
                 "" if self.rotate_every_s is None else f"; rotating every {self.rotate_every_s:g} s")
        if self.rotate_every_s is not None:
            self._group.spawn(self._rotate_forever(self.rotate_every_s))
        return url

    async def _rotate_forever(self, every_s: float) -> None:
        while True:
            await asyncio.sleep(every_s)
            self.node.rotate_key()

    def stop(self) -> None:
        log.info("node %d stopping", self.node.node_small_id)
        self._stop(self.transport.aclose)


class ProxyServer(_Service):
    """A proxy on ``host:port`` in front of the nodes at ``node_urls``.

    :meth:`start` waits up to ``wait_for_nodes_s`` for every node to answer and registers it,
    then probes them every ``health_interval_s``, and gives back expired open locks every
    ``lock_sweep_interval_s``. The ledger (a SQLite file, or memory) keeps the proxy's wallet,
    users, stacks and nodes across restarts. ``tls`` makes it listen on HTTPS; ``peer_tls`` is
    the context for reaching ``https://`` nodes. Each node gets at most ``node_max_connections``
    requests at once and ``node_max_queued`` more waiting; beyond that a request is 503 at once.
    ``node_policy`` (and ``policy_seed``) place
    requests on nodes (:mod:`atoma_lab.services.policy`; default least-loaded).
    """

    def __init__(self, *, node_urls: Sequence[str], host: str = "127.0.0.1", port: int = 0,
                 api_key: str | None = None, ledger_path: str = ":memory:",
                 policy: AttestationPolicy | None = None,
                 health_interval_s: float = HEALTH_INTERVAL_S,
                 node_timeout_s: float = 60.0, wait_for_nodes_s: float = 60.0,
                 user_balance_usdc: int = 10**12, allow_public: bool = False,
                 limits: ServerLimits | None = None, metrics_token: str | None = None,
                 lock_sweep_interval_s: float = LOCK_SWEEP_INTERVAL_S,
                 tls: ServerTls | None = None, peer_tls: ssl.SSLContext | None = None,
                 node_max_connections: int = DEFAULT_MAX_CONNECTIONS_PER_PEER,
                 node_max_queued: int = DEFAULT_MAX_QUEUED_PER_PEER,
                 node_policy: str | NodePolicy = DEFAULT_NODE_POLICY,
                 policy_seed: int | None = 0) -> None:
        if not node_urls:
            raise ValueError("a proxy needs at least one node URL")
        if lock_sweep_interval_s <= 0:
            raise ValueError("lock_sweep_interval_s must be positive")
        placement = node_policy_named(node_policy, seed=policy_seed)  # a bad name fails first
        self.lock_sweep_interval_s = lock_sweep_interval_s
        self.metrics_token = _metrics_token(metrics_token)
        self.node_urls = list(node_urls)
        self.ledger = Ledger(ledger_path)
        self.transport = HttpTransport(timeout_s=node_timeout_s, tls=peer_tls,
                                       max_connections_per_peer=node_max_connections,
                                       max_queued_per_peer=node_max_queued)
        self.proxy = ProxyService(
            ledger=self.ledger, transport=self.transport,
            signer=SuiSigner.from_ed25519_seed(self.ledger.proxy_signing_seed()),
            attestation_policy=policy if policy is not None else vendor_policy(),
            node_timeout_s=node_timeout_s, metrics_token=self.metrics_token,
            node_policy=placement)
        self.health_interval_s = health_interval_s
        self.wait_for_nodes_s = wait_for_nodes_s
        user_id = self.ledger.user_id("default")
        self.api_key = api_key or "atl-" + secrets.token_urlsafe(24)
        if user_id is None:
            self.proxy.add_user("default", self.api_key, balance_usdc=user_balance_usdc)
        else:
            self.ledger.add_api_token(user_id, self.api_key)
        self.node_ids: list[int] = []
        super().__init__(self.proxy, host, port, allow_public, limits, tls)

    async def _register(self, url: str) -> int:
        deadline = time.monotonic() + self.wait_for_nodes_s
        waited = False
        while True:
            try:
                return await self.proxy.add_remote_node(url)
            except (TransportError, NodeFailedError) as exc:  # not up yet: wait for it
                if time.monotonic() >= deadline:
                    log.error("node %s did not answer within %g s (%s)", url,
                              self.wait_for_nodes_s, exc.code)
                    raise RuntimeError(f"node {url} did not register within "
                                       f"{self.wait_for_nodes_s} s: {exc.message}") from exc
                if not waited:
                    log.info("waiting for node %s (%s)", url, exc.code)
                    waited = True
                await asyncio.sleep(0.2)

    def start(self) -> str:
        url = self._start()
        try:
            self.node_ids = [self.run(self._register(u)) for u in self.node_urls]
        except BaseException:
            self.stop()
            raise
        if self.health_interval_s > 0:
            self._group.spawn(self.proxy.run_health_checks(self.health_interval_s))
        self._group.spawn(self.proxy.run_lock_sweeper(self.lock_sweep_interval_s))
        log.info("proxy serving on %s with %d node(s); health checks every %g s", url,
                 len(self.node_ids), self.health_interval_s)
        return url

    def stop(self) -> None:
        log.info("proxy stopping")
        self._stop(self.transport.aclose)
        self.ledger.close()


__all__ = [
    "DEV_TEE_SEED",
    "NodeServer",
    "ProxyServer",
    "simulated_tee",
    "vendor_policy",
]
