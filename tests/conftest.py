"""Shared fixtures. Postgres tests get a fresh database per test session on a real server.

Point them at a server with RELEASE_TEST_POSTGRES_URL (default: the local one, trust auth).
Without a reachable server they are skipped, except when RELEASE_REQUIRE_POSTGRES=1 (CI), where
they fail: CI must never skip a Postgres test silently.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator

import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

from tests.setup_services import DEFAULT_URL

POSTGRES_URL = os.environ.get("RELEASE_TEST_POSTGRES_URL", DEFAULT_URL)
REQUIRE_POSTGRES = os.environ.get("RELEASE_REQUIRE_POSTGRES") == "1" or os.environ.get("CI") == "true"


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
