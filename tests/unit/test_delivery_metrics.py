"""Delivery metrics from releases and their events (plain records, no ledger)."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from release_pipelines.core.delivery_metrics import delivery_metrics

NOW = datetime(2026, 11, 26, 12, tzinfo=UTC)


@dataclass
class R:
    id: str
    state: str
    created_at: datetime
    updated_at: datetime
    product: str = "shop"


@dataclass
class E:
    seq: int
    kind: str
    created_at: datetime
    payload: dict[str, Any] = field(default_factory=dict)


def _at(days_ago: float, minutes: float = 0) -> datetime:
    return NOW - timedelta(days=days_ago) + timedelta(minutes=minutes)


def _history() -> tuple[list[R], dict[str, list[E]]]:
    releases, events = [], {}
    # two completed releases: 30 and 90 minutes long
    for rid, day, minutes in (("a", 20, 30), ("b", 10, 90)):
        releases.append(R(rid, "completed", _at(day), _at(day, minutes)))
        events[rid] = [E(1, "state:planned", _at(day)), E(2, "state:canary", _at(day, 5)),
                       E(3, "state:completed", _at(day, minutes))]
    # one rolled back: failing verdict at +12 min, restored at +20 min (8 min to restore)
    releases.append(R("c", "rolled_back", _at(5), _at(5, 20)))
    events["c"] = [E(1, "state:planned", _at(5)), E(2, "verdict", _at(5, 12), {"verdict": "fail"}),
                   E(3, "state:rolling_back", _at(5, 13)), E(4, "state:rolled_back", _at(5, 20))]
    # one failed and one still running; one too old and one of another product
    releases.append(R("d", "failed", _at(3), _at(3, 5)))
    events["d"] = [E(1, "state:planned", _at(3)), E(2, "step:failed", _at(3, 4)), E(3, "state:failed", _at(3, 5))]
    releases.append(R("e", "canary", _at(0.01), _at(0.01)))
    releases.append(R("old", "completed", _at(60), _at(60, 10)))
    releases.append(R("x", "completed", _at(2), _at(2, 10), product="other"))
    return releases, events


def test_metrics_over_the_period() -> None:
    releases, events = _history()
    m = delivery_metrics("shop", releases, events, NOW, period_days=28)
    assert (m.releases, m.completed, m.rolled_back, m.failed, m.in_progress) == (5, 2, 1, 1, 1)
    assert m.change_failure_rate == pytest.approx(2 / 4)
    assert m.release_duration_median_seconds == pytest.approx(60 * 60)
    assert m.release_duration_mean_seconds == pytest.approx(60 * 60)
    assert m.time_to_restore_median_seconds == pytest.approx(8 * 60)
    assert m.releases_per_week == pytest.approx(2 / 4)
    meta = m.as_metadata()
    assert meta["change_failure_rate"] == pytest.approx(0.5) and "product" not in meta
    assert all(isinstance(v, (int, float)) for v in meta.values())


def test_no_releases_gives_no_rates() -> None:
    m = delivery_metrics("shop", [], {}, NOW)
    assert m.releases == 0 and m.change_failure_rate is None and m.releases_per_week == 0
    assert "change_failure_rate" not in m.as_metadata()


def test_restore_falls_back_to_entering_rolling_back() -> None:
    releases = [R("r", "rolled_back", _at(1), _at(1, 9))]
    events = {"r": [E(1, "state:planned", _at(1)), E(2, "state:rolling_back", _at(1, 6)),
                    E(3, "state:rolled_back", _at(1, 9))]}
    assert delivery_metrics("shop", releases, events, NOW).time_to_restore_mean_seconds == pytest.approx(180)
