"""`<product>_promote`: move the release one traffic step forward; at 100 % canaries become stable.

Launched by the canary sensor on a passing verdict (or by hand). It re-reads the ledger and the
platform every time, so launching it twice for the same step is refused rather than applied twice.
"""


from dagster import Config, JobDefinition, OpExecutionContext, in_process_executor, op
from pydantic import Field

from release_pipelines.core.errors import ReleaseError
from release_pipelines.core.graph import dependency_edges, waves
from release_pipelines.core.manifest import ApprovalPhase, FlagStep
from release_pipelines.core.product import Product
from release_pipelines.core.states import ReleaseState
from release_pipelines.core.traffic import step_count, weights_for_step
from release_pipelines.orchestration.dagster_resources import (
    FlagsResource,
    LedgerResource,
    PlatformResource,
)
from release_pipelines.orchestration.jobs.common import (
    failing_clearly,
    product_job,
    readiness_observation,
    service_materialization,
    step_context,
    tag_run,
)
from release_pipelines.steps.approval import missing_approvals
from release_pipelines.steps.complete import finish_release
from release_pipelines.steps.deploy import apply_promote
from release_pipelines.steps.flags import flags_for, set_flags
from release_pipelines.steps.traffic import apply_weights


class PromoteConfig(Config):
    release_id: str = Field(default="", description="empty = the product's active release")
    expected_step: int = Field(
        default=-1, description="refuse unless the release is at this step (-1: any)"
    )


def find_release(book, product: Product, release_id: str):
    """The named release, or the product's active one; a clear error when there is none."""
    if release_id:
        return book.get(release_id)
    release = book.active_release(product.name)
    if release is None:
        raise ReleaseError(f"{product.name} has no active release; give release_id")
    return release


def build_promote_job(product: Product) -> JobDefinition:
    manifest = product.manifest
    order = [
        name
        for wave in waves(dependency_edges(manifest), [s.name for s in manifest.services])
        for name in wave
    ]

    @op(name="promote_step", out={}, tags={"kind": "traffic"})
    def promote_step(
        context: OpExecutionContext,
        config: PromoteConfig,
        ledger: LedgerResource,
        platform: PlatformResource,
        flags: FlagsResource,
    ):
        """Next traffic step; at the last one, promote canaries in dependency order and turn flags on."""
        book = ledger.open()
        with failing_clearly(None, "promote"):
            release = find_release(book, product, config.release_id)
        tag_run(context, product, release.id)
        ctx = step_context(context, product, book, release.id)
        services = platform.for_product(product)
        with failing_clearly(ctx, "promote"):
            store = flags.for_product(product)
            if release.state == ReleaseState.BAKING:
                finish_release(ctx, book, release, store)
                yield readiness_observation(product, book, release.id, "baked")
                return
            # A run killed while promoting left the release in `promoting`: re-running finishes it.
            resuming = release.state == ReleaseState.PROMOTING
            if release.state != ReleaseState.CANARY and not resuming:
                raise ReleaseError(
                    f"release {release.id} is {release.state.value}; only a release in canary can be promoted"
                )
            if (
                not resuming
                and config.expected_step >= 0
                and release.canary_step != config.expected_step
            ):
                raise ReleaseError(
                    f"release {release.id} is at step {release.canary_step}, not {config.expected_step}: "
                    "this promotion was already applied"
                )
            canaries = [
                s
                for s in release.versions
                if services.status(s).canary_version == release.versions[s]
            ]
            next_step = (release.canary_step or 0) + 1
            if not resuming and next_step < step_count(manifest, canaries):
                weights = weights_for_step(manifest, canaries, next_step)
                waiting = missing_approvals(
                    manifest, book, release, ApprovalPhase.promote, max(weights.values(), default=0)
                )
                if waiting:
                    raise ReleaseError(waiting)
                apply_weights(ctx, services, weights, next_step)
                book.transition(
                    release.id,
                    ReleaseState.CANARY,
                    ctx.actor,
                    run_id=context.run_id,
                    canary_step=next_step,
                    payload={"weights": weights},
                )
                for service in canaries:
                    yield service_materialization(
                        product,
                        service,
                        services.status(service),
                        release.id,
                        f"canary at {weights[service]}%",
                    )
                yield readiness_observation(product, book, release.id, f"canary step {next_step}")
                return
            if resuming:
                ctx.log(
                    f"release {release.id} stopped while promoting; finishing: {', '.join(canaries) or 'flags and bake'}"
                )
            else:
                book.transition(
                    release.id, ReleaseState.PROMOTING, ctx.actor, run_id=context.run_id
                )
            for service in [s for s in order if s in canaries]:
                status = apply_promote(ctx, services, service, release.versions[service])
                yield service_materialization(
                    product,
                    service,
                    status,
                    release.id,
                    f"{release.versions[service]} promoted to stable",
                )
            set_flags(
                ctx, store, flags_for(manifest, set(release.versions), FlagStep.promoted), True
            )
            release = book.transition(
                release.id, ReleaseState.BAKING, ctx.actor, run_id=context.run_id
            )
            finish_release(ctx, book, release, store)
            yield readiness_observation(product, book, release.id, "promoted")

    return product_job(
        product,
        "promote",
        f"Move the active {product.name} release one traffic step forward.",
        [promote_step],
        {},
        "promote",
        executor_def=in_process_executor,
    )
