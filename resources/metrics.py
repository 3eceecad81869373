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
from release_pipelines.core.metrics import MetricsSnapshot


class MetricsUnavailable(ReleaseError):
    """The backend is down or has no series yet; the message says which and where."""


class MetricsProvider(Protocol):
    def snapshot(self, service: str, stable_version: str, canary_version: str) -> MetricsSnapshot:
        """Cumulative per-version metrics now; raises MetricsUnavailable when it cannot tell."""
        ...
