"""The metrics-provider protocol: per-version counters for a canary and its baseline.

Providers are dumb (like Argo Rollouts' metric providers): they return cumulative counts and
histograms as they find them and know nothing about decisions; the pure judge decides. A provider
that cannot answer raises MetricsUnavailable, which the sensor turns into "no evidence" (a wait,
never a pass). The data it returns (`VersionMetrics`, `MetricsSnapshot`) is the core's
(`core.metrics`), so the pure tick plan can take it.
"""

from __future__ import annotations

from typing import Protocol

from release_pipelines.core.errors import ReleaseError
from release_pipelines.core.metrics import MetricsSnapshot, VersionMetrics


class MetricsUnavailable(ReleaseError):
    """The backend is down or has no series yet; the message says which and where."""


def checked(metrics: VersionMetrics, source: str) -> VersionMetrics:
    """`metrics` if they can be counters at all; else MetricsUnavailable naming what is wrong (a
    garbage answer is no evidence, never a pass): negative counts, more errors than requests, or
    histogram buckets that are not cumulative (a bucket smaller than the one below it)."""
    where = f"{source}: version {metrics.version}"
    if metrics.requests < 0 or metrics.errors < 0:
        raise MetricsUnavailable(f"{where} has negative counts (requests {metrics.requests}, errors {metrics.errors})")
    if metrics.errors > metrics.requests:
        raise MetricsUnavailable(f"{where} has more errors ({metrics.errors}) than requests ({metrics.requests})")
    previous = (float("-inf"), 0)
    for le, count in metrics.latency_buckets:
        if count < previous[1]:
            raise MetricsUnavailable(
                f"{where}: latency histogram buckets are not cumulative (le={le:g} has {count}, "
                f"le={previous[0]:g} below it has {previous[1]})"
            )
        previous = (le, count)
    return metrics


class MetricsProvider(Protocol):
    def snapshot(self, service: str, stable_version: str, canary_version: str) -> MetricsSnapshot:
        """Cumulative per-version metrics now; raises MetricsUnavailable when it cannot tell."""
        ...
