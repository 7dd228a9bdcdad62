"""What one listener accepts from its clients: header count and size, body size, timeouts and
open connections. Every listener (``serve``, ``proxy``, ``node``, :func:`build_network
<atoma_lab.lab.network.build_network>` over HTTP) takes a :class:`ServerLimits`; the defaults
suit a research box and are listed in the README ("What is tested").
"""

from __future__ import annotations

from dataclasses import dataclass

from atoma_lab.transport.base import MAX_BODY_BYTES

DEFAULT_MAX_HEADER_COUNT = 100  # headers per request (nginx and Node.js allow about as many bytes)
DEFAULT_MAX_HEADER_BYTES = 32 * 1024  # bytes: request target, header names and values together
DEFAULT_HEADER_TIMEOUT_S = 10.0  # seconds from a request's first byte (or the connection) to its last header
DEFAULT_BODY_TIMEOUT_S = 60.0  # seconds from the last header to the body's last byte
DEFAULT_IDLE_TIMEOUT_S = 30.0  # seconds an idle keep-alive connection stays open
DEFAULT_MAX_CONNECTIONS = 1024  # open connections per listener


@dataclass(frozen=True, slots=True)
class ServerLimits:
    """Limits of one listener. Over a limit the answer is a JSON error and the connection closes:

    * more than ``max_header_count`` headers, or more than ``max_header_bytes`` bytes of request
      target and headers: 431 ``HEADERS_TOO_LARGE``, refused while the headers arrive;
    * a declared ``Content-Length`` over ``max_body_bytes``: 413 ``BODY_TOO_LARGE`` before any
      body byte is read (a streamed body is cut at the limit);
    * headers not complete ``header_timeout_s`` after the request began (or after the connection
      opened), or a body not complete ``body_timeout_s`` after its headers: 408
      ``REQUEST_TIMEOUT``;
    * a keep-alive connection idle for ``idle_timeout_s`` is closed;
    * a connection beyond ``max_connections`` open ones gets 503 ``SERVICE_UNAVAILABLE`` at once.
    """

    max_header_count: int = DEFAULT_MAX_HEADER_COUNT
    max_header_bytes: int = DEFAULT_MAX_HEADER_BYTES
    max_body_bytes: int = MAX_BODY_BYTES
    header_timeout_s: float = DEFAULT_HEADER_TIMEOUT_S
    body_timeout_s: float = DEFAULT_BODY_TIMEOUT_S
    idle_timeout_s: float = DEFAULT_IDLE_TIMEOUT_S
    max_connections: int = DEFAULT_MAX_CONNECTIONS

    def __post_init__(self) -> None:
        for name in ("max_header_count", "max_header_bytes", "max_body_bytes", "max_connections"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1")
        for name in ("header_timeout_s", "body_timeout_s", "idle_timeout_s"):
            if not getattr(self, name) > 0:
                raise ValueError(f"{name} must be positive")


__all__ = [
    "DEFAULT_BODY_TIMEOUT_S",
    "DEFAULT_HEADER_TIMEOUT_S",
    "DEFAULT_IDLE_TIMEOUT_S",
    "DEFAULT_MAX_CONNECTIONS",
    "DEFAULT_MAX_HEADER_BYTES",
    "DEFAULT_MAX_HEADER_COUNT",
    "ServerLimits",
]
