"""Great Expectations suites (JSON files next to the manifest) run as gates on one table.

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

from release_pipelines.assets.gates import GateResult, failed_gate, severity_for, sqlite_schema
from release_pipelines.resources.database_url import normalize_url, redact
from sqlalchemy import create_engine, inspect
from sqlalchemy.exc import SQLAlchemyError

from release_pipelines.core.errors import ReleaseError

SAMPLE_SIZE = 5


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
    gate = suite_check_name(suite_path)

    def failed(reason: str) -> GateResult:
        return failed_gate(gate, database, schema, table, reason, blocking=blocking)

    try:
        suite = read_suite(suite_path)
    except SuiteFileError as exc:
        return failed(str(exc))
    if (suite.schema, suite.table) != (schema, table):
        return failed(
            f"suite {suite.path} is for {suite.schema}.{suite.table}, not {schema}.{table}"
        )
    url = normalize_url(url)
    engine = create_engine(url)
    try:
        if not inspect(engine).has_table(table, schema=sqlite_schema(engine, schema)):
            return failed(f"table {schema}.{table} does not exist in {redact(url)}")
        is_sqlite = engine.dialect.name == "sqlite"
    except SQLAlchemyError as exc:
        return failed(f"cannot reach {redact(url)}: {type(exc).__name__}")
    finally:
        engine.dispose()
    try:
        result = _validate(url, is_sqlite, schema, table, suite)
    except SuiteFileError as exc:
        return failed(str(exc))
    except Exception as exc:  # noqa: BLE001 - GX raises many types; all mean "suite did not run"
        message = (str(exc).replace(url, redact(url)).splitlines() or [""])[0]
        return failed(f"suite {suite.path} could not run: {type(exc).__name__}: {message}")
    return _gate_result(gate, database, schema, table, blocking, suite, result)


def _validate(url: str, is_sqlite: bool, schema: str, table: str, suite: SuiteFile) -> Any:
    # lazy: Great Expectations costs ~3 s and ~240 MB; only a gate that validates pays for it
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
    gx_suite = context.suites.add(ExpectationSuite(**{**suite.document, "name": suite.name}))
    # GX logs and drops an expectation it cannot build; an empty suite would then pass.
    if len(gx_suite.expectations) != len(suite.document["expectations"]):
        loaded = {e.expectation_type for e in gx_suite.expectations}
        dropped = [
            e.get("type") for e in suite.document["expectations"] if e.get("type") not in loaded
        ]
        raise SuiteFileError(f"expectation suite {suite.path}: GX cannot build {dropped}")
    definition = context.validation_definitions.add(
        gx.ValidationDefinition(data=batch, suite=gx_suite, name=f"{suite.name}_on_{table}")
    )
    return definition.run()


def _gate_result(
    gate: str, database: str, schema: str, table: str, blocking: bool, suite: SuiteFile, result: Any
) -> GateResult:
    failing = [_failure(r) for r in result.results if not r.success]
    stats = dict(result.statistics)
    evidence: dict[str, Any] = {"suite": str(suite.path), **stats, "failing_expectations": failing}
    total = stats.get("evaluated_expectations", len(result.results))
    if result.success:
        summary = f"all {total} expectations of suite {suite.name} met"
    else:
        names = ", ".join(
            f"{f['expectation']}({f['column']})" if f["column"] else f["expectation"]
            for f in failing
        )
        summary = f"{len(failing)} of {total} expectations of suite {suite.name} failed: {names}"
    return GateResult(
        gate,
        database,
        schema,
        table,
        bool(result.success),
        severity_for(blocking),
        summary,
        evidence,
    )


def _failure(expectation_result: Any) -> dict[str, Any]:
    """What a reviewer needs about one failed expectation, not GX's whole result blob."""
    config = expectation_result.expectation_config
    details = expectation_result.result or {}
    failure: dict[str, Any] = {
        "expectation": config.type,
        "column": config.kwargs.get("column"),
        "unexpected_count": details.get("unexpected_count"),
        "unexpected_percent": details.get("unexpected_percent"),
        "sample": [_plain(v) for v in (details.get("partial_unexpected_list") or [])[:SAMPLE_SIZE]],
    }
    error = _exception_message(expectation_result.exception_info or {})
    if error:
        failure["error"] = error
    return failure


def _exception_message(info: dict[str, Any]) -> str | None:
    """GX nests exception info per metric, or not at all, depending on where it failed."""
    if info.get("raised_exception"):
        return info.get("exception_message")
    nested = [v.get("exception_message") for v in info.values() if isinstance(v, dict)]
    return next((m for m in nested if m), None)


def _plain(value: Any) -> Any:
    return value if isinstance(value, (str, int, float, bool, type(None))) else str(value)
