"""Schema diffs from parsed statements and catalogs, column lineage, impact and the summary (pure)."""

from __future__ import annotations

from types import SimpleNamespace

from release_pipelines.core.lineage import (
    RENAMED,
    Derivation,
    derivations_from,
    downstream,
    impacts,
    render_data_summary,
)
from release_pipelines.core.schema_diff import (
    ADDITIVE,
    BREAKING,
    DESTRUCTIVE,
    ColumnShape,
    RevisionStatements,
    TableShape,
    catalog_changes,
    lifecycle,
    release_changes,
    statement_changes,
)


def facts(changes):
    return [(c.table, c.kind, c.column, c.severity, c.revision) for c in changes]


def test_each_kind_of_statement_becomes_a_change_with_its_severity_and_revision() -> None:
    changes = statement_changes([
        RevisionStatements("r1", [
            "CREATE TABLE invoices (id BIGINT PRIMARY KEY, total BIGINT)",
            "ALTER TABLE orders ADD COLUMN total_cents BIGINT",
            "ALTER TABLE orders ADD COLUMN code VARCHAR(3) NOT NULL",
            "CREATE INDEX CONCURRENTLY ix_orders_total ON orders (total_cents)",
            "ALTER TABLE orders ADD CONSTRAINT ck CHECK (total_cents >= 0) NOT VALID",
            "UPDATE orders SET total_cents = 1 WHERE id <= %(upto)s\n-- parameters: {'upto': 5}",
        ]),
        RevisionStatements("r2", [
            "ALTER TABLE orders ALTER COLUMN quantity TYPE bigint",
            "ALTER TABLE orders ALTER COLUMN total_cents SET NOT NULL",
            "ALTER TABLE orders RENAME COLUMN status TO state",
            "ALTER TABLE orders DROP COLUMN legacy",
            "DROP INDEX CONCURRENTLY ix_orders_total",
            "ALTER TABLE orders DROP CONSTRAINT ck",
            "DROP TABLE invoices",
            "UPDATE alembic_version SET version_num='r2'",
        ]),
    ])
    assert facts(changes) == [
        ("invoices", "table_created", None, ADDITIVE, "r1"),
        ("orders", "column_added", "total_cents", ADDITIVE, "r1"),
        ("orders", "column_added", "code", BREAKING, "r1"),  # NOT NULL without default: old writers fail
        ("orders", "index_added", None, ADDITIVE, "r1"),
        ("orders", "constraint_added", None, BREAKING, "r1"),
        ("orders", "column_type_changed", "quantity", BREAKING, "r2"),
        ("orders", "column_nullability_changed", "total_cents", BREAKING, "r2"),
        ("orders", "column_renamed", "status", BREAKING, "r2"),
        ("orders", "column_dropped", "legacy", DESTRUCTIVE, "r2"),
        ("orders", "index_dropped", None, ADDITIVE, "r2"),  # the table is known from r1's CREATE INDEX
        ("orders", "constraint_dropped", None, BREAKING, "r2"),
        ("invoices", "table_dropped", None, DESTRUCTIVE, "r2"),
    ]
    assert changes[5].describe() == "orders.quantity: column type changed (bigint)"
    assert changes[7].describe() == "orders.status: column renamed status -> state"
    assert lifecycle([c for c in changes if c.table == "invoices"]) == "DROP"


def test_sqlite_batch_rebuild_is_a_change_in_place_and_the_catalog_says_what_changed() -> None:
    before = {"orders": TableShape({"id": ColumnShape("INTEGER", False), "currency": ColumnShape("VARCHAR(3)")})}
    after = {"orders": TableShape({"id": ColumnShape("INTEGER", False),
                                   "currency": ColumnShape("VARCHAR(3)", nullable=False)})}
    changes = release_changes([RevisionStatements("r5", [
        "CREATE TABLE _alembic_tmp_orders (id INTEGER NOT NULL, currency VARCHAR(3) NOT NULL)",
        "INSERT INTO _alembic_tmp_orders (id, currency) SELECT id, currency FROM orders",
        "DROP TABLE orders",
        "ALTER TABLE _alembic_tmp_orders RENAME TO orders",
    ])], before, after)
    assert [(c.table, c.kind, c.column, c.before, c.after, c.source) for c in changes] == [
        ("orders", "column_nullability_changed", "currency", "NULL", "NOT NULL", "catalog")]


def test_catalog_fills_only_what_no_statement_explains() -> None:
    before = {"t": TableShape({"a": ColumnShape("INTEGER"), "b": ColumnShape("TEXT")})}
    after = {"t": TableShape({"a": ColumnShape("INTEGER"), "c": ColumnShape("TEXT"), "d": ColumnShape("BIGINT")})}
    changes = release_changes([RevisionStatements("r", ["ALTER TABLE t RENAME COLUMN b TO c"])], before, after)
    assert [(c.kind, c.column, c.source) for c in changes] == [
        ("column_renamed", "b", "statement"), ("column_added", "d", "catalog")]
    assert catalog_changes(before, {}, "r")[0].kind == "table_dropped"


def shop():
    service = lambda name, reads=(), writes=(): SimpleNamespace(name=name, reads=list(reads), writes=list(writes))
    table = lambda name: SimpleNamespace(name=name, schema_="public")
    return SimpleNamespace(
        databases=[SimpleNamespace(name="db", tables=[table("orders"), table("invoices")])],
        services=[service("billing", ["db.orders"], ["db.invoices"]), service("reports", ["db.invoices"]),
                  service("orders", ["db.orders"], ["db.orders"])])


def test_downstream_follows_readers_and_what_they_write_and_impact_names_readers() -> None:
    assert downstream(shop(), "db", "orders") == ["services/billing", "db/public/invoices", "services/reports"]
    drops = statement_changes([RevisionStatements("c1", ["ALTER TABLE orders DROP COLUMN email",
                                                         "ALTER TABLE orders ADD COLUMN note TEXT"])])
    renamed = Derivation("orders", "email_normalized", ("email",), RENAMED, "e1")
    found = impacts(drops, {"orders": ["billing", "orders"]}, {"orders": downstream(shop(), "db", "orders")}, [renamed])
    assert len(found) == 1  # the additive column is no impact
    assert found[0].readers == ("billing", "orders") and found[0].replacement == "orders.email_normalized"
    assert "read by billing, orders" in found[0].describe()


def test_summary_lists_diffs_lineage_checks_and_affected_services() -> None:
    event = lambda kind, **payload: SimpleNamespace(kind=kind, payload=payload)
    change = {"table": "orders", "kind": "column_dropped", "revision": "c1", "severity": DESTRUCTIVE,
              "column": "email", "before": None, "after": None}
    events = [
        event("lineage:declared", database="db", table="orders", column="email_normalized", sources=["email"],
              lineage_kind=RENAMED, revision="e1"),
        event("schema:changes", database="db", step="contract", from_revision="e1", to_revision="c1",
              changes=[change]),
        event("gate", database="db", table="orders", gate="schema_contract", passed=True, summary="ok"),
        event("schema:impact", database="db", step="contract", impacts=[{"text": "orders.email dropped",
                                                                          "readers": ["billing"], **change}]),
    ]
    text = render_data_summary(events)
    assert "| orders | orders.email: column dropped | destructive | c1 |" in text
    assert "orders.email renamed to email_normalized (renamed, e1)" in text
    assert "| db.orders | schema_contract | passed | ok |" in text
    assert "Readers to tell: billing." in text
    assert derivations_from([events[0].payload])[0].describe() == "orders.email renamed to email_normalized"
