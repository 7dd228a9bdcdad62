"""One-call builders for a whole local Atoma network: a proxy, N nodes, a user with an API key,
and a client; in-process (notebooks, tests), as real HTTP servers on loopback ports, or with
each node a Ray actor (:mod:`atoma_lab.lab.ray_network`; on a laptop or a cluster).

>>> net = build_network(nodes=2)                  # in-process, the shipped model
>>> client = net.client()
>>> r = client.confidential_embeddings.create(input=["hello"])
>>> r = await net.async_client().confidential_embeddings.create(input=["hello"])  # in a cell
>>> net.close()

An in-process network's services live on an event loop of their own (a daemon thread), so that
synchronous code, a notebook whose loop is already running, and any ``asyncio`` program can all
reach them: clients get a :class:`~atoma_lab.transport.loop.LoopTransport` onto that loop.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import secrets
import ssl
import time
from collections.abc import Callable, Coroutine, Mapping, Sequence
from typing import TYPE_CHECKING, Any, Literal

from atoma_lab.client import DEFAULT_MODEL, AsyncAtomaLabClient, AtomaLabClient
from atoma_lab.crypto.attestation import AttestationEvidence, AttestationPolicy, SimulatedTEE
from atoma_lab.crypto.signing import SuiSigner
from atoma_lab.display.html import fingerprint, kv_table, section, table
from atoma_lab.services.ledger import STACK_SIZE_TO_BUY, Ledger
from atoma_lab.services.node import PROFILES, NodeService, RequestEmbedder
from atoma_lab.services.policy import DEFAULT_NODE_POLICY, NodePolicy
from atoma_lab.services.policy import node_policy as node_policy_named
from atoma_lab.services.proxy import LOCK_SWEEP_INTERVAL_S, ProxyService
from atoma_lab.transport.base import Headers, Request, Response, Transport
from atoma_lab.transport.inprocess import Captured, InProcessTransport
from atoma_lab.transport.loop import LoopThread, LoopTransport

if TYPE_CHECKING:
    from atoma_lab.server.limits import ServerLimits
    from atoma_lab.server.tls import ServerTls

Mode = Literal["inprocess", "http", "ray"]
PROXY_ADDRESS = "inproc://proxy"


def default_embedder(model: str = DEFAULT_MODEL, *, fake_tokens_per_s: float | None = None,
                     **engine_options: Any) -> RequestEmbedder:
    """The in-process transformers engine for ``model`` behind its dynamic batcher; for
    :data:`~atoma_lab.inference.FAKE_MODEL`, the deterministic fake engine (no weights), with
    a device's capacity of ``fake_tokens_per_s`` tokens a second when given (a real model has
    the capacity of the machine it runs on: asking it for another is a ``ValueError``)."""
    from atoma_lab.inference import FAKE_MODEL, FakeEngine, NodeEmbedder, node_embedder

    if model == FAKE_MODEL:
        return NodeEmbedder(FakeEngine(tokens_per_s=fake_tokens_per_s, **engine_options))
    check_fake_capacity(model, fake_tokens_per_s)
    return node_embedder(model, **engine_options)


def check_fake_capacity(model: str, fake_tokens_per_s: float | None) -> None:
    """``ValueError`` unless ``fake_tokens_per_s`` is unset, or set for the fake engine."""
    from atoma_lab.inference import FAKE_MODEL

    if fake_tokens_per_s is not None and model != FAKE_MODEL:
        raise ValueError(f"fake_tokens_per_s models a device for {FAKE_MODEL} only; {model!r} "
                         "runs at the speed of the machine it is on")

#: An embedder, or a callable without arguments that builds one.
EmbedderSpec = RequestEmbedder | Callable[[], RequestEmbedder]


def _is_factory(obj: object) -> bool:
    return callable(obj) and not hasattr(obj, "embed")


def _built(spec: EmbedderSpec) -> RequestEmbedder:
    return spec() if _is_factory(spec) else spec  # type: ignore[operator,return-value]


class Network:
    """A running local network. Use :func:`build_network` to make one."""

    def __init__(self, *, mode: Mode, ledger: Ledger, proxy: ProxyService, nodes: Sequence[Any],
                 api_key: str, user_id: int, tee: SimulatedTEE,
                 transport: InProcessTransport | None, runner: Any, base_url: str | None,
                 node_urls: list[str], metrics_token: str | None = None) -> None:
        self.mode = mode
        self.ledger = ledger
        self.proxy = proxy
        # NodeService objects; in Ray mode RayNode handles on the actors (the same key surface)
        self.nodes: list[Any] = list(nodes)
        self.api_key = api_key
        self.user_id = user_id
        self.tee = tee
        self.transport = transport
        self._runner = runner
        self.base_url = base_url
        self.node_urls = node_urls
        self.metrics_token = metrics_token  # /metrics of the proxy and of every node
        self.owns_embedders = False
        self.tls_client: ssl.SSLContext | None = None  # how clients reach an https:// proxy
        self.relay: Any = None  # Ray mode: the actor through which actors reach the proxy
        self.http_url: str | None = None  # where serve_http serves the proxy
        self._cleanups: list[Callable[[], None]] = []  # run by close(), last first
        self._closed = False

    def start_lock_sweeper(self, interval_s: float) -> None:
        """Have the proxy give back expired open locks every ``interval_s`` seconds (by its
        clock) until :meth:`close`."""
        self._runner.spawn(self.proxy.run_lock_sweeper(interval_s))

    def start_health_checks(self, interval_s: float) -> None:
        """Have the proxy probe every node each ``interval_s`` seconds (marking them up or down
        and taking rotated keys) until :meth:`close`."""
        self._runner.spawn(self.proxy.run_health_checks(interval_s))

    # ------------------------------------------------------------------ driving
    def run(self, coro: Coroutine[Any, Any, Any], timeout_s: float | None = None) -> Any:
        """Run a coroutine on the network's event loop and wait for it."""
        return self._runner.run(coro, timeout_s)

    @property
    def proxy_address(self) -> str:
        """Where clients reach the proxy: ``inproc://proxy`` in-process, else its base URL."""
        if self.transport is not None:
            return PROXY_ADDRESS
        assert self.base_url is not None
        return self.base_url

    def client_transport(self) -> Transport:
        """A new line to the proxy for a client built by hand (requests without an address go
        to the proxy). In-process it crosses onto the network's event loop, and the proxy's
        traffic is captured as always; over HTTP it is an HTTP transport to the proxy."""
        if self.transport is not None:
            return LoopTransport(self.transport, self._runner.loop, address=PROXY_ADDRESS)
        from atoma_lab.transport.http import HttpTransport

        return HttpTransport(self.base_url, tls=self.tls_client)

    def _client_options(self, options: dict[str, Any]) -> dict[str, Any]:
        options.setdefault("api_key", self.api_key)
        options.setdefault("clock", self.proxy.clock)
        options.setdefault("attestation_policy", self.attestation_policy())
        options.setdefault("base_url", self.base_url)
        if options.get("transport") is None:
            options["transport"] = self.client_transport()
        return options

    def client(self, **options: Any) -> AtomaLabClient:
        """A client for this network's user (options go to :class:`AtomaLabClient`, e.g.
        ``transport=InterceptTransport(net.client_transport(), ...)``); it keeps the network's
        clock (hardened timestamps, attestation freshness) and trusts its TEE vendor."""
        return AtomaLabClient(**self._client_options(options))

    def async_client(self, **options: Any) -> AsyncAtomaLabClient:
        """:meth:`client` for ``asyncio`` code and notebook cells (``await`` its calls)."""
        return AsyncAtomaLabClient(**self._client_options(options))

    def send(self, request: Request) -> Response:
        """One raw request to the proxy, as a client would send it (a crafted or replayed body);
        in-process, it is captured like every other message."""
        request = dataclasses.replace(request, address=self.proxy_address)
        return self.run(self.proxy.transport.handle(request))

    def attestation_policy(self, *, max_age_s: float | None = None) -> AttestationPolicy:
        """A policy trusting this network's simulated TEE vendor."""
        return AttestationPolicy.trusting([self.tee.vendor_address], measurements=[self.tee.measurement],
                                          max_age_s=max_age_s)

    def add_user(self, name: str, *, balance_usdc: int = 10**12) -> str:
        """Another user; returns its new API key."""
        key = "atl-" + secrets.token_urlsafe(24)
        self.proxy.add_user(name, key, balance_usdc=balance_usdc)
        return key

    def rotate(self, index: int = 0, *, publish: bool = True) -> AttestationEvidence:
        """Rotate node ``index``'s key; by default announce it to the proxy (signed, over the
        transport), which then stops handing out the old key."""
        node = self.nodes[index]
        evidence = node.rotate_key()
        if publish:
            self.publish_key(index)
        return evidence

    def publish_key(self, index: int) -> None:
        node = self.nodes[index]
        body, signature = node.announcement()  # a Ray node's actor signs its own
        headers = Headers({"content-type": "application/json", "x-signature": signature})
        resp = self.send(Request("POST", "/v1/nodes/attestation", headers, body))
        if not resp.ok:
            raise RuntimeError(f"proxy refused node {node.node_small_id}'s key: {resp.body!r}")

    @property
    def captured(self) -> Captured:
        """Every message the proxy and the nodes saw (in-process and Ray modes; empty over
        HTTP): a list with ``to_frame(secrets=...)`` and a table in a notebook."""
        return Captured() if self.transport is None else self.transport.captured

    def serve_http(self, host: str = "127.0.0.1", port: int = 0, *,
                   limits: ServerLimits | None = None, allow_public: bool = False,
                   tls: ServerTls | None = None) -> str:
        """Serve this network's proxy over HTTP on ``host:port`` (0: a free port) for the
        official SDKs and other processes, until :meth:`close`; returns its URL. Requests
        cross onto the network's event loop, where the proxy lives (in-process and Ray modes;
        an HTTP network serves already). Binding beyond loopback needs ``allow_public``;
        ``tls`` serves HTTPS."""
        if self.transport is None:
            raise ValueError("an HTTP network already serves its proxy at base_url")
        if self.http_url is not None:
            raise ValueError(f"already serving at {self.http_url}")
        from atoma_lab.server import ServerGroup, asgi_app

        line = self.client_transport()
        app = asgi_app(line.handle, precheck=self.proxy.check_head, limits=limits)
        group = ServerGroup([(app, host, port)], allow_public=allow_public, limits=limits,
                            tls=tls)
        self.http_url = group.start()[0]
        self._cleanups.append(group.stop)
        return self.http_url

    def actor_relay(self) -> Any:
        """The relay through which Ray actors reach this network's proxy: a Ray network's own,
        or for an in-process network one started now (served from the network's event loop
        until :meth:`close`)."""
        if self.relay is None:
            if self.transport is None:
                raise ValueError("an HTTP network is reached at its base_url, not through a relay")
            from atoma_lab.lab import ray_network

            self.relay = ray_network.start_proxy_relay(self._runner, self.transport,
                                                       PROXY_ADDRESS)
            self._cleanups.append(functools.partial(ray_network.stop_actors, [self.relay]))
        return self.relay

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._runner.cancel_background()  # before the proxy's connections close
        with contextlib.suppress(Exception):  # best effort while shutting down
            self.run(self.proxy.transport.aclose(), timeout_s=5)  # its pooled connections
        while self._cleanups:  # listeners before the loop they hop onto
            with contextlib.suppress(Exception):  # best effort while shutting down
                self._cleanups.pop()()
        self._runner.stop()
        if self.owns_embedders:  # embedders passed in belong to the caller
            closed: set[int] = set()
            for node in self.nodes:
                close = getattr(node.embedder, "close", None)
                if close is not None and id(node.embedder) not in closed:
                    closed.add(id(node.embedder))
                    close()
        self.ledger.close()

    def __enter__(self) -> Network:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        where = self.base_url or ("ray" if self.mode == "ray" else "in-process")
        models = sorted({m for node in self.nodes for m in node.models})
        return f"Network({where}, nodes={len(self.nodes)}, models={models})"

    def _repr_html_(self) -> str:
        """The network as the proxy sees it: its nodes (keys by fingerprint, health, models,
        prices, profiles) and this network's user (balance and stacks); no key material."""
        if self._closed:
            return section(repr(self), kv_table({"state": "closed"}))
        ledger = self.ledger
        services = {n.node_small_id: n for n in self.nodes}
        proxy = kv_table({
            "mode": self.mode, "proxy": self.proxy_address, "proxy Sui address": self.proxy.address,
            "node policy": self.proxy.node_policy.name, "models": ledger.models(),
            "attestation required": self.proxy.attestation_policy is not None,
            "messages captured": len(self.captured) if self.transport is not None else None})
        nodes = []
        for rec in ledger.nodes():
            node = services.get(rec.node_small_id)
            nodes.append({
                "node": rec.node_small_id, "address": rec.address, "models": rec.models,
                "price / 1M units": rec.price_per_one_million_compute_units,
                "key (fingerprint)": None if rec.public_key is None else fingerprint(rec.public_key),
                "key counter": rec.key_rotation_counter, "attested": rec.attestation_valid,
                "healthy": rec.healthy, "profiles": None if node is None else node.profiles,
                "replay protection": None if node is None else node.replay_protection})
        mine = ledger.stacks(self.user_id)
        stacks: list[dict[str, object]] = [
            {"stack": st.stack_small_id, "model": st.model, "node": st.node_small_id,
             "units": st.num_compute_units, "used": st.already_computed_units,
             "locked": st.locked_compute_units, "free": st.free_units,
             "price / 1M units": st.price_per_one_million_compute_units}
            for st in mine]
        user = kv_table({"user id": self.user_id, "balance (USDC units)": ledger.balance(self.user_id),
                         "stacks": len(mine),
                         "units used": sum(st.already_computed_units for st in mine),
                         "units locked": sum(st.locked_compute_units for st in mine)})
        return section(repr(self), proxy, section("Nodes", table(nodes)),
                       section("Your user", user, table(stacks) if stacks else ""))


def build_network(
    *,
    nodes: int = 1,
    mode: Mode = "inprocess",
    model: str = DEFAULT_MODEL,
    embedder: EmbedderSpec | Sequence[EmbedderSpec] | None = None,
    api_key: str | None = None,
    ledger_path: str = ":memory:",
    grace_window_s: float = 0.0,
    host: str = "127.0.0.1",
    port: int = 0,
    prices: Sequence[int] | None = None,
    node_timeout_s: float = 60.0,
    stack_size: int = STACK_SIZE_TO_BUY,
    user_balance_usdc: int = 10**12,
    require_attestation: bool = True,
    clock: Callable[[], float] = time.time,
    proxy_signer: SuiSigner | None = None,
    health_interval_s: float | None = None,
    profiles: Sequence[str] = PROFILES,
    replay_protection: bool = True,
    server_limits: ServerLimits | None = None,
    metrics_token: str | None = None,
    lock_sweep_interval_s: float | None = LOCK_SWEEP_INTERVAL_S,
    tls: ServerTls | None = None,
    tls_client: ssl.SSLContext | None = None,
    node_policy: str | NodePolicy = DEFAULT_NODE_POLICY,
    policy_seed: int | None = 0,
    fake_tokens_per_s: float | None = None,
    ray_address: str | None = None,
    num_gpus: float | None = None,
    ray_actor_options: Mapping[str, Any] | None = None,
) -> Network:
    """Build and start a proxy with ``nodes`` nodes serving ``model`` and one user.

    ``embedder`` is one embedder shared by all nodes, one per node, or ``None`` for the shipped
    transformers model; a callable without arguments that returns one stands for what it
    returns (the network then owns it, and in Ray mode each actor calls it where it runs).
    ``mode="http"`` serves the proxy on ``host:port`` (0: any free port) and
    each node on its own loopback port. ``ledger_path`` keeps the ledger in a SQLite file.
    ``profiles`` are the envelope profiles the nodes take (``"atoma"`` and
    ``"atoma-lab/hardened-v1"``; clients choose theirs); ``replay_protection=False`` makes the
    nodes serve replayed Atoma-profile requests, as Atoma's do.
    ``health_interval_s`` has the proxy probe its nodes on a timer (by default it probes only
    when no node of a model is up); a node it cannot reach is out of rotation at once either way.
    ``server_limits`` bound every HTTP listener (default :class:`~atoma_lab.server.ServerLimits`).
    ``metrics_token`` opens ``/metrics`` of the proxy and the nodes (random when not given:
    :attr:`Network.metrics_token`). ``lock_sweep_interval_s`` is how often expired open locks
    are given back (``None``: only at the next lock call, as before). ``tls`` serves every
    listener over HTTPS (``mode="http"``); ``tls_client`` is how the proxy reaches its nodes and
    clients the proxy (the CA that signed the certificate, and a client certificate when
    ``tls`` requires one: :func:`~atoma_lab.transport.http.client_tls_context`).
    ``node_policy`` places requests on nodes (:mod:`atoma_lab.services.policy`: ``"atoma"``,
    Atoma's rule; ``"random"``, seeded by ``policy_seed``; ``"least-loaded"``, the default).
    ``fake_tokens_per_s`` gives each node of :data:`~atoma_lab.inference.FAKE_MODEL` a device of
    that many tokens a second (see :class:`~atoma_lab.inference.FakeEngine`).
    For the fake model every node has an engine and batcher of its own (its own device); a
    transformers model is loaded once and shared (the nodes share this machine's cores anyway).

    ``mode="ray"`` runs each node as a Ray actor (:mod:`atoma_lab.lab.ray_network`): its own
    keys, attestation and engine, placed by Ray's scheduler; the proxy stays in this process.
    ``ray_address`` ``None`` starts a local Ray instance (unless this process is connected
    already), ``"auto"`` or ``"ray://host:port"`` joins a cluster. Each node asks for
    ``num_gpus`` GPUs (default: one each where the cluster has them); ``ray_actor_options`` go to
    the node actors (``num_cpus``, ``resources``, ``runtime_env``, ...). There, an ``embedder``
    is copied into each actor (it must pickle) and a callable is called in each; ``None`` loads
    ``model`` in each actor, on its device. The network's proxy is reachable over HTTP with
    :meth:`Network.serve_http`.
    """
    if nodes < 1:
        raise ValueError("a network needs at least one node")
    check_fake_capacity(model, fake_tokens_per_s)
    proxy_policy = node_policy_named(node_policy, seed=policy_seed)  # a bad name fails first
    from atoma_lab.inference import FAKE_MODEL

    if fake_tokens_per_s is not None and embedder is not None:
        raise ValueError("fake_tokens_per_s builds the nodes' fake engines; it cannot apply to "
                         "embedders passed in")
    embedders: list[Any]
    if mode == "ray":
        from atoma_lab.lab import ray_network

        ray_network.require_real_clock(clock)
        embedders = ray_network.node_embedders(nodes, model, embedder,
                                               fake_tokens_per_s=fake_tokens_per_s)
    elif embedder is None and model == FAKE_MODEL:
        embedders = [default_embedder(model, fake_tokens_per_s=fake_tokens_per_s)
                     for _ in range(nodes)]
    elif embedder is None:
        embedders = [default_embedder(model)] * nodes
    elif isinstance(embedder, Sequence):
        embedders = [_built(e) for e in embedder]
        if len(embedders) != nodes:
            raise ValueError("give one embedder, or one per node")
    else:
        embedders = [_built(embedder)] * nodes
    tee_seed = b""
    if mode == "ray":
        tee_seed, tee = ray_network.ray_vendor()
    else:
        tee = SimulatedTEE()
    ledger = Ledger(ledger_path)
    policy = AttestationPolicy.trusting([tee.vendor_address]) if require_attestation else None
    transport: InProcessTransport | None = None
    node_transport: Transport
    if mode in ("inprocess", "ray"):
        node_transport = transport = InProcessTransport()
    elif mode == "http":
        from atoma_lab.transport.http import HttpTransport

        node_transport = HttpTransport(timeout_s=node_timeout_s, tls=tls_client)
    else:
        raise ValueError(f"mode must be 'inprocess', 'http' or 'ray', not {mode!r}")
    if proxy_signer is None:  # the wallet lives with the ledger: a restart keeps its stacks
        proxy_signer = SuiSigner.from_ed25519_seed(ledger.proxy_signing_seed())
    if metrics_token is None:
        metrics_token = "atl-metrics-" + secrets.token_urlsafe(24)
    proxy = ProxyService(ledger=ledger, transport=node_transport, signer=proxy_signer,
                         attestation_policy=policy, clock=clock, node_timeout_s=node_timeout_s,
                         stack_size=stack_size, metrics_token=metrics_token,
                         node_policy=proxy_policy)
    node_services: list[Any] = []
    if mode != "ray":
        node_services = [
            NodeService(node_small_id=i + 1, embedder=embedders[i], stack_owner=ledger.stack_owner,
                        tee=tee, grace_window_s=grace_window_s, clock=clock, profiles=profiles,
                        replay_protection=replay_protection, metrics_token=metrics_token)
            for i in range(nodes)
        ]
    prices = list(prices) if prices is not None else [1] * nodes
    runner: Any
    node_urls: list[str] = []
    base_url: str | None = None
    relay: Any = None
    if mode == "ray":
        assert transport is not None
        from atoma_lab.transport.ray import RayTransport

        ray_network.ensure_ray(ray_address)
        runner = LoopThread("atoma-lab-ray")
        transport.register(PROXY_ADDRESS, proxy.handle)
        try:
            relay = ray_network.start_proxy_relay(runner, transport, PROXY_ADDRESS)
            node_services = ray_network.start_nodes(
                nodes, embedders=embedders, tee_seed=tee_seed, relay=relay,
                proxy_address=PROXY_ADDRESS, num_gpus=num_gpus, actor_options=ray_actor_options,
                grace_window_s=grace_window_s, profiles=tuple(profiles),
                replay_protection=replay_protection, metrics_token=metrics_token)
        except BaseException:
            runner.stop()
            if relay is not None:
                ray_network.stop_actors([relay])
            ledger.close()
            raise
        actors = RayTransport(timeout_s=node_timeout_s)
        for node in node_services:
            actors.register(node.address, node.actor)
            transport.register(node.address, actors.handler_for(node.address))
            node_urls.append(node.address)
    elif mode == "inprocess":
        assert transport is not None
        runner = LoopThread("atoma-lab-sim")
        transport.register(PROXY_ADDRESS, proxy.handle)
        for node in node_services:
            address = f"inproc://node-{node.node_small_id}"
            transport.register(address, node.handle)
            node_urls.append(address)
    else:
        from atoma_lab.server import ServerGroup, asgi_app

        limits = server_limits
        apps = [(asgi_app(proxy.handle, precheck=proxy.check_head, limits=limits), host, port)]
        apps += [(asgi_app(n.handle, precheck=n.check_head, limits=limits), "127.0.0.1", 0)
                 for n in node_services]
        runner = ServerGroup(apps, allow_public=host not in ("127.0.0.1", "localhost", "::1"),
                             limits=limits, tls=tls)
        urls = runner.start()
        base_url, node_urls = urls[0], urls[1:]
    for node, url, price in zip(node_services, node_urls, prices, strict=True):
        proxy.register_node(node.node_small_id, address=url, sui_address=node.sui_address,
                            models=list(node.models),
                            price_per_one_million_compute_units=price)
    user_id = ledger.user_id("default")
    if api_key is None:
        api_key = "atl-" + secrets.token_urlsafe(24)
    if user_id is None:
        user_id = proxy.add_user("default", api_key, balance_usdc=user_balance_usdc)
    else:
        ledger.add_api_token(user_id, api_key)
    net = Network(mode=mode, ledger=ledger, proxy=proxy, nodes=node_services, api_key=api_key,
                  user_id=user_id, tee=tee, transport=transport, runner=runner, base_url=base_url,
                  node_urls=node_urls, metrics_token=metrics_token)
    net.tls_client = tls_client
    net.owns_embedders = mode != "ray" and (embedder is None or _is_factory(embedder) or (
        isinstance(embedder, Sequence) and all(_is_factory(e) for e in embedder)))
    if mode == "ray":
        net.relay = relay
        net._cleanups.append(functools.partial(ray_network.stop_actors,
                                               [relay, *(n.actor for n in node_services)]))
    try:
        for i in range(nodes):
            net.publish_key(i)
    except BaseException:
        net.close()
        raise
    if health_interval_s is not None:
        net.start_health_checks(health_interval_s)
    if lock_sweep_interval_s is not None:
        net.start_lock_sweeper(lock_sweep_interval_s)
    return net
