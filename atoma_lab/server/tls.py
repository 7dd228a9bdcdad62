"""TLS for a listener: its certificate and key, and for mutual TLS the CAs whose client
certificates it requires. Every listener (``serve``, ``proxy``, ``node``, :func:`build_network
<atoma_lab.lab.network.build_network>` over HTTP) takes a :class:`ServerTls`; the other side
reaches it at ``https://`` with a context from
:func:`~atoma_lab.transport.http.client_tls_context` (the CA bundle that signed the
certificate, and a client certificate where the listener asks for one)."""

from __future__ import annotations

import ssl
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True, slots=True)
class ServerTls:
    """``certfile`` (PEM: the certificate, then its chain), ``keyfile`` (PEM; ``None``: in
    ``certfile``), and ``client_ca_file`` (PEM bundle: when set, a client must present a
    certificate signed by one of these CAs, or the handshake fails)."""

    certfile: str
    keyfile: str | None = None
    client_ca_file: str | None = None

    def __post_init__(self) -> None:
        for name in ("certfile", "keyfile", "client_ca_file"):
            path = getattr(self, name)
            if path is not None and not Path(path).is_file():
                raise ValueError(f"{name}: no such file: {path}")

    @property
    def cert_reqs(self) -> int:
        """uvicorn's ``ssl_cert_reqs``: client certificates required with a client CA."""
        return int(ssl.CERT_REQUIRED if self.client_ca_file else ssl.CERT_NONE)


__all__ = ["ServerTls"]
