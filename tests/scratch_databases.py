"""Shadow lint's scratch databases on the test server: which exist, and whether ours are gone."""

from __future__ import annotations

import time

from release_pipelines.resources.shadow_lint import SCRATCH_PREFIX
from sqlalchemy import create_engine, text


def scratch_databases(url: str) -> set[str]:
    """Names of the scratch databases on the server of `url` (any database of it)."""
    engine = create_engine(url)
    try:
        with engine.connect() as conn:
            return set(conn.execute(text("SELECT datname FROM pg_database WHERE datname LIKE :p"),
                                    {"p": f"{SCRATCH_PREFIX}%"}).scalars())
    finally:
        engine.dispose()


def left_behind(url: str, before: set[str], within_s: float = 30) -> set[str]:
    """Scratch databases created since `before` still there after `within_s`: other sessions on a
    shared server may be linting at the same time, but theirs come and go; a leak stays."""
    deadline = time.monotonic() + within_s
    while (left := scratch_databases(url) - before) and time.monotonic() < deadline:
        time.sleep(0.5)
    return left
