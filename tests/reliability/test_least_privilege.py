"""Least privilege on real PostgreSQL: a release (expand migrations, canary, rollback with
downgrades) run by a non-superuser owner role, with the layout docs/production.md describes - the
owner role owns the schema and runs migrations, the app role only reads and writes rows. The
migration runner warns when it connects as a superuser, and not as the owner."""

from __future__ import annotations

from pathlib import Path
from uuid import uuid4

import pytest
from release_pipelines.resources.migrations import MigrationRunner
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ProgrammingError

from release_pipelines.core.states import ReleaseState
from tests.conftest import _create_database, _drop_database
from tests.release_harness import Shop, processes_under, release_config, rollback_config
from tests.reliability.faults import FIRST, add_later_revisions, revision, stage_product

pytestmark = pytest.mark.postgres
SUPERUSER_WARNING = "migrating as a superuser"


def run_sql(url: str, *statements: str) -> None:
    engine = create_engine(url, isolation_level="AUTOCOMMIT")
    try:
        with engine.connect() as conn:
            for statement in statements:
                conn.execute(text(statement))
    finally:
        engine.dispose()


@pytest.fixture
def roles(postgres_server_url: str):
    """owner (owns the database and its schema) and app (rows only), both plain LOGIN roles."""
    suffix = uuid4().hex[:8]
    owner, app = f"rp_owner_{suffix}", f"rp_app_{suffix}"
    run_sql(postgres_server_url, f"CREATE ROLE {owner} LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE",
            f"CREATE ROLE {app} LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE")
    admin_db_url = _create_database(postgres_server_url, "rp_least_privilege")
    database = make_url(admin_db_url).database
    run_sql(admin_db_url, f'ALTER DATABASE "{database}" OWNER TO {owner}', f"ALTER SCHEMA public OWNER TO {owner}",
            f'REVOKE ALL ON DATABASE "{database}" FROM PUBLIC', f'GRANT CONNECT ON DATABASE "{database}" TO {app}')
    owner_url = make_url(admin_db_url).set(username=owner).render_as_string(hide_password=False)
    app_url = make_url(admin_db_url).set(username=app).render_as_string(hide_password=False)
    run_sql(owner_url, f"GRANT USAGE ON SCHEMA public TO {app}",
            f"ALTER DEFAULT PRIVILEGES IN SCHEMA public GRANT SELECT, INSERT, UPDATE, DELETE ON TABLES TO {app}",
            f"ALTER DEFAULT PRIVILEGES IN SCHEMA public GRANT USAGE ON SEQUENCES TO {app}")
    yield admin_db_url, owner_url, app_url, owner
    _drop_database(postgres_server_url, admin_db_url)
    run_sql(postgres_server_url, f"DROP ROLE IF EXISTS {app}", f"DROP ROLE IF EXISTS {owner}")


def messages(shop: Shop, result) -> str:
    return "\n".join(e.user_message for e in shop.instance.all_logs(result.run_id))


def test_a_release_runs_as_the_non_superuser_owner_role(roles, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    admin_db_url, owner_url, app_url, owner = roles
    home = tmp_path / "home"
    home.mkdir()
    product_dir = tmp_path / "shop"
    manifest = stage_product(product_dir)
    monkeypatch.setenv("RELEASE_HOME", str(home))
    monkeypatch.setenv("SHOP_DB_URL", owner_url)
    monkeypatch.setenv("RELEASE_LEDGER_URL", f"sqlite:///{home / 'ledger.db'}")
    monkeypatch.setenv("RELEASE_ACTOR", "ci-launcher")
    monkeypatch.delenv("RELEASE_PROMETHEUS_URL", raising=False)
    shop = Shop(home, manifest)
    try:
        first = shop.run("release", release_config(FIRST))
        assert first.success, shop.failure_message(first)
        add_later_revisions(product_dir)
        second = shop.run("release", release_config({"orders": "1.1.0"}))
        assert second.success, shop.failure_message(second)
        assert revision(owner_url) != "0001"
        logged_by_runs = messages(shop, first) + messages(shop, second)
        assert "migration lock taken" in logged_by_runs and SUPERUSER_WARNING not in logged_by_runs
        # the app role works with rows of tables the owner's migrations created, and cannot change the schema
        run_sql(app_url, "INSERT INTO orders (product_id, quantity, status) VALUES (1, 2, 'new')")
        with pytest.raises(ProgrammingError, match="must be owner of table orders"):
            run_sql(app_url, "ALTER TABLE orders ADD COLUMN sneaky int")
        engine = create_engine(admin_db_url)
        with engine.connect() as conn:
            owners = set(conn.execute(text("SELECT tableowner FROM pg_tables WHERE schemaname = 'public'")).scalars())
        engine.dispose()
        assert owners == {owner}, owners

        release = shop.active()
        back = shop.run("rollback", rollback_config(release.id, "least-privilege drill"))
        assert back.success, shop.failure_message(back)
        assert shop.ledger.get(release.id).state is ReleaseState.ROLLED_BACK
        assert shop.stable("orders") == "1.0.0" and shop.ledger.verify().ok
    finally:
        shop.stop()
        shop.ledger.close()
        assert not processes_under(home)

    logged: list[str] = []
    MigrationRunner(product_dir / "migrations", admin_db_url).upgrade(log=logged.append)
    assert any(SUPERUSER_WARNING in line for line in logged), logged
