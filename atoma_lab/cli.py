"""``atoma-lab``: serve a local network, embed text through it, or walk through a demo.

    atoma-lab serve [--host 127.0.0.1] [--port 8080] [--nodes N] [--model NAME] [--api-key KEY]
    atoma-lab embed TEXT... [--confidential] [--base-url URL --api-key KEY]
    atoma-lab demo [TEXT...]
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


def cmd_serve(args: argparse.Namespace) -> int:
    from atoma_lab.sim import build_network

    net = build_network(nodes=args.nodes, mode="http", model=args.model, api_key=args.api_key,
                        host=args.host, port=args.port, ledger_path=args.ledger,
                        grace_window_s=args.grace_window_s)
    print(f"atoma-lab proxy on {net.base_url}  ({len(net.nodes)} node(s), model {args.model})")
    for node, url in zip(net.nodes, net.node_urls, strict=True):
        print(f"  node {node.node_small_id}: {url}  key counter {node.key_rotation_counter}")
    print(f"ATOMA_LAB_BASE_URL={net.base_url}")
    print(f"ATOMA_LAB_API_KEY={net.api_key}")
    sys.stdout.flush()
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    try:
        stop.wait()
    except KeyboardInterrupt:
        pass
    finally:
        net.close()
    return 0


def _client(args: argparse.Namespace) -> tuple[Any, Any]:
    from atoma_lab.client import AtomaLabClient
    from atoma_lab.sim import build_network

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
    from atoma_lab.sim import build_network

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
    s.add_argument("--api-key", default=None, help="API key of the default user (random if unset)")
    s.add_argument("--ledger", default=":memory:", help="SQLite file for the ledger")
    s.add_argument("--grace-window-s", type=float, default=0.0)
    s.set_defaults(func=cmd_serve)
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
