"""Maker-checker rules (pure): which approvals a phase needs, which recorded ones count, and whose
are still missing.

An approval counts for a rule when it is signed by a key the rule's signers list under the
approver's name, over a statement for exactly this release (id, phase, product, versions) made
after the release started, by a member of the rule's group who did not launch it and whose key is
not the launcher's. A rule with `signatures: optional` also counts unsigned approvals, shown as
unsigned. The messages say who may approve, whose approval the release waits for, and why a
recorded approval did not count.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from release_pipelines.core.manifest import (
    ApprovalPhase,
    ApprovalRule,
    Manifest,
    Signatures,
    SignedBy,
)
from release_pipelines.core.statements import ApprovalStatement, key_fingerprint, same_key
from release_pipelines.core.states import TERMINAL_STATES

PHASES = [p.value for p in ApprovalPhase]


@dataclass(frozen=True)
class Evidence:
    """One recorded approval as the boundary found it: the statement it carries (None: unsigned),
    the public key whose signature over it verified (None: none did, `signature_problem` says why),
    and whether the ledger head the statement names is in the chain after the release started."""

    approver: str
    phase: str
    statement: ApprovalStatement | None = None
    signing_key: str | None = None
    signature_problem: str | None = None
    head_seen: bool = False

    @property
    def signed(self) -> bool:
        return self.statement is not None


def principals_of(rule: SignedBy, public_key: str) -> list[str]:
    return sorted(p for p, keys in rule.signer_keys().items() if any(same_key(k, public_key) for k in keys))


def not_counted(rule: SignedBy, group: list[str], release: Any, phase: str, evidence: Evidence) -> str | None:
    """Why this approval does not count for `rule` (None: it counts)."""
    launcher, who = release.created_by, evidence.approver
    if who == launcher:
        return f"{who} launched release {release.id} (maker-checker)"
    if who not in group:
        return f"{who} is not in the {phase} group ({', '.join(group)})"
    if not evidence.signed:
        return None if rule.signatures is Signatures.optional else f"{who}'s approval is unsigned"
    statement = evidence.statement
    if evidence.signing_key is None:
        return f"{who}'s signature does not verify: {evidence.signature_problem or 'no valid signature'}"
    if statement.subject != release.id:
        return f"{who}'s signature is for release {statement.subject}, not {release.id} (replayed)"
    expected = (phase, release.product, getattr(release, "environment", "") or "", dict(release.versions), who)
    signed = (statement.phase, statement.product, statement.environment, dict(statement.versions), statement.approver)
    for name, want, got in zip(("phase", "product", "environment", "versions", "approver"), expected, signed, strict=True):
        if want != got:
            return f"{who}'s signed statement names {name} {shown(got)}, not {shown(want)}"
    owners = principals_of(rule, evidence.signing_key)
    fingerprint = key_fingerprint(evidence.signing_key)
    if launcher in owners:
        return f"{who}'s approval is signed with the key of {launcher}, who launched release {release.id}"
    if who not in owners:
        belongs = f"it belongs to {', '.join(owners)}" if owners else "no signer of the rule has it"
        return f"{who}'s approval is signed with key {fingerprint}, which is not {who}'s ({belongs})"
    if not evidence.head_seen:
        return (f"{who}'s statement names ledger head {statement.head_seq}, which is not in this ledger's chain "
                f"after release {release.id} started")
    return None


def counted(rule: SignedBy, group: list[str], release: Any, phase: str, evidence: Iterable[Evidence]) -> tuple[list[str], list[str]]:
    """(approvers who count, why each other recorded approval does not)."""
    got, ignored = set(), []
    for item in evidence:
        problem = not_counted(rule, group, release, phase, item)
        if problem is None:
            got.add(item.approver + ("" if item.signed else " (unsigned)"))
        else:
            ignored.append(problem)
    return sorted(got), ignored


def rules_for(manifest: Manifest, phase: ApprovalPhase, weight: int | None = None) -> list[ApprovalRule]:
    rules = [r for r in manifest.approvals if r.phase == phase]
    if phase is ApprovalPhase.promote and weight is not None:
        rules = [r for r in rules if r.above_weight is None or weight > r.above_weight]
    return rules


def missing_approvals_for(
    manifest: Manifest, release: Any, evidence: list[Evidence], phase: ApprovalPhase, weight: int | None = None
) -> str | None:
    """None when every rule for the phase is satisfied, else who must still approve (and why a
    recorded approval did not count)."""
    for rule in rules_for(manifest, phase, weight):
        got, ignored = counted(rule, rule.group, release, phase.value, evidence)
        if len(got) < rule.required:
            names = {g.split(" ")[0] for g in got}
            eligible = [g for g in rule.group if g != release.created_by and g not in names]
            how = "--as NAME" if rule.signatures is Signatures.optional else "--as NAME --key ~/.ssh/id_ed25519"
            return (
                f"release {release.id} waits for {rule.required - len(got)} more {phase.value} approval(s) "
                f"from {', '.join(eligible)} (launcher {release.created_by} cannot approve; "
                f"have: {', '.join(got) or 'none'})"
                + (f"; not counted: {'; '.join(ignored)}" if ignored else "")
                + f"; run: release approve {release.id} --phase {phase.value} {how}"
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


def signatures_required(rules: Iterable[SignedBy]) -> bool:
    """Whether an approval for these rules must be signed (any rule that requires it)."""
    return any(r.signatures is Signatures.required for r in rules)


def shown(value: Any) -> str:
    """A value as messages show it: k=v pairs for a mapping, repr otherwise."""
    if isinstance(value, dict):
        return ", ".join(f"{k}={v}" for k, v in sorted(value.items())) or "(none)"
    return repr(value)
