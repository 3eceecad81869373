"""Great Expectations suites (JSON files next to the manifest) run as gates on one table.

The suite JSON is the authoring format; the expectations `compiled_gates` can express in SQL
run there, all suites of a table in one scan, and GX validates only the rest.

GX 1.x is called directly (dagster-ge pins GX < 1). Importing it costs ~3 s and ~240 MB, so it
is imported inside `run_suite` only: loading definitions and reading suite files stays cheap.
A suite file names its table in `meta`: {"meta": {"table": "orders", "schema": "public"}}.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy import create_engine, inspect
from sqlalchemy.exc import SQLAlchemyError

from release_pipelines.assets.compiled_gates import (
    ExpectationOutcome,
    TableScan,
    scan_table,
    suite_statistics,
)
from release_pipelines.assets.gates import GateResult, failed_gate, severity_for, sqlite_schema
from release_pipelines.core.errors import ReleaseError
from release_pipelines.resources.database_url import normalize_url, redact


class SuiteFileError(ReleaseError):
    """A suite file is missing, is not JSON, or does not look like a GX 1.x suite."""


@dataclass(frozen=True)
class SuiteFile:
    path: Path
    name: str
    table: str
    schema: str
    document: dict[str, Any]


def suite_check_name(suite_path: str | Path) -> str:
    """The gate (and asset check) name of a suite: stable, derived from the file name alone."""
    return "expectations_" + re.sub(r"[^A-Za-z0-9_]", "_", Path(suite_path).stem)


def read_suite(suite_path: str | Path) -> SuiteFile:
    path = Path(suite_path)
    try:
        document = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise SuiteFileError(f"expectation suite {path} does not exist") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise SuiteFileError(f"cannot read expectation suite {path}: {exc}") from None
    except json.JSONDecodeError as exc:
        raise SuiteFileError(
            f"expectation suite {path} is not valid JSON (line {exc.lineno}: {exc.msg})"
        ) from None
    if not isinstance(document, dict):
        raise SuiteFileError(f"expectation suite {path} must be a JSON object")
    expectations = document.get("expectations")
    if not isinstance(expectations, list) or not expectations:
        raise SuiteFileError(f"expectation suite {path} has no 'expectations' list")
    meta = document.get("meta") if isinstance(document.get("meta"), dict) else {}
    table = meta.get("table")
    if not isinstance(table, str) or not table:
        raise SuiteFileError(
            f'expectation suite {path} must name its table: "meta": {{"table": "orders"}}'
        )
    return SuiteFile(
        path=path,
        name=str(document.get("name") or path.stem),
        table=table,
        schema=str(meta.get("schema") or "public"),
        document=document,
    )


def run_suite(
    url: str,
    schema: str,
    table: str,
    suite_path: str | Path,
    *,
    database: str = "",
    blocking: bool = True,
) -> GateResult:
    """Validate the whole table against the suite; every problem becomes a failed GateResult."""
    return run_suites(url, schema, table, [suite_path], database=database, blocking=blocking)[0][0]


def run_suites(
    url: str,
    schema: str,
    table: str,
    suite_paths: list[str | Path],
    *,
    database: str = "",
    blocking: bool = True,
) -> tuple[list[GateResult], int | None]:
    """Every suite on one table: the expectations that compile to SQL in one scan (which also
    counts the rows, for row conservation), the rest in GX. Returns one result per suite and
    the row count (None when the scan could not run)."""
    results: dict[int, GateResult] = {}
    suites: dict[int, SuiteFile] = {}
    for i, path in enumerate(suite_paths):
        try:
            suite = read_suite(path)
        except SuiteFileError as exc:
            results[i] = _failed(path, schema, table, database, blocking, str(exc))
            continue
        if (suite.schema, suite.table) != (schema, table):
            reason = f"suite {suite.path} is for {suite.schema}.{suite.table}, not {schema}.{table}"
            results[i] = _failed(path, schema, table, database, blocking, reason)
            continue
        suites[i] = suite
    url = normalize_url(url)
    engine = create_engine(url)
    rows: int | None = None
    try:
        if not inspect(engine).has_table(table, schema=sqlite_schema(engine, schema)):
            reason = f"table {schema}.{table} does not exist in {redact(url)}"
            for i in suites:
                results[i] = _failed(suite_paths[i], schema, table, database, blocking, reason)
            return [results[i] for i in sorted(results)], None
        is_sqlite = engine.dialect.name == "sqlite"
        expectations = {str(i): suite.document["expectations"] for i, suite in suites.items()}
        try:
            scan = scan_table(engine, schema, table, expectations)
            rows = scan.rows
        except SQLAlchemyError:
            # The database refused a compiled query (say, a value set of the wrong type): GX
            # runs those suites whole and reports the problem per expectation.
            scan = TableScan(0, {k: [] for k in expectations}, {k: list(v) for k, v in expectations.items()})
    except SQLAlchemyError as exc:
        reason = f"cannot reach {redact(url)}: {type(exc).__name__}"
        for i in suites:
            results[i] = _failed(suite_paths[i], schema, table, database, blocking, reason)
        return [results[i] for i in sorted(results)], None
    finally:
        engine.dispose()
    for i, suite in suites.items():
        compiled, left = scan.outcomes[str(i)], scan.left_for_gx[str(i)]
        gate = suite_check_name(suite.path)
        try:
            by_gx = _validate(url, is_sqlite, schema, table, suite, left) if left else []
        except SuiteFileError as exc:
            results[i] = _failed(suite.path, schema, table, database, blocking, str(exc))
            continue
        except Exception as exc:  # noqa: BLE001 - GX raises many types; all mean "suite did not run"
            message = (str(exc).replace(url, redact(url)).splitlines() or [""])[0]
            reason = f"suite {suite.path} could not run: {type(exc).__name__}: {message}"
            results[i] = _failed(suite.path, schema, table, database, blocking, reason)
            continue
        results[i] = _gate_result(gate, database, schema, table, blocking, suite, compiled, by_gx)
    return [results[i] for i in sorted(results)], rows


def _failed(
    path: str | Path, schema: str, table: str, database: str, blocking: bool, reason: str
) -> GateResult:
    gate = suite_check_name(path)
    return failed_gate(gate, database, schema, table, reason, blocking=blocking)


def _validate(
    url: str,
    is_sqlite: bool,
    schema: str,
    table: str,
    suite: SuiteFile,
    expectations: list[dict[str, Any]],
) -> list[ExpectationOutcome]:
    """Run `expectations` (those of the suite that did not compile to SQL) in GX."""
    # lazy: Great Expectations costs ~3 s and ~240 MB; only a suite that needs it pays for it
    import great_expectations as gx
    from great_expectations.core import ExpectationSuite
    from great_expectations.data_context.types.base import ProgressBarsConfig

    context = gx.get_context(mode="ephemeral")
    context.variables.progress_bars = ProgressBarsConfig(globally=False)
    if is_sqlite:
        source = context.data_sources.add_sqlite(name="release_db", connection_string=url)
    else:
        source = context.data_sources.add_postgres(name="release_db", connection_string=url)
    schema_name = None if is_sqlite else schema
    asset = source.add_table_asset(name=table, table_name=table, schema_name=schema_name)
    batch = asset.add_batch_definition_whole_table("whole_table")
    document = {**suite.document, "expectations": expectations, "name": suite.name}
    gx_suite = context.suites.add(ExpectationSuite(**document))
    # GX logs and drops an expectation it cannot build; an empty suite would then pass.
    if len(gx_suite.expectations) != len(expectations):
        loaded = {e.expectation_type for e in gx_suite.expectations}
        dropped = [e.get("type") for e in expectations if e.get("type") not in loaded]
        raise SuiteFileError(f"expectation suite {suite.path}: GX cannot build {dropped}")
    definition = context.validation_definitions.add(
        gx.ValidationDefinition(data=batch, suite=gx_suite, name=f"{suite.name}_on_{table}")
    )
    return [_outcome(r) for r in definition.run().results]


def _gate_result(
    gate: str,
    database: str,
    schema: str,
    table: str,
    blocking: bool,
    suite: SuiteFile,
    compiled: list[ExpectationOutcome],
    by_gx: list[ExpectationOutcome],
) -> GateResult:
    outcomes = compiled + by_gx
    failing = [o.evidence() for o in outcomes if not o.success]
    stats = suite_statistics(outcomes)
    evidence: dict[str, Any] = {
        "suite": str(suite.path),
        **stats,
        "compiled_expectations": len(compiled),
        "failing_expectations": failing,
    }
    total = stats["evaluated_expectations"]
    passed = not failing
    if passed:
        summary = f"all {total} expectations of suite {suite.name} met"
    else:
        names = ", ".join(
            f"{f['expectation']}({f['column']})" if f["column"] else f["expectation"]
            for f in failing
        )
        summary = f"{len(failing)} of {total} expectations of suite {suite.name} failed: {names}"
    return GateResult(
        gate, database, schema, table, passed, severity_for(blocking), summary, evidence
    )


def _outcome(expectation_result: Any) -> ExpectationOutcome:
    """What a reviewer needs about one expectation, not GX's whole result blob."""
    config = expectation_result.expectation_config
    details = expectation_result.result or {}
    return ExpectationOutcome(
        expectation=config.type,
        column=config.kwargs.get("column"),
        success=bool(expectation_result.success),
        unexpected_count=details.get("unexpected_count"),
        unexpected_percent=details.get("unexpected_percent"),
        sample=list(details.get("partial_unexpected_list") or []),
        observed_value=details.get("observed_value"),
        error=_exception_message(expectation_result.exception_info or {}),
    )


def _exception_message(info: dict[str, Any]) -> str | None:
    """GX nests exception info per metric, or not at all, depending on where it failed."""
    if info.get("raised_exception"):
        return info.get("exception_message")
    nested = [v.get("exception_message") for v in info.values() if isinstance(v, dict)]
    return next((m for m in nested if m), None)
