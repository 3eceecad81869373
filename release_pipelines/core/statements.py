"""Canonical statements that people and deployments sign: an approval and a ledger checkpoint.

A signature (SSHSIG, as `ssh-keygen -Y sign` makes for git) covers the statement's exact bytes,
so a statement has one spelling: fixed keys in a fixed order, one line each. `parse` refuses
anything else, so what was verified is exactly what is read. Pure: text in, text out.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime

from release_pipelines.core.errors import ReleaseError

APPROVAL_NAMESPACE = "release-approval"
CHECKPOINT_NAMESPACE = "release-ledger-checkpoint"
SIGNATURE_BEGIN = "-----BEGIN SSH SIGNATURE-----"
SIGNATURE_END = "-----END SSH SIGNATURE-----"
LAUNCH_REQUEST = "launch_request"
"""The phase of a signed release request (queued for a window); its subject is the request id."""

_APPROVAL_HEADER = "release-approval v1"
_CHECKPOINT_HEADER = "release-ledger-checkpoint v1"
_APPROVAL_KEYS = ("subject", "phase", "product", "environment", "versions", "approver", "ledger-head",
                  "time", "comment")
_HASH = re.compile(r"^[0-9a-f]{64}$")


class StatementError(ReleaseError):
    """A statement or signed document that is not in the one canonical form."""


@dataclass(frozen=True)
class ApprovalStatement:
    """What an approver signs: this phase of this release of these versions, after seeing the
    ledger at `head_seq`/`head_hash` (a statement for one release never counts for another)."""

    subject: str  # the release id (a release request's id for phase launch_request)
    phase: str
    product: str
    environment: str
    versions: Mapping[str, str]
    approver: str
    head_seq: int
    head_hash: str
    time: datetime
    comment: str = ""

    def text(self) -> str:
        versions = " ".join(f"{s}={v}" for s, v in sorted(self.versions.items()))
        values = (self.subject, self.phase, self.product, self.environment, versions, self.approver,
                  f"{self.head_seq} {self.head_hash}", _time(self.time), " ".join(self.comment.split()))
        return "\n".join([_APPROVAL_HEADER, *(f"{k}: {v}" for k, v in zip(_APPROVAL_KEYS, values, strict=True))]) + "\n"

    @classmethod
    def parse(cls, text: str) -> ApprovalStatement:
        fields = _fields(text, _APPROVAL_HEADER, _APPROVAL_KEYS)
        try:
            seq, head = fields["ledger-head"].split(" ")
            versions = dict(pair.split("=", 1) for pair in fields["versions"].split(" ") if pair)
            statement = cls(fields["subject"], fields["phase"], fields["product"], fields["environment"],
                            versions, fields["approver"], int(seq), head, _parse_time(fields["time"]),
                            fields["comment"])
        except ValueError as exc:
            raise StatementError(f"not a release approval statement: {exc}") from None
        if statement.text() != text:
            raise StatementError("the approval statement is not in canonical form (edited after signing?)")
        return statement


@dataclass(frozen=True)
class SignedDocument:
    """A statement followed by its armored SSH signature: what `release approve --sign-only`
    prints and the Dagster approval job's `signed_approval` field takes."""

    statement: str
    signature: str

    def text(self) -> str:
        return self.statement + self.signature.strip() + "\n"

    @classmethod
    def parse(cls, text: str) -> SignedDocument:
        body = text.replace("\r\n", "\n").strip("\n") + "\n"
        statement, marker, rest = body.partition(SIGNATURE_BEGIN)
        if not marker or SIGNATURE_END not in rest:
            raise StatementError(
                "a signed approval is the statement followed by an SSH signature block "
                f"({SIGNATURE_BEGIN} ... {SIGNATURE_END}); paste the whole output of `release approve --sign-only`"
            )
        signature = marker + rest.split(SIGNATURE_END)[0] + SIGNATURE_END + "\n"
        return cls(statement.lstrip("\n"), signature)


@dataclass(frozen=True)
class CheckpointStatement:
    """What a deployment key signs: the chain head at `seq`, and the hash of every event since the
    previous checkpoint, so a rewrite with recomputed hashes is found and its first event named."""

    ledger: str  # the ledger's own id (a checkpoint of one ledger proves nothing about another)
    seq: int
    head: str
    time: datetime
    since: int  # the previous checkpoint's seq (0: from the first event)
    hashes: tuple[str, ...] = field(default=())  # events since+1 .. seq

    def text(self) -> str:
        lines = [_CHECKPOINT_HEADER, f"ledger: {self.ledger}", f"seq: {self.seq}", f"head: {self.head}",
                 f"time: {_time(self.time)}", f"since: {self.since}", "hashes:"]
        return "\n".join(lines + list(self.hashes)) + "\n"

    @classmethod
    def parse(cls, text: str) -> CheckpointStatement:
        head_part, marker, tail = text.partition("\nhashes:\n")
        if not marker:
            raise StatementError("not a ledger checkpoint statement: no hashes line")
        fields = _fields(head_part + "\n", _CHECKPOINT_HEADER, ("ledger", "seq", "head", "time", "since"))
        hashes = tuple(tail.splitlines())
        try:
            statement = cls(fields["ledger"], int(fields["seq"]), fields["head"], _parse_time(fields["time"]),
                            int(fields["since"]), hashes)
        except ValueError as exc:
            raise StatementError(f"not a ledger checkpoint statement: {exc}") from None
        bad = [h for h in (statement.head, *hashes) if not _HASH.match(h)]
        if bad or len(hashes) != statement.seq - statement.since or (hashes and hashes[-1] != statement.head):
            raise StatementError("the checkpoint's hashes do not add up to its head")
        if statement.text() != text:
            raise StatementError("the checkpoint statement is not in canonical form")
        return statement


def key_fingerprint(public_key: str) -> str:
    """`SHA256:...` of an OpenSSH public key line, as `ssh-keygen -l` prints it."""
    parts = public_key.split()
    try:
        blob = base64.b64decode(parts[1], validate=True)
    except (IndexError, binascii.Error):
        return "SHA256:?"
    return "SHA256:" + base64.b64encode(hashlib.sha256(blob).digest()).decode().rstrip("=")


def same_key(a: str, b: str) -> bool:
    """Two OpenSSH public key lines name the same key (type and key data; comments ignored)."""
    return a.split()[:2] == b.split()[:2]


def _time(value: datetime) -> str:
    return value.astimezone(UTC).isoformat(timespec="microseconds")


def _parse_time(text: str) -> datetime:
    parsed = datetime.fromisoformat(text)
    if parsed.tzinfo is None:
        raise ValueError(f"time {text!r} has no UTC offset")
    return parsed


def _fields(text: str, header: str, keys: tuple[str, ...]) -> dict[str, str]:
    lines = text.split("\n")
    if not text.endswith("\n") or lines[0] != header or len(lines) != len(keys) + 2:
        raise StatementError(f"not a {header.split()[0]} statement: expected {header!r} and the lines "
                             f"{', '.join(keys)}")
    found = {}
    for key, line in zip(keys, lines[1:-1], strict=True):
        name, sep, value = line.partition(": ")
        if name != key or not sep:
            raise StatementError(f"not a {header.split()[0]} statement: line {line[:40]!r} where {key} belongs")
        found[key] = value
    return found
