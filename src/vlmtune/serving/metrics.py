"""Prometheus metrics of one server: requests, errors, tokens, latency, batch sizes, queue depth.

Served at GET /metrics, which needs the API key like every route but /health. Each app gets its own
registry, so two servers in one process (tests, the benchmark) never share counts. Routes are labelled by
their template (guard.py), so the number of series is bounded by the number of routes.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

CONTENT_TYPE = CONTENT_TYPE_LATEST
_LATENCY_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120)


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.requests = Counter("vlmtune_requests", "HTTP requests answered", ["route", "status"], registry=r)
        self.errors = Counter("vlmtune_errors", "requests answered with an error", ["route", "type"], registry=r)
        self.tokens = Counter("vlmtune_tokens", "tokens processed", ["model", "kind"], registry=r)
        self.latency = Histogram("vlmtune_request_seconds", "request latency", ["route"], buckets=_LATENCY_BUCKETS, registry=r)
        self.batch_size = Histogram("vlmtune_batch_size", "requests decoded per batch", buckets=(1, 2, 4, 8, 16, 32, 64), registry=r)
        self.queue_depth = Gauge("vlmtune_queue_depth", "requests waiting for the model", registry=r)

    def observe_request(self, route: str, status: int, seconds: float) -> None:
        self.requests.labels(route, str(status)).inc()
        self.latency.labels(route).observe(seconds)
        if status >= 400:
            self.errors.labels(route, str(status)).inc()

    def observe_tokens(self, model: str, input_tokens: int, output_tokens: int) -> None:
        self.tokens.labels(model, "input").inc(input_tokens)
        self.tokens.labels(model, "output").inc(output_tokens)

    def render(self, queue_depth: int) -> bytes:
        """The Prometheus text exposition of every metric."""
        self.queue_depth.set(queue_depth)
        return generate_latest(self.registry)
