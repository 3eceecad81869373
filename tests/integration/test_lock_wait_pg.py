"""DDL that never queues behind a long transaction, on a real PostgreSQL with real Alembic: the
runner waits outside the lock queue while a reader keeps reading, proceeds when the holder
ends, and `cancel_blockers_after_s` ends an idle-in-transaction blocker but not an active one."""

from __future__ import annotations

import shutil
import threading
import time
from pathlib import Path

import psycopg2
import pytest

from release_pipelines.resources.lock_wait import blocker_reporter, lock_needs
from release_pipelines.resources.migrations import MigrationRunner
from tests.pg import connect

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "shop" / "migrations"
REVISION = '''
from alembic import op
revision = "{rev}"
down_revision = {down!r}
branch_labels = None
depends_on = None
phase = "expand"


def upgrade() -> None:
{body}


def downgrade() -> None:
    pass
'''


def project(tmp_path: Path, *bodies: str) -> Path:
    """An Alembic project: 0001 creates tables a and b, then one revision per body."""
    (tmp_path / "versions").mkdir()
    shutil.copy(EXAMPLE / "env.py", tmp_path / "env.py")
    shutil.copy(EXAMPLE / "script.py.mako", tmp_path / "script.py.mako")
    create = (
        '    op.execute("CREATE TABLE a (id int PRIMARY KEY, v int)")\n'
        '    op.execute("CREATE TABLE b (id int PRIMARY KEY, v int)")\n'
        '    op.execute("INSERT INTO a SELECT g, g FROM generate_series(1, 100) g")'
    )
    down = None
    for i, body in enumerate((create, *bodies), start=1):
        rev = f"{i:04d}"
        (tmp_path / "versions" / f"{rev}.py").write_text(
            REVISION.format(rev=rev, down=down, body=body).lstrip()
        )
        down = rev
    return tmp_path




def pid_of(conn) -> int:
    return conn.get_backend_pid()


class Reader(threading.Thread):
    """The application: point reads of table a in a loop; remembers its slowest query."""

    def __init__(self, url: str):
        super().__init__(daemon=True)
        self.url, self.longest_s, self.reads = url, 0.0, 0
        self.stopping = threading.Event()

    def run(self) -> None:
        conn = connect(self.url, "test-reader", autocommit=True)
        with conn.cursor() as cur:
            while not self.stopping.is_set():
                started = time.monotonic()
                cur.execute("SELECT v FROM a WHERE id = %s", (self.reads % 100 + 1,))
                cur.fetchall()
                self.longest_s = max(self.longest_s, time.monotonic() - started)
                self.reads += 1
                time.sleep(0.005)
        conn.close()

    def stop(self) -> None:
        self.stopping.set()
        self.join()


class Upgrade(threading.Thread):
    def __init__(self, runner: MigrationRunner):
        super().__init__(daemon=True)
        self.runner, self.log, self.error, self.finished_at = runner, [], None, None

    def run(self) -> None:
        try:
            self.runner.upgrade("head", log=self.log.append)
        except Exception as exc:  # noqa: BLE001 - reported by the test
            self.error = exc
        self.finished_at = time.monotonic()


def runner(url: str, location: Path, **options) -> MigrationRunner:
    return MigrationRunner(location, url, application_name="test-migration", **options)


def columns(url: str, table: str) -> set[str]:
    conn = connect(url, "test-check", autocommit=True)
    with conn.cursor() as cur:
        cur.execute(
            "SELECT column_name FROM information_schema.columns WHERE table_name = %s", (table,)
        )
        names = {row[0] for row in cur.fetchall()}
    conn.close()
    return names


def test_strong_lock_statements_are_recognised() -> None:
    assert lock_needs("ALTER TABLE accounts ADD COLUMN total bigint")[0].mode == "AccessExclusiveLock"
    assert lock_needs("CREATE INDEX ix ON orders (a)")[0].mode == "ShareLock"
    assert lock_needs("CREATE INDEX CONCURRENTLY ix ON orders (a)") == []
    assert lock_needs("ALTER TABLE orders VALIDATE CONSTRAINT ck") == []
    fk = lock_needs("ALTER TABLE orders ADD CONSTRAINT fk FOREIGN KEY (p) REFERENCES products (id)")
    assert [(n.mode, n.relations) for n in fk] == [
        ("ShareRowExclusiveLock", ("orders",)),
        ("ShareRowExclusiveLock", ("products",)),
    ]


@pytest.mark.postgres
def test_ddl_waits_outside_the_lock_queue_and_readers_never_stall(
    postgres_url: str, tmp_path: Path
) -> None:
    location = project(tmp_path, '    op.execute("ALTER TABLE a ADD COLUMN total bigint")')
    migrate = runner(postgres_url, location)
    migrate.upgrade("0001")
    holder = connect(postgres_url, "long-report")
    holder_pid = pid_of(holder)
    reader = Reader(postgres_url)
    with holder.cursor() as cur:
        cur.execute("SELECT count(*) FROM a")  # ACCESS SHARE until the transaction ends
    reader.start()
    upgrade = Upgrade(migrate)
    upgrade.start()
    time.sleep(2.0)
    assert upgrade.is_alive() and "total" not in columns(postgres_url, "a")
    released_at = time.monotonic()
    holder.rollback()
    upgrade.join(30)
    time.sleep(0.2)
    reader.stop()
    holder.close()
    assert upgrade.error is None, upgrade.error
    assert "total" in columns(postgres_url, "a")
    assert upgrade.finished_at - released_at < 5
    waiting = [line for line in upgrade.log if "waits outside the lock queue" in line]
    assert waiting and f"pid {holder_pid} [long-report]" in waiting[0], upgrade.log
    assert "[long-report]" in waiting[0] and "idle in transaction" in waiting[0]
    assert reader.reads > 50
    assert reader.longest_s < 0.2, f"a read stalled {reader.longest_s * 1000:.0f} ms"


@pytest.mark.postgres
def test_a_revision_holding_strong_locks_rolls_back_to_wait(
    postgres_url: str, tmp_path: Path
) -> None:
    """Waiting with table a already locked would stall a's readers: the attempt rolls back."""
    location = project(
        tmp_path,
        '    op.execute("ALTER TABLE a ADD COLUMN total bigint")\n'
        '    op.execute("ALTER TABLE b ADD COLUMN total bigint")',
    )
    migrate = runner(postgres_url, location)
    migrate.upgrade("0001")
    holder = connect(postgres_url, "holds-b")
    with holder.cursor() as cur:
        cur.execute("SELECT count(*) FROM b")
    reader = Reader(postgres_url)
    reader.start()
    upgrade = Upgrade(migrate)
    upgrade.start()
    time.sleep(2.0)
    assert upgrade.is_alive()
    holder.rollback()
    holder.close()
    upgrade.join(30)
    reader.stop()
    assert upgrade.error is None, upgrade.error
    assert "total" in columns(postgres_url, "a") and "total" in columns(postgres_url, "b")
    assert any("rolled back to wait" in line for line in upgrade.log), upgrade.log
    assert reader.longest_s < 0.2, f"a read of table a stalled {reader.longest_s * 1000:.0f} ms"


@pytest.mark.postgres
def test_cancel_blockers_ends_an_idle_in_transaction_blocker(
    postgres_url: str, tmp_path: Path
) -> None:
    location = project(tmp_path, '    op.execute("ALTER TABLE a ADD COLUMN total bigint")')
    migrate = runner(postgres_url, location, cancel_blockers_after_s=0.5, max_lock_wait_s=20)
    migrate.upgrade("0001")
    idle = connect(postgres_url, "leaked-session")
    with idle.cursor() as cur:
        cur.execute("SELECT count(*) FROM a")
    idle_pid = pid_of(idle)
    ended: list[dict] = []
    token = blocker_reporter.set(ended.append)
    try:
        started = time.monotonic()
        migrate.upgrade("head")
        took = time.monotonic() - started
    finally:
        blocker_reporter.reset(token)
    assert took < 10
    assert "total" in columns(postgres_url, "a")
    assert [e["pid"] for e in ended] == [idle_pid]
    assert ended[0]["application_name"] == "leaked-session"
    assert ended[0]["state"].startswith("idle in transaction")
    with pytest.raises(psycopg2.Error), idle.cursor() as cur:  # its session is gone
        cur.execute("SELECT 1")
    idle.close()


@pytest.mark.postgres
def test_cancel_blockers_never_touches_an_active_blocker(
    postgres_url: str, tmp_path: Path
) -> None:
    location = project(tmp_path, '    op.execute("ALTER TABLE a ADD COLUMN total bigint")')
    migrate = runner(postgres_url, location, cancel_blockers_after_s=0.3, max_lock_wait_s=20)
    migrate.upgrade("0001")
    active = connect(postgres_url, "busy-report")
    outcome: list[object] = []

    def long_query() -> None:
        try:
            with active.cursor() as cur:
                cur.execute("SELECT count(*), pg_sleep(3) FROM (SELECT * FROM a LIMIT 1) s")
                outcome.append(cur.fetchone()[0])
            active.commit()
        except psycopg2.Error as exc:
            outcome.append(exc)

    query = threading.Thread(target=long_query, daemon=True)
    query.start()
    time.sleep(0.5)  # the query holds ACCESS SHARE on a and is active
    ended: list[dict] = []
    token = blocker_reporter.set(ended.append)
    try:
        log: list[str] = []
        migrate.upgrade("head", log=log.append)
    finally:
        blocker_reporter.reset(token)
    query.join(10)
    active.close()
    assert outcome == [1], outcome  # the active query finished normally
    assert ended == []
    assert any("busy-report" in line and "active" in line for line in log), log
    assert "total" in columns(postgres_url, "a")
