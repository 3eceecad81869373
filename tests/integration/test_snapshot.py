"""Snapshots on SQLite and PostgreSQL: taken before expand, merged back by primary key."""

from __future__ import annotations

import pytest
from release_pipelines.resources.snapshot import (
    SnapshotError,
    drop_snapshot,
    restore_snapshot,
    take_snapshot,
)
from sqlalchemy import create_engine, inspect, text

from release_pipelines.core.manifest import Table

ITEMS = Table(name="items")


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def engine(request, tmp_path):
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'app.db'}"
    else:
        url = request.getfixturevalue("postgres_url")
    engine = create_engine(url)
    with engine.begin() as conn:
        conn.execute(text("create table items (id integer primary key, name varchar(20), price integer)"))
        conn.execute(text("insert into items values (1, 'a', 10), (2, 'b', 20), (3, 'c', 30)"))
    yield engine
    engine.dispose()


def rows(engine) -> list[tuple]:
    with engine.connect() as conn:
        return [tuple(r) for r in conn.execute(text("select id, name, price from items order by id"))]


def test_restore_puts_back_changed_and_deleted_rows_and_keeps_new_ones(engine) -> None:
    [snap] = take_snapshot(engine, [ITEMS, Table(name="not_created_yet")], "shop-1")
    assert snap.rows == 3 and snap.primary_key == ("id",)
    with engine.begin() as conn:  # what an irreversible data migration and the new version do
        conn.execute(text("update items set price = price * 2"))
        conn.execute(text("delete from items where id = 2"))
        conn.execute(text("alter table items add column note varchar(10)"))
        conn.execute(text("insert into items (id, name, price) values (4, 'new', 40)"))
    result = restore_snapshot(engine, snap)
    assert (result.restored, result.kept_new) == (3, 1)
    assert rows(engine) == [(1, "a", 10), (2, "b", 20), (3, "c", 30), (4, "new", 40)]
    drop_snapshot(engine, snap)
    assert snap.snapshot_table not in inspect(engine).get_table_names()


def test_a_table_without_primary_key_is_refused(engine) -> None:
    with engine.begin() as conn:
        conn.execute(text("create table logs (line varchar(10))"))
    with pytest.raises(SnapshotError, match="logs has no primary key"):
        take_snapshot(engine, [Table(name="logs")], "shop-1")
