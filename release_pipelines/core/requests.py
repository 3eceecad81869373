"""Signed release requests (pure): whether a request queued for a release window may launch.

Whoever queues a request becomes the release's launcher, who may not approve it (maker-checker),
so under a manifest's `requests:` rule the requester is proven like an approver: a statement of
phase `launch_request` whose subject is the request id, naming this product and these versions,
signed with a key the rule's signers list under the requester's name. `signatures: optional`
also accepts unsigned requests, shown as unsigned; without a rule every request is queued and
launched as before.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from release_pipelines.core.approvals import Evidence, principals_of, shown
from release_pipelines.core.manifest import Signatures, SignedBy
from release_pipelines.core.statements import LAUNCH_REQUEST, key_fingerprint


@dataclass(frozen=True)
class Asked:
    """What a request asks for, as its ledger row says (or the CLI, before it is queued)."""

    id: str
    product: str
    versions: Mapping[str, str]
    requester: str

    @classmethod
    def of(cls, request: Any) -> Asked:
        """From a ledger `ReleaseRequest`."""
        return cls(request.id, request.product, dict(request.versions), request.created_by)


def request_refusal(rule: SignedBy | None, asked: Asked, evidence: Evidence) -> str | None:
    """Why this request may not launch under the manifest's `requests` rule (None: it may).

    `evidence.approver` is the requester and `evidence.head_seen` whether the ledger head the
    statement names is in this ledger's chain."""
    who, request = asked.requester, asked.id
    if rule is None:
        return None
    if not evidence.signed:
        if rule.signatures is Signatures.optional:
            return None
        return (f"request {request} by {who} is unsigned and the manifest's requests rule requires a signature "
                "(release request ... --key ~/.ssh/id_ed25519, or your SSH agent)")
    statement = evidence.statement
    if evidence.signing_key is None:
        return f"{who}'s signature on request {request} does not verify: {evidence.signature_problem or 'no valid signature'}"
    if statement.phase != LAUNCH_REQUEST:
        return f"{who}'s signed statement is a {statement.phase} approval, not a launch request"
    if statement.subject != request:
        return f"{who}'s signature is for request {statement.subject}, not {request} (replayed)"
    expected = (asked.product, "", dict(asked.versions), who)
    signed = (statement.product, statement.environment, dict(statement.versions), statement.approver)
    for name, want, got in zip(("product", "environment", "versions", "requester"), expected, signed, strict=True):
        if want != got:
            return f"{who}'s signed request {request} names {name} {shown(got)}, not {shown(want)}"
    owners = principals_of(rule, evidence.signing_key)
    if who not in owners:
        belongs = f"it belongs to {', '.join(owners)}" if owners else "no signer of the requests rule has it"
        return (f"request {request} is signed with key {key_fingerprint(evidence.signing_key)}, which is not "
                f"{who}'s ({belongs})")
    if not evidence.head_seen:
        return f"{who}'s signed request names ledger head {statement.head_seq}, which is not in this ledger's chain"
    return None

