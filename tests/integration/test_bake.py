"""Bake: after 100 % the canary sensor keeps judging the new stable version for the manifest's
bake period and requests the rollback on a regression; the rollback job reverts from BAKING."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from release_pipelines.core.states import ReleaseState
from tests.release_harness import (
    processes_under,
    promote_config,
    release_config,
    send_load,
    shop_environment,
)

pytestmark = pytest.mark.slow  # a minute or more in all: the longer time limit (tests/conftest.py)

ROOT = Path(__file__).resolve().parents[2]
FIRST = {"catalog": "1.0.0", "orders": "1.0.0", "frontend": "1.0.0"}


@pytest.fixture
def installed(monkeypatch, tmp_path):
    """The shop (a copy whose orders bakes 300 s) with 1.0.0 installed."""
    product_dir = tmp_path / "shop"
    shutil.copytree(ROOT / "examples" / "shop", product_dir, ignore=shutil.ignore_patterns("__pycache__"))
    manifest = product_dir / "release.yaml"
    text = manifest.read_text()
    assert "bake_seconds: 10" in text
    manifest.write_text(text.replace("bake_seconds: 10", "bake_seconds: 300"))
    shop = shop_environment(monkeypatch, tmp_path, manifest)
    monkeypatch.setenv("SHOP_EXTRA_LATENCY_MS", "0")  # "bad" keeps its 5 % errors, not its +80 ms
    try:
        assert shop.run("release", release_config(FIRST)).success
        yield shop
    finally:
        shop.stop()
        assert not processes_under(shop.home)


def promote_by_hand(shop) -> None:
    """The promote job does not judge: run it until the release bakes."""
    for _ in range(4):
        result = shop.run("promote", promote_config())
        assert result.success, shop.failure_message(result)
        if shop.active().state is ReleaseState.BAKING:
            return
    pytest.fail(f"release never reached baking: {shop.active().state}")


def test_a_regression_during_bake_rolls_the_promoted_service_back(installed) -> None:
    shop = installed
    assert shop.run("release", release_config({"orders": "1.1.0+bad"})).success
    release = shop.active()
    promote_by_hand(shop)  # the sensor never judged: no reference, only the absolute margin
    assert shop.stable("orders") == "1.1.0+bad"

    cursor, result = None, None
    for _ in range(12):
        result = shop.tick(cursor)
        cursor = result.cursor
        if result.run_requests:
            break
        assert "baking" in result.skip_message
        send_load(shop, "orders", 700)
    else:
        pytest.fail(f"no rollback requested during bake: {result.skip_message}")

    [request] = result.run_requests
    assert (request.job_name, request.run_key) == ("shop_rollback", f"{release.id}:bake:rollback")
    reason = request.run_config["ops"]["rollback_start"]["config"]["reason"]
    assert reason.startswith("regression during bake: orders:") and "no reference" in reason
    verdicts = [e for e in shop.ledger.events(release.id) if e.kind == "verdict"]
    assert verdicts[-1].payload["step"] == "bake" and verdicts[-1].payload["verdict"] == "fail"
    observed = [e for e in result.asset_events if e.asset_key.path == ["services", "orders"]]
    assert observed and observed[-1].metadata["verdict"].value == "fail"
    assert observed[-1].metadata["phase"].value == "bake"

    rollback = shop.run("rollback", request.run_config)
    assert rollback.success, shop.failure_message(rollback)
    assert shop.stable("orders") == "1.0.0"
    assert shop.ledger.get(release.id).state is ReleaseState.ROLLED_BACK
    assert shop.platform.status("orders").canary_version is None


def test_a_healthy_bake_keeps_waiting_for_the_bake_period(installed) -> None:
    shop = installed
    assert shop.run("release", release_config({"orders": "1.1.0"})).success
    promote_by_hand(shop)
    cursor = None
    for _ in range(3):
        send_load(shop, "orders", 300)
        result = shop.tick(cursor)
        cursor = result.cursor
        assert not result.run_requests and "baking" in result.skip_message, result.skip_message
    assert "not above the bar" in result.skip_message or "not enough evidence" in result.skip_message
