"""Anchored ledger: checkpoints of the event chain, signed with the deployment's SSH key and kept
outside the ledger's database too, so someone who can write the database - and recompute every
hash - still cannot rewrite history unnoticed.

A checkpoint's statement lists the hash of every event since the previous checkpoint, so
`verify_anchors` names the first event that differs. Copies go to the ledger's `checkpoints`
table, an append-only JSON-lines file (RELEASE_CHECKPOINT_FILE) and a webhook
(RELEASE_CHECKPOINT_WEBHOOK); the Dagster side records each as an asset observation.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
from sqlalchemy.exc import IntegrityError

from release_pipelines.core.errors import ReleaseError
from release_pipelines.core.statements import (
    CHECKPOINT_NAMESPACE,
    CheckpointStatement,
    StatementError,
    key_fingerprint,
    same_key,
)
from release_pipelines.resources.ledger_schema import Checkpoint
from release_pipelines.resources.signatures import (
    SignatureError,
    read_allowed_signers,
    sign,
    signing_key,
)

KEY_VAR, SIGNERS_VAR = "RELEASE_CHECKPOINT_KEY", "RELEASE_CHECKPOINT_SIGNERS"
FILE_VAR, WEBHOOK_VAR = "RELEASE_CHECKPOINT_FILE", "RELEASE_CHECKPOINT_WEBHOOK"
_WEBHOOK_TIMEOUT = 5.0


@dataclass(frozen=True)
class CheckpointSettings:
    """Per deployment: the key that signs, the keys verify trusts, where copies go."""

    key: Path | None = None  # a private key file, or a .pub whose private half is in the agent
    signers: Path | None = None  # allowed_signers file (or one .pub) of the trusted checkpoint keys
    copy_file: Path | None = None
    webhook: str | None = None

    @classmethod
    def from_env(cls) -> CheckpointSettings:
        def path(var: str) -> Path | None:
            value = os.environ.get(var, "").strip()
            return Path(value).expanduser() if value else None

        return cls(path(KEY_VAR), path(SIGNERS_VAR), path(FILE_VAR), os.environ.get(WEBHOOK_VAR) or None)

    def trusted_keys(self) -> list[str]:
        if self.signers is None:
            return []
        try:
            if self.signers.suffix == ".pub":
                return [" ".join(self.signers.read_text().split()[:2])]
            return [k for keys in read_allowed_signers(self.signers, CHECKPOINT_NAMESPACE).values() for k in keys]
        except (OSError, ValueError) as exc:
            raise ReleaseError(f"{SIGNERS_VAR}={self.signers}: cannot read the trusted checkpoint keys ({exc})") from None


@dataclass
class AnchorReport:
    """What the checkpoints say about the chain: `problems` empty when every one still matches."""

    checkpoints: int = 0
    newest: Checkpoint | None = None
    problems: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


def write_checkpoint(book: Any, settings: CheckpointSettings) -> tuple[Checkpoint, list[str]]:
    """Sign the chain head now (nothing new since the last checkpoint, or stored meanwhile by
    another writer: that one) and store it in the ledger and every configured copy; returns it and
    warnings about copies that failed. One checkpoint per head: `seq` is the table's key."""
    if settings.key is None:
        raise ReleaseError(f"no checkpoint key: set {KEY_VAR} to the deployment's SSH key (see docs/production.md)")
    existing = book.checkpoints()
    since = existing[-1].seq if existing else 0
    seq, head = book.head()
    if existing and since == seq:
        return existing[-1], []
    hashes = tuple(h for _, h in book.event_hashes(since, seq))
    now = datetime.now(UTC)
    statement = CheckpointStatement(book.ledger_id(), seq, head, now, since, hashes).text()
    signature = sign(statement, CHECKPOINT_NAMESPACE, settings.key)
    try:
        checkpoint = book.add_checkpoint(Checkpoint(seq, head, now, signing_key(statement, signature, CHECKPOINT_NAMESPACE),
                                                    statement, signature))
    except IntegrityError:  # another writer (a second product's sensor, cron) stored this head first; it copies it
        return next(c for c in reversed(book.checkpoints()) if c.seq == seq), []
    return checkpoint, copy_outside(checkpoint, settings)


def copy_outside(checkpoint: Checkpoint, settings: CheckpointSettings) -> list[str]:
    """Append to the copy file and post to the webhook; a failure is a warning, never lost silently."""
    record = checkpoint_record(checkpoint)
    warnings = []
    if settings.copy_file is not None:
        try:
            settings.copy_file.parent.mkdir(parents=True, exist_ok=True)
            with settings.copy_file.open("a", encoding="utf-8") as out:
                out.write(json.dumps(record, sort_keys=True) + "\n")
        except OSError as exc:
            warnings.append(f"checkpoint {checkpoint.seq} not copied to {settings.copy_file}: {exc.strerror}")
    if settings.webhook:
        try:
            httpx.post(settings.webhook, json=record, timeout=_WEBHOOK_TIMEOUT).raise_for_status()
        except httpx.HTTPError as exc:
            warnings.append(f"checkpoint {checkpoint.seq} not posted to the checkpoint webhook: {type(exc).__name__}")
    return warnings


def checkpoint_record(checkpoint: Checkpoint) -> dict[str, Any]:
    return {"seq": checkpoint.seq, "head": checkpoint.head, "created_at": checkpoint.created_at.isoformat(),
            "public_key": checkpoint.public_key, "statement": checkpoint.statement, "signature": checkpoint.signature}


def read_copies(path: Path) -> list[Checkpoint]:
    """The checkpoints in a copy file (JSON lines, as `copy_outside` writes)."""
    found = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
            found.append(Checkpoint(int(row["seq"]), row["head"], datetime.fromisoformat(row["created_at"]),
                                    row["public_key"], row["statement"], row["signature"]))
        except (ValueError, KeyError, TypeError) as exc:
            raise ReleaseError(f"{path} line {number}: not a checkpoint record ({exc})") from None
    return found


def verify_anchors(book: Any, settings: CheckpointSettings) -> AnchorReport:
    """Check every checkpoint (the ledger's and the outside copies): signed by a trusted key over
    this ledger, and every event it lists still has the hash it had then."""
    report = AnchorReport()
    stored = {c.seq: c for c in book.checkpoints()}
    anchors = dict(stored)
    if settings.copy_file is not None and settings.copy_file.exists():
        for copy in read_copies(settings.copy_file):
            if copy.seq not in stored:
                report.problems.append(f"checkpoint at event {copy.seq} (in {settings.copy_file}) is missing from "
                                       "the ledger's checkpoints table (deleted)")
            elif stored[copy.seq].statement != copy.statement:
                report.problems.append(f"checkpoint at event {copy.seq} in the ledger differs from its copy in "
                                       f"{settings.copy_file} (replaced)")
            anchors[copy.seq] = copy  # the outside copy is the anchor
    trusted = settings.trusted_keys()
    if anchors and not trusted:
        report.notes.append(f"checkpoint signatures checked against their own keys only; set {SIGNERS_VAR} to the "
                            "deployment's public key so a checkpoint signed by anyone else is refused")
    ledger_id = book.ledger_id()
    for seq in sorted(anchors):
        report.problems += _checkpoint_problems(book, anchors[seq], trusted, ledger_id)
    report.checkpoints = len(anchors)
    report.newest = anchors[max(anchors)] if anchors else None
    return report


def _checkpoint_problems(book: Any, checkpoint: Checkpoint, trusted: list[str], ledger_id: str) -> list[str]:
    name = f"checkpoint at event {checkpoint.seq} ({checkpoint.created_at:%Y-%m-%d %H:%M:%S} UTC)"
    try:
        statement = CheckpointStatement.parse(checkpoint.statement)
        key = signing_key(checkpoint.statement, checkpoint.signature, CHECKPOINT_NAMESPACE)
    except (StatementError, SignatureError) as exc:
        return [f"{name}: its signature does not verify ({exc})"]
    if trusted and not any(same_key(key, k) for k in trusted):
        return [f"{name} is signed by {key_fingerprint(key)}, which is not a trusted checkpoint key ({SIGNERS_VAR})"]
    if statement.ledger != ledger_id:
        return [f"{name} is for ledger {statement.ledger}, but this ledger is {ledger_id} (replaced or restored?)"]
    actual = dict(book.event_hashes(statement.since, statement.seq))
    for seq, expected in zip(range(statement.since + 1, statement.seq + 1), statement.hashes, strict=True):
        if seq not in actual:
            return [f"event {seq} is missing: {name} lists it"]
        if actual[seq] != expected:
            kind = next((e.kind for e in book.events() if e.seq == seq), "?")
            return [(f"event {seq} ({kind}) differs from {name}: the chain was rewritten from event {seq} on, "
                    "hashes recomputed")]
    return []
