"""Table and service asset specs for the shop manifest, and the checks job run for real."""

from __future__ import annotations

from pathlib import Path

import pytest
from dagster import (
    AssetCheckKey,
    AssetCheckSeverity,
    AssetKey,
    AssetSpec,
    DagsterInstance,
    Definitions,
    MetadataValue,
)
from release_pipelines.assets.checks import checks_job, gate_check_evaluation, table_asset_checks
from release_pipelines.assets.gates import GateResult
from release_pipelines.assets.tables import (
    TableAssetTranslator,
    lineage,
    service_asset_specs,
    table_asset_specs,
    table_materialization,
)
from release_pipelines.resources.manifest_files import load_manifest
from sqlalchemy import create_engine, text

from release_pipelines.core.manifest import Database, Table
from release_pipelines.core.manifest_loader import parse_manifest

SHOP_DIR = Path(__file__).resolve().parents[2] / "examples" / "shop"
ORDERS = AssetKey(["shop_db", "public", "orders"])
PRODUCTS = AssetKey(["shop_db", "public", "products"])


@pytest.fixture
def shop(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.delenv("SHOP_DB_URL", raising=False)
    return load_manifest(SHOP_DIR / "release.yaml")


def deps(spec: AssetSpec) -> set[AssetKey]:
    return {dep.asset_key for dep in spec.deps}


def test_table_specs_have_list_keys_groups_kinds_and_column_contract(shop) -> None:
    specs = {spec.key: spec for spec in table_asset_specs(shop)}
    assert set(specs) == {ORDERS, PRODUCTS}
    orders = specs[ORDERS]
    assert orders.key.path == ["shop_db", "public", "orders"]
    assert orders.group_name == "shop_db"
    assert orders.kinds == {"sqlite", "table"}  # the manifest's default URL
    schema = orders.metadata["dagster/column_schema"]
    assert [(c.name, c.type) for c in schema.columns] == [
        ("id", "integer"),
        ("product_id", "integer"),
        ("quantity", "integer"),
        ("status", "varchar"),
    ]


def test_kind_follows_the_url_in_the_environment(shop, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SHOP_DB_URL", "postgresql://app@db.internal/shop")
    assert {spec.key: spec.kinds for spec in table_asset_specs(shop)}[ORDERS] == {
        "postgres",
        "table",
    }


def test_lineage_writers_upstream_of_tables_and_tables_upstream_of_readers(shop) -> None:
    tables = {spec.key: spec for spec in table_asset_specs(shop)}
    services = {spec.key: spec for spec in service_asset_specs(shop)}
    assert deps(tables[ORDERS]) == {AssetKey(["services", "orders"])}
    assert deps(tables[PRODUCTS]) == set()
    assert deps(services[AssetKey(["services", "catalog"])]) == {PRODUCTS}
    # orders reads and writes shop_db.orders: the write wins, the read is noted, not drawn.
    orders_service = services[AssetKey(["services", "orders"])]
    assert deps(orders_service) == {PRODUCTS}
    assert orders_service.metadata["reads_not_drawn"] == ["shop_db.orders"]
    assert deps(services[AssetKey(["services", "frontend"])]) == set()
    assert {spec.group_name for spec in services.values()} == {"services"}


CROSSED = """
product: crossed
services:
  - name: a
    deploy: {local: {command: [run]}}
    reads: [db.t2]
    writes: [db.t1]
  - name: b
    deploy: {local: {command: [run]}}
    reads: [db.t1]
    writes: [db.t2]
databases:
  - name: db
    url: ${CROSSED_DB_URL:-sqlite:///crossed.db}
    migrations: migrations
    tables: [{name: t1}, {name: t2}]
"""


def test_a_read_that_would_close_a_longer_cycle_is_hidden() -> None:
    manifest = parse_manifest(CROSSED)
    graph = lineage(manifest)
    assert graph.reads == {"a": [("db", "t2")]}
    assert graph.hidden_reads == {"b": [("db", "t1")]}
    defs = Definitions(assets=table_asset_specs(manifest) + service_asset_specs(manifest))
    Definitions.validate_loadable(defs)


def test_a_custom_translator_changes_keys_and_lineage_follows(shop) -> None:
    class Prefixed(TableAssetTranslator):
        def get_table_spec(self, database: Database, table: Table) -> AssetSpec:
            spec = super().get_table_spec(database, table)
            return spec.replace_attributes(key=AssetKey(["warehouse", *spec.key.path]))

    translator = Prefixed()
    catalog = {s.key: s for s in service_asset_specs(shop, translator)}[
        AssetKey(["services", "catalog"])
    ]
    assert deps(catalog) == {AssetKey(["warehouse", "shop_db", "public", "products"])}
    checks = table_asset_checks(shop, SHOP_DIR, translator)
    assert (
        AssetCheckKey(AssetKey(["warehouse", *ORDERS.path]), "schema_contract")
        in checks[0].check_keys
    )


def test_materialization_carries_revisions_sql_and_column_schema() -> None:
    event = table_materialization(
        "shop_db",
        Table(name="orders"),
        "0001",
        "0002",
        ["ALTER TABLE orders ADD COLUMN customer_email varchar"],
        0.25,
        12,
        {"id": "INTEGER", "customer_email": "VARCHAR"},
    )
    assert event.asset_key == ORDERS
    assert event.metadata["revision_to"].value == "0002"
    assert event.metadata["statements"].value == 1
    assert event.metadata["dagster/row_count"].value == 12
    assert [c.name for c in event.metadata["dagster/column_schema"].schema.columns] == [
        "id",
        "customer_email",
    ]


def test_gate_evaluation_keeps_numbers_numeric() -> None:
    result = GateResult(
        "row_conservation",
        "shop_db",
        "public",
        "orders",
        False,
        "warn",
        "100 -> 90 rows",
        {"rows_before": 100, "tolerance": 0.05, "missing_columns": ["x"], "note": None},
    )
    evaluation = gate_check_evaluation(result)
    assert evaluation.asset_key == ORDERS
    assert evaluation.check_name == "row_conservation"
    assert evaluation.severity == AssetCheckSeverity.WARN
    assert evaluation.metadata["rows_before"] == MetadataValue.int(100)
    assert evaluation.metadata["tolerance"] == MetadataValue.float(0.05)
    assert "note" not in evaluation.metadata


def shop_definitions(shop) -> Definitions:
    return Definitions(
        assets=table_asset_specs(shop) + service_asset_specs(shop),
        asset_checks=table_asset_checks(shop, SHOP_DIR),
        jobs=[checks_job(shop)],
    )


def test_definitions_are_loadable(shop) -> None:
    defs = shop_definitions(shop)
    Definitions.validate_loadable(defs)
    job = defs.resolve_job_def("shop_data_checks")
    assert job.asset_layer.asset_graph.asset_check_keys == {
        AssetCheckKey(key, name)
        for key in (ORDERS, PRODUCTS)
        for name in ("schema_contract", "constraint_validity")
    } | {AssetCheckKey(ORDERS, "expectations_orders")}


@pytest.mark.postgres
def test_checks_job_records_evaluations_against_postgres(
    shop, postgres_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    engine = create_engine(postgres_url, isolation_level="AUTOCOMMIT")
    with engine.connect() as conn:
        for statement in (
            "CREATE TABLE products (id integer PRIMARY KEY, sku varchar(64), name text, price_cents integer)",
            "CREATE TABLE orders (id integer PRIMARY KEY, product_id integer, quantity integer, status varchar(20))",
            "INSERT INTO products VALUES (1, 'SKU-1', 'Mug', 900)",
            "INSERT INTO orders VALUES (1, 1, 2, 'paid'), (2, 1, 1, 'placed')",
            "ALTER TABLE orders ADD CONSTRAINT quantity_positive CHECK (quantity > 0) NOT VALID",
        ):
            conn.execute(text(statement))
    engine.dispose()
    monkeypatch.setenv("SHOP_DB_URL", postgres_url)

    instance = DagsterInstance.ephemeral()
    result = (
        shop_definitions(shop)
        .resolve_job_def("shop_data_checks")
        .execute_in_process(instance=instance)
    )

    assert result.success  # checks on external tables never fail the run; their verdicts do
    verdicts = {(e.asset_key, e.check_name): e for e in result.get_asset_check_evaluations()}
    assert {key: e.passed for key, e in verdicts.items()} == {
        (ORDERS, "schema_contract"): True,
        (ORDERS, "constraint_validity"): False,
        (ORDERS, "expectations_orders"): True,
        (PRODUCTS, "schema_contract"): True,
        (PRODUCTS, "constraint_validity"): True,
    }
    failed = verdicts[(ORDERS, "constraint_validity")]
    assert failed.severity == AssetCheckSeverity.ERROR
    assert "quantity_positive" in failed.description
    stored = instance.event_log_storage.get_latest_asset_check_execution_by_key(
        [AssetCheckKey(ORDERS, "constraint_validity")]
    )[AssetCheckKey(ORDERS, "constraint_validity")]
    assert stored.run_id == result.run_id
    assert stored.event.dagster_event.event_specific_data.passed is False


def test_unset_database_url_is_a_failed_check_not_a_crash(monkeypatch: pytest.MonkeyPatch) -> None:
    manifest = parse_manifest(CROSSED.replace(":-sqlite:///crossed.db", ""))
    monkeypatch.delenv("CROSSED_DB_URL", raising=False)
    defs = Definitions(
        assets=table_asset_specs(manifest),
        asset_checks=table_asset_checks(manifest, "."),
        jobs=[checks_job(manifest)],
    )
    result = defs.resolve_job_def("crossed_data_checks").execute_in_process(
        instance=DagsterInstance.ephemeral()
    )
    evaluations = result.get_asset_check_evaluations()
    assert len(evaluations) == 4 and not any(e.passed for e in evaluations)
    assert all("CROSSED_DB_URL is not set" in e.description for e in evaluations)
