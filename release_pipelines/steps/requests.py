"""Release requests against the ledger: sign one, queue it only when it counts, and check a queued
one again before the release-window schedule launches it.

The request id is made before signing, so the signed statement names it and the same signature
can neither queue twice (the ledger refuses the id) nor stand for another request (replayed).
The rule is pure (`core.requests`); this module reads the ledger and verifies signatures around it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from release_pipelines.core.approvals import Evidence
from release_pipelines.core.errors import ReleaseError
from release_pipelines.core.manifest import Manifest
from release_pipelines.core.requests import Asked, request_refusal
from release_pipelines.core.statements import (
    APPROVAL_NAMESPACE,
    LAUNCH_REQUEST,
    ApprovalStatement,
    SignedDocument,
)
from release_pipelines.resources.ledger import new_request_id
from release_pipelines.resources.signatures import sign
from release_pipelines.steps.approval import head_in_chain, verified_evidence


@dataclass(frozen=True)
class SignedRequest:
    """A request id and the signed statement that names it."""

    id: str
    document: SignedDocument


def sign_request(book: Any, product: str, versions: Mapping[str, str], requester: str, comment: str | None = None,
                 key: Path | None = None, at: datetime | None = None) -> SignedRequest:
    """A new request id and `requester`'s signature over the statement asking for `versions` of
    `product` (a key file, or None: the SSH agent's first key); queueing it is `queue_request`."""
    now = at or datetime.now(UTC)
    request_id = new_request_id(product, now)
    seq, head = book.head()
    statement = ApprovalStatement(request_id, LAUNCH_REQUEST, product, "", dict(versions), requester, seq, head,
                                  now, comment or "").text()
    return SignedRequest(request_id, SignedDocument(statement, sign(statement, APPROVAL_NAMESPACE, key)))


def queue_request(manifest: Manifest, book: Any, versions: Mapping[str, str], requester: str, window: str = "next",
                  comment: str | None = None, signed: SignedRequest | None = None, product: str | None = None):
    """Queue the request for `product` (default: the manifest's; an environment's is
    `<product>_<environment>`, whose window schedule launches it), or raise ReleaseError (nothing
    queued) when the manifest's `requests` rule would not let it launch: unsigned where signatures
    are required, or a signature that is not the requester's over exactly this request."""
    name = product or manifest.product
    if signed is not None and (manifest.requests is None or not manifest.requests.signer_keys()):
        raise ReleaseError(f"request refused: the {manifest.product} manifest has no requests.signers to check a "
                           "signature against; add a `requests:` rule with signers, or queue it without --key")
    asked = Asked(signed.id if signed else "", name, dict(versions), requester)
    statement, signature = (signed.document.statement, signed.document.signature) if signed else (None, None)
    problem = request_refusal(manifest.requests, asked, evidence_of_request(book, requester, statement, signature))
    if problem:
        raise ReleaseError(f"request refused: {problem}")
    return book.request_release(name, versions, requester, window, comment,
                                request_id=signed.id if signed else None, statement=statement, signature=signature)


def launch_refusal(manifest: Manifest, book: Any, request: Any) -> str | None:
    """Why a queued ledger request may not launch now (None: it may); checked again at launch, so a
    key removed from the signers since it was queued stops it."""
    evidence = evidence_of_request(book, request.created_by, request.statement, request.signature)
    return request_refusal(manifest.requests, Asked.of(request), evidence)


def evidence_of_request(book: Any, requester: str, statement: str | None, signature: str | None) -> Evidence:
    """What a request proves: its statement, the key whose signature over it verifies, and whether
    the ledger head it names is in this ledger's chain."""
    evidence = verified_evidence(requester, LAUNCH_REQUEST, statement, signature)
    if evidence.signing_key is None:
        return evidence
    return replace(evidence, head_seen=head_in_chain(book, evidence.statement))

