"""The one-round-trip backfill on a real PostgreSQL: killed with SIGKILL half-way it resumes from
the recorded block or key and finishes while the application inserts and updates rows; its
time-based batch size shrinks when another session holds row locks; block batches are TID Range
Scans, and rows the old release moves out of the block range are caught by the sweeps."""

from __future__ import annotations

import os
import random
import re
import signal
import subprocess
import sys
import threading
import time

import optuna
import psycopg2
import pytest
from sqlalchemy import create_engine, event, text

from release_pipelines.resources.backfill import PROGRESS_TABLE, BackfillError, backfill
from tests.pg import connect, scalar

ROWS = 60_000


def make_items(url: str, rows: int = ROWS) -> None:
    conn = connect(url, autocommit=True)
    with conn.cursor() as cur:
        cur.execute("CREATE TABLE items (id bigserial PRIMARY KEY, n int NOT NULL, doubled int)")
        cur.execute(f"INSERT INTO items (n) SELECT g FROM generate_series(1, {rows}) g")
        cur.execute("VACUUM ANALYZE items")
    conn.close()


def record_statements(engine) -> list[str]:
    """The SQL `engine` sends from now on, in order."""
    statements: list[str] = []
    event.listen(engine, "before_cursor_execute", lambda conn, cursor, statement, *_: statements.append(statement))
    return statements


class Application(threading.Thread):
    """The new release: inserts rows and updates existing ones, writing `doubled` itself (or,
    `writes_doubled=False`, an older one that only keeps a `doubled` already set in step)."""

    def __init__(self, url: str, writes_doubled: bool = True):
        super().__init__(daemon=True)
        self.url, self.inserts, self.updates, self.failures = url, 0, 0, []
        self.writes_doubled = writes_doubled  # False: the old release, which knows no `doubled`
        self.stopping = threading.Event()

    def run(self) -> None:
        rng = random.Random(7)
        conn = connect(self.url, autocommit=True)
        with conn.cursor() as cur:
            while not self.stopping.is_set():
                try:
                    if rng.random() < 0.5:
                        n = rng.randint(1, 1000)
                        cur.execute("INSERT INTO items (n, doubled) VALUES (%s, %s)", (n, 2 * n))
                        self.inserts += 1
                    elif self.writes_doubled:
                        cur.execute(
                            "UPDATE items SET n = n + 1, doubled = (n + 1) * 2 WHERE id = %s",
                            (rng.randint(1, ROWS),),
                        )
                    else:  # leaves rows not filled yet NULL, moving them (no HOT: pages are full)
                        cur.execute(
                            "UPDATE items SET n = n + 1, doubled = doubled + 2 WHERE id = %s",
                            (rng.randint(1, ROWS),),
                        )
                    self.updates += 1
                except psycopg2.Error as exc:
                    self.failures.append(str(exc))
                time.sleep(0.002)
        conn.close()

    def stop(self) -> None:
        self.stopping.set()
        self.join(10)


@pytest.mark.postgres
@pytest.mark.parametrize("scan", ["blocks", "keys"])
def test_backfill_resumes_after_kill_9_and_finishes_under_inserts_and_updates(
    postgres_url: str, scan: str
) -> None:
    make_items(postgres_url)
    blocks = scalar(postgres_url, "SELECT pg_relation_size('items') / 8192")
    app = Application(postgres_url)
    app.start()
    # Small, paced batches so that the kill lands half-way.
    child = subprocess.Popen(
        [
            sys.executable,
            "-c",
            (
                "import sys; from sqlalchemy import create_engine; "
                "from release_pipelines.resources.backfill import backfill; "
                "backfill(create_engine(sys.argv[1]), table='items', set_sql='doubled = n * 2', "
                "where_sql='doubled IS NULL', job='items_doubled', batch_size=500, "
                f"max_batch_size=500, sleep_s=0.02, scan={scan!r})"
            ),
            postgres_url,
        ],
    )
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            done = _rows_done(postgres_url)
            if done is not None and done >= 5_000:
                break
            assert child.poll() is None, "the backfill ended before it could be killed"
            time.sleep(0.05)
        os.kill(child.pid, signal.SIGKILL)
        child.wait(10)
        saved_last, saved_upper, unit = _saved(postgres_url)
        assert unit == (None if scan == "keys" else scan)
        if scan == "keys":
            assert 5_000 <= saved_last < ROWS <= saved_upper  # the range read at the start
        else:  # blocks done, of the table's blocks at the start
            assert 0 < saved_last < blocks <= saved_upper
        engine = create_engine(postgres_url)
        try:
            result = backfill(
                engine,
                table="items",
                set_sql="doubled = n * 2",
                where_sql="doubled IS NULL",
                job="items_doubled",
            )
        finally:
            engine.dispose()
    finally:
        if child.poll() is None:
            child.kill()
        app.stop()
    assert result.resumed_after is not None and result.resumed_after >= saved_last
    assert app.failures == [] and app.inserts > 0 and app.updates > 0
    # every row of the original range was filled; rows inserted later were written by the app
    assert (
        scalar(postgres_url, "SELECT count(*) FROM items WHERE doubled IS DISTINCT FROM n * 2") == 0
    )
    assert scalar(postgres_url, "SELECT count(*) FROM items") == ROWS + app.inserts
    assert scalar(postgres_url, f"SELECT count(*) FROM {PROGRESS_TABLE}") == 0


def _rows_done(url: str) -> int | None:
    exists = scalar(url, f"SELECT to_regclass('{PROGRESS_TABLE}') IS NOT NULL")
    return scalar(url, f"SELECT rows_done FROM {PROGRESS_TABLE}") if exists else None


def _saved(url: str) -> tuple[int, int, str | None]:
    conn = connect(url, autocommit=True)
    with conn.cursor() as cur:
        cur.execute(
            f"SELECT last_key, upper_key, unit FROM {PROGRESS_TABLE} WHERE job = 'items_doubled'"
        )
        last, upper, unit = cur.fetchone()
    conn.close()
    return last, upper, unit


@pytest.mark.postgres
def test_batch_size_shrinks_when_another_session_holds_row_locks(postgres_url: str) -> None:
    make_items(postgres_url)
    holder = connect(postgres_url)
    with holder.cursor() as cur:  # rows in the middle of the table, locked for a while
        cur.execute("SELECT id FROM items WHERE id BETWEEN 30000 AND 30010 FOR UPDATE")
    threading.Timer(3.0, holder.commit).start()
    finished: list[tuple[int, float]] = []
    engine = create_engine(postgres_url)
    try:
        result = backfill(
            engine,
            table="items",
            set_sql="doubled = n * 2",
            where_sql="doubled IS NULL",
            batch_size=500,
            target_batch_s=0.1,
            progress=lambda done, total: finished.append((done, time.monotonic())),
        )
    finally:
        engine.dispose()
        holder.close()
    sizes = result.batch_sizes
    assert len(sizes) == len(finished) and result.rows_done == ROWS
    blocked = next(i for i, (done, _) in enumerate(finished) if done >= 30_000)
    assert finished[blocked][1] - finished[blocked - 1][1] > 0.4  # it waited for the row locks
    assert max(sizes[:blocked]) > 500  # it had grown while batches were fast
    assert sizes[blocked + 1] <= sizes[blocked] // 4 + 1  # and shrank after the slow batch
    with engine.connect() as conn:
        assert (
            conn.execute(text("SELECT count(*) FROM items WHERE doubled = n * 2")).scalar() == ROWS
        )


@pytest.mark.postgres
def test_block_batches_are_tid_range_scans_and_sweeps_catch_rows_the_old_release_moved(
    postgres_url: str,
) -> None:
    make_items(postgres_url)
    app = Application(postgres_url, writes_doubled=False)
    engine = create_engine(postgres_url)
    batches: list[str] = []

    @event.listens_for(engine, "before_cursor_execute")
    def keep_batches(conn, cursor, statement, parameters, context, executemany):
        if statement.startswith("DO $release_backfill$"):  # the batch's UPDATE, as the DO block runs it
            batches.append(re.search(r"UPDATE items .*?;", cursor.mogrify(statement, parameters).decode())[0])

    app.start()
    try:  # small paced batches: the old release moves rows out of the range meanwhile
        result = backfill(
            engine,
            table="items",
            set_sql="doubled = n * 2",
            where_sql="doubled IS NULL",
            batch_size=2000,
            max_batch_size=2000,
            sleep_s=0.01,
        )
    finally:
        app.stop()
    assert app.failures == [] and app.updates > 100
    assert scalar(postgres_url, "SELECT count(*) FROM items WHERE doubled IS NULL") == 0
    assert (
        scalar(postgres_url, "SELECT count(*) FROM items WHERE doubled IS DISTINCT FROM n * 2") == 0
    )
    assert result.rows_done >= ROWS
    with engine.connect() as conn:
        plan = "\n".join(r[0] for r in conn.exec_driver_sql("EXPLAIN " + batches[0]))
    engine.dispose()
    assert "Tid Range Scan on items" in plan, plan


@pytest.mark.postgres
def test_block_ranges_no_row_escaped_end_with_a_count_and_no_sweep(postgres_url: str) -> None:
    """Nobody moved a row out of the range: the count after it finds none left, and no sweep
    (an UPDATE reading the whole table) runs. The sweep tests below see it run when rows did."""
    make_items(postgres_url)
    engine = create_engine(postgres_url)
    statements = record_statements(engine)
    try:
        result = backfill(engine, table="items", set_sql="doubled = n * 2", where_sql="doubled IS NULL")
    finally:
        engine.dispose()
    assert result.rows_done == ROWS and [name for name, _ in result.phases_s] == ["start", "blocks", "sweep"]
    assert any("SELECT count(*) FROM items WHERE (doubled IS NULL)" in s for s in statements)
    assert not [s for s in statements if s.startswith("UPDATE items")]
    assert scalar(postgres_url, "SELECT count(*) FROM items WHERE doubled IS DISTINCT FROM n * 2") == 0


@pytest.mark.postgres
def test_lock_waits_between_other_sessions_do_not_slow_the_backfill(postgres_url: str) -> None:
    make_items(postgres_url)
    holder, waiter = connect(postgres_url), connect(postgres_url, autocommit=True)
    with holder.cursor() as cur:
        cur.execute("CREATE TABLE other (id int)")
        holder.commit()
        cur.execute("LOCK TABLE other IN ACCESS EXCLUSIVE MODE")
    blocked = threading.Thread(target=lambda: waiter.cursor().execute("SELECT * FROM other"))
    blocked.start()  # waits on `other` for the whole backfill, from before it starts
    time.sleep(0.2)
    engine = create_engine(postgres_url)
    try:
        result = backfill(
            engine,
            table="items",
            set_sql="doubled = n * 2",
            where_sql="doubled IS NULL",
            batch_size=500,
            target_batch_s=0.2,
            probe_interval_s=0.0,
            max_lock_wait_s=0.05,
        )
    finally:
        engine.dispose()
        holder.commit()
        blocked.join(10)
        holder.close()
        waiter.close()
    assert result.rows_done == ROWS
    assert max(result.batch_sizes) >= 4000, result.batch_sizes  # grew: no back-off for `other`


@pytest.mark.postgres
def test_a_row_moved_while_the_final_sweep_waits_is_filled_by_that_one_sweep(
    postgres_url: str,
) -> None:
    """The final sweep is one statement: a row the old release moves while it runs - here from
    a block after the one where the sweep waits for a row lock to a block before it - is
    followed to its new version (EvalPlanQual) instead of being left NULL."""
    conn = connect(postgres_url, autocommit=True)
    # Block 0 holds only rows of an aborted transaction: free space for y below that VACUUM
    # finds whatever old snapshot another session of the server holds.
    with conn.cursor() as cur:
        cur.execute("CREATE TABLE items (id bigserial PRIMARY KEY, n int NOT NULL, doubled int)")
        cur.execute("BEGIN")
        cur.execute("INSERT INTO items (n) SELECT g FROM generate_series(1, 300) g")
        cur.execute("ROLLBACK")
        cur.execute(f"INSERT INTO items (n) SELECT g FROM generate_series(1, {ROWS}) g")
        cur.execute("ANALYZE items")  # no VACUUM: block 0 is not in the free space map yet
    conn.close()
    blocks = scalar(postgres_url, "SELECT pg_relation_size('items') / 8192")
    x, y = 300 + ROWS // 2, 300 + ROWS // 2 + 1000  # in full blocks the first batches do not reach
    holder, calls, moved = connect(postgres_url), [], {}

    def move(row: int) -> int:
        """A non-HOT update by a new session (no cached target block); the new version's block."""
        conn = connect(postgres_url, autocommit=True)
        with conn.cursor() as cur:
            cur.execute("SET lock_timeout = '5s'")
            cur.execute("UPDATE items SET n = n + 1 WHERE id = %s RETURNING ctid", (row,))
            block = int(cur.fetchone()[0].strip("()").split(",")[0])
        conn.close()
        return block

    def move_out_of_the_range(done: int, total: int) -> None:
        calls.append(done)  # x after the first batch, y after the third: y lands after x
        if len(calls) in (1, 3):
            row = x if len(calls) == 1 else y
            moved[row] = move(row)
            assert moved[row] >= blocks
        if len(calls) == 1:  # the sweep will wait for x
            holder.cursor().execute("SELECT 1 FROM items WHERE id = %s FOR UPDATE", (x,))

    engine = create_engine(postgres_url)
    updates: list[str] = []

    @event.listens_for(engine, "before_cursor_execute")
    def keep_updates(conn, cursor, statement, parameters, context, executemany):
        if statement.startswith("UPDATE items"):
            updates.append(statement)

    results: list = []
    backfilling = threading.Thread(
        target=lambda: results.append(
            backfill(
                engine,
                table="items",
                set_sql="doubled = n * 2",
                where_sql="doubled IS NULL",
                batch_size=500,
                progress=move_out_of_the_range,
            )
        )
    )
    backfilling.start()
    try:
        deadline = time.monotonic() + 30
        while not scalar(  # the sweep waits for x, locked by `holder`
            postgres_url,
            "SELECT count(*) FROM pg_stat_activity WHERE query LIKE 'UPDATE items SET%'"
            f" AND {holder.get_backend_pid()} = ANY (pg_blocking_pids(pid))",
        ):
            assert backfilling.is_alive() and time.monotonic() < deadline
            time.sleep(0.05)
        assert moved[x] < moved[y]  # y is ahead of the sweep
        vacuum = connect(postgres_url, autocommit=True)
        vacuum.cursor().execute("VACUUM (INDEX_CLEANUP ON) items")  # block 0, in the FSM
        vacuum.close()
        assert move(y) == 0  # y moves behind the sweep
    finally:
        holder.commit()
        backfilling.join(30)
        engine.dispose()
        holder.close()
    assert results and len(updates) == 1  # one sweep statement, no batched sweep after it
    assert scalar(postgres_url, "SELECT count(*) FROM items WHERE doubled IS DISTINCT FROM n * 2") == 0


@pytest.mark.postgres
def test_a_final_sweep_that_cannot_get_a_row_lock_falls_back_to_short_batches_and_retries(
    postgres_url: str,
) -> None:
    """Under the session's lock_timeout the final sweep gives up on a row another session holds
    (rolled back: it kept no lock on anything), sweeps in short retried batches, then once more
    as one statement."""
    make_items(postgres_url)
    x, holder = ROWS // 2, connect(postgres_url)

    def lock_a_row_out_of_the_range(done: int, total: int) -> None:
        if not holder.get_transaction_status() and not sweeps:  # after the first batch
            mover = connect(postgres_url, autocommit=True)
            mover.cursor().execute("UPDATE items SET n = n + 1 WHERE id = %s", (x,))
            mover.close()  # moved past the range (non-HOT: the block is full), then locked
            holder.cursor().execute("SELECT 1 FROM items WHERE id = %s FOR UPDATE", (x,))

    engine = create_engine(postgres_url, connect_args={"options": "-c lock_timeout=100"})
    sweeps: list[str] = []

    @event.listens_for(engine, "before_cursor_execute")
    def keep_sweeps(conn, cursor, statement, parameters, context, executemany):
        if statement.startswith("UPDATE items"):
            sweeps.append("statement")
        elif isinstance(parameters, dict) and parameters.get("unit") == "sweep":
            sweeps.append("batch")
            if sweeps.count("batch") == 3:  # the batched sweep waits for the row: let it go
                threading.Timer(0.3, holder.commit).start()

    try:
        result = backfill(
            engine,
            table="items",
            set_sql="doubled = n * 2",
            where_sql="doubled IS NULL",
            batch_size=500,
            progress=lock_a_row_out_of_the_range,
        )
    finally:
        holder.commit()
        engine.dispose()
        holder.close()
    assert sweeps[0] == "statement" and sweeps[-1] == "statement" and "batch" in sweeps
    assert result.rows_done >= ROWS
    assert scalar(postgres_url, "SELECT count(*) FROM items WHERE doubled IS DISTINCT FROM n * 2") == 0


@pytest.mark.postgres
def test_a_backfill_stopped_in_its_batched_sweep_resumes_there_and_ends_with_the_count(
    postgres_url: str,
) -> None:
    """Stopped after a batch of the batched sweep (the progress row then says unit "sweep"), the
    next run resumes that sweep, counts what is left and finishes; its phases still read start,
    blocks, sweep."""
    make_items(postgres_url)
    x, holder = ROWS // 2, connect(postgres_url)
    swept_batches: list[int] = []

    def stop_in_the_batched_sweep(done: int, total: int) -> None:
        if not holder.get_transaction_status() and not swept_batches:  # after the first batch
            mover = connect(postgres_url, autocommit=True)
            mover.cursor().execute("UPDATE items SET n = n + 1 WHERE id = %s", (x,))
            mover.close()  # moved past the range, then locked: the one-statement sweep gives up
            holder.cursor().execute("SELECT 1 FROM items WHERE id = %s FOR UPDATE", (x,))
        if swept_batches:
            raise KeyboardInterrupt  # an operator's Ctrl-C after the first batch of the batched sweep

    engine = create_engine(postgres_url, connect_args={"options": "-c lock_timeout=100"})

    @event.listens_for(engine, "before_cursor_execute")
    def count_swept_batches(conn, cursor, statement, parameters, context, executemany):
        if isinstance(parameters, dict) and parameters.get("unit") == "sweep":
            swept_batches.append(parameters["upto"])

    fill = {"table": "items", "set_sql": "doubled = n * 2", "where_sql": "doubled IS NULL", "batch_size": 500}
    try:
        with pytest.raises(KeyboardInterrupt):
            backfill(engine, progress=stop_in_the_batched_sweep, **fill)
        assert scalar(postgres_url, f"SELECT unit FROM {PROGRESS_TABLE}") == "sweep"
        holder.commit()
        result = backfill(engine, **fill)
    finally:
        holder.commit()
        engine.dispose()
        holder.close()
    assert result.resumed_after is not None and [name for name, _ in result.phases_s] == ["start", "blocks", "sweep"]
    assert scalar(postgres_url, f"SELECT count(*) FROM {PROGRESS_TABLE}") == 0
    assert scalar(postgres_url, "SELECT count(*) FROM items WHERE doubled IS DISTINCT FROM n * 2") == 0


@pytest.mark.postgres
@pytest.mark.parametrize("scan", ["blocks", "keys"])
def test_batches_count_right_beside_a_column_named_like_their_variable(postgres_url: str, scan: str) -> None:
    """A batch is a PL/pgSQL DO block with its own variables and parameters: columns named like
    them (`_changed`, `job`) must still mean the column in `set_sql` / `where_sql`."""
    conn = connect(postgres_url, autocommit=True)
    with conn.cursor() as cur:
        cur.execute("CREATE TABLE odd (id bigserial PRIMARY KEY, _changed int NOT NULL, job int, total int)")
        cur.execute("INSERT INTO odd (_changed, job) SELECT g, g % 3 FROM generate_series(1, 5000) g")
        cur.execute("VACUUM ANALYZE odd")
    conn.close()
    engine = create_engine(postgres_url)
    try:
        result = backfill(engine, table="odd", set_sql="total = _changed + job", where_sql="total IS NULL",
                          batch_size=700, max_batch_size=700, scan=scan)
        with pytest.raises(BackfillError, match=re.escape("$release_backfill$")):
            backfill(engine, table="odd", set_sql="total = 0", where_sql="total IS NULL", scan=scan,
                     job="odd$release_backfill$")
    finally:
        engine.dispose()
    assert result.rows_done == 5000 and len(result.batch_sizes) > 5
    assert scalar(postgres_url, "SELECT count(*) FROM odd WHERE total IS DISTINCT FROM _changed + job") == 0


@pytest.mark.postgres
def test_both_scans_fill_a_column_of_optunas_published_schema(postgres_url: str) -> None:
    """Material we did not write: the RDB schema optuna (from PyPI) creates and fills through its
    own storage. A new column of `trial_params` is filled by block ranges (ending with the count,
    no sweep), another by key ranges on its `param_id`; every row right."""
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    storage = optuna.storages.RDBStorage(postgres_url)
    study = optuna.create_study(storage=storage, study_name="backfill")
    study.optimize(lambda t: t.suggest_float("x", -10, 10) ** 2 + t.suggest_int("n", 0, 9), n_trials=150)
    storage.engine.dispose()
    conn = connect(postgres_url, autocommit=True)
    with conn.cursor() as cur:
        cur.execute("ALTER TABLE trial_params ADD COLUMN doubled float8, ADD COLUMN kind text")
    conn.close()
    engine = create_engine(postgres_url)
    statements = record_statements(engine)
    try:
        blocks = backfill(engine, table="trial_params", set_sql="doubled = param_value * 2",
                          where_sql="doubled IS NULL", key="param_id", max_batch_size=100)
        keys = backfill(engine, table="trial_params", set_sql="kind = param_name || ':' || trial_id",
                        where_sql="kind IS NULL", key="param_id", scan="keys", max_batch_size=100)
    finally:
        engine.dispose()
    assert blocks.rows_done == keys.rows_done == 300 and keys.batch_sizes == (100, 100, 100)  # max_batch_size holds from the first
    assert [name for name, _ in blocks.phases_s] == ["start", "blocks", "sweep"]
    assert not [s for s in statements if s.startswith("UPDATE trial_params")]  # no sweep was needed
    assert scalar(postgres_url, "SELECT count(*) FROM trial_params WHERE doubled IS DISTINCT FROM"
                  " param_value * 2 OR kind IS DISTINCT FROM param_name || ':' || trial_id") == 0
