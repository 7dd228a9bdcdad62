"""Attacks on a confidential embeddings network, run against Atoma's profile and the hardened one.

Each attack is played by a curious or malicious proxy (or someone on its wire) against a fresh
in-process network serving the weightless fake engine, under each :class:`Setup`:

* ``Atoma as deployed``: Atoma's envelope, a node that serves replays (as Atoma's does), and a
  client that checks what Atoma's SDKs check (the response hash; no attestation, no signature
  pinning, no usage comparison);
* ``atoma-lab, Atoma profile``: the same bytes on the wire, with atoma-lab's mended node (replay
  memory) and a strict client (attestation verified, signature pinned, usage compared);
* ``atoma-lab, hardened profile``: :mod:`atoma_lab.protocol.hardened` on a node that takes only it.

:func:`run_attacks` returns one :class:`AttackOutcome` per attack and setup; ``notebooks/
05_attacks.ipynb`` tabulates them, and the tests pin every cell of that table.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import orjson

from atoma_lab.client import AtomaLabClient
from atoma_lab.crypto.keys import X25519KeyPair
from atoma_lab.display.frames import to_frame
from atoma_lab.display.html import kv_table, section, table
from atoma_lab.display.progressbar import progress
from atoma_lab.encoding import b64encode, loads
from atoma_lab.errors import AtomaLabError
from atoma_lab.inference import FAKE_MODEL
from atoma_lab.lab.network import Network, build_network
from atoma_lab.protocol import hardened
from atoma_lab.protocol.atoma import envelope
from atoma_lab.protocol.openai import CreateEmbeddingRequest
from atoma_lab.transport.base import Headers, Request, Response, Transport
from atoma_lab.transport.inprocess import Fault
from atoma_lab.transport.intercept import InterceptTransport

CONF = "/v1/confidential/embeddings"
SECRET = "my confidential query: salary of employee 4711"


@dataclass(frozen=True, slots=True)
class Setup:
    """A network and client configuration to attack."""

    name: str
    profile: str  # "atoma" or "hardened"
    replay_protection: bool
    strict_client: bool

    def network(self) -> Network:
        profiles = ["atoma"] if self.profile == "atoma" else [hardened.PROFILE]
        return build_network(nodes=1, model=FAKE_MODEL, profiles=profiles,  # owns its embedder
                             replay_protection=self.replay_protection)

    def client(self, net: Network, transport: Transport | None = None) -> AtomaLabClient:
        """This setup's client of ``net``, through ``transport`` (default: straight to the
        proxy)."""
        strict = self.strict_client
        return net.client(transport=transport, profile=self.profile, verify_attestation=strict,
                          verify_signature=strict, check_usage=strict)


SETUPS: tuple[Setup, ...] = (
    Setup("Atoma as deployed", "atoma", replay_protection=False, strict_client=False),
    Setup("atoma-lab, Atoma profile", "atoma", replay_protection=True, strict_client=True),
    Setup("atoma-lab, hardened profile", "hardened", replay_protection=True, strict_client=True),
)


@dataclass(frozen=True, slots=True)
class AttackOutcome:
    attack: str
    setup: str
    blocked: bool | None  # None: the attack does not apply to this setup
    detail: str

    @property
    def verdict(self) -> str:
        return "n/a" if self.blocked is None else "blocked" if self.blocked else "SUCCEEDED"

    def row(self) -> dict[str, Any]:
        return {"attack": self.attack, "setup": self.setup, "verdict": self.verdict,
                "blocked": self.blocked, "detail": self.detail}

    def _repr_html_(self) -> str:
        return section(f"Attack: {self.attack}", kv_table(
            {"setup": self.setup, "verdict": self.verdict, "detail": self.detail}))


OUTCOME_COLUMNS = ("attack", "setup", "verdict", "blocked", "detail")


class AttackResults(list[AttackOutcome]):
    """The outcomes of :func:`run_attacks`: a list, shown in a notebook as one row per attack
    and a column per setup; :meth:`to_frame` gives them long-form (one row per outcome) or,
    with ``wide=True``, as that table."""

    def to_frame(self, *, wide: bool = False) -> Any:
        if wide:
            rows = outcome_table(self)
            return to_frame(rows, list(rows[0]) if rows else ["attack"], index="attack")
        return to_frame([o.row() for o in self], OUTCOME_COLUMNS)

    def _repr_html_(self) -> str:
        rows = outcome_table(self)
        blocked = sum(1 for o in self if o.blocked)
        succeeded = sum(1 for o in self if o.blocked is False)
        return section(f"Attacks: {blocked} blocked, {succeeded} succeeded",
                       table(rows, list(rows[0]) if rows else ["attack"]))


def _code(exc: BaseException) -> str:
    return getattr(exc, "code", type(exc).__name__)


def _raw(net: Network, body: bytes) -> Response:
    headers = Headers({"content-type": "application/json", "authorization": f"Bearer {net.api_key}"})
    return net.send(Request("POST", CONF, headers, body))


def _units_charged(net: Network) -> int:
    return sum(int(str(s["units_charged"])) for s in net.ledger.settlements())


def with_json(response: Response, body: Any) -> Response:
    """``response`` with ``body`` as its JSON (status and headers kept)."""
    return Response(response.status, orjson.dumps(body), Headers(response.headers))


def _against_the_client(setup: Setup, name: str,
                        after: Callable[[Request, Response], Response | None], accepted: str, *,
                        earlier: str | None = None) -> AttackOutcome:
    """The proxy rewrites answers on their way back (``after``); after an optional ``earlier``
    request, does the client accept its answer to the secret one?"""
    with setup.network() as net:
        client = setup.client(net, InterceptTransport(net.client_transport(), after=after))
        if earlier is not None:
            client.confidential_embeddings.create(input=earlier, model=FAKE_MODEL)
        try:
            client.confidential_embeddings.create(input=SECRET, model=FAKE_MODEL)
        except AtomaLabError as exc:
            return AttackOutcome(name, setup.name, True, f"client refused: {_code(exc)}")
    return AttackOutcome(name, setup.name, False, accepted)


# ------------------------------------------------------------------------------------- attacks


def replay(setup: Setup) -> AttackOutcome:
    """The proxy keeps a client's sealed request and sends it again later (with a lock of its
    own open on the stack): served again, and charged again, to the client?"""
    with setup.network() as net:
        spy = InterceptTransport(net.client_transport())
        setup.client(net, spy).confidential_embeddings.create(input=SECRET, model=FAKE_MODEL)
        captured = next(r.body for r, _ in spy.seen if r.path == CONF)
        charged = _units_charged(net)
        setup.client(net).nodes.lock(FAKE_MODEL)
        resp = _raw(net, captured)
        if resp.ok:
            return AttackOutcome("replay a captured request", setup.name, False,
                                 f"served again; {_units_charged(net) - charged} more units charged")
        return AttackOutcome("replay a captured request", setup.name, True,
                             f"{resp.status} {resp.error_code()}")


def key_substitution(setup: Setup) -> AttackOutcome:
    """The proxy answers ``/v1/nodes/lock`` with a key of its own: can it read the input?"""
    attacker = X25519KeyPair.generate()
    read: list[bytes] = []

    def after(request: Request, response: Response) -> Response | None:
        if request.path != "/v1/nodes/lock" or not response.ok:
            return None
        body = orjson.loads(response.body)
        body["public_key"] = b64encode(attacker.public_bytes)
        return with_json(response, body)

    def before(request: Request) -> Request | None:
        if request.path == CONF:
            data = loads(request.body)
            try:
                if "profile" in data:
                    req = hardened.HardenedRequest.from_dict(data)
                    opened: Any = hardened.open_hardened_request(req, attacker,
                                                        guard=hardened.ReplayGuard(),
                                                        now=time.time())
                else:
                    opened = envelope.open_request(
                        envelope.ConfidentialComputeRequest.from_dict(data), attacker)
                read.append(opened.plaintext)
            except AtomaLabError:
                pass
        return None

    name = "proxy hands out its own key"
    with setup.network() as net:
        client = setup.client(net, InterceptTransport(net.client_transport(), before=before, after=after))
        try:
            client.confidential_embeddings.create(input=SECRET, model=FAKE_MODEL)
            error = ""
        except AtomaLabError as exc:
            error = _code(exc)
    if any(SECRET.encode() in p for p in read):
        return AttackOutcome(name, setup.name, False, "the proxy decrypted the input"
                             + (f" (the node then refused: {error})" if error else ""))
    return AttackOutcome(name, setup.name, True, f"client refused before sealing: {error}")


def response_swap(setup: Setup) -> AttackOutcome:
    """The proxy answers a request with the response to an earlier one."""
    stored: list[Response] = []

    def after(request: Request, response: Response) -> Response | None:
        if request.path != CONF or not response.ok:
            return None
        if not stored:
            stored.append(response)
            return None
        return stored[0]

    return _against_the_client(setup, "swap responses between requests", after,
                               "client accepted another request's vectors",
                               earlier="an earlier, harmless query")


def stack_splice(setup: Setup) -> AttackOutcome:
    """Between proxy and node, the request is moved to another user's stack (and re-signed by
    the proxy): does the node serve it there?"""
    name = "move a request to another user's stack"
    with setup.network() as net:
        victim_key = net.add_user("victim")
        victim = net.client(api_key=victim_key, profile=setup.profile)
        victim_stack = victim.confidential_embeddings.create(
            input="the victim's own query", model=FAKE_MODEL).stack_small_id
        signer = net.proxy.signer

        def splice(request: Request) -> Request:
            if request.path != CONF:
                return request
            data = loads(request.body)
            data["stack_small_id"] = victim_stack
            body = orjson.dumps(data)
            digest = (hardened.HardenedRequest.from_dict(data).request_hash()
                      if "profile" in data
                      else envelope.ConfidentialComputeRequest.from_dict(data).plaintext_body_hash)
            headers = Headers(request.headers)
            headers["x-signature"] = signer.sign(digest).to_base64()
            return Request(request.method, request.path, headers, body)

        assert net.transport is not None
        net.transport.inject(net.node_urls[0], Fault(tamper_request=splice))
        served_before = int(net.nodes[0].metrics.completed._value.get())
        try:
            setup.client(net).confidential_embeddings.create(input=SECRET, model=FAKE_MODEL)
            error = ""
        except AtomaLabError as exc:
            error = _code(exc)
        served = int(net.nodes[0].metrics.completed._value.get()) - served_before
    if served:
        return AttackOutcome(name, setup.name, False,
                             f"node served it on stack {victim_stack}"
                             + (f"; the client then saw {error}" if error else ""))
    return AttackOutcome(name, setup.name, True, f"node refused: {error}")


def usage_inflation(setup: Setup) -> AttackOutcome:
    """The proxy reports more usage to the client than the node measured."""

    def after(request: Request, response: Response) -> Response | None:
        if request.path != CONF or not response.ok:
            return None
        body = orjson.loads(response.body)
        body["usage"]["prompt_tokens"] += 1000
        body["usage"]["total_tokens"] += 1000
        return with_json(response, body)

    return _against_the_client(setup, "inflate the clear usage", after,
                               "client accepted 1000 extra tokens")


def downgrade(setup: Setup) -> AttackOutcome:
    """A request in Atoma's weaker profile (no replay window, nothing bound) sent to a network
    whose nodes require the hardened one."""
    name = "downgrade to Atoma's profile"
    if setup.profile == "atoma":
        return AttackOutcome(name, setup.name, None, "already the weaker profile")
    with setup.network() as net:
        lock = setup.client(net).nodes.lock(FAKE_MODEL)
        plaintext = CreateEmbeddingRequest(input=SECRET, model=FAKE_MODEL).to_json()
        body = envelope.seal_request(plaintext, node_public_key=lock.public_key,
                                     stack_small_id=lock.stack_small_id,
                                     model_name=FAKE_MODEL).request.to_json()
        resp = _raw(net, body)
    if resp.ok:
        return AttackOutcome(name, setup.name, False, "node served an Atoma-profile request")
    return AttackOutcome(name, setup.name, True, f"{resp.status} {resp.error_code()}")


ATTACKS: tuple[Callable[[Setup], AttackOutcome], ...] = (
    replay, key_substitution, response_swap, stack_splice, usage_inflation, downgrade,
)


def run_attacks(setups: Sequence[Setup] = SETUPS, *, show_progress: bool = True) -> AttackResults:
    """Every attack against every setup, each on a fresh network."""
    runs = [(attack, setup) for attack in ATTACKS for setup in setups]
    return AttackResults(attack(setup) for attack, setup in
                         progress(runs, desc="attacks", unit="attack", show=show_progress))


def outcome_table(outcomes: Sequence[AttackOutcome]) -> list[dict[str, str]]:
    """One row per attack, a column per setup holding ``verdict: detail``."""
    rows: dict[str, dict[str, str]] = {}
    for o in outcomes:
        rows.setdefault(o.attack, {"attack": o.attack})[o.setup] = f"{o.verdict}: {o.detail}"
    return list(rows.values())


__all__ = [
    "ATTACKS",
    "OUTCOME_COLUMNS",
    "SETUPS",
    "AttackOutcome",
    "AttackResults",
    "Setup",
    "outcome_table",
    "run_attacks",
    "with_json",
]
