"""`<product>_approve`: record a person's sign-off (maker-checker), from the Launchpad or the CLI.

Both go through `steps.approval.approve`: the launcher of a release never approves it, only
members of the phase's approval group may, and each person approves a phase once. Where the
manifest requires signatures, the form takes the output of `release approve --sign-only`
(`signed_approval`): the signature, not the signed-in user, proves who approves.
"""

from dagster import Config, Failure, OpExecutionContext, in_process_executor, op
from pydantic import Field

from release_pipelines.core.approvals import PHASES
from release_pipelines.core.errors import ReleaseError
from release_pipelines.orchestration.dagster_resources import LedgerResource
from release_pipelines.orchestration.jobs.common import USER_TAG, begin_step, product_job, tag_run
from release_pipelines.steps.approval import approve, approve_signed


def build_approval_job(product):
    """The Launchpad form: release_id, phase, approver (default: the signed-in Dagster user), comment,
    or a pasted signed approval (release, phase and approver then come from its statement)."""
    class ApprovalConfig(Config):
        release_id: str = Field(default="", description="empty = the product's active release")
        phase: str = Field(default="", description=f"one of: {', '.join(PHASES)}; empty = promote, "
                                                   "or the signed approval's phase")
        approver: str = Field(
            default="", description="empty = the signed-in Dagster user (dagster/user tag)"
        )
        comment: str = Field(default="", description="why, recorded with the approval")
        signed_approval: str = Field(
            default="", description="the whole output of `release approve <id> --phase <phase> --sign-only`"
        )

    @op(name="approve", tags={"kind": "approval"})
    def approve_op(
        context: OpExecutionContext, config: ApprovalConfig, release_ledger: LedgerResource
    ) -> None:
        """Record the sign-off; refused (nothing recorded) for the launcher or anyone outside the group."""
        if config.signed_approval.strip():
            recorded = _record_signed(context, config, release_ledger)
        else:
            recorded = _record_unsigned(context, config, release_ledger)
        context.log.info(
            f"[release {recorded.release_id}] {recorded.approver} approved {recorded.phase} of release "
            f"{recorded.release_id} ({'signed' if recorded.signed else 'unsigned'})"
        )

    def _record_signed(context: OpExecutionContext, config: ApprovalConfig, release_ledger: LedgerResource):
        """The signature names the approver; a release, phase or approver typed as well must agree."""
        try:
            recorded = approve_signed(product.manifest, release_ledger.open(), config.signed_approval,
                                      config.release_id, config.phase, config.comment or None, config.approver.strip())
        except ReleaseError as exc:
            raise Failure(description=str(exc)) from None
        tag_run(context, product, recorded.release_id)
        return recorded

    def _record_unsigned(context: OpExecutionContext, config: ApprovalConfig, release_ledger: LedgerResource):
        signed_in = context.run.tags.get(USER_TAG, "")
        approver = config.approver.strip() or signed_in
        if signed_in and approver != signed_in:
            raise Failure(description=f"approval refused: you are signed in as {signed_in} and cannot approve as {approver}")
        step = begin_step(context, product, "approval", release_ledger, config.release_id)
        try:
            return approve(product.manifest, step.book, step.release.id, config.phase or "promote", approver,
                           config.comment)
        except ReleaseError as exc:
            raise Failure(description=str(exc)) from None

    return product_job(
        product,
        "approve",
        f"Approve a phase of a {product.name} release (maker-checker: never the launcher).",
        [approve_op],
        {},
        "approval",
        executor_def=in_process_executor,
    )
