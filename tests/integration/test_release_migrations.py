"""Migrations inside releases: gates stop a release before traffic moves; rollback downgrades the
expand revisions the release applied; table lineage and check results reach the Dagster instance.

The example is copied to a temp folder with only its first two revisions, installed, then given
the rest - the way a team adds revisions between releases.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from dagster import AssetKey
from sqlalchemy import create_engine, inspect, text

from release_pipelines.states import ReleaseState
from tests.release_harness import processes_under, release_config, rollback_config, shop_environment

ROOT = Path(__file__).resolve().parents[2]
FIRST = {"catalog": "1.0.0", "orders": "1.0.0", "frontend": "1.0.0"}
LATER = ["0003_orders_product_idx.py", "0004_order_currency.py", "0005_currency_not_null.py",
         "0006_drop_legacy_code.py"]


@pytest.fixture
def staged(monkeypatch, tmp_path):
    """The shop installed at revision 0002, with revisions 0003-0006 ready to add."""
    product_dir = tmp_path / "shop"
    shutil.copytree(ROOT / "examples" / "shop", product_dir, ignore=shutil.ignore_patterns("__pycache__"))
    later = tmp_path / "later"
    later.mkdir()
    for name in LATER:
        shutil.move(product_dir / "migrations" / "versions" / name, later / name)
    shop = shop_environment(monkeypatch, tmp_path, product_dir / "release.yaml")
    try:
        assert shop.run("release", release_config(FIRST)).success
        for name in LATER:
            shutil.copy(later / name, product_dir / "migrations" / "versions" / name)
        yield shop
    finally:
        shop.stop()
        assert not processes_under(shop.home)


def app_engine(shop):
    return create_engine(f"sqlite:///{shop.home / 'shop.db'}")


def revision(shop) -> str:
    with app_engine(shop).connect() as conn:
        return conn.execute(text("select version_num from alembic_version")).scalar_one()


def test_expand_runs_in_the_release_and_rollback_downgrades_it(staged) -> None:
    shop = staged
    assert revision(shop) == "0002_order_totals"
    result = shop.run("release", release_config({"orders": "1.1.0"}))
    assert result.success, shop.failure_message(result)
    assert revision(shop) == "0005_currency_not_null"  # expand only: the contract revision waits
    columns = {c["name"] for c in inspect(app_engine(shop)).get_columns("orders")}
    assert "currency" in columns
    # lineage: the migrated tables are materialized with their column schema, per release
    record = shop.instance.get_latest_materialization_event(AssetKey(["shop_db", "public", "orders"]))
    metadata = record.asset_materialization.metadata
    assert "dagster/column_schema" in metadata
    checks = {e.check_name: e.passed for e in result.get_asset_check_evaluations()}
    assert checks and all(checks.values()), checks

    release = shop.active()
    assert shop.run("rollback", rollback_config(release.id)).success
    assert revision(shop) == "0002_order_totals"
    columns = {c["name"] for c in inspect(app_engine(shop)).get_columns("orders")}
    assert "currency" not in columns
    assert shop.ledger.get(release.id).state is ReleaseState.ROLLED_BACK


def test_a_failing_gate_stops_the_release_before_any_traffic(staged) -> None:
    shop = staged
    with app_engine(shop).begin() as conn:  # data the orders suite forbids: quantity 0
        conn.execute(text("insert into orders (product_id, quantity, status) values (1, 0, 'new')"))
    result = shop.run("release", release_config({"orders": "1.1.0"}))
    assert not result.success
    assert "blocking data gates failed, no traffic was moved" in shop.failure_message(result)
    failed = [e for e in result.get_asset_check_evaluations() if not e.passed]
    assert [e.check_name for e in failed] == ["expectations_orders"]
    assert failed[0].asset_key == AssetKey(["shop_db", "public", "orders"])
    status = shop.platform.status("orders")
    assert (status.stable_version, status.canary_version) == ("1.0.0", None)  # never deployed
    gate_events = [e for e in shop.ledger.events(shop.active().id) if e.kind == "gate" and not e.payload["passed"]]
    assert gate_events and gate_events[0].payload["gate"] == "expectations_orders"
