"""``atoma-lab``: serve a local network, embed text through it, or walk through a demo.

    atoma-lab serve [--host 127.0.0.1] [--port 8080] [--nodes N] [--model NAME] [--api-key KEY]
                    [--node-policy least-loaded|atoma|random] [--fake-tokens-per-s T]
                    [--mode ray [--ray-address ADDR] [--num-gpus G]]
                    [--runtime torch|onnx|auto] [--engine-mode exact|fast|int8]
    atoma-lab node --port P --node-id N --proxy URL [--model NAME | --backend URL]
                   [--runtime R] [--device D] [--dtype T] [--engine-mode M] [--batch-tokens N]
                   [--fake-tokens-per-s T]
    atoma-lab proxy --port P --node URL [--node URL ...] [--api-key KEY] [--ledger FILE]
                    [--node-policy least-loaded|atoma|random]
    atoma-lab embed TEXT... [--confidential] [--json] [--base-url URL --api-key KEY]
    atoma-lab demo [TEXT...]
    atoma-lab --version

``serve`` runs a proxy and N nodes in one process (``--mode ray``: each node a Ray actor, on a
local Ray instance or the cluster at --ray-address); ``node`` and ``proxy`` run them as separate
services (other processes or machines). Everything binds loopback unless --allow-public. Every
listener takes the limits --max-header-count, --max-header-bytes, --max-body-bytes,
--header-timeout-s, --body-timeout-s, --idle-timeout-s and --max-connections (defaults in
``atoma_lab.server.limits``); /metrics needs --metrics-token (random and printed when unset).
The services log to standard error at --log-level (INFO by default).

``embed`` talks to $ATOMA_LAB_BASE_URL with $ATOMA_LAB_API_KEY when they are set (what ``serve``
and ``proxy`` print), unless --base-url and --api-key say otherwise; with neither it builds an
in-process network. A node's --backend-api-key defaults to $ATOMA_LAB_BACKEND_API_KEY.

TLS: every listener takes --tls-certfile/--tls-keyfile (and --tls-client-ca-file to require
client certificates); whatever reaches a peer at https:// (the proxy its nodes, a node its
proxy, serve's proxy itself, embed its proxy) takes --tls-ca-file and, for mutual TLS,
--tls-client-certfile/--tls-client-keyfile.

--node-policy chooses how the proxy places requests on nodes: ``atoma`` is Atoma's rule (a user's
traffic stays on one node), ``least-loaded`` (the default) spreads it. With
``--model atoma-lab/fake-embedder``, --fake-tokens-per-s gives each node a device of that capacity.
"""

from __future__ import annotations

import argparse
import functools
import logging
import os
import signal
import sys
import textwrap
import threading
from collections.abc import Callable, Sequence
from typing import Any

from atoma_lab.client import API_KEY_ENV, BASE_URL_ENV, DEFAULT_MODEL

BACKEND_API_KEY_ENV = "ATOMA_LAB_BACKEND_API_KEY"
LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR")
LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


def _setup_env() -> None:
    # Weights come from installed packages or local folders; never reach for a hub at run time.
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def _short(data: bytes | str, n: int = 72) -> str:
    text = data.decode("utf-8", "replace") if isinstance(data, bytes) else data
    return text if len(text) <= n else text[: n - 3] + "..."


def _version() -> str:
    # The package root, imported before any of its modules, holds the one version string (a
    # module below it may not import it by name: the layering test forbids that).
    return str(sys.modules["atoma_lab"].__version__)


def _setup_logging(args: argparse.Namespace) -> None:
    """atoma-lab's log records at ``--log-level``, to standard error unless logging is set up
    already (other libraries keep their own levels)."""
    level = getattr(args, "log_level", None)
    if level is None:
        return
    root = logging.getLogger()
    if not root.handlers:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter(LOG_FORMAT))
        root.addHandler(handler)
    logging.getLogger("atoma_lab").setLevel(level)


def _add_log_level(p: argparse.ArgumentParser) -> None:
    p.add_argument("--log-level", type=str.upper, choices=LOG_LEVELS, default="INFO",
                   help="what the service logs to standard error (default INFO)")


def _engine_options(args: argparse.Namespace) -> dict[str, Any]:
    """The engine's options given on the command line (the engine's defaults otherwise)."""
    from atoma_lab.inference import FAKE_MODEL

    names = (("runtime", "runtime"), ("device", "device"), ("dtype", "dtype"),
             ("mode", "engine_mode"), ("max_batch_tokens", "batch_tokens"),
             ("remeasure", "remeasure"), ("attention", "attention"))
    options = {k: getattr(args, a) for k, a in names if getattr(args, a, None) is not None}
    engine_only = {k: v for k, v in options.items() if k != "max_batch_tokens"}
    if engine_only and getattr(args, "model", None) == FAKE_MODEL:
        raise SystemExit("atoma-lab: --runtime, --device, --dtype, --engine-mode, --remeasure and "
                         f"--attention choose how a real model runs; {FAKE_MODEL} has no weights")
    return options


def _add_engine_options(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("engine (in-process model; not with --backend)")
    g.add_argument("--runtime", choices=["torch", "onnx", "auto"], default=None,
                   help="the engine's runtime (default torch; onnx needs atoma-lab[onnx]; "
                        "auto measures both once on this machine and keeps the faster)")
    g.add_argument("--device", default=None,
                   help="cpu, cuda, cuda:1, ... (default: CUDA when available)")
    g.add_argument("--dtype", choices=["float32", "float16", "bfloat16"], default=None,
                   help="the weights' dtype (default float32)")
    g.add_argument("--engine-mode", choices=["exact", "fast", "int8"], default=None,
                   help="exact (default), fast (the fastest path within cosine 0.999 of exact, "
                        "measured here) or int8 (ONNX, lossy, its quality logged)")
    g.add_argument("--remeasure", action="store_true", default=None,
                   help="measure the paths again (runtime auto, fast mode) instead of taking the "
                        "choice recorded for this model and machine, and record the new one")
    g.add_argument("--attention", choices=["auto", "sdpa", "native"], default=None,
                   help="attention on fast mode's bf16 CPU path: auto (default: the native "
                        "AMX/AVX512-BF16 kernel where it builds, passes its check and measures "
                        "faster, else torch's SDPA), sdpa, or native (the kernel or an error)")
    g.add_argument("--batch-tokens", type=int, default=None,
                   help="token budget of one batch the node's batcher forms (default "
                        "atoma_lab.inference.DEFAULT_MAX_BATCH_TOKENS)")


# The listener limits: the ServerLimits field each flag sets, its type, its default (a name in
# atoma_lab.server.limits) and what happens beyond it. Flags and ServerLimits both come from here.
_LIMIT_FLAGS = (
    ("max_header_count", int, "DEFAULT_MAX_HEADER_COUNT", "headers per request (431 beyond)"),
    ("max_header_bytes", int, "DEFAULT_MAX_HEADER_BYTES",
     "bytes of request target and headers (431 beyond)"),
    ("max_body_bytes", int, "MAX_BODY_BYTES", "bytes of body (413 beyond)"),
    ("header_timeout_s", float, "DEFAULT_HEADER_TIMEOUT_S", "time for a request's headers (408 beyond)"),
    ("body_timeout_s", float, "DEFAULT_BODY_TIMEOUT_S",
     "time for a request's body after its headers (408 beyond)"),
    ("idle_timeout_s", float, "DEFAULT_IDLE_TIMEOUT_S",
     "an idle keep-alive connection is closed after this"),
    ("max_connections", int, "DEFAULT_MAX_CONNECTIONS", "open connections per listener (503 beyond)"),
)


def _limits(args: argparse.Namespace) -> Any:
    from atoma_lab.server.limits import ServerLimits

    try:
        return ServerLimits(**{name: getattr(args, name) for name, *_ in _LIMIT_FLAGS})
    except ValueError as exc:
        raise SystemExit(f"atoma-lab: {exc}") from None


def _add_limit_flags(p: argparse.ArgumentParser) -> None:
    from atoma_lab.server import limits as d

    g = p.add_argument_group("listener limits")
    for name, kind, default, help_text in _LIMIT_FLAGS:
        g.add_argument("--" + name.replace("_", "-"), type=kind, default=getattr(d, default),
                       help=help_text)
    p.add_argument("--metrics-token", default=None,
                   help="bearer token for /metrics (random and printed if unset)")


def _add_tls_flags(p: argparse.ArgumentParser, *, listener: bool = True) -> None:
    g = p.add_argument_group("TLS")
    if listener:
        g.add_argument("--tls-certfile", default=None,
                       help="serve HTTPS with this certificate (PEM, chain included)")
        g.add_argument("--tls-keyfile", default=None, help="its private key (PEM)")
        g.add_argument("--tls-client-ca-file", default=None,
                       help="require client certificates signed by these CAs (mutual TLS)")
    g.add_argument("--tls-ca-file", default=None,
                   help="CAs to trust at https:// peers (default: the system's)")
    g.add_argument("--tls-client-certfile", default=None,
                   help="certificate to show https:// peers that ask for one (PEM)")
    g.add_argument("--tls-client-keyfile", default=None, help="its private key (PEM)")


def _server_tls(args: argparse.Namespace) -> Any:
    from atoma_lab.server.tls import ServerTls

    if args.tls_certfile is None:
        if args.tls_keyfile or args.tls_client_ca_file:
            raise SystemExit("atoma-lab: --tls-keyfile and --tls-client-ca-file need --tls-certfile")
        return None
    try:
        return ServerTls(args.tls_certfile, args.tls_keyfile, args.tls_client_ca_file)
    except ValueError as exc:
        raise SystemExit(f"atoma-lab: {exc}") from None


def _client_tls(args: argparse.Namespace) -> Any:
    import ssl

    from atoma_lab.transport.http import client_tls_context

    if not (args.tls_ca_file or args.tls_client_certfile or args.tls_client_keyfile):
        return None
    try:
        return client_tls_context(args.tls_ca_file, certfile=args.tls_client_certfile,
                                  keyfile=args.tls_client_keyfile)
    except (OSError, ssl.SSLError, ValueError) as exc:
        raise SystemExit(f"atoma-lab: TLS: {exc}") from None


def _fake_capacity(args: argparse.Namespace) -> float | None:
    """--fake-tokens-per-s, refused for anything but the fake engine."""
    from atoma_lab.inference import FAKE_MODEL

    rate: float | None = args.fake_tokens_per_s
    if rate is None:
        return None
    if getattr(args, "backend", None) or args.model != FAKE_MODEL:
        raise SystemExit(f"atoma-lab: --fake-tokens-per-s models a device for --model {FAKE_MODEL}"
                         " only; a real model runs at the speed of its machine")
    if not rate > 0:
        raise SystemExit("atoma-lab: --fake-tokens-per-s must be positive")
    return rate


def _serve_engine(args: argparse.Namespace) -> tuple[float | None, dict[str, Any]]:
    """``serve``'s --fake-tokens-per-s and engine options: one or the other, not both."""
    rate = _fake_capacity(args)
    options = _engine_options(args)
    if options and rate is not None:
        raise SystemExit("atoma-lab: --fake-tokens-per-s builds each node's fake engine; "
                         "--runtime, --device, --dtype, --engine-mode, --remeasure, --attention "
                         "and --batch-tokens are for a real model")
    return rate, options


def _print_env(base_url: str | None, api_key: str, metrics_token: str | None) -> None:
    """What ``embed`` (and a metrics scraper) reads, as shell assignments, flushed."""
    print(f"{BASE_URL_ENV}={base_url}")
    print(f"{API_KEY_ENV}={api_key}")
    print(f"ATOMA_LAB_METRICS_TOKEN={metrics_token}")
    sys.stdout.flush()


def _add_policy_flags(p: argparse.ArgumentParser) -> None:
    from atoma_lab.services.policy import DEFAULT_NODE_POLICY, NODE_POLICIES

    p.add_argument("--node-policy", choices=NODE_POLICIES, default=DEFAULT_NODE_POLICY,
                   help="how the proxy places requests on nodes: atoma is Atoma's rule (cheapest "
                        "existing stack, so one node per user); least-loaded spreads them")
    p.add_argument("--policy-seed", type=int, default=0, help="seed of the random policy")


def _add_interval_flags(p: argparse.ArgumentParser, *, health_help: str | None = None) -> None:
    """The proxy's timers: node health probes and the give-back of expired locks."""
    from atoma_lab.services.proxy import HEALTH_INTERVAL_S, LOCK_SWEEP_INTERVAL_S

    p.add_argument("--health-interval-s", type=float, default=HEALTH_INTERVAL_S, help=health_help)
    p.add_argument("--lock-sweep-interval-s", type=float, default=LOCK_SWEEP_INTERVAL_S,
                   help="give back expired open locks this often")


def _add_capacity_flag(p: argparse.ArgumentParser) -> None:
    p.add_argument("--fake-tokens-per-s", type=float, default=None,
                   help="with --model atoma-lab/fake-embedder: each node processes this many "
                        "tokens a second, like a device (default: as fast as this machine)")


def cmd_serve(args: argparse.Namespace) -> int:
    from atoma_lab.lab.network import build_network, default_embedder

    if args.mode == "ray":
        return _serve_ray(args)
    rate, options = _serve_engine(args)
    embedder = default_embedder(args.model, **options) if options else None
    net = build_network(nodes=args.nodes, mode="http", model=args.model, api_key=args.api_key,
                        embedder=embedder,
                        host=args.host, port=args.port, ledger_path=args.ledger,
                        grace_window_s=args.grace_window_s,
                        health_interval_s=args.health_interval_s or None,
                        server_limits=_limits(args), metrics_token=args.metrics_token,
                        lock_sweep_interval_s=args.lock_sweep_interval_s,
                        tls=_server_tls(args), tls_client=_client_tls(args),
                        node_policy=args.node_policy, policy_seed=args.policy_seed,
                        fake_tokens_per_s=rate)
    net.owns_embedders = True  # built here for this network: closed with it
    capacity = "" if rate is None else f", {rate:g} tokens/s per node"
    print(f"atoma-lab proxy on {net.base_url}  ({len(net.nodes)} node(s), model {args.model}, "
          f"node policy {args.node_policy}{capacity})")
    for node, url in zip(net.nodes, net.node_urls, strict=True):
        print(f"  node {node.node_small_id}: {url}  key counter {node.key_rotation_counter}")
    _print_env(net.base_url, net.api_key, net.metrics_token)
    return _wait_for_stop(net.close)


def _serve_ray(args: argparse.Namespace) -> int:
    """The nodes as Ray actors; the proxy in this process, served over HTTP."""
    from atoma_lab.lab.network import build_network, default_embedder
    from atoma_lab.server.runner import LOOPBACK_HOSTS

    if _client_tls(args) is not None:
        raise SystemExit("atoma-lab: with --mode ray the proxy calls its node actors; "
                         "--tls-ca-file and --tls-client-* are for nodes over HTTPS (--mode http)")
    rate, options = _serve_engine(args)  # the engine is built in each node actor, on its device
    embedder = functools.partial(default_embedder, args.model, **options) if options else None
    net = build_network(nodes=args.nodes, mode="ray", model=args.model, api_key=args.api_key,
                        embedder=embedder, ledger_path=args.ledger, grace_window_s=args.grace_window_s,
                        health_interval_s=args.health_interval_s or None,
                        metrics_token=args.metrics_token,
                        lock_sweep_interval_s=args.lock_sweep_interval_s,
                        node_policy=args.node_policy, policy_seed=args.policy_seed,
                        fake_tokens_per_s=rate,
                        ray_address=args.ray_address, num_gpus=args.num_gpus)
    try:
        url = net.serve_http(args.host, args.port, limits=_limits(args), tls=_server_tls(args),
                             allow_public=args.host not in LOOPBACK_HOSTS)
    except BaseException:
        net.close()
        raise
    capacity = "" if rate is None else f", {rate:g} tokens/s per node"
    print(f"atoma-lab proxy on {url}  ({len(net.nodes)} node actor(s) on Ray, model {args.model}, "
          f"node policy {args.node_policy}{capacity})")
    for node in net.nodes:
        where = node.placement
        gpus = ",".join(where["gpu_ids"]) or "none"
        print(f"  node {node.node_small_id}: ray node {where['ray_node_id']} ({where['hostname']}, "
              f"{where['ip']}), GPUs {gpus}")
    _print_env(url, net.api_key, net.metrics_token)
    return _wait_for_stop(net.close)


def _wait_for_stop(stop_fn: Any) -> int:
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    try:
        stop.wait()
    except KeyboardInterrupt:
        pass
    finally:
        stop_fn()
    return 0


def _seed(text: str | None, what: str) -> bytes | None:
    if text is None:
        return None
    try:
        seed = bytes.fromhex(text)
    except ValueError:
        seed = b""
    if len(seed) != 32:
        raise SystemExit(f"{what} must be 64 hex digits (32 bytes)")
    return seed


def _node_embedder(args: argparse.Namespace) -> Any:
    rate = _fake_capacity(args)  # refused with --backend or a real model before anything loads
    options = _engine_options(args)
    if args.backend:
        if options:
            raise SystemExit("atoma-lab: --device, --dtype, --engine-mode and --batch-tokens "
                             "are for an in-process model, not --backend")
        from atoma_lab.inference.remote import remote_embedder

        api_key = args.backend_api_key or os.environ.get(BACKEND_API_KEY_ENV) or None
        return remote_embedder(args.backend, api=args.backend_api, model=args.model,
                               api_key=api_key)
    from atoma_lab.lab.network import default_embedder

    return default_embedder(args.model, fake_tokens_per_s=rate, **options)


def cmd_node(args: argparse.Namespace) -> int:
    from atoma_lab.server.standalone import NodeServer

    server = NodeServer(node_small_id=args.node_id, embedder=_node_embedder(args),
                        proxy_url=args.proxy, host=args.host, port=args.port,
                        tee_seed=_seed(args.tee_seed, "--tee-seed"),
                        signer_seed=_seed(args.signer_seed, "--signer-seed"),
                        grace_window_s=args.grace_window_s, rotate_every_s=args.rotate_every_s,
                        allow_public=args.allow_public, limits=_limits(args),
                        metrics_token=args.metrics_token, tls=_server_tls(args),
                        peer_tls=_client_tls(args))
    url = server.start()
    node = server.node
    rate = "" if args.fake_tokens_per_s is None else f"; {args.fake_tokens_per_s:g} tokens/s"
    print(f"atoma-lab node {node.node_small_id} on {url}  (models {', '.join(node.embedder.models)}"
          f"{rate}; stacks checked at {args.proxy})")
    print(f"  sui address {node.sui_address}; key counter {node.key_rotation_counter}; "
          f"TEE vendor {node.tee.vendor_address}")
    print(f"ATOMA_LAB_NODE_URL={url}")
    print(f"ATOMA_LAB_METRICS_TOKEN={server.metrics_token}")
    sys.stdout.flush()
    return _wait_for_stop(server.stop)


def cmd_proxy(args: argparse.Namespace) -> int:
    from atoma_lab.server.standalone import ProxyServer, vendor_policy

    server = ProxyServer(node_urls=args.node, host=args.host, port=args.port,
                         api_key=args.api_key, ledger_path=args.ledger,
                         policy=vendor_policy(_seed(args.tee_seed, "--tee-seed"),
                                              vendors=args.trust_vendor or ()),
                         health_interval_s=args.health_interval_s,
                         node_timeout_s=args.node_timeout_s, wait_for_nodes_s=args.wait_for_nodes_s,
                         allow_public=args.allow_public, limits=_limits(args),
                         metrics_token=args.metrics_token,
                         lock_sweep_interval_s=args.lock_sweep_interval_s,
                         tls=_server_tls(args), peer_tls=_client_tls(args),
                         node_max_connections=args.node_max_connections,
                         node_max_queued=args.node_max_queued,
                         node_policy=args.node_policy, policy_seed=args.policy_seed)
    url = server.start()
    print(f"atoma-lab proxy on {url}  ({len(server.node_ids)} node(s), node policy "
          f"{args.node_policy}: "
          f"{', '.join(f'{i}={u}' for i, u in zip(server.node_ids, args.node, strict=True))})")
    _print_env(url, server.api_key, server.metrics_token)
    return _wait_for_stop(server.stop)


def _client(args: argparse.Namespace) -> tuple[Any, Any]:
    from atoma_lab.client import AtomaLabClient
    from atoma_lab.lab.network import build_network

    base_url = args.base_url or os.environ.get(BASE_URL_ENV) or None
    if base_url:
        api_key = args.api_key or os.environ.get(API_KEY_ENV) or None
        if not api_key:
            raise SystemExit(f"atoma-lab: a proxy needs an API key: --api-key or {API_KEY_ENV}")
        return AtomaLabClient(base_url, api_key=api_key, tls=_client_tls(args)), None
    net = build_network(nodes=1, model=args.model)
    return net.client(verify_attestation=True), net


def cmd_embed(args: argparse.Namespace) -> int:
    client, net = _client(args)
    try:
        api = client.confidential_embeddings if args.confidential else client.embeddings
        result = api.create(input=list(args.text), model=args.model,
                            dimensions=args.dimensions)
        if args.json:
            # The OpenAI response (opened, on the confidential route), as a program reads it.
            sys.stdout.write(result.response.to_json().decode("utf-8") + "\n")
            return 0
        vectors = result.to_numpy()
        for text, vec in zip(args.text, vectors, strict=True):
            head = ", ".join(f"{x:+.4f}" for x in vec[:6])
            print(f"{_short(text, 40)!r:44} dim={vec.shape[0]} [{head}, ...]")
        print(f"usage: {result.usage.total_tokens} tokens; {result.trace}")
    finally:
        client.close()
        if net is not None:
            net.close()
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from atoma_lab.lab.network import build_network

    texts = list(args.text) or ["Confidential embeddings keep the text away from the proxy.",
                                "Les empreintes restent chiffrées de bout en bout."]
    print(f"Building an in-process network: 1 proxy, 1 node serving {args.model} ...")
    with build_network(nodes=1, model=args.model) as net:
        node = net.nodes[0]
        client = net.client(verify_attestation=True)
        warm = client.confidential_embeddings.create(input=["warm-up"], model=args.model)
        del warm
        net.transport.captured.clear()  # type: ignore[union-attr]
        result = client.confidential_embeddings.create(input=texts, model=args.model)
        vectors = result.to_numpy()
        req, resp = result.raw["request"], result.raw["response"]
        print("\n== What the client did")
        print(f"  locked stack {result.stack_small_id} on node {result.node_small_id}; node key "
              f"attested (counter {node.key_rotation_counter}, signer {node.sui_address[:18]}...)")
        print(f"  plaintext ({len(result.raw['plaintext'])} bytes): {_short(result.raw['plaintext'])}")
        print(f"  sealed: client_dh_public_key={req['client_dh_public_key']} salt={req['salt']} "
              f"nonce={req['nonce']}")
        print(f"  plaintext_body_hash (BLAKE2b-256) = {req['plaintext_body_hash']}")
        print("\n== What the proxy saw (ciphertext only)")
        to_proxy = [m for m in net.captured if m.address == "inproc://proxy"
                    and m.request.path == "/v1/confidential/embeddings"][-1]
        print(f"  POST /v1/confidential/embeddings  {len(to_proxy.request.body)} bytes: "
              f"{_short(to_proxy.request.body, 96)}")
        leaked = any(t.encode() in m.request.body or (m.response and t.encode() in m.response.body)
                     for m in net.captured if m.address == "inproc://proxy" for t in texts)
        print(f"  any input text in the proxy's traffic: {'YES (bug!)' if leaked else 'no'}")
        print(f"  clear usage billed: {resp['usage']}; ledger: "
              f"{net.ledger.stack(result.stack_small_id or 0).already_computed_units} units used")
        print("\n== What the node saw")
        to_node = [m for m in net.captured if m.address.startswith("inproc://node")][-1]
        print(f"  X-Signature (proxy, Sui Ed25519): {_short(to_node.request.headers['x-signature'], 48)}")
        print(f"  decrypted, hash checked, embedded {len(texts)} input(s) -> "
              f"{vectors.shape[0]} x {vectors.shape[1]} float32")
        print(f"  answered: nonce={resp['nonce']} response_hash={resp['response_hash']}")
        print("\n== Result (opened, response_hash and node signature verified)")
        for text, vec in zip(texts, vectors, strict=True):
            head = ", ".join(f"{x:+.4f}" for x in vec[:5])
            print(f"  {_short(text, 48)!r:52} [{head}, ...]")
        print("\n== Stage timings (ms)")
        for name, ms in result.trace.as_rows():
            print(f"  {name:16} {ms:8.3f}")
        print(f"  {'total':16} {result.trace.total_ms:8.3f}")
    return 0


def _add_server_command(sub: Any, name: str, help_text: str, *,
                        port: int) -> argparse.ArgumentParser:
    """A command that serves HTTP, with ``--host`` and ``--port``; the command's own flags
    follow, then :func:`_add_server_flags`."""
    p: argparse.ArgumentParser = sub.add_parser(name, help=help_text)
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=port)
    return p


def _add_server_flags(p: argparse.ArgumentParser, func: Callable[[argparse.Namespace], int]) -> None:
    """What every serving command ends with: the listener limits, ``--log-level``, TLS, and the
    function that runs it."""
    _add_limit_flags(p)
    _add_log_level(p)
    _add_tls_flags(p)
    p.set_defaults(func=func)


def build_parser() -> argparse.ArgumentParser:
    from atoma_lab.transport.http import DEFAULT_MAX_CONNECTIONS_PER_PEER, DEFAULT_MAX_QUEUED_PER_PEER

    p = argparse.ArgumentParser(prog="atoma-lab", description=textwrap.dedent(__doc__ or ""),
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--version", action="version", version=f"atoma-lab {_version()}")
    sub = p.add_subparsers(dest="command", required=True)
    s = _add_server_command(sub, "serve", "serve a proxy and N nodes over HTTP on loopback",
                            port=8080)
    s.add_argument("--nodes", type=int, default=1)
    s.add_argument("--model", default=DEFAULT_MODEL)
    _add_engine_options(s)
    s.add_argument("--api-key", default=None, help="API key of the default user (random if unset)")
    s.add_argument("--ledger", default=":memory:", help="SQLite file for the ledger")
    s.add_argument("--grace-window-s", type=float, default=0.0)
    _add_interval_flags(s, health_help="probe the nodes this often (0: only when none is up)")
    _add_policy_flags(s)
    _add_capacity_flag(s)
    s.add_argument("--mode", choices=["http", "ray"], default="http",
                   help="http: every node on a loopback port; ray: every node a Ray actor")
    s.add_argument("--ray-address", default=None,
                   help="with --mode ray: join this cluster ('auto', 'ray://host:10001', "
                        "'host:6379'); default: a local Ray instance")
    s.add_argument("--num-gpus", type=float, default=None,
                   help="with --mode ray: GPUs per node (default: one each where the cluster "
                        "has them)")
    _add_server_flags(s, cmd_serve)
    n = _add_server_command(sub, "node", "serve one node on its own (a proxy elsewhere reaches it)",
                            port=8101)
    n.add_argument("--node-id", type=int, default=1, help="its node_small_id (unique per proxy)")
    n.add_argument("--proxy", required=True, help="the proxy's URL (stack ownership checks)")
    n.add_argument("--model", default=DEFAULT_MODEL,
                   help="served model (atoma-lab/fake-embedder: the weightless fake)")
    _add_engine_options(n)
    n.add_argument("--backend", default=None,
                   help="embed on an existing server at this URL instead of in-process")
    n.add_argument("--backend-api", choices=["openai", "tei", "infinity"], default="openai",
                   help="the backend's API; --backend is its API root (e.g. http://host:7997)")
    n.add_argument("--backend-api-key", default=None,
                   help=f"bearer token for --backend (default ${BACKEND_API_KEY_ENV}, which "
                        "keeps it out of the process list)")
    n.add_argument("--grace-window-s", type=float, default=0.0)
    n.add_argument("--rotate-every-s", type=float, default=None, help="rotate the key on a timer")
    n.add_argument("--tee-seed", default=None, help="hex seed of the simulated TEE vendor")
    n.add_argument("--signer-seed", default=None, help="hex seed of the node's Sui key")
    n.add_argument("--allow-public", action="store_true", help="allow binding beyond loopback")
    _add_capacity_flag(n)
    _add_server_flags(n, cmd_node)
    x = _add_server_command(sub, "proxy", "serve a proxy in front of nodes running elsewhere",
                            port=8080)
    x.add_argument("--node", action="append", required=True, help="a node's URL (repeat)")
    x.add_argument("--api-key", default=None, help="API key of the default user (random if unset)")
    x.add_argument("--ledger", default=":memory:", help="SQLite file for the ledger")
    x.add_argument("--tee-seed", default=None, help="hex seed of the simulated TEE vendor")
    x.add_argument("--trust-vendor", action="append", default=None,
                   help="a TEE vendor address to trust (repeat; default: the simulated vendor)")
    _add_interval_flags(x)
    x.add_argument("--node-timeout-s", type=float, default=60.0)
    x.add_argument("--node-max-connections", type=int, default=DEFAULT_MAX_CONNECTIONS_PER_PEER,
                   help="requests in flight to one node at once")
    x.add_argument("--node-max-queued", type=int, default=DEFAULT_MAX_QUEUED_PER_PEER,
                   help="requests waiting for one node (503 at once beyond)")
    x.add_argument("--wait-for-nodes-s", type=float, default=60.0)
    x.add_argument("--allow-public", action="store_true", help="allow binding beyond loopback")
    _add_policy_flags(x)
    _add_server_flags(x, cmd_proxy)
    e = sub.add_parser("embed", help="embed texts (in-process network unless --base-url)")
    e.add_argument("text", nargs="+")
    e.add_argument("--confidential", action="store_true")
    e.add_argument("--model", default=DEFAULT_MODEL)
    e.add_argument("--dimensions", type=int, default=None)
    e.add_argument("--json", action="store_true",
                   help="print the OpenAI response (JSON) instead of a summary")
    e.add_argument("--base-url", default=None, help=f"the proxy (default ${BASE_URL_ENV}; "
                   "unset: an in-process network)")
    e.add_argument("--api-key", default=None, help=f"its API key (default ${API_KEY_ENV})")
    _add_tls_flags(e, listener=False)
    e.set_defaults(func=cmd_embed)
    d = sub.add_parser("demo", help="a confidential round trip, showing what each party saw")
    d.add_argument("text", nargs="*")
    d.add_argument("--model", default=DEFAULT_MODEL)
    d.set_defaults(func=cmd_demo)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    _setup_env()
    args = build_parser().parse_args(argv)
    _setup_logging(args)
    try:
        return int(args.func(args))
    except Exception as exc:
        from atoma_lab.errors import AtomaLabError

        if isinstance(exc, AtomaLabError):
            print(f"atoma-lab: {type(exc).__name__}: {exc}", file=sys.stderr)
            return 1
        raise


if __name__ == "__main__":
    raise SystemExit(main())
