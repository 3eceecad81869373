"""Metrics provider for the embedded default: each service's router exposes per-version counters
in Prometheus text format at /_router/metrics; we read them directly, no Prometheus needed. A body
that is not that format, or numbers that cannot be counters, is MetricsUnavailable with the reason
(no evidence, never a pass)."""

from __future__ import annotations

import math
import re
import ssl
import threading
from collections import OrderedDict, defaultdict
from functools import cache

import httpx

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


# The text exposition format (0.0.4), strictly: a line is blank, a comment, or one sample
# `name{label="value",...} value [timestamp]`. Anything else means the body is not a router's.
_LABEL = r'[a-zA-Z_][a-zA-Z0-9_]*="(?:[^"\\\n]|\\.)*"'
_VALUE = r"[+-]?(?:[0-9]+\.?[0-9]*(?:[eE][+-]?[0-9]+)?|\.[0-9]+(?:[eE][+-]?[0-9]+)?|NaN|Inf)"
_SAMPLE = re.compile(
    rf"([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{{((?:{_LABEL}(?:,{_LABEL})*,?)?)\}})?[ \t]+({_VALUE})(?:[ \t]+-?[0-9]+)?[ \t]*"
)
_LABELS = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\\n]|\\.)*)"')
_NUMBER = re.compile(_VALUE)
_ESCAPE = re.compile(r"\\(.)")
_DECLARED = {f"{REQUESTS}_total": "counter", DURATION: "histogram",
             f"{COHORT_REQUESTS}_total": "counter", COHORT_DURATION: "histogram"}


def _labels(text: str) -> dict[str, str]:
    labels = dict(_LABELS.findall(text))
    if "\\" in text:  # escaped \\, \" or \n in a value
        labels = {k: _ESCAPE.sub(lambda m: "\n" if m[1] == "n" else m[1], v) for k, v in labels.items()}
    return labels


def _declared_type_problem(line: str) -> str | None:
    """What is wrong with a `# TYPE` line that declares one of the judged families, if anything."""
    parts = line.split()
    expected = _DECLARED.get(parts[2]) if len(parts) == 4 else None
    if expected is not None and parts[3] != expected:
        return f"{parts[2]} is declared a {parts[3]}, not a {expected}"
    return None


def parse_router_metrics(text: str, cohort: str | None = None, source: str = "router metrics") -> dict[str, VersionMetrics]:
    """version -> cumulative counters, from one scrape of a router (one cohort's only, if given);
    MetricsUnavailable when `text` is not the exposition format or holds impossible counts.

    A strict parser of the router's own exposition (`resources.router`), not a general one: every
    line must be a comment or a well-formed sample, and only the two judged families are read
    (requests by code class, the latency histogram's buckets). It replaces prometheus_client's
    parser, which built every family and sample of the scrape on each tick (benchmarks/RESULTS.md,
    "Issue 19, P5 again")."""
    requests_name, duration_name = (REQUESTS, DURATION) if cohort is None else (COHORT_REQUESTS, COHORT_DURATION)
    total_name, bucket_name = f"{requests_name}_total", f"{duration_name}_bucket"
    requests: dict[str, float] = defaultdict(float)
    errors: dict[str, float] = defaultdict(float)
    buckets: dict[str, dict[float, float]] = defaultdict(dict)
    seen: set[tuple[str, str]] = set()
    for number, line in enumerate(text.splitlines(), 1):
        if not line or line.isspace():
            continue
        if line.startswith("#"):
            if line.startswith("# TYPE release_router_") and (problem := _declared_type_problem(line)):
                raise MetricsUnavailable(f"{source}: line {number}: {problem}")
            continue
        sample = _SAMPLE.fullmatch(line)
        if sample is None:
            raise MetricsUnavailable(
                f"{source}: the body is not Prometheus text format (line {number}: {line[:80]!r})")
        name, label_text, value_text = sample.groups()
        if name != total_name and name != bucket_name:
            continue
        if (name, label_text) in seen:
            raise MetricsUnavailable(f"{source}: line {number}: {name}{{{label_text}}} appears twice")
        seen.add((name, label_text))
        labels = _labels(label_text or "")
        version = labels.get("version")
        if version is None or (cohort is not None and labels.get("cohort") != cohort):
            continue
        value = float(value_text)
        if not math.isfinite(value):
            raise MetricsUnavailable(f"{source}: {name}{{version={version!r}}} is {value}, not a count")
        if name == total_name:
            requests[version] += value
            if labels.get("code_class") == "5xx":
                errors[version] += value
        else:
            le = _bound(labels.get("le"))
            if le is None:
                raise MetricsUnavailable(f"{source}: {name}{{version={version!r}}} has no numeric le")
            buckets[version][le] = buckets[version].get(le, 0) + value
    return {
        v: checked(VersionMetrics(v, int(requests[v]), int(errors[v]),
                                  tuple(sorted((le, int(c)) for le, c in buckets[v].items()))), source)
        for v in requests
    }


def _bound(le: str | None) -> float | None:
    """A bucket's upper bound (`+Inf` included), or None when it is missing or not a number."""
    if le is None or not _NUMBER.fullmatch(le):
        return None
    bound = float(le)
    return None if math.isnan(bound) else bound


ROUTER_CLIENTS = 1024
"""Routers whose connection is kept open between ticks (least recently read closed first)."""


@cache
def _ssl_context() -> ssl.SSLContext:
    """Built once: httpx builds one per client otherwise (~40 ms, most of a tick's scrape)."""
    return httpx.create_ssl_context()


class _ClientPerRouter:
    """One keep-alive connection per router, kept across sensor ticks. A single shared pool would
    check every idle connection on each request (httpcore), O(routers) per scrape; a pool of 20
    (httpx's default) reconnected to every router beyond the 20th of a tick."""

    def __init__(self, size: int):
        self._size = size
        self._clients: OrderedDict[str, httpx.Client] = OrderedDict()
        self._lock = threading.Lock()

    def __call__(self, base_url: str) -> httpx.Client:
        with self._lock:
            client = self._clients.pop(base_url, None) or httpx.Client(
                verify=_ssl_context(), limits=httpx.Limits(max_keepalive_connections=1, keepalive_expiry=30.0))
            self._clients[base_url] = client
            evicted = self._clients.popitem(last=False)[1] if len(self._clients) > self._size else None
        if evicted is not None:
            evicted.close()
        return client


client_for = _ClientPerRouter(ROUTER_CLIENTS)


class RouterMetricsProvider:
    """Reads a service's router; `endpoint_of(service)` gives its base URL (the local platform)."""

    def __init__(self, endpoint_of, timeout: float = 2.0, cohorts: dict[str, tuple[str, str]] | None = None):
        self._endpoint_of = endpoint_of
        self._cohorts = cohorts or {}  # service -> (stable cohort, canary cohort): see tenant_cohorts
        self._timeout = timeout

    def snapshot(self, service: str, stable_version: str, canary_version: str) -> MetricsSnapshot:
        base = self._endpoint_of(service)
        if not base:
            raise MetricsUnavailable(f"{service}: no router is running, so there are no metrics")
        url = f"{base}/_router/metrics"
        try:
            response = client_for(base).get(url, timeout=self._timeout)
            response.raise_for_status()
        except httpx.HTTPError as exc:
            raise MetricsUnavailable(f"{service}: router metrics at {url} unavailable ({type(exc).__name__})") from None
        if service in self._cohorts:
            stable_cohort, canary_cohort = self._cohorts[service]
            return MetricsSnapshot(service, parse_router_metrics(response.text, stable_cohort, url).get(stable_version),
                                   parse_router_metrics(response.text, canary_cohort, url).get(canary_version))
        by_version = parse_router_metrics(response.text, source=url)
        return MetricsSnapshot(service, by_version.get(stable_version), by_version.get(canary_version))
