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

from release_pipelines.core.states import ReleaseState
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


REPRICE = '''"""Reprice every product in cents x 2 (a data migration nobody can undo)."""

from alembic import op

revision = "0003_reprice"
down_revision = "0002_order_totals"
branch_labels = None
depends_on = None

phase = "expand"


def upgrade() -> None:
    op.execute("UPDATE products SET price_cents = price_cents * 2")
    op.execute("DELETE FROM products WHERE sku = 'TEA-001'")


def downgrade() -> None:
    pass
'''


@pytest.fixture
def irreversible(monkeypatch, tmp_path):
    """The shop at revision 0002 with an irreversible data revision ready, rollback: snapshot."""
    product_dir = tmp_path / "shop"
    shutil.copytree(ROOT / "examples" / "shop", product_dir, ignore=shutil.ignore_patterns("__pycache__"))
    for name in LATER:
        (product_dir / "migrations" / "versions" / name).unlink()
    manifest = product_dir / "release.yaml"
    shop = shop_environment(monkeypatch, tmp_path, manifest)
    try:
        assert shop.run("release", release_config(FIRST)).success
        (product_dir / "migrations" / "versions" / "0003_reprice.py").write_text(REPRICE)
        yield shop, manifest
    finally:
        shop.stop()
        assert not processes_under(shop.home)


def prices(shop) -> dict[str, int]:
    with app_engine(shop).connect() as conn:
        return dict(conn.execute(text("select sku, price_cents from products")).all())


def test_irreversible_revision_is_refused_at_preflight_under_downgrade(irreversible) -> None:
    shop, _ = irreversible
    result = shop.run("release", release_config({"orders": "1.1.0"}))
    assert not result.success
    message = shop.failure_message(result)
    assert "revision 0003_reprice cannot be downgraded" in message and "rollback: snapshot" in message
    assert revision(shop) == "0002_order_totals"  # nothing ran
    assert shop.active() is None  # and no release occupies the product


def test_snapshot_rollback_restores_data_and_keeps_new_rows(irreversible, monkeypatch) -> None:
    shop, manifest = irreversible
    manifest.write_text(manifest.read_text().replace("rollback: downgrade", "rollback: snapshot"))
    from tests.release_harness import Shop

    shop = Shop(shop.home, manifest, shop.instance)
    before = prices(shop)
    assert shop.run("release", release_config({"orders": "1.1.0"})).success
    assert prices(shop) != before and "TEA-001" not in prices(shop)
    with app_engine(shop).begin() as conn:  # the canary writes while it runs
        conn.execute(text("insert into products (sku, name, price_cents) values ('NEW-999', 'New', 100)"))
    assert shop.run("rollback", rollback_config(shop.active().id)).success
    restored = prices(shop)
    assert {k: v for k, v in restored.items() if k != "NEW-999"} == before
    assert restored["NEW-999"] == 100  # a row written after the snapshot is kept
    tables = inspect(app_engine(shop)).get_table_names()
    assert not [t for t in tables if "__snap_" in t]  # snapshot cleaned up


def test_backfill_progress_reaches_the_ledger_and_the_run_log(monkeypatch, tmp_path) -> None:
    product_dir = tmp_path / "shop"
    shutil.copytree(ROOT / "examples" / "shop", product_dir, ignore=shutil.ignore_patterns("__pycache__"))
    held = tmp_path / "0002_order_totals.py"
    shutil.move(product_dir / "migrations" / "versions" / "0002_order_totals.py", held)
    for name in LATER:
        (product_dir / "migrations" / "versions" / name).unlink()
    shop = shop_environment(monkeypatch, tmp_path, product_dir / "release.yaml")
    try:
        assert shop.run("release", release_config(FIRST)).success
        with app_engine(shop).begin() as conn:
            conn.execute(text("insert into orders (product_id, quantity, status) "
                              "select 1, 1, 'new' from products p1, products p2, products p3, products p4, "
                              "products p5, products p6 limit 2500"))
        shutil.copy(held, product_dir / "migrations" / "versions" / held.name)
        result = shop.run("release", release_config({"orders": "1.1.0"}))
        assert result.success, shop.failure_message(result)
        progress = [e.payload for e in shop.ledger.events(shop.active().id) if e.kind == "backfill:progress"]
        assert progress and progress[-1]["rows_done"] == progress[-1]["rows_total"] == 2500
        logs = [r.user_message for r in shop.instance.all_logs(result.run_id) if r.user_message]
        assert any("backfill shop_db/0002_order_totals: 2500/2500 rows (100%)" in m for m in logs)
    finally:
        shop.stop()


def test_rollback_after_promotion_keeps_the_expanded_schema(staged) -> None:
    """A regression found during bake rolls back the services only: the new version has been
    writing through the expanded schema, which the old version can use."""
    from tests.release_harness import promote_config

    shop = staged
    assert shop.run("release", release_config({"orders": "1.1.0"})).success
    release = shop.active()
    for _ in range(2):
        assert shop.run("promote", promote_config()).success
    assert shop.ledger.get(release.id).state is ReleaseState.BAKING
    assert shop.run("rollback", rollback_config(release.id, "regression during bake")).success
    assert shop.ledger.get(release.id).state is ReleaseState.ROLLED_BACK
    assert shop.stable("orders") == "1.0.0"
    assert revision(shop) == "0005_currency_not_null"
    assert "revert:schema-kept" in [e.kind for e in shop.ledger.events(release.id)]
