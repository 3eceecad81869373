"""Rollback readiness from synthetic ledger events: it changes the moment the release crosses a line."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from release_pipelines.resources.manifest_files import load_manifest

from release_pipelines.core.readiness import (
    DEFAULT_MIGRATION_SECONDS,
    Readiness,
    assess,
    rollback_durations,
)

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "shop" / "release.yaml"
T0 = datetime(2026, 11, 2, 10, 0, tzinfo=UTC)


@dataclass(frozen=True)
class Ev:
    kind: str
    payload: dict[str, Any] = field(default_factory=dict)
    created_at: datetime = T0


@pytest.fixture(scope="module")
def shop():
    return load_manifest(EXAMPLE)


def with_rollback(manifest, strategy: str):
    data = manifest.model_dump(by_alias=True)
    data["databases"][0]["rollback"] = strategy
    return type(manifest).model_validate(data)


VERSIONS = {"orders": "1.1.0", "catalog": "1.1.0"}
EXPAND = [Ev("state:planned"), Ev("state:preflight"), Ev("state:expanding"),
          Ev("migrate:start", {"database": "shop_db", "pending": ["0004_order_currency"]}),
          Ev("migrate:done", {"database": "shop_db", "revisions": ["0004_order_currency"], "seconds": 20.0})]


def test_canary_with_reversible_expand_is_ready_with_an_estimate(shop) -> None:
    result = assess("canary", VERSIONS, EXPAND + [Ev("state:canary")], shop, {"0004_order_currency": True})
    assert result.level is Readiness.ready
    assert result.estimate_from == "defaults"
    # 1.5 x the 20 s upgrade for the downgrade, plus per-service defaults
    assert result.estimated_seconds > 30 and result.estimated_seconds < 100


def test_the_moment_an_irreversible_revision_is_applied_it_is_degraded(shop) -> None:
    before = assess("expanding", VERSIONS, EXPAND[:4], shop, {"0004_order_currency": False})
    after = assess("expanding", VERSIONS, EXPAND, shop, {"0004_order_currency": False})
    assert before.level is Readiness.ready
    assert after.level is Readiness.degraded
    assert "irreversible migration applied (0004_order_currency)" in after.reasons[0]


def test_snapshot_strategy_with_applied_revisions_needs_a_restore(shop) -> None:
    snap = with_rollback(shop, "snapshot")
    assert assess("canary", VERSIONS, EXPAND[:3], snap).level is Readiness.ready  # nothing applied yet
    result = assess("canary", VERSIONS, EXPAND, snap)
    assert result.level is Readiness.degraded and "snapshot" in result.reasons[0]


def test_roll_forward_keeps_schema_but_stays_ready_when_reversible(shop) -> None:
    result = assess("canary", VERSIONS, EXPAND, with_rollback(shop, "roll-forward"))
    assert result.level is Readiness.ready and "roll-forward" in result.reasons[0]


def test_past_contracting_it_is_impossible(shop) -> None:
    events = EXPAND + [Ev("state:canary"), Ev("state:promoting"), Ev("state:baking")]
    assert assess("baking", VERSIONS, events, shop).level is Readiness.ready
    crossed = assess("contracting", VERSIONS, events + [Ev("state:contracting")], shop)
    assert crossed.level is Readiness.impossible and "point of no return" in crossed.reasons[0]
    # a failed release that had contracted stays impossible
    failed = assess("failed", VERSIONS, events + [Ev("state:contracting"), Ev("state:failed")], shop)
    assert failed.level is Readiness.impossible
    assert crossed.estimated_seconds is None


def test_terminal_states_have_nothing_to_roll_back(shop) -> None:
    assert assess("rolled_back", VERSIONS, EXPAND, shop).level is Readiness.impossible
    assert assess("completed", VERSIONS, EXPAND, shop).level is Readiness.impossible


def test_promoted_services_take_longer_to_restore(shop) -> None:
    canary = assess("canary", VERSIONS, EXPAND, shop)
    promoted = assess("baking", VERSIONS, EXPAND + [Ev("promote:done", {"service": "orders"})], shop)
    assert promoted.estimated_seconds > canary.estimated_seconds


def test_history_median_wins_over_defaults(shop) -> None:
    histories = [
        [Ev("state:rolling_back", created_at=T0), Ev("state:rolled_back", created_at=T0 + timedelta(seconds=s))]
        for s in (30, 40, 90)
    ] + [[Ev("state:rolling_back")]]  # an unfinished rollback does not count
    durations = rollback_durations(histories)
    assert durations == [30, 40, 90]
    result = assess("canary", VERSIONS, EXPAND, shop, past_rollbacks=durations)
    assert result.estimated_seconds == 40 and result.estimate_from == "history (3 rollbacks)"


def test_unknown_migration_duration_uses_the_per_revision_default(shop) -> None:
    events = [Ev("migrate:done", {"database": "shop_db", "revisions": ["a", "b"]})]
    with_migrations = assess("canary", VERSIONS, events, shop).estimated_seconds
    without = assess("canary", VERSIONS, [], shop).estimated_seconds
    assert with_migrations - without == pytest.approx(2 * DEFAULT_MIGRATION_SECONDS)


def test_the_phase_observation_never_fails_the_release_step() -> None:
    from types import SimpleNamespace

    from release_pipelines.resources.manifest_files import load_product

    from release_pipelines.core.states import ReleaseState
    from release_pipelines.orchestration.jobs.common import readiness_observation

    class BrokenLedger:
        def get(self, release_id):
            return SimpleNamespace(id=release_id, state=ReleaseState.CANARY, versions={}, product="shop")

        def releases(self, product, limit=50):
            return []

        def events(self, release_id=None):
            raise RuntimeError("ledger unreachable")

    observation = readiness_observation(load_product(EXAMPLE), BrokenLedger(), "shop-1", "canary")
    assert observation.asset_key.path == ["releases", "shop"]
    assert "readiness unknown" in observation.metadata["rollback_reasons"].value
