"""Table snapshots for databases whose rollback strategy is `snapshot`.

Before a release's expand migrations run, each declared table is copied beside itself. Rolling
back restores the data, not the schema: expand revisions are backward compatible, so the old
version runs on the expanded schema, and what an irreversible revision destroys is data (a
backfill that rewrote values, a cleanup that deleted rows). The restore is a merge by primary
key: values the release overwrote are put back, rows it deleted come back, and rows written
since the snapshot are kept - a rollback loses nothing the old version wrote.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from dataclasses import dataclass

from sqlalchemy import MetaData, Table, and_, func, inspect, select, tuple_
from sqlalchemy.engine import Engine

from release_pipelines.core.errors import ReleaseError
from release_pipelines.core.manifest import Table as TableSpec

BATCH = 1000


class SnapshotError(ReleaseError):
    """A snapshot cannot be taken or restored; names the table and what to do."""


@dataclass(frozen=True)
class TableSnapshot:
    table: str
    schema: str | None
    snapshot_table: str
    primary_key: tuple[str, ...]
    rows: int


@dataclass(frozen=True)
class RestoreResult:
    table: str
    restored: int  # rows whose snapshot values were written back (changed or deleted since)
    kept_new: int  # rows written after the snapshot, left in place


def snapshot_name(table: str, release_id: str) -> str:
    """A short, deterministic name (identifiers are at most 63 bytes in PostgreSQL)."""
    tag = hashlib.sha1(release_id.encode()).hexdigest()[:10]
    return f"{table[:40]}__snap_{tag}"


def _schema(engine: Engine, schema: str) -> str | None:
    return None if engine.dialect.name == "sqlite" else schema


def _reflect(engine: Engine, name: str, schema: str | None) -> Table:
    return Table(name, MetaData(), autoload_with=engine, schema=schema)


def take_snapshot(engine: Engine, tables: Iterable[TableSpec], release_id: str) -> list[TableSnapshot]:
    """Copy every existing declared table; a table that does not exist yet needs no snapshot."""
    snapshots = []
    inspector = inspect(engine)
    for spec in tables:
        schema = _schema(engine, spec.schema_)
        if not inspector.has_table(spec.name, schema=schema):
            continue
        source = _reflect(engine, spec.name, schema)
        primary_key = tuple(c.name for c in source.primary_key.columns)
        if not primary_key:
            raise SnapshotError(f"table {spec.name} has no primary key: a snapshot cannot be merged back; "
                                "add one or choose rollback: roll-forward")
        name = snapshot_name(spec.name, release_id)
        copy = Table(name, MetaData(), *(c._copy() for c in source.columns), schema=schema)
        with engine.begin() as conn:
            copy.drop(conn, checkfirst=True)
            copy.create(conn)
            conn.execute(copy.insert().from_select([c.name for c in source.columns], select(source)))
        snapshots.append(TableSnapshot(spec.name, schema, name, primary_key, _count(engine, copy)))
    return snapshots


def _count(engine: Engine, table: Table) -> int:
    with engine.connect() as conn:
        return int(conn.execute(select(func.count()).select_from(table)).scalar_one())


def restore_snapshot(engine: Engine, snapshot: TableSnapshot) -> RestoreResult:
    """Merge the snapshot back by primary key, in batches of short transactions."""
    inspector = inspect(engine)
    if not inspector.has_table(snapshot.snapshot_table, schema=snapshot.schema):
        raise SnapshotError(f"snapshot {snapshot.snapshot_table} of {snapshot.table} is gone; restore by hand")
    target = _reflect(engine, snapshot.table, snapshot.schema)
    saved = _reflect(engine, snapshot.snapshot_table, snapshot.schema)
    columns = [c.name for c in saved.columns if c.name in target.c]
    key = list(snapshot.primary_key)
    restored = 0
    with engine.connect() as conn:
        rows = conn.execute(select(*(saved.c[c] for c in columns)).order_by(*(saved.c[k] for k in key))).mappings().all()
    for start in range(0, len(rows), BATCH):
        batch = rows[start : start + BATCH]
        keys = [tuple(r[k] for k in key) for r in batch]
        with engine.begin() as conn:
            current = {
                tuple(r[k] for k in key): dict(r)
                for r in conn.execute(
                    select(*(target.c[c] for c in columns)).where(tuple_(*(target.c[k] for k in key)).in_(keys))
                ).mappings()
            }
            for row in batch:
                row_key = tuple(row[k] for k in key)
                if row_key not in current:
                    conn.execute(target.insert().values(**dict(row)))
                    restored += 1
                elif current[row_key] != dict(row):
                    condition = and_(*(target.c[k] == row[k] for k in key))
                    conn.execute(target.update().where(condition).values(**{c: row[c] for c in columns if c not in key}))
                    restored += 1
    kept_new = _count(engine, target) - len(rows)
    return RestoreResult(snapshot.table, restored, max(0, kept_new))


def drop_snapshot(engine: Engine, snapshot: TableSnapshot) -> None:
    with engine.begin() as conn:
        Table(snapshot.snapshot_table, MetaData(), schema=snapshot.schema).drop(conn, checkfirst=True)
