"""Prometheus metrics of the delivery path, every one labelled by ``edge``.

``cache_hits_total`` keeps the seed tutorial's name (``Counter("cache_hits", ...)``).

A service with several worker processes (``edgecache serve --workers N``) runs
prometheus_client's multiprocess mode: counters and histograms add up over the workers, and
each gauge says how its workers' values combine (``multiprocess_mode``; ignored in one
process).
"""

from __future__ import annotations

from prometheus_client import REGISTRY, CollectorRegistry, Counter, Gauge, Histogram

# Delivery decisions take tenths of a millisecond; an origin fetch tens of milliseconds.
LATENCY_BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0)
# How a re-warm of an edge whose warm was lost ended (``edgecache_rewarms_total``).
REWARM_OUTCOMES = ("ok", "failed", "no_predictions", "expired")
PREDICTION_BUCKETS = (0.000005, 0.00001, 0.000025, 0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.005)


class DeliveryMetrics:
    """The metric families, registered once per registry."""

    def __init__(self, registry: CollectorRegistry = REGISTRY) -> None:
        def counter(name: str, doc: str, *labels: str) -> Counter:
            return Counter(name, doc, ["edge", *labels], registry=registry)

        self.hits = counter("cache_hits", "Requests served from the edge cache")
        self.misses = counter("cache_misses", "Requests the edge cache did not hold (served from the origin)")
        self.degraded = counter(
            "edgecache_degraded_requests", "Requests served from the origin without a cache decision (Redis down)"
        )
        self.rejected = counter("edgecache_rejected_requests", "Requests refused before reaching Redis", "reason")
        self.admissions = counter(
            "edgecache_admissions", "Titles admitted to the edge cache on a miss or a next-episode boost"
        )
        self.evictions = counter("edgecache_evictions", "Titles evicted from the edge cache to admit others")
        self.redis_errors = counter("edgecache_redis_errors", "Failed Redis calls on the delivery path")
        self.bytes_saved = counter("edgecache_origin_bytes_saved", "Bytes served from the edge instead of the origin")
        self.origin_bytes = counter("edgecache_origin_bytes", "Bytes fetched from the origin")
        self.latency = Histogram(
            "edgecache_delivery_seconds",
            "Time to decide and serve one request",
            ["edge", "source"],
            buckets=LATENCY_BUCKETS,
            registry=registry,
        )
        self.prediction = Histogram(
            "edgecache_prediction_seconds",
            "Time to compute a viewer's fresh prediction",
            ["edge"],
            buckets=PREDICTION_BUCKETS,
            registry=registry,
        )
        # Each worker counts the viewers it has seen: the sum over workers is an upper bound
        # (a viewer whose requests reached two workers counts twice).
        self.active_users = Gauge(
            "edgecache_active_users",
            "Distinct viewers in the last ACTIVE_WINDOW seconds",
            ["edge"],
            registry=registry,
            multiprocess_mode="livesum",
        )
        # Down or missing if any worker sees it so: a worker that cannot reach Redis degrades.
        self.redis_up = Gauge(
            "edgecache_redis_up",
            "1 while the edge's Redis answers",
            ["edge"],
            registry=registry,
            multiprocess_mode="livemin",
        )
        self.warm_date = Gauge(
            "edgecache_delivery_warm_date_seconds",
            "Logical date of the warm the edge service serves from (Unix time)",
            ["edge"],
            registry=registry,
            multiprocess_mode="livemax",
        )
        # A warm lost from Redis (a restart without persistence, a flush, an eviction): the
        # service serves from the origin until it has re-warmed the edge from disk.
        self.edge_warm = Gauge(
            "edgecache_edge_warm",
            "1 while the edge's warm marker is in Redis, 0 when it is "
            "missing (requests go to the origin until a re-warm)",
            ["edge"],
            registry=registry,
            multiprocess_mode="livemin",
        )
        self.not_warm = counter(
            "edgecache_not_warm_requests",
            "Requests served from the origin because the edge's warm was missing from Redis (also counted as degraded)",
        )
        self.rewarms = counter(
            "edgecache_rewarms",
            "Re-warms of an edge whose warm was missing, by outcome: ok, failed, no_predictions, expired",
            "outcome",
        )


_DEFAULT: list[DeliveryMetrics] = []


def default_metrics() -> DeliveryMetrics:
    """The metrics on prometheus_client's default registry (created once per process)."""
    if not _DEFAULT:
        _DEFAULT.append(DeliveryMetrics())
    return _DEFAULT[0]
