"""``atoma-lab``: serve a local network, embed text through it, or walk through a demo.

    atoma-lab serve [--host 127.0.0.1] [--port 8080] [--nodes N] [--model NAME] [--api-key KEY]
                    [--runtime torch|onnx|auto] [--engine-mode exact|fast|int8]
    atoma-lab node --port P --node-id N --proxy URL [--model NAME [--runtime R] | --backend URL]
    atoma-lab proxy --port P --node URL [--node URL ...] [--api-key KEY] [--ledger FILE]
    atoma-lab embed TEXT... [--confidential] [--base-url URL --api-key KEY]
    atoma-lab demo [TEXT...]

``serve`` runs a proxy and N nodes in one process; ``node`` and ``proxy`` run them as separate
services (other processes or machines). Everything binds loopback unless --allow-public.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import textwrap
import threading
from collections.abc import Sequence
from typing import Any

from atoma_lab.client import DEFAULT_MODEL


def _setup_env() -> None:
    # Weights come from installed packages or local folders; never reach for a hub at run time.
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def _short(data: bytes | str, n: int = 72) -> str:
    text = data.decode("utf-8", "replace") if isinstance(data, bytes) else data
    return text if len(text) <= n else text[: n - 3] + "..."


def _engine_options(args: argparse.Namespace) -> dict[str, Any]:
    """The engine's runtime and mode when given on the command line (else its defaults)."""
    from atoma_lab.inference import FAKE_MODEL

    options = {k: v for k, v in (("runtime", args.runtime), ("mode", args.engine_mode))
               if v is not None}
    if options and args.model == FAKE_MODEL:
        raise SystemExit("--runtime and --engine-mode choose how a real model runs; "
                         f"{FAKE_MODEL} has no weights")
    return options


def cmd_serve(args: argparse.Namespace) -> int:
    from atoma_lab.lab.network import build_network, default_embedder

    options = _engine_options(args)
    embedder = default_embedder(args.model, **options) if options else None
    net = build_network(nodes=args.nodes, mode="http", model=args.model, api_key=args.api_key,
                        host=args.host, port=args.port, ledger_path=args.ledger,
                        grace_window_s=args.grace_window_s,
                        health_interval_s=args.health_interval_s or None, embedder=embedder)
    net.owns_embedders = True
    print(f"atoma-lab proxy on {net.base_url}  ({len(net.nodes)} node(s), model {args.model})")
    for node, url in zip(net.nodes, net.node_urls, strict=True):
        print(f"  node {node.node_small_id}: {url}  key counter {node.key_rotation_counter}")
    print(f"ATOMA_LAB_BASE_URL={net.base_url}")
    print(f"ATOMA_LAB_API_KEY={net.api_key}")
    sys.stdout.flush()
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
    if args.backend:
        from atoma_lab.inference.remote import remote_embedder

        return remote_embedder(args.backend, api=args.backend_api, model=args.model)
    from atoma_lab.lab.network import default_embedder

    return default_embedder(args.model, **_engine_options(args))


def cmd_node(args: argparse.Namespace) -> int:
    from atoma_lab.server.standalone import NodeServer

    server = NodeServer(node_small_id=args.node_id, embedder=_node_embedder(args),
                        proxy_url=args.proxy, host=args.host, port=args.port,
                        tee_seed=_seed(args.tee_seed, "--tee-seed"),
                        signer_seed=_seed(args.signer_seed, "--signer-seed"),
                        grace_window_s=args.grace_window_s, rotate_every_s=args.rotate_every_s,
                        allow_public=args.allow_public)
    url = server.start()
    node = server.node
    print(f"atoma-lab node {node.node_small_id} on {url}  (models {', '.join(node.embedder.models)};"
          f" stacks checked at {args.proxy})")
    print(f"  sui address {node.sui_address}; key counter {node.key_rotation_counter}; "
          f"TEE vendor {node.tee.vendor_address}")
    print(f"ATOMA_LAB_NODE_URL={url}")
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
                         allow_public=args.allow_public)
    url = server.start()
    print(f"atoma-lab proxy on {url}  ({len(server.node_ids)} node(s): "
          f"{', '.join(f'{i}={u}' for i, u in zip(server.node_ids, args.node, strict=True))})")
    print(f"ATOMA_LAB_BASE_URL={url}")
    print(f"ATOMA_LAB_API_KEY={server.api_key}")
    sys.stdout.flush()
    return _wait_for_stop(server.stop)


def _client(args: argparse.Namespace) -> tuple[Any, Any]:
    from atoma_lab.client import AtomaLabClient
    from atoma_lab.lab.network import build_network

    if args.base_url:
        if not args.api_key:
            raise SystemExit("--api-key is required with --base-url")
        return AtomaLabClient(args.base_url, api_key=args.api_key), None
    net = build_network(nodes=1, model=args.model)
    return net.client(verify_attestation=True), net


def cmd_embed(args: argparse.Namespace) -> int:
    client, net = _client(args)
    try:
        api = client.confidential_embeddings if args.confidential else client.embeddings
        result = api.create(input=list(args.text), model=args.model,
                            dimensions=args.dimensions)
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


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="atoma-lab", description=textwrap.dedent(__doc__ or ""),
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="command", required=True)
    s = sub.add_parser("serve", help="serve a proxy and N nodes over HTTP on loopback")
    s.add_argument("--host", default="127.0.0.1")
    s.add_argument("--port", type=int, default=8080)
    s.add_argument("--nodes", type=int, default=1)
    s.add_argument("--model", default=DEFAULT_MODEL)
    _add_engine_options(s)
    s.add_argument("--api-key", default=None, help="API key of the default user (random if unset)")
    s.add_argument("--ledger", default=":memory:", help="SQLite file for the ledger")
    s.add_argument("--grace-window-s", type=float, default=0.0)
    s.add_argument("--health-interval-s", type=float, default=5.0,
                   help="probe the nodes this often (0: only when none is up)")
    s.set_defaults(func=cmd_serve)
    n = sub.add_parser("node", help="serve one node on its own (a proxy elsewhere reaches it)")
    n.add_argument("--host", default="127.0.0.1")
    n.add_argument("--port", type=int, default=8101)
    n.add_argument("--node-id", type=int, default=1, help="its node_small_id (unique per proxy)")
    n.add_argument("--proxy", required=True, help="the proxy's URL (stack ownership checks)")
    n.add_argument("--model", default=DEFAULT_MODEL,
                   help="served model (atoma-lab/fake-embedder: the weightless fake)")
    _add_engine_options(n)
    n.add_argument("--backend", default=None,
                   help="embed on an existing server at this URL instead of in-process")
    n.add_argument("--backend-api", choices=["openai", "tei", "infinity"], default="openai",
                   help="the backend's API; --backend is its API root (e.g. http://host:7997)")
    n.add_argument("--grace-window-s", type=float, default=0.0)
    n.add_argument("--rotate-every-s", type=float, default=None, help="rotate the key on a timer")
    n.add_argument("--tee-seed", default=None, help="hex seed of the simulated TEE vendor")
    n.add_argument("--signer-seed", default=None, help="hex seed of the node's Sui key")
    n.add_argument("--allow-public", action="store_true", help="allow binding beyond loopback")
    n.set_defaults(func=cmd_node)
    x = sub.add_parser("proxy", help="serve a proxy in front of nodes running elsewhere")
    x.add_argument("--host", default="127.0.0.1")
    x.add_argument("--port", type=int, default=8080)
    x.add_argument("--node", action="append", required=True, help="a node's URL (repeat)")
    x.add_argument("--api-key", default=None, help="API key of the default user (random if unset)")
    x.add_argument("--ledger", default=":memory:", help="SQLite file for the ledger")
    x.add_argument("--tee-seed", default=None, help="hex seed of the simulated TEE vendor")
    x.add_argument("--trust-vendor", action="append", default=None,
                   help="a TEE vendor address to trust (repeat; default: the simulated vendor)")
    x.add_argument("--health-interval-s", type=float, default=5.0)
    x.add_argument("--node-timeout-s", type=float, default=60.0)
    x.add_argument("--wait-for-nodes-s", type=float, default=60.0)
    x.add_argument("--allow-public", action="store_true", help="allow binding beyond loopback")
    x.set_defaults(func=cmd_proxy)
    e = sub.add_parser("embed", help="embed texts (in-process network unless --base-url)")
    e.add_argument("text", nargs="+")
    e.add_argument("--confidential", action="store_true")
    e.add_argument("--model", default=DEFAULT_MODEL)
    e.add_argument("--dimensions", type=int, default=None)
    e.add_argument("--base-url", default=None)
    e.add_argument("--api-key", default=None)
    e.set_defaults(func=cmd_embed)
    d = sub.add_parser("demo", help="a confidential round trip, showing what each party saw")
    d.add_argument("text", nargs="*")
    d.add_argument("--model", default=DEFAULT_MODEL)
    d.set_defaults(func=cmd_demo)
    return p


def _add_engine_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--runtime", choices=["torch", "onnx", "auto"], default=None,
                        help="the engine's runtime (default torch; onnx needs atoma-lab[onnx]; "
                             "auto measures both once on this machine and keeps the faster)")
    parser.add_argument("--engine-mode", choices=["exact", "fast", "int8"], default=None,
                        help="exact (default), fast (the fastest path within cosine 0.999 of "
                             "exact, measured here) or int8 (ONNX, lossy, its quality logged)")


def main(argv: Sequence[str] | None = None) -> int:
    _setup_env()
    args = build_parser().parse_args(argv)
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
