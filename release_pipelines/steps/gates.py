"""Gate step: data-integrity checks between a migration and the traffic that depends on it.

Each verdict is recorded in the ledger and returned; the op reports it as an asset check
evaluation on the table (so it survives the op failing), then a failing blocking gate stops the
release before any traffic.
"""

from __future__ import annotations

from pathlib import Path

from sqlalchemy import create_engine

from release_pipelines.assets.gates import (
    GateResult,
    constraint_validity,
    count_rows,
    row_conservation,
    schema_contract,
)
from release_pipelines.assets.great_expectations import read_suite, run_suites
from release_pipelines.core.errors import ReleaseError
from release_pipelines.resources.database_url import resolve_url
from release_pipelines.steps.context import StepContext
from release_pipelines.steps.lineage import emit_gates


def evaluate(ctx: StepContext, database_name: str, rows_before: dict[str, int]) -> list[GateResult]:
    """Every gate the manifest declares for this database, run against the live tables: the
    contract and constraints from the catalog, then per table ONE scan for its suites'
    compilable expectations and the row count (GX only for what does not compile)."""
    database = ctx.product.manifest.database(database_name)
    url = resolve_url(database.url)
    blocking = database.checks.blocking
    paths = [ctx.product.resolve(suite_file) for suite_file in database.checks.expectations]
    by_table: dict[tuple[str, str], list[Path]] = {}
    for path in paths:
        suite = read_suite(path)
        by_table.setdefault((suite.schema, suite.table), []).append(path)
    engine = create_engine(url)
    results: list[GateResult] = []
    verdicts: dict[Path, GateResult] = {}
    try:
        for table in database.tables:
            results.append(schema_contract(engine, table, database=database.name, blocking=blocking))
            results.append(constraint_validity(engine, table.schema_, table.name, database=database.name, blocking=blocking))
            on_table = by_table.pop((table.schema_, table.name), [])
            rows = None
            if on_table:
                suite_results, rows = run_suites(url, table.schema_, table.name, on_table, database=database.name, blocking=blocking)
                verdicts.update(zip(on_table, suite_results))
            if table.name in rows_before:
                after = rows if rows is not None else count_rows(engine, table)
                results.append(
                    row_conservation(rows_before[table.name], after, database.checks.row_count_tolerance,
                                     database=database.name, schema=table.schema_, table=table.name, blocking=blocking)
                )
    finally:
        engine.dispose()
    for (schema, name), on_table in by_table.items():  # suites on tables the manifest does not list
        verdicts.update(zip(on_table, run_suites(url, schema, name, on_table, database=database.name, blocking=blocking)[0]))
    return results + [verdicts[path] for path in paths]


def run_gates(ctx: StepContext, database_name: str, rows_before: dict[str, int]) -> list[GateResult]:
    """Run every gate, record and log each verdict; the caller reports them, then calls
    `stop_on_blocking_failures` (so the verdicts are kept even when the release stops)."""
    results = evaluate(ctx, database_name, rows_before)
    for result in results:
        ctx.record("gate", database=database_name, table=result.table, gate=result.gate,
                   passed=result.passed, summary=result.summary)
        ctx.log(f"gate {result.gate} on {result.table}: {'passed' if result.passed else 'FAILED'} - {result.summary}")
    emit_gates(ctx, database_name, results)  # OpenLineage data-quality assertions, when configured
    return results


def stop_on_blocking_failures(results: list[GateResult]) -> None:
    blocking_failures = [r for r in results if not r.passed and r.severity == "error"]
    if blocking_failures:
        raise ReleaseError(
            "blocking data gates failed, no traffic was moved: "
            + "; ".join(f"{r.gate} on {r.table}: {r.summary}" for r in blocking_failures)
        )
