"""Error budgets (from a service's SLO and its router counters) and resource budgets (memory room
for a canary beside stable). Pure functions: no Dagster, no I/O; preflight and the sensor feed them.

Error budget over a request window: a window of `window_requests` requests may contain
`(1 - availability) * window` failures and `(1 - latency_target) * window` slow requests. Counts
over fewer requests than the window are charged against the whole window (the requests not seen
yet are assumed good); counts over more are scaled down to one window. The remaining fraction
is `1 - max(spent on errors, spent on latency)`: 1.0 untouched, 0.0 exactly spent, below 0
overspent (so a report can say "spent 340 %").
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from release_pipelines.core.manifest import Manifest, Slo


@dataclass(frozen=True)
class BudgetStatus:
    service: str
    requests: int
    errors: int
    slow: int
    spent_errors: float  # fraction of the error budget used (1.0 = all of it)
    spent_latency: float

    @property
    def remaining(self) -> float:
        return 1.0 - max(self.spent_errors, self.spent_latency)

    @property
    def spent(self) -> float:
        return max(self.spent_errors, self.spent_latency)

    @property
    def exhausted(self) -> bool:
        return self.spent >= 1.0


def budget_status(service: str, slo: Slo, requests: int, errors: int, slow: int = 0) -> BudgetStatus:
    requests, errors, slow = max(0, int(requests)), max(0, int(errors)), max(0, int(slow))
    scale = slo.window_requests / requests if requests > slo.window_requests else 1.0
    allowed_errors = (1 - slo.availability) * slo.window_requests
    allowed_slow = (1 - slo.latency_target) * slo.window_requests
    return BudgetStatus(
        service, requests, errors, slow,
        spent_errors=errors * scale / allowed_errors,
        spent_latency=slow * scale / allowed_slow,
    )


def error_budget(slo: Slo, requests: int, errors: int, slow: int = 0) -> float:
    """Remaining fraction of the error budget (1.0 untouched, <= 0 spent); see the module docstring."""
    return budget_status("", slo, requests, errors, slow).remaining


def slow_requests(latency_buckets: Sequence[tuple[float, int]], latency_ms: float) -> int:
    """Requests slower than `latency_ms` from a cumulative histogram [(le seconds, count), ...].

    Counted against the largest bucket bound at or below the threshold, so a request is only
    called slow when the histogram proves it (a threshold between bounds errs towards "slow").
    """
    if not latency_buckets:
        return 0
    buckets = sorted((float(le), int(n)) for le, n in latency_buckets)
    total = buckets[-1][1] if math.isinf(buckets[-1][0]) else max(n for _, n in buckets)
    fast = max((n for le, n in buckets if le <= latency_ms / 1000), default=0)
    return max(0, total - fast)


def budget_problem(status: BudgetStatus, slo: Slo) -> str | None:
    """The refusal text for a spent budget, naming the service, its SLO and how much is spent."""
    if not status.exhausted:
        return None
    return (
        f"{status.service}: error budget spent ({status.spent:.0%} used: {status.errors} errors and "
        f"{status.slow} requests slower than {slo.latency_ms:g} ms in {status.requests} requests; SLO "
        f"availability {slo.availability:.2%}, {slo.latency_target:.0%} under {slo.latency_ms:g} ms over "
        f"{slo.window_requests} requests). Fix stable first, or wait until the budget recovers"
    )


def memory_room_problem(
    manifest: Manifest, running_stable: Iterable[str], canaries: Iterable[str], available_mb: float
) -> str | None:
    """Refusal when the memory budgets of the running stable versions plus the new canaries do
    not fit in the available memory (services without a `resources.memory_mb` count as 0)."""

    def budget(name: str) -> float:
        spec = manifest.service(name)
        return (spec.resources.memory_mb or 0.0) if spec.resources else 0.0

    stable = {s: budget(s) for s in running_stable}
    canary = {s: budget(s) for s in canaries}
    needed = sum(stable.values()) + sum(canary.values())
    if not canary or sum(canary.values()) == 0 or needed <= available_mb:
        return None
    parts = ", ".join(f"{s} {mb:g} MB" for s, mb in canary.items() if mb)
    running = ", ".join(f"{s} {mb:g} MB" for s, mb in stable.items() if mb) or "none"
    return (
        f"not enough memory to run canaries beside stable: canaries need {parts}; running stable versions "
        f"budget {running}; total {needed:g} MB but only {available_mb:.0f} MB is available. "
        "Lower resources.memory_mb, release fewer services at once, or free memory"
    )


def memory_samples(usage: Mapping[str, tuple[float, float]]) -> tuple[float | None, float | None]:
    """(stable rss MB, canary rss MB) from `LocalPlatform.resource_usage`, None where not running."""
    stable, canary = usage.get("stable"), usage.get("canary")
    return (stable[0] if stable else None, canary[0] if canary else None)
