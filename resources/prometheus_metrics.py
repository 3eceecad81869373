"""Metrics provider over the Prometheus HTTP API, with PromQL templates.

Templates take {service} and {version} (and {window} for teams whose queries use ranges); the
defaults read the counters our routers export, as any service mesh's would be read. An empty
result is "no evidence yet", never zero.
"""

from __future__ import annotations

from dataclasses import dataclass

import httpx

from resources.metrics import MetricsSnapshot, MetricsUnavailable, VersionMetrics


@dataclass(frozen=True)
class PromQLTemplates:
    requests: str = 'sum(release_router_requests_total{{service="{service}",version="{version}"}})'
    errors: str = 'sum(release_router_requests_total{{service="{service}",version="{version}",code_class="5xx"}})'
    latency_buckets: str = (
        'sum by (le) (release_router_request_duration_seconds_bucket{{service="{service}",version="{version}"}})'
    )
    window: str = "5m"


class PrometheusMetricsProvider:
    def __init__(self, base_url: str, templates: PromQLTemplates | None = None, timeout: float = 5.0):
        self.base_url = base_url.rstrip("/")
        self.templates = templates or PromQLTemplates()
        self.timeout = timeout

    def query(self, promql: str) -> list[dict]:
        url = f"{self.base_url}/api/v1/query"
        try:
            response = httpx.get(url, params={"query": promql}, timeout=self.timeout)
            response.raise_for_status()
            body = response.json()
        except (httpx.HTTPError, ValueError) as exc:
            raise MetricsUnavailable(f"Prometheus at {self.base_url} did not answer ({type(exc).__name__}: {exc})") from None
        if body.get("status") != "success":
            raise MetricsUnavailable(f"Prometheus refused the query {promql!r}: {body.get('error', 'unknown error')}")
        return body["data"]["result"]

    def _render(self, template: str, service: str, version: str) -> str:
        return template.format(service=service, version=version, window=self.templates.window)

    def _scalar(self, template: str, service: str, version: str) -> int | None:
        result = self.query(self._render(template, service, version))
        return int(float(result[0]["value"][1])) if result else None

    def version_metrics(self, service: str, version: str) -> VersionMetrics | None:
        requests = self._scalar(self.templates.requests, service, version)
        if requests is None:
            return None
        errors = self._scalar(self.templates.errors, service, version) or 0
        rows = self.query(self._render(self.templates.latency_buckets, service, version))
        buckets = sorted((float(r["metric"]["le"]), int(float(r["value"][1]))) for r in rows if "le" in r["metric"])
        return VersionMetrics(version, requests, errors, tuple(buckets))

    def snapshot(self, service: str, stable_version: str, canary_version: str) -> MetricsSnapshot:
        return MetricsSnapshot(
            service, self.version_metrics(service, stable_version), self.version_metrics(service, canary_version)
        )
