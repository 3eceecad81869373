"""`<product>_approve`: record a person's sign-off (maker-checker), from the Launchpad or the CLI.

`approve` is the one rule both use: the launcher of a release never approves it, only members of
the phase's approval group may, and each person approves a phase once. A refusal records nothing.
Dagster is imported only when the job is built, so the CLI stays quick.
"""

from typing import Any

from release_pipelines.errors import ReleaseError
from release_pipelines.manifest import ApprovalPhase, Manifest
from release_pipelines.states import TERMINAL_STATES

PHASES = [p.value for p in ApprovalPhase]


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


def build_approval_job(product):
    """The Launchpad form: release_id, phase, approver (default: the signed-in Dagster user), comment."""
    from dagster import Config, Failure, JobDefinition, OpExecutionContext, in_process_executor, op  # noqa: F401
    from pydantic import Field

    from release_pipelines.jobs.common import USER_TAG, product_job, tag_run
    from release_pipelines.jobs.promote import find_release
    from resources.dagster_resources import LedgerResource

    class ApprovalConfig(Config):
        release_id: str = Field(default="", description="empty = the product's active release")
        phase: str = Field(default="promote", description=f"one of: {', '.join(PHASES)}")
        approver: str = Field(
            default="", description="empty = the signed-in Dagster user (dagster/user tag)"
        )
        comment: str = Field(default="", description="why, recorded with the approval")

    @op(name="approve", tags={"kind": "approval"})
    def approve_op(
        context: OpExecutionContext, config: ApprovalConfig, ledger: LedgerResource
    ) -> None:
        """Record the sign-off; refused (nothing recorded) for the launcher or anyone outside the group."""
        book = ledger.open()
        signed_in = context.run.tags.get(USER_TAG, "")
        approver = config.approver.strip() or signed_in
        try:
            if signed_in and approver != signed_in:
                raise ReleaseError(
                    f"approval refused: you are signed in as {signed_in} and cannot approve as {approver}"
                )
            release = find_release(book, product, config.release_id)
            tag_run(context, product, release.id)
            recorded = approve(
                product.manifest, book, release.id, config.phase, approver, config.comment
            )
        except ReleaseError as exc:
            raise Failure(description=str(exc)) from None
        context.log.info(
            f"[release {recorded.release_id}] {recorded.approver} approved {recorded.phase} of release {recorded.release_id}"
        )

    return product_job(
        product,
        "approve",
        f"Approve a phase of a {product.name} release (maker-checker: never the launcher).",
        [approve_op],
        {},
        "approval",
        executor_def=in_process_executor,
    )
