"""DDL that never queues behind a long transaction.

A statement that needs a strong lock (most ALTER TABLE forms need ACCESS EXCLUSIVE) and finds
it held joins PostgreSQL's lock queue, and every later read and write of the table queues
behind it - for as long as its `lock_timeout`, on each attempt. So before such a statement the
guard looks in `pg_locks` for sessions holding a conflicting lock on its relations and, while
there is one, waits *outside* the queue (polling on the runner's control connection), naming
the blocking pid, its application and the age of its transaction. Only when nobody holds a
conflicting lock (or the bound `max_lock_wait_s` has passed) does the statement run, with the
runner's short `lock_timeout` (default 50 ms) and jittered retries for the rare race.

If the migration's own transaction already holds strong locks from earlier statements,
waiting in place would stall readers of those tables; the guard then aborts the attempt with
a retryable error, and the retry waits for the holders before its first statement.

Opt-in `cancel_blockers_after_s`: a blocker that is *idle in transaction* (a leaked
transaction, holding locks while doing nothing) is ended after that long with
`pg_terminate_backend` - `pg_cancel_backend` does nothing to a session that runs no query
(PostgreSQL ignores a cancel while it reads the next command). Active blockers are never
touched. Each one ended is logged and reported to `blocker_reporter` (the ledger).
"""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import event, text
from sqlalchemy.engine import Connection, Engine

from release_pipelines.resources.migration_safety import MigrationError

# PostgreSQL's table-level lock conflict matrix (docs: "Conflicting Lock Modes").
_ORDER = (
    "AccessShareLock",
    "RowShareLock",
    "RowExclusiveLock",
    "ShareUpdateExclusiveLock",
    "ShareLock",
    "ShareRowExclusiveLock",
    "ExclusiveLock",
    "AccessExclusiveLock",
)
_CONFLICT_ROWS = (
    "       X",
    "      XX",
    "    XXXX",
    "   XXXXX",
    "  XX XXX",
    "  XXXXXX",
    " XXXXXXX",
    "XXXXXXXX",
)
CONFLICTS: dict[str, tuple[str, ...]] = {
    mode: tuple(other for other, mark in zip(_ORDER, row) if mark == "X")
    for mode, row in zip(_ORDER, _CONFLICT_ROWS)
}
# Modes that block the application's reads or writes while queued: these get the guard.
STRONG = ("ShareLock", "ShareRowExclusiveLock", "ExclusiveLock", "AccessExclusiveLock")
SQLSTATE_LOCK_NOT_AVAILABLE = "55P03"

_NAME = r'(?:"[^"]+"|[A-Za-z_][\w$]*)(?:\s*\.\s*(?:"[^"]+"|[A-Za-z_][\w$]*))?'
_NAMES = rf"{_NAME}(?:\s*,\s*{_NAME})*"
_RULES: tuple[tuple[re.Pattern[str], str], ...] = tuple(
    (re.compile(pattern, re.IGNORECASE | re.DOTALL), mode)
    for pattern, mode in (
        (rf"^\s*ALTER\s+TABLE\s+(?:IF\s+EXISTS\s+)?(?:ONLY\s+)?(?P<names>{_NAME})\s+ADD\s+CONSTRAINT\s+\S+\s+FOREIGN\s+KEY\b", "ShareRowExclusiveLock"),
        (rf"^\s*ALTER\s+TABLE\s+(?:IF\s+EXISTS\s+)?(?:ONLY\s+)?(?P<names>{_NAME})\s+VALIDATE\s+CONSTRAINT\b", ""),
        (rf"^\s*ALTER\s+TABLE\s+(?:IF\s+EXISTS\s+)?(?:ONLY\s+)?(?P<names>{_NAME})", "AccessExclusiveLock"),
        (rf"^\s*DROP\s+TABLE\s+(?:IF\s+EXISTS\s+)?(?P<names>{_NAMES})", "AccessExclusiveLock"),
        (rf"^\s*TRUNCATE\s+(?:TABLE\s+)?(?:ONLY\s+)?(?P<names>{_NAMES})", "AccessExclusiveLock"),
        (rf"^\s*CREATE\s+(?:UNIQUE\s+)?INDEX\s+(?!CONCURRENTLY\b)(?:IF\s+NOT\s+EXISTS\s+)?(?:{_NAME}\s+)?ON\s+(?:ONLY\s+)?(?P<names>{_NAME})", "ShareLock"),
        (rf"^\s*DROP\s+INDEX\s+(?!CONCURRENTLY\b)(?:IF\s+EXISTS\s+)?(?P<names>{_NAMES})", "AccessExclusiveLock"),
        (rf"^\s*CREATE\s+(?:OR\s+REPLACE\s+)?(?:CONSTRAINT\s+)?TRIGGER\s+.*?\bON\s+(?P<names>{_NAME})", "ShareRowExclusiveLock"),
        (rf"^\s*LOCK\s+(?:TABLE\s+)?(?:ONLY\s+)?(?P<names>{_NAMES})(?!.*\bIN\b)", "AccessExclusiveLock"),
        (rf"^\s*(?:CLUSTER|VACUUM\s*\(?\s*FULL\b[^)]*\)?)\s+(?:VERBOSE\s+)?(?P<names>{_NAME})", "AccessExclusiveLock"),
    )
)
_LOCK_IN_MODE = re.compile(rf"^\s*LOCK\s+(?:TABLE\s+)?(?:ONLY\s+)?(?P<names>{_NAMES})\s+IN\s+(?P<mode>[A-Z ]+?)\s+MODE", re.IGNORECASE | re.DOTALL)
_REFERENCES = re.compile(rf"\bREFERENCES\s+(?P<name>{_NAME})", re.IGNORECASE)

blocker_reporter: ContextVar[Callable[[dict[str, Any]], None] | None] = ContextVar(
    "blocker_reporter", default=None
)
"""Who records a blocker ended by `cancel_blockers_after_s` (the migrate step: the ledger)."""


class WaitOutsideQueue(MigrationError):
    """The revision's transaction holds strong locks and the next statement would queue: the
    attempt is rolled back (releasing them) and retried after the holders are gone. Carries
    PostgreSQL's lock_not_available SQLSTATE so the runner retries it like a lock timeout."""

    pgcode = SQLSTATE_LOCK_NOT_AVAILABLE


@dataclass(frozen=True)
class LockNeed:
    """A lock a statement will ask for: `mode` on each relation in `relations` (as written)."""

    mode: str
    relations: tuple[str, ...]


def lock_needs(statement: str) -> list[LockNeed]:
    """The strong table locks a statement takes, read from its text (pure; weak locks and
    statements it does not know return nothing)."""
    needs: list[LockNeed] = []
    locked = _LOCK_IN_MODE.match(statement)
    if locked:
        mode = "".join(w.capitalize() for w in locked["mode"].split()) + "Lock"
        needs.append(LockNeed(mode, _split(locked["names"])))
    else:
        for pattern, mode in _RULES:
            match = pattern.match(statement)
            if match:
                if mode:
                    needs.append(LockNeed(mode, _split(match["names"])))
                break
    if re.match(r"^\s*(ALTER|CREATE)\s+TABLE\b", statement, re.IGNORECASE):
        referenced = tuple(m["name"] for m in _REFERENCES.finditer(statement))
        if referenced:
            needs.append(LockNeed("ShareRowExclusiveLock", referenced))
    return [n for n in needs if n.mode in STRONG]


def _split(names: str) -> tuple[str, ...]:
    return tuple(n.strip() for n in re.findall(_NAME, names))


@dataclass(frozen=True)
class LockWaitSettings:
    """How long DDL waits outside the lock queue, and whether it may end idle blockers."""

    max_lock_wait_s: float = 60.0
    cancel_blockers_after_s: float | None = None
    poll_s: float = 0.05
    report_every_s: float = 5.0


@dataclass(frozen=True)
class Holder:
    """A session holding a lock the next statement would conflict with."""

    pid: int | None
    mode: str
    relation: str
    state: str
    application_name: str
    transaction_age_s: float
    query: str

    @property
    def idle_in_transaction(self) -> bool:
        return self.state.startswith("idle in transaction")

    def describe(self) -> str:
        who = f"pid {self.pid}" if self.pid is not None else "a prepared transaction"
        app = f" [{self.application_name}]" if self.application_name else ""
        query = " ".join(self.query.split())[:120]
        return (
            f"{who}{app} holds {self.mode} on {self.relation}, {self.state or 'unknown state'}, "
            f"transaction open {self.transaction_age_s:.1f} s (last query: {query!r})"
        )


_HOLDERS = (
    "SELECT l.pid, l.mode, l.relation::regclass::text, coalesce(a.state, ''),"
    " coalesce(a.application_name, ''),"
    " coalesce(extract(epoch FROM clock_timestamp() - a.xact_start), 0)::float8,"
    " coalesce(a.query, '')"
    " FROM pg_catalog.pg_locks l LEFT JOIN pg_catalog.pg_stat_activity a ON a.pid = l.pid"
    " WHERE l.locktype = 'relation' AND l.granted"
    " AND l.database = (SELECT oid FROM pg_catalog.pg_database WHERE datname = current_database())"
    " AND (l.pid IS NULL OR (l.pid <> pg_backend_pid() AND l.pid <> ALL(:own)))"
    " AND ({conditions}) ORDER BY a.xact_start NULLS FIRST"
)
_RESOLVE = (
    "SELECT c.oid::int8, i.indrelid::int8 FROM pg_catalog.pg_class c"
    " LEFT JOIN pg_catalog.pg_index i ON i.indexrelid = c.oid WHERE c.oid = to_regclass(:name)"
)
_OWN_STRONG = (
    "SELECT count(*) FROM pg_catalog.pg_locks WHERE pid = :pid AND granted"
    " AND locktype = 'relation' AND mode = ANY(:strong)"
)
_END_IF_IDLE = (
    "SELECT pg_catalog.pg_terminate_backend(pid) FROM pg_catalog.pg_stat_activity"
    " WHERE pid = :pid AND state LIKE 'idle in transaction%'"
)


@dataclass
class LockQueueGuard:
    """One revision's guard: waits before strong-lock statements, bounded per revision."""

    control: Connection
    settings: LockWaitSettings
    log: Callable[[str], None]
    waited_s: float = 0.0
    ended: list[Holder] = field(default_factory=list)
    _pending: list[LockNeed] = field(default_factory=list)

    @contextmanager
    def watching(self) -> Iterator[LockQueueGuard]:
        """While the block runs, statements this thread sends to the control connection's
        database pass `before_statement` first."""
        thread = threading.get_ident()
        database = self.control.engine.url.database

        def before(conn, cursor, statement, parameters, context, executemany):
            if (
                threading.get_ident() == thread
                and conn.dialect.name == "postgresql"
                and conn.engine.url.database == database
                and conn is not self.control
            ):
                self.before_statement(cursor, statement)

        event.listen(Engine, "before_cursor_execute", before)
        try:
            yield self
        finally:
            event.remove(Engine, "before_cursor_execute", before)

    def before_statement(self, cursor: Any, statement: str) -> None:
        """Wait outside the lock queue while another session holds a conflicting lock."""
        own = _backend_pid(cursor)
        if self._pending and not self._holds_strong_locks(own):
            pending, self._pending = self._pending, []
            self._wait(pending, own, "the retried revision")
        needs = lock_needs(statement)
        if not needs or self._remaining_s() <= 0:
            return
        if not self._holders(needs, own):
            return
        label = " ".join(statement.split())[:80]
        if self._holds_strong_locks(own):
            self._pending = needs
            raise WaitOutsideQueue(
                f"`{label}` would queue behind another session while this revision's transaction "
                "holds strong locks; rolled back to wait for it outside the lock queue"
            )
        self._wait(needs, own, f"`{label}`")

    def _remaining_s(self) -> float:
        return self.settings.max_lock_wait_s - self.waited_s

    def _wait(self, needs: list[LockNeed], own: int, label: str) -> None:
        started = time.monotonic()
        reported_at = -self.settings.report_every_s
        seen: set[int | None] = set()
        while True:
            elapsed = time.monotonic() - started
            holders = self._holders(needs, own)
            if not holders:
                if seen:
                    self.log(
                        f"{label}: no conflicting lock held any more after {elapsed:.2f} s outside "
                        "the lock queue; running it"
                    )
                break
            if elapsed >= self._remaining_s():
                self.log(
                    f"{label}: still blocked after waiting {self.settings.max_lock_wait_s:g} s "
                    f"outside the lock queue ({holders[0].describe()}); trying with the short "
                    "lock_timeout and retries"
                )
                break
            new = [h for h in holders if h.pid not in seen]
            if new or elapsed - reported_at >= self.settings.report_every_s:
                reported_at = elapsed
                self.log(
                    f"{label} waits outside the lock queue (reads and writes go on): "
                    + "; ".join(h.describe() for h in holders)
                    + f"; waited {elapsed:.1f} s of at most {self._remaining_s():.0f} s"
                )
            seen.update(h.pid for h in holders)
            self._end_idle_blockers(holders, elapsed)
            time.sleep(self.settings.poll_s)
        self.waited_s += time.monotonic() - started

    def _end_idle_blockers(self, holders: list[Holder], elapsed_s: float) -> None:
        after = self.settings.cancel_blockers_after_s
        if after is None or elapsed_s < after:
            return
        for holder in holders:
            if holder.pid is None or not holder.idle_in_transaction:
                continue  # active sessions are never touched
            ended = self.control.execute(text(_END_IF_IDLE), {"pid": holder.pid}).scalar()
            if not ended:
                continue
            self.ended.append(holder)
            self.log(
                f"ended blocker {holder.describe()} with pg_terminate_backend after waiting "
                f"{elapsed_s:.1f} s (cancel_blockers_after_s {after:g}; it was idle in transaction)"
            )
            if (reporter := blocker_reporter.get()) is not None:
                reporter(
                    {
                        "pid": holder.pid,
                        "application_name": holder.application_name,
                        "state": holder.state,
                        "relation": holder.relation,
                        "mode": holder.mode,
                        "transaction_age_s": round(holder.transaction_age_s, 3),
                        "query": holder.query[:500],
                        "waited_s": round(elapsed_s, 3),
                    }
                )

    def _holders(self, needs: list[LockNeed], own: int) -> list[Holder]:
        conditions, params = [], {"own": [own]}
        for i, need in enumerate(needs):
            oids = self._resolve(need.relations)
            if oids:
                conditions.append(
                    f"(l.relation = ANY(CAST(:rel{i} AS oid[])) AND l.mode = ANY(:modes{i}))"
                )
                params[f"rel{i}"] = oids
                params[f"modes{i}"] = list(CONFLICTS[need.mode])
        if not conditions:
            return []  # relations that do not exist yet: nobody can hold them
        sql = _HOLDERS.format(conditions=" OR ".join(conditions))
        return [Holder(*row) for row in self.control.execute(text(sql), params)]

    def _resolve(self, names: tuple[str, ...]) -> list[int]:
        """Relation OIDs of the names; an index brings its table (DROP INDEX locks both)."""
        oids: list[int] = []
        for name in names:
            row = self.control.execute(text(_RESOLVE), {"name": name}).first()
            if row is not None:
                oids.extend(oid for oid in row if oid is not None)
        return oids

    def _holds_strong_locks(self, own: int) -> bool:
        return bool(
            self.control.execute(text(_OWN_STRONG), {"pid": own, "strong": list(STRONG)}).scalar()
        )


def _backend_pid(cursor: Any) -> int:
    pid = getattr(getattr(cursor, "connection", None), "get_backend_pid", None)  # asyncpg: none
    if pid is not None:
        return int(pid())
    cursor.execute("SELECT pg_backend_pid()")
    return int(cursor.fetchone()[0])
