"""Ray as a transport: services in Ray actors reached by actor calls instead of sockets.

* :class:`RayTransport` delivers a request to the actor registered at ``request.address`` (a
  node of a Ray network: ``actor://node-1``) by calling its ``handle`` method, and returns its
  answer. An actor that is gone (killed, its machine lost) is :class:`TransportError` (503), one
  that does not answer in time :class:`TransportTimeoutError` (504), as a refused or timed-out
  connection is over HTTP.
* :class:`Relay` and :class:`RelayTransport` let actors reach a service that is *not* an actor
  (the proxy, which lives in the driver beside its ledger): an actor calls the relay actor, and
  the driver pulls the relayed requests with :func:`serve_relay` and answers them. Ray actors
  can call actors but not the driver; the relay is the driver's mailbox. Nodes look up stack
  owners through it, and the client actors of :func:`~atoma_lab.lab.batch.embed_dataset`
  reach the proxy through it.

Messages cross as plain tuples of ``str``, ``bytes`` and ``int`` (:func:`request_to_message`,
:func:`response_to_reply`), checked in type, count and size on arrival, not as pickled objects of
this package. Ray itself pickles what actors exchange, so a Ray cluster is one trust domain (as
Ray's documentation says of its clusters); what the protocol protects from the proxy (the
sealed request and answer) is sealed before it reaches Ray.

Ray is optional: this module imports it only when a transport is used.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import itertools
import logging
from collections import deque
from collections.abc import Mapping
from typing import Any

from atoma_lab.errors import AtomaLabError, InvalidFieldError, TransportError, TransportTimeoutError
from atoma_lab.transport.base import (
    MAX_BODY_BYTES,
    Handler,
    Headers,
    Request,
    Response,
    bounded,
    error_response,
)

log = logging.getLogger("atoma_lab.transport")

MAX_HEADERS = 100  # header pairs one message may carry
MAX_HEADER_BYTES = 64 * 1024  # bytes of header names and values together
MAX_QUERY_ITEMS = 32  # query parameters one request may carry
MAX_PATH_CHARS = 8192  # characters of a request path
DEFAULT_TIMEOUT_S = 60.0  # a relayed call's limit when the request names none
RELAY_MAX_PENDING = 4096  # relayed calls waiting at once; beyond that 503
RELAY_TAKE = 64  # relayed requests the driver takes per pull
RELAY_WAIT_S = 1.0  # how long one pull waits for work

#: What crosses for a request: method, path, header pairs, body, query, timeout (seconds or None).
Message = tuple[str, str, list[tuple[str, str]], bytes, dict[str, str], float | None]
#: What crosses for an answer: status, header pairs, body.
Reply = tuple[int, list[tuple[str, str]], bytes]


def _ray() -> Any:
    try:
        import ray
    except ImportError as exc:  # pragma: no cover - exercised only without the extra
        raise ImportError("Ray is not installed: pip install 'atoma-lab[ray]'") from exc
    return ray


def _headers(pairs: object) -> Headers:
    if not isinstance(pairs, list) or len(pairs) > MAX_HEADERS:
        raise ValueError(f"headers: a list of at most {MAX_HEADERS} pairs")
    size = 0
    for pair in pairs:
        if not (isinstance(pair, tuple) and len(pair) == 2
                and isinstance(pair[0], str) and isinstance(pair[1], str)):
            raise ValueError("headers: each must be a (name, value) pair of strings")
        size += len(pair[0]) + len(pair[1])
    if size > MAX_HEADER_BYTES:
        raise ValueError(f"headers: more than {MAX_HEADER_BYTES} characters")
    return Headers.from_pairs(pairs)


def _body(body: object) -> bytes:
    if not isinstance(body, bytes):
        raise ValueError("body: expected bytes")
    if len(body) > MAX_BODY_BYTES:
        raise ValueError(f"body: {len(body)} bytes; the limit is {MAX_BODY_BYTES}")
    return body


def request_to_message(request: Request) -> Message:
    """``request`` as the plain tuple an actor call carries (no address: the call is it)."""
    return (request.method, request.path, list(request.headers.items()), bytes(request.body),
            dict(request.query), request.timeout_s)


def request_from_message(message: object, *, address: str = "") -> Request:
    """The :class:`Request` a message carries, checked in shape and size; a malformed message
    is :class:`~atoma_lab.errors.InvalidFieldError` (400)."""
    try:
        if not isinstance(message, tuple) or len(message) != 6:
            raise ValueError("expected (method, path, headers, body, query, timeout_s)")
        method, path, pairs, body, query, timeout_s = message
        if not (isinstance(method, str) and 0 < len(method) <= 16 and method.isalpha()):
            raise ValueError("method: a short word")
        if not (isinstance(path, str) and path.startswith("/") and len(path) <= MAX_PATH_CHARS
                and "?" not in path):
            raise ValueError(f"path: an absolute path of at most {MAX_PATH_CHARS} characters")
        if not (isinstance(query, dict) and len(query) <= MAX_QUERY_ITEMS
                and all(isinstance(k, str) and isinstance(v, str) and len(k) + len(v) <= 1024
                        for k, v in query.items())):
            raise ValueError(f"query: at most {MAX_QUERY_ITEMS} short string parameters")
        if timeout_s is not None and not (isinstance(timeout_s, int | float)
                                          and not isinstance(timeout_s, bool) and timeout_s > 0):
            raise ValueError("timeout_s: a positive number or None")
        return Request(method, path, _headers(pairs), _body(body), dict(query), address=address,
                       timeout_s=None if timeout_s is None else float(timeout_s))
    except ValueError as exc:
        raise InvalidFieldError(f"message: {exc}", field="message") from None


def response_to_reply(response: Response) -> Reply:
    return (response.status, list(response.headers.items()), bytes(response.body))


def response_from_reply(reply: object, *, peer: str) -> Response:
    """The :class:`Response` a reply carries; a malformed reply is the peer's failure to answer
    (:class:`TransportError`, as a broken HTTP answer is)."""
    try:
        if not isinstance(reply, tuple) or len(reply) != 3:
            raise ValueError("expected (status, headers, body)")
        status, pairs, body = reply
        if not (isinstance(status, int) and not isinstance(status, bool) and 100 <= status <= 599):
            raise ValueError("status: an HTTP status")
        return Response(status, _body(body), _headers(pairs))
    except ValueError as exc:
        raise TransportError(f"{peer} answered with a malformed reply ({exc})") from None


def internal_error_reply() -> Reply:
    return response_to_reply(error_response(AtomaLabError("internal server error")))


async def _await(ref: Any) -> Any:
    return await ref


def _cancel(ref: Any) -> None:
    with contextlib.suppress(Exception):  # best effort: the task may be done or its actor gone
        _ray().cancel(ref)


async def call_actor(method: Any, message: Message, *, peer: str, timeout_s: float) -> Reply:
    """``await method.remote(message)`` within ``timeout_s``, Ray's failures mapped to ours: an
    actor gone is :class:`TransportError`, no answer in time :class:`TransportTimeoutError`
    (the call is cancelled), an exception inside the actor (a bug there) a JSON 500."""
    ray = _ray()
    ref = method.remote(message)
    try:
        return await asyncio.wait_for(_await(ref), timeout_s)
    except TimeoutError as exc:
        _cancel(ref)
        raise TransportTimeoutError(f"{peer} did not answer within {timeout_s} s") from exc
    except asyncio.CancelledError:
        _cancel(ref)
        raise
    except ray.exceptions.RayActorError as exc:  # died, or its machine is unreachable
        raise TransportError(f"{peer} is gone ({type(exc).__name__})") from exc
    except ray.exceptions.RayTaskError:
        log.exception("unhandled error inside %s", peer)
        return internal_error_reply()
    except ray.exceptions.RayError as exc:  # lost objects, a cluster going away
        raise TransportError(f"cannot reach {peer} ({type(exc).__name__})") from exc


class RayTransport:
    """A :class:`~atoma_lab.transport.base.Transport` calling the actor registered at
    ``request.address``: its ``handle`` method takes a :data:`Message` and returns a
    :data:`Reply`. ``request.timeout_s`` bounds the call (default ``timeout_s``), and
    ``request.max_response_bytes`` the answer's body (beyond :data:`MAX_BODY_BYTES`)."""

    def __init__(self, actors: Mapping[str, Any] | None = None, *,
                 timeout_s: float = DEFAULT_TIMEOUT_S) -> None:
        self.actors: dict[str, Any] = dict(actors or {})
        self.timeout_s = timeout_s

    def register(self, address: str, actor: Any) -> None:
        self.actors[address] = actor

    def unregister(self, address: str) -> None:
        self.actors.pop(address, None)

    async def handle(self, request: Request) -> Response:
        actor = self.actors.get(request.address)
        if actor is None:
            raise TransportError(f"no actor at {request.address}")
        timeout_s = request.timeout_s if request.timeout_s is not None else self.timeout_s
        reply = await call_actor(actor.handle, request_to_message(request), peer=request.address,
                                 timeout_s=timeout_s)
        return bounded(request, response_from_reply(reply, peer=request.address),
                       peer=request.address)

    def handler_for(self, address: str) -> Handler:
        """A service handler that forwards to the actor at ``address`` (to register an actor in
        an :class:`~atoma_lab.transport.inprocess.InProcessTransport`, whose faults and capture
        then apply to it as to any in-process service)."""
        async def forward(request: Request) -> Response:
            return await self.handle(dataclasses.replace(request, address=address))
        return forward

    async def aclose(self) -> None:
        """Nothing to release: the actors belong to whoever started them."""

    def __repr__(self) -> str:
        return f"RayTransport({sorted(self.actors)})"


# ------------------------------------------------------------------------------------- relay


class Relay:
    """The driver's mailbox (run as a Ray actor): :meth:`call` from any actor waits for the
    answer that the driver, pulling with :meth:`take`, gives with :meth:`answer`.

    At most ``max_pending`` calls wait at once (beyond, an immediate 503 reply); a call the
    driver does not answer within its timeout is a 504 reply. Make the actor with a
    ``max_concurrency`` above ``max_pending`` so that pulls and answers always find a slot.
    """

    def __init__(self, max_pending: int = RELAY_MAX_PENDING) -> None:
        self.max_pending = max_pending
        self._queue: deque[tuple[int, Message]] = deque()
        self._pending: dict[int, asyncio.Future[Reply]] = {}
        self._ids = itertools.count(1)
        self._work: asyncio.Event | None = None

    def _event(self) -> asyncio.Event:
        if self._work is None:  # made in the actor's event loop, on first use
            self._work = asyncio.Event()
        return self._work

    async def call(self, message: Message) -> Reply:
        if len(self._pending) >= self.max_pending:
            return response_to_reply(error_response(TransportError(
                "the relay to the driver is full; try again")))
        timeout_s = message[5] if isinstance(message, tuple) and len(message) == 6 \
            and isinstance(message[5], int | float) and message[5] > 0 else DEFAULT_TIMEOUT_S
        call_id = next(self._ids)
        future: asyncio.Future[Reply] = asyncio.get_running_loop().create_future()
        self._pending[call_id] = future
        self._queue.append((call_id, message))
        self._event().set()
        try:
            return await asyncio.wait_for(future, timeout_s)
        except TimeoutError:
            return response_to_reply(error_response(TransportTimeoutError(
                "the driver did not answer the relayed request in time")))
        finally:
            self._pending.pop(call_id, None)

    async def take(self, max_items: int = RELAY_TAKE,
                   wait_s: float = RELAY_WAIT_S) -> list[tuple[int, Message]]:
        """Up to ``max_items`` waiting requests, waiting up to ``wait_s`` for the first."""
        event = self._event()
        if not self._queue:
            event.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(event.wait(), wait_s)
        out: list[tuple[int, Message]] = []
        while self._queue and len(out) < max_items:
            call_id, message = self._queue.popleft()
            if call_id in self._pending:  # not timed out meanwhile
                out.append((call_id, message))
        return out

    async def answer(self, call_id: int, reply: Reply) -> None:
        future = self._pending.get(call_id)
        if future is not None and not future.done():
            future.set_result(reply)

    async def pending(self) -> int:
        return len(self._pending)


def start_relay(*, max_pending: int = RELAY_MAX_PENDING, **actor_options: Any) -> Any:
    """A :class:`Relay` actor (no CPU reserved; placed by Ray, on the driver's machine unless
    ``actor_options`` say otherwise)."""
    ray = _ray()
    options = {"num_cpus": 0, "max_concurrency": max_pending + 2 * RELAY_TAKE,
               **actor_options}
    return ray.remote(Relay).options(**options).remote(max_pending)


class RelayTransport:
    """A :class:`~atoma_lab.transport.base.Transport` for code in an actor: every request goes
    to the relay's driver (whatever its address says: the driver serves one service)."""

    def __init__(self, relay: Any, *, timeout_s: float = DEFAULT_TIMEOUT_S) -> None:
        self.relay = relay
        self.timeout_s = timeout_s

    async def handle(self, request: Request) -> Response:
        timeout_s = request.timeout_s if request.timeout_s is not None else self.timeout_s
        message = request_to_message(dataclasses.replace(request, timeout_s=timeout_s))
        # The relay answers a 504 itself at timeout_s; the margin covers the two hops.
        reply = await call_actor(self.relay.call, message, peer="the relay",
                                 timeout_s=timeout_s + 5.0)
        return bounded(request, response_from_reply(reply, peer="the relay"), peer="the relay")

    async def aclose(self) -> None:
        """Nothing to release."""

    def __repr__(self) -> str:
        return "RelayTransport()"


async def serve_relay(relay: Any, transport: Any, address: str, *,
                      max_in_flight: int = 256) -> None:
    """Serve ``relay``'s requests with ``transport`` at ``address`` (the driver's side), at most
    ``max_in_flight`` at once, until cancelled or the relay is gone."""
    ray = _ray()
    slots = asyncio.Semaphore(max_in_flight)
    tasks: set[asyncio.Task[None]] = set()

    async def serve_one(call_id: int, message: Message) -> None:
        try:
            try:
                request = request_from_message(message, address=address)
                response = await transport.handle(request)
            except AtomaLabError as exc:
                response = error_response(exc)
            except Exception:  # as every server here: a bug is a JSON 500, and the relay goes on
                log.exception("unhandled error serving a relayed request")
                response = error_response(AtomaLabError("internal server error"))
            with contextlib.suppress(ray.exceptions.RayError):
                await relay.answer.remote(call_id, response_to_reply(response))
        finally:
            slots.release()

    try:
        while True:
            try:
                batch = await relay.take.remote(RELAY_TAKE, RELAY_WAIT_S)
            except ray.exceptions.RayError:
                log.warning("the relay is gone; relayed requests are no longer served")
                return
            for call_id, message in batch:
                await slots.acquire()
                task = asyncio.create_task(serve_one(call_id, message))
                tasks.add(task)
                task.add_done_callback(tasks.discard)
    finally:
        for task in list(tasks):
            task.cancel()


__all__ = [
    "Message",
    "RayTransport",
    "Relay",
    "RelayTransport",
    "Reply",
    "call_actor",
    "request_from_message",
    "request_to_message",
    "response_from_reply",
    "response_to_reply",
    "serve_relay",
    "start_relay",
]
