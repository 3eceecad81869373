"""Observability on real processes: the release id as correlation id (run tags, op log lines, the
router's X-Release-Id header), rollback readiness as asset metadata and CLI, error budgets refusing
a release of a service whose stable version spends them, and memory budgets judged by the sensor."""

from __future__ import annotations

import shutil
from pathlib import Path

import httpx
import pytest
import yaml
from click.testing import CliRunner

from release_pipelines.core.states import ReleaseState
from release_pipelines.orchestration.jobs.common import TAG_RELEASE
from tests.release_harness import (
    EXAMPLE,
    processes_under,
    promote_config,
    release_config,
    rollback_config,
    send_load,
    shop_environment,
)

pytestmark = pytest.mark.slow  # a minute or more in all: the longer time limit (tests/conftest.py)

FIRST = {"catalog": "1.0.0", "orders": "1.0.0", "frontend": "1.0.0"}


def variant(tmp_path: Path, change) -> Path:
    """A copy of the example shop whose manifest `change(doc)` edits (services run from the copy)."""
    folder = tmp_path / "shop_variant"
    shutil.copytree(EXAMPLE.parent, folder, ignore=shutil.ignore_patterns("__pycache__", ".release"))
    doc = yaml.safe_load((folder / "release.yaml").read_text())
    change(doc)
    (folder / "release.yaml").write_text(yaml.safe_dump(doc, sort_keys=False))
    return folder / "release.yaml"


def service(doc, name: str) -> dict:
    return next(s for s in doc["services"] if s["name"] == name)


@pytest.fixture
def make_shop(monkeypatch, tmp_path):
    shops = []

    def make(manifest: Path = EXAMPLE, first: dict[str, str] = FIRST):
        shop = shop_environment(monkeypatch, tmp_path, manifest)
        shops.append(shop)
        result = shop.run("release", release_config(first))
        assert result.success, shop.failure_message(result)
        return shop

    yield make
    for shop in shops:
        shop.stop()
        assert not processes_under(shop.home)


def observations(result, node: str, key: list[str]):
    return [o for o in result.asset_observations_for_node(node) if o.asset_key.path == key]


def test_release_id_correlates_runs_logs_router_requests_and_readiness(make_shop) -> None:
    shop = make_shop()
    result = shop.run("release", release_config({"catalog": "1.1.0"}))
    assert result.success, shop.failure_message(result)
    release = shop.active()
    prefix = f"[release {release.id}]"

    # run tags
    assert shop.instance.get_run_by_id(result.run_id).tags[TAG_RELEASE] == release.id
    # every log line the ops write for the release carries the prefix
    messages = [e.user_message for e in shop.instance.all_logs(result.run_id)
                if e.dagster_event is None and e.user_message]
    own = [m for m in messages if "canary weight" in m or "runs as canary" in m or "plan:" in m]
    assert own and all(m.startswith(prefix) for m in own), own
    # no event that says nothing: ops give their Nothing outputs explicitly (jobs/common.nothing_done)
    assert not [m for m in messages if "Emitting implicit Nothing" in m]

    # readiness when the release entered canary
    [ready] = observations(result, "start_canary", ["releases", "shop"])
    assert ready.metadata["rollback_readiness"].value == "READY"
    assert ready.metadata["rollback_estimated_seconds"].value > 0

    # the router tags canary requests with the release id, to the backend and back
    endpoint = shop.platform.status("catalog").endpoint
    seen = {"canary": set(), "stable": set()}
    with httpx.Client(timeout=10) as client:
        for _ in range(60):
            response = client.get(endpoint + "/products")
            role = response.headers["X-Release-Role"]
            seen[role].add((response.headers.get("X-Release-Id"), response.headers.get("X-Backend-Release-Id")))
    assert seen["canary"] == {(release.id, release.id)}
    assert seen["stable"] == {(None, None)}

    promote = shop.run("promote", promote_config())
    assert promote.success
    assert shop.instance.get_run_by_id(promote.run_id).tags[TAG_RELEASE] == release.id
    [step1] = observations(promote, "promote_step", ["releases", "shop"])
    assert step1.metadata["phase"].value == "canary step 1"

    rollback = shop.run("rollback", rollback_config(reason="test: correlation"))
    assert rollback.success
    assert shop.instance.get_run_by_id(rollback.run_id).tags[TAG_RELEASE] == release.id
    [done] = observations(rollback, "rollback_finish", ["releases", "shop"])
    assert done.metadata["rollback_readiness"].value == "IMPOSSIBLE"  # nothing left to undo
    rollback_logs = [e.user_message for e in shop.instance.all_logs(rollback.run_id)
                     if e.dagster_event is None and "canary" in (e.user_message or "")]
    assert rollback_logs and all(m.startswith(prefix) for m in rollback_logs)

    # after a rollback the router no longer tags anything
    with httpx.Client(timeout=10) as client:
        assert "X-Release-Id" not in client.get(endpoint + "/products").headers

    # the CLI: and the next release's estimate comes from this rollback's recorded duration
    from release_pipelines.cli.main import main

    out = CliRunner().invoke(main, ["readiness", release.id, "--json", "--manifest", str(shop.manifest)])
    assert out.exit_code == 0, out.output
    assert '"level": "IMPOSSIBLE"' in out.output
    assert shop.run("release", release_config({"catalog": "1.2.0"})).success
    second = shop.active()
    out = CliRunner().invoke(main, ["readiness", second.id, "--manifest", str(shop.manifest)])
    assert out.exit_code == 0, out.output
    assert "READY" in out.output and "history (1 rollback)" in out.output


def test_a_stable_version_that_spent_its_error_budget_blocks_the_next_release(make_shop, tmp_path) -> None:
    def slo(doc):
        service(doc, "orders")["slo"] = {"availability": 0.995, "latency_ms": 300, "latency_target": 0.99,
                                         "window_requests": 1000}
        service(doc, "catalog")["slo"] = {"availability": 0.9, "window_requests": 1000}

    shop = make_shop(variant(tmp_path, slo), {**FIRST, "orders": "1.0.0+bad"})
    send_load(shop, "orders", 400)  # ~5 % errors: ~20 failures where the window allows 5
    refused = shop.run("release", release_config({"orders": "1.1.0"}))
    assert not refused.success
    message = shop.failure_message(refused)
    assert "orders: error budget spent" in message and "availability 99.50%" in message
    assert shop.active() is None
    from release_pipelines.cli.main import main

    table = CliRunner().invoke(main, ["budgets", "shop", "--manifest", str(shop.manifest)])
    assert table.exit_code == 0, table.output
    orders_row = next(line for line in table.output.splitlines() if "orders" in line)
    assert "1.0.0+bad" in orders_row and "-" in orders_row.split("│")[-2]  # negative: overspent

    # catalog's budget is fine: its release goes ahead and the sensor plots its remaining budget
    assert shop.run("release", release_config({"catalog": "1.1.0"})).success
    send_load(shop, "catalog", 100)
    tick = shop.tick()
    budgets = [e for e in tick.asset_events if e.asset_key.path == ["services", "catalog"]
               and "error_budget_remaining" in e.metadata]
    assert budgets and 0 < budgets[-1].metadata["error_budget_remaining"].value <= 1


def test_a_fat_canary_fails_its_memory_metric_and_is_rolled_back(make_shop, tmp_path) -> None:
    def memory(doc):
        catalog = service(doc, "catalog")
        catalog["resources"] = {"memory_mb": 512, "cpu_percent": 100}
        catalog["canary"]["analysis"]["metrics"].append({"name": "memory", "kind": "memory", "critical": True})

    shop = make_shop(variant(tmp_path, memory))
    usage = shop.platform.resource_usage("catalog")
    assert set(usage) == {"stable"} and usage["stable"][0] > 10
    assert shop.run("release", release_config({"catalog": "1.1.0+fat"})).success
    release = shop.active()
    usage = shop.platform.resource_usage("catalog")
    assert usage["canary"][0] > 2 * usage["stable"][0], usage
    cursor = None
    for _ in range(10):
        send_load(shop, "catalog", 20)
        result = shop.tick(cursor)
        cursor = result.cursor
        if result.run_requests:
            break
    [request] = result.run_requests
    assert request.job_name == "shop_rollback"
    verdict = [e for e in shop.ledger.events(release.id) if e.kind == "verdict"][-1]
    assert verdict.payload["verdict"] == "fail" and "memory" in verdict.payload["reason"]
    assert shop.run("rollback", request.run_config).success
    assert shop.ledger.get(release.id).state is ReleaseState.ROLLED_BACK
    assert shop.stable("catalog") == "1.0.0" and shop.platform.status("catalog").canary_version is None


def test_no_room_for_a_canary_beside_stable_is_refused(make_shop, tmp_path) -> None:
    def huge(doc):
        service(doc, "orders")["resources"] = {"memory_mb": 10_000_000}

    shop = make_shop(variant(tmp_path, huge))  # a first install runs no canary beside stable
    refused = shop.run("release", release_config({"orders": "1.1.0"}))
    assert not refused.success
    message = shop.failure_message(refused)
    assert "not enough memory to run canaries beside stable" in message and "orders 1e+07 MB" in message
