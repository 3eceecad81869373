"""`<product>_rollback`: undo the release in reverse dependency order, flags off first.

Idempotent and re-entrant: every op looks at what is really running (platform) and what was really
applied (ledger events), so a second run, or a run after a killed one, finishes the job.
"""

from dagster import (
    Config,
    DependencyDefinition,
    Failure,
    In,
    JobDefinition,
    Nothing,
    OpDefinition,
    OpExecutionContext,
    Out,
    Output,
    in_process_executor,
    op,
)
from pydantic import Field

from release_pipelines.core.errors import ReleaseError
from release_pipelines.core.product import Product
from release_pipelines.core.states import ReleaseState, can_roll_back
from release_pipelines.orchestration.dagster_resources import (
    FlagsResource,
    LedgerResource,
    PlatformResource,
)
from release_pipelines.orchestration.jobs.common import (
    after,
    begin_step,
    failing_clearly,
    nothing_done,
    op_name,
    product_job,
    readiness_observation,
    service_materialization,
)
from release_pipelines.steps import blue_green as blue_green_steps
from release_pipelines.steps import migrate as migrate_steps
from release_pipelines.steps.deploy import compensate_deploy
from release_pipelines.steps.flags import set_flags

NOTHING_TO_DO = ""


class RollbackConfig(Config):
    release_id: str = Field(default="", description="empty = the product's active release")
    reason: str = Field(default="requested", description="recorded with the rollback")


def _start_op(product: Product) -> OpDefinition:
    @op(name=f"{product.name}__rollback_start", out=Out(str), tags={"kind": "rollback"})
    def rollback_start(context: OpExecutionContext, config: RollbackConfig, release_ledger: LedgerResource,
                       release_flags: FlagsResource) -> str:
        """Enter rolling_back and turn the release's flags off before any service or migration is
        undone (a failing canary's weight may already be 0: the canary sensor sheds it at the verdict)."""
        if not config.release_id and release_ledger.open().active_release(product.name) is None:
            context.log.info(f"{product.name} has no active release: nothing to roll back")
            return NOTHING_TO_DO
        step = begin_step(context, product, "rollback", release_ledger, config.release_id)
        book, release, ctx = step.book, step.release, step.ctx
        if release.state == ReleaseState.ROLLED_BACK:
            ctx.log("already rolled back")
            return NOTHING_TO_DO
        contracted = any(e.kind == "state:contracting" for e in book.events(release.id))
        if contracted or not can_roll_back(release.state):
            reason = (f"release {release.id} is past the point of no return (contract migrations ran): "
                      "it can only be fixed forward with a new release")
            if release.state == ReleaseState.CONTRACTING:
                # left in contracting so that re-running the contract job can finish it (FAILED has no way out)
                raise Failure(description=f"{reason}; re-run {product.name}_contract to finish its contract migrations first")
            if release.state not in (ReleaseState.FAILED, ReleaseState.COMPLETED):
                book.transition(release.id, ReleaseState.FAILED, ctx.actor, run_id=context.run_id,
                                payload={"reason": reason, "rollback_requested": config.reason})
            raise Failure(description=reason)
        book.transition(release.id, ReleaseState.ROLLING_BACK, ctx.actor, run_id=context.run_id,
                        payload={"reason": config.reason})
        flag_names = [f.name for f in product.manifest.flags if set(f.services) & set(release.versions)]
        set_flags(ctx, release_flags.for_product(product), flag_names, False)
        return release.id

    return rollback_start


def _revert_service_op(product: Product) -> OpDefinition:
    """One definition for every service, invoked as `revert_<service>` (the node name says which)."""
    service_of = {op_name("revert", s.name): s.name for s in product.manifest.services}

    @op(name=f"{product.name}__revert_service", ins={"release_id": In(str), "after": In(Nothing)}, out=Out(Nothing),
        tags={"kind": "rollback"})
    def revert(context: OpExecutionContext, release_id: str, release_ledger: LedgerResource,
               release_platform: PlatformResource):
        """All traffic back to the previous version; the canary (or promoted version) stopped."""
        service = service_of[context.op_handle.name]
        step = None if release_id == NOTHING_TO_DO else \
            begin_step(context, product, f"revert {service}", release_ledger, release_id, release_platform)
        if step is not None and service in step.release.versions:
            with failing_clearly(step.ctx, f"revert {service}"):
                revert_step = blue_green_steps.compensate if blue_green_steps.is_blue_green(product.manifest, service) \
                    else compensate_deploy  # blue-green: one switch back to the warm version
                status = revert_step(step.ctx, step.platform, service, step.release.versions[service],
                                     step.release.previous.get(service))
            yield service_materialization(product, service, status, release_id, "rolled back")
        yield nothing_done()

    return revert


def _revert_database_op(product: Product, database: str) -> OpDefinition:
    @op(name=f"{product.name}__{op_name('revert', database)}", ins={"release_id": In(str), "after": In(Nothing)},
        out=Out(Nothing), tags={"kind": "rollback"})
    def revert_database(context: OpExecutionContext, release_id: str, release_ledger: LedgerResource):
        """Undo this release's expand migrations as the manifest's rollback strategy says."""
        if release_id != NOTHING_TO_DO:
            step = begin_step(context, product, f"revert {database}", release_ledger, release_id)
            with failing_clearly(step.ctx, f"revert {database}"):
                migrate_steps.compensate(step.ctx, database)
        return nothing_done()

    return revert_database


def _finish_op(product: Product) -> OpDefinition:
    @op(name=f"{product.name}__rollback_finish", ins={"release_id": In(str), "after": In(Nothing)},
        tags={"kind": "rollback"})
    def rollback_finish(context: OpExecutionContext, release_id: str, release_ledger: LedgerResource,
                        release_platform: PlatformResource):
        """Check nothing of the release still takes traffic, then record rolled_back."""
        if release_id == NOTHING_TO_DO:
            yield Output(None)
            return
        step = begin_step(context, product, "rollback check", release_ledger, release_id, release_platform)
        book, release, ctx, services = step.book, step.release, step.ctx, step.platform
        leftovers = [
            f"{s} still runs {status.canary_version} as canary"
            for s in release.versions
            if (status := services.status(s)).canary_version == release.versions[s]
        ]
        if leftovers:
            with failing_clearly(ctx, "rollback check"):
                raise ReleaseError("; ".join(leftovers))
        book.transition(release_id, ReleaseState.ROLLED_BACK, ctx.actor, run_id=context.run_id,
                        payload={"stable": {s: services.status(s).stable_version for s in release.versions}})
        ctx.log("rolled back")
        yield readiness_observation(product, book, release_id, "rolled back")
        yield Output(None)

    return rollback_finish


def build_rollback_job(product: Product) -> JobDefinition:
    """Reverse of the release graph: a node is reverted after everything that depends on it."""
    manifest = product.manifest
    dependents: dict[str, list[str]] = {s.name: [] for s in manifest.services} | {d.name: [] for d in manifest.databases}
    for service in manifest.services:
        for dep in service.depends_on:
            dependents[dep].append(service.name)
    database_names = {d.name for d in manifest.databases}
    nodes: list[OpDefinition] = [_start_op(product), _finish_op(product)]
    nodes += [_revert_service_op(product)] if manifest.services else []
    nodes += [_revert_database_op(product, d) for d in sorted(database_names)]
    deps: dict[str, dict] = {}
    aliases = {op_name("revert", s.name): "revert_service" for s in manifest.services}
    for name in sorted(dependents):
        deps[op_name("revert", name)] = {"release_id": DependencyDefinition("rollback_start")} | after(
            op_name("revert", d) for d in sorted(dependents[name]))
    deps["rollback_finish"] = {"release_id": DependencyDefinition("rollback_start")} | after(
        op_name("revert", n) for n in sorted(dependents))
    return product_job(
        product,
        "rollback",
        f"Roll back the active {product.name} release: flags off, services in reverse "
        "dependency order, then expand migrations as each database's rollback strategy says.",
        nodes,
        deps,
        "rollback",
        executor_def=in_process_executor,  # one process: a rollback must not pay a process per step
        aliases=aliases,
    )
