"""Shadow lint on a project made by `alembic init`, through the real `release` command on a real
PostgreSQL: a sample of the live rows changes what the throwaway database shows, and Ctrl-C in
the middle of a revision leaves no scratch database behind."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from release_pipelines.resources.shadow_lint import SCRATCH_PREFIX
from sqlalchemy import create_engine, text

from tests.scratch_databases import left_behind, scratch_databases

RELEASE = str(Path(sys.executable).parent / "release")
ALEMBIC = str(Path(sys.executable).parent / "alembic")


def init_project(tmp_path: Path, revisions: dict[str, tuple[str | None, str]]) -> Path:
    """`alembic init alembic` (generic template, files untouched) plus expand revisions."""
    subprocess.run([ALEMBIC, "init", "alembic"], cwd=tmp_path, check=True, capture_output=True)
    for name, (down, body) in revisions.items():
        (tmp_path / "alembic" / "versions" / f"{name}.py").write_text(
            f"import sqlalchemy as sa\nfrom alembic import op\n\nrevision = {name!r}\n"
            f"down_revision = {down!r}\nphase = 'expand'\n\n\ndef upgrade():\n"
            + textwrap.indent(textwrap.dedent(body).strip(), "    ")
            + "\n\n\ndef downgrade():\n    pass\n"
        )
    return tmp_path / "alembic"


def release(*args: str) -> subprocess.CompletedProcess:
    done = subprocess.run([RELEASE, "migrations", *args], check=False, capture_output=True, text=True, timeout=300)
    assert "Traceback" not in done.stderr, done.stderr
    return done


SAMPLED = {
    "s1_accounts": (None, """
        op.create_table("accounts", sa.Column("id", sa.BigInteger, primary_key=True),
                        sa.Column("email", sa.Text))"""),
    "s2_unique_email": ("s1_accounts", """
        op.create_unique_constraint("uq_accounts_email", "accounts", ["email"])"""),
}


@pytest.mark.postgres
def test_sample_rows_copies_up_to_n_live_rows_into_the_shadow_database(tmp_path: Path, postgres_url: str) -> None:
    """The live table has duplicate emails from row 1001 on: a structure-only shadow and a
    1000-row sample apply the unique constraint fine; a 2000-row sample shows it failing."""
    location = init_project(tmp_path, SAMPLED)
    where = ["--script-location", str(location), "--url", postgres_url]
    assert release("upgrade", *where, "--target", "s1_accounts").returncode == 0
    engine = create_engine(postgres_url)
    with engine.begin() as conn:
        conn.execute(text("INSERT INTO accounts (id, email) SELECT g, 'user' || g || '@bank.test' "
                          "FROM generate_series(1, 1000) g"))
        conn.execute(text("INSERT INTO accounts (id, email) SELECT g, 'twice@bank.test' "
                          "FROM generate_series(1001, 1500) g"))
    engine.dispose()
    before = scratch_databases(postgres_url)

    def lint(*extra: str) -> dict:
        done = release("lint", *where, "--pending", "--shadow", "auto", *extra, "--format", "json")
        return {**json.loads(done.stdout), "exit_code": done.returncode}

    def failures(report: dict) -> list[str]:
        return [f["message"] for f in report["findings"] if f["rule"] == "shadow-failure"]

    structure_only = lint()
    assert structure_only["counts"]["revisions"] == 1 and failures(structure_only) == []
    assert structure_only["counts"]["not_linted"] == 0

    assert failures(lint("--sample-rows", "1000")) == []  # the first 1000 rows are distinct

    sampled = lint("--sample-rows", "2000")
    (message,) = failures(sampled)
    assert sampled["exit_code"] == 1 and sampled["counts"]["blocking_findings"] >= 1
    assert message.startswith("failed in the shadow database: s2_unique_email.py:"), message
    assert 'IntegrityError: could not create unique index "uq_accounts_email"' in message
    assert left_behind(postgres_url, before) == set()
    with create_engine(postgres_url).connect() as conn:  # the live database was only read
        assert conn.execute(text("SELECT count(*) FROM accounts")).scalar_one() == 1500
        assert conn.execute(text("SELECT version_num FROM alembic_version")).scalar_one() == "s1_accounts"


SLOW = {
    "c1_accounts": (None, 'op.create_table("accounts", sa.Column("id", sa.BigInteger, primary_key=True))'),
    "c2_slow_backfill": ("c1_accounts", """
        op.add_column("accounts", sa.Column("note", sa.Text))
        op.execute("SELECT pg_sleep(600)")"""),
}


@pytest.mark.postgres
def test_ctrl_c_during_a_shadow_revision_drops_the_scratch_database(tmp_path: Path, postgres_url: str) -> None:
    location = init_project(tmp_path, SLOW)
    before = scratch_databases(postgres_url)
    lint = subprocess.Popen(
        [RELEASE, "migrations", "lint", "--script-location", str(location), "--url", postgres_url,
         "--shadow", "auto"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        # as from a terminal: an xdist worker ignores SIGINT, and its children would inherit that
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    engine = create_engine(postgres_url, isolation_level="AUTOCOMMIT")
    scratch = None
    try:
        deadline = time.monotonic() + 120
        while scratch is None and time.monotonic() < deadline:
            assert lint.poll() is None, lint.communicate()
            with engine.connect() as conn:  # our scratch database, inside c2's pg_sleep
                scratch = conn.execute(text(
                    "SELECT datname FROM pg_stat_activity WHERE state = 'active' AND datname LIKE :p "
                    "AND query LIKE '%pg_sleep(600)%' AND datname <> ALL(:before)"
                ), {"p": f"{SCRATCH_PREFIX}%", "before": list(before)}).scalar()
            time.sleep(0.1)
        assert scratch, "the shadow lint never reached the slow revision"
        lint.send_signal(signal.SIGINT)
        # long before pg_sleep(600) or the 300 s statement timeout would end it; room for a loaded machine
        stdout, stderr = lint.communicate(timeout=240)
    finally:
        if lint.poll() is None:
            lint.kill()
            lint.communicate()
    with engine.connect() as conn:
        left = conn.execute(text("SELECT count(*) FROM pg_database WHERE datname = :n"), {"n": scratch}).scalar()
        running = conn.execute(text("SELECT count(*) FROM pg_stat_activity WHERE datname = :n"),
                               {"n": scratch}).scalar()
        if scratch:  # a leak fails the test below; it does not stay on the server
            conn.execute(text(f'DROP DATABASE IF EXISTS "{scratch}" WITH (FORCE)'))
    engine.dispose()
    assert (left, running) == (0, 0), f"{scratch} left behind"
    assert lint.returncode != 0, "interrupted, the lint must not look like a pass"
    assert "Traceback" not in stderr, stderr
    assert "0 blocking finding" not in stdout
