"""Column lineage, impact of breaking changes, and the data team's summary of a release (pure).

- A **derivation** is what a revision declares when it fills a column (`backfill(...,
  lineage=...)`): the new column and the columns it comes from, and whether it is a plain
  derivation, a rename through a new column, or a type migration (new column, dual write, drop).
- An **impact** is a breaking or destructive change with who reads the table: the services that
  declare `reads:` and the Dagster assets downstream of the table.
- The **summary** is Markdown built from the ledger's events of one release (`schema:changes`,
  `lineage:declared`, `schema:impact`, `gate`), for the `releases/<product>` asset.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from release_pipelines.core.schema_diff import ADDITIVE, SchemaChange

DERIVED, RENAMED, RETYPED = "derived", "renamed", "retyped"
KINDS = (DERIVED, RENAMED, RETYPED)


@dataclass(frozen=True)
class Derivation:
    """`table.column` is computed from `sources` (each "column" of the same table or "table.column")."""

    table: str
    column: str
    sources: tuple[str, ...]
    kind: str = DERIVED
    revision: str = ""

    def source_columns(self) -> list[tuple[str, str]]:
        return [(s.split(".")[0], s.split(".")[1]) if "." in s else (self.table, s) for s in self.sources]

    def describe(self) -> str:
        arrow = {RENAMED: "renamed to", RETYPED: "migrated to"}.get(self.kind)
        if arrow and len(self.sources) == 1:
            return f"{self.table}.{self.sources[0]} {arrow} {self.column}"
        return f"{self.table}.{self.column} <- " + ", ".join(self.sources)


def derivations_from(payloads: Iterable[Mapping[str, Any]]) -> list[Derivation]:
    """Derivations from `lineage:declared` event payloads (later declarations of a column win)."""
    found: dict[tuple[str, str], Derivation] = {}
    for p in payloads:
        derivation = Derivation(p["table"], p["column"], tuple(p["sources"]), p.get("lineage_kind", DERIVED),
                                p.get("revision", ""))
        found[(derivation.table, derivation.column)] = derivation
    return list(found.values())


def replaced_by(derivations: Iterable[Derivation], table: str, column: str) -> Derivation | None:
    """The renamed / retyped column that takes over `table.column`, if one was declared."""
    return next((d for d in derivations if d.table == table and d.kind in (RENAMED, RETYPED)
                 and d.sources == (column,)), None)


@dataclass(frozen=True)
class Impact:
    change: SchemaChange
    readers: tuple[str, ...]
    downstream: tuple[str, ...]
    replacement: str | None = None

    def describe(self) -> str:
        text = f"{self.change.describe()} [{self.change.severity}, {self.change.revision}]"
        if self.replacement:
            text += f", replaced by {self.replacement}"
        readers = ", ".join(self.readers) or "no service declares it reads the table"
        downstream = ", ".join(self.downstream) or "none"
        return f"{text}: read by {readers}; downstream assets: {downstream}"


def impacts(changes: Iterable[SchemaChange], readers: Mapping[str, Sequence[str]],
            downstream: Mapping[str, Sequence[str]], derivations: Sequence[Derivation] = ()) -> list[Impact]:
    """Every non-additive change with its readers (by table name) and downstream asset keys."""
    found = []
    for change in changes:
        if change.severity == ADDITIVE:
            continue
        successor = replaced_by(derivations, change.table, change.column) if change.column else None
        found.append(Impact(change, tuple(readers.get(change.table, ())), tuple(downstream.get(change.table, ())),
                            f"{successor.table}.{successor.column}" if successor else None))
    return found


def downstream(manifest: Any, database: str, table: str) -> list[str]:
    """Asset keys downstream of a table, as `assets.tables` draws the graph: the services that
    read it ("services/orders"), the tables those write ("shop_db/public/invoices"), and on."""
    schemas = {(d.name, t.name): t.schema_ for d in manifest.databases for t in d.tables}
    readers: dict[tuple[str, str], list[str]] = {}
    for service in manifest.services:
        for ref in service.reads:
            if ref not in service.writes:  # a service that writes a table sits upstream of it
                readers.setdefault(tuple(ref.split(".", 1)), []).append(service.name)
    writes = {s.name: [tuple(w.split(".", 1)) for w in s.writes] for s in manifest.services}
    found: list[str] = []
    queue = [(database, table)]
    while queue:
        for service in readers.get(queue.pop(0), []):
            if f"services/{service}" in found:
                continue
            found.append(f"services/{service}")
            for db, name in writes.get(service, []):
                key = f"{db}/{schemas.get((db, name), 'public')}/{name}"
                if key not in found:
                    found.append(key)
                    queue.append((db, name))
    return found


def change_from(payload: Mapping[str, Any]) -> SchemaChange:
    return SchemaChange(**{k: payload.get(k) for k in ("table", "kind", "revision", "severity", "column",
                                                       "before", "after")},
                        source=payload.get("source", "statement"))


def _cell(value: Any) -> str:
    return ("-" if value in (None, "") else str(value)).replace("|", "\\|").replace("\n", " ")


def render_data_summary(events: Sequence[Any]) -> str:
    """Markdown for a data team: tables touched with their diffs, column lineage, checks, impact.

    `events` are one release's ledger events (objects with `.kind` and `.payload`), oldest first."""
    lines = ["## What this release did to the data", ""]
    diffs = [e.payload for e in events if e.kind == "schema:changes"]
    if not any(p.get("changes") for p in diffs):
        lines.append("No table changed shape.")
    for payload in diffs:
        changes = [change_from(c) for c in payload.get("changes", [])]
        if not changes:
            continue
        span = f"{payload.get('from_revision') or 'base'} -> {payload.get('to_revision') or 'base'}"
        lines += [f"### {payload.get('database')} ({payload.get('step', 'migrate')}: {span})", "",
                  "| table | change | severity | revision |", "|---|---|---|---|"]
        lines += [f"| {_cell(c.table)} | {_cell(c.describe())} | {c.severity} | {_cell(c.revision)} |"
                  for c in changes]
        lines.append("")
    derivations = derivations_from(e.payload for e in events if e.kind == "lineage:declared")
    if derivations:
        lines += ["### Column lineage", ""]
        lines += [f"- {d.describe()} ({d.kind}, {d.revision or 'revision unknown'})" for d in derivations]
        lines.append("")
    gates = [e.payload for e in events if e.kind == "gate"]
    if gates:
        lines += ["### Checks", "", "| table | check | result | summary |", "|---|---|---|---|"]
        lines += [f"| {_cell(g.get('database'))}.{_cell(g.get('table'))} | {_cell(g.get('gate'))} | "
                  f"{'passed' if g.get('passed') else '**FAILED**'} | {_cell(g.get('summary'))} |" for g in gates]
        lines.append("")
    # the contract's impact is recorded when planned and again when it ran: each once
    affected = list({i["text"]: i for e in events if e.kind == "schema:impact"
                     for i in e.payload.get("impacts", [])}.values())
    services = sorted({s for i in affected for s in i.get("readers", [])})
    lines += ["### Services affected", ""]
    if affected:
        lines += [f"- {i['text']}" for i in affected]
        lines += ["", f"Readers to tell: {', '.join(services) or 'none declared'}."]
    else:
        lines.append("No breaking or destructive change to a table that a service reads.")
    return "\n".join(lines) + "\n"


@dataclass(frozen=True)
class LineageDataset:
    """One table as an OpenLineage dataset: what the emitter turns into facets."""

    namespace: str
    name: str
    fields: Mapping[str, str]
    version: str | None = None
    lifecycle: str | None = None
    column_sources: Mapping[str, Sequence[tuple[str, str, str]]] | None = None  # col -> (ns, dataset, field)
    assertions: Sequence[tuple[str, bool, str | None]] = ()  # (check, passed, column)
    previous_name: str | None = None
