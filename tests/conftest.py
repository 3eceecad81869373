"""Shared fixtures. Postgres tests get a fresh database per test session on a real server.

Point them at a server with RELEASE_TEST_POSTGRES_URL (default: the local one, trust auth).
Without a reachable server they are skipped, except when RELEASE_REQUIRE_POSTGRES=1 (CI), where
they fail: CI must never skip a Postgres test silently.

`make test` runs the suite on pytest-xdist workers. Each worker (and a plain `pytest` run) keeps
the embedded defaults in folders of its own - RELEASE_HOME, DAGSTER_HOME and the shop's SQLite
database - so no two workers share a file and no test writes into the checkout's `.release/`.
Ports are always free ports and databases fresh ones, so nothing else is shared. Every test has
a time limit (pytest-timeout, `timeout` in pyproject.toml; `slow` tests get SLOW_TEST_TIMEOUT): a
hung test fails with its name instead of holding the run.
"""

from __future__ import annotations

import os
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

from tests.reliability import conftest as fault_matrix
from tests.setup_services import DEFAULT_URL

POSTGRES_URL = os.environ.get("RELEASE_TEST_POSTGRES_URL", DEFAULT_URL)
REQUIRE_POSTGRES = os.environ.get("RELEASE_REQUIRE_POSTGRES") == "1" or os.environ.get("CI") == "true"
SLOW_TEST_TIMEOUT = 900  # seconds: webserver + daemon start-up and whole releases on a loaded machine


@pytest.fixture(scope="session", autouse=True)
def worker_homes(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """This process's own RELEASE_HOME, DAGSTER_HOME and shop database (pytest's temporary folder
    is per xdist worker); a test's monkeypatch still overrides them."""
    base = tmp_path_factory.mktemp("worker_homes")
    for folder in ("release_home", "dagster_home"):
        (base / folder).mkdir()
    with pytest.MonkeyPatch.context() as env:
        env.setenv("RELEASE_HOME", str(base / "release_home"))
        env.setenv("DAGSTER_HOME", str(base / "dagster_home"))
        env.setenv("SHOP_DB_URL", f"sqlite:///{base / 'release_home' / 'shop.db'}")
        yield base


@pytest.fixture(autouse=True)
def no_dagster_instance_context_from_an_earlier_test() -> Iterator[None]:
    """Each test starts outside any Dagster instance's context. Dagster keeps the defs-state
    storage of the last instance entered in a context variable; an instance entered by one test and
    never left in order (a resource or op context built without an instance enters an ephemeral
    one) outlives its instance, and the next test in this worker that builds definitions fails with
    "Attempted to resolve undefined DagsterInstance weakref" (seen with -n 4)."""
    storage = sys.modules.get("dagster._core.storage.defs_state.base")  # nothing to clear before Dagster loads
    if storage is None:
        yield
        return
    with storage.set_defs_state_storage(None):
        yield


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """`slow` tests get the longer time limit unless they set their own. (The order files run in
    is xdist's: --dist loadfile hands out files by number of tests, most first.)"""
    for item in items:
        if item.get_closest_marker("slow") and not item.get_closest_marker("timeout"):
            item.add_marker(pytest.mark.timeout(SLOW_TEST_TIMEOUT))


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    fault_matrix.collect(report)  # from this process or, under xdist, from a worker


def pytest_terminal_summary(terminalreporter) -> None:
    """In the process that prints (xdist's main process loads no conftest below tests/)."""
    fault_matrix.write_summary(terminalreporter)


def _server_reachable() -> str | None:
    try:
        with create_engine(POSTGRES_URL).connect() as conn:
            conn.execute(text("select 1"))
        return None
    except Exception as exc:  # noqa: BLE001
        return f"{type(exc).__name__}: {exc}".splitlines()[0]


@pytest.fixture(scope="session")
def postgres_server_url() -> str:
    """URL of the admin database on the test server; skips or fails per the policy above."""
    problem = _server_reachable()
    if problem:
        message = (
            f"PostgreSQL not reachable at {POSTGRES_URL} ({problem}); "
            "set RELEASE_TEST_POSTGRES_URL to a server you can create databases on"
        )
        if REQUIRE_POSTGRES:
            pytest.fail(message)
        pytest.skip(message)
    return POSTGRES_URL


def _create_database(server_url: str, prefix: str) -> str:
    name = f"{prefix}_{uuid.uuid4().hex[:10]}"
    engine = create_engine(server_url, isolation_level="AUTOCOMMIT")
    with engine.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    engine.dispose()
    return make_url(server_url).set(database=name).render_as_string(hide_password=False)


def _drop_database(server_url: str, url: str) -> None:
    name = make_url(url).database
    engine = create_engine(server_url, isolation_level="AUTOCOMMIT")
    with engine.connect() as conn:
        conn.execute(
            text("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = :n AND pid <> pg_backend_pid()"),
            {"n": name},
        )
        conn.execute(text(f'DROP DATABASE IF EXISTS "{name}"'))
    engine.dispose()


@pytest.fixture
def postgres_url(postgres_server_url: str) -> Iterator[str]:
    """A fresh, empty PostgreSQL database for one test, dropped afterwards."""
    url = _create_database(postgres_server_url, "rp_test")
    try:
        yield url
    finally:
        _drop_database(postgres_server_url, url)
