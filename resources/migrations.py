"""Run an Alembic project's revisions as release steps, one revision at a time, safely.

Each revision is applied by its own Alembic command through the project's own env.py, unchanged
(`alembic_config` builds the Config users have). Every connection the command opens to the
database - ours in ``config.attributes["connection"]``, or one env.py makes from the URL or from
``connection.engine`` - carries `lock_timeout`, `statement_timeout` and `application_name`
(`migration_session`); a revision that cannot get its locks is rolled back and retried with
backoff (see `migration_safety` for why), under a session advisory lock held for the whole run.

Phases: every revision module declares ``phase = "expand"`` (safe while the old release runs) or
``"contract"``; ``upgrade("expand-head")`` stops before the first revision that is not expand.
"""

from __future__ import annotations

import random
import time
import traceback
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import create_engine
from sqlalchemy.engine import Connection, Engine, make_url
from sqlalchemy.exc import ArgumentError
from sqlalchemy.pool import NullPool

from release_pipelines.core.manifest import Database
from release_pipelines.core.reversibility import Reversibility, analyze_revision_source
from release_pipelines.resources.alembic_config import (
    AlembicProject,
    as_project,
    make_config,
    preserved_logging,
    project_for,
    version_table_options,
)
from release_pipelines.resources.database_url import normalize_url, redact, resolve_url
from release_pipelines.resources.lock_wait import LockQueueGuard, LockWaitSettings
from release_pipelines.resources.migration_safety import (
    ALEMBIC_LOCK,
    MigrationError,
    Session,
    advisory_lock,
    backoff_delay,
    drop_invalid_indexes,
    invalid_indexes,
    is_retryable,
    lock_holders,
    precheck,
    sqlstate,
)
from release_pipelines.resources.migration_session import (
    SessionSettings,
    applied_to_every_connection,
    connect_args,
)

Log = Callable[[str], None]
EXPAND_HEAD = "expand-head"
ASYNC_DRIVERS = ("postgresql+asyncpg://", "postgresql+psycopg_async://")


class MigrationLockTimeout(MigrationError):
    """A revision could not get its locks within its retries; names who held them."""


class MigrationFailed(MigrationError):
    """A revision failed for another reason than a lock wait; it was not retried."""


@dataclass(frozen=True)
class RevisionInfo:
    revision: str
    down_revision: str | tuple[str, ...] | None
    phase: str | None
    doc: str
    path: str
    reversible: bool
    irreversible_reason: str | None = None
    lint_suppress: Mapping[str, str] = field(default_factory=dict)

    @property
    def is_merge(self) -> bool:
        return isinstance(self.down_revision, tuple) and len(self.down_revision) > 1


@dataclass(frozen=True)
class RevisionResult:
    revision: str
    from_revision: str | None
    to_revision: str | None
    statements: list[str]
    duration_s: float
    attempts: int = 1
    # revisions of a parallel branch applied in the same command, before the merge `revision`
    with_branch: tuple[str, ...] = ()


def alembic_config(
    script_location: str | Path | AlembicProject,
    connection: Connection | None = None,
    url: str | None = None,
) -> Config:
    """The project's Config with the URL and connection in memory; never written to disk."""
    return make_config(as_project(script_location), url=url, connection=connection)


def analyze_revision_file(path: str | Path, function: str = "downgrade") -> Reversibility:
    """Whether a revision file's downgrade() does anything (read as text, never imported)."""
    return analyze_revision_source(Path(path).read_text(encoding="utf-8"), str(path), function)


def script_directory(project: AlembicProject) -> ScriptDirectory:
    """The project's scripts; a revision that cannot be imported is named with its file."""
    try:
        return ScriptDirectory.from_config(make_config(project))
    except MigrationError:
        raise
    except Exception as exc:  # noqa: BLE001 - Alembic raises many kinds while reading scripts
        raise MigrationError(
            f"cannot read the revisions of {project.describe()}: {failure_summary(exc, project)}"
        ) from None


def load_revisions(project: AlembicProject | str | Path) -> list[RevisionInfo]:
    """Every revision, base first (parents before children, also across merges)."""
    project = as_project(project)
    scripts = script_directory(project)
    downgrade = f"downgrade_{project.engine}" if project.engine else "downgrade"
    infos = []
    try:
        walked = list(scripts.walk_revisions())
    except Exception as exc:  # noqa: BLE001 - a broken down_revision chain, a cycle
        raise MigrationError(f"{project.describe()}: {failure_summary(exc, project)}") from None
    for script in reversed(walked):
        reversibility = analyze_revision_file(script.path, downgrade)
        phase = getattr(script.module, "phase", None)
        infos.append(
            RevisionInfo(
                revision=script.revision,
                down_revision=script.down_revision,
                phase=phase if phase in ("expand", "contract") else None,
                doc=script.doc,
                path=script.path,
                reversible=reversibility.reversible,
                irreversible_reason=reversibility.reason,
                lint_suppress=dict(getattr(script.module, "lint_suppress", {}) or {}),
            )
        )
    return infos


def single_head(project: AlembicProject) -> str | None:
    """A release runs one line of history: several heads are refused with the fix."""
    heads = script_directory(project).get_heads()
    if len(heads) > 1:
        raise MigrationError(
            f"{project.script_location} has {len(heads)} heads ({', '.join(sorted(heads))}): "
            "merge them with `alembic merge heads -m merge` (a merge revision) before releasing"
        )
    return heads[0] if heads else None


def failure_summary(exc: BaseException, project: AlembicProject) -> str:
    """The exception with the project file it came from: env.py or a revision, with its line."""
    text_ = _first_line(exc)
    frames = [
        f
        for f in traceback.extract_tb(exc.__traceback__)
        if str(project.script_location.resolve()) in str(Path(f.filename).resolve())
    ]
    if not frames:
        return f"{type(exc).__name__}: {text_}"
    where = frames[-1]
    name = Path(where.filename).name
    hint = ""
    if name == "env.py" and isinstance(exc, ImportError):
        hint = (
            "; env.py imports the application: install its package in this environment "
            "(or set prepend_sys_path in alembic.ini)"
        )
    elif name == "env.py":
        hint = "; fix env.py (it runs unchanged for every command)"
    return f"{name}:{where.lineno} (`{(where.line or '').strip()}`): {type(exc).__name__}: {text_}{hint}"


class MigrationRunner:
    """Applies pending revisions of one database under the safety rules of `migration_safety`."""

    def __init__(
        self,
        script_location: str | Path | AlembicProject,
        url: str,
        lock_timeout_ms: int = 50,
        statement_timeout_ms: int = 5000,
        retries: int = 10,
        application_name: str | None = None,
        *,
        long_statement_timeout_ms: int = 3_600_000,
        backoff_base_s: float = 0.1,
        backoff_max_s: float = 60.0,
        lock_wait_s: float = 30.0,
        max_transaction_age_s: float = 60.0,
        max_lock_wait_s: float = 60.0,
        cancel_blockers_after_s: float | None = None,
    ):
        self.project = as_project(script_location)
        self.script_location = self.project.script_location
        # env.py gets the URL as given (an async template needs its async driver); our own
        # control and read connections use psycopg2.
        self.env_url = normalize_url(url)
        self.url = self.env_url
        for scheme in ASYNC_DRIVERS:
            if self.url.startswith(scheme):
                self.url = "postgresql+psycopg2://" + self.url[len(scheme) :]
        try:
            parsed = make_url(self.url)
        except ArgumentError:
            raise MigrationError(
                f"not a database URL: {redact(url)}; expected e.g. postgresql://user@host/db"
            ) from None
        self.database = parsed.database or "<database>"
        self.is_postgres = parsed.get_backend_name() == "postgresql"
        self.lock_timeout_ms = lock_timeout_ms
        self.statement_timeout_ms = statement_timeout_ms
        self.long_statement_timeout_ms = long_statement_timeout_ms
        self.retries = retries
        self.application_name = (application_name or f"release-migrations:{self.database}")[:63]
        self.backoff_base_s = backoff_base_s
        self.backoff_max_s = backoff_max_s
        self.lock_wait_s = lock_wait_s
        self.max_transaction_age_s = max_transaction_age_s
        self.settings = SessionSettings(
            self.database,
            self.application_name,
            lock_timeout_ms,
            statement_timeout_ms,
            long_statement_timeout_ms,
        )
        self.lock_wait = LockWaitSettings(max_lock_wait_s, cancel_blockers_after_s)
        self._rng = random.Random()

    @classmethod
    def for_database(
        cls,
        database: Database,
        manifest_dir: str | Path,
        environ: Mapping[str, str] | None = None,
        **options: Any,
    ) -> MigrationRunner:
        """The runner for a manifest database: migrations are relative to the manifest file."""
        locks = {
            "lock_timeout_ms": database.lock_timeout_ms,
            "max_lock_wait_s": database.max_lock_wait_s,
            "cancel_blockers_after_s": database.cancel_blockers_after_s,
        }
        return cls(
            project_for(database, manifest_dir),
            resolve_url(database.url, environ),
            **{**locks, **options},
        )

    def __repr__(self) -> str:
        return f"MigrationRunner({str(self.script_location)!r}, {redact(self.url)!r})"

    # ------------------------------------------------------------ reading state

    def revisions(self) -> list[RevisionInfo]:
        single_head(self.project)
        return load_revisions(self.project)

    def heads(self) -> list[str]:
        return list(script_directory(self.project).get_heads())

    def current(self) -> str | None:
        engine = self._engine()
        try:
            with engine.connect() as conn:
                return self._read_version(conn)
        finally:
            engine.dispose()

    def _read_version(self, conn: Connection) -> str | None:
        options = version_table_options(make_config(self.project))
        heads = MigrationContext.configure(conn, opts=options).get_current_heads()
        if len(heads) > 1:
            raise MigrationError(
                f"{self.database} is at {len(heads)} revisions at once ({', '.join(sorted(heads))}): "
                "a branch was applied without the merge revision that joins it; finish with "
                "`alembic upgrade heads` before releasing"
            )
        return heads[0] if heads else None

    def pending(self, phase: str | None = None) -> list[RevisionInfo]:
        """Revisions after the database's current one, oldest first, optionally of one phase."""
        return [
            r
            for r in self._after(self.revisions(), self.current())
            if phase is None or r.phase == phase
        ]

    # ------------------------------------------------------------ changing state

    def upgrade(self, target: str = EXPAND_HEAD, log: Log | None = None) -> list[RevisionResult]:
        """Apply pending revisions up to `target`: "expand-head" (every pending expand revision,
        stopping before the first other one), "head", or a revision id."""
        log = log or (lambda _message: None)
        revisions = self.revisions()
        with self._guarded(log) as control:
            pending = self._after(revisions, self._current_on(control))
            steps = self._select(pending, target, revisions)
            if not steps:
                log(f"{self.database}: nothing to apply for {target}")
            groups = single_head_groups(revisions, self._current_on(control), steps)
            return [self._apply(control, group, "upgrade", group[-1].revision, log) for group in groups]

    def upgrade_contract(self, log: Log | None = None) -> list[RevisionResult]:
        """Apply everything pending, contract revisions included (after the old release is gone)."""
        return self.upgrade("head", log)

    def downgrade(self, target: str, log: Log | None = None) -> list[RevisionResult]:
        """Step down revision by revision to `target` (a revision id or "base"); refuses before
        touching anything if a revision on the way has an empty downgrade()."""
        log = log or (lambda _message: None)
        revisions = self.revisions()
        by_id = {r.revision: r for r in revisions}
        if target != "base" and target not in by_id:
            raise MigrationError(f"unknown revision {target!r} in {self.script_location}")
        with self._guarded(log) as control:
            current = self._current_on(control)
            steps: list[RevisionInfo] = []
            cursor = current
            while cursor is not None and cursor != target:
                if by_id[cursor].is_merge:
                    raise MigrationError(
                        f"cannot downgrade {self.database} through merge revision {cursor}: "
                        "step down each branch with `alembic downgrade` by hand"
                    )
                steps.append(by_id[cursor])
                down = by_id[cursor].down_revision
                cursor = down if isinstance(down, str) or down is None else down[0]
            if target != "base" and cursor != target:
                raise MigrationError(
                    f"{target} is not below the current revision {current} of {self.database}"
                )
            blocked = [s for s in steps if not s.reversible]
            if blocked:
                raise MigrationError(
                    "cannot downgrade "
                    + self.database
                    + ": "
                    + "; ".join(
                        f"revision {s.revision} is irreversible ({s.irreversible_reason})"
                        for s in blocked
                    )
                    + ". Roll forward with a new revision or restore the snapshot instead."
                )
            return [
                self._apply(control, [info], "downgrade", _down_target(info), log) for info in steps
            ]

    # ------------------------------------------------------------ internals

    @staticmethod
    def _after(revisions: list[RevisionInfo], current: str | None) -> list[RevisionInfo]:
        """Revisions not yet applied: all but `current` and its ancestors (merges included)."""
        by_id = {r.revision: r for r in revisions}
        if current is not None and current not in by_id:
            raise MigrationError(
                f"the database is at revision {current}, which this Alembic project does not know; "
                "is --script-location the project that migrated this database?"
            )
        applied = ancestors(by_id, [current] if current else [])
        return [r for r in revisions if r.revision not in applied]

    def _select(
        self, pending: list[RevisionInfo], target: str, revisions: list[RevisionInfo]
    ) -> list[RevisionInfo]:
        if target == EXPAND_HEAD:
            steps = []
            for info in pending:
                if info.phase != "expand":
                    break
                steps.append(info)
            return steps
        if target in ("head", "heads"):
            return pending
        ids = [r.revision for r in pending]
        if target in ids:
            return pending[: ids.index(target) + 1]
        if any(r.revision == target for r in revisions):
            return []  # already applied
        raise MigrationError(
            f"unknown revision {target!r} in {self.script_location}; use expand-head, head or one of: "
            + ", ".join(r.revision for r in revisions)
        )

    def _engine(self, autocommit: bool = False) -> Engine:
        options: dict[str, Any] = {"poolclass": NullPool}
        if self.is_postgres:
            options["connect_args"] = connect_args(self.settings)
        elif make_url(self.url).get_backend_name() == "sqlite" and make_url(self.url).database:
            Path(make_url(self.url).database).parent.mkdir(parents=True, exist_ok=True)
        if autocommit:
            options["isolation_level"] = "AUTOCOMMIT"
        return create_engine(self.url, **options)

    @contextmanager
    def _guarded(self, log: Log) -> Iterator[Connection | None]:
        """Hold the migration lock and pass the pre-check; yields the AUTOCOMMIT control
        connection (None on SQLite, which has neither the lock nor the catalog views)."""
        if not self.is_postgres:
            yield None
            return
        engine = self._engine(autocommit=True)
        try:
            with (
                engine.connect() as control,
                advisory_lock(control, self.database, self.lock_wait_s),
            ):
                log(f"{self.database}: migration lock taken")
                if control.exec_driver_sql("SELECT rolsuper FROM pg_roles WHERE rolname = current_user").scalar():
                    log(f"{self.database}: warning: migrating as a superuser; use the schema's owner role "
                        "(docs/production.md, Roles) so a migration cannot touch other databases or roles")
                precheck(control, self.database, self.max_transaction_age_s)
                yield control
        finally:
            engine.dispose()

    def _current_on(self, control: Connection | None) -> str | None:
        if control is None:
            return self.current()
        return self._read_version(control)

    def _apply(
        self,
        control: Connection | None,
        group: list[RevisionInfo],
        direction: str,
        dest: str,
        log: Log,
    ) -> RevisionResult:
        """Run one revision step (a branch and its merge: one step), retrying it whole on lock
        timeouts."""
        info, branch = group[-1], tuple(g.revision for g in group[:-1])
        if branch:
            log(f"{', '.join(branch)} and merge {info.revision}: applied in one command")
        engine = self._engine()
        statements: list[tuple[str, bool]] = []

        def record(statement: str, parameters: Any, autocommit: bool) -> None:
            suffix = f"\n-- parameters: {parameters!r}" if parameters else ""
            statements.append((statement.strip() + suffix, autocommit))

        invalid_before = invalid_indexes(control) if control is not None else set()
        leftover: set[str] = set()
        from_rev = self._current_on(control)
        guard = LockQueueGuard(control, self.lock_wait, log) if control is not None else None
        attempt = 0
        try:
            while True:
                attempt += 1
                statements.clear()
                started = time.monotonic()
                try:
                    leftover = self._drop_leftovers(control, leftover, info, log)
                    with (
                        ALEMBIC_LOCK,
                        preserved_logging(),
                        applied_to_every_connection(self.settings, record),
                        guard.watching() if guard is not None else nullcontext(),
                        engine.connect() as conn,
                    ):
                        cfg = make_config(self.project, url=self.env_url, connection=conn)
                        (command.upgrade if direction == "upgrade" else command.downgrade)(
                            cfg, dest
                        )
                        if conn.in_transaction():
                            conn.commit()
                except Exception as exc:
                    if control is not None:
                        leftover |= invalid_indexes(control) - invalid_before
                    if not (is_retryable(exc) or isinstance(exc, MigrationLockTimeout)):
                        raise self._failed(info, direction, from_rev, statements, exc) from exc
                    if attempt > self.retries:
                        raise self._timed_out(
                            control, info, direction, from_rev, statements, attempt, leftover
                        ) from exc
                    delay = backoff_delay(
                        attempt - 1, self.backoff_base_s, self.backoff_max_s, self._rng
                    )
                    log(
                        f"{info.revision}: lock not available ({_first_line(exc)}); retry {attempt}/{self.retries} in {delay:.2f} s"
                    )
                    time.sleep(delay)
                    continue
                duration = time.monotonic() - started
                log(
                    f"{info.revision}: {direction} done in {duration:.2f} s ({len(statements)} statements)"
                )
                return RevisionResult(
                    info.revision,
                    from_rev,
                    self._current_on(control),
                    [s for s, _ in statements],
                    duration,
                    attempt,
                    branch,
                )
        finally:
            engine.dispose()

    @staticmethod
    def _drop_leftovers(
        control: Connection | None, leftover: set[str], info: RevisionInfo, log: Log
    ) -> set[str]:
        """Drop the INVALID indexes a failed attempt left, so the retry can build them again."""
        if not leftover or control is None:
            return leftover
        remaining = drop_invalid_indexes(control, leftover)
        if leftover - remaining:
            log(
                f"{info.revision}: dropped INVALID index(es) {', '.join(sorted(leftover - remaining))} left by the failed attempt"
            )
        if remaining:
            raise MigrationLockTimeout(
                f"could not drop INVALID index(es) {', '.join(sorted(remaining))} yet"
            )
        return remaining

    def _state_note(self, from_rev: str | None, statements: list[tuple[str, bool]]) -> str:
        committed = [s for s, autocommit in statements[:-1] if autocommit]
        note = f"alembic_version is still {from_rev or '<base>'}; the revision's transaction rolled back"
        if committed:
            note += (
                "; these statements ran outside it (autocommit block) and stay applied: "
                + "; ".join(" ".join(s.split())[:120] for s in committed)
            )
        return note

    def _failed(
        self,
        info: RevisionInfo,
        direction: str,
        from_rev: str | None,
        statements: list[tuple[str, bool]],
        exc: BaseException,
    ) -> MigrationError:
        last = " ".join(statements[-1][0].split())[:300] if statements else "<before any statement>"
        code = sqlstate(exc)
        if not statements:
            return MigrationFailed(
                f"{direction} of revision {info.revision} on {self.database} failed before any "
                f"statement ran: {failure_summary(exc, self.project)}. "
                f"{self._state_note(from_rev, statements)}."
            )
        return MigrationFailed(
            f"{direction} of revision {info.revision} on {self.database} failed at statement `{last}`: "
            f"{_first_line(exc)}{f' (SQLSTATE {code})' if code else ''}. "
            f"{self._state_note(from_rev, statements)}. Fix the revision ({info.path}) and run again."
        )

    def _timed_out(
        self,
        control: Connection | None,
        info: RevisionInfo,
        direction: str,
        from_rev: str | None,
        statements: list[tuple[str, bool]],
        attempts: int,
        leftover: set[str],
    ) -> MigrationError:
        last = " ".join(statements[-1][0].split())[:300] if statements else "<before any statement>"
        blockers: list[Session] = lock_holders(control) if control is not None else []
        who = "; ".join(b.describe() for b in blockers) or "no session holds table locks any more"
        message = (
            f"{direction} of revision {info.revision} on {self.database} could not get its locks after "
            f"{attempts} attempts (lock_timeout {self.lock_timeout_ms} ms) at statement `{last}`. "
            f"Blocking: {who}. {self._state_note(from_rev, statements)}. "
            "Wait for or end the blocking session(s) (SELECT pg_terminate_backend(pid)), then run again."
        )
        if leftover:
            message += f" INVALID index(es) still present: {', '.join(sorted(leftover))}: drop them with DROP INDEX CONCURRENTLY."
        return MigrationLockTimeout(message)


def ancestors(by_id: Mapping[str, RevisionInfo], heads: list[str]) -> set[str]:
    """The revisions `heads` stand on, themselves included (across merges)."""
    seen: set[str] = set()
    stack = list(heads)
    while stack:
        current = stack.pop()
        if current in seen or current not in by_id:
            continue
        seen.add(current)
        down = by_id[current].down_revision
        stack.extend([down] if isinstance(down, str) else list(down or ()))
    return seen


def single_head_groups(
    revisions: list[RevisionInfo], current: str | None, steps: list[RevisionInfo]
) -> list[list[RevisionInfo]]:
    """The steps cut where the database is at one head again. Applied one by one, the second of
    two branches would leave alembic_version with two heads - a state a release can neither start
    from nor roll back to - so it runs in the same Alembic command as the merge revision."""
    by_id = {r.revision: r for r in revisions}
    applied = ancestors(by_id, [current] if current else [])
    groups: list[list[RevisionInfo]] = []
    group: list[RevisionInfo] = []
    for info in steps:
        group.append(info)
        applied.add(info.revision)
        parents = {p for r in applied for p in _parents(by_id[r])}
        if len(applied - parents) == 1:
            groups.append(group)
            group = []
    if group:
        raise MigrationError(
            f"{', '.join(g.revision for g in group)} would leave the database on two branches: "
            "the merge revision joining them is not part of this upgrade; target the merge "
            "revision (--target head or its id) or declare it expand"
        )
    return groups


def _parents(info: RevisionInfo) -> tuple[str, ...]:
    down = info.down_revision
    return (down,) if isinstance(down, str) else tuple(down or ())


def _down_target(info: RevisionInfo) -> str:
    down = info.down_revision
    if down is None:
        return "base"
    return down if isinstance(down, str) else down[0]


def _first_line(exc: BaseException) -> str:
    text_ = str(getattr(exc, "orig", None) or exc).strip()
    return text_.splitlines()[0] if text_ else type(exc).__name__
