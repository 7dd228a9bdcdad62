"""Prometheus metrics per service, with Atoma's metric names (atoma-protocol.md section 8)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest

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

    def render(self) -> bytes:
        """The Prometheus text exposition format."""
        return generate_latest(self.registry)


PROMETHEUS_CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
