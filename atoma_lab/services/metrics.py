"""Prometheus metrics per service, with Atoma's metric names (atoma-protocol.md section 8).

Labels come from fixed sets, never from what a peer sent: ``code`` is a code of the error table
or ``OTHER``; ``model`` is a model some node of the ledger (or this node) serves. ``/metrics``
answers only the metrics token (:func:`check_metrics_token`, :func:`metrics_response`), and a
node's failure is logged in the same words by the node and its proxy (:func:`log_node_failure`).
"""

from __future__ import annotations

import hmac
import logging

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest

from atoma_lab.errors import AtomaLabError, AuthenticationError, error_codes
from atoma_lab.transport.base import Headers, Request, Response

OTHER_CODE = "OTHER"  # the label of a failure whose code is not in the error table
_CODES = error_codes()


def code_label(code: str) -> str:
    """``code`` if the error table has it, else :data:`OTHER_CODE`."""
    return code if code in _CODES else OTHER_CODE

LATENCY_BUCKETS_S = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


class ServiceMetrics:
    """The counters and histograms a node or proxy exposes on ``GET /metrics``."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.embs_requests = Counter("atoma_text_embs_num_requests", "Embeddings requests",
                                     ["model"], registry=r)
        self.confidential_requests = Counter(
            "atoma_text_embeddings_confidential_num_requests", "Confidential embeddings requests",
            ["model"], registry=r)
        self.latency = Histogram("atoma_text_embeddings_latency", "Embeddings latency (seconds)",
                                 ["model", "privacy_level"], buckets=LATENCY_BUCKETS_S, registry=r)
        self.completed = Counter("atoma_total_completed_requests", "Completed requests", registry=r)
        self.failed = Counter("atoma_total_failed_requests", "Failed requests", ["code"], registry=r)
        self.tokens = Counter("atoma_embedding_total_tokens", "Tokens embedded", ["model"], registry=r)
        self.units_charged = Counter("atoma_lab_compute_units_charged", "Compute units charged",
                                     registry=r)
        self.units_released = Counter("atoma_lab_compute_units_released",
                                      "Locked compute units given back", registry=r)

    def count_failure(self, code: str) -> None:
        """One failed request, labelled by :func:`code_label`."""
        self.failed.labels(code_label(code)).inc()

    def render(self) -> bytes:
        """The Prometheus text exposition format."""
        return generate_latest(self.registry)


PROMETHEUS_CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


def check_metrics_token(request: Request, metrics_token: str | None) -> None:
    """The guard of ``GET /metrics``: the bearer token must be ``metrics_token`` (compared in
    constant time); ``None`` answers nobody. :class:`AuthenticationError` (401) otherwise."""
    token = request.bearer_token()
    if metrics_token is None or not hmac.compare_digest(
            token.encode("utf-8", "replace"), metrics_token.encode("utf-8")):
        raise AuthenticationError("/metrics needs the metrics token")


def metrics_response(metrics: ServiceMetrics) -> Response:
    """``GET /metrics``: ``metrics`` in the Prometheus text format."""
    return Response(200, metrics.render(), Headers({"content-type": PROMETHEUS_CONTENT_TYPE}))


def log_node_failure(log: logging.Logger, node_small_id: int, route: str,
                     exc: AtomaLabError) -> None:
    """A node failed (5xx: warning) or refused (info) a ``route`` request, by status and code:
    the same line in the node's log and its proxy's."""
    if exc.status >= 500:
        log.warning("node %d failed a %s request: %d %s", node_small_id, route, exc.status,
                    exc.code)
    else:
        log.info("node %d refused a %s request: %d %s", node_small_id, route, exc.status,
                 exc.code)
