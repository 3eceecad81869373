"""`<product>_promote`: move the release one traffic step forward; at 100 % canaries become stable.

Launched by the canary sensor on a passing verdict (or by hand). It re-reads the ledger and the
platform every time, so launching it twice for the same step is refused rather than applied twice.
"""

from collections.abc import Iterator
from typing import Any

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
    Step,
    begin_step,
    failing_clearly,
    product_job,
    readiness_observation,
    service_materialization,
)
from release_pipelines.resources.flags import FlagStore
from release_pipelines.resources.ledger_schema import Release
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


def resuming_promotion(release: Release, expected_step: int) -> bool:
    """Whether a run killed while promoting left the release in `promoting` (re-running finishes
    it); refuses a release that is not in canary, or not at the step the caller expects."""
    if release.state == ReleaseState.PROMOTING:
        return True
    if release.state != ReleaseState.CANARY:
        raise ReleaseError(f"release {release.id} is {release.state.value}; only a release in canary can be promoted")
    if expected_step >= 0 and release.canary_step != expected_step:
        raise ReleaseError(f"release {release.id} is at step {release.canary_step}, not {expected_step}: "
                           "this promotion was already applied")
    return False


def next_traffic_step(step: Step, product: Product, canaries: list[str], next_step: int) -> Iterator[Any]:
    """The canaries' next share of traffic, once the promote approvals for it are in."""
    book, release, ctx, services = step.book, step.release, step.ctx, step.platform
    weights = weights_for_step(product.manifest, canaries, next_step)
    waiting = missing_approvals(product.manifest, book, release, ApprovalPhase.promote, max(weights.values(), default=0))
    if waiting:
        raise ReleaseError(waiting)
    apply_weights(ctx, services, weights, next_step)
    book.transition(release.id, ReleaseState.CANARY, ctx.actor, run_id=ctx.run_id, canary_step=next_step,
                    payload={"weights": weights})
    for service in canaries:
        yield service_materialization(product, service, services.status(service), release.id,
                                      f"canary at {weights[service]}%")
    yield readiness_observation(product, book, release.id, f"canary step {next_step}")


def promote_canaries(step: Step, product: Product, canaries: list[str], resuming: bool, store: FlagStore) -> Iterator[Any]:
    """At 100 %: canaries become stable in dependency order, promoted flags turn on, the release bakes."""
    book, release, ctx = step.book, step.release, step.ctx
    if resuming:
        ctx.log(f"release {release.id} stopped while promoting; finishing: {', '.join(canaries) or 'flags and bake'}")
    else:
        book.transition(release.id, ReleaseState.PROMOTING, ctx.actor, run_id=ctx.run_id)
    every = [s.name for s in product.manifest.services]
    order = [name for wave in waves(dependency_edges(product.manifest), every) for name in wave if name in canaries]
    for service in order:
        status = apply_promote(ctx, step.platform, service, release.versions[service])
        yield service_materialization(product, service, status, release.id,
                                      f"{release.versions[service]} promoted to stable")
    set_flags(ctx, store, flags_for(product.manifest, set(release.versions), FlagStep.promoted), True)
    baking = book.transition(release.id, ReleaseState.BAKING, ctx.actor, run_id=ctx.run_id)
    finish_release(ctx, book, baking, store)
    yield readiness_observation(product, book, release.id, "promoted")


def build_promote_job(product: Product) -> JobDefinition:
    @op(name=f"{product.name}__promote_step", out={}, tags={"kind": "traffic"})
    def promote_step(
        context: OpExecutionContext,
        config: PromoteConfig,
        release_ledger: LedgerResource,
        release_platform: PlatformResource,
        release_flags: FlagsResource,
    ):
        """Next traffic step; at the last one, promote canaries in dependency order and turn flags on."""
        step = begin_step(context, product, "promote", release_ledger, config.release_id, release_platform)
        release = step.release
        with failing_clearly(step.ctx, "promote"):
            store = release_flags.for_product(product)
            if release.state == ReleaseState.BAKING:
                finish_release(step.ctx, step.book, release, store)
                yield readiness_observation(product, step.book, release.id, "baked")
                return
            resuming = resuming_promotion(release, config.expected_step)
            canaries = [s for s in release.versions if step.platform.status(s).canary_version == release.versions[s]]
            next_step = (release.canary_step or 0) + 1
            if not resuming and next_step < step_count(product.manifest, canaries):
                yield from next_traffic_step(step, product, canaries, next_step)
            else:
                yield from promote_canaries(step, product, canaries, resuming, store)

    return product_job(
        product,
        "promote",
        f"Move the active {product.name} release one traffic step forward.",
        [promote_step],
        {},
        "promote",
        executor_def=in_process_executor,
    )
