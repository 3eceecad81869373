"""The release id reaches PostgreSQL: the sessions running a release's migrations are named
`release:<id>` in pg_stat_activity, seen from another connection while a migration waits for a
lock held by another application - outside the lock queue, so that application's reads go on."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest
from release_pipelines.resources.ledger import Ledger
from release_pipelines.resources.manifest_files import load_product
from release_pipelines.resources.migrations import MigrationRunner
from sqlalchemy import create_engine, text

from release_pipelines.steps import migrate as migrate_steps
from release_pipelines.steps.context import StepContext

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "shop" / "release.yaml"
SESSIONS = (
    "SELECT pid, application_name, coalesce(wait_event_type, '') FROM pg_stat_activity "
    "WHERE datname = current_database() AND pid <> pg_backend_pid()"
)


@pytest.mark.postgres
def test_migration_sessions_carry_the_release_id_as_application_name(postgres_url, monkeypatch, tmp_path) -> None:
    monkeypatch.setenv("SHOP_DB_URL", postgres_url)
    product = load_product(EXAMPLE)  # shop_db: max_lock_wait_s 60 (the default), lock_timeout_ms 50
    MigrationRunner(product.directory / "migrations", postgres_url).upgrade("0001_tables")
    ledger = Ledger(f"sqlite:///{tmp_path / 'ledger.db'}")
    release = ledger.start_release("shop", {"orders": "1.1.0"}, {}, "tester")
    logged: list[str] = []
    ctx = StepContext(product=product, ledger=ledger, release_id=release.id, actor="tester", log=logged.append)

    engine = create_engine(postgres_url, isolation_level="AUTOCOMMIT")
    blocker = create_engine(postgres_url, connect_args={"application_name": "nightly-report"}).connect()
    blocker_pid = blocker.execute(text("SELECT pg_backend_pid()")).scalar_one()
    blocker.execute(text("SELECT count(*) FROM orders"))  # ACCESS SHARE held until rollback: the ALTER waits
    outcome: dict[str, object] = {}

    def run() -> None:
        try:
            outcome["results"] = migrate_steps.expand(ctx, "shop_db")
        except Exception as exc:  # noqa: BLE001 - reported by the assertion below
            outcome["error"] = exc

    worker = threading.Thread(target=run)
    worker.start()
    sessions: list[tuple[int, str, str]] = []
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and not any("waits outside the lock queue" in m for m in logged):
            assert worker.is_alive(), outcome
            time.sleep(0.02)
        assert any("waits outside the lock queue" in m for m in logged), logged
        with engine.connect() as conn:  # while the migration waits
            sessions = [tuple(r) for r in conn.execute(text(SESSIONS))]
            conn.execute(text("SET statement_timeout = '2s'"))
            conn.execute(text("SELECT count(*) FROM orders"))  # reads go on: no timeout
        assert worker.is_alive(), "the migration did not wait for the blocker"
    finally:
        blocker.rollback()
        blocker.close()
        worker.join(timeout=60)
        engine.dispose()
    migration = {(pid, app, wait) for pid, app, wait in sessions if pid != blocker_pid}
    assert migration, "no migration session was seen while it waited"
    assert {app for _, app, _ in migration} == {f"release:{release.id}"}
    assert not [s for s in migration if s[2] == "Lock"]  # nobody of the release joined the lock queue
    waiting = next(m for m in logged if "waits outside the lock queue" in m)
    assert f"pid {blocker_pid} [nightly-report] holds AccessShareLock on orders" in waiting
    assert "error" not in outcome, outcome.get("error")
    done = [e for e in ledger.events(release.id) if e.kind == "migrate:done"]
    assert done and done[0].payload["revisions"]
