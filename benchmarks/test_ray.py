"""How the proxy should reach node actors: a Ray actor call against HTTP to the same actor
(group ``ray-transport``), with the fake engine so that the transport is what is measured.

Two one-node Ray networks side by side: in one the proxy calls the node actor
(:class:`~atoma_lab.transport.ray.RayTransport`, what ``mode="ray"`` uses); in the other the same
kind of actor also listens on a loopback port and the proxy reaches it with the HTTP transport
(a pooled keep-alive connection). Everything else is equal: the client, the proxy in this
process, the in-process transport in front of the node. Cases: one confidential request at a
time, and 32 concurrent ones. Interleaved round by round; timing reported, never asserted.

Ray listens beyond loopback: this runs only in a network namespace whose one interface is
loopback (``make bench`` runs the benchmarks in one where it can), and skips elsewhere.

    unshare -n bash -c 'ip link set lo up; .venv/bin/python -m pytest benchmarks/test_ray.py --benchmark-only'
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest
from bench_support import interleaved, paired_ratio, pool_rounds
from ray_support import local_ray  # tests/, on the path (conftest.py)

from atoma_lab.inference import FAKE_MODEL
from atoma_lab.lab.network import Network, build_network
from atoma_lab.transport.base import Request, Response
from atoma_lab.transport.http import HttpTransport

ray = pytest.importorskip("ray")

TEXTS = ["a confidential request through a node actor"]
CONCURRENT = 32


@pytest.fixture(scope="module")
def networks() -> Iterator[dict[str, Network]]:
    with local_ray():
        nets = {"actor": build_network(nodes=1, mode="ray", model=FAKE_MODEL),
                "http": build_network(nodes=1, mode="ray", model=FAKE_MODEL)}
        http = HttpTransport(timeout_s=60.0)
        net = nets["http"]
        assert net.transport is not None
        for node in net.nodes:
            url = ray.get(node.actor.serve_http.remote())

            async def forward(request: Request, url: str = url) -> Response:
                return await http.handle(dataclasses.replace(request, address=url))

            net.transport.register(node.address, forward)  # the proxy now reaches it over HTTP
        yield nets
        for n in nets.values():
            n.close()


def one(net: Network) -> np.ndarray:
    return net.client().confidential_embeddings.create(input=TEXTS, model=FAKE_MODEL).to_numpy()


def concurrent(net: Network) -> list[np.ndarray]:
    client = net.async_client()

    async def run() -> list[np.ndarray]:
        results = await asyncio.gather(*(client.confidential_embeddings.create(
            input=[f"{TEXTS[0]} {i}"], model=FAKE_MODEL) for i in range(CONCURRENT)))
        return [r.to_numpy() for r in results]

    return asyncio.run(run())


CASES = {"1 request": (one, 100), f"{CONCURRENT} concurrent requests": (concurrent, 20)}


@pytest.mark.benchmark(group="ray-transport")
@pytest.mark.parametrize("how", ["http", "actor"])
@pytest.mark.parametrize("case", list(CASES))
def test_actor_call_vs_http_between_actors(benchmark: Any, networks: dict[str, Network],
                                           how: str, case: str) -> None:
    fn, rounds = CASES[case]
    other = "http" if how == "actor" else "actor"
    np.testing.assert_array_equal(one(networks[how]), one(networks[other]))
    for _ in range(5):  # connections, stack look-ups, caches
        fn(networks[how])
        fn(networks[other])
    pair = f"proxy to node actor: actor call vs HTTP, {case}"
    benchmark.extra_info.update(pair=pair, role="ours" if how == "actor" else "baseline")
    other_s = interleaved(benchmark, lambda: fn(networks[how]), lambda: fn(networks[other]),
                          rounds=rounds)
    pool_rounds(benchmark, ("ray-transport", pair), "ours" if how == "actor" else "baseline",
                other_s, name="paired_ratio", figure=paired_ratio)
