"""Fill a column of a live table without holding locks for long: keyset batches on the integer
primary key, one short transaction per batch, resumable, throttled.

Usable from an Alembic revision (``backfill(op.get_bind(), ...)`` inside
``op.get_context().autocommit_block()``, so each batch commits on its own) and from a Dagster
op (pass an Engine). Progress is kept in ``release_backfill_progress`` in the target database
so a backfill interrupted half-way resumes after the last committed key; the row is deleted
when the backfill completes, so a later re-run (after a downgrade) starts from the beginning.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from contextvars import ContextVar
from dataclasses import dataclass

from release_pipelines.resources.migration_safety import is_retryable
from sqlalchemy import text
from sqlalchemy.engine import Connection, Engine, Row

from release_pipelines.core.errors import ReleaseError

PROGRESS_TABLE = "release_backfill_progress"

progress_reporter: ContextVar[Callable[[str, int, int], None] | None] = ContextVar("progress_reporter", default=None)
"""Who hears about backfills that run deep inside an Alembic revision: the migrate step sets it
for the duration of a migration, so progress reaches the Dagster log without the revision
knowing about Dagster. Called with (job, rows_done, rows_total) after each batch."""
_SAVE = (
    f"INSERT INTO {PROGRESS_TABLE} (job, last_key, rows_done) VALUES (:job, :upto, :done)"
    " ON CONFLICT (job) DO UPDATE SET last_key = excluded.last_key,"
    " rows_done = excluded.rows_done, updated_at = CURRENT_TIMESTAMP"
)
_IDENTIFIER = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,62}(\.[A-Za-z_][A-Za-z0-9_]{0,62})?$")


class BackfillError(ReleaseError):
    """A backfill could not run or gave up; says which table and how to resume."""


@dataclass(frozen=True)
class BackfillResult:
    job: str
    table: str
    rows_done: int
    rows_total: int
    batches: int
    resumed_after: int | None
    duration_s: float


def _transaction(bind: Connection | Engine) -> AbstractContextManager[Connection]:
    """One short transaction: a fresh one per call on an Engine; on an AUTOCOMMIT Connection
    each statement commits by itself (the batch UPDATE is a single statement)."""
    return bind.begin() if isinstance(bind, Engine) else nullcontext(bind)


def _first(bind: Connection | Engine, sql: str, params: dict | None = None) -> Row | None:
    with _transaction(bind) as conn:
        return conn.execute(text(sql), params or {}).first()


def _check_bind(bind: Connection | Engine) -> None:
    """A Connection must commit each statement itself, or one batch would not be one transaction."""
    if (
        isinstance(bind, Connection)
        and bind.get_execution_options().get("isolation_level") != "AUTOCOMMIT"
    ):
        raise BackfillError(
            "backfill needs its own short transactions: inside an Alembic revision call it within "
            "`with op.get_context().autocommit_block():`; elsewhere pass an Engine"
        )


def _lock_waiters(bind: Connection | Engine) -> int:
    """Sessions of this database waiting for a lock: the signal to slow down (PostgreSQL only)."""
    if bind.dialect.name != "postgresql":
        return 0
    row = _first(
        bind,
        "SELECT count(*) FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid"
        " WHERE NOT l.granted AND a.datname = current_database()",
    )
    return int(row[0])


def backfill(
    bind: Connection | Engine,
    *,
    table: str,
    set_sql: str,
    where_sql: str = "1 = 1",
    key: str = "id",
    job: str | None = None,
    batch_size: int = 1000,
    sleep_s: float = 0.0,
    max_backoff_s: float = 5.0,
    max_lock_retries: int = 10,
    progress: Callable[[int, int], None] | None = None,
) -> BackfillResult:
    """UPDATE `table` SET `set_sql` WHERE `where_sql`, in batches of `batch_size` keys.

    `set_sql`/`where_sql` are SQL fragments written by the migration author (not user input).
    `where_sql` should exclude rows already done (e.g. ``col IS NULL``) so a re-run is harmless.
    Rows inserted after the start are not visited: the new release must write them itself.
    Between batches it sleeps `sleep_s`, and backs off (doubling up to `max_backoff_s`) while
    other sessions wait for locks or a batch hits a lock timeout.
    """
    for name in (table, key):
        if not _IDENTIFIER.match(name):
            raise BackfillError(f"backfill: {name!r} is not a plain SQL identifier")
    _check_bind(bind)
    job = job or f"{table}.{key}"
    started = time.monotonic()
    _ensure_progress_table(bind)
    saved = _first(
        bind, f"SELECT last_key, rows_done FROM {PROGRESS_TABLE} WHERE job = :job", {"job": job}
    )
    resumed_after = int(saved[0]) if saved else None
    last_key = resumed_after if saved else None
    rows_done = int(saved[1]) if saved else 0
    max_key = _first(bind, f"SELECT max({key}) FROM {table}")[0]
    after = "" if last_key is None else f"{key} > :last AND "
    remaining = _first(
        bind,
        f"SELECT count(*) FROM {table} WHERE {after}{key} <= :max AND ({where_sql})",
        {"last": last_key, "max": max_key},
    )[0]
    rows_total = rows_done + int(remaining)
    batches = 0
    delay = sleep_s
    while max_key is not None and (last_key is None or last_key < max_key):
        after = "" if last_key is None else f"{key} > :last AND "
        upto = _first(
            bind,
            f"SELECT max({key}) FROM (SELECT {key} FROM {table} WHERE {after}{key} <= :max"
            f" ORDER BY {key} LIMIT :n) AS batch",
            {"last": last_key, "max": max_key, "n": batch_size},
        )[0]
        if upto is None:
            break
        params = {"last": last_key, "upto": upto, "job": job}
        update = f"UPDATE {table} SET {set_sql} WHERE {after}{key} <= :upto AND ({where_sql})"
        for attempt in range(max_lock_retries + 1):
            try:
                with _transaction(bind) as conn:
                    changed = max(conn.execute(text(update), params).rowcount, 0)
                    conn.execute(text(_SAVE), {**params, "done": rows_done + changed})
                break
            except Exception as exc:
                if not is_retryable(exc) or attempt == max_lock_retries:
                    raise BackfillError(
                        f"backfill {job} of {table} stopped after key {last_key} "
                        f"({rows_done}/{rows_total} rows): {type(exc).__name__}: "
                        f"{str(exc).splitlines()[0]}. Run it again to resume from there."
                    ) from exc
                delay = min(max_backoff_s, max(delay * 2, 0.05))
                time.sleep(delay)
        rows_done += changed
        last_key = upto
        batches += 1
        if progress:
            progress(rows_done, rows_total)
        if (reporter := progress_reporter.get()) is not None:
            reporter(job, rows_done, rows_total)
        delay = min(max_backoff_s, max(delay * 2, 0.05)) if _lock_waiters(bind) else sleep_s
        if delay:
            time.sleep(delay)
    with _transaction(bind) as conn:
        conn.execute(text(f"DELETE FROM {PROGRESS_TABLE} WHERE job = :job"), {"job": job})
    return BackfillResult(
        job, table, rows_done, rows_total, batches, resumed_after, time.monotonic() - started
    )


def _ensure_progress_table(bind: Connection | Engine) -> None:
    with _transaction(bind) as conn:
        conn.execute(
            text(
                f"CREATE TABLE IF NOT EXISTS {PROGRESS_TABLE} (job VARCHAR(200) PRIMARY KEY,"
                " last_key BIGINT NOT NULL, rows_done BIGINT NOT NULL,"
                " updated_at TIMESTAMP WITH TIME ZONE NOT NULL DEFAULT CURRENT_TIMESTAMP)"
            )
        )
