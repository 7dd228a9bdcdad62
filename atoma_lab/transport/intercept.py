"""Someone on the wire: a transport that wraps another and may rewrite what passes through.

The attacks of :mod:`atoma_lab.lab.attacks` and many tests put one between a client and its
proxy (a malicious proxy rewriting answers, a curious one keeping requests)::

    spy = InterceptTransport(net.client_transport(), after=swap_the_key)
    client = AtomaLabClient(api_key=net.api_key, transport=spy)
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from atoma_lab.transport.base import Request, Response, Transport, bounded


@dataclass(eq=False)
class InterceptTransport:
    """A :class:`~atoma_lab.transport.base.Transport` around ``inner`` with hooks.

    ``before(request)`` may return a replacement request, ``after(request, response)`` a
    replacement response (``None``: keep it). Every completed exchange is appended to ``seen``
    as ``(request, response)`` as the two ends saw them (the request as delivered, the response
    as returned). The hooks are plain functions, called in the event loop that awaits
    :meth:`handle`; an error in ``inner`` passes through unrecorded. A replacement answer over
    ``request.max_response_bytes`` is :class:`~atoma_lab.errors.ResponseTooLargeError` (recorded
    first). ``aclose`` closes ``inner``.
    """

    inner: Transport
    before: Callable[[Request], Request | None] | None = None
    after: Callable[[Request, Response], Response | None] | None = None
    seen: list[tuple[Request, Response]] = field(default_factory=list, repr=False)

    async def handle(self, request: Request) -> Response:
        if self.before is not None:
            request = self.before(request) or request
        response = await self.inner.handle(request)
        if self.after is not None:
            response = self.after(request, response) or response
        self.seen.append((request, response))
        # A rewritten answer is bounded as the inner transport bounds its own.
        return bounded(request, response, peer=request.address or "the peer")

    async def aclose(self) -> None:
        await self.inner.aclose()

    def paths(self) -> list[str]:
        """The path of every exchange seen, in order."""
        return [r.path for r, _ in self.seen]


__all__ = ["InterceptTransport"]
