"""The release id reaches PostgreSQL: the sessions running a release's migrations are named
`release:<id>` in pg_stat_activity, seen from another connection while a migration waits."""

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


@pytest.mark.postgres
def test_migration_sessions_carry_the_release_id_as_application_name(postgres_url, monkeypatch, tmp_path) -> None:
    monkeypatch.setenv("SHOP_DB_URL", postgres_url)
    product = load_product(EXAMPLE)
    MigrationRunner(product.directory / "migrations", postgres_url).upgrade("0001_tables")
    ledger = Ledger(f"sqlite:///{tmp_path / 'ledger.db'}")
    release = ledger.start_release("shop", {"orders": "1.1.0"}, {}, "tester")
    ctx = StepContext(product=product, ledger=ledger, release_id=release.id, actor="tester", log=lambda _m: None)

    engine = create_engine(postgres_url, isolation_level="AUTOCOMMIT")
    blocker = create_engine(postgres_url).connect()
    blocker.execute(text("SELECT count(*) FROM orders"))  # ACCESS SHARE held until rollback: the ALTER waits
    outcome: dict[str, object] = {}

    def run() -> None:
        try:
            outcome["results"] = migrate_steps.expand(ctx, "shop_db")
        except Exception as exc:  # noqa: BLE001 - reported by the assertion below
            outcome["error"] = exc

    worker = threading.Thread(target=run)
    worker.start()
    seen: list[tuple[str, str]] = []
    try:
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and not seen:
            with engine.connect() as conn:
                seen = [tuple(r) for r in conn.execute(text(
                    "SELECT application_name, coalesce(wait_event_type, '') FROM pg_stat_activity "
                    "WHERE datname = current_database() AND pid <> pg_backend_pid() AND wait_event_type = 'Lock'"
                ))]
            time.sleep(0.02)
    finally:
        blocker.rollback()
        blocker.close()
        worker.join(timeout=60)
        engine.dispose()
    assert seen, "no migration session was seen waiting for its lock"
    assert {name for name, _ in seen} == {f"release:{release.id}"}
    assert "error" not in outcome, outcome.get("error")
    done = [e for e in ledger.events(release.id) if e.kind == "migrate:done"]
    assert done and done[0].payload["revisions"]
