"""Shadow-database lint: apply revisions to a throwaway database and watch what they do.

A scratch database is created on a PostgreSQL server (from template0), the history is replayed
into it up to the live database's current revision (structure only, or plus a sample of rows per
table), then the revisions under review run one by one. Every statement is captured through
SQLAlchemy's cursor events; for each we record the relation locks its own backend holds that it
did not hold before (`pg_locks`, read on the same connection while the transaction is still
open) and which tables got new storage (`pg_class.relfilenode` changed: a rewrite). Statements
outside a transaction (CONCURRENTLY) are watched from a second connection while they run; a third
holds an open snapshot so the concurrent build waits, observably, in its last phase.
The scratch database is dropped in every case: success, failure, Ctrl-C.
"""

from __future__ import annotations

import re
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from alembic.runtime.environment import EnvironmentContext
from alembic.runtime.migration import MigrationContext
from sqlalchemy import MetaData, Table, create_engine, event, insert, inspect, select, text
from sqlalchemy.engine import Connection, Engine, make_url
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.pool import NullPool

from release_pipelines.core.linter import (
    Finding,
    ObservedStatement,
    RevisionSQL,
    lint_observed,
    lint_revisions,
)
from release_pipelines.resources.alembic_config import (
    AlembicProject,
    make_config,
    preserved_logging,
    version_table_options,
)
from release_pipelines.resources.database_url import normalize_url, redact
from release_pipelines.resources.migration_safety import ALEMBIC_LOCK, MigrationError
from release_pipelines.resources.migration_session import BOOKKEEPING
from release_pipelines.resources.migrations import (
    RevisionInfo,
    ancestors,
    failure_summary,
    script_directory,
)

SCRATCH_PREFIX = "release_shadow_"
_VERSION_TABLE = re.compile(r"\balembic_version\b", re.IGNORECASE)
_USER_RELATIONS = (
    "FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace"
    " WHERE n.nspname NOT IN ('pg_catalog', 'information_schema') AND n.nspname NOT LIKE 'pg_toast%%'"
)
_LOCKS = (
    "SELECT c.oid, n.nspname, c.relname, l.mode FROM pg_locks l"
    " JOIN pg_class c ON c.oid = l.relation JOIN pg_namespace n ON n.oid = c.relnamespace"
    " WHERE l.pid = %s AND l.granted AND l.locktype = 'relation'"
    " AND n.nspname NOT IN ('pg_catalog', 'information_schema') AND n.nspname NOT LIKE 'pg_toast%%'"
)
_WAITING_ON_SNAPSHOT = "SELECT 1 FROM pg_locks WHERE pid = %s AND NOT granted AND locktype IN ('virtualxid', 'transactionid')"


@dataclass
class ShadowOutcome:
    linted: list[str] = field(default_factory=list)
    failures: dict[str, str] = field(default_factory=dict)
    findings: list[Finding] = field(default_factory=list)
    observations: list[ObservedStatement] = field(default_factory=list)


@contextmanager
def scratch_database(server_url: str) -> Iterator[str]:
    """A new, empty database on the server of `server_url`; dropped on the way out, always."""
    server_url = normalize_url(server_url)
    if make_url(server_url).get_backend_name() != "postgresql":
        raise MigrationError(f"--shadow needs a PostgreSQL server, not {redact(server_url)}")
    name = f"{SCRATCH_PREFIX}{uuid.uuid4().hex[:12]}"
    admin = create_engine(server_url, isolation_level="AUTOCOMMIT", poolclass=NullPool)
    try:
        with admin.connect() as conn:
            conn.exec_driver_sql(f'CREATE DATABASE "{name}" TEMPLATE template0')
    except SQLAlchemyError as exc:
        admin.dispose()
        detail = str(getattr(exc, "orig", None) or exc).strip().splitlines()[0]
        raise MigrationError(
            f"cannot create a shadow database on {redact(server_url)}: {detail}; the role needs "
            "CREATEDB (or give --shadow URL of a server where it has it)"
        ) from None
    try:
        yield make_url(server_url).set(database=name).render_as_string(hide_password=False)
    finally:
        with admin.connect() as conn:
            conn.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.dispose()


class _Observer:
    """Per statement: new relation locks of this backend, and rewritten tables."""

    def __init__(self, engine: Engine, url: str):
        self.url = url
        self.existing: set[int] = set()
        self.revision: str | None = None
        self.statements: list[ObservedStatement] = []
        self._before: tuple[set, dict] | None = None
        self._watch: _AutocommitWatch | None = None
        event.listen(engine, "before_cursor_execute", self.before)
        event.listen(engine, "after_cursor_execute", self.after)
        event.listen(engine, "handle_error", self.failed)

    @staticmethod
    def _query(cursor: Any, sql: str, *params: Any) -> list[tuple]:
        probe = cursor.connection.cursor()
        try:
            probe.execute(sql, params)
            return probe.fetchall()
        finally:
            probe.close()

    def _state(self, cursor: Any) -> tuple[set, dict]:
        pid = self._query(cursor, "SELECT pg_backend_pid()")[0][0]
        locks = {
            (oid, f"{schema}.{name}", mode)
            for oid, schema, name, mode in self._query(cursor, _LOCKS, pid)
        }
        files = {
            oid: (f"{schema}.{name}", node)
            for oid, schema, name, node in self._query(
                cursor,
                f"SELECT c.oid, n.nspname, c.relname, c.relfilenode {_USER_RELATIONS} AND c.relkind IN ('r', 'm')",
            )
        }
        return locks, files

    def start_revision(self, connection: Connection, revision: str | None) -> None:
        self.revision = revision
        self.existing = {
            oid for (oid,) in connection.exec_driver_sql(f"SELECT c.oid {_USER_RELATIONS}")
        }
        if connection.in_transaction():
            connection.commit()

    def before(self, conn, cursor, statement, parameters, context, executemany):
        if (
            self.revision is None
            or BOOKKEEPING.match(statement)
            or _VERSION_TABLE.search(statement)
        ):
            return
        self._before = self._state(cursor)
        if conn.get_execution_options().get("isolation_level") == "AUTOCOMMIT":
            pid = self._query(cursor, "SELECT pg_backend_pid()")[0][0]
            self._watch = _AutocommitWatch(self.url, pid)
            self._watch.start()

    def after(self, conn, cursor, statement, parameters, context, executemany):
        if self.revision is None or self._before is None:
            return
        locks_before, files_before = self._before
        self._before = None
        locks, files = self._state(cursor)
        autocommit = self._watch is not None
        if self._watch is not None:
            locks = locks | self._watch.stop()
            self._watch = None
        taken = sorted(
            {(name, mode) for oid, name, mode in locks - locks_before if oid in self.existing}
        )
        rewritten = sorted(
            name
            for oid, (name, node) in files_before.items()
            if oid in self.existing and oid in files and files[oid][1] != node
        )
        sql = cursor.mogrify(statement, parameters).decode() if parameters else statement
        self.statements.append(
            ObservedStatement(
                self.revision, sql.strip(), tuple(taken), tuple(rewritten), autocommit
            )
        )

    def failed(self, context) -> None:
        self._before = None
        if self._watch is not None:
            self._watch.stop()
            self._watch = None


class _AutocommitWatch(threading.Thread):
    """Polls the locks of a backend running a statement outside a transaction; an open snapshot
    on a second connection makes CONCURRENTLY builds wait (holding their lock) until seen."""

    def __init__(self, url: str, pid: int):
        super().__init__(daemon=True)
        self.engine = create_engine(url, isolation_level="AUTOCOMMIT", poolclass=NullPool)
        self.pid = pid
        self.seen: set[tuple[int, str, str]] = set()
        self._done = threading.Event()
        self._releasing = threading.Lock()  # the watcher and `stop` may both release the snapshot
        self._holder = self.engine.raw_connection()
        self._holder.autocommit = False
        with self._holder.cursor() as cur:  # a snapshot: WaitForOlderSnapshots waits for it
            cur.execute("BEGIN ISOLATION LEVEL REPEATABLE READ")
            cur.execute("SELECT 1")

    def run(self) -> None:
        watcher = self.engine.raw_connection()
        try:
            with watcher.cursor() as cur:
                while not self._done.is_set():
                    cur.execute(_LOCKS, (self.pid,))
                    self.seen |= {(oid, f"{s}.{n}", mode) for oid, s, n, mode in cur.fetchall()}
                    cur.execute(_WAITING_ON_SNAPSHOT, (self.pid,))
                    if cur.fetchall() and self.seen:
                        self._release()
                    time.sleep(0.002)
        finally:
            watcher.close()

    def _release(self) -> None:
        with self._releasing:
            if self._holder is not None:
                self._holder.rollback()
                self._holder.close()
                self._holder = None

    def stop(self) -> set[tuple[int, str, str]]:
        self._done.set()
        self._release()
        self.join(timeout=5)
        self.engine.dispose()
        return self.seen


def _apply(
    project: AlembicProject, scripts, connection: Connection, revision: str, stamp: bool = False
) -> None:
    """Upgrade the shadow database to one revision (or only record it as applied: `stamp`) in an
    Alembic environment of our own."""
    config = make_config(project)

    def steps(rev, context):
        if stamp:
            return scripts._stamp_revs(revision, rev)
        return scripts._upgrade_revs(revision, rev)

    with (
        ALEMBIC_LOCK,
        preserved_logging(),
        EnvironmentContext(config, scripts, fn=steps, destination_rev=revision) as env,
    ):
        env.configure(
            connection=connection,
            transaction_per_migration=True,
            **version_table_options(config),
        )
        with env.begin_transaction():
            env.run_migrations(**({"engine_name": project.engine} if project.engine else {}))
    if connection.in_transaction():
        connection.commit()


def _copy_sample(live_url: str, shadow: Connection, rows: int, versions: dict[str, str]) -> None:
    """Up to `rows` rows of each table from the live database (triggers and FKs off if allowed);
    not Alembic's version table: the shadow database keeps the revision it was replayed to."""
    version_table = versions.get("version_table", "alembic_version")
    versions_here = versions.get("version_table_schema") in (None, "public")
    live = create_engine(normalize_url(live_url), poolclass=NullPool)
    try:
        with live.connect() as source:
            try:
                shadow.exec_driver_sql("SET session_replication_role = replica")
            except SQLAlchemyError:
                shadow.rollback()
            for name in inspect(shadow).get_table_names():
                if name == version_table and versions_here:
                    continue
                table = Table(name, MetaData(), autoload_with=shadow)
                try:
                    sample = source.execute(select(table).limit(rows)).mappings().all()
                except SQLAlchemyError:
                    source.rollback()
                    continue
                if sample:
                    shadow.execute(insert(table), [dict(r) for r in sample])
            shadow.commit()
    finally:
        live.dispose()


def _live_heads(live_url: str, config) -> list[str]:
    engine = create_engine(normalize_url(live_url), poolclass=NullPool)
    try:
        with engine.connect() as conn:
            return list(
                MigrationContext.configure(
                    conn, opts=version_table_options(config)
                ).get_current_heads()
            )
    finally:
        engine.dispose()


def shadow_lint(
    project: AlembicProject,
    infos: list[RevisionInfo],
    wanted: list[str],
    server_url: str,
    live_url: str | None = None,
    sample_rows: int = 0,
) -> ShadowOutcome:
    """Apply the history to a scratch database and lint the `wanted` revisions as they ran."""
    outcome = ShadowOutcome()
    if not wanted:
        return outcome
    scripts = script_directory(project)
    by_id = {i.revision: i for i in infos}
    last = max(infos.index(by_id[w]) for w in wanted)
    applied_live = ancestors(by_id, _live_heads(live_url, make_config(project)) if live_url else [])
    with scratch_database(server_url) as url:
        engine = create_engine(
            url, poolclass=NullPool, connect_args={"options": "-c statement_timeout=300000"}
        )
        observer = _Observer(engine, url)

        def apply_revisions() -> None:
            with engine.connect() as conn:
                # wanted revisions the live database already has are watched in the replay
                # (structure only: the sample is copied after it)
                replayed = [i for i in infos if i.revision in applied_live]
                _run(project, scripts, conn, observer, replayed, set(wanted), outcome)
                if live_url and sample_rows:
                    _copy_sample(
                        live_url, conn, sample_rows, version_table_options(make_config(project))
                    )
                todo = [i for i in infos[: last + 1] if i.revision not in applied_live]
                _run(project, scripts, conn, observer, todo, set(wanted), outcome)

        try:
            _interruptible(apply_revisions, server_url, url)
        finally:
            engine.dispose()
    suppress = {i.revision: i.lint_suppress for i in infos}
    statements = [s for s in observer.statements if s.revision in outcome.linted]
    outcome.observations = statements
    outcome.findings = lint_revisions(
        RevisionSQL(
            r, _as_sql([s for s in statements if s.revision == r]), by_id[r].phase, suppress[r]
        )
        for r in outcome.linted
    ) + lint_observed(statements, suppress)
    return outcome


def _run(project, scripts, conn, observer, infos, watched, outcome) -> None:
    """Apply revisions in order. One that fails is reported with its error and stamped (marked
    applied without running), so the revisions after it are still linted."""
    for info in infos:
        observer.start_revision(conn, info.revision if info.revision in watched else None)
        try:
            _apply(project, scripts, conn, info.revision)
        except Exception as exc:  # noqa: BLE001 - the revision's own error, reported as its cause
            if conn.in_transaction():
                conn.rollback()
            outcome.failures[info.revision] = (
                f"failed in the shadow database: {failure_summary(exc, project)}"
            )
            _apply(project, scripts, conn, info.revision, stamp=True)
            continue
        finally:
            observer.revision = None
        if info.revision in watched:
            outcome.linted.append(info.revision)


def _interruptible(work: Callable[[], None], server_url: str, scratch_url: str) -> None:
    """Run `work` in a thread of its own. psycopg2 keeps the calling thread inside C until the
    statement in flight returns, so Ctrl-C would wait for a long revision to end (up to the
    statement timeout); here the interrupt reaches the caller at once, the scratch database's
    sessions are ended so the worker stops, and the interrupt goes on to the drop."""
    failure: list[BaseException] = []

    def run() -> None:
        try:
            work()
        except BaseException as exc:  # noqa: BLE001 - raised again in the calling thread
            failure.append(exc)

    worker = threading.Thread(target=run, name="shadow-lint", daemon=True)
    worker.start()
    try:
        while worker.is_alive():
            worker.join(0.1)
    except BaseException:
        _end_sessions(server_url, make_url(scratch_url).database)
        worker.join(timeout=30)
        raise
    if failure:
        raise failure[0]


def _end_sessions(server_url: str, database: str | None) -> None:
    admin = create_engine(
        normalize_url(server_url), isolation_level="AUTOCOMMIT", poolclass=NullPool
    )
    try:
        with admin.connect() as conn:
            conn.execute(
                text(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
                    " WHERE datname = :name AND pid <> pg_backend_pid()"
                ),
                {"name": database},
            )
    finally:
        admin.dispose()


def _as_sql(statements: list[ObservedStatement]) -> str:
    """Captured statements as SQL text, with BEGIN/COMMIT where the transaction really was."""
    parts, in_transaction = [], False
    for s in statements:
        if not s.autocommit and not in_transaction:
            parts.append("BEGIN;")
            in_transaction = True
        elif s.autocommit and in_transaction:
            parts.append("COMMIT;")
            in_transaction = False
        parts.append(s.statement.rstrip().rstrip(";") + ";")
    if in_transaction:
        parts.append("COMMIT;")
    return "\n".join(parts)
