"""Run-failure sensor: a failed release, promote or contract run launches the rollback job.

The failed run's tags say which product and release it belonged to; the run key is the failed
run's id, so each failure triggers at most one rollback, however often the sensor ticks.
"""

from dagster import (
    DefaultSensorStatus,
    JobDefinition,
    RunFailureSensorContext,
    RunRequest,
    SkipReason,
    run_failure_sensor,
)

from release_pipelines.core.product import Product
from release_pipelines.orchestration.jobs.common import TAG_KIND, TAG_PRODUCT, TAG_RELEASE

ROLLBACK_AFTER = {"release", "promote", "contract"}


def build_failure_sensor(product: Product, watched: list[JobDefinition], rollback_job: JobDefinition):
    @run_failure_sensor(
        name=f"{product.name}_rollback_on_failure",
        monitored_jobs=watched,
        request_job=rollback_job,
        default_status=DefaultSensorStatus.RUNNING,
        minimum_interval_seconds=5,
        description=f"Roll back the {product.name} release whose release/promote/contract run failed.",
    )
    def rollback_on_failure(context: RunFailureSensorContext):
        tags = context.dagster_run.tags
        release_id = tags.get(TAG_RELEASE)
        if tags.get(TAG_PRODUCT) != product.name or tags.get(TAG_KIND) not in ROLLBACK_AFTER:
            return SkipReason("not a release run of this product")
        if not release_id:
            return SkipReason(f"run {context.dagster_run.run_id} failed before a release was recorded: nothing to undo")
        failure = context.failure_event.message or "run failed"
        return RunRequest(
            run_key=f"rollback:{context.dagster_run.run_id}",
            run_config={
                "ops": {
                    "rollback_start": {
                        "config": {"release_id": release_id, "reason": f"run {context.dagster_run.run_id} failed: {failure[:500]}"}
                    }
                }
            },
            tags={TAG_PRODUCT: product.name, TAG_RELEASE: release_id},
        )

    return rollback_on_failure
