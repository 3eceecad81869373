"""Maker-checker rules (pure): which approvals a phase needs and whose are still missing.

The launcher can never approve their own release; approvals from outside the rule's group do not
count. The message says exactly whose approval the release waits for.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from release_pipelines.manifest import ApprovalPhase, ApprovalRule, Manifest


def rules_for(manifest: Manifest, phase: ApprovalPhase, weight: int | None = None) -> list[ApprovalRule]:
    rules = [r for r in manifest.approvals if r.phase == phase]
    if phase is ApprovalPhase.promote and weight is not None:
        rules = [r for r in rules if r.above_weight is None or weight > r.above_weight]
    return rules


def valid_approvers(rule: ApprovalRule, approvals: Iterable[Any], launcher: str) -> list[str]:
    return sorted({a.approver for a in approvals if a.approver in rule.group and a.approver != launcher})


def missing_approvals_for(
    manifest: Manifest, release: Any, approvals: list[Any], phase: ApprovalPhase, weight: int | None = None
) -> str | None:
    """None when every rule for the phase is satisfied, else who must still approve."""
    for rule in rules_for(manifest, phase, weight):
        got = valid_approvers(rule, approvals, release.created_by)
        if len(got) < rule.required:
            eligible = [g for g in rule.group if g != release.created_by and g not in got]
            return (
                f"release {release.id} waits for {rule.required - len(got)} more {phase.value} approval(s) "
                f"from {', '.join(eligible)} (launcher {release.created_by} cannot approve; "
                f"have: {', '.join(got) or 'none'}); run: release approve {release.id} --phase {phase.value} --as NAME"
            )
    return None


def missing_approvals(manifest: Manifest, book: Any, release: Any, phase: ApprovalPhase, weight: int | None = None) -> str | None:
    """The same, reading the approvals from the ledger; a break-glass release also waits for its
    break_glass approval before it is promoted past the first step."""
    if phase is ApprovalPhase.promote:
        from release_pipelines.windows import break_glass_waiting_for

        waiting = break_glass_waiting_for(manifest, release, book.events(release.id), book.approvals(release.id, "break_glass"))
        if waiting:
            return waiting
    return missing_approvals_for(manifest, release, book.approvals(release.id, phase.value), phase, weight)
