"""Canary sensor: each tick, judge the product's release in canary (or baking) and request promote
or rollback.

A shell over the pure plan: read (`steps.canary_reads`, and the FAILs already in the ledger),
plan (`core.canary_tick.plan_tick`, which also explains the cursor, the bake and the run keys), then
act - store the cursor, ask for approvals when the plan needs them, record the verdict, take the
traffic off a failing canary (`steps.shed`), request the run, emit the observations.
"""

from dataclasses import replace
from datetime import UTC, datetime

from dagster import (
    AssetObservation,
    DefaultSensorStatus,
    JobDefinition,
    MetadataValue,
    RunRequest,
    SensorEvaluationContext,
    SensorResult,
    sensor,
)

from release_pipelines.assets.keys import DEFAULT_KEYS, AssetKeys
from release_pipelines.core.canary_tick import Job, TickPlan, VerdictObservation, plan_tick
from release_pipelines.core.product import Product
from release_pipelines.orchestration.dagster_resources import (
    LedgerResource,
    MetricsResource,
    PlatformResource,
)
from release_pipelines.orchestration.jobs.common import (
    TAG_PRODUCT,
    TAG_RELEASE,
    error_budget_observation,
)
from release_pipelines.steps.approval import missing_approvals
from release_pipelines.steps.blue_green import expire_standbys
from release_pipelines.steps.canary_reads import read_tick
from release_pipelines.steps.context import StepContext
from release_pipelines.steps.shed import SENSOR_ACTOR, shed_canaries
from release_pipelines.steps.verdicts import record_verdict_once, recorded_failures


def verdict_observation(observation: VerdictObservation, keys: AssetKeys = DEFAULT_KEYS) -> AssetObservation:
    return AssetObservation(
        asset_key=keys.service(observation.service),
        description=observation.reason,
        metadata={
            **observation.labels,
            "verdict": observation.verdict,
            "reason": MetadataValue.md(f"**{observation.verdict}**: {observation.reason}"),
            **observation.numbers,
        },
    )


SENSOR_DAEMON_LOOP_SECONDS = 5
"""Dagster's sensor daemon evaluates sensors at most once per loop of this length
(MIN_INTERVAL_LOOP_TIME in dagster/_daemon/sensor.py): the shortest interval it allows."""


def build_canary_sensor(product: Product, promote_job: JobDefinition, rollback_job: JobDefinition):
    # As often as Dagster allows: the judge is anytime-valid (extra looks cost no false rollbacks)
    # and a tick with no canary or bake under way is one ledger read. A manifest interval below
    # the daemon's loop is kept (the daemon rounds it up); a longer one no longer slows the looks.
    interval = int(min(*(s.canary.analysis.interval_seconds for s in product.manifest.services),
                       SENSOR_DAEMON_LOOP_SECONDS))
    jobs = {Job.promote: promote_job, Job.rollback: rollback_job}

    @sensor(
        name=f"{product.name}_canary",
        jobs=[promote_job, rollback_job],
        minimum_interval_seconds=interval,
        default_status=DefaultSensorStatus.RUNNING,
        description=f"Judge {product.name} canaries against stable each tick; promote or roll back.",
    )
    def canary_sensor(context: SensorEvaluationContext, release_ledger: LedgerResource,
                      release_platform: PlatformResource, release_metrics: MetricsResource):
        book = release_ledger.open()
        services = release_platform.for_product(product)
        expire_standbys(services, log=context.log.info)
        release = book.active_release(product.name)
        now = datetime.now(UTC)
        reads = read_tick(product, release, services, release_metrics.provider(services), book, now)
        reads = replace(reads, failed=recorded_failures(product, release, book, now))
        plan = plan_tick(product, release, context.cursor, reads, now)
        return act(context, book, services, release, plan)

    def act(context: SensorEvaluationContext, book, services, release, plan: TickPlan) -> SensorResult:
        """Carry the plan out: cursor first, approvals before anything is recorded or requested;
        the verdict is recorded before the shed (it is what the next tick acts on if this one dies)."""
        if plan.cursor is not None:
            context.update_cursor(plan.cursor)
        events = [verdict_observation(o, AssetKeys.of(product)) for o in plan.observations] + [
            error_budget_observation(product, status.service, status, release.id) for status in plan.budgets]
        approval = plan.approval
        waiting = approval and missing_approvals(product.manifest, book, release, approval.phase, approval.weight)
        if plan.run is None or waiting:
            return SensorResult(skip_reason=plan.skip or waiting, asset_events=events)
        if plan.verdict is not None:
            record_verdict_once(book, release.id, plan.run.run_key, plan.verdict)
            # the daemon's log says why, beside the run it launches
            context.log.info(f"{plan.run.run_key}: {plan.verdict['verdict']}: {plan.verdict['reason']}")
        if plan.shed:
            shed(context, book, services, release, plan)
        request = RunRequest(run_key=plan.run.run_key, job_name=jobs[plan.run.job].name, run_config=plan.run.run_config,
                             tags={TAG_PRODUCT: product.name, TAG_RELEASE: release.id})
        return SensorResult(run_requests=[request], asset_events=events)

    def shed(context: SensorEvaluationContext, book, services, release, plan: TickPlan) -> None:
        """Canary weight 0 now; whatever fails here, the rollback run is still requested."""
        ctx = StepContext(product, book, release.id, SENSOR_ACTOR, log=context.log.info)
        reason = plan.run.run_config["ops"]["rollback_start"]["config"]["reason"]
        try:
            shed_canaries(ctx, services, plan.shed, plan.run.run_key, reason)
        except Exception as exc:  # noqa: BLE001 - e.g. the ledger refused the event: the run request matters more
            context.log.error(f"shedding {', '.join(plan.shed)} failed ({exc}); requesting the rollback anyway")

    return canary_sensor
