"""Per-version counters of a canary and its baseline, as a metrics provider reads them.

Plain data: the providers (`resources.router_metrics`, `resources.prometheus_metrics`) build it,
the canary sensor's tick plan (`core.canary_tick`) and the judge read it.
"""

from __future__ import annotations

from dataclasses import dataclass, field


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
