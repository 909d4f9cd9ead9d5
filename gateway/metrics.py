"""Prometheus metrics, one registry per app (so several apps can live in one process)."""

from __future__ import annotations

from typing import Any

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

CONTENT_TYPE = CONTENT_TYPE_LATEST


class Metrics:
    """The gateway's counters and histograms."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "gateway_requests_total", "Requests by route class and status",
            ["route", "status"], registry=self.registry)
        self.handshakes = Counter(
            "gateway_handshakes_total", "Login handshakes by method, outcome and reason",
            ["method", "outcome", "reason"], registry=self.registry)
        self.upstream_seconds = Histogram(
            "gateway_upstream_seconds", "Time to the upstream's response headers",
            registry=self.registry,
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10))
        self.info_cache = Counter(
            "gateway_info_api_cache_total", "Info API cache lookups by result",
            ["result"], registry=self.registry)
        self.store_errors = Counter(
            "gateway_session_store_errors_total", "Session store operations that failed",
            registry=self.registry)
        self.denials = Counter(
            "gateway_denials_total", "Requests refused by policy, by reason",
            ["reason"], registry=self.registry)
        # labels() hashes and checks its arguments on every call: keep the children.
        self._request_counts: dict[tuple[str, int], Any] = {}

    def count_request(self, route: str, status: int) -> None:
        """One more request of this route class and status."""
        child = self._request_counts.get((route, status))
        if child is None:
            child = self._request_counts[(route, status)] = self.requests.labels(route, status)
        child.inc()

    def render(self) -> bytes:
        """The Prometheus text exposition."""
        return generate_latest(self.registry)
