"""Delivery metrics (pure), from the ledger's releases and events, per product.

- release duration: launch (`state:planned`) to `state:completed`, completed releases only;
- change failure rate: (rolled back + failed) / releases that finished (completed, rolled back
  or failed);
- time to restore: first failure signal (a failing verdict, a failed step, entering
  `rolling_back` or `failed`) to `state:rolled_back`;
- release frequency: completed releases per week over the period.

Only releases launched inside the period (default: the last 30 days before `now`) count.
"""

from __future__ import annotations

import statistics
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from datetime import datetime, timedelta
from typing import Any

FAILURE_SIGNALS = ("step:failed", "state:rolling_back", "state:failed")


@dataclass(frozen=True)
class DeliveryMetrics:
    product: str
    period_days: float
    releases: int
    completed: int
    rolled_back: int
    failed: int
    in_progress: int
    change_failure_rate: float | None
    release_duration_median_seconds: float | None
    release_duration_mean_seconds: float | None
    time_to_restore_median_seconds: float | None
    time_to_restore_mean_seconds: float | None
    releases_per_week: float

    def as_metadata(self) -> dict[str, float | int]:
        """Numbers only (None left out), for Dagster's numeric metadata and its plots."""
        return {k: v for k, v in asdict(self).items() if isinstance(v, (int, float)) and v is not None}


def _state(release: Any) -> str:
    return getattr(release.state, "value", release.state)


def _first(events: Sequence[Any], kind: str) -> datetime | None:
    return next((e.created_at for e in events if e.kind == kind), None)


def _failure_start(events: Sequence[Any]) -> datetime | None:
    times = [
        e.created_at
        for e in events
        if e.kind in FAILURE_SIGNALS or (e.kind == "verdict" and (e.payload or {}).get("verdict") == "fail")
    ]
    return min(times) if times else None


def _median(values: list[float]) -> float | None:
    return round(statistics.median(values), 3) if values else None


def _mean(values: list[float]) -> float | None:
    return round(statistics.fmean(values), 3) if values else None


def delivery_metrics(
    product: str,
    releases: Sequence[Any],
    events: Mapping[str, Sequence[Any]],
    now: datetime,
    period_days: float = 30.0,
) -> DeliveryMetrics:
    """Metrics of `product` over the `period_days` before `now`; `events` maps release id to its
    events (oldest first)."""
    since = now - timedelta(days=period_days)
    chosen = [r for r in releases if r.product == product and since <= r.created_at <= now]
    counts = {"completed": 0, "rolled_back": 0, "failed": 0}
    durations: list[float] = []
    restores: list[float] = []
    for release in chosen:
        state = _state(release)
        trail = sorted(events.get(release.id, ()), key=lambda e: e.seq)
        if state in counts:
            counts[state] += 1
        began = _first(trail, "state:planned") or release.created_at
        if state == "completed":
            done = _first(trail, "state:completed") or release.updated_at
            durations.append((done - began).total_seconds())
        if state == "rolled_back":
            restored = _first(trail, "state:rolled_back") or release.updated_at
            broke = _failure_start(trail) or began
            restores.append(max(0.0, (restored - broke).total_seconds()))
    finished = sum(counts.values())
    return DeliveryMetrics(
        product=product,
        period_days=float(period_days),
        releases=len(chosen),
        completed=counts["completed"],
        rolled_back=counts["rolled_back"],
        failed=counts["failed"],
        in_progress=len(chosen) - finished,
        change_failure_rate=round((counts["rolled_back"] + counts["failed"]) / finished, 4) if finished else None,
        release_duration_median_seconds=_median(durations),
        release_duration_mean_seconds=_mean(durations),
        time_to_restore_median_seconds=_median(restores),
        time_to_restore_mean_seconds=_mean(restores),
        releases_per_week=round(counts["completed"] / (period_days / 7.0), 4),
    )
