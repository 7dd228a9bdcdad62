"""ASGI apps exposing the services over HTTP, and a uvicorn runner for loopback servers."""

from atoma_lab.server.app import asgi_app
from atoma_lab.server.limits import ServerLimits
from atoma_lab.server.runner import ServerGroup
from atoma_lab.server.tls import ServerTls

__all__ = ["ServerGroup", "ServerLimits", "ServerTls", "asgi_app"]
