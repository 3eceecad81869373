"""Metrics provider for the embedded default: each service's router exposes per-version counters
in Prometheus text format at /_router/metrics; we read them directly, no Prometheus needed. A body
that is not that format, or numbers that cannot be counters, is MetricsUnavailable with the reason
(no evidence, never a pass)."""

from __future__ import annotations

import math
from collections import defaultdict
from functools import cache

import httpx
from prometheus_client.parser import text_string_to_metric_families

from release_pipelines.core.metrics import MetricsSnapshot, VersionMetrics
from release_pipelines.resources.metrics import MetricsUnavailable, checked

REQUESTS = "release_router_requests"
DURATION = "release_router_request_duration_seconds"
COHORT_REQUESTS = "release_router_cohort_requests"
COHORT_DURATION = "release_router_cohort_request_duration_seconds"


def tenant_cohorts(manifest) -> dict[str, tuple[str, str]]:
    """service -> (stable cohort, canary cohort) for services with tenant-scoped canaries.

    Every request of a named tenant goes to the canary, so stable never serves that cohort: the
    closest like-for-like comparison the routers can give is the canary's TENANT requests against
    stable's GENERAL (non-tenant) requests of the same service and endpoints. That still compares
    different customers (a tenant may have its own error or latency profile); choose tenants whose
    traffic resembles everyone else's, or judge at a weight > 0 with no tenants for a pure A/B.
    """
    return {s.name: ("general", "tenant") for s in getattr(manifest, "services", []) if s.canary.tenants}


def parse_router_metrics(text: str, cohort: str | None = None, source: str = "router metrics") -> dict[str, VersionMetrics]:
    """version -> cumulative counters, from one scrape of a router (one cohort's only, if given);
    MetricsUnavailable when `text` is not the exposition format or holds impossible counts."""
    try:
        families = list(text_string_to_metric_families(text))
    except (ValueError, TypeError, KeyError, IndexError) as exc:
        raise MetricsUnavailable(f"{source}: the body is not Prometheus text format ({exc})") from None
    requests: dict[str, float] = defaultdict(float)
    errors: dict[str, float] = defaultdict(float)
    buckets: dict[str, dict[float, float]] = defaultdict(dict)
    names = (REQUESTS, DURATION) if cohort is None else (COHORT_REQUESTS, COHORT_DURATION)
    for family in families:
        if family.name not in names:
            continue
        for sample in family.samples:
            version = sample.labels.get("version")
            if version is None or (cohort is not None and sample.labels.get("cohort") != cohort):
                continue
            if not math.isfinite(sample.value):
                raise MetricsUnavailable(f"{source}: {sample.name}{{version={version!r}}} is {sample.value}, not a count")
            if family.name == names[0] and sample.name.endswith("_total"):
                requests[version] += sample.value
                if sample.labels.get("code_class") == "5xx":
                    errors[version] += sample.value
            elif family.name == names[1] and sample.name.endswith("_bucket"):
                le = float(sample.labels.get("le", "nan"))
                if math.isnan(le):
                    raise MetricsUnavailable(f"{source}: {sample.name}{{version={version!r}}} has no numeric le")
                buckets[version][le] = buckets[version].get(le, 0) + sample.value
    return {
        v: checked(VersionMetrics(v, int(requests[v]), int(errors[v]),
                                  tuple(sorted((le, int(c)) for le, c in buckets[v].items()))), source)
        for v in requests
    }


@cache
def _shared_client() -> httpx.Client:
    """One pooled client per process: a new client per scrape costs ~60 ms (SSL context set-up),
    most of a sensor tick (benchmarks/sensor_tick.py)."""
    return httpx.Client()


class RouterMetricsProvider:
    """Reads a service's router; `endpoint_of(service)` gives its base URL (the local platform)."""

    def __init__(self, endpoint_of, timeout: float = 2.0, cohorts: dict[str, tuple[str, str]] | None = None):
        self._endpoint_of = endpoint_of
        self._cohorts = cohorts or {}  # service -> (stable cohort, canary cohort): see tenant_cohorts
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
        if service in self._cohorts:
            stable_cohort, canary_cohort = self._cohorts[service]
            return MetricsSnapshot(service, parse_router_metrics(response.text, stable_cohort, url).get(stable_version),
                                   parse_router_metrics(response.text, canary_cohort, url).get(canary_version))
        by_version = parse_router_metrics(response.text, source=url)
        return MetricsSnapshot(service, by_version.get(stable_version), by_version.get(canary_version))
