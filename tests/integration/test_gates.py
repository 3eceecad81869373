"""Data-integrity gates against real databases: SQLite always, PostgreSQL via `postgres_url`.

Tables are created here with plain SQL, independent of the example's Alembic migrations.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from release_pipelines.assets.gates import (
    constraint_validity,
    count_rows,
    row_conservation,
    schema_contract,
    types_compatible,
)
from release_pipelines.assets.great_expectations import read_suite, run_suite
from sqlalchemy import create_engine, text
from sqlalchemy.engine import Engine

from release_pipelines.core.manifest import Table

ROOT = Path(__file__).resolve().parents[2]
ORDERS_SUITE = ROOT / "examples" / "shop" / "expectations" / "orders.json"

PRODUCTS = Table(
    name="products",
    columns={"id": "integer", "sku": "varchar", "name": "varchar", "price_cents": "integer"},
)
ORDERS = Table(
    name="orders",
    columns={"id": "integer", "product_id": "integer", "quantity": "integer", "status": "varchar"},
)

SCHEMA_SQL = [
    "CREATE TABLE products (id INTEGER PRIMARY KEY, sku VARCHAR(64) NOT NULL, name TEXT, price_cents INTEGER NOT NULL)",
    "CREATE TABLE orders (id INTEGER PRIMARY KEY, product_id INTEGER NOT NULL, quantity INTEGER NOT NULL, status VARCHAR(20) NOT NULL)",
    "INSERT INTO products VALUES (1, 'SKU-1', 'Mug', 900), (2, 'SKU-2', 'Pen', 150)",
    "INSERT INTO orders VALUES (1, 1, 2, 'paid'), (2, 2, 1, 'placed'), (3, 1, 5, 'shipped')",
]


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "postgres":
        return request.getfixturevalue("postgres_url")
    return f"sqlite:///{tmp_path / 'shop.db'}"


@pytest.fixture
def engine(url: str) -> Iterator[Engine]:
    engine = create_engine(url, isolation_level="AUTOCOMMIT")
    run(engine, *SCHEMA_SQL)
    yield engine
    engine.dispose()


def run(engine: Engine, *statements: str) -> None:
    with engine.connect() as conn:
        for statement in statements:
            conn.execute(text(statement))


# ---------------------------------------------------------------- schema contract


def test_schema_contract_passes_and_allows_extra_columns(engine: Engine) -> None:
    run(engine, "ALTER TABLE orders ADD COLUMN note TEXT")
    result = schema_contract(engine, ORDERS, database="shop_db")
    assert result.passed, result.summary
    assert (result.gate, result.database, result.schema, result.table) == (
        "schema_contract",
        "shop_db",
        "public",
        "orders",
    )
    assert result.evidence["actual_columns"] == 5


def test_schema_contract_fails_on_missing_column(engine: Engine) -> None:
    contract = Table(name="orders", columns={**ORDERS.columns, "customer_email": "varchar"})
    result = schema_contract(engine, contract, blocking=False)
    assert not result.passed
    assert result.severity == "warn"
    assert result.evidence["missing_columns"] == ["customer_email"]
    assert "missing column customer_email" in result.summary


def test_schema_contract_fails_on_wrong_type(engine: Engine) -> None:
    run(
        engine,
        "DROP TABLE orders",
        "CREATE TABLE orders (id INTEGER, product_id INTEGER, quantity TEXT, status VARCHAR(20))",
    )
    result = schema_contract(engine, ORDERS)
    assert not result.passed
    assert result.severity == "error"
    assert result.evidence["wrong_types"]["quantity"]["declared"] == "integer"
    assert "quantity is TEXT" in result.summary


def test_schema_contract_fails_on_missing_table(engine: Engine) -> None:
    result = schema_contract(engine, Table(name="refunds", columns={"id": "integer"}))
    assert not result.passed
    assert "public.refunds does not exist" in result.summary


@pytest.mark.parametrize(
    ("declared", "actual", "ok"),
    [
        ("integer", "INT4", True),
        ("int", "INTEGER", True),
        ("bigint", "INTEGER", True),
        ("integer", "BIGINT", False),
        ("varchar", "CHARACTER VARYING(64)", True),
        ("varchar", "TEXT", True),
        ("text", "VARCHAR(20)", True),
        ("timestamptz", "TIMESTAMP WITH TIME ZONE", True),
        ("timestamp", "TIMESTAMP WITH TIME ZONE", False),
        ("numeric(10,2)", "NUMERIC(12, 2)", True),
        ("integer", "TEXT", False),
    ],
)
def test_type_names_map_across_dialects(declared: str, actual: str, ok: bool) -> None:
    assert types_compatible(declared, actual) is ok


# ---------------------------------------------------------------- row conservation


def test_count_rows_quotes_identifiers(engine: Engine) -> None:
    run(
        engine,
        'CREATE TABLE "Order Lines" (id INTEGER)',
        'INSERT INTO "Order Lines" VALUES (1), (2)',
    )
    assert count_rows(engine, ORDERS) == 3
    assert (
        count_rows(engine, Table.model_construct(name="Order Lines", schema_="public", columns={}))
        == 2
    )


@pytest.mark.parametrize(
    ("before", "after", "tolerance", "passed"),
    [
        (100, 100, 0.0, True),
        (100, 99, 0.0, False),
        (100, 95, 0.05, True),
        (100, 94, 0.05, False),
        (100, 129, 0.29, True),
        (0, 0, 0.0, True),
        (0, 3, 0.5, False),
    ],
)
def test_row_conservation(before: int, after: int, tolerance: float, passed: bool) -> None:
    result = row_conservation(before, after, tolerance, database="shop_db", table="orders")
    assert result.passed is passed, result.summary
    assert result.evidence["delta"] == after - before


# ---------------------------------------------------------------- constraint validity


def test_constraint_validity_passes_on_clean_table(engine: Engine) -> None:
    result = constraint_validity(engine, "public", "orders")
    assert result.passed, result.summary
    if engine.dialect.name == "sqlite":
        assert "sqlite" in result.evidence["note"]


@pytest.mark.postgres
def test_invalid_index_and_not_valid_constraint_fail(postgres_url: str) -> None:
    engine = create_engine(postgres_url, isolation_level="AUTOCOMMIT")
    run(engine, *SCHEMA_SQL, "INSERT INTO orders VALUES (4, 1, 2, 'paid')")
    with pytest.raises(Exception, match="could not create unique index"):
        run(
            engine,
            "CREATE UNIQUE INDEX CONCURRENTLY orders_product_quantity ON orders (product_id, quantity)",
        )
    result = constraint_validity(engine, "public", "orders")
    assert not result.passed
    assert result.evidence["invalid_indexes"] == ["orders_product_quantity"]

    run(engine, "DROP INDEX orders_product_quantity", "INSERT INTO orders VALUES (5, 1, 0, 'paid')")
    run(
        engine, "ALTER TABLE orders ADD CONSTRAINT quantity_positive CHECK (quantity > 0) NOT VALID"
    )
    result = constraint_validity(engine, "public", "orders")
    assert not result.passed
    assert result.evidence == {
        "invalid_indexes": [],
        "not_valid_constraints": ["quantity_positive"],
    }
    assert "VALIDATE CONSTRAINT" in result.summary
    assert constraint_validity(engine, "public", "products").passed
    engine.dispose()


# ---------------------------------------------------------------- Great Expectations


def test_suite_passes_on_good_data(engine: Engine, url: str) -> None:
    result = run_suite(url, "public", "orders", ORDERS_SUITE, database="shop_db")
    assert result.passed, result.summary
    assert result.gate == "expectations_orders"
    assert result.evidence["evaluated_expectations"] == 5
    assert result.evidence["failing_expectations"] == []


def test_suite_fails_on_bad_data_and_names_the_expectation(engine: Engine, url: str) -> None:
    run(engine, "INSERT INTO orders VALUES (4, 1, 0, 'paid')")
    result = run_suite(url, "public", "orders", ORDERS_SUITE, database="shop_db", blocking=False)
    assert not result.passed
    assert result.severity == "warn"
    assert result.evidence["unsuccessful_expectations"] == 1
    [failure] = result.evidence["failing_expectations"]
    assert failure["expectation"] == "expect_column_values_to_be_between"
    assert failure["column"] == "quantity"
    assert failure["unexpected_count"] == 1
    assert failure["sample"] == [0]
    assert "expect_column_values_to_be_between(quantity)" in result.summary
    json.dumps(result.evidence)  # evidence is plain data, fit for metadata and the ledger


@pytest.mark.parametrize(
    ("content", "reason"),
    [
        ("{not json", "is not valid JSON (line 1"),
        ('{"name": "orders", "expectations": []}', "has no 'expectations' list"),
        (
            '{"expectations": [{"type": "expect_column_to_exist", "kwargs": {"column": "id"}}]}',
            "must name its table",
        ),
        (
            '{"meta": {"table": "orders"}, "expectations": [{"type": "expect_magic", "kwargs": {}}]}',
            "GX cannot build ['expect_magic']",
        ),
    ],
)
def test_malformed_suite_is_a_failed_gate(tmp_path: Path, content: str, reason: str) -> None:
    url = f"sqlite:///{tmp_path / 'shop.db'}"
    run(create_engine(url), *SCHEMA_SQL)
    suite = tmp_path / "orders.json"
    suite.write_text(content)
    result = run_suite(url, "public", "orders", suite)
    assert not result.passed
    assert reason in result.summary


def test_missing_suite_file_or_table_is_a_failed_gate(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'empty.db'}"
    missing = run_suite(url, "public", "orders", tmp_path / "nope.json")
    assert not missing.passed and "does not exist" in missing.summary
    no_table = run_suite(url, "public", "orders", ORDERS_SUITE)
    assert not no_table.passed and "table public.orders does not exist" in no_table.summary


def test_packaged_suites_are_readable_and_the_example_copy_has_not_drifted() -> None:
    assert read_suite(ROOT / "assets" / "expectations" / "products.json").table == "products"
    packaged = ROOT / "assets" / "expectations" / "orders.json"
    assert json.loads(packaged.read_text()) == json.loads(ORDERS_SUITE.read_text())
