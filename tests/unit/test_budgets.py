"""Error budgets from SLOs and router counters; memory room for canaries beside stable."""

from __future__ import annotations

from pathlib import Path

import pytest
from release_pipelines.resources.manifest_files import load_manifest

from release_pipelines.core.budgets import (
    budget_problem,
    budget_status,
    error_budget,
    memory_room_problem,
    slow_requests,
)
from release_pipelines.core.manifest import Slo
from release_pipelines.core.manifest_loader import parse_manifest

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "shop" / "release.yaml"
SLO = Slo(availability=0.995, latency_ms=300, latency_target=0.99, window_requests=10000)


def test_untouched_budget_is_whole_and_spent_budget_is_zero() -> None:
    assert error_budget(SLO, 0, 0) == 1.0
    assert error_budget(SLO, 10000, 50) == pytest.approx(0.0)  # 0.5 % of 10000 errors: exactly spent
    assert error_budget(SLO, 10000, 25) == pytest.approx(0.5)


def test_fewer_requests_than_the_window_are_charged_against_the_whole_window() -> None:
    # 5 errors in 100 requests: 10 % of the 50 errors the window allows
    assert error_budget(SLO, 100, 5) == pytest.approx(0.9)


def test_more_requests_than_the_window_are_scaled_to_one_window() -> None:
    assert error_budget(SLO, 20000, 50) == pytest.approx(0.5)
    assert error_budget(SLO, 20000, 200) == pytest.approx(-1.0)  # overspent twice over


def test_latency_spends_its_own_budget_and_the_worse_one_counts() -> None:
    # 1 % may be slow: 100 in the window; 50 slow = half spent, errors untouched
    assert error_budget(SLO, 10000, 0, slow=50) == pytest.approx(0.5)
    assert error_budget(SLO, 10000, 40, slow=50) == pytest.approx(0.2)


def test_slow_requests_from_a_cumulative_histogram() -> None:
    buckets = [(0.1, 80), (0.3, 90), (0.5, 97), (float("inf"), 100)]
    assert slow_requests(buckets, 300) == 10
    assert slow_requests(buckets, 400) == 10  # between bounds: only what the histogram proves fast
    assert slow_requests([], 300) == 0


def test_refusal_names_service_slo_and_how_much_is_spent() -> None:
    status = budget_status("orders", SLO, 1000, 120)
    assert status.exhausted
    message = budget_problem(status, SLO)
    assert "orders" in message and "99.50%" in message and "240%" in message and "120 errors" in message
    assert budget_problem(budget_status("orders", SLO, 1000, 1), SLO) is None


def test_memory_room_counts_running_stable_plus_canaries() -> None:
    text = EXAMPLE.read_text().replace(
        "    reads: [shop_db.products]\n", "    reads: [shop_db.products]\n    resources: {memory_mb: 300}\n", 1)
    manifest = parse_manifest(text, "shop.yaml")
    assert manifest.service("catalog").resources.memory_mb == 300
    stable = ["catalog", "orders", "frontend"]
    assert memory_room_problem(manifest, stable, ["catalog"], available_mb=1000) is None
    problem = memory_room_problem(manifest, stable, ["catalog"], available_mb=500)
    assert "catalog 300 MB" in problem and "600 MB" in problem and "500 MB is available" in problem
    # services without a budget never refuse
    assert memory_room_problem(load_manifest(EXAMPLE), stable, ["orders"], available_mb=1) is None


def test_slo_and_resources_are_optional_and_validated() -> None:
    assert load_manifest(EXAMPLE).service("orders").slo is None
    with pytest.raises(ValueError):
        Slo(availability=1.5)
