"""The release ledger: durable release state plus an append-only, hash-chained audit trail.

Every job, sensor and process reads the truth about a release from here, so the database itself
enforces what must never go wrong under concurrency: one active release per product (a partial
unique index) and one unforked event chain (every write transaction first locks the chain head).
Plain Python on SQLAlchemy Core; the Dagster resource wraps it elsewhere.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Self

from alembic.util import CommandError
from sqlalchemy import Connection, Engine, create_engine, event, insert, select, update
from sqlalchemy.engine import make_url
from sqlalchemy.exc import (
    ArgumentError,
    IntegrityError,
    InternalError,
    NoSuchModuleError,
    OperationalError,
    SQLAlchemyError,
)

from release_pipelines.core.errors import LedgerError, ReleaseAlreadyActive, ReleaseError
from release_pipelines.core.states import ACTIVE_STATES, ReleaseState, check_transition
from release_pipelines.resources.database_url import normalize_url, redact
from release_pipelines.resources.ledger_schema import (
    GENESIS_HASH,
    REQUEST_STATES,
    Approval,
    Chain,
    Checkpoint,
    Event,
    Release,
    ReleaseRequest,
    VerifyReport,
    approvals,
    chain_head,
    checkpoints,
    events,
    ledger_info,
    link_problem,
    release_requests,
    releases,
    to_approval,
    to_checkpoint,
    to_event,
    to_release,
    to_request,
    upgrade_schema,
)

__all__ = [
    "DEFAULT_URL",
    "ENV_VAR",
    "Approval",
    "Checkpoint",
    "Event",
    "Ledger",
    "Release",
    "ReleaseRequest",
    "VerifyReport",
]

ENV_VAR = "RELEASE_LEDGER_URL"
DEFAULT_URL = "sqlite:///.release/ledger.db"
_SQLITE_BUSY_MS = 30_000


def scope(product: str, environment: str | None = None) -> tuple[str, str]:
    """(product, environment) for a ledger query. A qualified product name
    (`release_pipelines.core.environments.ProductName`, e.g. the `shop_production` jobs' name) carries
    its product and environment; a plain name is the single implicit environment ''."""
    base = getattr(product, "base", None)
    qualified = getattr(product, "environment", None)
    return str(base or product), (environment if environment is not None else (qualified or ""))


def new_release_id(product: str, now: datetime) -> str:
    """`<product>-<UTC time>-<random>`: sortable by eye, unique without a sequence."""
    return f"{product}-{now.astimezone(UTC):%Y%m%dT%H%M%S}-{secrets.token_hex(2)}"


class Ledger:
    """Open (and migrate) a ledger database; safe to share between threads and processes."""

    def __init__(self, url: str):
        self.url = normalize_url(url)
        self._engine: Engine | None = None
        try:
            self._engine = _create_engine(self.url)
            upgrade_schema(self._engine)
        except (SQLAlchemyError, CommandError, OSError) as exc:
            self.close()
            raise LedgerError(_open_problem(self.url, exc)) from exc

    @classmethod
    def from_env(cls) -> Self:
        """The ledger named by RELEASE_LEDGER_URL, else a SQLite file under ./.release/."""
        return cls(os.environ.get(ENV_VAR) or DEFAULT_URL)

    def close(self) -> None:
        """Release pooled connections (a Postgres server counts them)."""
        if self._engine is not None:
            self._engine.dispose()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"Ledger({redact(self.url)!r})"

    # -- writes -------------------------------------------------------------------------------

    def start_release(
        self,
        product: str,
        versions: Mapping[str, str],
        previous: Mapping[str, str],
        actor: str,
        run_id: str | None = None,
        payload: Mapping[str, Any] | None = None,
        environment: str | None = None,
    ) -> Release:
        """Create a release in `planned`; the database refuses a second active one per product
        and environment (`environment`: see `scope`; '' when the manifest declares none)."""
        now = datetime.now(UTC)
        product, environment = scope(product, environment)
        row = {
            "id": new_release_id(f"{product}-{environment}" if environment else product, now),
            "product": product,
            "state": ReleaseState.PLANNED.value,
            "versions": dict(versions),
            "previous": dict(previous),
            "canary_step": None,
            "created_at": now,
            "updated_at": now,
            "created_by": actor,
            "updated_by": actor,
            "run_id": run_id,
            "environment": environment,
        }
        details = {**(payload or {}), "versions": row["versions"], "previous": row["previous"]}
        if environment:
            details["environment"] = environment
        try:
            with self._write() as chain:
                chain.conn.execute(insert(releases).values(**row))
                chain.append(row["id"], f"state:{ReleaseState.PLANNED}", actor, run_id, details)
        except IntegrityError as exc:
            active = self.active_release(product, environment)
            if active is None:
                raise LedgerError(
                    f"could not record a new release of {product}: {exc.orig}"
                ) from exc
            where = f"{product} in {environment}" if environment else product
            raise ReleaseAlreadyActive(
                f"release {active.id} of {where} is already active (state {active.state}); "
                "wait for it or roll it back"
            ) from None
        return to_release(row)

    def transition(
        self,
        release_id: str,
        target: ReleaseState | str,
        actor: str,
        run_id: str | None = None,
        payload: Mapping[str, Any] | None = None,
        canary_step: int | None = None,
    ) -> Release:
        """Move a release to `target` if the state machine allows it, recording who and why."""
        target = ReleaseState(target)
        if canary_step is not None and target is not ReleaseState.CANARY:
            raise ReleaseError(f"canary_step only applies to the canary state, not {target}")
        with self._write() as chain:
            query = select(releases).where(releases.c.id == release_id).with_for_update()
            row = chain.conn.execute(query).mappings().one_or_none()
            if row is None:
                raise self._unknown(chain.conn, release_id)
            check_transition(row["state"], target, release_id=release_id)
            changes: dict[str, Any] = {
                "state": target.value,
                "updated_at": datetime.now(UTC),
                "updated_by": actor,
                "run_id": run_id or row["run_id"],
            }
            details: dict[str, Any] = {**(payload or {}), "from": row["state"]}
            if canary_step is not None:
                changes["canary_step"] = details["canary_step"] = canary_step
            chain.conn.execute(update(releases).where(releases.c.id == release_id).values(changes))
            chain.append(release_id, f"state:{target}", actor, run_id, details)
        return to_release({**row, **changes})

    def record(
        self,
        release_id: str | None,
        kind: str,
        actor: str,
        run_id: str | None = None,
        payload: Mapping[str, Any] | None = None,
    ) -> Event:
        """Append an event without changing state (step done, gate result, verdict, flag change)."""
        if kind.startswith("state:"):
            raise ReleaseError(f"event kind {kind!r} is reserved; change state with transition()")
        with self._write() as chain:
            if release_id is not None:
                self._require(chain.conn, release_id)
            return chain.append(release_id, kind, actor, run_id, payload)

    def add_approval(
        self, release_id: str, phase: str, approver: str, comment: str | None = None,
        statement: str | None = None, signature: str | None = None,
    ) -> Approval:
        """Record a sign-off (also as an `approval:<phase>` event, whose hash then covers the signed
        statement and signature); each person approves once."""
        approval = Approval(release_id, phase, approver, comment, datetime.now(UTC), statement, signature)
        try:
            with self._write() as chain:
                self._require(chain.conn, release_id)
                chain.conn.execute(insert(approvals).values(**approval.__dict__))
                details = {"approver": approver, "comment": comment, "signed": bool(signature)}
                if signature:
                    details |= {"statement": statement, "signature": signature}
                chain.append(release_id, f"approval:{phase}", approver, None, details)
        except IntegrityError:
            raise ReleaseError(
                f"{approver} has already approved phase {phase} of release {release_id}"
            ) from None
        return approval

    # -- release requests (queued for a release window) ----------------------------------------

    def request_release(
        self,
        product: str,
        versions: Mapping[str, str],
        actor: str,
        window: str = "next",
        comment: str | None = None,
        request_id: str | None = None,
        statement: str | None = None,
        signature: str | None = None,
    ) -> ReleaseRequest:
        """Queue a release for the product's next release window (event `request:queued`); a signed
        request names its id in the statement, so the same signature never queues twice."""
        if not versions:
            raise ReleaseError("a release request needs at least one SERVICE=VERSION")
        now = datetime.now(UTC)
        row = {
            "id": request_id or new_request_id(product, now),
            "product": product,
            "versions": dict(versions),
            "state": "queued",
            "window": window,
            "comment": comment,
            "created_at": now,
            "created_by": actor,
            "updated_at": now,
            "updated_by": actor,
            "run_id": None,
            "statement": statement,
            "signature": signature,
        }
        details = {"request_id": row["id"], "product": product, "versions": row["versions"],
                   "window": window, "comment": comment, "signed": bool(signature)}
        if signature:
            details |= {"statement": statement, "signature": signature}
        try:
            with self._write() as chain:
                chain.conn.execute(insert(release_requests).values(**row))
                chain.append(None, "request:queued", actor, None, details)
        except IntegrityError:
            raise ReleaseError(f"release request {row['id']} is already queued (a signed request is queued once)") from None
        return to_request(row)

    def mark_request(
        self, request_id: str, state: str, actor: str, run_id: str | None = None, note: str | None = None
    ) -> ReleaseRequest:
        """Move a queued request to `launched` or `cancelled` (event `request:<state>`)."""
        if state not in REQUEST_STATES or state == "queued":
            raise ReleaseError(f"a request can only become launched or cancelled, not {state!r}")
        with self._write() as chain:
            query = select(release_requests).where(release_requests.c.id == request_id).with_for_update()
            row = chain.conn.execute(query).mappings().one_or_none()
            if row is None:
                raise ReleaseError(f"no release request {request_id!r} in the ledger at {redact(self.url)}")
            if row["state"] != "queued":
                raise ReleaseError(f"release request {request_id} is already {row['state']}")
            changes = {"state": state, "updated_at": datetime.now(UTC), "updated_by": actor,
                       "run_id": run_id}
            chain.conn.execute(
                update(release_requests).where(release_requests.c.id == request_id).values(changes)
            )
            chain.append(None, f"request:{state}", actor, run_id, {
                "request_id": request_id, "product": row["product"], "versions": row["versions"],
                "note": note,
            })
        return to_request({**row, **changes})

    def release_requests(
        self, product: str | None = None, state: str | None = None, limit: int = 100
    ) -> list[ReleaseRequest]:
        """Requests oldest first (the order the schedule launches them in)."""
        query = select(release_requests).order_by(
            release_requests.c.created_at, release_requests.c.id
        )
        if product is not None:
            query = query.where(release_requests.c.product == product)
        if state is not None:
            query = query.where(release_requests.c.state == state)
        with self._read() as conn:
            return [to_request(r) for r in conn.execute(query.limit(limit)).mappings()]

    def release_request(self, request_id: str) -> ReleaseRequest:
        with self._read() as conn:
            row = conn.execute(
                select(release_requests).where(release_requests.c.id == request_id)
            ).mappings().first()
        if row is None:
            raise ReleaseError(f"no release request {request_id!r} in the ledger at {redact(self.url)}")
        return to_request(row)

    # -- reads --------------------------------------------------------------------------------

    def get(self, release_id: str) -> Release:
        """The release, or a ReleaseError that lists recent release ids to pick from."""
        with self._read() as conn:
            row = (
                conn.execute(select(releases).where(releases.c.id == release_id)).mappings().first()
            )
            if row is None:
                raise self._unknown(conn, release_id)
            return to_release(row)

    def active_release(self, product: str, environment: str | None = None) -> Release | None:
        """The release currently blocking a new one of this product (and environment), if any."""
        product, environment = scope(product, environment)
        query = select(releases).where(
            releases.c.product == product,
            releases.c.environment == environment,
            releases.c.state.in_([s.value for s in ACTIVE_STATES]),
        )
        with self._read() as conn:
            row = conn.execute(query).mappings().first()
            return to_release(row) if row else None

    def releases(self, product: str | None = None, limit: int = 50, environment: str | None = None) -> list[Release]:
        """Most recent first; every environment of a plain product name unless one is given."""
        query = select(releases).order_by(releases.c.created_at.desc(), releases.c.id.desc())
        if product is not None:
            if environment is None and getattr(product, "environment", None) is None:
                query = query.where(releases.c.product == str(product))
            else:
                product, environment = scope(product, environment)
                query = query.where(releases.c.product == product, releases.c.environment == environment)
        with self._read() as conn:
            return [to_release(r) for r in conn.execute(query.limit(limit)).mappings()]

    def stable_versions(self, product: str, environment: str | None = None) -> dict[str, str]:
        """What runs now, per service (in one environment): replays finished releases (rollbacks
        restore `previous`)."""
        product, environment = scope(product, environment)
        query = (
            select(releases)
            .where(
                releases.c.product == product,
                releases.c.environment == environment,
                releases.c.state.in_([ReleaseState.COMPLETED, ReleaseState.ROLLED_BACK]),
            )
            .order_by(releases.c.created_at, releases.c.id)
        )
        stable: dict[str, str] = {}
        with self._read() as conn:
            for row in conn.execute(query).mappings():
                stable.update(row["previous"])
                if row["state"] == ReleaseState.COMPLETED:
                    stable.update(row["versions"])
        return stable

    def events(self, release_id: str | None = None, kind: str | None = None) -> list[Event]:
        """The audit trail in order, for one release or (None) the whole ledger; `kind` keeps one kind."""
        query = select(events).order_by(events.c.seq)
        if release_id is not None:
            query = query.where(events.c.release_id == release_id)
        if kind is not None:
            query = query.where(events.c.kind == kind)
        with self._read() as conn:
            return [to_event(r) for r in conn.execute(query).mappings()]

    def approvals(self, release_id: str, phase: str | None = None) -> list[Approval]:
        """Sign-offs for a release, oldest first."""
        query = select(approvals).where(approvals.c.release_id == release_id)
        if phase is not None:
            query = query.where(approvals.c.phase == phase)
        query = query.order_by(approvals.c.created_at, approvals.c.approver)
        with self._read() as conn:
            return [to_approval(r) for r in conn.execute(query).mappings()]

    def head(self) -> tuple[int, str]:
        """(seq, hash) of the chain's last event: what a signed statement says it saw."""
        with self._read() as conn:
            row = conn.execute(select(chain_head.c.seq, chain_head.c.hash)).one()
        return row.seq, row.hash

    def event_hashes(self, after: int = 0, upto: int | None = None) -> list[tuple[int, str]]:
        """(seq, hash) of the events after `after` up to `upto`, in order."""
        query = select(events.c.seq, events.c.hash).where(events.c.seq > after).order_by(events.c.seq)
        if upto is not None:
            query = query.where(events.c.seq <= upto)
        with self._read() as conn:
            return [(r.seq, r.hash) for r in conn.execute(query)]

    def ledger_id(self) -> str:
        with self._read() as conn:
            return conn.execute(select(ledger_info.c.ledger_id)).scalar_one()

    def add_checkpoint(self, checkpoint: Checkpoint) -> Checkpoint:
        """Store a signed checkpoint (its copies outside the database are the caller's)."""
        with self._write() as chain:
            chain.conn.execute(insert(checkpoints).values(**checkpoint.__dict__))
        return checkpoint

    def checkpoints(self) -> list[Checkpoint]:
        with self._read() as conn:
            return [to_checkpoint(r) for r in conn.execute(select(checkpoints).order_by(checkpoints.c.seq)).mappings()]

    def verify(self) -> VerifyReport:
        """Recompute the whole chain and name the first event that was altered, lost or moved."""
        with self._read() as conn:
            head = conn.execute(select(chain_head.c.seq, chain_head.c.hash)).one()
            rows = conn.execution_options(yield_per=1000).execute(
                select(events).order_by(events.c.seq)
            )
            prev_hash, checked = GENESIS_HASH, 0
            for row in rows.mappings():
                problem = link_problem(row, checked + 1, prev_hash)
                if problem:
                    return VerifyReport(False, checked, problem)
                prev_hash, checked = row["hash"], checked + 1
        if head.seq > checked:
            return VerifyReport(
                False,
                checked,
                f"events {checked + 1}..{head.seq} are missing (deleted from the end)",
            )
        if head.seq < checked or head.hash != prev_hash:
            return VerifyReport(
                False, checked, f"event {checked} does not match the chain head (altered)"
            )
        return VerifyReport(True, checked)

    # -- plumbing -----------------------------------------------------------------------------

    @contextmanager
    def _write(self) -> Iterator[Chain]:
        """A write transaction that holds the chain head for its whole life (serialises writers)."""
        try:
            with self._engine.connect() as conn:
                conn.execution_options(ledger_write=True)
                with conn.begin():
                    yield Chain(conn)
        except (OperationalError, InternalError) as exc:  # disk full, read-only, connection gone
            raise LedgerError(_write_problem(self.url, exc)) from exc

    @contextmanager
    def _read(self) -> Iterator[Connection]:
        with self._engine.connect() as conn:
            yield conn

    def _require(self, conn: Connection, release_id: str) -> None:
        if conn.execute(select(releases.c.id).where(releases.c.id == release_id)).first() is None:
            raise self._unknown(conn, release_id)

    def _unknown(self, conn: Connection, release_id: str) -> ReleaseError:
        recent = select(releases.c.id).order_by(releases.c.created_at.desc()).limit(5)
        ids = [r.id for r in conn.execute(recent)]
        hint = f"recent releases: {', '.join(ids)}" if ids else "the ledger has no releases yet"
        return ReleaseError(
            f"no release {release_id!r} in the ledger at {redact(self.url)}; {hint}"
        )


def _create_engine(url: str) -> Engine:
    """Postgres as is; SQLite with WAL, a busy timeout and BEGIN IMMEDIATE for writers."""
    parsed = make_url(url)
    if parsed.get_backend_name() != "sqlite":
        return create_engine(url, pool_pre_ping=True)
    if (
        parsed.database
        and parsed.database != ":memory:"
        and not parsed.database.startswith("file:")
    ):
        Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
    engine = create_engine(url)

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn: Any, _record: Any) -> None:
        dbapi_conn.isolation_level = None  # we issue BEGIN ourselves, below
        dbapi_conn.execute(f"PRAGMA busy_timeout = {_SQLITE_BUSY_MS}")
        dbapi_conn.execute("PRAGMA journal_mode = WAL")
        dbapi_conn.execute("PRAGMA foreign_keys = ON")

    @event.listens_for(engine, "begin")
    def _on_begin(conn: Connection) -> None:
        # Writers take the file's write lock up front, so two never both read the same chain head.
        immediate = conn.get_execution_options().get("ledger_write", False)
        conn.exec_driver_sql("BEGIN IMMEDIATE" if immediate else "BEGIN")

    return engine


def new_request_id(product: str, now: datetime) -> str:
    return f"req-{new_release_id(product, now)}"


def _write_problem(url: str, exc: SQLAlchemyError) -> str:
    """A write the database refused (disk full, read-only, gone): nothing was recorded, so the
    step that asked stops before it acts; the release resumes or rolls back once writes work."""
    reason = str(getattr(exc, "orig", None) or exc).strip().splitlines()[0]
    return (
        f"cannot write to the release ledger at {redact(url)}: {reason}. Nothing was recorded and the step "
        "stopped before acting; once the ledger accepts writes again (disk space, read-only mount, "
        "connection), re-run the job or roll the release back."
    )


def _open_problem(url: str, exc: BaseException) -> str:
    """What went wrong opening the ledger, without echoing secrets from the URL."""
    if isinstance(exc, NoSuchModuleError):
        reason = f"unknown database driver ({exc})"
    elif isinstance(exc, ArgumentError):
        reason = "not a database URL SQLAlchemy understands"
    elif isinstance(exc, CommandError):
        reason = f"its schema is not one this version knows ({exc}); upgrade release-pipelines"
    else:
        reason = str(getattr(exc, "orig", None) or exc).strip().splitlines()[0]
    return (
        f"cannot open the release ledger at {redact(url)}: {reason}. "
        f"Check {ENV_VAR} (e.g. sqlite:///.release/ledger.db or postgresql://user@host/db) "
        "and that the database server is running and accepts connections."
    )
