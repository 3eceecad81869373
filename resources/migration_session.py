"""Session settings on every connection a migration opens, whoever opens it.

A user's env.py may ignore the connection we pass and build its own engine (`engine_from_config`
in the generic template, `async_engine_from_config` in the async one, `connection.engine` in some
cookbook variants). So the settings are not tied to our engine: while an Alembic command runs in
this thread, SQLAlchemy's ``do_connect`` event adds `lock_timeout`, `statement_timeout` and
`application_name` to the connect arguments of every new PostgreSQL connection to the migrated
database - at connect time, for libpq drivers as ``options``, for asyncpg as ``server_settings``.
The same scoping records the statements those connections run.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from sqlalchemy import event
from sqlalchemy.engine import Engine

# Statements that legitimately run long (but hold only weak locks): they get the long timeout.
LONG_STATEMENT = re.compile(
    r"^\s*(CREATE\s+(UNIQUE\s+)?INDEX|REINDEX|ALTER\s+TABLE\b.*\bVALIDATE\s+CONSTRAINT)",
    re.IGNORECASE | re.DOTALL,
)
# Alembic's own bookkeeping and catalog introspection: not part of a revision's statements.
BOOKKEEPING = re.compile(
    r"^\s*(PRAGMA\b|SELECT\b).*\b(pg_catalog|alembic_version|sqlite_master|information_schema)\b",
    re.IGNORECASE | re.DOTALL,
)


@dataclass(frozen=True)
class SessionSettings:
    database: str
    application_name: str
    lock_timeout_ms: int
    statement_timeout_ms: int
    long_statement_timeout_ms: int

    def libpq_options(self) -> str:
        return f"-c lock_timeout={self.lock_timeout_ms} -c statement_timeout={self.statement_timeout_ms}"

    def server_settings(self) -> dict[str, str]:
        return {
            "lock_timeout": str(self.lock_timeout_ms),
            "statement_timeout": str(self.statement_timeout_ms),
            "application_name": self.application_name,
        }


def connect_args(settings: SessionSettings) -> dict[str, str]:
    """Connect arguments for a psycopg2 engine of our own."""
    return {"application_name": settings.application_name, "options": settings.libpq_options()}


def _targets(database: str, cparams: dict[str, Any]) -> bool:
    return (cparams.get("database") or cparams.get("dbname")) == database


@contextmanager
def applied_to_every_connection(
    settings: SessionSettings, on_statement: Callable[[str, Any, bool], None] | None = None
) -> Iterator[None]:
    """While the block runs, every new PostgreSQL connection this thread opens to
    `settings.database` carries the settings; `on_statement(sql, parameters, autocommit)` sees
    each statement, and index builds / validations get the long statement timeout."""
    thread = threading.get_ident()

    def add_settings(dialect, conn_rec, cargs, cparams):
        if threading.get_ident() != thread or dialect.name != "postgresql":
            return
        if not _targets(settings.database, cparams):
            return
        if dialect.driver == "asyncpg":
            cparams["server_settings"] = {
                **(cparams.get("server_settings") or {}),
                **settings.server_settings(),
            }
        else:
            existing = cparams.get("options", "")
            cparams["options"] = f"{existing} {settings.libpq_options()}".strip()
            cparams["application_name"] = settings.application_name

    def ours(conn) -> bool:
        return threading.get_ident() == thread and conn.engine.url.database == settings.database

    def postgres(conn) -> bool:
        return conn.dialect.name == "postgresql"

    def before(conn, cursor, statement, parameters, context, executemany):
        if not ours(conn):
            return
        if on_statement is not None and not BOOKKEEPING.match(statement):
            autocommit = conn.get_execution_options().get("isolation_level") == "AUTOCOMMIT"
            on_statement(statement, parameters, autocommit)
        if postgres(conn) and LONG_STATEMENT.match(statement):
            cursor.execute(f"SET statement_timeout = {int(settings.long_statement_timeout_ms)}")

    def after(conn, cursor, statement, parameters, context, executemany):
        if ours(conn) and postgres(conn) and LONG_STATEMENT.match(statement):
            cursor.execute(f"SET statement_timeout = {int(settings.statement_timeout_ms)}")

    listeners = [
        ("do_connect", add_settings),
        ("before_cursor_execute", before),
        ("after_cursor_execute", after),
    ]
    for name, listener in listeners:
        event.listen(Engine, name, listener)
    try:
        yield
    finally:
        for name, listener in listeners:
            event.remove(Engine, name, listener)
