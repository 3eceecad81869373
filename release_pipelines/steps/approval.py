"""Approvals against the ledger: record a sign-off, and ask whose sign-off a phase still waits for.

Every recorded approval is checked again whenever it is counted - its SSH signature over its
statement, and the ledger head the statement names - so a row written straight into the ledger
database counts for nothing. The rules are pure (`core.approvals`); this module reads the ledger
and verifies signatures around them. A refusal records nothing.
"""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from release_pipelines.core.approvals import (
    Evidence,
    approval_refusal,
    counted,
    missing_approvals_for,
    rules_for,
)
from release_pipelines.core.errors import ReleaseError
from release_pipelines.core.manifest import ApprovalPhase, Manifest, SignedBy
from release_pipelines.core.statements import (
    APPROVAL_NAMESPACE,
    ApprovalStatement,
    SignedDocument,
    StatementError,
)
from release_pipelines.core.windows import break_glass_waiting_for
from release_pipelines.resources.ledger_schema import GENESIS_HASH
from release_pipelines.resources.signatures import SignatureError, sign, signing_key


def statement_for(book: Any, release: Any, phase: str, approver: str, comment: str | None = None,
                  at: datetime | None = None) -> ApprovalStatement:
    """The statement an approver signs: this release, phase and versions, the ledger head now."""
    seq, head = book.head()
    return ApprovalStatement(release.id, phase, release.product, release.environment or "", dict(release.versions),
                             approver, seq, head, at or datetime.now(UTC), comment or "")


def sign_approval(book: Any, release: Any, phase: str, approver: str, comment: str | None = None,
                  key: Path | None = None) -> str:
    """A signed approval document for `phase` of `release` by `approver`, signed with `key` (a key
    file, or None: the SSH agent's first key); recording it is `approve(..., signed=...)`."""
    statement = statement_for(book, release, phase, approver, comment).text()
    return SignedDocument(statement, sign(statement, APPROVAL_NAMESPACE, key)).text()


def evidence_of(book: Any, release: Any, approver: str, phase: str, statement: str | None,
                signature: str | None) -> Evidence:
    """What one approval proves: its statement, the key that signed it, the ledger head it saw."""
    evidence = verified_evidence(approver, phase, statement, signature)
    if evidence.signing_key is None:
        return evidence
    return replace(evidence, head_seen=_head_seen(book, release, evidence.statement))


def verified_evidence(who: str, phase: str, statement: str | None, signature: str | None) -> Evidence:
    """A signed statement checked: parsed, and the key whose signature over it verifies (None, with
    the reason, when none does); `head_seen` is left for the caller, who knows which chain counts."""
    if not signature:
        return Evidence(who, phase)
    try:
        parsed = ApprovalStatement.parse(statement or "")
    except StatementError as exc:
        return Evidence(who, phase, _unreadable(who, phase), signature_problem=str(exc))
    try:
        return Evidence(who, phase, parsed, signing_key(parsed.text(), signature, APPROVAL_NAMESPACE))
    except SignatureError as exc:
        return Evidence(who, phase, parsed, None, str(exc))


def _head_seen(book: Any, release: Any, statement: ApprovalStatement) -> bool:
    started = next((e.seq for e in book.events(release.id) if e.kind == "state:planned"), None)
    return started is not None and statement.head_seq >= started and head_in_chain(book, statement)


def head_in_chain(book: Any, statement: ApprovalStatement) -> bool:
    """Whether the ledger head a statement names (seq and hash) is this ledger's event at that seq
    (seq 0: the chain's genesis)."""
    seq, head = statement.head_seq, statement.head_hash
    if seq == 0:
        return head == GENESIS_HASH
    return book.event_hashes(seq - 1, seq) == [(seq, head)]


def _unreadable(who: str, phase: str) -> ApprovalStatement:
    """A stand-in for a statement that does not parse: signed, but proving nothing."""
    return ApprovalStatement("", phase, "", "", {}, who, -1, "", datetime.min.replace(tzinfo=UTC))


def approve(
    manifest: Manifest,
    book: Any,
    release_id: str,
    phase: str,
    approver: str,
    comment: str | None = None,
    signed: str | None = None,
):
    """Record the approval in the ledger, or raise ReleaseError (nothing recorded) when refused.

    `signed` is a signed approval document (`release approve --sign-only`); its statement must name
    this release, phase and approver and its signature verify for the phase's rule. Unsigned
    approvals are recorded only when every rule of the phase says `signatures: optional`."""
    release = book.get(release_id)
    problem = approval_refusal(manifest, release, phase, approver)
    if problem:
        raise ReleaseError(f"approval refused: {problem}")
    rules = [r for r in manifest.approvals if r.phase.value == phase]
    statement = signature = None
    if signed:
        document = _document(signed)
        statement, signature = document.statement, document.signature
        evidence = evidence_of(book, release, approver, phase, statement, signature)
        problems = [_why_not(rule, release, phase, evidence) for rule in rules]
        if all(problems):
            raise ReleaseError(f"approval refused: {problems[0]}")
    elif any(r.signatures.value == "required" for r in rules):
        raise ReleaseError(
            f"approval refused: phase {phase} of {manifest.product} needs a signed approval; sign it with "
            f"release approve {release.id} --phase {phase} --key ~/.ssh/id_ed25519 (or your SSH agent)"
        )
    return book.add_approval(release.id, phase, approver, comment or None, statement, signature)


def approve_signed(manifest: Manifest, book: Any, signed: str, release_id: str = "", phase: str = "",
                   comment: str | None = None, approver: str = ""):
    """Record a pasted signed approval document: release, phase and approver come from its statement
    (a release id, phase or approver given as well must agree)."""
    statement = ApprovalStatement.parse(_document(signed).statement) if signed.strip() else None
    if statement is None:
        raise ReleaseError("approval refused: the signed approval is empty")
    for name, given, found in (("release_id", release_id, statement.subject), ("phase", phase, statement.phase),
                               ("approver", approver, statement.approver)):
        if given and given != found:
            raise ReleaseError(f"approval refused: {name} is {given} but the signed statement is for {found}")
    return approve(manifest, book, statement.subject, statement.phase, statement.approver,
                   comment or statement.comment, signed)


def approve_entry(rule: SignedBy, book: Any, release: Any, phase: str, approver: str, comment: str | None = None,
                  signed: str | None = None):
    """Record an approval to enter an environment (`promote_into`), verified like any approval;
    unsigned only under `signatures: optional`."""
    statement = signature = None
    if signed:
        document = _document(signed)
        statement, signature = document.statement, document.signature
        problem = _why_not(rule, release, phase, evidence_of(book, release, approver, phase, statement, signature))
        if problem:
            raise ReleaseError(f"approval refused: {problem}")
    elif rule.signatures.value == "required":
        raise ReleaseError(f"approval refused: entering {phase.split(':')[-1]} needs a signed approval; "
                           "add --key ~/.ssh/id_ed25519 (or load the key into your SSH agent)")
    return book.add_approval(release.id, phase, approver, comment, statement, signature)


def _document(signed: str) -> SignedDocument:
    try:
        document = SignedDocument.parse(signed)
        ApprovalStatement.parse(document.statement)
    except StatementError as exc:
        raise ReleaseError(f"approval refused: {exc}") from None
    return document


def _why_not(rule: SignedBy, release: Any, phase: str, evidence: Evidence) -> str | None:
    _, ignored = counted(rule, rule.group, release, phase, [evidence])
    return ignored[0] if ignored else None


def evidence_for(book: Any, release: Any, phase: str) -> list[Evidence]:
    return [evidence_of(book, release, a.approver, a.phase, a.statement, a.signature)
            for a in book.approvals(release.id, phase)]


def missing_approvals(manifest: Manifest, book: Any, release: Any, phase: ApprovalPhase, weight: int | None = None) -> str | None:
    """Whose approval `phase` of `release` still waits for (None: all in), from the ledger; a
    break-glass release also waits for its break_glass approval before it passes the first step.
    Only approvals whose signatures verify (or unsigned ones under `signatures: optional`) count."""
    if phase is ApprovalPhase.promote:
        waiting = break_glass_waiting_for(manifest, release, book.events(release.id),
                                          counted_approvals(manifest, book, release, ApprovalPhase.break_glass))
        if waiting:
            return waiting
    if not rules_for(manifest, phase, weight):
        return None
    return missing_approvals_for(manifest, release, evidence_for(book, release, phase.value), phase, weight)


def counted_approvals(manifest: Manifest, book: Any, release: Any, phase: ApprovalPhase) -> list[Any]:
    """The recorded approvals of `phase` that count for at least one of its rules."""
    rules = rules_for(manifest, phase)
    return [a for a in book.approvals(release.id, phase.value)
            if any(_why_not(rule, release, phase.value,
                            evidence_of(book, release, a.approver, a.phase, a.statement, a.signature)) is None
                   for rule in rules)]


def entry_approvers(rule: SignedBy, group: list[str], book: Any, release: Any, phase: str,
                    excluded: set[str]) -> list[str]:
    """Who counts for entering an environment (`promote_into`): verified like any approval, and
    neither the previous stage's launcher nor this launch's actor."""
    evidence = [e for e in evidence_for(book, release, phase) if e.approver not in excluded]
    got, _ = counted(rule, group, release, phase, evidence)
    return got
