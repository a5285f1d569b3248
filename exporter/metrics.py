"""Prometheus metrics of the exporter, defined once; components increment them, `/metrics` serves them.

Labels stay low-cardinality (outcome, reason, state), never batch or job IDs.
"""

from __future__ import annotations

import functools
from typing import TypeVar

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.metrics import MetricWrapperBase

__all__ = [
    "BUGS",
    "CAMPAIGN_JOBS",
    "CHUNKS",
    "DEAD_LETTERS",
    "DLI_LATENCY",
    "DLI_REQUESTS",
    "DLI_RETRIES",
    "DUPLICATE_IDS",
    "INFLIGHT",
    "LEASES_LOST",
    "QUEUE_DEPTH",
    "RATE",
    "RATE_LIMIT_WAIT",
    "READY",
    "REGISTRY",
    "STALE_SAVES",
    "STATED_LIMIT",
    "THROTTLED",
    "VERIFY_LATENCY",
    "VERIFY_RESULTS",
    "labelled",
]

_Metric = TypeVar("_Metric", bound=MetricWrapperBase)

REGISTRY = CollectorRegistry(auto_describe=True)

_LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)

DLI_REQUESTS = Counter(
    "exporter_dli_requests",
    "Requests sent to DLI, by operation and outcome (ok, throttled, server_error, permanent, ...)",
    ["operation", "outcome"],
    registry=REGISTRY,
)
DLI_LATENCY = Histogram(
    "exporter_dli_request_seconds",
    "Latency of single DLI requests",
    ["operation"],
    buckets=_LATENCY_BUCKETS,
    registry=REGISTRY,
)
DLI_RETRIES = Counter(
    "exporter_dli_retries", "DLI requests retried, by reason", ["reason"], registry=REGISTRY
)
RATE_LIMIT_WAIT = Histogram(
    "exporter_rate_limit_wait_seconds",
    "Time spent waiting for a rate-limiter slot",
    buckets=(0, 0.001, 0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
    registry=REGISTRY,
)
VERIFY_RESULTS = Counter(
    "exporter_verify_results",
    "ZIP verifications, by outcome (verified, missing, empty, invalid, error)",
    ["outcome"],
    registry=REGISTRY,
)
VERIFY_LATENCY = Histogram(
    "exporter_verify_seconds",
    "Time to verify one ZIP in OBS, grace retries included",
    buckets=_LATENCY_BUCKETS,
    registry=REGISTRY,
)
CHUNKS = Counter("exporter_chunks", "Chunk transitions, by the state reached", ["state"], registry=REGISTRY)
INFLIGHT = Gauge("exporter_inflight_exports", "Export requests in flight", registry=REGISTRY)
RATE = Gauge(
    "exporter_rate_limit_per_second",
    "The pace of each DLI endpoint's limiter (fixed, or learned with EXPORTER_RATE_LIMIT=auto)",
    ["endpoint"],
    registry=REGISTRY,
)
STATED_LIMIT = Gauge(
    "exporter_rate_stated_limit_per_second",
    "The limit a 429 of each DLI endpoint stated, per second (0 while none has stated one)",
    ["endpoint"],
    registry=REGISTRY,
)
THROTTLED = Counter(
    "exporter_rate_throttled",
    "429 answers of each DLI endpoint, the signal the learned pace follows",
    ["endpoint"],
    registry=REGISTRY,
)
QUEUE_DEPTH = Gauge("exporter_queue_depth", "Messages waiting or in flight", registry=REGISTRY)
DEAD_LETTERS = Counter(
    "exporter_dead_letters", "Messages parked in dead letters, by reason kind", ["kind"], registry=REGISTRY
)
BUGS = Counter(
    "exporter_unexpected_errors",
    "Exceptions no component names (bugs), logged with their traceback, by where they ended",
    ["where"],
    registry=REGISTRY,
)
STALE_SAVES = Counter(
    "exporter_stale_chunk_saves",
    "Chunk saves refused because another owner moved the chunk first (compare-and-set)",
    registry=REGISTRY,
)
LEASES_LOST = Counter(
    "exporter_leases_lost",
    "Leases lost while work ran, by kind (chunk, message)",
    ["kind"],
    registry=REGISTRY,
)
DUPLICATE_IDS = Counter("exporter_duplicate_job_ids", "Repeated job IDs dropped at intake", registry=REGISTRY)

READY = Gauge(
    "exporter_ready",
    "1 while this replica takes work (queue reachable, not draining), as /readyz says; set on each scrape",
    registry=REGISTRY,
)
CAMPAIGN_JOBS = Gauge(
    "exporter_campaign_jobs",
    "Jobs of each campaign by state (total, verified, failed, pending): unfinished campaigns and the few "
    "most recent finished ones, read from the stores on each scrape",
    ["campaign", "state"],
    registry=REGISTRY,
)


@functools.lru_cache(maxsize=1024)
def _child(metric: MetricWrapperBase, values: tuple[str, ...]) -> MetricWrapperBase:
    return metric.labels(*values)


def labelled(metric: _Metric, *values: str) -> _Metric:
    """`metric.labels(*values)`, looked up once: label sets are few, requests many (labels() locks)."""
    child: _Metric = _child(metric, values)  # type: ignore[assignment]
    return child
