"""Prometheus metrics, one registry per app (so several apps can live in one process)."""

from __future__ import annotations

import bisect
from collections.abc import Iterator
from typing import Final

from prometheus_client import CollectorRegistry, Counter, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST
from prometheus_client.metrics_core import (
    CounterMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector
from prometheus_client.utils import floatToGoString

CONTENT_TYPE = CONTENT_TYPE_LATEST
UPSTREAM_BUCKETS: Final = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)
REQUEST_BUCKETS: Final = UPSTREAM_BUCKETS
#: The route classes of ``gateway_request_seconds``: a docs page (HTML, or a body read as
#: one), an asset (anything else streamed), an index (sitemap, search index, llms.txt,
#: feed), the gateway's own endpoints, a request refused by policy (a login asked for, a
#: denial), and a docs request the gateway answered with an error of its own.
ROUTE_CLASSES: Final = ("page", "asset", "index", "gateway", "denied", "error")


class PerRequest(Collector):
    """The three metrics every request moves, kept as plain numbers and turned into metric
    families only when scraped. A worker serves from one thread, so the lock that
    prometheus_client takes on each increment would buy nothing on the hot path."""

    def __init__(self) -> None:
        self.requests: dict[tuple[str, int], int] = {}
        # Per bucket (not yet cumulative), the last one past the largest bound (+Inf).
        self.upstream_buckets = [0] * (len(UPSTREAM_BUCKETS) + 1)
        self.upstream_sum = 0.0
        # Per route class: its buckets as above, and the sum of its durations.
        self.durations: dict[str, list[int]] = {
            route: [0] * (len(REQUEST_BUCKETS) + 1) for route in ROUTE_CLASSES}
        self.duration_sums: dict[str, float] = dict.fromkeys(ROUTE_CLASSES, 0.0)

    def collect(self) -> Iterator[Metric]:
        requests = CounterMetricFamily("gateway_requests",
                                       "Requests by route (docs or gateway) and status",
                                       labels=["route", "status"])
        for (route, status), count in sorted(self.requests.items()):
            requests.add_metric([route, str(status)], count)
        yield requests
        upstream = HistogramMetricFamily("gateway_upstream_seconds",
                                         "Time to the upstream's response headers")
        upstream.add_metric([], _cumulative(UPSTREAM_BUCKETS, self.upstream_buckets),
                            self.upstream_sum)
        yield upstream
        durations = HistogramMetricFamily(
            "gateway_request_seconds", "Time from a request's arrival to its response handed "
            "to the server (a streamed body: until sent), by route class", labels=["route"])
        for route in ROUTE_CLASSES:
            durations.add_metric([route], _cumulative(REQUEST_BUCKETS, self.durations[route]),
                                 self.duration_sums[route])
        yield durations


def _cumulative(bounds: tuple[float, ...], counts: list[int]) -> list[tuple[str, float]]:
    """Per-bucket counts (the last past the largest bound) as Prometheus's running totals."""
    out: list[tuple[str, float]] = []
    total = 0
    for bound, count in zip([*map(floatToGoString, bounds), "+Inf"], counts, strict=True):
        total += count
        out.append((bound, total))
    return out


class Metrics:
    """The gateway's counters and histograms."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.per_request = PerRequest()
        self.registry.register(self.per_request)
        self.handshakes = Counter(
            "gateway_handshakes_total", "Login handshakes by method, outcome and reason",
            ["method", "outcome", "reason"], registry=self.registry)
        self.info_cache = Counter(
            "gateway_info_api_cache_total", "Info API cache lookups by result",
            ["result"], registry=self.registry)
        self.store_errors = Counter(
            "gateway_session_store_errors_total", "Session store operations that failed",
            registry=self.registry)
        self.denials = Counter(
            "gateway_denials_total", "Requests refused by policy, by reason",
            ["reason"], registry=self.registry)

    def count_request(self, route: str, status: int) -> None:
        """One more request of this route (``docs`` or ``gateway``) and status."""
        counts = self.per_request.requests
        key = (route, status)
        counts[key] = counts.get(key, 0) + 1

    def finish_request(self, route: str, route_class: str, status: int,
                       seconds: float) -> None:
        """A request answered: counted by ``route`` and status, its duration by class (one
        of ``ROUTE_CLASSES``)."""
        per_request = self.per_request
        counts = per_request.requests
        key = (route, status)
        counts[key] = counts.get(key, 0) + 1
        per_request.durations[route_class][bisect.bisect_left(REQUEST_BUCKETS, seconds)] += 1
        per_request.duration_sums[route_class] += seconds

    def observe_upstream(self, seconds: float) -> None:
        """One more upstream response head, ``seconds`` after the request was sent."""
        per_request = self.per_request
        per_request.upstream_buckets[bisect.bisect_left(UPSTREAM_BUCKETS, seconds)] += 1
        per_request.upstream_sum += seconds

    def render(self) -> bytes:
        """The Prometheus text exposition."""
        return generate_latest(self.registry)
