"""Manifest tables and services as Dagster asset specs, with lineage between them.

Tables are external assets (migrations change them, Dagster does not compute them): the asset
graph shows which services write a table (upstream of it) and which read it (downstream).
Keys and groups come from the product's `AssetKeys` (a prefix for the component's `translation`);
customise more by subclassing `TableAssetTranslator`, as with dagster-sling's translator; lineage
is drawn afterwards from whatever keys it returns.
Keys are always built from lists: `AssetSpec("a/b")` would not split on "/".
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass

from dagster import (
    AssetKey,
    AssetMaterialization,
    AssetObservation,
    AssetSpec,
    MetadataValue,
    TableColumn,
    TableColumnDep,
    TableColumnLineage,
    TableSchema,
)
from dagster._core.definitions.data_version import DATA_VERSION_TAG
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError

from release_pipelines.assets.keys import DEFAULT_KEYS, AssetKeys
from release_pipelines.core.errors import ReleaseError
from release_pipelines.core.lineage import Impact
from release_pipelines.core.manifest import Database, Manifest, Service, Table
from release_pipelines.core.schema_diff import SchemaChange, worst
from release_pipelines.resources.database_url import resolve_url

TableRef = tuple[str, str]  # (database, table) as written in a service's reads / writes


def dagster_name(name: str) -> str:
    """Manifest names may contain '-'; Dagster group, job and check names may not."""
    return re.sub(r"[^A-Za-z0-9_]", "_", name)


def storage_kind(database: Database) -> str | None:
    """'postgres' or 'sqlite' from the URL the environment gives now; None if it cannot say."""
    try:
        backend = make_url(resolve_url(database.url)).get_backend_name()
    except (ReleaseError, ArgumentError):
        return None
    return {"postgresql": "postgres"}.get(backend, backend)


def column_schema(columns: Mapping[str, str], notes: Mapping[str, str] | None = None) -> TableSchema:
    """`notes`: a column's description (the UI's column list shows it), e.g. the release that changed it."""
    return TableSchema(columns=[TableColumn(name=name, type=sql_type, description=(notes or {}).get(name))
                                for name, sql_type in columns.items()])


class TableAssetTranslator:
    """Maps manifest tables and services to `AssetSpec`s; override a method to customise."""

    def __init__(self, keys: AssetKeys = DEFAULT_KEYS) -> None:
        self.keys = keys

    def get_table_spec(self, database: Database, table: Table) -> AssetSpec:
        kind = storage_kind(database)
        return AssetSpec(
            key=self.keys.table(database.name, table.schema_, table.name),
            group_name=self.keys.group_or(dagster_name(database.name)),
            kinds={kind, "table"} if kind else {"table"},
            description=(
                f"Table {table.schema_}.{table.name} in database {database.name}, changed by "
                f"the migrations in {database.migrations}; its columns are the schema contract."
            ),
            metadata={
                "dagster/column_schema": column_schema(table.columns),
                "dagster/table_name": f"{database.name}.{table.schema_}.{table.name}",
            },
        )

    def get_service_spec(self, service: Service) -> AssetSpec:
        return AssetSpec(
            key=self.keys.service(service.name),
            group_name=self.keys.group_or("services"),
            kinds={"service"},
            description=(
                f"Service {service.name}: reads {_listing(service.reads)}, "
                f"writes {_listing(service.writes)}."
            ),
            metadata={"reads": list(service.reads), "writes": list(service.writes)},
        )


@dataclass(frozen=True)
class Lineage:
    """Edges of the asset graph in manifest names; `hidden_reads` were left out to avoid a cycle."""

    writers: dict[TableRef, list[str]]
    reads: dict[str, list[TableRef]]
    hidden_reads: dict[str, list[TableRef]]


def lineage(manifest: Manifest) -> Lineage:
    """Writes draw service -> table; reads draw table -> service unless that closes a cycle.

    Writes win: a service that reads and writes `orders` sits upstream of `orders` only, and a
    read that would close a longer loop (A writes t1, reads t2; B writes t2, reads t1) is hidden.
    """
    writers: dict[TableRef, list[str]] = {}
    edges: dict[object, set[object]] = {}
    for service in manifest.services:
        for ref in service.writes:
            table = _ref(ref)
            writers.setdefault(table, []).append(service.name)
            edges.setdefault(("service", service.name), set()).add(("table", table))
    reads: dict[str, list[TableRef]] = {}
    hidden: dict[str, list[TableRef]] = {}
    for service in manifest.services:
        for ref in service.reads:
            table = _ref(ref)
            if _reaches(edges, ("service", service.name), ("table", table)):
                hidden.setdefault(service.name, []).append(table)
            else:
                reads.setdefault(service.name, []).append(table)
                edges.setdefault(("table", table), set()).add(("service", service.name))
    return Lineage(writers, reads, hidden)


def table_asset_specs(
    manifest: Manifest, translator: TableAssetTranslator | None = None
) -> list[AssetSpec]:
    """One spec per declared table, depending on the services that write it."""
    translator = translator or TableAssetTranslator()
    graph = lineage(manifest)
    specs = []
    for database in manifest.databases:
        for table in database.tables:
            writers = graph.writers.get((database.name, table.name), [])
            spec = translator.get_table_spec(database, table)
            specs.append(
                spec.merge_attributes(
                    deps=[translator.get_service_spec(manifest.service(s)).key for s in writers]
                )
            )
    return specs


def service_asset_specs(
    manifest: Manifest, translator: TableAssetTranslator | None = None
) -> list[AssetSpec]:
    """One spec per service, depending on the tables it reads (see `lineage` for cycles)."""
    translator = translator or TableAssetTranslator()
    graph = lineage(manifest)
    specs = []
    for service in manifest.services:
        spec = translator.get_service_spec(service).merge_attributes(
            deps=[
                _table_key(manifest, translator, ref) for ref in graph.reads.get(service.name, [])
            ]
        )
        hidden = graph.hidden_reads.get(service.name)
        if hidden:
            spec = spec.merge_attributes(
                metadata={"reads_not_drawn": [f"{db}.{t}" for db, t in hidden]}
            )
        specs.append(spec)
    return specs


def table_key(
    database: Database, table: Table, translator: TableAssetTranslator | None = None
) -> AssetKey:
    return (translator or TableAssetTranslator()).get_table_spec(database, table).key


def table_materialization(
    database: str,
    table: Table,
    revision_from: str | None,
    revision_to: str | None,
    statements: Sequence[str],
    duration_s: float,
    row_count: int | None,
    columns: Mapping[str, str],
    asset_key: AssetKey | None = None,
    *,
    changes: Sequence[SchemaChange] = (),
    previous_columns: Mapping[str, str] | None = None,
    data_version: str | None = None,
    column_lineage: Mapping[str, Sequence[tuple[str, str]]] | None = None,
    impacts: Sequence[Impact] = (),
    lifecycle: str = "ALTER",
    declared: bool = True,
    release_id: str = "",
    column_notes: Mapping[str, str] | None = None,
) -> AssetMaterialization:
    """What a migration op yields for each table it changed: revisions, SQL, the schema diff with
    severities, previous and new column schema, column lineage, impact; the data version is the
    last revision that changed the table's shape (unchanged shape: no new data version)."""
    start, end = revision_from or "base", revision_to or "base"
    key = asset_key or AssetKey([database, table.schema_, table.name])
    # what a data team looks for first (the UI keeps this order): which release, what changed, who reads it
    metadata: dict[str, object] = {"release_id": release_id} if release_id else {}
    if changes:
        metadata["schema_diff"] = MetadataValue.md(_diff_table(changes))
        metadata["worst_severity"] = worst(changes) or ""
    if impacts:
        metadata["impact"] = MetadataValue.md("\n".join(f"- {i.describe()}" for i in impacts))
        metadata["affected_services"] = sorted({s for i in impacts for s in i.readers})
    if column_lineage:
        metadata["dagster/column_lineage"] = TableColumnLineage(deps_by_column={
            column: [TableColumnDep(asset_key=AssetKey([*key.path[:-1], source_table]), column_name=source)
                     for source_table, source in sources]
            for column, sources in column_lineage.items()})
    metadata |= {
        "dagster/column_schema": column_schema(columns, _with_sources(table.name, columns, column_notes, column_lineage)),
        "dagster/table_name": f"{database}.{table.schema_}.{table.name}",
        "revision_from": start,
        "revision_to": end,
        "statements": len(statements),
        "duration_s": MetadataValue.float(float(duration_s)),
        "lifecycle": lifecycle,
        "declared_in_manifest": declared,
    }
    if previous_columns is not None:
        metadata["previous_column_schema"] = column_schema(previous_columns)
    if statements:
        metadata["sql"] = MetadataValue.md("```sql\n" + ";\n".join(statements) + ";\n```")
    if row_count is not None:
        metadata["dagster/row_count"] = row_count
    if changes:
        metadata["schema_changes"] = MetadataValue.json([asdict(c) for c in changes])
    description = f"migrated {start} -> {end}"
    if lifecycle == "DROP":
        description = f"dropped by revision {data_version or end}"
    elif changes:
        description += ": " + "; ".join(c.describe() for c in changes[:3]) + (" ..." if len(changes) > 3 else "")
    if release_id:
        description = f"release {release_id}: {description}"
    return AssetMaterialization(asset_key=key, description=description, metadata=metadata,
                                tags={DATA_VERSION_TAG: data_version} if data_version else None)


def impact_observations(database: Database, impacts: Sequence[Impact], release_id: str,
                        keys: AssetKeys = DEFAULT_KEYS) -> list[AssetObservation]:
    """Before the contract runs: on each table it breaks, what breaks and who reads the table."""
    schemas = {t.name: t.schema_ for t in database.tables}
    by_table: dict[str, list[Impact]] = {}
    for impact in impacts:
        by_table.setdefault(impact.change.table, []).append(impact)
    return [AssetObservation(
        asset_key=keys.table(database.name, schemas.get(table, "public"), table),
        description=f"release {release_id} contract will: " + "; ".join(i.change.describe() for i in found),
        metadata={"release_id": release_id, "impact": MetadataValue.md("\n".join(f"- {i.describe()}" for i in found)),
                  "affected_services": sorted({s for i in found for s in i.readers}),
                  "downstream_assets": sorted({d for i in found for d in i.downstream})},
    ) for table, found in by_table.items()]


def _with_sources(table: str, columns: Mapping[str, str], notes: Mapping[str, str] | None,
                  column_lineage: Mapping[str, Sequence[tuple[str, str]]] | None) -> dict[str, str]:
    """Each column's note, followed by where its values came from when a revision declared it."""
    found = dict(notes or {})
    for column, sources in (column_lineage or {}).items():
        if column in columns:
            origin = "from " + ", ".join(c if t == table else f"{t}.{c}" for t, c in sources)
            found[column] = f"{found[column]}; {origin}" if column in found else origin
    return found


def _diff_table(changes: Sequence[SchemaChange]) -> str:
    lines = ["| change | severity | revision | from |", "|---|---|---|---|"]
    lines += [f"| {c.describe()} | {c.severity} | {c.revision} | {c.source} |" for c in changes]
    return "\n".join(lines)


def _ref(ref: str) -> TableRef:
    database, _, table = ref.partition(".")
    return database, table


def _table_key(manifest: Manifest, translator: TableAssetTranslator, ref: TableRef) -> AssetKey:
    database = manifest.database(ref[0])
    table = next(t for t in database.tables if t.name == ref[1])  # the loader checked it exists
    return table_key(database, table, translator)


def _reaches(edges: Mapping[object, set[object]], start: object, goal: object) -> bool:
    seen, stack = set(), [start]
    while stack:
        node = stack.pop()
        if node == goal:
            return True
        if node not in seen:
            seen.add(node)
            stack.extend(edges.get(node, ()))
    return False


def _listing(refs: Sequence[str]) -> str:
    return ", ".join(refs) if refs else "no tables"
