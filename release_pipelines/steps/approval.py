"""Approvals against the ledger: record a sign-off, and ask whose sign-off a phase still waits for.

The rules are pure (`core.approvals`); this module reads and writes the ledger around them. A
refusal records nothing.
"""

from __future__ import annotations

from typing import Any

from release_pipelines.core.approvals import approval_refusal, missing_approvals_for
from release_pipelines.core.errors import ReleaseError
from release_pipelines.core.manifest import ApprovalPhase, Manifest
from release_pipelines.core.windows import break_glass_waiting_for


def approve(
    manifest: Manifest,
    book: Any,
    release_id: str,
    phase: str,
    approver: str,
    comment: str | None = None,
):
    """Record the approval in the ledger, or raise ReleaseError (nothing recorded) when refused."""
    release = book.get(release_id)
    problem = approval_refusal(manifest, release, phase, approver)
    if problem:
        raise ReleaseError(f"approval refused: {problem}")
    return book.add_approval(release.id, phase, approver, comment or None)


def missing_approvals(manifest: Manifest, book: Any, release: Any, phase: ApprovalPhase, weight: int | None = None) -> str | None:
    """Whose approval `phase` of `release` still waits for (None: all in), from the ledger; a
    break-glass release also waits for its break_glass approval before it passes the first step."""
    if phase is ApprovalPhase.promote:
        waiting = break_glass_waiting_for(manifest, release, book.events(release.id), book.approvals(release.id, "break_glass"))
        if waiting:
            return waiting
    return missing_approvals_for(manifest, release, book.approvals(release.id, phase.value), phase, weight)
