"""The migration runner against a real PostgreSQL: live traffic, blocking sessions, two runners,
round trips, irreversible revisions, failed concurrent index builds and resumable backfills."""

from __future__ import annotations

import shutil
import threading
import time
from pathlib import Path

import psycopg2
import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

from release_pipelines.core.manifest import Database
from release_pipelines.core.reversibility import check_rollback_plan
from release_pipelines.resources.backfill import PROGRESS_TABLE, backfill
from release_pipelines.resources.migration_safety import (
    MigrationError,
    MigrationLockBusy,
    PrecheckFailed,
)
from release_pipelines.resources.migrations import MigrationLockTimeout, MigrationRunner
from tests.pg import connect, scalar

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "shop" / "migrations"
EXPAND = [
    "0002_order_totals",
    "0003_orders_product_idx",
    "0004_order_currency",
    "0005_currency_not_null",
]


def runner(url: str, script_location: Path = EXAMPLE, **options) -> MigrationRunner:
    defaults = {
        "lock_timeout_ms": 1000,
        "retries": 5,
        "backoff_base_s": 0.05,
        "backoff_max_s": 0.5,
        "lock_wait_s": 10.0,
    }
    return MigrationRunner(script_location, url, **{**defaults, **options})






def schema(url: str) -> dict[str, list[tuple]]:
    """Columns, indexes and constraints of the public schema (minus the backfill bookkeeping)."""
    queries = {
        "columns": "SELECT table_name, column_name, data_type, is_nullable, column_default,"
        " character_maximum_length FROM information_schema.columns WHERE table_schema = 'public'"
        f" AND table_name <> '{PROGRESS_TABLE}' ORDER BY 1, 2",
        "indexes": f"SELECT tablename, indexname, indexdef FROM pg_indexes WHERE schemaname = 'public'"
        f" AND tablename <> '{PROGRESS_TABLE}' ORDER BY 1, 2",
        "constraints": "SELECT conrelid::regclass::text, conname, pg_get_constraintdef(oid), convalidated"
        f" FROM pg_constraint WHERE connamespace = 'public'::regnamespace AND conrelid::regclass::text <> '{PROGRESS_TABLE}'"
        " ORDER BY 1, 2",
    }
    engine = create_engine(url)
    try:
        with engine.connect() as conn:
            return {
                name: [tuple(row) for row in conn.execute(text(sql))]
                for name, sql in queries.items()
            }
    finally:
        engine.dispose()


def column_exists(url: str, table: str, column: str) -> bool:
    return bool(
        scalar(
            url,
            f"SELECT count(*) FROM information_schema.columns WHERE table_name = '{table}' AND column_name = '{column}'",
        )
    )


class Writer(threading.Thread):
    """The old release: inserts orders continuously in autocommit, recording every failure."""

    def __init__(self, url: str):
        super().__init__(daemon=True)
        self.url, self.ok, self.failures = url, 0, []
        self.stopping = threading.Event()

    def run(self) -> None:
        conn = connect(self.url, autocommit=True)
        with conn.cursor() as cur:
            while not self.stopping.is_set():
                try:
                    cur.execute(
                        "INSERT INTO orders (product_id, quantity, status) VALUES (%s, 2, 'new')",
                        (self.ok % 4 + 1,),
                    )
                    self.ok += 1
                except psycopg2.Error as exc:
                    self.failures.append(str(exc))
        conn.close()


@pytest.mark.postgres
def test_expand_under_write_load_loses_no_write(postgres_url: str) -> None:
    migrate = runner(postgres_url)
    migrate.upgrade("0001_tables")
    engine = create_engine(postgres_url)
    with engine.begin() as conn:
        conn.execute(
            text(
                "INSERT INTO orders (product_id, quantity, status) SELECT g % 4 + 1, 3, 'old' FROM generate_series(1, 2500) g"
            )
        )
    engine.dispose()
    writer = Writer(postgres_url)
    writer.start()
    while writer.ok < 20 and not writer.failures:
        time.sleep(0.01)
    try:
        at_start = writer.ok
        results = migrate.upgrade()
        at_end = writer.ok
        time.sleep(0.1)
    finally:
        writer.stopping.set()
        writer.join(5)
    assert writer.failures == []
    assert at_end > at_start >= 20  # the old release kept writing during the migration
    assert [r.revision for r in results] == EXPAND
    assert all(r.statements and r.duration_s > 0 for r in results)
    assert (
        scalar(
            postgres_url, "SELECT count(*) FROM orders WHERE status = 'old' AND total_cents IS NULL"
        )
        == 0
    )
    assert scalar(postgres_url, "SELECT count(*) FROM orders WHERE currency IS NULL") == 0
    assert scalar(postgres_url, "SELECT count(*) FROM orders") == 2500 + writer.ok
    assert scalar(
        postgres_url,
        "SELECT bool_and(indisvalid) FROM pg_index WHERE indexrelid = 'ix_orders_product_id'::regclass",
    )
    assert (
        scalar(
            postgres_url,
            "SELECT is_nullable FROM information_schema.columns WHERE table_name = 'orders' AND column_name = 'currency'",
        )
        == "NO"
    )


@pytest.mark.postgres
def test_a_long_lock_holder_makes_the_revision_fail_fast_and_whole(postgres_url: str) -> None:
    # max_lock_wait_s=0: no waiting outside the lock queue (tests/integration/test_lock_wait_pg.py)
    migrate = runner(postgres_url, lock_timeout_ms=100, retries=2, max_lock_wait_s=0)
    migrate.upgrade("0001_tables")
    blocker = connect(postgres_url)
    try:
        with blocker.cursor() as cur:
            cur.execute("SELECT pg_backend_pid()")
            blocker_pid = cur.fetchone()[0]
            cur.execute("SELECT count(*) FROM orders")  # ACCESS SHARE until the transaction ends
        started = time.monotonic()
        with pytest.raises(MigrationLockTimeout) as failure:
            migrate.upgrade()
        assert time.monotonic() - started < 5
    finally:
        blocker.rollback()
        blocker.close()
    message = str(failure.value)
    assert f"pid {blocker_pid}" in message
    assert "0002_order_totals" in message and "3 attempts" in message and "ADD COLUMN" in message
    assert migrate.current() == "0001_tables"
    assert not column_exists(postgres_url, "orders", "total_cents")
    assert [r.revision for r in migrate.upgrade()] == EXPAND  # the blocker gone, it goes through


@pytest.mark.postgres
def test_precheck_names_old_transactions_and_leftover_invalid_indexes(postgres_url: str) -> None:
    migrate = runner(postgres_url, max_transaction_age_s=0.2)
    migrate.upgrade("0001_tables")
    admin = connect(postgres_url, autocommit=True)
    with admin.cursor() as cur:
        cur.execute("INSERT INTO orders (product_id, quantity) VALUES (1, 1), (1, 1)")
        with pytest.raises(psycopg2.Error):
            cur.execute("CREATE UNIQUE INDEX CONCURRENTLY ux_orders_product ON orders (product_id)")
    admin.close()
    blocker = connect(postgres_url)
    try:
        with blocker.cursor() as cur:
            cur.execute("SELECT pg_backend_pid()")
            blocker_pid = cur.fetchone()[0]
            cur.execute("SELECT count(*) FROM products")
        time.sleep(0.3)
        with pytest.raises(PrecheckFailed) as refused:
            migrate.upgrade()
    finally:
        blocker.rollback()
        blocker.close()
    message = str(refused.value)
    assert (
        f"pid {blocker_pid}" in message
        and "idle in transaction" in message
        and "FROM products" in message
    )
    assert "public.ux_orders_product" in message and "DROP INDEX CONCURRENTLY" in message
    assert migrate.current() == "0001_tables"


@pytest.mark.postgres
def test_two_runners_never_both_apply(postgres_url: str) -> None:
    first, impatient, patient = (
        runner(postgres_url),
        runner(postgres_url, lock_wait_s=0.3),
        runner(postgres_url),
    )
    holding, go_on = threading.Event(), threading.Event()
    outcomes: dict[str, object] = {}

    def slow_log(message: str) -> None:
        if "lock taken" in message:
            holding.set()
            go_on.wait(10)

    def run(name: str, migrate: MigrationRunner, log=None) -> None:
        try:
            outcomes[name] = migrate.upgrade(log=log)
        except MigrationError as exc:
            outcomes[name] = exc

    first_thread = threading.Thread(target=run, args=("first", first, slow_log))
    first_thread.start()
    assert holding.wait(10)
    holder_pid = scalar(
        postgres_url,
        f"SELECT pid FROM pg_stat_activity WHERE application_name = '{first.application_name}'",
    )
    with pytest.raises(MigrationLockBusy) as busy:
        impatient.upgrade()
    assert f"pid {holder_pid}" in str(busy.value) and make_url(postgres_url).database in str(
        busy.value
    )
    patient_thread = threading.Thread(target=run, args=("patient", patient))
    patient_thread.start()
    time.sleep(0.3)  # the patient runner is now polling for the lock
    go_on.set()
    first_thread.join(30)
    patient_thread.join(30)
    assert [r.revision for r in outcomes["first"]] == ["0001_tables", *EXPAND]
    assert outcomes["patient"] == []


@pytest.mark.postgres
def test_upgrade_then_downgrade_restores_the_schema_exactly(postgres_url: str) -> None:
    migrate = runner(postgres_url)
    migrate.upgrade("0001_tables")
    before = schema(postgres_url)
    migrate.upgrade()
    expanded = schema(postgres_url)
    assert expanded != before
    migrate.upgrade_contract()
    assert schema(postgres_url) != expanded
    assert [r.revision for r in migrate.downgrade("0005_currency_not_null")] == [
        "0006_drop_legacy_code"
    ]
    assert schema(postgres_url) == expanded
    assert [r.revision for r in migrate.downgrade("0001_tables")] == list(reversed(EXPAND))
    assert schema(postgres_url) == before
    assert scalar(postgres_url, "SELECT count(*) FROM products") == 4


@pytest.mark.postgres
def test_an_irreversible_revision_is_reported_and_never_downgraded(
    postgres_url: str, tmp_path: Path
) -> None:
    project = tmp_path / "migrations"
    shutil.copytree(EXAMPLE, project, ignore=shutil.ignore_patterns("__pycache__"))
    (project / "versions" / "0007_order_notes.py").write_text(
        '"""Add orders.note."""\nimport sqlalchemy as sa\nfrom alembic import op\n\n'
        'revision = "0007_order_notes"\ndown_revision = "0006_drop_legacy_code"\nphase = "expand"\n\n\n'
        'def upgrade():\n    op.add_column("orders", sa.Column("note", sa.Text))\n\n\n'
        'def downgrade():\n    """Notes are kept."""\n    pass\n'
    )
    migrate = runner(postgres_url, project)
    migrate.upgrade_contract()
    assert [r.revision for r in migrate.pending()] == []
    (info,) = [r for r in migrate.revisions() if r.revision == "0007_order_notes"]
    assert not info.reversible and "downgrade() is empty" in (info.irreversible_reason or "")
    database = Database(name="shop_db", url="${SHOP_DB_URL}", migrations="migrations")
    (problem,) = check_rollback_plan(database, [info])
    assert "0007_order_notes" in problem.message and "roll-forward" in problem.message
    with pytest.raises(MigrationError, match="0007_order_notes is irreversible"):
        migrate.downgrade("0005_currency_not_null")
    assert migrate.current() == "0007_order_notes"


@pytest.mark.postgres
def test_a_failed_concurrent_index_build_is_cleaned_up_and_retried(postgres_url: str) -> None:
    migrate = runner(
        postgres_url, lock_timeout_ms=200, retries=10, backoff_base_s=0.1, backoff_max_s=0.4
    )
    migrate.upgrade("0002_order_totals")
    writer_in_transaction = connect(postgres_url)
    with writer_in_transaction.cursor() as cur:
        cur.execute(
            "INSERT INTO orders (product_id, quantity) VALUES (1, 1)"
        )  # ROW EXCLUSIVE, open
    messages: list[str] = []

    def log(message: str) -> None:  # the writer ends once the first attempt has failed, not on a timer
        messages.append(message)
        if "retry" in message:
            writer_in_transaction.commit()

    try:
        (result,) = migrate.upgrade("0003_orders_product_idx", log=log)
    finally:
        writer_in_transaction.close()
    assert result.attempts > 1
    assert any("retry" in m for m in messages)
    assert any("dropped INVALID index(es) public.ix_orders_product_id" in m for m in messages)
    assert scalar(postgres_url, "SELECT count(*) FROM pg_index WHERE NOT indisvalid") == 0
    assert scalar(
        postgres_url,
        "SELECT indisvalid FROM pg_index WHERE indexrelid = 'ix_orders_product_id'::regclass",
    )


@pytest.mark.postgres
def test_backfill_resumes_after_the_last_committed_batch(postgres_url: str) -> None:
    engine = create_engine(postgres_url)
    with engine.begin() as conn:
        conn.execute(text("CREATE TABLE items (id bigint PRIMARY KEY, n int, doubled int)"))
        conn.execute(text("INSERT INTO items SELECT g, g, NULL FROM generate_series(1, 2500) g"))

    def stop_after_first_batch(done: int, total: int) -> None:
        raise KeyboardInterrupt  # the op was killed

    with pytest.raises(KeyboardInterrupt):
        backfill(
            engine,
            table="items",
            set_sql="doubled = n * 2",
            where_sql="doubled IS NULL",
            batch_size=1000,
            scan="keys",  # progress in keys; the block-range scan's resume: tests/integration/test_backfill_pg.py
            progress=stop_after_first_batch,
        )
    seen: list[tuple[int, int]] = []
    result = backfill(
        engine,
        table="items",
        set_sql="doubled = n * 2",
        where_sql="doubled IS NULL",
        batch_size=1000,
        scan="keys",
        progress=lambda done, total: seen.append((done, total)),
    )
    assert result.resumed_after == 1000
    assert seen == [(2000, 2500), (2500, 2500)]
    with engine.connect() as conn:
        assert (
            conn.execute(text("SELECT count(*) FROM items WHERE doubled = n * 2")).scalar() == 2500
        )
        assert conn.execute(text(f"SELECT count(*) FROM {PROGRESS_TABLE}")).scalar() == 0
    engine.dispose()


def test_example_migrations_round_trip_on_sqlite(tmp_path: Path) -> None:
    migrate = MigrationRunner(EXAMPLE, f"sqlite:///{tmp_path / 'shop.db'}")
    assert [r.revision for r in migrate.upgrade()] == ["0001_tables", *EXPAND]
    assert [r.revision for r in migrate.upgrade_contract()] == ["0006_drop_legacy_code"]
    assert len(migrate.downgrade("base")) == 6
    assert migrate.current() is None
