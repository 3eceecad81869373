"""`<product>_approve`: record a person's sign-off (maker-checker), from the Launchpad or the CLI.

Both go through `steps.approval.approve`: the launcher of a release never approves it, only
members of the phase's approval group may, and each person approves a phase once.
"""

from dagster import Config, Failure, OpExecutionContext, in_process_executor, op
from pydantic import Field

from release_pipelines.core.approvals import PHASES
from release_pipelines.core.errors import ReleaseError
from release_pipelines.orchestration.dagster_resources import LedgerResource
from release_pipelines.orchestration.jobs.common import USER_TAG, begin_step, product_job
from release_pipelines.steps.approval import approve


def build_approval_job(product):
    """The Launchpad form: release_id, phase, approver (default: the signed-in Dagster user), comment."""
    class ApprovalConfig(Config):
        release_id: str = Field(default="", description="empty = the product's active release")
        phase: str = Field(default="promote", description=f"one of: {', '.join(PHASES)}")
        approver: str = Field(
            default="", description="empty = the signed-in Dagster user (dagster/user tag)"
        )
        comment: str = Field(default="", description="why, recorded with the approval")

    @op(name="approve", tags={"kind": "approval"})
    def approve_op(
        context: OpExecutionContext, config: ApprovalConfig, release_ledger: LedgerResource
    ) -> None:
        """Record the sign-off; refused (nothing recorded) for the launcher or anyone outside the group."""
        signed_in = context.run.tags.get(USER_TAG, "")
        approver = config.approver.strip() or signed_in
        if signed_in and approver != signed_in:
            raise Failure(description=f"approval refused: you are signed in as {signed_in} and cannot approve as {approver}")
        step = begin_step(context, product, "approval", release_ledger, config.release_id)
        try:
            recorded = approve(product.manifest, step.book, step.release.id, config.phase, approver, config.comment)
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
