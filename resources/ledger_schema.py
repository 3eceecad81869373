"""The ledger's data: tables and their migration, the frozen records handed to callers, and the
event hash chain (hashing, appending, checking one link).

The tables are created by the Alembic revisions in ``resources/ledger_migrations``; this module
mirrors them for queries, and a test checks the two agree.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config
from sqlalchemy import (
    JSON,
    Column,
    Connection,
    DateTime,
    Engine,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
    insert,
    select,
    text,
    update,
)

from release_pipelines.core.errors import ReleaseError
from release_pipelines.core.states import ReleaseState

VERSION_TABLE = "release_ledger_alembic_version"
"""Our own Alembic version table, so the ledger can share a database with other schemas."""

_MIGRATIONS = Path(__file__).with_name("ledger_migrations")
_MIGRATION_LOCK = 0x52454C4C  # pg advisory lock key ("RELL"): one migrator per database at a time

GENESIS_HASH = "0" * 64
"""The prev_hash of the first event."""

ACTIVE_WHERE = text("state NOT IN ('completed', 'rolled_back')")
"""Rows the one-active-release-per-product index covers (mirrors states.ACTIVE_STATES)."""

metadata = MetaData()

releases = Table(
    "releases",
    metadata,
    Column("id", String(200), primary_key=True),
    Column("product", String(120), nullable=False),
    Column("state", String(32), nullable=False),
    Column("versions", JSON, nullable=False),
    Column("previous", JSON, nullable=False),
    Column("canary_step", Integer, nullable=True),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("updated_at", DateTime(timezone=True), nullable=False),
    Column("created_by", String(200), nullable=False),
    Column("updated_by", String(200), nullable=False),
    Column("run_id", String(200), nullable=True),
    Column("environment", String(40), nullable=False, server_default=text("''")),  # migration 0003
    Index(
        "uq_releases_one_active_per_product_environment",
        "product",
        "environment",
        unique=True,
        postgresql_where=ACTIVE_WHERE,
        sqlite_where=ACTIVE_WHERE,
    ),
    Index("ix_releases_product_created_at", "product", "created_at"),
    Index("ix_releases_product_environment_created_at", "product", "environment", "created_at"),
)

events = Table(
    "events",
    metadata,
    Column("seq", Integer, primary_key=True, autoincrement=False),
    Column("release_id", String(200), ForeignKey("releases.id"), nullable=True),
    Column("kind", String(200), nullable=False),
    Column("actor", String(200), nullable=False),
    Column("run_id", String(200), nullable=True),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("payload", JSON, nullable=False),
    Column("prev_hash", String(64), nullable=False),
    Column("hash", String(64), nullable=False),
    Index("ix_events_release_id", "release_id"),
)

chain_head = Table(
    "event_chain_head",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=False),
    Column("seq", Integer, nullable=False),
    Column("hash", String(64), nullable=False),
)
"""One row: the last event's seq and hash. Appenders lock it, so the chain never forks, and
verify compares against it, so a deleted tail is noticed too."""

approvals = Table(
    "approvals",
    metadata,
    Column("release_id", String(200), ForeignKey("releases.id"), nullable=False),
    Column("phase", String(120), nullable=False),
    Column("approver", String(200), nullable=False),
    Column("comment", Text, nullable=True),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("statement", Text, nullable=True),  # migration 0004: what the approver signed
    Column("signature", Text, nullable=True),  # ... and the armored SSH signature (NULL: unsigned)
    UniqueConstraint("release_id", "phase", "approver", name="uq_approvals_release_phase_approver"),
)

release_requests = Table(
    "release_requests",
    metadata,
    Column("id", String(200), primary_key=True),
    Column("product", String(120), nullable=False),
    Column("versions", JSON, nullable=False),
    Column("state", String(32), nullable=False),
    Column("window", String(32), nullable=False),
    Column("comment", Text, nullable=True),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("created_by", String(200), nullable=False),
    Column("updated_at", DateTime(timezone=True), nullable=False),
    Column("updated_by", String(200), nullable=False),
    Column("run_id", String(200), nullable=True),
    Column("statement", Text, nullable=True),  # migration 0004
    Column("signature", Text, nullable=True),
    Index("ix_release_requests_product_state", "product", "state", "created_at"),
)
"""Releases queued for a release window (migration 0002); no foreign key: the release comes later."""

checkpoints = Table(
    "checkpoints",
    metadata,
    Column("seq", Integer, primary_key=True, autoincrement=False),
    Column("head", String(64), nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("public_key", Text, nullable=False),
    Column("statement", Text, nullable=False),
    Column("signature", Text, nullable=False),
)
"""Deployment-signed snapshots of the chain head (migration 0004); copies live outside too."""

ledger_info = Table(
    "ledger_info",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=False),
    Column("ledger_id", String(64), nullable=False),
)
"""One row: this ledger's random id, named in its checkpoints (migration 0004)."""

REQUEST_STATES = ("queued", "launched", "cancelled")


@dataclass(frozen=True)
class Release:
    """One release as last written; `previous` is what a rollback returns each service to, and
    `run_id` the last Dagster run that moved it (kept when a person moves it without a run)."""

    id: str
    product: str
    state: ReleaseState
    versions: dict[str, str]
    previous: dict[str, str]
    canary_step: int | None
    created_at: datetime
    updated_at: datetime
    created_by: str
    updated_by: str
    run_id: str | None
    environment: str = ""  # '' = the single implicit environment (migration 0003)


@dataclass(frozen=True)
class Event:
    """One audit-trail entry; `hash` covers `prev_hash` and every other field."""

    seq: int
    release_id: str | None
    kind: str
    actor: str
    run_id: str | None
    created_at: datetime
    payload: dict[str, Any]
    prev_hash: str
    hash: str


@dataclass(frozen=True)
class Approval:
    """A person's sign-off on one phase of one release."""

    release_id: str
    phase: str
    approver: str
    comment: str | None
    created_at: datetime
    statement: str | None = None  # the signed statement (migration 0004); None: unsigned
    signature: str | None = None

    @property
    def signed(self) -> bool:
        return bool(self.signature)


@dataclass(frozen=True)
class Checkpoint:
    """A signed snapshot of the chain head at `seq` (the statement lists every hash since the last)."""

    seq: int
    head: str
    created_at: datetime
    public_key: str
    statement: str
    signature: str


@dataclass(frozen=True)
class ReleaseRequest:
    """A release asked for in a window: `queued` -> `launched` (run key = id) or `cancelled`."""

    id: str
    product: str
    versions: dict[str, str]
    state: str
    window: str
    comment: str | None
    created_at: datetime
    created_by: str
    updated_at: datetime
    updated_by: str
    run_id: str | None
    statement: str | None = None  # migration 0004: the requester's signed statement
    signature: str | None = None


@dataclass(frozen=True)
class VerifyReport:
    """Result of recomputing the event chain: `first_problem` names the first broken link."""

    ok: bool
    checked: int
    first_problem: str | None = None


def utc(value: datetime) -> datetime:
    """A stored timestamp as aware UTC (SQLite hands back naive datetimes we wrote as UTC)."""
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def canonical_json(value: Any) -> str:
    """The one JSON spelling we hash: sorted keys, no spaces."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def event_hash(
    prev_hash: str,
    *,
    seq: int,
    release_id: str | None,
    kind: str,
    actor: str,
    run_id: str | None,
    created_at: datetime,
    payload: Any,
) -> str:
    """sha256 over the previous hash and this event's canonical contents."""
    body = canonical_json(
        {
            "seq": seq,
            "release_id": release_id,
            "kind": kind,
            "actor": actor,
            "run_id": run_id,
            "created_at": utc(created_at).isoformat(timespec="microseconds"),
            "payload": payload,
        }
    )
    return hashlib.sha256((prev_hash + body).encode("utf-8")).hexdigest()


def link_problem(row: Mapping[str, Any], expected_seq: int, prev_hash: str) -> str | None:
    """Why this event breaks the chain, or None; checked in order: gap, alteration, linkage."""
    seq = row["seq"]
    if seq != expected_seq:
        span = str(expected_seq) if seq == expected_seq + 1 else f"{expected_seq}..{seq - 1}"
        return f"event {span} is missing (seq jumps from {expected_seq - 1} to {seq})"
    fields = {
        k: row[k] for k in ("seq", "release_id", "kind", "actor", "run_id", "created_at", "payload")
    }
    if event_hash(row["prev_hash"], **fields) != row["hash"]:
        return f"event {seq} ({row['kind']}) was altered: its contents no longer match its hash"
    if row["prev_hash"] != prev_hash:
        return (
            f"event {seq} is out of order: it does not link to event {seq - 1} "
            "(events reordered, or an earlier one replaced)"
        )
    return None


def plain_payload(payload: Mapping[str, Any] | None) -> dict[str, Any]:
    """The payload exactly as it will read back from JSON, so its hash verifies later."""
    try:
        return json.loads(canonical_json(dict(payload or {})))
    except (TypeError, ValueError) as exc:
        raise ReleaseError(f"event payload must be JSON data: {exc}") from None


def to_release(row: Mapping[str, Any]) -> Release:
    return Release(
        **{
            **row,
            "state": ReleaseState(row["state"]),
            "created_at": utc(row["created_at"]),
            "updated_at": utc(row["updated_at"]),
        }
    )


def to_event(row: Mapping[str, Any]) -> Event:
    return Event(**{**row, "created_at": utc(row["created_at"])})


def to_approval(row: Mapping[str, Any]) -> Approval:
    return Approval(**{**row, "created_at": utc(row["created_at"])})


def to_checkpoint(row: Mapping[str, Any]) -> Checkpoint:
    return Checkpoint(**{**row, "created_at": utc(row["created_at"])})


def to_request(row: Mapping[str, Any]) -> ReleaseRequest:
    return ReleaseRequest(
        **{**row, "created_at": utc(row["created_at"]), "updated_at": utc(row["updated_at"])}
    )


def upgrade_schema(engine: Engine) -> None:
    """Bring the schema to head; a Postgres advisory lock makes concurrent openers take turns."""
    config = Config()
    config.set_main_option("script_location", str(_MIGRATIONS).replace("%", "%%"))
    with engine.connect() as conn:
        conn.execution_options(ledger_write=True)  # BEGIN IMMEDIATE on SQLite
        with conn.begin():
            if conn.dialect.name == "postgresql":
                conn.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": _MIGRATION_LOCK})
            config.attributes["connection"] = conn
            command.upgrade(config, "head")


class Chain:
    """The chain head, locked for one write transaction; appends events in order.

    On Postgres the row lock (FOR UPDATE) makes concurrent writers queue; on SQLite the
    transaction's BEGIN IMMEDIATE already holds the file's write lock.
    """

    def __init__(self, conn: Connection):
        head = select(chain_head.c.seq, chain_head.c.hash).where(chain_head.c.id == 1)
        row = conn.execute(head.with_for_update()).one()
        self.conn, self.seq, self.hash = conn, row.seq, row.hash

    def append(
        self,
        release_id: str | None,
        kind: str,
        actor: str,
        run_id: str | None,
        payload: Mapping[str, Any] | None,
    ) -> Event:
        fields = {
            "seq": self.seq + 1,
            "release_id": release_id,
            "kind": kind,
            "actor": actor,
            "run_id": run_id,
            "created_at": datetime.now(UTC),
            "payload": plain_payload(payload),
        }
        digest = event_hash(self.hash, **fields)
        self.conn.execute(insert(events).values(**fields, prev_hash=self.hash, hash=digest))
        self.conn.execute(
            update(chain_head).where(chain_head.c.id == 1).values(seq=fields["seq"], hash=digest)
        )
        appended = Event(**fields, prev_hash=self.hash, hash=digest)
        self.seq, self.hash = fields["seq"], digest
        return appended
