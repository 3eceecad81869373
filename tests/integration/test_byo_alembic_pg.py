"""Bring your own Alembic project: projects made by `alembic init` (every template the installed
Alembic ships, files untouched), env.py variants and real published histories, against a real
PostgreSQL, through the real `release` command."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import alembic
import dagster
import optuna
import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

from release_pipelines.resources.alembic_config import find_project
from release_pipelines.resources.migration_render import lint_script
from release_pipelines.resources.migrations import MigrationRunner, load_revisions
from tests.pg import scalar
from tests.scratch_databases import left_behind, scratch_databases

pytestmark = pytest.mark.slow  # a minute or more in all: the longer time limit (tests/conftest.py)

RELEASE = str(Path(sys.executable).parent / "release")
ALEMBIC = str(Path(sys.executable).parent / "alembic")
TEMPLATES = sorted(p.name for p in (Path(alembic.__file__).parent / "templates").iterdir() if p.is_dir() and p.name != "__pycache__")
DAGSTER_HISTORY = Path(dagster.__file__).parent / "_core" / "storage" / "alembic"
OPTUNA_INI = Path(optuna.__file__).parent / "storages" / "_rdb" / "alembic.ini"

# Three revisions every template gets: a table (safe), a type change (unsafe, rewrites), and an
# irreversible data change. Multidb revisions keep the steps in upgrade_<engine>().
REVISIONS = {
    "r1_accounts": ('None', "expand", """
        op.create_table("accounts", sa.Column("id", sa.BigInteger, primary_key=True),
                        sa.Column("balance", sa.Integer), sa.Column("note", sa.Text))
        op.execute("INSERT INTO accounts (balance) SELECT g FROM generate_series(1, 50) g")""",
        'op.drop_table("accounts")'),
    "r2_balance_bigint": ('"r1_accounts"', "expand", """
        op.alter_column("accounts", "balance", type_=sa.BigInteger)""",
        'op.alter_column("accounts", "balance", type_=sa.Integer)'),
    "r3_wipe_notes": ('"r2_balance_bigint"', "contract", """
        op.execute("UPDATE accounts SET note = NULL")""", "pass"),
}


def release(*args: str, check: int | None = None) -> subprocess.CompletedProcess:
    done = subprocess.run([RELEASE, "migrations", *args], check=False, capture_output=True, text=True, timeout=300)
    if check is not None:
        assert done.returncode == check, (done.stdout, done.stderr)
    assert "Traceback" not in done.stderr, done.stderr
    return done


def write_revisions(versions: Path, engine: str | None = None) -> None:
    for name, (down, phase, upgrade, downgrade) in REVISIONS.items():
        up = textwrap.indent(textwrap.dedent(upgrade).strip(), "    ")
        down_body = textwrap.indent(downgrade, "    ")
        if engine:
            body = (f"def upgrade(engine_name):\n    globals()['upgrade_%s' % engine_name]()\n\n\n"
                    f"def downgrade(engine_name):\n    globals()['downgrade_%s' % engine_name]()\n\n\n"
                    f"def upgrade_{engine}():\n{up}\n\n\ndef downgrade_{engine}():\n{down_body}\n")
        else:
            body = f"def upgrade():\n{up}\n\n\ndef downgrade():\n{down_body}\n"
        (versions / f"{name}.py").write_text(
            f'"""{name}"""\nimport sqlalchemy as sa\nfrom alembic import op\n\n'
            f'revision = "{name}"\ndown_revision = {down}\nbranch_labels = None\ndepends_on = None\n'
            f'phase = "{phase}"\n\n\n{body}'
        )


def init_project(tmp_path: Path, template: str) -> Path:
    """`alembic init -t TEMPLATE alembic` in a fresh folder, plus our three revisions."""
    subprocess.run([ALEMBIC, "init", "-t", template, "alembic"], cwd=tmp_path, check=True,
                   capture_output=True)
    write_revisions(tmp_path / "alembic" / "versions", "engine1" if template == "multidb" else None)
    return tmp_path




@pytest.mark.parametrize("template", TEMPLATES)
def test_every_alembic_init_template_lints_checks_and_migrates_unchanged(
    template: str, tmp_path: Path, postgres_url: str, postgres_server_url: str
) -> None:
    root = init_project(tmp_path, template)
    before = {p: p.read_bytes() for p in root.rglob("*") if p.is_file() and "__pycache__" not in p.parts}
    url = postgres_url
    if "async" in template:
        url = make_url(postgres_url).set(drivername="postgresql+asyncpg").render_as_string(hide_password=False)
    where = ["--ini", str(root / ("pyproject.toml" if "pyproject" in template else "alembic.ini"))]
    if template == "multidb":
        where += ["--engine", "engine1"]

    lint = json.loads(release("lint", *where, "--format", "json", check=1).stdout)
    assert lint["counts"]["revisions"] == 3 and lint["counts"]["linted_static"] == 3
    assert {(f["revision"], f["rule"]) for f in lint["findings"] if f["severity"] == "error"} == {
        ("r2_balance_bigint", "changing-column-type")}

    check = json.loads(release("check", *where, "--strict", "--format", "json", check=1).stdout)
    assert check["irreversible"] == ["r3_wipe_notes"]
    release("check", *where, check=0)

    status = json.loads(release("status", *where, "--url", url, "--format", "json", check=0).stdout)
    assert status["current"] is None and [p["revision"] for p in status["pending"]] == list(REVISIONS)

    up = json.loads(release("upgrade", *where, "--url", url, "--format", "json", check=0).stdout)
    assert [r["revision"] for r in up["applied"]] == ["r1_accounts", "r2_balance_bigint"]  # expand only
    assert any("ALTER TABLE accounts" in s for s in up["applied"][1]["statements"])
    assert scalar(postgres_url, "SELECT data_type FROM information_schema.columns "
                                "WHERE table_name = 'accounts' AND column_name = 'balance'") == "bigint"
    release("upgrade", *where, "--url", url, "--target", "head", check=0)
    refused = release("downgrade", *where, "--url", url, "--target", "r1_accounts", check=1)
    assert "r3_wipe_notes is irreversible" in refused.stderr
    assert scalar(postgres_url, "SELECT version_num FROM alembic_version") == "r3_wipe_notes"

    after = {p: p.read_bytes() for p in root.rglob("*") if p.is_file() and "__pycache__" not in p.parts}
    assert after == before  # nothing written: no URL on disk, no generated ini
    assert postgres_url.split("@")[-1] not in (root / "alembic.ini").read_text()


def test_a_downgrade_round_trip_on_the_generic_template(tmp_path: Path, postgres_url: str) -> None:
    root = init_project(tmp_path, "generic")
    where = ["--script-location", str(root / "alembic"), "--url", postgres_url]
    release("upgrade", *where, "--target", "r2_balance_bigint", check=0)
    down = json.loads(release("downgrade", *where, "--target", "r1_accounts", "--format", "json",
                              check=0).stdout)
    assert [r["to_revision"] for r in down["applied"]] == ["r1_accounts"]
    assert scalar(postgres_url, "SELECT data_type FROM information_schema.columns "
                                "WHERE table_name = 'accounts' AND column_name = 'balance'") == "integer"


CONNECTION_ENGINE_ENV = '''
from alembic import context

config = context.config
given = config.attributes["connection"]
# The cookbook variant that opens its own connection from the engine it was handed.
with given.engine.connect() as connection:
    context.configure(connection=connection)
    with context.begin_transaction():
        context.run_migrations()
'''

SEEN = '''
from alembic import op

revision = "s1"
down_revision = None
phase = "expand"


def upgrade():
    op.execute("CREATE TABLE seen AS SELECT current_setting('lock_timeout') AS lock_timeout,"
               " current_setting('statement_timeout') AS statement_timeout,"
               " current_setting('application_name') AS application_name,"
               " pg_backend_pid() AS pid")


def downgrade():
    op.execute("DROP TABLE seen")
'''


def test_an_env_py_opening_its_own_connection_from_connection_engine_keeps_the_session_settings(
    tmp_path: Path, postgres_url: str
) -> None:
    project = tmp_path / "migrations"
    (project / "versions").mkdir(parents=True)
    (project / "env.py").write_text(CONNECTION_ENGINE_ENV)
    (project / "versions" / "s1.py").write_text(SEEN)
    runner = MigrationRunner(project, postgres_url, lock_timeout_ms=1234, statement_timeout_ms=4321,
                             application_name="release:r-42")
    runner.upgrade()
    row = create_engine(postgres_url).connect().execute(text("SELECT * FROM seen")).one()
    assert (row.lock_timeout, row.statement_timeout, row.application_name) == ("1234ms", "4321ms", "release:r-42")


def test_clear_errors_for_broken_projects(tmp_path: Path, postgres_url: str) -> None:
    root = init_project(tmp_path, "generic")
    (root / "alembic" / "env.py").write_text("import app_models_that_are_not_installed\n")
    failed = release("upgrade", "--script-location", str(root / "alembic"), "--url", postgres_url,
                     "--target", "head", check=1)
    assert "env.py:1" in failed.stderr and "ModuleNotFoundError" in failed.stderr
    assert "install its package" in failed.stderr

    (root / "alembic" / "env.py").write_text("import os\ndef broken(:\n    pass\n")
    syntax = release("upgrade", "--script-location", str(root / "alembic"), "--url", postgres_url,
                     "--target", "head", check=1)
    assert "SyntaxError" in syntax.stderr and "env.py, line 2" in syntax.stderr
    assert "Traceback" not in syntax.stderr

    (root / "alembic" / "env.py").unlink()
    missing = release("lint", "--script-location", str(root / "alembic"), check=2)
    assert "has no env.py" in missing.stderr

    bare = tmp_path / "bare.ini"
    bare.write_text("[alembic]\nsqlalchemy.url = driver://\n")
    no_location = release("lint", "--ini", str(bare), check=2)
    assert "no script_location" in no_location.stderr and str(bare) in no_location.stderr

    generic_env = Path(alembic.__file__).parent / "templates" / "generic" / "env.py"
    (root / "alembic" / "env.py").write_text(generic_env.read_text())
    down = release("status", "--script-location", str(tmp_path / "alembic"), "--url",
                   "postgresql://postgres@127.0.0.1:1/none", "--format", "json", check=2)
    assert "cannot reach the database" in json.loads(down.stdout)["error"]


SHADOW_REVISIONS = {
    "v1": ("None", """
        op.create_table("accounts", sa.Column("id", sa.BigInteger, primary_key=True), sa.Column("balance", sa.Integer))
        op.execute("INSERT INTO accounts (balance) SELECT g FROM generate_series(1, 1000) g")"""),
    "v2": ('"v1"', """
        total = op.get_bind().execute(sa.text("SELECT count(*) FROM accounts")).scalar()
        op.alter_column("accounts", "balance", type_=sa.BigInteger)
        with op.get_context().autocommit_block():
            op.create_index("ix_accounts_balance", "accounts", ["balance"], postgresql_concurrently=True)"""),
}


def shadow_project(tmp_path: Path, failing: bool = False) -> Path:
    root = init_project(tmp_path, "generic")
    versions = root / "alembic" / "versions"
    for path in versions.glob("r*.py"):
        path.unlink()
    revisions = dict(SHADOW_REVISIONS)
    if failing:
        revisions["v3"] = ('"v2"', 'op.execute("ALTER TABLE no_such_table ADD COLUMN x bigint")')
    for name, (down, body) in revisions.items():
        (versions / f"{name}.py").write_text(
            f"import sqlalchemy as sa\nfrom alembic import op\n\nrevision = {name!r}\n"
            f"down_revision = {down}\nphase = 'expand'\n\n\ndef upgrade():\n"
            + textwrap.indent(textwrap.dedent(body).strip(), "    ") + "\n\n\ndef downgrade():\n    pass\n"
        )
    return root


def test_shadow_lint_observes_locks_and_rewrites_and_leaves_no_database(
    tmp_path: Path, postgres_server_url: str
) -> None:
    root = shadow_project(tmp_path)
    before = scratch_databases(postgres_server_url)
    static = release("lint", "--script-location", str(root / "alembic"), "--format", "json", check=1)
    assert [c["revision"] for c in json.loads(static.stdout)["not_linted"]] == ["v2"]

    done = release("lint", "--script-location", str(root / "alembic"), "--shadow", postgres_server_url,
                   "--format", "json", check=1)
    report = json.loads(done.stdout)
    counts = report["counts"]
    assert (counts["linted_static"], counts["linted_shadow"], counts["not_linted"]) == (1, 1, 0)
    messages = [f["message"] for f in report["findings"] if f["revision"] == "v2"]
    assert "ALTER TABLE accounts took ACCESS EXCLUSIVE and rewrote 1 table (public.accounts)" in messages
    assert any(m.startswith("CREATE INDEX CONCURRENTLY took SHARE UPDATE EXCLUSIVE on public.accounts")
               for m in messages)
    assert left_behind(postgres_server_url, before) == set()


def test_shadow_lint_drops_its_database_after_a_failing_revision(
    tmp_path: Path, postgres_server_url: str
) -> None:
    root = shadow_project(tmp_path, failing=True)
    before = scratch_databases(postgres_server_url)
    report = lint_script(find_project(root / "alembic"), shadow_server=postgres_server_url, shadow_all=True)
    (failed,) = [f for f in report.blocking if f.rule == "shadow-failure"]
    assert failed.revision == "v3" and 'relation "no_such_table" does not exist' in failed.message
    assert report.not_linted == [] and report.failed
    assert left_behind(postgres_server_url, before) == set()


def test_dagster_storage_history_is_linted_or_named_with_its_cause(postgres_server_url: str) -> None:
    project = find_project(DAGSTER_HISTORY)
    before = scratch_databases(postgres_server_url)
    report = lint_script(project, shadow_server=postgres_server_url)
    counts = report.counts()
    assert counts["revisions"] == len(load_revisions(project)) == 88
    assert counts["linted_static"] + counts["linted_shadow"] + counts["not_linted"] == 88
    assert counts["linted_static"] == 3 and counts["linted_shadow"] == 81
    # Dagster makes its tables with metadata.create_all and its revisions check has_table():
    # replayed from base, most find nothing to do. Said per revision, not passed in silence.
    assert counts["linted_shadow_no_statements"] == 72
    assert "5e139331e376" not in {f.revision for f in report.findings if f.rule == "shadow-no-statements"}
    causes = {c.revision: c.reason or "" for c in report.not_linted}
    assert all("cannot run offline" in reason and "shadow database" in reason for reason in causes.values())
    assert "currently upgrading instance not set" in causes["5c18fd3c2957"]  # needs Dagster's instance
    assert "CREATE INDEX CONCURRENTLY cannot run inside a transaction block" in causes["16e3655b4d9b"]
    assert left_behind(postgres_server_url, before) == set()
    irreversible = [r.revision for r in load_revisions(project) if not r.reversible]
    assert len(irreversible) == 43 and "5c18fd3c2957" in irreversible


def test_optuna_history_from_pypi_through_its_alembic_ini(postgres_server_url: str) -> None:
    project = find_project(ini=OPTUNA_INI)
    assert project.script_location.name == "alembic" and project.ini == OPTUNA_INI
    report = lint_script(project, shadow_server=postgres_server_url)
    counts = report.counts()
    assert counts["revisions"] == 10
    assert (counts["linted_static"], counts["linted_shadow"], counts["not_linted"]) == (4, 3, 3)
    assert counts["linted_shadow_no_statements"] == 0
    causes = {c.revision: c.reason or "" for c in report.not_linted}
    assert 'type "studydirection" already exists' in causes["v2.4.0.a"]
    assert [r.revision for r in load_revisions(project) if not r.reversible] == ["v2.4.0.a"]
    check = release("check", "--ini", str(OPTUNA_INI), "--strict", "--format", "json", check=1)
    assert json.loads(check.stdout)["irreversible"] == ["v2.4.0.a"]
    assert os.fspath(OPTUNA_INI)  # the installed package's files are used as they ship


# An env.py of the kind teams write: the URL from alembic.ini's main option (engine_from_config,
# so configparser interpolates it), its own version table named in alembic.ini, and a -x argument.
OPTIONS_ENV = '''
from alembic import context
from sqlalchemy import engine_from_config, pool

config = context.config
tenant = context.get_x_argument(as_dictionary=True)["tenant"]
engine = engine_from_config(config.get_section(config.config_ini_section), prefix="sqlalchemy.",
                            poolclass=pool.NullPool)
with engine.connect() as connection:
    context.configure(connection=connection,
                      version_table=config.get_main_option("version_table"),
                      version_table_schema=config.get_main_option("version_table_schema"))
    with context.begin_transaction():
        context.run_migrations()
'''

TENANT_REVISION = '''
import sqlalchemy as sa
from alembic import context, op

revision = "t1"
down_revision = None
phase = "expand"


def upgrade():
    tenant = context.get_x_argument(as_dictionary=True)["tenant"]
    op.create_table(f"{tenant}_accounts", sa.Column("id", sa.BigInteger, primary_key=True))


def downgrade():
    op.drop_table(f"{context.get_x_argument(as_dictionary=True)['tenant']}_accounts")
'''


def test_x_arguments_version_table_options_and_a_percent_in_the_url_reach_env_py(
    tmp_path: Path, postgres_url: str
) -> None:
    (tmp_path / "migrations" / "versions").mkdir(parents=True)
    (tmp_path / "migrations" / "env.py").write_text(OPTIONS_ENV)
    (tmp_path / "migrations" / "versions" / "t1.py").write_text(TENANT_REVISION)
    ini = tmp_path / "alembic.ini"
    ini.write_text("[alembic]\nscript_location = %(here)s/migrations\nversion_table = release_versions\n"
                   "version_table_schema = meta\n\n[post_write_hooks]\nhooks = black\n"
                   "black.type = console_scripts\nblack.entrypoint = black\n")
    engine = create_engine(postgres_url)
    with engine.begin() as conn:
        conn.execute(text("CREATE SCHEMA meta"))
    engine.dispose()
    # trust auth ignores the password; "p%ss" must survive configparser's interpolation
    url = make_url(postgres_url).set(password="p%ss").render_as_string(hide_password=False)
    assert "p%25ss" in url
    where = ["--ini", str(ini), "-x", "tenant=acme"]

    lint = json.loads(release("lint", *where, "--format", "json", check=0).stdout)
    assert lint["counts"]["linted_static"] == 1 and lint["counts"]["blocking_findings"] == 0
    assert [f["message"] for f in lint["findings"]] == ["acme_accounts.id is BIGSERIAL"]  # -x seen
    release("upgrade", *where, "--url", url, check=0)
    assert scalar(postgres_url, "SELECT to_regclass('public.acme_accounts') IS NOT NULL") is True
    assert scalar(postgres_url, "SELECT version_num FROM meta.release_versions") == "t1"
    assert scalar(postgres_url, "SELECT to_regclass('public.alembic_version')") is None
    status = json.loads(release("status", *where, "--url", url, "--format", "json", check=0).stdout)
    assert (status["current"], status["pending"]) == ("t1", [])
    release("downgrade", *where, "--url", url, "--target", "base", check=0)
    assert scalar(postgres_url, "SELECT to_regclass('public.acme_accounts')") is None

    missing = release("lint", "--ini", str(ini), "-x", "tenant", check=2)
    assert "-x 'tenant': expected key=value" in missing.stderr
    assert "p%ss" not in ini.read_text() and "p%25ss" not in ini.read_text()  # nothing on disk


def branch(versions: Path, revision: str, down: str | tuple[str, ...] | None) -> None:
    (versions / f"{revision}.py").write_text(
        f"from alembic import op\n\nrevision = {revision!r}\ndown_revision = {down!r}\n"
        f"phase = 'expand'\n\n\ndef upgrade():\n    op.execute('CREATE TABLE {revision} (id bigint)')\n\n\n"
        f"def downgrade():\n    op.execute('DROP TABLE {revision}')\n"
    )


def test_several_heads_are_refused_with_the_merge_hint_and_a_merge_revision_runs(
    tmp_path: Path, postgres_url: str
) -> None:
    root = init_project(tmp_path, "generic")
    versions = root / "alembic" / "versions"
    for path in versions.glob("r*.py"):
        path.unlink()
    branch(versions, "m1_base", None)
    branch(versions, "m2_left", "m1_base")
    branch(versions, "m2_right", "m1_base")
    where = ["--script-location", str(root / "alembic"), "--url", postgres_url]

    for command in ("status", "upgrade"):  # the history must be fixed first: bad input, like a missing env.py
        refused = json.loads(release(command, *where, "--format", "json", check=2).stdout)
        assert "has 2 heads (m2_left, m2_right)" in refused["error"]
        assert "alembic merge heads" in refused["error"]
    assert scalar(postgres_url, "SELECT to_regclass('public.alembic_version')") is None  # nothing ran

    branch(versions, "m3_merge", ("m2_left", "m2_right"))
    check = json.loads(release("check", *where, "--format", "json", check=0).stdout)
    assert [r["revision"] for r in check["revisions"] if r["merge"]] == ["m3_merge"]
    up = json.loads(release("upgrade", *where, "--format", "json", check=0).stdout)
    # one branch alone, the other with its merge: never two heads in alembic_version in between
    (base, first, merge) = up["applied"]
    assert (base["revision"], merge["revision"], merge["from_revision"]) == ("m1_base", "m3_merge", first["revision"])
    assert {first["revision"], *merge["with_branch"]} == {"m2_left", "m2_right"}
    assert any("and merge m3_merge: applied in one command" in line for line in up["log"])
    assert scalar(postgres_url, "SELECT array_agg(version_num) FROM alembic_version") == ["m3_merge"]
    assert scalar(postgres_url, "SELECT to_regclass('public.m2_left') IS NOT NULL AND "
                                "to_regclass('public.m2_right') IS NOT NULL") is True
    down = release("downgrade", *where, "--target", "m1_base", check=1)
    assert "through merge revision m3_merge" in down.stderr


GUARDED = {
    "g1": ("None", """
        op.create_table("accounts", sa.Column("id", sa.BigInteger, primary_key=True), sa.Column("balance", sa.Integer))"""),
    "g2": ('"g1"', """
        op.alter_column("accounts", "balance", type_=sa.BigInteger)"""),
    # Guarded on a table the application makes outside the history (metadata.create_all):
    # in a schema replayed from the history it does nothing.
    "g3": ('"g2"', """
        if sa.inspect(op.get_bind()).has_table("legacy_rates"):
            op.add_column("legacy_rates", sa.Column("source", sa.Text))"""),
}


def test_shadow_lint_watches_revisions_the_live_database_has_and_names_those_that_ran_nothing(
    tmp_path: Path, postgres_url: str
) -> None:
    root = init_project(tmp_path, "generic")
    versions = root / "alembic" / "versions"
    for path in versions.glob("r*.py"):
        path.unlink()
    for name, (down, body) in GUARDED.items():
        (versions / f"{name}.py").write_text(
            f"import sqlalchemy as sa\nfrom alembic import op\n\nrevision = {name!r}\n"
            f"down_revision = {down}\nphase = 'expand'\n\n\ndef upgrade():\n"
            + textwrap.indent(textwrap.dedent(body).strip(), "    ") + "\n\n\ndef downgrade():\n    pass\n"
        )
    where = ["--script-location", str(root / "alembic"), "--url", postgres_url]
    release("upgrade", *where, "--target", "head", check=0)  # the live database has them all
    before = scratch_databases(postgres_url)

    report = json.loads(release("lint", *where, "--shadow", "auto", "--format", "json", check=1).stdout)
    counts = report["counts"]
    assert (counts["linted_static"], counts["linted_shadow"], counts["not_linted"]) == (2, 1, 0)
    assert counts["linted_shadow_no_statements"] == 1
    facts = {(f["revision"], f["rule"]) for f in report["findings"]}
    assert ("g2", "observed-table-rewrite") in facts  # seen although the live database has g2
    (empty,) = [f for f in report["findings"] if f["rule"] == "shadow-no-statements"]
    assert empty["revision"] == "g3" and empty["severity"] == "warning"
    assert "ran no statement in the shadow database" in empty["message"]
    table = release("lint", *where, "--shadow", "auto", check=1).stdout
    assert "1 in the shadow database (1 of them ran no statement there)" in " ".join(table.split())
    assert left_behind(postgres_url, before) == set()
