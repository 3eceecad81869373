"""What a release did to each table, from the statements its revisions ran (parsed with pglast).

Pure: the migrate step hands in each revision's executed SQL and the catalog before and after;
out come typed changes, each with the revision that made it and a severity for the people who
read the table:

- **additive**: old readers and writers keep working (new table, nullable column, new index);
- **breaking**: an old reader or writer can fail (type or nullability change, rename, new
  constraint);
- **destructive**: data goes away (a column or table dropped).

Statements are the source; the catalog only fills in what no parsed statement explains (SQLite
batch rebuilds, DDL inside a DO block), marked ``source="catalog"``.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace

from pglast import ast, parse_sql
from pglast.enums import AlterTableType, ConstrType, ObjectType
from pglast.parser import ParseError
from pglast.stream import RawStream

ADDITIVE, BREAKING, DESTRUCTIVE = "additive", "breaking", "destructive"
SEVERITY_ORDER = {ADDITIVE: 0, BREAKING: 1, DESTRUCTIVE: 2}
IGNORED_TABLES = {"alembic_version", "release_backfill_progress"}
BATCH_PREFIX = "_alembic_tmp_"  # Alembic's batch mode rebuilds a table through this copy
_DDL = re.compile(r"\b(create|alter|drop)\b", re.IGNORECASE)

SEVERITY = {
    "table_created": ADDITIVE,
    "table_dropped": DESTRUCTIVE,
    "table_renamed": BREAKING,
    "column_added": ADDITIVE,
    "column_dropped": DESTRUCTIVE,
    "column_renamed": BREAKING,
    "column_type_changed": BREAKING,
    "column_nullability_changed": BREAKING,
    "index_added": ADDITIVE,
    "index_dropped": ADDITIVE,
    "constraint_added": BREAKING,
    "constraint_dropped": BREAKING,
}


@dataclass(frozen=True)
class SchemaChange:
    table: str
    kind: str
    revision: str
    severity: str
    column: str | None = None
    before: str | None = None
    after: str | None = None
    source: str = "statement"

    def describe(self) -> str:
        """One line a data team reads: 'orders.amount type numeric -> bigint'."""
        what = self.kind.replace("_", " ")
        target = f"{self.table}.{self.column}" if self.column else self.table
        if self.before is not None and self.after is not None:
            return f"{target}: {what} {self.before} -> {self.after}"
        detail = self.after if self.after is not None else self.before
        return f"{target}: {what}" + (f" ({detail})" if detail else "")


@dataclass(frozen=True)
class ColumnShape:
    type: str
    nullable: bool = True


@dataclass(frozen=True)
class TableShape:
    """One table as the catalog shows it (`resources` reflects it, this module compares)."""

    columns: Mapping[str, ColumnShape]
    indexes: frozenset[str] = frozenset()
    constraints: frozenset[str] = frozenset()


@dataclass(frozen=True)
class RevisionStatements:
    revision: str
    statements: Sequence[str]


@dataclass
class _Parser:
    revision: str
    index_tables: dict[str, str]
    changes: list[SchemaChange] = field(default_factory=list)

    def add(self, table: str, kind: str, column: str | None = None, before: str | None = None,
            after: str | None = None) -> None:
        if table in IGNORED_TABLES:
            return
        self.changes.append(SchemaChange(table, kind, self.revision, SEVERITY[kind], column, before, after))

    def statement(self, node: ast.Node) -> None:
        if isinstance(node, ast.CreateStmt):
            table = node.relation.relname
            columns = [e.colname for e in node.tableElts or () if isinstance(e, ast.ColumnDef)]
            self.add(table, "table_created", after=", ".join(columns))
        elif isinstance(node, ast.IndexStmt):
            self.index_tables[node.idxname or ""] = node.relation.relname
            self.add(node.relation.relname, "index_added", after=node.idxname)
        elif isinstance(node, ast.DropStmt):
            self.drop(node)
        elif isinstance(node, ast.RenameStmt) and node.relation is not None:
            table = node.relation.relname
            if node.renameType == ObjectType.OBJECT_COLUMN:
                self.add(table, "column_renamed", node.subname, node.subname, node.newname)
            elif node.renameType == ObjectType.OBJECT_TABLE:
                self.add(table, "table_renamed", before=table, after=node.newname)
        elif isinstance(node, ast.AlterTableStmt) and node.objtype == ObjectType.OBJECT_TABLE:
            for command in node.cmds or ():
                self.alter(node.relation.relname, command)

    def drop(self, node: ast.DropStmt) -> None:
        names = [obj[-1].sval for obj in node.objects or () if isinstance(obj, tuple)]
        for name in names:
            if node.removeType == ObjectType.OBJECT_TABLE:
                self.add(name, "table_dropped")
            elif node.removeType == ObjectType.OBJECT_INDEX:
                self.add(self.index_tables.get(name, ""), "index_dropped", before=name)

    def alter(self, table: str, command: ast.AlterTableCmd) -> None:
        kind = command.subtype
        if kind == AlterTableType.AT_AddColumn:
            column = command.def_
            constraints = {c.contype for c in column.constraints or ()}
            not_null = ConstrType.CONSTR_NOTNULL in constraints or ConstrType.CONSTR_PRIMARY in constraints
            self.add(table, "column_added", column.colname,
                     after=_type(column.typeName) + (" NOT NULL" if not_null else ""))
            if not_null and ConstrType.CONSTR_DEFAULT not in constraints:
                self.changes[-1] = replace(self.changes[-1], severity=BREAKING)  # old writers fail
        elif kind == AlterTableType.AT_DropColumn:
            self.add(table, "column_dropped", command.name)
        elif kind == AlterTableType.AT_AlterColumnType:
            self.add(table, "column_type_changed", command.name, after=_type(command.def_.typeName))
        elif kind == AlterTableType.AT_SetNotNull:
            self.add(table, "column_nullability_changed", command.name, "NULL", "NOT NULL")
        elif kind == AlterTableType.AT_DropNotNull:
            self.add(table, "column_nullability_changed", command.name, "NOT NULL", "NULL")
        elif kind == AlterTableType.AT_AddConstraint:
            constraint = command.def_
            name = constraint.conname or constraint.contype.name.removeprefix("CONSTR_").lower()
            self.add(table, "constraint_added",
                     after=name + (" NOT VALID" if constraint.skip_validation else ""))
        elif kind == AlterTableType.AT_DropConstraint:
            self.add(table, "constraint_dropped", before=command.name)


def _type(type_name: ast.TypeName | None) -> str:
    return RawStream()(type_name) if type_name is not None else ""


def _parsed(statement: str) -> list[ast.Node]:
    """The nodes of one executed statement (or a rendered script) if it holds DDL; DML with bound
    parameters and SQL of other dialects do not parse and are skipped."""
    text = statement.split("\n-- parameters:")[0].strip()
    if not _DDL.search(text):
        return []
    try:
        return [raw.stmt for raw in parse_sql(text)]
    except ParseError:
        return []  # SQLite-only syntax: the catalog comparison covers it


def statement_changes(revisions: Iterable[RevisionStatements],
                      index_tables: Mapping[str, str] | None = None) -> list[SchemaChange]:
    """Changes in the order the revisions made them; `index_tables` maps existing index -> table."""
    known = dict(index_tables or {})
    changes: list[SchemaChange] = []
    for revision in revisions:
        parser = _Parser(revision.revision, known)
        for statement in revision.statements:
            for node in _parsed(statement):
                parser.statement(node)
        changes += _without_rebuilds(parser.changes)
    return changes


def _without_rebuilds(changes: list[SchemaChange]) -> list[SchemaChange]:
    """Alembic batch mode (SQLite) copies `t` to `_alembic_tmp_t`, drops `t` and renames the copy
    back: that is one table changed in place, not a table dropped (the catalog tells what changed)."""
    rebuilt = {c.after for c in changes if c.kind == "table_renamed" and c.table == BATCH_PREFIX + (c.after or "")}
    return [c for c in changes
            if not c.table.startswith(BATCH_PREFIX) and not (c.kind == "table_dropped" and c.table in rebuilt)]


def catalog_changes(before: Mapping[str, TableShape], after: Mapping[str, TableShape],
                    revision: str) -> list[SchemaChange]:
    """The difference between two catalog snapshots, attributed to `revision` (the step's last)."""
    changes: list[SchemaChange] = []

    def add(table: str, kind: str, column: str | None = None, old: str | None = None, new: str | None = None):
        changes.append(SchemaChange(table, kind, revision, SEVERITY[kind], column, old, new, source="catalog"))

    for table in sorted(set(before) | set(after)):
        if table in IGNORED_TABLES or table.startswith(BATCH_PREFIX):
            continue
        if table not in before:
            add(table, "table_created", new=", ".join(after[table].columns))
            continue
        if table not in after:
            add(table, "table_dropped")
            continue
        old, new = before[table], after[table]
        for column in new.columns.keys() - old.columns.keys():
            add(table, "column_added", column, new=new.columns[column].type)
        for column in old.columns.keys() - new.columns.keys():
            add(table, "column_dropped", column)
        for column in sorted(old.columns.keys() & new.columns.keys()):
            was, now = old.columns[column], new.columns[column]
            if was.type != now.type:
                add(table, "column_type_changed", column, was.type, now.type)
            if was.nullable != now.nullable:
                add(table, "column_nullability_changed", column, _nullability(was), _nullability(now))
        for index in sorted(new.indexes - old.indexes):
            add(table, "index_added", new=index)
        for index in sorted(old.indexes - new.indexes):
            add(table, "index_dropped", old=index)
    return changes


def _nullability(column: ColumnShape) -> str:
    return "NULL" if column.nullable else "NOT NULL"


def release_changes(revisions: Sequence[RevisionStatements], before: Mapping[str, TableShape],
                    after: Mapping[str, TableShape]) -> list[SchemaChange]:
    """Parsed changes, plus what the catalog shows changed and no parsed statement explains."""
    index_tables = {index: table for table, shape in before.items() for index in shape.indexes}
    parsed = statement_changes(revisions, index_tables)
    last = revisions[-1].revision if revisions else "unknown"
    explained = {_fact(c) for c in parsed}
    for change in parsed:
        if change.kind == "column_renamed":
            explained |= {(change.table, "column_added", change.after), (change.table, "column_dropped", change.before)}
        if change.kind == "table_renamed":
            explained |= {(change.after, "table_created", None), (change.table, "table_dropped", None)}
    extra = [c for c in catalog_changes(before, after, last) if _fact(c) not in explained]
    return parsed + extra


def _fact(change: SchemaChange) -> tuple[str, str, str | None]:
    if change.kind.startswith("table_"):
        return change.table, change.kind, None
    if change.kind.startswith("index_"):
        return change.table, change.kind, change.after or change.before
    return change.table, change.kind, change.column


def by_table(changes: Iterable[SchemaChange]) -> dict[str, list[SchemaChange]]:
    grouped: dict[str, list[SchemaChange]] = {}
    for change in changes:
        grouped.setdefault(change.table, []).append(change)
    return grouped


def worst(changes: Iterable[SchemaChange]) -> str | None:
    severities = [c.severity for c in changes]
    return max(severities, key=SEVERITY_ORDER.__getitem__) if severities else None


def lifecycle(changes: Sequence[SchemaChange]) -> str:
    """OpenLineage's lifecycle state change for one table: CREATE, DROP, RENAME or ALTER."""
    kinds = {c.kind for c in changes}
    if "table_dropped" in kinds:
        return "DROP"
    if "table_created" in kinds:
        return "CREATE"
    if "table_renamed" in kinds:
        return "RENAME"
    return "ALTER"
