"""Gate verdicts as Dagster asset checks on the table assets (thin glue over `release_pipelines.assets.gates`).

Checks on external assets cannot block anything Dagster computes, so these are non-blocking and
run through `checks_job`, an asset job that selects only the checks: launch it from the UI, a
schedule or the release job. The database URL is resolved from the manifest's environment
reference when the check runs, never when definitions load.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from dagster import (
    AssetCheckEvaluation,
    AssetCheckKey,
    AssetCheckResult,
    AssetChecksDefinition,
    AssetCheckSeverity,
    AssetCheckSpec,
    AssetKey,
    AssetSelection,
    MetadataValue,
    define_asset_job,
    multi_asset_check,
)
from sqlalchemy import create_engine
from sqlalchemy.exc import SQLAlchemyError

from release_pipelines.assets.gates import (
    GateResult,
    constraint_validity,
    failed_gate,
    schema_contract,
)
from release_pipelines.assets.great_expectations import (
    SuiteFileError,
    read_suite,
    run_suite,
    suite_check_name,
)
from release_pipelines.assets.keys import DEFAULT_KEYS, AssetKeys
from release_pipelines.assets.tables import TableAssetTranslator, dagster_name, table_key
from release_pipelines.core.errors import ReleaseError
from release_pipelines.core.manifest import Database, Manifest, Table
from release_pipelines.resources.database_url import redact, resolve_url

if TYPE_CHECKING:  # what define_asset_job returns; dagster does not export the name
    from dagster._core.definitions.unresolved_asset_job_definition import (
        UnresolvedAssetJobDefinition,
    )

_DESCRIPTIONS = {
    "schema_contract": "Declared columns exist with compatible types (extra columns allowed).",
    "constraint_validity": "No INVALID index and no NOT VALID constraint left on the table.",
}


def gate_metadata(result: GateResult) -> dict[str, MetadataValue]:
    """Evidence as typed metadata: numbers stay numbers so the UI can plot them across runs."""
    metadata: dict[str, MetadataValue] = {"summary": MetadataValue.text(result.summary)}
    for name, value in result.evidence.items():
        if isinstance(value, bool):
            metadata[name] = MetadataValue.bool(value)
        elif isinstance(value, int):
            metadata[name] = MetadataValue.int(value)
        elif isinstance(value, float):
            metadata[name] = MetadataValue.float(value)
        elif isinstance(value, str):
            metadata[name] = MetadataValue.text(value)
        elif value is not None:
            metadata[name] = MetadataValue.json(value)
    return metadata


def gate_check_evaluation(
    result: GateResult, asset_key: AssetKey | None = None, keys: AssetKeys = DEFAULT_KEYS
) -> AssetCheckEvaluation:
    """For op jobs: `yield` this before `raise Failure(...)` so the verdict survives the failure."""
    return AssetCheckEvaluation(
        asset_key=asset_key or table_key_of(result, keys),
        check_name=result.gate,
        passed=result.passed,
        severity=_severity(result),
        description=result.summary,
        metadata=gate_metadata(result),
    )


def gate_check_result(result: GateResult, asset_key: AssetKey | None = None) -> AssetCheckResult:
    """For asset-check functions, which must yield results rather than evaluations."""
    return AssetCheckResult(
        asset_key=asset_key or table_key_of(result),
        check_name=result.gate,
        passed=result.passed,
        severity=_severity(result),
        description=result.summary,
        metadata=gate_metadata(result),
    )


@dataclass(frozen=True)
class _PlannedCheck:
    name: str
    table: Table
    key: AssetKey
    suite: Path | None = None

    @property
    def check_key(self) -> AssetCheckKey:
        return AssetCheckKey(self.key, self.name)


def table_asset_checks(
    manifest: Manifest, manifest_dir: str | Path, translator: TableAssetTranslator | None = None
) -> list[AssetChecksDefinition]:
    """One multi-check per database: schema contract and constraint validity per table, and
    each Great Expectations suite the database lists, on the table the suite names."""
    return [
        _database_checks(database, _plan(database, Path(manifest_dir), translator))
        for database in manifest.databases
        if database.tables
    ]


def checks_job(
    manifest: Manifest, translator: TableAssetTranslator | None = None
) -> UnresolvedAssetJobDefinition:
    """`<product>_data_checks`: every check on the manifest's tables, and no materializations."""
    keys = [table_key(db, table, translator) for db in manifest.databases for table in db.tables]
    return define_asset_job(
        name=f"{dagster_name(manifest.product)}_data_checks",
        selection=AssetSelection.checks_for_assets(*keys),
        description=f"Data-integrity checks on {manifest.product}'s tables, live databases.",
    )


def _plan(
    database: Database, manifest_dir: Path, translator: TableAssetTranslator | None
) -> list[_PlannedCheck]:
    planned = [
        _PlannedCheck(gate, table, table_key(database, table, translator))
        for table in database.tables
        for gate in _DESCRIPTIONS
    ]
    for relative in database.checks.expectations:
        path = manifest_dir / relative
        table = _suite_table(database, path)
        planned.append(
            _PlannedCheck(
                suite_check_name(path), table, table_key(database, table, translator), path
            )
        )
    seen: set[AssetCheckKey] = set()
    for check in planned:
        if check.check_key in seen:
            raise ReleaseError(
                f"database {database.name}: two suites give check {check.name} "
                f"on {check.table.name}; rename one file"
            )
        seen.add(check.check_key)
    return planned


def _suite_table(database: Database, path: Path) -> Table:
    """The table a suite applies to. An unreadable suite falls back to its file name, so that
    the check still shows up and fails with the reason, instead of breaking definitions load."""
    try:
        suite = read_suite(path)
        name, schema, problem = suite.table, suite.schema, ""
    except SuiteFileError as exc:
        name, schema, problem = path.stem, "public", f" ({exc})"
    for table in database.tables:
        if (table.name, table.schema_) == (name, schema):
            return table
    raise ReleaseError(
        f"expectation suite {path} is for table {schema}.{name}, which database "
        f"{database.name} does not declare{problem}"
    )


def _database_checks(database: Database, planned: list[_PlannedCheck]) -> AssetChecksDefinition:
    @multi_asset_check(
        name=f"{dagster_name(database.name)}_data_checks",
        specs=[
            AssetCheckSpec(
                check.name,
                asset=check.key,
                description=_DESCRIPTIONS.get(
                    check.name, f"Great Expectations suite {check.suite}"
                ),
                blocking=False,
            )
            for check in planned
        ],
        can_subset=True,
        description=f"Data-integrity gates on database {database.name}.",
    )
    # No annotation on `context`: under `from __future__ import annotations` dagster rejects it.
    def _checks(context) -> Iterator[AssetCheckResult]:
        selected = context.selected_asset_check_keys
        for check in planned:
            if check.check_key in selected:
                result = _run_gate(database, check)
                context.log.info(f"{check.name} on {check.table.name}: {result.summary}")
                yield gate_check_result(result, check.key)

    return _checks


def _run_gate(database: Database, check: _PlannedCheck) -> GateResult:
    """Run one gate; an unreachable database or unset URL variable is a failed gate, not a crash."""
    table, blocking = check.table, database.checks.blocking
    url = ""
    try:
        url = resolve_url(database.url)
        if check.suite is not None:
            return run_suite(
                url,
                table.schema_,
                table.name,
                check.suite,
                database=database.name,
                blocking=blocking,
            )
        engine = create_engine(url)
        try:
            if check.name == "schema_contract":
                return schema_contract(engine, table, database=database.name, blocking=blocking)
            return constraint_validity(
                engine, table.schema_, table.name, database=database.name, blocking=blocking
            )
        finally:
            engine.dispose()
    except (ReleaseError, SQLAlchemyError) as exc:
        message = str(exc).replace(url, redact(url)) if url else str(exc)
        reason = f"{type(exc).__name__}: {message.splitlines()[0] if message else ''}"
        return failed_gate(
            check.name, database.name, table.schema_, table.name, reason, blocking=blocking
        )


def table_key_of(result: GateResult, keys: AssetKeys = DEFAULT_KEYS) -> AssetKey:
    """The key of the table a gate judged, under the product's key mapping."""
    return keys.table(result.database, result.schema, result.table)


def _severity(result: GateResult) -> AssetCheckSeverity:
    return AssetCheckSeverity.ERROR if result.severity == "error" else AssetCheckSeverity.WARN
