"""Planner: waves follow the dependency graph; guardrails refuse unsafe version changes."""

from __future__ import annotations

from pathlib import Path

import pytest
from release_pipelines.resources.manifest_files import load_manifest

from release_pipelines.core.errors import PlanError
from release_pipelines.core.graph import find_cycle, waves
from release_pipelines.core.manifest_loader import parse_manifest
from release_pipelines.core.planner import StepKind, plan_release

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "shop" / "release.yaml"
STABLE = {"catalog": "1.0.0", "orders": "1.0.0", "frontend": "1.0.0"}


@pytest.fixture(scope="module")
def shop():
    return load_manifest(EXAMPLE)


def targets(plan) -> list[list[str]]:
    return [[s.target for s in wave] for wave in plan.waves]


def test_full_release_runs_database_first_then_services_in_dependency_order(shop) -> None:
    plan = plan_release(shop, {"catalog": "1.1.0", "orders": "1.1.0", "frontend": "1.1.0"}, STABLE)
    assert targets(plan) == [["shop_db"], ["catalog"], ["orders"], ["frontend"]]
    assert plan.waves[0][0].kind is StepKind.migrate
    assert [[s.target for s in w] for w in plan.rollback_waves] == [["frontend"], ["orders"], ["catalog"], ["shop_db"]]


def test_only_what_changes_is_planned(shop) -> None:
    plan = plan_release(shop, {"frontend": "1.1.0"}, STABLE)
    assert targets(plan) == [["frontend"]]  # frontend needs no database directly
    assert plan.databases == ()


def test_order_holds_through_unchanged_services(shop) -> None:
    plan = plan_release(shop, {"frontend": "1.1.0", "catalog": "1.2.0"}, STABLE)
    assert targets(plan) == [["shop_db"], ["catalog"], ["frontend"]]


def test_first_install_has_no_from_version(shop) -> None:
    plan = plan_release(shop, {"catalog": "1.0.0"}, {})
    assert plan.changes[0].from_version is None


def test_independent_services_share_a_wave() -> None:
    manifest = parse_manifest(
        """
product: p
services:
  - {name: a, deploy: {local: {command: [x]}}}
  - {name: b, deploy: {local: {command: [x]}}}
  - {name: c, depends_on: [a, b], deploy: {local: {command: [x]}}}
"""
    )
    plan = plan_release(manifest, {"a": "2", "b": "2", "c": "2"}, {})
    assert targets(plan) == [["a", "b"], ["c"]]


@pytest.mark.parametrize(
    ("versions", "current", "fragment"),
    [
        ({"ordrs": "2.0.0"}, STABLE, "unknown service 'ordrs'; did you mean 'orders'?"),
        ({"orders": "0.9.0"}, STABLE, "orders: 0.9.0 is lower than the running stable 1.0.0"),
        ({"orders": "1.0.0"}, STABLE, "orders: 1.0.0 is already the stable version"),
        ({"orders": "1.2.3; rm -rf /"}, STABLE, "orders: version '1.2.3; rm -rf /' is not allowed"),
        ({"catalog": "3.0.0"}, STABLE, "incompatible: orders requires catalog-api >=1.0,<3, but catalog 3.0.0 would provide catalog-api 3.0.0"),
        ({}, STABLE, "give at least one service version"),
    ],
)
def test_guardrails(shop, versions, current, fragment) -> None:
    with pytest.raises(PlanError) as info:
        plan_release(shop, versions, current)
    assert fragment in str(info.value)


def test_incompatibility_names_every_consumer(shop) -> None:
    with pytest.raises(PlanError) as info:
        plan_release(shop, {"catalog": "3.0.0"}, STABLE)
    assert len(info.value.problems) == 2  # orders and frontend both require catalog-api < 3


def test_downgrade_allowed_explicitly(shop) -> None:
    current = {**STABLE, "orders": "1.2.0"}
    plan = plan_release(shop, {"orders": "1.1.0"}, current, allow_downgrade=True)
    assert plan.versions() == {"orders": "1.1.0"}
    assert plan.changes[0].from_version == "1.2.0"


def test_cycle_path_is_printed() -> None:
    assert find_cycle({"a": ["b"], "b": ["c"], "c": ["a"]}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": ["b"], "b": []}) is None


def test_waves_refuse_a_cycle() -> None:
    with pytest.raises(ValueError, match="cycle"):
        waves({"a": {"b"}, "b": {"a"}}, ["a", "b"])
