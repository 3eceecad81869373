"""Metrics provider for the embedded default: each service's router exposes per-version counters
in Prometheus text format at /_router/metrics; we read them directly, no Prometheus needed."""

from __future__ import annotations

from collections import defaultdict
from functools import cache

import httpx
from prometheus_client.parser import text_string_to_metric_families

from resources.metrics import MetricsSnapshot, MetricsUnavailable, VersionMetrics

REQUESTS = "release_router_requests"
DURATION = "release_router_request_duration_seconds"


def parse_router_metrics(text: str) -> dict[str, VersionMetrics]:
    """version -> cumulative counters, from one scrape of a router."""
    requests: dict[str, float] = defaultdict(float)
    errors: dict[str, float] = defaultdict(float)
    buckets: dict[str, dict[float, float]] = defaultdict(dict)
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            version = sample.labels.get("version")
            if version is None:
                continue
            if family.name == REQUESTS and sample.name.endswith("_total"):
                requests[version] += sample.value
                if sample.labels.get("code_class") == "5xx":
                    errors[version] += sample.value
            elif family.name == DURATION and sample.name.endswith("_bucket"):
                le = float(sample.labels["le"])
                buckets[version][le] = buckets[version].get(le, 0) + sample.value
    return {
        v: VersionMetrics(v, int(requests[v]), int(errors[v]), tuple(sorted((le, int(c)) for le, c in buckets[v].items())))
        for v in requests
    }


@cache
def _shared_client() -> httpx.Client:
    """One pooled client per process: a new client per scrape costs ~60 ms (SSL context set-up),
    most of a sensor tick (benchmarks/sensor_tick.py)."""
    return httpx.Client()


class RouterMetricsProvider:
    """Reads a service's router; `endpoint_of(service)` gives its base URL (the local platform)."""

    def __init__(self, endpoint_of, timeout: float = 2.0):
        self._endpoint_of = endpoint_of
        self._timeout = timeout
        self._client = _shared_client()

    def snapshot(self, service: str, stable_version: str, canary_version: str) -> MetricsSnapshot:
        base = self._endpoint_of(service)
        if not base:
            raise MetricsUnavailable(f"{service}: no router is running, so there are no metrics")
        url = f"{base}/_router/metrics"
        try:
            response = self._client.get(url, timeout=self._timeout)
            response.raise_for_status()
        except httpx.HTTPError as exc:
            raise MetricsUnavailable(f"{service}: router metrics at {url} unavailable ({type(exc).__name__})") from None
        by_version = parse_router_metrics(response.text)
        return MetricsSnapshot(service, by_version.get(stable_version), by_version.get(canary_version))
