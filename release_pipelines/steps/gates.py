"""Gate step: data-integrity checks between a migration and the traffic that depends on it.

Each verdict is recorded in the ledger and returned; the op reports it as an asset check
evaluation on the table (so it survives the op failing), then a failing blocking gate stops the
release before any traffic.
"""

from __future__ import annotations

from sqlalchemy import create_engine

from release_pipelines.assets.gates import (
    GateResult,
    constraint_validity,
    count_rows,
    row_conservation,
    schema_contract,
)
from release_pipelines.assets.great_expectations import read_suite, run_suite
from release_pipelines.core.errors import ReleaseError
from release_pipelines.resources.database_url import resolve_url
from release_pipelines.steps.context import StepContext


def evaluate(ctx: StepContext, database_name: str, rows_before: dict[str, int]) -> list[GateResult]:
    """Every gate the manifest declares for this database, run against the live tables."""
    database = ctx.product.manifest.database(database_name)
    url = resolve_url(database.url)
    blocking = database.checks.blocking
    engine = create_engine(url)
    results: list[GateResult] = []
    try:
        for table in database.tables:
            results.append(schema_contract(engine, table, database=database.name, blocking=blocking))
            results.append(constraint_validity(engine, table.schema_, table.name, database=database.name, blocking=blocking))
            if table.name in rows_before:
                results.append(
                    row_conservation(rows_before[table.name], count_rows(engine, table), database.checks.row_count_tolerance,
                                     database=database.name, schema=table.schema_, table=table.name, blocking=blocking)
                )
    finally:
        engine.dispose()
    for suite_file in database.checks.expectations:
        path = ctx.product.resolve(suite_file)
        suite = read_suite(path)
        results.append(run_suite(url, suite.schema, suite.table, path, database=database.name, blocking=blocking))
    return results


def run_gates(ctx: StepContext, database_name: str, rows_before: dict[str, int]) -> list[GateResult]:
    """Run every gate, record and log each verdict; the caller reports them, then calls
    `stop_on_blocking_failures` (so the verdicts are kept even when the release stops)."""
    results = evaluate(ctx, database_name, rows_before)
    for result in results:
        ctx.record("gate", database=database_name, table=result.table, gate=result.gate,
                   passed=result.passed, summary=result.summary)
        ctx.log(f"gate {result.gate} on {result.table}: {'passed' if result.passed else 'FAILED'} - {result.summary}")
    return results


def stop_on_blocking_failures(results: list[GateResult]) -> None:
    blocking_failures = [r for r in results if not r.passed and r.severity == "error"]
    if blocking_failures:
        raise ReleaseError(
            "blocking data gates failed, no traffic was moved: "
            + "; ".join(f"{r.gate} on {r.table}: {r.summary}" for r in blocking_failures)
        )
