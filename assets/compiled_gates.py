"""Gates in one scan: the expectations of Great Expectations suites that map to SQL aggregates,
and the row count for row conservation, computed by ONE query over the table.

GX runs one query (or more) per expectation; on a large table the scans dominate a gate. The
suite JSON stays the authoring format: each expectation whose type and arguments are listed
here is compiled to an aggregate (`count(*) FILTER (WHERE <unexpected>)`, `avg`, `min`,
`max`, `count(DISTINCT)`) in one SELECT; the rest are left for GX. A failed expectation then
gets its evidence - the exact unexpected count and a sample of bad values - from a small
follow-up query, so a passing gate costs one scan. Results follow GX's semantics: nulls are
"missing" and not unexpected (except for the null expectations), `mostly` is a share of the
non-missing values, `unexpected_percent` is relative to them, and a duplicate counts every row
that carries the repeated value. Identifiers and values reach SQL through SQLAlchemy's quoting
and bound parameters only.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from sqlalchemy import and_, column, func, inspect, not_, select, true
from sqlalchemy import table as sql_table
from sqlalchemy.engine import Engine
from sqlalchemy.sql import ColumnElement

from release_pipelines.assets.gates import sqlite_schema

SAMPLE_SIZE = 5
# Arguments that change nothing about the verdict (GX metadata and output shape).
_NEUTRAL_KWARGS = {"result_format", "catch_exceptions", "meta", "notes", "id", "description"}
_BETWEEN = {"column", "min_value", "max_value", "strict_min", "strict_max", "mostly"}


@dataclass(frozen=True)
class Rule:
    """How one expectation type compiles: `unexpected` marks bad non-null values (row-wise
    expectations), or `aggregate` computes the observed value (column / table expectations)."""

    kwargs: frozenset[str]
    unexpected: Callable[[ColumnElement, Mapping[str, Any]], ColumnElement] | None = None
    aggregate: Callable[[ColumnElement], ColumnElement] | None = None
    postgres_only: bool = False


def _between(value: ColumnElement, kw: Mapping[str, Any]) -> ColumnElement:
    """Rows outside [min_value, max_value] (open bounds with strict_min / strict_max)."""
    low, high = kw.get("min_value"), kw.get("max_value")
    inside = []
    if low is not None:
        inside.append(value > low if kw.get("strict_min") else value >= low)
    if high is not None:
        inside.append(value < high if kw.get("strict_max") else value <= high)
    return not_(and_(true(), *inside))


RULES: dict[str, Rule] = {
    "expect_column_values_to_not_be_null": Rule(frozenset({"column", "mostly"})),
    "expect_column_values_to_be_null": Rule(frozenset({"column", "mostly"})),
    "expect_column_values_to_be_unique": Rule(frozenset({"column", "mostly"})),
    "expect_column_values_to_be_between": Rule(frozenset(_BETWEEN), unexpected=_between),
    "expect_column_values_to_be_in_set": Rule(
        frozenset({"column", "value_set", "mostly"}),
        unexpected=lambda c, kw: c.not_in(list(kw["value_set"])),
    ),
    "expect_column_values_to_not_be_in_set": Rule(
        frozenset({"column", "value_set", "mostly"}),
        unexpected=lambda c, kw: c.in_(list(kw["value_set"])),
    ),
    "expect_column_values_to_match_regex": Rule(
        frozenset({"column", "regex", "mostly"}),
        unexpected=lambda c, kw: not_(c.regexp_match(kw["regex"])),
        postgres_only=True,
    ),
    "expect_column_values_to_not_match_regex": Rule(
        frozenset({"column", "regex", "mostly"}),
        unexpected=lambda c, kw: c.regexp_match(kw["regex"]),
        postgres_only=True,
    ),
    "expect_column_mean_to_be_between": Rule(frozenset(_BETWEEN - {"mostly"}), aggregate=func.avg),
    "expect_column_min_to_be_between": Rule(frozenset(_BETWEEN - {"mostly"}), aggregate=func.min),
    "expect_column_max_to_be_between": Rule(frozenset(_BETWEEN - {"mostly"}), aggregate=func.max),
    "expect_column_sum_to_be_between": Rule(frozenset(_BETWEEN - {"mostly"}), aggregate=func.sum),
    "expect_table_row_count_to_be_between": Rule(frozenset({"min_value", "max_value", "strict_min", "strict_max"})),
    "expect_table_row_count_to_equal": Rule(frozenset({"value"})),
}
_NULL_TYPES = ("expect_column_values_to_not_be_null", "expect_column_values_to_be_null")


@dataclass(frozen=True)
class ExpectationOutcome:
    """One expectation's verdict with the evidence a reviewer needs, from SQL or from GX."""

    expectation: str
    column: str | None
    success: bool
    unexpected_count: int | None = None
    unexpected_percent: float | None = None
    sample: list[Any] = field(default_factory=list)
    observed_value: Any = None
    error: str | None = None

    def evidence(self) -> dict[str, Any]:
        failure: dict[str, Any] = {
            "expectation": self.expectation,
            "column": self.column,
            "unexpected_count": self.unexpected_count,
            "unexpected_percent": self.unexpected_percent,
            "sample": [_plain(v) for v in self.sample[:SAMPLE_SIZE]],
            "observed_value": _plain(self.observed_value),
        }
        if self.error:
            failure["error"] = self.error
        return failure


@dataclass
class TableScan:
    """What one pass over a table decided: the row count, and per suite the outcomes of its
    compiled expectations and the expectations left for GX (as written in the suite)."""

    rows: int
    outcomes: dict[str, list[ExpectationOutcome]]
    left_for_gx: dict[str, list[dict[str, Any]]]


def compilable(expectation: Mapping[str, Any], is_postgres: bool) -> bool:
    """Whether an expectation's type and every argument it uses have a SQL translation here."""
    rule = RULES.get(str(expectation.get("type")))
    kwargs = expectation.get("kwargs")
    if rule is None or not isinstance(kwargs, Mapping) or (rule.postgres_only and not is_postgres):
        return False
    used = set(kwargs) - _NEUTRAL_KWARGS
    if not used <= rule.kwargs or ("column" in rule.kwargs and not isinstance(kwargs.get("column"), str)):
        return False
    if "value_set" in rule.kwargs and not isinstance(kwargs.get("value_set"), list | tuple):
        return False
    if "min_value" in rule.kwargs and not _numbers(kwargs.get("min_value"), kwargs.get("max_value")):
        return False
    mostly = kwargs.get("mostly", 1)
    return isinstance(mostly, int | float) and 0 <= mostly <= 1


def _numbers(*bounds: Any) -> bool:
    """Numeric bounds, at least one (GX refuses two open ends; dates and strings go to GX)."""
    given = [b for b in bounds if b is not None]
    return bool(given) and all(isinstance(b, int | float) and not isinstance(b, bool) for b in given)


def scan_table(
    engine: Engine, schema: str, table: str, suites: Mapping[str, Sequence[Mapping[str, Any]]]
) -> TableScan:
    """One SELECT over `table` for every compilable expectation of `suites` ({gate: the
    suite's expectations}) plus count(*); follow-up queries only for failures."""
    is_postgres = engine.dialect.name == "postgresql"
    live = {c["name"] for c in inspect(engine).get_columns(table, schema=sqlite_schema(engine, schema))}
    source = sql_table(table, *[column(name) for name in sorted(live)], schema=sqlite_schema(engine, schema))
    outputs: list[ColumnElement] = [func.count().label("rows")]
    plans: dict[str, list[tuple[Mapping[str, Any], dict[str, int] | None]]] = {}
    left: dict[str, list[dict[str, Any]]] = {}
    for gate, expectations in suites.items():
        plans[gate], left[gate] = [], []
        for expectation in expectations:
            if not compilable(expectation, is_postgres):
                left[gate].append(dict(expectation))
                continue
            kw = expectation["kwargs"]
            if kw.get("column") is not None and kw["column"] not in live:
                plans[gate].append((expectation, None))  # fails with "column does not exist"
                continue
            slots = {}
            for name, expression in _aggregates(expectation["type"], kw, source).items():
                slots[name] = len(outputs)
                outputs.append(expression.label(f"a{len(outputs)}"))
            plans[gate].append((expectation, slots))
    with engine.connect() as conn:
        row = conn.execute(select(*outputs).select_from(source)).one()
        rows = int(row[0])
        outcomes = {
            gate: [_outcome(conn, source, rows, row, expectation, slots) for expectation, slots in plan]
            for gate, plan in plans.items()
        }
    return TableScan(rows, outcomes, left)


def _aggregates(kind: str, kw: Mapping[str, Any], source: Any) -> dict[str, ColumnElement]:
    rule = RULES[kind]
    if kind.startswith("expect_table_row_count"):
        return {}
    value = source.c[kw["column"]]
    if kind in _NULL_TYPES:
        return {"nonnull": func.count(value)}
    if kind == "expect_column_values_to_be_unique":
        return {"nonnull": func.count(value), "distinct": func.count(value.distinct())}
    if rule.aggregate is not None:
        return {"observed": rule.aggregate(value)}
    return {
        "nonnull": func.count(value),
        "unexpected": func.count().filter(and_(value.is_not(None), rule.unexpected(value, kw))),
    }


def _outcome(
    conn: Any,
    source: Any,
    rows: int,
    row: Any,
    expectation: Mapping[str, Any],
    slots: dict[str, int] | None,
) -> ExpectationOutcome:
    kind, kw = expectation["type"], expectation["kwargs"]
    name = kw.get("column")
    if slots is None:
        return ExpectationOutcome(kind, name, False, error=f'column "{name}" does not exist')
    if kind.startswith("expect_table_row_count"):
        ok = rows == kw["value"] if "value" in kw else _within(rows, kw)
        return ExpectationOutcome(kind, None, ok, observed_value=rows)
    if "observed" in slots:
        observed = _number(row[slots["observed"]])
        ok = observed is not None and _within(observed, kw)
        return ExpectationOutcome(kind, name, ok, observed_value=observed)
    value = source.c[name]
    nonnull = int(row[slots["nonnull"]])
    if kind == "expect_column_values_to_not_be_null":
        unexpected, denominator, bad = rows - nonnull, rows, value.is_(None)
    elif kind == "expect_column_values_to_be_null":
        unexpected, denominator, bad = nonnull, rows, value.is_not(None)
    elif kind == "expect_column_values_to_be_unique":
        unexpected, denominator, bad = nonnull - int(row[slots["distinct"]]), nonnull, None
    else:
        unexpected, denominator = int(row[slots["unexpected"]]), nonnull
        bad = and_(value.is_not(None), RULES[kind].unexpected(value, kw))
    ok = _mostly(unexpected, denominator, kw.get("mostly", 1))
    if unexpected == 0:
        return ExpectationOutcome(kind, name, True, 0, 0.0 if denominator else None)
    if bad is None:  # duplicates: every row carrying a repeated value is unexpected, as in GX
        repeated = (
            select(value).where(value.is_not(None)).group_by(value).having(func.count() > 1)
        ).scalar_subquery()
        bad = value.in_(repeated)
        unexpected = int(conn.execute(select(func.count()).select_from(source).where(bad)).scalar_one())
        ok = _mostly(unexpected, denominator, kw.get("mostly", 1))
    sample = list(conn.execute(select(value).select_from(source).where(bad).limit(SAMPLE_SIZE)).scalars())
    percent = unexpected / denominator * 100 if denominator else None
    return ExpectationOutcome(kind, name, ok, unexpected, percent, sample)


def _mostly(unexpected: int, denominator: int, mostly: float) -> bool:
    if denominator == 0 or unexpected == 0:
        return True
    return (denominator - unexpected) / denominator >= mostly


def _within(observed: float, kw: Mapping[str, Any]) -> bool:
    low, high = kw.get("min_value"), kw.get("max_value")
    if low is not None and (observed <= low if kw.get("strict_min") else observed < low):
        return False
    return not (high is not None and (observed >= high if kw.get("strict_max") else observed > high))


def _number(value: Any) -> Any:
    if isinstance(value, Decimal):
        return float(value)
    if isinstance(value, float) and math.isnan(value):
        return None
    return value


def _plain(value: Any) -> Any:
    return value if isinstance(value, (str, int, float, bool, type(None))) else str(value)


def suite_statistics(outcomes: Sequence[ExpectationOutcome]) -> dict[str, Any]:
    """GX's validation statistics, over outcomes from SQL and from GX alike."""
    passed = sum(1 for o in outcomes if o.success)
    total = len(outcomes)
    return {
        "evaluated_expectations": total,
        "successful_expectations": passed,
        "unsuccessful_expectations": total - passed,
        "success_percent": passed / total * 100 if total else None,
    }

