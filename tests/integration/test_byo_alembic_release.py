"""A release through the Dagster job on a project made by `alembic init` (generic template; its
env.py and alembic.ini untouched), on a real PostgreSQL, with the real `<product>_release` and
`<product>_rollback` jobs in process on a Dagster instance.

The product's manifest points at the project (`migrations: {path, ini}`); the first release
installs the first revision, then the team adds revisions between releases as usual.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from sqlalchemy import create_engine, inspect, text

from release_pipelines.core.states import ReleaseState
from tests.pg import scalar
from tests.release_harness import processes_under, release_config, rollback_config, shop_environment
from tests.scratch_databases import left_behind, scratch_databases

ROOT = Path(__file__).resolve().parents[2]
ALEMBIC = str(Path(sys.executable).parent / "alembic")

MANIFEST = """\
product: bank
platform: local
services:
  - name: catalog
    depends_on: [bank_db]
    deploy:
      local:
        command: ["{python}", "{manifest_dir}/service.py", "--service", "{service}",
                  "--version", "{version}", "--port", "{port}", "--flags", "{flags_file}"]
    health: {path: /healthz, timeout_seconds: 2}
    canary:
      steps: [25, 50, 100]
      analysis: {interval_seconds: 5, deadline_seconds: 300}
databases:
  - name: bank_db
    url: ${BANK_DB_URL}
    migrations: {path: alembic, ini: alembic.ini}
    rollback: downgrade
    tables:
      - name: accounts
        columns: {id: bigint, balance: integer}
"""

# Each revision records which env.py ran it and the session it ran in: the proof that the
# project's own env.py applied it, on a connection carrying the release id.
AUDIT = '''
def audit(step):
    env_py = next((f.filename for f in inspect.stack() if f.filename.endswith("env.py")), "")
    op.execute(
        sa.text("INSERT INTO migration_audit (step, env_py, application_name, lock_timeout)"
                " VALUES (:step, :env_py, current_setting('application_name'),"
                " current_setting('lock_timeout'))").bindparams(step=step, env_py=env_py)
    )
'''

REVISIONS = {
    "a1_accounts": (None, "expand", """
        op.create_table("accounts", sa.Column("id", sa.BigInteger, primary_key=True),
                        sa.Column("balance", sa.Integer, nullable=False))
        op.create_table("migration_audit", sa.Column("step", sa.Text), sa.Column("env_py", sa.Text),
                        sa.Column("application_name", sa.Text), sa.Column("lock_timeout", sa.Text))
        op.execute("INSERT INTO accounts (balance) SELECT g FROM generate_series(1, 100) g")
        audit("upgrade a1_accounts")""", """
        op.drop_table("migration_audit")
        op.drop_table("accounts")"""),
    "a2_currency": ("a1_accounts", "expand", """
        op.add_column("accounts", sa.Column("currency", sa.Text))
        audit("upgrade a2_currency")""", """
        op.drop_column("accounts", "currency")
        audit("downgrade a2_currency")"""),
    "a3_drop_balance_default": ("a2_currency", "contract", """
        op.drop_column("accounts", "balance")""", """
        op.add_column("accounts", sa.Column("balance", sa.Integer))"""),
}

# Reads a table the application created outside the history: it renders no SQL offline
# (op.get_bind() is a live connection), and in the shadow database the table does not exist.
UNLINTABLE = ("a2_rates", "a1_accounts", "expand", """
        top = op.get_bind().execute(sa.text("SELECT max(rate) FROM legacy_rates")).scalar()
        op.add_column("accounts", sa.Column("rate", sa.Numeric, server_default=str(top)))""", """
        op.drop_column("accounts", "rate")""")


def write_revision(versions: Path, revision: str, down: str | None, phase: str, upgrade: str,
                   downgrade: str, extra: str = "") -> None:
    body = textwrap.indent(textwrap.dedent(upgrade).strip(), "    ")
    undo = textwrap.indent(textwrap.dedent(downgrade).strip(), "    ")
    (versions / f"{revision}.py").write_text(
        f'"""{revision}"""\nimport inspect\n\nimport sqlalchemy as sa\nfrom alembic import op\n\n'
        f"revision = {revision!r}\ndown_revision = {down!r}\nbranch_labels = None\n"
        f"depends_on = None\nphase = {phase!r}\n{extra}\n{AUDIT}\n\n"
        f"def upgrade():\n{body}\n\n\ndef downgrade():\n{undo}\n"
    )


def untouched(project: Path) -> dict[Path, bytes]:
    return {p: p.read_bytes() for p in (project / "alembic.ini", project / "alembic" / "env.py")}




def rows(url: str, sql: str) -> list[tuple]:
    engine = create_engine(url)
    try:
        with engine.connect() as conn:
            return [tuple(r) for r in conn.execute(text(sql))]
    finally:
        engine.dispose()


def columns(url: str) -> set[str]:
    engine = create_engine(url)
    try:
        return {c["name"] for c in inspect(engine).get_columns("accounts")}
    finally:
        engine.dispose()


@pytest.fixture
def bank(monkeypatch, tmp_path, postgres_url):
    """`alembic init alembic` (generic), the manifest beside it, the first revision installed by
    a first release; yields (shop, project folder, database URL, pristine env.py/alembic.ini)."""
    project = tmp_path / "bank"
    project.mkdir()
    subprocess.run([ALEMBIC, "init", "alembic"], cwd=project, check=True, capture_output=True)
    pristine = untouched(project)
    shutil.copy(ROOT / "examples" / "shop" / "service.py", project / "service.py")
    (project / "release.yaml").write_text(MANIFEST)
    down, phase, up, undo = REVISIONS["a1_accounts"]
    write_revision(project / "alembic" / "versions", "a1_accounts", down, phase, up, undo)
    monkeypatch.setenv("BANK_DB_URL", postgres_url)
    shop = shop_environment(monkeypatch, tmp_path, project / "release.yaml")
    try:
        first = shop.run("release", release_config({"catalog": "1.0.0"}))
        assert first.success, shop.failure_message(first)
        yield shop, project, postgres_url, pristine
    finally:
        shop.stop()
        assert not processes_under(shop.home)


def test_a_release_migrates_an_alembic_init_project_through_its_env_py_and_rollback_downgrades(
    bank,
) -> None:
    shop, project, url, pristine = bank
    assert scalar(url, "SELECT version_num FROM alembic_version") == "a1_accounts"
    versions = project / "alembic" / "versions"
    for name in ("a2_currency", "a3_drop_balance_default"):
        write_revision(versions, name, *REVISIONS[name])

    result = shop.run("release", release_config({"catalog": "1.1.0"}))
    assert result.success, shop.failure_message(result)
    release = shop.active()
    assert release.state is ReleaseState.CANARY and release.canary_step == 0
    assert shop.platform.status("catalog").canary_weight == 25
    # expand only: a2 through the project's env.py, on a session named after the release
    assert scalar(url, "SELECT version_num FROM alembic_version") == "a2_currency"
    assert {"currency", "balance"} <= columns(url)
    env_py = str(project / "alembic" / "env.py")
    first = next(r for r in shop.ledger.releases("bank") if r.id != release.id)
    assert rows(url, "SELECT step, env_py, application_name, lock_timeout FROM migration_audit ORDER BY step") == [
        ("upgrade a1_accounts", env_py, f"release:{first.id}", "50ms"),
        ("upgrade a2_currency", env_py, f"release:{release.id}", "50ms"),
    ]
    events = [e.kind for e in shop.ledger.events(release.id)]
    assert events.index("migrate:done") < events.index("gate") < events.index("deploy:start")
    done = next(e for e in shop.ledger.events(release.id) if e.kind == "migrate:done")
    assert done.payload["revisions"] == ["a2_currency"]
    checks = {e.check_name: e.passed for e in result.get_asset_check_evaluations()}
    assert {"schema_contract", "row_conservation"} <= set(checks) and all(checks.values()), checks

    rollback = shop.run("rollback", rollback_config(release.id, "test: operator"))
    assert rollback.success, shop.failure_message(rollback)
    assert shop.ledger.get(release.id).state is ReleaseState.ROLLED_BACK
    assert scalar(url, "SELECT version_num FROM alembic_version") == "a1_accounts"
    assert "currency" not in columns(url) and scalar(url, "SELECT count(*) FROM accounts") == 100
    assert rows(url, "SELECT env_py, application_name FROM migration_audit WHERE step = 'downgrade a2_currency'") == [
        (env_py, f"release:{release.id}:rollback")]
    status = shop.platform.status("catalog")
    assert (status.stable_version, status.canary_version) == ("1.0.0", None)
    assert untouched(project) == pristine  # env.py and alembic.ini as `alembic init` wrote them


def test_preflight_refuses_a_pending_revision_nobody_could_lint_naming_it_and_the_override(
    bank,
) -> None:
    shop, project, url, pristine = bank
    engine = create_engine(url)
    with engine.begin() as conn:  # a table the application made outside the history
        conn.execute(text("CREATE TABLE legacy_rates (rate numeric); INSERT INTO legacy_rates VALUES (1.5)"))
    engine.dispose()
    revision, down, phase, up, undo = UNLINTABLE
    versions = project / "alembic" / "versions"
    write_revision(versions, revision, down, phase, up, undo)
    before_releases = len(shop.ledger.releases())
    scratch_before = scratch_databases(url)

    refused = shop.run("release", release_config({"catalog": "1.1.0"}))
    assert not refused.success
    message = shop.failure_message(refused)
    assert "bank_db revision a2_rates could not be linted" in message
    assert "a2_rates.py:" in message and "cannot run offline" in message  # the static cause
    assert 'relation "legacy_rates" does not exist' in message  # the shadow database's cause
    assert "--shadow auto" in message and 'lint_suppress = {"not-linted": ' in message  # the override
    assert len(shop.ledger.releases()) == before_releases  # refused before the release row
    recorded = [e for e in shop.ledger.events() if e.kind == "launch:refused"]
    assert recorded and "a2_rates" in recorded[-1].payload["reason"]
    assert scalar(url, "SELECT version_num FROM alembic_version") == "a1_accounts"  # nothing ran
    assert left_behind(url, scratch_before) == set()

    # the override the message names: the team says why it is safe, in the revision
    write_revision(versions, revision, down, phase, up, undo,
                   extra='lint_suppress = {"not-linted": "reads legacy_rates, made outside the history"}\n')
    accepted = shop.run("release", release_config({"catalog": "1.1.0"}))
    assert accepted.success, shop.failure_message(accepted)
    assert shop.active().state is ReleaseState.CANARY
    assert scalar(url, "SELECT version_num FROM alembic_version") == "a2_rates"
    assert untouched(project) == pristine
