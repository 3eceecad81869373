"""Fill a column of a live table without holding locks for long: batches of physical blocks
(PostgreSQL 14+) or of the integer primary key, one short transaction per batch, sized by time,
resumable, throttled.

Usable from an Alembic revision (``backfill(op.get_bind(), ...)`` inside
``op.get_context().autocommit_block()``, so each batch commits on its own) and from a Dagster
op (pass an Engine). Progress is kept in ``release_backfill_progress`` in the target database
so a backfill interrupted half-way (even by kill -9) resumes after the last committed batch; the
row is deleted when the backfill completes, so a later re-run (after a downgrade) starts from
the beginning.

On PostgreSQL each batch is one round trip and one transaction, committed by the server: a DO
block (the UPDATE, its row count into the progress row) and the read of that row. Batches are
sized by time, as gh-ost and pt-online-schema-change size their chunks: a batch grows while it
takes less than `target_batch_s` and shrinks when it takes longer, when another session has
been waiting for a lock (most likely ours) or when a replica lags. The probe for those two
signals runs at most every `probe_interval_s`, not after every batch; only sessions waiting for
a lock the backfill holds count.

Block ranges (`scan="auto"` on PostgreSQL 14+, a plain table and a `where_sql` that excludes
rows done): each batch is ``UPDATE ... WHERE ctid >= '(a,0)' AND ctid < '(b,0)' AND
(where_sql)``, a TID Range Scan that reads pages in order as one plain UPDATE does, instead of
an index range scan per batch. The range of blocks is the table's size when the backfill
starts; rows a batch moves to new pages are not revisited (they are done). Rows the application
UPDATEs while the backfill runs may move from a block not yet visited to one that will not be:
so after the range a count of the rows `where_sql` still selects (a read, in parallel where
the server allows) tells whether any escaped; if some did, ONE sweep, a single
``UPDATE ... WHERE (where_sql)`` over the whole table in one transaction (reading every page,
writing only the rows left), catches them - including rows moved while it runs (see
`_final_sweep`). If it cannot get a row lock within the session's
`lock_timeout`, it is rolled back, the table is swept in short batches, and the single
statement is tried again (at most `max_sweeps` times).
Key ranges (`scan="keys"`, and always on SQLite, PostgreSQL < 14, partitioned tables and views,
or without a `where_sql`): batches of the next keys after the last one done.

Which rows: the range (keys or blocks) is read once, in a REPEATABLE READ snapshot when the
backfill starts (pgroll's approach), and kept in the progress row across resumes - so the
backfill finishes however fast rows keep arriving. Rows inserted after the start are not
guaranteed to be visited (the final sweep fills those already there when it starts, no later
ones): the revision must give them the value before the backfill starts (a column DEFAULT, or a
trigger), or the new release writes the column itself.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager, nullcontext
from contextvars import ContextVar
from dataclasses import dataclass

from sqlalchemy import inspect, text
from sqlalchemy.engine import Connection, Engine, Row

from release_pipelines.core.errors import ReleaseError
from release_pipelines.resources.column_lineage import declare_column_lineage
from release_pipelines.resources.migration_safety import is_retryable

PROGRESS_TABLE = "release_backfill_progress"

progress_reporter: ContextVar[Callable[[str, int, int], None] | None] = ContextVar(
    "progress_reporter", default=None
)
"""Who hears about backfills that run deep inside an Alembic revision: the migrate step sets it
for the duration of a migration, so progress reaches the Dagster log without the revision
knowing about Dagster. Called with (job, rows_done, rows_total) after each batch."""
_SAVE = (
    f"INSERT INTO {PROGRESS_TABLE} (job, last_key, upper_key, rows_done)"
    " VALUES (:job, :upto, :upper, :done)"
    " ON CONFLICT (job) DO UPDATE SET last_key = excluded.last_key,"
    " rows_done = excluded.rows_done, updated_at = CURRENT_TIMESTAMP"
)
# Sessions waiting for a lock the backfill holds (longest wait, seconds) - not any lock wait:
# others' waits on each other are no reason to slow down - and the worst replica's replay lag.
_PROBE = (
    "SELECT coalesce(max(extract(epoch FROM clock_timestamp() - query_start)), 0)::float8,"
    " (SELECT coalesce(max(extract(epoch FROM replay_lag)), 0)::float8 FROM pg_stat_replication)"
    " FROM pg_stat_activity WHERE wait_event_type = 'Lock' AND datname = current_database()"
    " AND pid <> pg_backend_pid() AND pg_backend_pid() = ANY (pg_blocking_pids(pid))"
)
_BLOCKS = "ctid >= CAST(:lo AS tid) AND ctid < CAST(:hi AS tid)"
_DO_TAG = "$release_backfill$"  # the dollar quote around a batch's DO body
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
    batch_sizes: tuple[int, ...] = ()
    """The size of each batch in order (how the time-based sizing moved)."""
    phases_s: tuple[tuple[str, float], ...] = ()
    """Where the time went: ("start", the snapshot of the range), ("blocks" or "keys", the
    batches), ("sweep", the count of rows left after block ranges and, if any, the final sweep)."""


@dataclass
class BatchSizer:
    """Time-based batch size: aim each batch at `target_s`; halve on a lock-wait or lag signal."""

    size: int
    target_s: float
    min_size: int
    max_size: int

    def __post_init__(self) -> None:
        self.size = max(self.min_size, min(self.max_size, self.size))  # the first batch too

    def after_batch(self, seconds: float) -> None:
        factor = min(2.0, max(0.25, self.target_s / max(seconds, 1e-4)))
        self.size = max(self.min_size, min(self.max_size, int(self.size * factor)))

    def back_off(self) -> None:
        self.size = max(self.min_size, self.size // 2)


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


@contextmanager
def _autocommit(bind: Connection | Engine) -> Iterator[Connection]:
    """One connection for the whole backfill, each statement its own transaction: no BEGIN and
    COMMIT round trips around a batch. On PostgreSQL its commits do not wait for the WAL flush
    (`synchronous_commit = off`): a crash can lose the last batches, but their progress rows
    with them (same transaction), so the resume redoes them; the setting is reset after."""
    with nullcontext(bind) if isinstance(bind, Connection) else bind.connect() as conn:
        if isinstance(bind, Engine):
            conn = conn.execution_options(isolation_level="AUTOCOMMIT")
        if conn.dialect.name != "postgresql":
            yield conn
            return
        conn.exec_driver_sql("SET synchronous_commit = off")
        try:
            yield conn
        finally:
            conn.exec_driver_sql("RESET synchronous_commit")


def backfill(
    bind: Connection | Engine,
    *,
    table: str,
    set_sql: str,
    where_sql: str = "1 = 1",
    key: str = "id",
    job: str | None = None,
    scan: str = "auto",
    batch_size: int = 1000,
    target_batch_s: float = 0.1,
    min_batch_size: int = 100,
    max_batch_size: int = 100_000,
    probe_interval_s: float = 0.5,
    max_lock_wait_s: float = 0.05,
    max_replica_lag_s: float = 1.5,
    sleep_s: float = 0.0,
    nice_ratio: float = 0.0,
    max_backoff_s: float = 5.0,
    max_lock_retries: int = 10,
    max_sweeps: int = 3,
    progress: Callable[[int, int], None] | None = None,
    lineage: Mapping[str, Sequence[str]] | None = None,
    lineage_kind: str = "derived",
) -> BackfillResult:
    """UPDATE `table` SET `set_sql` WHERE `where_sql`, in batches starting at `batch_size` rows.

    `set_sql`/`where_sql` are SQL fragments written by the migration author (not user input).
    `where_sql` should exclude rows already done (e.g. ``col IS NULL``) so a re-run is harmless
    (block ranges rely on it). `scan` is "auto" (block ranges where they apply, else key
    ranges), "blocks" or "keys". Batches grow or shrink to take about `target_batch_s`
    (between `min_batch_size` and `max_batch_size` rows); they halve when another session has
    waited longer than `max_lock_wait_s` for a lock the backfill holds or a replica lags more than
    `max_replica_lag_s` (gh-ost's default 1.5 s), and the backfill then pauses for a batch's
    time (or the lag, up to `max_backoff_s`). `sleep_s` is a fixed pause between batches, `nice_ratio` one in proportion to the
    batch's time (gh-ost's --nice-ratio: 1.0 caps the backfill at half the time). A
    batch that hits a lock timeout is retried smaller, after a pause doubling up to
    `max_backoff_s`. `max_sweeps` bounds the attempts of the final one-statement sweep.
    """
    for name in (table, key):
        if not _IDENTIFIER.match(name):
            raise BackfillError(f"backfill: {name!r} is not a plain SQL identifier")
    if scan not in ("auto", "blocks", "keys"):
        raise BackfillError(f"backfill: scan={scan!r} must be 'auto', 'blocks' or 'keys'")
    job = job or f"{table}.{key}"
    if any(_DO_TAG in value for value in (set_sql, where_sql, job)):  # it would end a batch's DO body
        raise BackfillError(f"backfill of {table}: {_DO_TAG} may not appear in set_sql, where_sql or job")
    _check_bind(bind)
    for column, sources in (lineage or {}).items():  # {"total": ["a", "b"]}: see resources.column_lineage
        declare_column_lineage(table, column, sources, lineage_kind)
    started = time.monotonic()
    is_postgres = bind.dialect.name == "postgresql"
    sizer = BatchSizer(batch_size, target_batch_s, min_batch_size, max_batch_size)
    sizes: list[int] = []
    with _autocommit(bind) as conn:
        _ensure_progress_table(conn)
        saved = conn.execute(
            text(
                f"SELECT last_key, upper_key, rows_done, unit FROM {PROGRESS_TABLE} WHERE job = :job"
            ),
            {"job": job},
        ).first()
        unit = _choose_unit(conn, table, where_sql, scan) if saved is None else saved[3] or "keys"
        if saved is None or saved[1] is None:  # (no upper_key: saved by an earlier version)
            lowest, upper, remaining = (_block_range if unit == "blocks" else _key_range)(
                conn, table, key, where_sql
            )
        if saved is None:
            last, rows_done, resumed_after = (lowest - 1 if unit == "keys" else 0), 0, None
        else:
            last, rows_done = int(saved[0]), int(saved[2])
            resumed_after = last
            upper = upper if saved[1] is None else int(saved[1])  # the range of the first start
            remaining = _remaining(conn, unit, table, key, where_sql, last, upper)
        rows_total = rows_done + int(remaining)
        rows_per_block = _rows_per_block(conn, table) if unit != "keys" else 1.0
        next_probe = time.monotonic() + probe_interval_s

        def report() -> None:
            if progress:
                progress(rows_done, rows_total)
            if (reporter := progress_reporter.get()) is not None:
                reporter(job, rows_done, rows_total)

        def fill(unit: str, last: int, upper: int | None) -> None:
            """Batches from after `last` up to `upper` (keys) or from block `last` to `upper`
            (blocks, sweep)."""
            nonlocal rows_done, next_probe
            delay = sleep_s
            while upper is not None and last < upper:
                params = {"job": job, "last": last, "upper": upper, "done": rows_done, "unit": unit}
                for attempt in range(max_lock_retries + 1):
                    batch_started, size = time.monotonic(), sizer.size
                    try:
                        if unit == "keys":
                            run = _pg_batch if is_postgres else _portable_batch
                            upto, changed = run(
                                conn, table, key, set_sql, where_sql, {**params, "n": size}
                            )
                        else:
                            upto = min(upper, last + max(1, round(size / rows_per_block)))
                            changed = _pg_block_batch(
                                conn, table, set_sql, where_sql, {**params, "upto": upto}
                            )
                        break
                    except Exception as exc:
                        if not is_retryable(exc) or attempt == max_lock_retries:
                            raise BackfillError(
                                f"backfill {job} of {table} stopped after {unit} {last} "
                                f"({rows_done}/{rows_total} rows): {type(exc).__name__}: "
                                f"{str(exc).splitlines()[0]}. Run it again to resume from there."
                            ) from exc
                        sizer.back_off()
                        delay = min(max_backoff_s, max(delay * 2, 0.05))
                        time.sleep(delay)
                if upto is None:
                    break
                sizes.append(size)
                batch_s = time.monotonic() - batch_started
                sizer.after_batch(batch_s)
                rows_done += changed
                last = upto
                report()
                delay = sleep_s + nice_ratio * batch_s
                if is_postgres and time.monotonic() >= next_probe:
                    lock_wait_s, lag_s = conn.execute(text(_PROBE)).one()
                    if lock_wait_s > max_lock_wait_s or lag_s > max_replica_lag_s:
                        sizer.back_off()
                        delay = min(max_backoff_s, max(delay, target_batch_s, lag_s))
                    next_probe = time.monotonic() + probe_interval_s
                if delay:
                    time.sleep(delay)

        def sweep() -> int:
            """`_final_sweep`, at most `max_sweeps` times; returns the rows it changed."""
            attempt = 1
            while True:
                try:
                    return _final_sweep(conn, table, set_sql, where_sql)
                except Exception as exc:
                    if not is_retryable(exc) or attempt >= max_sweeps:
                        raise BackfillError(
                            f"backfill {job} of {table}: the final sweep stopped "
                            f"({rows_done}/{rows_total} rows): {type(exc).__name__}: "
                            f"{str(exc).splitlines()[0]}. Run it again to resume from there."
                        ) from exc
                # A lock it could not get: fill what the sweep would in short transactions, so
                # the next attempt has (and locks) fewer rows.
                fill("sweep", 0, _relation_blocks(conn, table))
                attempt += 1

        phases = [("start", time.monotonic() - started)]
        fill(unit, last, upper)
        # unit "sweep": resumed in the batched sweep (its batches saved that unit)
        phases.append(("blocks" if unit == "sweep" else unit, time.monotonic() - started))
        if unit != "keys":
            if _rows_left(conn, table, where_sql):
                swept = sweep()  # (its batched fallback adds to rows_done: read it after)
                rows_done += swept
                report()
            phases.append(("sweep", time.monotonic() - started))
        conn.execute(text(f"DELETE FROM {PROGRESS_TABLE} WHERE job = :job"), {"job": job})
    return BackfillResult(
        job,
        table,
        rows_done,
        rows_total,
        len(sizes),
        resumed_after,
        time.monotonic() - started,
        tuple(sizes),
        tuple((name, end - begin) for (name, end), (_, begin) in zip(phases, [("", 0.0), *phases])),
    )


def _choose_unit(conn: Connection, table: str, where_sql: str, scan: str) -> str:
    """Block ranges where a TID Range Scan applies (PostgreSQL 14+, a plain table) and
    `where_sql` tells rows done from rows to do (the sweeps need it); key ranges otherwise."""
    if scan == "keys":
        return "keys"
    applies = conn.dialect.name == "postgresql" and bool(
        conn.execute(
            text(
                "SELECT current_setting('server_version_num')::int >= 140000 AND relkind = 'r'"
                " FROM pg_class WHERE oid = to_regclass(:t)"
            ),
            {"t": table},
        ).scalar()
    )
    if applies and where_sql.strip() != "1 = 1":
        return "blocks"
    if scan == "blocks":
        raise BackfillError(
            f"backfill of {table}: scan='blocks' needs PostgreSQL 14+, a plain (not partitioned) "
            "table and a where_sql that excludes rows done; use scan='keys' or 'auto'"
        )
    return "keys"


def _rows_left(conn: Connection, table: str, where_sql: str) -> int:
    """Rows `where_sql` still selects once the block range is done, counted in one snapshot by a
    read (parallel where the server allows; ~2.5x faster than the UPDATE sweep reading the same
    table, which cannot be parallel). Zero means no sweep is needed: a row the application moved
    out of the range stays unfilled in every later version - its newest committed version is in
    the snapshot, and one still being written has its previous version there - so it would be
    counted. Rows inserted after the start are not the backfill's (see the module's note)."""
    return int(
        conn.execute(
            text(f"SET LOCAL statement_timeout = 0; SELECT count(*) FROM {table} WHERE ({where_sql})")
        ).scalar_one()
    )


def _final_sweep(conn: Connection, table: str, set_sql: str, where_sql: str) -> int:
    """Rows the application moved out of the block range while it was being filled, in ONE
    statement over the whole table (one transaction, one snapshot): a row the application
    updates while the sweep runs is followed by READ COMMITTED's recheck (EvalPlanQual) to its
    newest version wherever that lies, and one moved before is visible to the snapshot - so
    none escapes, and one sweep is enough. It locks only the rows it changes (few: the moved
    ones), until it ends; the session's `lock_timeout` applies, its `statement_timeout` not (the
    statement reads the whole table)."""
    conn.exec_driver_sql("BEGIN ISOLATION LEVEL READ COMMITTED; SET LOCAL statement_timeout = 0")
    try:
        changed = conn.execute(text(f"UPDATE {table} SET {set_sql} WHERE {where_sql}")).rowcount
    except BaseException:
        conn.exec_driver_sql("ROLLBACK")
        raise
    conn.exec_driver_sql("COMMIT")
    return max(0, changed)


def _relation_blocks(conn: Connection, table: str) -> int:
    return int(
        conn.execute(
            text("SELECT pg_relation_size(to_regclass(:t)) / current_setting('block_size')::int"),
            {"t": table},
        ).scalar_one()
    )


def _rows_per_block(conn: Connection, table: str) -> float:
    """From the planner's statistics, to turn the sizer's rows into blocks (100 if none yet)."""
    density = conn.execute(
        text(
            "SELECT CASE WHEN relpages > 0 AND reltuples > 0 THEN reltuples / relpages END"
            " FROM pg_class WHERE oid = to_regclass(:t)"
        ),
        {"t": table},
    ).scalar()
    return float(density or 100.0)


def _block_range(conn: Connection, table: str, key: str, where_sql: str) -> tuple[int, int, int]:
    """(first block, number of blocks, rows to do) from one snapshot, like `_key_range`."""
    conn.exec_driver_sql("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
    try:
        todo = conn.execute(
            text(f"SELECT count(*) FILTER (WHERE {where_sql}) FROM {table}")
        ).scalar()
        blocks = _relation_blocks(conn, table)
    finally:
        conn.exec_driver_sql("COMMIT")
    return 0, blocks, int(todo or 0)


def _remaining(
    conn: Connection, unit: str, table: str, key: str, where_sql: str, last: int, upper: int | None
) -> int:
    """Rows still to do when a backfill resumes."""
    if unit == "keys":
        range_sql = f"{key} > :last AND {key} <= :upper"
    else:
        range_sql = _BLOCKS
    return int(
        conn.execute(
            text(f"SELECT count(*) FROM {table} WHERE {range_sql} AND ({where_sql})"),
            {"last": last, "upper": upper, "lo": _tid(last), "hi": _tid(upper or 0)},
        ).scalar_one()
    )


def _tid(block: int) -> str:
    return f"({block},0)"


def _pg_block_batch(
    conn: Connection, table: str, set_sql: str, where_sql: str, params: dict
) -> int:
    """One batch of blocks [last, upto) (a TID Range Scan); returns the rows changed."""
    saved = _batch_round_trip(
        conn,
        f"UPDATE {table} SET {set_sql} WHERE {_BLOCKS} AND ({where_sql});"
        " GET DIAGNOSTICS release_changed_ = ROW_COUNT;"
        f" INSERT INTO {PROGRESS_TABLE} (job, last_key, upper_key, rows_done, unit)"
        " VALUES (:job, :upto, :upper, :done + release_changed_, :unit)"
        " ON CONFLICT (job) DO UPDATE SET last_key = excluded.last_key,"
        " upper_key = excluded.upper_key, unit = excluded.unit,"
        " rows_done = excluded.rows_done, updated_at = CURRENT_TIMESTAMP;",
        {**params, "lo": _tid(params["last"]), "hi": _tid(params["upto"])},
    )
    return int(saved[1]) - int(params["done"])


def _batch_round_trip(conn: Connection, body: str, params: dict) -> Row | None:
    """Run a batch's PL/pgSQL `body` (its UPDATE, the row count into `release_changed_`, the
    progress row) as a DO block and read the progress row back (last_key, rows_done): one round
    trip, one transaction. Counting through `WITH changed AS (UPDATE ... RETURNING 1)` instead
    materialised every changed row, ~7 % of a backfill's time at 2 M rows. A table column named
    like a variable (`release_upto_`, `release_changed_`) is an error from PostgreSQL
    ("ambiguous"), never silently taken for the other."""
    return conn.execute(
        text(
            f"DO {_DO_TAG} DECLARE release_upto_ bigint; release_changed_ bigint; BEGIN {body} END {_DO_TAG};"
            f" SELECT last_key, rows_done FROM {PROGRESS_TABLE} WHERE job = :job"
        ),
        params,
    ).first()


def _key_range(
    conn: Connection, table: str, key: str, where_sql: str
) -> tuple[int, int | None, int]:
    """(lowest key, highest key, rows to do) from one snapshot: the range stays fixed however
    many rows arrive later, so the backfill is guaranteed to end."""
    if conn.dialect.name != "postgresql":
        lowest, upper, todo = conn.execute(
            text(
                f"SELECT min({key}), max({key}), sum(CASE WHEN {where_sql} THEN 1 ELSE 0 END) FROM {table}"
            )
        ).one()
    else:
        # `conn` is in autocommit: the snapshot transaction is opened and closed by hand.
        conn.exec_driver_sql("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
        try:
            lowest, upper, todo = conn.execute(
                text(
                    f"SELECT min({key}), max({key}), count(*) FILTER (WHERE {where_sql}) FROM {table}"
                )
            ).one()
        finally:
            conn.exec_driver_sql("COMMIT")
    if upper is None:
        return 0, None, 0
    return int(lowest), int(upper), int(todo or 0)


def _pg_batch(
    conn: Connection, table: str, key: str, set_sql: str, where_sql: str, params: dict
) -> tuple[int | None, int]:
    """One batch of the next `n` keys after `last`: (the last key done, rows changed); no key
    left: nothing is written and (None, 0) comes back."""
    row = _batch_round_trip(
        conn,
        f"SELECT max({key}) INTO release_upto_ FROM (SELECT {key} FROM {table}"
        f" WHERE {key} > :last AND {key} <= :upper ORDER BY {key} LIMIT :n) AS batch;"
        " IF release_upto_ IS NOT NULL THEN"
        f" UPDATE {table} SET {set_sql} WHERE {key} > :last AND {key} <= release_upto_ AND ({where_sql});"
        " GET DIAGNOSTICS release_changed_ = ROW_COUNT;"
        f" INSERT INTO {PROGRESS_TABLE} (job, last_key, upper_key, rows_done)"
        " VALUES (:job, release_upto_, :upper, :done + release_changed_)"
        " ON CONFLICT (job) DO UPDATE SET last_key = excluded.last_key,"
        " rows_done = excluded.rows_done, updated_at = CURRENT_TIMESTAMP;"
        " END IF;",
        params,
    )
    if row is None or row[0] is None or int(row[0]) <= int(params["last"]):  # no key after `last`
        return None, 0
    return int(row[0]), int(row[1]) - int(params["done"])


def _portable_batch(
    conn: Connection, table: str, key: str, set_sql: str, where_sql: str, params: dict
) -> tuple[int | None, int]:
    """The same batch as three statements, for databases without data-modifying CTEs (SQLite).
    Not atomic: a batch repeated after a crash is harmless as `where_sql` skips rows done."""
    upto = conn.execute(
        text(
            f"SELECT max({key}) FROM (SELECT {key} FROM {table} WHERE {key} > :last"
            f" AND {key} <= :upper ORDER BY {key} LIMIT :n) AS batch"
        ),
        params,
    ).scalar()
    if upto is None:
        return None, 0
    changed = max(
        0,
        conn.execute(
            text(
                f"UPDATE {table} SET {set_sql} WHERE {key} > :last AND {key} <= :upto AND ({where_sql})"
            ),
            {**params, "upto": upto},
        ).rowcount,
    )
    conn.execute(text(_SAVE), {**params, "upto": upto, "done": params["done"] + changed})
    return int(upto), changed


def _ensure_progress_table(conn: Connection) -> None:
    conn.execute(
        text(
            f"CREATE TABLE IF NOT EXISTS {PROGRESS_TABLE} (job VARCHAR(200) PRIMARY KEY,"
            " last_key BIGINT NOT NULL, upper_key BIGINT, rows_done BIGINT NOT NULL, unit VARCHAR(10),"
            " updated_at TIMESTAMP WITH TIME ZONE NOT NULL DEFAULT CURRENT_TIMESTAMP)"
        )
    )
    columns = {c["name"] for c in inspect(conn).get_columns(PROGRESS_TABLE)}
    for column, sql_type in (("upper_key", "BIGINT"), ("unit", "VARCHAR(10)")):
        if column not in columns:  # a table made by an earlier version of this module
            conn.execute(text(f"ALTER TABLE {PROGRESS_TABLE} ADD COLUMN {column} {sql_type}"))
