"""Direct PostgreSQL helpers for tests: a raw psycopg2 session (to hold locks, stay idle in a
transaction, or be seen in pg_stat_activity by name) and one-value queries."""

from __future__ import annotations

from typing import Any

import psycopg2
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url


def connect(url: str, application_name: str = "", autocommit: bool = False) -> Any:
    parts = make_url(url)
    conn = psycopg2.connect(host=parts.host, port=parts.port or 5432, user=parts.username,
                            dbname=parts.database, application_name=application_name)
    conn.autocommit = autocommit
    return conn


def scalar(url: str, sql: str) -> Any:
    engine = create_engine(url)
    try:
        with engine.connect() as conn:
            return conn.execute(text(sql)).scalar()
    finally:
        engine.dispose()
