"""Migrate step: a database's pending EXPAND revisions; compensation per its rollback strategy.

The ledger gets the revision we started from before anything runs, so a rollback after a killed
run knows where to go back to even if the run never wrote "done".
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field

from sqlalchemy import create_engine

from release_pipelines.assets.gates import actual_columns, count_rows
from release_pipelines.core.errors import ReleaseError
from release_pipelines.core.lineage import Impact
from release_pipelines.core.manifest import RollbackStrategy, Table
from release_pipelines.core.product import Product
from release_pipelines.resources.backfill import progress_reporter
from release_pipelines.resources.database_url import resolve_url
from release_pipelines.resources.lock_wait import blocker_reporter
from release_pipelines.resources.migrations import MigrationRunner, RevisionResult
from release_pipelines.resources.snapshot import (
    TableSnapshot,
    drop_snapshot,
    restore_snapshot,
    take_snapshot,
)
from release_pipelines.steps import lineage as lineage_steps
from release_pipelines.steps.context import StepContext
from release_pipelines.steps.lineage import TableChange


@dataclass(frozen=True)
class MigrationOutcome:
    database: str
    from_revision: str | None
    to_revision: str | None
    rows_before: dict[str, int]
    tables: list[TableChange]  # declared tables, and discovered ones the revisions touched
    impacts: list[Impact] = field(default_factory=list)  # contract: breaking changes planned, with readers
    release_id: str = ""


def runner_for(product: Product, database_name: str, application_name: str | None = None) -> MigrationRunner:
    database = product.manifest.database(database_name)
    return MigrationRunner.for_database(database, product.directory, application_name=application_name)


def needed(product: Product, versions: Mapping[str, str], database: str) -> bool:
    """A database is part of a release when a service the release changes depends on it."""
    return any(database in product.manifest.service(s).depends_on for s in versions)


def _row_counts(product: Product, database_name: str) -> dict[str, int]:
    database = product.manifest.database(database_name)
    engine = create_engine(resolve_url(database.url))
    try:
        return {t.name: count_rows(engine, t) for t in database.tables if actual_columns(engine, t) is not None}
    finally:
        engine.dispose()


def _row_counter(ctx: StepContext, database_name: str):
    engine = create_engine(resolve_url(ctx.product.manifest.database(database_name).url))

    def count(table: Table) -> int | None:
        try:
            return count_rows(engine, table)
        finally:
            engine.dispose()

    return count


def _backfill_progress(ctx: StepContext, database_name: str):
    """Log every batch's progress; record each tenth in the ledger so a resumed run shows it too."""
    recorded: dict[str, int] = {}

    def report(job: str, done: int, total: int) -> None:
        share = done / total if total else 1.0
        ctx.log(f"backfill {database_name}/{job}: {done}/{total} rows ({share:.0%})")
        decile = int(share * 10)
        if recorded.get(job) != decile:
            recorded[job] = decile
            ctx.record("backfill:progress", database=database_name, job=job, rows_done=done, rows_total=total)

    return report


def _blockers_to_ledger(ctx: StepContext, database_name: str, run: Callable[[], list[RevisionResult]]) -> list[RevisionResult]:
    """Run a migration; a session ended by `cancel_blockers_after_s` is an intervention, so it
    goes in the ledger."""
    token = blocker_reporter.set(lambda ended: ctx.record("migrate:blocker-ended", database=database_name, **ended))
    try:
        return run()
    finally:
        blocker_reporter.reset(token)


def expand(ctx: StepContext, database_name: str) -> MigrationOutcome:
    """Apply pending expand revisions; what they did to each table."""
    runner = runner_for(ctx.product, database_name, application_name=f"release:{ctx.release_id}")
    start = runner.current()
    pending = [r.revision for r in runner.pending("expand")]
    rows_before = _row_counts(ctx.product, database_name)
    database = ctx.product.manifest.database(database_name)
    if pending and database.rollback is RollbackStrategy.snapshot:
        engine = create_engine(resolve_url(database.url))
        try:
            taken = take_snapshot(engine, database.tables, ctx.release_id)
        finally:
            engine.dispose()
        ctx.record("snapshot:taken", database=database_name, tables=[asdict(t) for t in taken])
        ctx.log(f"{database_name}: snapshot of {', '.join(f'{t.table} ({t.rows} rows)' for t in taken)}")
    ctx.record("migrate:start", database=database_name, from_revision=start, pending=pending, rows_before=rows_before)
    began = time.monotonic()
    token = progress_reporter.set(_backfill_progress(ctx, database_name))
    try:
        with lineage_steps.track(ctx, database_name, "migrate", runner, pending) as tracking:
            results = _blockers_to_ledger(ctx, database_name, lambda: runner.upgrade(log=ctx.log))
    finally:
        progress_reporter.reset(token)
    end = runner.current()
    ctx.record("migrate:done", database=database_name, from_revision=start, to_revision=end,
               revisions=[r.revision for r in results], seconds=round(time.monotonic() - began, 3))
    changes = lineage_steps.table_changes(tracking, results, _row_counter(ctx, database_name)) if results else []
    return MigrationOutcome(database_name, start, end, rows_before, changes, release_id=ctx.release_id)


def contract_impacts(ctx: StepContext, database_name: str,
                     asset_downstream: Mapping[str, Sequence[str]] | None = None) -> list[Impact]:
    """What the pending contract revisions break, and for whom: shown before the point of no return.
    `asset_downstream`: table -> the assets downstream of it in the code location's asset graph."""
    return lineage_steps.contract_impacts(ctx, database_name, runner_for(ctx.product, database_name),
                                          asset_downstream)


def contract_preview(ctx: StepContext, versions: Mapping[str, str],
                     asset_downstream: Mapping[str, Mapping[str, Sequence[str]]] | None = None) -> list[str]:
    """At preflight: what the contract revisions waiting in this release's databases will break and
    for whom (recorded only when the contract job runs them). `asset_downstream`: database -> table
    -> the assets downstream of it in the code location's asset graph."""
    lines = []
    for database in ctx.product.manifest.databases:
        if not needed(ctx.product, versions, database.name):
            continue
        runner = runner_for(ctx.product, database.name)
        found, unrendered = lineage_steps.planned_contract_impacts(ctx, database.name, runner,
                                                                   (asset_downstream or {}).get(database.name))
        lines += [f"{database.name} contract (later, by the contract job): {i.describe()}" for i in found]
        lines += [f"{database.name}: contract revision {r} not renderable offline; impact unknown until it runs"
                  for r in unrendered]
    return lines


def contract(ctx: StepContext, database_name: str, planned: list[Impact] | None = None,
             asset_downstream: Mapping[str, Sequence[str]] | None = None) -> MigrationOutcome:
    """Apply the remaining (contract) revisions: destructive, never downgraded by a rollback.
    `planned`: the impact shown before the point of no return (worked out here when resuming);
    `asset_downstream`: table -> the assets downstream of it in the code location's asset graph."""
    runner = runner_for(ctx.product, database_name, application_name=f"release:{ctx.release_id}:contract")
    start = runner.current()
    pending = [r.revision for r in runner.pending()]
    if planned is None:
        planned = lineage_steps.contract_impacts(ctx, database_name, runner, asset_downstream)
    ctx.record("migrate:contract:start", database=database_name, from_revision=start, pending=pending)
    with lineage_steps.track(ctx, database_name, "contract", runner, pending) as tracking:
        results = _blockers_to_ledger(ctx, database_name, lambda: runner.upgrade_contract(log=ctx.log))
    end = runner.current()
    ctx.record("migrate:contract:done", database=database_name, from_revision=start, to_revision=end,
               revisions=[r.revision for r in results])
    return MigrationOutcome(database_name, start, end, {},
                            lineage_steps.table_changes(tracking, results, _row_counter(ctx, database_name),
                                                        asset_downstream),
                            planned, ctx.release_id)


def compensate(ctx: StepContext, database_name: str) -> None:
    """Go back to the revision the release started from, as the manifest's strategy allows."""
    started = [
        e for e in ctx.ledger.events(ctx.release_id)
        if e.kind == "migrate:start" and e.payload.get("database") == database_name
    ]
    if not started:
        ctx.log(f"{database_name}: this release ran no migration here")
        return
    target = started[0].payload.get("from_revision")
    database = ctx.product.manifest.database(database_name)
    events = ctx.ledger.events(ctx.release_id)
    if any(e.kind == "state:baking" for e in events):
        # Rolled back after promotion (a regression during bake): the new version has been writing
        # through the expanded schema; it is backward compatible, so schema and data stay.
        ctx.record("revert:schema-kept", database=database_name, reason="rollback after promotion")
        ctx.log(f"{database_name}: schema and data kept - the release was promoted, and its expand "
                "revisions are backward compatible with the version being restored")
        return
    if database.rollback is RollbackStrategy.snapshot:
        _restore_snapshots(ctx, database_name)
        return
    if database.rollback is RollbackStrategy.roll_forward:
        ctx.record("revert:schema-kept", database=database_name, reason="rollback strategy is roll-forward")
        ctx.log(f"{database_name}: schema kept (roll-forward); expand revisions are backward compatible")
        return
    runner = runner_for(ctx.product, database_name, application_name=f"release:{ctx.release_id}:rollback")
    current = runner.current()
    current = _finish_interrupted(ctx, runner, database_name, started[0].payload.get("pending") or [], target, current)
    if current == target:
        ctx.log(f"{database_name}: already at {target or 'base'}")
        return
    ctx.record("revert:migrate:start", database=database_name, from_revision=current, to_revision=target)
    runner.downgrade(target or "base", log=ctx.log)
    ctx.record("revert:migrate:done", database=database_name, revision=runner.current())


def _restore_snapshots(ctx: StepContext, database_name: str) -> None:
    """Merge the snapshot taken before expand back into each table; the schema stays expanded."""
    taken = [e for e in ctx.ledger.events(ctx.release_id)
             if e.kind == "snapshot:taken" and e.payload.get("database") == database_name]
    if not taken:
        ctx.log(f"{database_name}: no snapshot was taken (nothing was migrated)")
        return
    database = ctx.product.manifest.database(database_name)
    engine = create_engine(resolve_url(database.url))
    try:
        for item in taken[-1].payload["tables"]:
            snapshot = TableSnapshot(**{**item, "primary_key": tuple(item["primary_key"])})
            result = restore_snapshot(engine, snapshot)
            drop_snapshot(engine, snapshot)
            ctx.record("snapshot:restored", database=database_name, table=result.table,
                       restored=result.restored, kept_new=result.kept_new)
            ctx.log(f"{database_name}.{result.table}: {result.restored} rows restored from the snapshot, "
                    f"{result.kept_new} newer rows kept; schema stays expanded (backward compatible)")
    finally:
        engine.dispose()


def _finish_interrupted(ctx: StepContext, runner: MigrationRunner, database_name: str, pending: list[str],
                        target: str | None, current: str | None) -> str | None:
    """A run killed inside a revision leaves alembic_version before it, but what ran in an
    autocommit block (a backfill's column and batches, CONCURRENTLY) stays: downgrading from the
    recorded revision would skip it. Finish that revision first (expand revisions with autocommit
    blocks must be re-runnable), so its downgrade() undoes all of it."""
    finished = any(e.kind == "migrate:done" and e.payload.get("database") == database_name
                   for e in ctx.ledger.events(ctx.release_id))
    if finished or not pending:
        return current
    if current == target:
        interrupted = pending[0]
    elif current in pending and pending.index(current) + 1 < len(pending):
        interrupted = pending[pending.index(current) + 1]
    else:
        return current
    ctx.record("revert:migrate:finish-interrupted", database=database_name, revision=interrupted)
    ctx.log(f"{database_name}: the release stopped inside {interrupted}; completing it so it can be undone whole")
    try:
        runner.upgrade(interrupted, log=ctx.log)
    except ReleaseError as exc:
        raise ReleaseError(
            f"{database_name}: revision {interrupted} was interrupted and could not be completed to be undone "
            f"({exc}); its autocommit part may still be applied - check the schema by hand"
        ) from None
    return runner.current()


def contract_pending(product: Product, versions: Mapping[str, str]) -> list[str]:
    """Databases of this release that still have contract revisions to run."""
    pending = []
    for database in product.manifest.databases:
        if needed(product, versions, database.name) and runner_for(product, database.name).pending("contract"):
            pending.append(database.name)
    return pending
