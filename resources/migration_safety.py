"""What keeps a migration from taking a live PostgreSQL down: one runner per database, a look
at the live sessions before starting, and retries when a lock cannot be had quickly.

The facts behind each choice are in the brief (docs: postgres-safety): a SESSION advisory lock
(a transaction-scoped one would deadlock CREATE INDEX CONCURRENTLY), `lock_timeout` with
bounded, jittered retries on SQLSTATE 55P03, and INVALID indexes dropped after a failed build.
"""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from sqlalchemy import text
from sqlalchemy.engine import Connection

from release_pipelines.core.errors import ReleaseError

# pg_try_advisory_lock(int4, int4): shows in pg_locks as classid/objid with objsubid = 2.
LOCK_CLASS = 0x52454C  # "REL"
LOCK_OBJECT = 1  # schema migrations
RETRYABLE_SQLSTATES = {"55P03": "lock_not_available", "40P01": "deadlock_detected"}
# Alembic's `op` and `context` are module-level proxies: two commands running at once in one process
# (two products released from threads, a linter beside a migration) swap each other's connection.
ALEMBIC_LOCK = threading.RLock()


class MigrationError(ReleaseError):
    """A migration was refused or failed; the message says which revision and what to do."""


class MigrationLockBusy(MigrationError):
    """Another runner holds the per-database migration lock."""


class PrecheckFailed(MigrationError):
    """The live database is not in a state where DDL can run without queueing traffic."""


@dataclass(frozen=True)
class Session:
    """One other backend, as shown to the operator when it blocks a migration."""

    pid: int
    state: str
    age_s: float
    query: str
    application_name: str = ""
    tables: tuple[str, ...] = ()

    def describe(self) -> str:
        held = f", holds locks on {', '.join(self.tables)}" if self.tables else ""
        app = f" [{self.application_name}]" if self.application_name else ""
        query = " ".join(self.query.split())[:160]
        return f"pid {self.pid}{app} ({self.state} for {self.age_s:.1f} s{held}; last query: {query!r})"


def sqlstate(exc: BaseException) -> str | None:
    """The PostgreSQL SQLSTATE behind a SQLAlchemy/Alembic exception chain, if any."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        code = getattr(getattr(current, "orig", None), "pgcode", None) or getattr(
            current, "pgcode", None
        )
        if code:
            return code
        current = current.__cause__ or current.__context__
    return None


def is_retryable(exc: BaseException) -> bool:
    return sqlstate(exc) in RETRYABLE_SQLSTATES


def backoff_delay(attempt: int, base_s: float, max_s: float, rng: random.Random) -> float:
    """Exponential backoff with jitter: attempt 0 waits about base_s, doubling up to max_s."""
    return min(max_s, base_s * 2**attempt) * rng.uniform(0.5, 1.0)


@contextmanager
def advisory_lock(
    control: Connection, database: str, wait_s: float, poll_s: float = 0.2
) -> Iterator[None]:
    """Hold the per-database migration lock on `control`, a dedicated AUTOCOMMIT connection.

    Session-scoped so it survives the commits CREATE INDEX CONCURRENTLY needs, and is released
    by the server if this process dies.
    """
    params = {"c": LOCK_CLASS, "o": LOCK_OBJECT}
    deadline = time.monotonic() + wait_s
    while not control.execute(text("SELECT pg_try_advisory_lock(:c, :o)"), params).scalar_one():
        if time.monotonic() >= deadline:
            holder = control.execute(
                text(
                    "SELECT pid FROM pg_locks WHERE locktype = 'advisory' AND granted"
                    " AND classid = :c AND objid = :o AND objsubid = 2"
                    " AND database = (SELECT oid FROM pg_database WHERE datname = current_database())"
                ),
                params,
            ).scalar()
            raise MigrationLockBusy(
                f"another migration runner holds the lock on {database} (pid {holder}); "
                f"waited {wait_s:.1f} s. Let it finish (see pg_stat_activity for pid {holder}) "
                "and run again, or raise the lock wait."
            )
        time.sleep(poll_s)
    try:
        yield
    finally:
        control.execute(text("SELECT pg_advisory_unlock(:c, :o)"), params)


_SESSION_COLUMNS = (
    "a.pid, coalesce(a.state, ''), extract(epoch FROM now() - a.xact_start)::float8,"
    " coalesce(a.query, ''), coalesce(a.application_name, '')"
)


def long_transactions(conn: Connection, older_than_s: float) -> list[Session]:
    """Client sessions of this database with a transaction open longer than `older_than_s`."""
    rows = conn.execute(
        text(
            f"SELECT {_SESSION_COLUMNS} FROM pg_stat_activity a"
            " WHERE a.datname = current_database() AND a.backend_type = 'client backend'"
            " AND a.xact_start < now() - make_interval(secs => :age)"
            " AND a.pid <> pg_backend_pid()"
            " ORDER BY a.xact_start"
        ),
        {"age": older_than_s},
    )
    return [Session(*row) for row in rows]


def lock_holders(conn: Connection) -> list[Session]:
    """Other sessions holding locks on user tables: who a timed-out DDL statement waited behind."""
    rows = conn.execute(
        text(
            f"SELECT {_SESSION_COLUMNS}, array_agg(DISTINCT c.relname ORDER BY c.relname)"
            " FROM pg_locks l JOIN pg_class c ON c.oid = l.relation"
            " JOIN pg_namespace n ON n.oid = c.relnamespace"
            " JOIN pg_stat_activity a ON a.pid = l.pid"
            " WHERE l.granted AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database())"
            " AND n.nspname NOT IN ('pg_catalog', 'information_schema') AND c.relkind IN ('r', 'p')"
            " AND a.pid <> pg_backend_pid()"
            " GROUP BY a.pid, a.state, a.xact_start, a.query, a.application_name"
            " ORDER BY a.xact_start NULLS LAST"
        )
    )
    return [
        Session(pid, state, age or 0.0, query, app, tuple(tables))
        for pid, state, age, query, app, tables in rows
    ]


def invalid_indexes(conn: Connection) -> set[str]:
    """Indexes left INVALID by a failed CREATE INDEX CONCURRENTLY, as schema-qualified names."""
    rows = conn.execute(
        text(
            "SELECT format('%I.%I', n.nspname, c.relname) FROM pg_index i"
            " JOIN pg_class c ON c.oid = i.indexrelid JOIN pg_namespace n ON n.oid = c.relnamespace"
            " WHERE NOT i.indisvalid"
        )
    )
    return {row[0] for row in rows}


def drop_invalid_indexes(control: Connection, names: set[str]) -> set[str]:
    """Drop INVALID indexes concurrently on the AUTOCOMMIT `control` connection; returns the
    names that could not be dropped yet (lock timeout: the caller retries later)."""
    left = set()
    for name in sorted(names):
        try:
            control.exec_driver_sql(f"DROP INDEX CONCURRENTLY IF EXISTS {name}")
        except Exception as exc:
            if not is_retryable(exc):
                raise
            left.add(name)
    return left


def precheck(conn: Connection, database: str, max_transaction_age_s: float) -> None:
    """Refuse to start while a long transaction or a leftover INVALID index is present."""
    problems: list[str] = []
    for session in long_transactions(conn, max_transaction_age_s):
        problems.append(
            f"transaction open longer than {max_transaction_age_s:g} s: {session.describe()}; "
            f"DDL would queue behind it and block traffic. Wait for it, or end it with "
            f"SELECT pg_terminate_backend({session.pid})"
        )
    for name in sorted(invalid_indexes(conn)):
        problems.append(
            f"INVALID index {name} (left by a failed CREATE INDEX CONCURRENTLY); "
            f"drop it with DROP INDEX CONCURRENTLY {name} before migrating"
        )
    if problems:
        raise PrecheckFailed(
            f"not migrating {database}: the live database is not ready:\n"
            + "\n".join(f"  - {p}" for p in problems)
        )
