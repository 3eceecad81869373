"""The live shape of a database's tables (SQLAlchemy reflection), as `core.schema_diff` compares it.

Read before and after a migration step: tables the revisions created appear, dropped ones go,
and whatever no parsed statement explains shows in the difference.
"""

from __future__ import annotations

from sqlalchemy import inspect
from sqlalchemy.engine import Engine

from release_pipelines.core.schema_diff import ColumnShape, TableShape

SNAPSHOT_MARK = "__snap_"  # resources.snapshot's copies for `rollback: snapshot`


def table_shapes(engine: Engine, schema: str = "public") -> dict[str, TableShape]:
    """Every table of `schema` (the main database on SQLite): columns, indexes, constraints."""
    inspector = inspect(engine)
    schema_name = None if engine.dialect.name == "sqlite" else schema
    shapes = {}
    for table in inspector.get_table_names(schema=schema_name):
        if SNAPSHOT_MARK in table:
            continue
        columns = {
            c["name"]: ColumnShape(c["type"].compile(dialect=engine.dialect), bool(c["nullable"]))
            for c in inspector.get_columns(table, schema=schema_name)
        }
        indexes = frozenset(i["name"] for i in inspector.get_indexes(table, schema=schema_name) if i["name"])
        constraints = frozenset(
            c["name"] for getter in (inspector.get_check_constraints, inspector.get_unique_constraints,
                                     inspector.get_foreign_keys)
            for c in getter(table, schema=schema_name) if c.get("name")
        )
        shapes[table] = TableShape(columns, indexes, constraints)
    return shapes
