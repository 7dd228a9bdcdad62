"""How one party reaches another: the :class:`Transport` protocol and its implementations,
in-process (with fault injection and capture), HTTP, intercepting, loop-crossing and Ray actor
calls (Ray itself is imported only when a Ray transport is used)."""

from atoma_lab.transport.base import Headers, Request, Response, Transport
from atoma_lab.transport.http import HttpTransport
from atoma_lab.transport.inprocess import CapturedMessage, Fault, InProcessTransport
from atoma_lab.transport.intercept import InterceptTransport
from atoma_lab.transport.loop import LoopTransport
from atoma_lab.transport.ray import RayTransport, RelayTransport

__all__ = [
    "CapturedMessage",
    "Fault",
    "Headers",
    "HttpTransport",
    "InProcessTransport",
    "InterceptTransport",
    "LoopTransport",
    "RayTransport",
    "RelayTransport",
    "Request",
    "Response",
    "Transport",
]
