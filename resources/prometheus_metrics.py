"""Metrics provider over the Prometheus HTTP API, with PromQL templates.

Templates are plain PromQL with three placeholders, `{service}`, `{version}` and `{window}`
(for teams whose queries use ranges); every other brace is PromQL's own, so label matchers need
no escaping. The defaults read the counters our routers export, as any service mesh's would be
read. Each template must return one series (or, for latency, one series per `le`); an empty
result is "no evidence yet" (None), never zero. An answer that is not the API's, or numbers that
cannot be counters (NaN, negative, more errors than requests, buckets not cumulative), raise
MetricsUnavailable naming what was wrong: no evidence, never a pass.

All queries of one snapshot are evaluated at the same instant, so requests, errors and the
histogram come from the same scrape as far as Prometheus can tell.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass

import httpx

from release_pipelines.core.metrics import MetricsSnapshot, VersionMetrics
from release_pipelines.resources.metrics import MetricsUnavailable, checked


@dataclass(frozen=True)
class PromQLTemplates:
    requests: str = 'sum(release_router_requests_total{service="{service}",version="{version}"})'
    errors: str = 'sum(release_router_requests_total{service="{service}",version="{version}",code_class="5xx"})'
    latency_buckets: str = (
        'sum by (le) (release_router_request_duration_seconds_bucket{service="{service}",version="{version}"})'
    )
    window: str = "5m"


def _label_value(value: str) -> str:
    """Escape a value for use inside a double-quoted PromQL label matcher."""
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


class PrometheusMetricsProvider:
    def __init__(self, base_url: str, templates: PromQLTemplates | None = None, timeout: float = 5.0):
        self.base_url = base_url.rstrip("/")
        self.templates = templates or PromQLTemplates()
        self.timeout = timeout

    def query(self, promql: str, at: float | None = None) -> list[dict]:
        """Instant vector for `promql` (at unix time `at`, default now); MetricsUnavailable if it fails."""
        url = f"{self.base_url}/api/v1/query"
        params = {"query": promql} | ({"time": f"{at:.3f}"} if at is not None else {})
        try:
            response = httpx.get(url, params=params, timeout=self.timeout)
        except httpx.HTTPError as exc:
            raise MetricsUnavailable(f"Prometheus at {url} did not answer ({type(exc).__name__}: {exc})") from None
        try:
            body = response.json()
        except ValueError:
            body = None
        if not isinstance(body, dict) or body.get("status") not in ("success", "error") or (
                response.is_error and body.get("status") != "error"):
            raise MetricsUnavailable(
                f"Prometheus at {url} answered HTTP {response.status_code} without a Prometheus API body "
                f"(is {self.base_url} a Prometheus server?)"
            )
        if body.get("status") != "success":
            raise MetricsUnavailable(
                f"Prometheus at {url} refused the query {promql!r}: "
                f"{body.get('errorType', 'error')}: {body.get('error', 'unknown error')}"
            )
        data = body.get("data")
        if not isinstance(data, dict) or data.get("resultType") != "vector":
            raise MetricsUnavailable(
                f"Prometheus at {url}: query {promql!r} gave "
                f"{data.get('resultType') if isinstance(data, dict) else data!r}, not an instant vector"
            )
        result = data.get("result") or []
        if not isinstance(result, list) or not all(_is_sample(row) for row in result):
            raise MetricsUnavailable(
                f"Prometheus at {url}: query {promql!r} answered samples that are not the API's "
                "({metric: {...}, value: [time, \"number\"]})"
            )
        return result

    def render(self, template: str, service: str, version: str) -> str:
        return (
            template.replace("{service}", _label_value(service))
            .replace("{version}", _label_value(version))
            .replace("{window}", self.templates.window)
        )

    def _count(self, template: str, service: str, version: str, at: float) -> int | None:
        promql = self.render(template, service, version)
        result = self.query(promql, at)
        if not result:
            return None
        if len(result) > 1:
            raise MetricsUnavailable(
                f"Prometheus at {self.base_url}: query {promql!r} returned {len(result)} series; "
                "a count template must aggregate to one (wrap it in sum(...))"
            )
        return _as_count(result[0]["value"][1], promql)

    def version_metrics(self, service: str, version: str, at: float | None = None) -> VersionMetrics | None:
        """Cumulative counters of one version, or None when Prometheus has no series for it."""
        at = time.time() if at is None else at
        requests = self._count(self.templates.requests, service, version, at)
        if requests is None:
            return None
        # No 5xx series yet means no error was ever counted: zero, given that requests exist.
        errors = self._count(self.templates.errors, service, version, at) or 0
        promql = self.render(self.templates.latency_buckets, service, version)
        buckets = sorted(
            (_as_le(row["metric"]["le"], promql), _as_count(row["value"][1], promql))
            for row in self.query(promql, at) if "le" in row.get("metric", {})
        )
        return checked(VersionMetrics(version, requests, errors, tuple(buckets)), f"Prometheus at {self.base_url}")

    def snapshot(self, service: str, stable_version: str, canary_version: str) -> MetricsSnapshot:
        at = time.time()
        return MetricsSnapshot(
            service,
            self.version_metrics(service, stable_version, at) if stable_version else None,
            self.version_metrics(service, canary_version, at),
        )


def _is_sample(row: object) -> bool:
    return (isinstance(row, dict) and isinstance(row.get("metric", {}), dict)
            and isinstance(row.get("value"), list) and len(row["value"]) == 2)


def _as_count(raw: object, promql: str) -> int:
    try:
        value = float(raw)
    except (TypeError, ValueError):
        value = math.nan
    if not math.isfinite(value) or value < 0:
        raise MetricsUnavailable(f"query {promql!r} gave {raw!r}, not a count")
    return round(value)


def _as_le(raw: object, promql: str) -> float:
    try:
        le = float(raw)
    except (TypeError, ValueError):
        le = math.nan
    if math.isnan(le):
        raise MetricsUnavailable(f"query {promql!r} gave a bucket le={raw!r}, not a bound")
    return le
