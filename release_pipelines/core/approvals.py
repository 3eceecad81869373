"""Maker-checker rules (pure): which approvals a phase needs and whose are still missing.

The launcher can never approve their own release; approvals from outside the rule's group do not
count, and each person approves a phase once. The messages say exactly who may approve and whose
approval the release waits for.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from release_pipelines.core.manifest import ApprovalPhase, ApprovalRule, Manifest
from release_pipelines.core.states import TERMINAL_STATES

PHASES = [p.value for p in ApprovalPhase]


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


def approval_refusal(manifest: Manifest, release: Any, phase: str, approver: str) -> str | None:
    """Why `approver` may not approve `phase` of `release`, or None when they may."""
    if phase not in PHASES:
        return f"unknown phase {phase!r}; choose one of: {', '.join(PHASES)}"
    if not approver.strip():
        return "say who approves (--as NAME, or the approver field); nobody was given"
    if release.product != manifest.product:
        return f"release {release.id} is a {release.product} release, not {manifest.product}"
    if release.state in TERMINAL_STATES:
        return f"release {release.id} is already {release.state.value}; there is nothing left to approve"
    rules = [r for r in manifest.approvals if r.phase.value == phase]
    if not rules:
        configured = sorted({r.phase.value for r in manifest.approvals})
        return f"the {manifest.product} manifest has no approval rule for phase {phase}" + (
            f" (it has rules for: {', '.join(configured)})"
            if configured
            else " (it has no approval rules)"
        )
    group = sorted({member for rule in rules for member in rule.group})
    if approver == release.created_by:
        others = [g for g in group if g != approver]
        return (
            f"{approver} launched release {release.id} and cannot approve it (maker-checker); "
            f"ask {', '.join(others) or 'another member of the approval group'}"
        )
    if approver not in group:
        return f"{approver} may not approve phase {phase} of {manifest.product}; the approvers are: {', '.join(group)}"
    return None
