"""Data-integrity gates: typed verdicts about one table, computed by SQL introspection.

Plain Python over a SQLAlchemy engine (no Dagster here), so the release job, the asset checks and
unit tests all share one implementation. Identifiers from manifests reach SQL only through
SQLAlchemy's quoting or as bound parameters, never by string formatting.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal

from sqlalchemy import func, inspect, select, text
from sqlalchemy import table as sql_table
from sqlalchemy.engine import Engine

from release_pipelines.core.manifest import Table

Severity = Literal["error", "warn"]

# Type names that mean the same thing across PostgreSQL, SQLite and the SQL standard.
_TYPE_FAMILIES: dict[str, tuple[str, ...]] = {
    "smallint": ("smallint", "int2", "smallserial", "serial2", "tinyint"),
    "integer": ("integer", "int", "int4", "serial", "serial4", "mediumint"),
    "bigint": ("bigint", "int8", "bigserial", "serial8"),
    "text": (
        "text",
        "varchar",
        "character varying",
        "char",
        "character",
        "bpchar",
        "string",
        "nvarchar",
        "nchar",
        "clob",
        "citext",
    ),
    "numeric": ("numeric", "decimal"),
    "float": ("real", "float", "float4", "float8", "double", "double precision"),
    "boolean": ("boolean", "bool"),
    "timestamp": ("timestamp", "timestamp without time zone", "datetime"),
    "timestamptz": ("timestamptz", "timestamp with time zone"),
    "date": ("date",),
    "time": ("time", "time without time zone"),
    "uuid": ("uuid",),
    "json": ("json", "jsonb"),
    "bytes": ("bytea", "blob", "binary", "varbinary"),
}
_FAMILY_OF = {alias: family for family, aliases in _TYPE_FAMILIES.items() for alias in aliases}
# A narrower integer column satisfies a wider contract (its values fit); never the reverse.
_INTEGER_WIDTH = {"smallint": 2, "integer": 4, "bigint": 8}


@dataclass(frozen=True)
class GateResult:
    """One gate's verdict on one table; `evidence` holds the numbers a reviewer needs."""

    gate: str
    database: str
    schema: str
    table: str
    passed: bool
    severity: Severity
    summary: str
    evidence: dict[str, Any] = field(default_factory=dict)


def severity_for(blocking: bool) -> Severity:
    return "error" if blocking else "warn"


def sqlite_schema(engine: Engine, schema: str) -> str | None:
    """SQLite has no 'public' schema: manifests say 'public', SQLite means its main database."""
    return None if engine.dialect.name == "sqlite" and schema == "public" else schema


def type_family(sql_type: str) -> str:
    """Normalise a SQL type name: lower case, no length or precision, aliases folded together."""
    name = re.sub(r"\(.*?\)", "", sql_type.lower())
    name = re.sub(r"\s+", " ", name).strip()
    return _FAMILY_OF.get(name, name)


def types_compatible(declared: str, actual: str) -> bool:
    want, have = type_family(declared), type_family(actual)
    if want in _INTEGER_WIDTH and have in _INTEGER_WIDTH:
        return _INTEGER_WIDTH[have] <= _INTEGER_WIDTH[want]
    return want == have


def actual_columns(engine: Engine, table: Table) -> dict[str, str] | None:
    """The table's live columns (name -> SQL type as the database reports it); None if absent."""
    inspector = inspect(engine)
    schema = sqlite_schema(engine, table.schema_)
    if not inspector.has_table(table.name, schema=schema):
        return None
    return {
        column["name"]: column["type"].compile(dialect=engine.dialect)
        for column in inspector.get_columns(table.name, schema=schema)
    }


def schema_contract(
    engine: Engine, table: Table, *, database: str = "", blocking: bool = True
) -> GateResult:
    """Every declared column exists with a compatible type; extra columns are allowed."""
    result = _result_for("schema_contract", database, table.schema_, table.name, blocking)
    columns = actual_columns(engine, table)
    if columns is None:
        return result(False, f"table {table.schema_}.{table.name} does not exist", {})
    missing = sorted(set(table.columns) - set(columns))
    wrong = {
        name: {"declared": declared, "actual": columns[name]}
        for name, declared in table.columns.items()
        if name in columns and not types_compatible(declared, columns[name])
    }
    evidence: dict[str, Any] = {
        "declared_columns": len(table.columns),
        "actual_columns": len(columns),
        "missing_columns": missing,
        "wrong_types": wrong,
    }
    if not missing and not wrong:
        return result(True, f"all {len(table.columns)} declared columns present", evidence)
    problems = [f"missing column {name}" for name in missing] + [
        f"{name} is {types['actual']}, contract says {types['declared']}"
        for name, types in wrong.items()
    ]
    return result(False, "; ".join(problems), evidence)


def count_rows(engine: Engine, table: Table) -> int:
    query = select(func.count()).select_from(
        sql_table(table.name, schema=sqlite_schema(engine, table.schema_))
    )
    with engine.connect() as conn:
        return int(conn.execute(query).scalar_one())


def row_conservation(
    before: int,
    after: int,
    tolerance: float,
    *,
    database: str = "",
    schema: str = "public",
    table: str = "",
    blocking: bool = True,
) -> GateResult:
    """A migration keeps the row count within `tolerance` (a fraction of the rows before)."""
    result = _result_for("row_conservation", database, schema, table, blocking)
    delta = after - before
    # round() first so that 0.29 * 100 allows 29 rows, not 28.999... -> 28.
    allowed = math.floor(round(tolerance * before, 9))
    evidence: dict[str, Any] = {
        "rows_before": before,
        "rows_after": after,
        "delta": delta,
        "allowed_delta": allowed,
        "tolerance": tolerance,
    }
    if abs(delta) <= allowed:
        return result(True, f"{before} -> {after} rows, within +/-{allowed}", evidence)
    return result(False, f"{before} -> {after} rows ({delta:+d}), allowed +/-{allowed}", evidence)


def constraint_validity(
    engine: Engine, schema: str, table: str, *, database: str = "", blocking: bool = True
) -> GateResult:
    """No INVALID index (a failed CREATE INDEX CONCURRENTLY) and no NOT VALID constraint left."""
    result = _result_for("constraint_validity", database, schema, table, blocking)
    if not inspect(engine).has_table(table, schema=sqlite_schema(engine, schema)):
        return result(False, f"table {schema}.{table} does not exist", {})
    if engine.dialect.name != "postgresql":
        note = f"{engine.dialect.name} has no invalid indexes or NOT VALID constraints"
        return result(True, note, {"note": note})
    where = "n.nspname = :schema AND t.relname = :table"
    with engine.connect() as conn:
        invalid_indexes = (
            conn.execute(
                text(
                    "SELECT i.relname FROM pg_index x"
                    " JOIN pg_class i ON i.oid = x.indexrelid"
                    " JOIN pg_class t ON t.oid = x.indrelid"
                    " JOIN pg_namespace n ON n.oid = t.relnamespace"
                    f" WHERE {where} AND NOT x.indisvalid ORDER BY 1"
                ),
                {"schema": schema, "table": table},
            )
            .scalars()
            .all()
        )
        unvalidated = (
            conn.execute(
                text(
                    "SELECT c.conname FROM pg_constraint c"
                    " JOIN pg_class t ON t.oid = c.conrelid"
                    " JOIN pg_namespace n ON n.oid = t.relnamespace"
                    f" WHERE {where} AND NOT c.convalidated ORDER BY 1"
                ),
                {"schema": schema, "table": table},
            )
            .scalars()
            .all()
        )
    evidence: dict[str, Any] = {
        "invalid_indexes": list(invalid_indexes),
        "not_valid_constraints": list(unvalidated),
    }
    if not invalid_indexes and not unvalidated:
        return result(True, "all indexes valid and all constraints validated", evidence)
    problems = [f"index {name} is INVALID (drop and rebuild it)" for name in invalid_indexes] + [
        f"constraint {name} is NOT VALID (run VALIDATE CONSTRAINT)" for name in unvalidated
    ]
    return result(False, "; ".join(problems), evidence)


def failed_gate(
    gate: str, database: str, schema: str, table: str, reason: str, *, blocking: bool = True
) -> GateResult:
    """A gate that could not run (database unreachable, suite unreadable) is a failed gate."""
    return _result_for(gate, database, schema, table, blocking)(False, reason, {"error": reason})


def _result_for(
    gate: str, database: str, schema: str, table: str, blocking: bool
) -> Callable[[bool, str, dict[str, Any]], GateResult]:
    def build(passed: bool, summary: str, evidence: dict[str, Any]) -> GateResult:
        return GateResult(
            gate, database, schema, table, passed, severity_for(blocking), summary, evidence
        )

    return build
