"""Lineage around a migration step: what it did to each table, who reads it, and OpenLineage.

`track(ctx, database, step)` wraps a migration: it reflects the catalog before, records the
column lineage the revisions declare, sends OpenLineage START / COMPLETE / FAIL (only when
configured), and afterwards turns statements + catalog into per-table changes (`TableChange`)
for the op to materialize. Everything it learns goes to the ledger first (`schema:changes`,
`lineage:declared`, `schema:impact`), which the release summary is rendered from.

An impact's downstream assets are the manifest's graph joined with `asset_downstream`, the
code location's asset graph as the op read it (table name -> asset key strings; steps never
import Dagster), so a data team's own assets on a table are listed too.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from typing import Any

from sqlalchemy import create_engine

from release_pipelines.core.lineage import (
    Derivation,
    Impact,
    LineageDataset,
    change_from,
    derivations_from,
    downstream,
    impacts,
)
from release_pipelines.core.manifest import Table
from release_pipelines.core.schema_diff import (
    RevisionStatements,
    SchemaChange,
    TableShape,
    by_table,
    lifecycle,
    release_changes,
    statement_changes,
)
from release_pipelines.resources.catalog import table_shapes
from release_pipelines.resources.column_lineage import lineage_recorder
from release_pipelines.resources.database_url import resolve_url
from release_pipelines.resources.migration_render import render_revisions
from release_pipelines.resources.openlineage import LineageEmitter, StepRun, dataset_namespace
from release_pipelines.steps.context import StepContext

HISTORY_RELEASES = 50  # how far back a column's last change is looked up


@dataclass(frozen=True)
class TableChange:
    """What a migration step did to one table, declared in the manifest or discovered."""

    table: Table
    statements: list[str]
    duration_s: float
    row_count: int | None
    columns: dict[str, str]
    changes: list[SchemaChange] = field(default_factory=list)
    previous_columns: dict[str, str] | None = None
    declared: bool = True
    data_version: str | None = None
    lifecycle: str = "ALTER"
    column_lineage: dict[str, list[tuple[str, str]]] = field(default_factory=dict)
    impacts: list[Impact] = field(default_factory=list)
    column_notes: dict[str, str] = field(default_factory=dict)  # column -> the release that last changed it


@dataclass
class Tracking:
    """Filled while the step runs; `table_changes` reads it afterwards."""

    ctx: StepContext
    database: str
    step: str
    before: dict[str, TableShape]
    emitter: LineageEmitter | None
    run: StepRun
    pending: list[str]
    runner: Any
    declared: list[Derivation] = field(default_factory=list)


def _shapes(ctx: StepContext, database_name: str) -> dict[str, TableShape]:
    engine = create_engine(resolve_url(ctx.product.manifest.database(database_name).url))
    try:
        return table_shapes(engine)
    finally:
        engine.dispose()


def _columns(shape: TableShape | None) -> dict[str, str]:
    return {name: column.type for name, column in shape.columns.items()} if shape else {}


@contextmanager
def track(ctx: StepContext, database_name: str, step: str, runner: Any, pending: Sequence[str]) -> Iterator[Tracking]:
    """Around a migration: catalog before, declared column lineage, OpenLineage START/FAIL."""
    emitter = LineageEmitter.from_env(ctx.log)
    tracking = Tracking(ctx, database_name, step, _shapes(ctx, database_name), emitter,
                        StepRun(ctx.product.name, ctx.release_id, f"{step}.{database_name}", ctx.run_id),
                        list(pending), runner)

    def record(derivation: Derivation) -> None:
        """The revision declaring it is the one after the last committed one (one at a time)."""
        ids = tracking.pending
        try:
            current = runner.current()
        except Exception:  # noqa: BLE001 - the database is busy: the declaration still counts
            current = None
        done = ids.index(current) + 1 if current in ids else 0
        revision = ids[min(done, len(ids) - 1)] if ids else ""
        tracking.declared.append(Derivation(derivation.table, derivation.column, derivation.sources,
                                            derivation.kind, revision))
        ctx.record("lineage:declared", database=database_name, table=derivation.table, column=derivation.column,
                   sources=list(derivation.sources), lineage_kind=derivation.kind, revision=revision)

    if emitter:
        emitter.emit("START", tracking.run)
    token = lineage_recorder.set(record)
    try:
        yield tracking
    except Exception as exc:
        if emitter:
            emitter.emit("FAIL", tracking.run, error=str(exc))
        raise
    finally:
        lineage_recorder.reset(token)


def table_changes(tracking: Tracking, results: list[Any], row_count,
                  asset_downstream: Mapping[str, Sequence[str]] | None = None) -> list[TableChange]:
    """Per-table changes of the applied revisions; declared tables always, discovered ones when
    touched; records them and sends OpenLineage COMPLETE."""
    ctx, database_name = tracking.ctx, tracking.database
    database = ctx.product.manifest.database(database_name)
    after = _shapes(ctx, database_name)
    revisions = [RevisionStatements(r.revision, r.statements) for r in results]
    changes = release_changes(revisions, tracking.before, after)
    derivations = derivations_from(e.payload for e in ctx.ledger.events(ctx.release_id)
                                   if e.kind == "lineage:declared" and e.payload.get("database") == database_name)
    found = impacts(changes, _readers(ctx, database_name), _downstream(ctx, database_name, asset_downstream),
                    derivations)
    ctx.record("schema:changes", database=database_name, step=tracking.step,
               from_revision=results[0].from_revision if results else None,
               to_revision=results[-1].to_revision if results else None,
               changes=[asdict(c) for c in changes])
    if found:
        ctx.record("schema:impact", database=database_name, step=tracking.step,
                   impacts=[{"text": i.describe(), "readers": list(i.readers), **asdict(i.change)} for i in found])
    statements = [s for r in results for s in r.statements]
    duration = sum(r.duration_s for r in results)
    history = _column_history(ctx, database_name)
    grouped = by_table(changes)
    renamed_away = {c.table for c in changes if c.kind == "table_renamed"}
    for change in changes:
        if change.kind == "table_renamed" and change.after:
            grouped.setdefault(change.after, []).append(change)  # the new name carries its rename
    declared = {t.name: t for t in database.tables}
    touched = list(declared) + sorted(t for t in grouped if t not in declared)
    out = []
    for name in touched:
        table = declared.get(name) or Table.model_validate({"name": name, "columns": _columns(after.get(name))})
        own = grouped.get(name, [])
        columns = _columns(after.get(name))
        out.append(TableChange(
            table, [s for s in statements if name in s], duration, row_count(table) if name in after else None,
            columns, own, _columns(tracking.before.get(name)) if name in tracking.before else None,
            name in declared, own[-1].revision if own else None, lifecycle(own) if own else "ALTER",
            _column_lineage(name, columns, own, derivations), [i for i in found if i.change.table == name],
            {c: history[(name, c)] for c in columns if (name, c) in history}))
    if tracking.emitter:
        namespace = dataset_namespace(resolve_url(database.url))
        # a renamed table is one dataset under its new name, the old one its previous identifier
        datasets = [_dataset(namespace, database_name, c) for c in out
                    if (c.changes or c.column_lineage) and not (c.table.name in renamed_away and c.table.name not in after)]
        tracking.emitter.emit("COMPLETE", tracking.run, outputs=datasets)
    return out


def _column_history(ctx: StepContext, database_name: str) -> dict[tuple[str, str], str]:
    """(table, column) -> which release and revision last changed it and how, from the ledger's
    `schema:changes` of the product's last HISTORY_RELEASES releases (this one included), so the
    table page's column list answers "which release changed this column" for every column."""
    notes: dict[tuple[str, str], str] = {}
    for release in reversed(ctx.ledger.releases(ctx.product.name, limit=HISTORY_RELEASES)):  # oldest first
        for event in ctx.ledger.events(release.id):
            if event.kind != "schema:changes" or event.payload.get("database") != database_name:
                continue
            for change in map(change_from, event.payload.get("changes", [])):
                where = f"release {release.id}, revision {change.revision}"
                if change.kind == "table_dropped":
                    notes = {k: v for k, v in notes.items() if k[0] != change.table}
                elif change.kind == "table_created":
                    for column in filter(None, (change.after or "").split(", ")):
                        notes[(change.table, column)] = f"created with the table ({where})"
                elif change.kind == "column_renamed" and change.after:
                    notes[(change.table, change.after)] = f"renamed from {change.before} ({where})"
                elif change.column and change.kind != "column_dropped":
                    notes[(change.table, change.column)] = f"{change.describe().split(': ', 1)[1]} ({where})"
    return notes


def _column_lineage(table: str, columns: dict[str, str], changes: list[SchemaChange],
                    derivations: list[Derivation]) -> dict[str, list[tuple[str, str]]]:
    """New column <- source columns: what the revisions declared, and each parsed RENAME COLUMN
    as old -> new (the statement says so, nothing to declare)."""
    found = {c.after: [(table, c.before)] for c in changes
             if c.kind == "column_renamed" and c.table == table and c.after in columns and c.before}
    return found | {d.column: d.source_columns() for d in derivations if d.table == table and d.column in columns}


def _dataset(namespace: str, database_name: str, change: TableChange) -> LineageDataset:
    def qualified(table: str) -> str:
        return f"{database_name}.{change.table.schema_}.{table}"

    renamed = next((c for c in change.changes if c.kind == "table_renamed" and c.after == change.table.name), None)
    return LineageDataset(
        namespace, qualified(change.table.name), change.columns, change.data_version, change.lifecycle,
        {column: [(namespace, qualified(t), c) for t, c in sources] for column, sources in change.column_lineage.items()},
        previous_name=qualified(renamed.table) if renamed else None)


def _readers(ctx: StepContext, database_name: str) -> dict[str, list[str]]:
    readers: dict[str, list[str]] = {}
    for service in ctx.product.manifest.services:
        for ref in service.reads:
            db, _, table = ref.partition(".")
            if db == database_name:
                readers.setdefault(table, []).append(service.name)
    return readers


def _downstream(ctx: StepContext, database_name: str,
                asset_downstream: Mapping[str, Sequence[str]] | None) -> dict[str, list[str]]:
    """Downstream asset keys as the catalog shows them (with the component's key prefix, if any):
    the manifest's graph, then what only the code location's asset graph has."""
    database = ctx.product.manifest.database(database_name)
    prefix = "".join(f"{part}/" for part in ctx.product.asset_key_prefix)  # as assets.keys.AssetKeys
    found = {t.name: [prefix + key for key in downstream(ctx.product.manifest, database_name, t.name)]
             for t in database.tables}
    for table, keys in (asset_downstream or {}).items():
        known = found.setdefault(table, [])
        known += [key for key in keys if key not in known]
    return found


def emit_gates(ctx: StepContext, database_name: str, results: Sequence[Any]) -> None:
    """The gates' verdicts as data-quality assertions on the tables they checked (OpenLineage)."""
    emitter = LineageEmitter.from_env(ctx.log)
    if emitter is None:
        return
    database = ctx.product.manifest.database(database_name)
    namespace = dataset_namespace(resolve_url(database.url))
    tables: dict[tuple[str, str], list[tuple[str, bool, str | None]]] = {}
    for r in results:
        tables.setdefault((r.schema, r.table), []).append((r.gate, bool(r.passed), None))
    run = StepRun(ctx.product.name, ctx.release_id, f"gates.{database_name}", ctx.run_id)
    emitter.emit("START", run)
    inputs = [LineageDataset(namespace, f"{database_name}.{schema}.{table}", {}, assertions=checks)
              for (schema, table), checks in tables.items()]
    emitter.emit("COMPLETE" if all(r.passed for r in results) else "FAIL", run, inputs=inputs,
                 error=None if all(r.passed for r in results) else "data gates failed: " + ", ".join(
                     f"{r.gate} on {r.table}" for r in results if not r.passed))


def planned_contract_impacts(ctx: StepContext, database_name: str, runner: Any,
                             asset_downstream: Mapping[str, Sequence[str]] | None = None,
                             ) -> tuple[list[Impact], list[str]]:
    """The breaking and destructive changes of the pending contract revisions (rendered offline and
    parsed), each with the services that read the table and the assets downstream of it; and the
    revisions that could not be rendered offline (their impact shows after they ran)."""
    pending = [r.revision for r in runner.pending("contract")]
    if not pending:
        return [], []
    rendered = render_revisions(runner.script_location, pending)
    changes = statement_changes([RevisionStatements(r.revision, [r.sql]) for r in rendered if r.sql])
    derivations = derivations_from(e.payload for e in ctx.ledger.events(ctx.release_id)
                                   if e.kind == "lineage:declared" and e.payload.get("database") == database_name)
    found = impacts(changes, _readers(ctx, database_name), _downstream(ctx, database_name, asset_downstream),
                    derivations)
    return found, [r.revision for r in rendered if not r.sql]


def contract_impacts(ctx: StepContext, database_name: str, runner: Any,
                     asset_downstream: Mapping[str, Sequence[str]] | None = None) -> list[Impact]:
    """Before the contract revisions run (the contract job, before the point of no return): their
    impact, logged and recorded in the ledger as `schema:impact` (step `contract-plan`)."""
    found, unrendered = planned_contract_impacts(ctx, database_name, runner, asset_downstream)
    for impact in found:
        ctx.log(f"{database_name} contract impact: {impact.describe()}")
    if unrendered:
        ctx.log(f"{database_name}: contract revision(s) {', '.join(unrendered)} not renderable offline; "
                "their impact shows after they ran")
    if found or unrendered:
        ctx.record("schema:impact", database=database_name, step="contract-plan", not_rendered=unrendered,
                   impacts=[{"text": i.describe(), "readers": list(i.readers), **asdict(i.change)} for i in found])
    return found
