"""The metrics-provider protocol: per-version counters for a canary and its baseline.

Providers are dumb (like Argo Rollouts' metric providers): they return cumulative counts and
histograms as they find them and know nothing about decisions; the pure judge decides. A provider
that cannot answer raises MetricsUnavailable, which the sensor turns into "no evidence" (a wait,
never a pass).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

from release_pipelines.core.errors import ReleaseError


class MetricsUnavailable(ReleaseError):
    """The backend is down or has no series yet; the message says which and where."""


@dataclass(frozen=True)
class VersionMetrics:
    """Cumulative counters of one version since its series began."""

    version: str
    requests: int
    errors: int
    latency_buckets: tuple[tuple[float, int], ...] = field(default=())  # (le seconds, cumulative)

    def minus(self, earlier: VersionMetrics | None) -> VersionMetrics:
        """Counts since `earlier` (a counter reset - a restarted router - counts from zero)."""
        if earlier is None or self.requests < earlier.requests:
            return self
        old = dict(earlier.latency_buckets)
        return VersionMetrics(
            self.version,
            self.requests - earlier.requests,
            max(0, self.errors - earlier.errors),
            tuple((le, max(0, count - old.get(le, 0))) for le, count in self.latency_buckets),
        )


@dataclass(frozen=True)
class MetricsSnapshot:
    service: str
    stable: VersionMetrics | None
    canary: VersionMetrics | None


class MetricsProvider(Protocol):
    def snapshot(self, service: str, stable_version: str, canary_version: str) -> MetricsSnapshot:
        """Cumulative per-version metrics now; raises MetricsUnavailable when it cannot tell."""
        ...
