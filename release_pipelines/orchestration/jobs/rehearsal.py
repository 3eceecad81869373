"""`<product>_rehearse_rollback`: prove a service's previous version still starts, before you need it.

The previous version is deployed as a canary at 0 % traffic (users never reach it), health-checked,
and aborted; the time each part took is recorded in the ledger as a `rehearsal` event. Refused
while a release of the product is active, so it never interferes with a real rollout.
A weekly schedule (stopped by default) rehearses every service.
"""

import time
from datetime import UTC, datetime
from typing import Any

from dagster import (
    Config,
    DefaultScheduleStatus,
    Failure,
    JobDefinition,
    OpExecutionContext,
    RunRequest,
    ScheduleDefinition,
    ScheduleEvaluationContext,
    in_process_executor,
    op,
    schedule,
)
from pydantic import Field

from release_pipelines.core.errors import ReleaseError
from release_pipelines.core.product import Product
from release_pipelines.core.states import ReleaseState
from release_pipelines.orchestration.dagster_resources import LedgerResource, PlatformResource
from release_pipelines.orchestration.jobs.common import TAG_PRODUCT, actor_of, product_job


class RehearsalConfig(Config):
    service: str = Field(description="the service whose rollback to rehearse")
    version: str = Field(
        default="", description="empty = the version that ran before the current stable one"
    )


def previous_version(book: Any, product: str, service: str, stable: str) -> str | None:
    """The version `service` ran before `stable`, from the ledger's completed releases."""
    history = book.releases(product=product, limit=500)
    for release in history:  # newest first: the release that made `stable` stable
        if release.state == ReleaseState.COMPLETED and release.versions.get(service) == stable:
            before = release.previous.get(service)
            if before and before != stable:
                return before
    for release in history:  # any older version that was stable once
        if release.state == ReleaseState.COMPLETED and release.versions.get(service) not in (
            None,
            stable,
        ):
            return release.versions[service]
    return None


def rehearse(
    platform: Any,
    book: Any,
    product: Product,
    service: str,
    version: str,
    actor: str,
    run_id: str | None = None,
    log=print,
) -> dict[str, Any]:
    """Deploy `version` (or the previous one) at 0 %, health-check it, abort it; record the timings."""
    names = [s.name for s in product.manifest.services]
    if service not in names:
        raise ReleaseError(
            f"{product.name} has no service {service!r}; services: {', '.join(names)}"
        )
    active = book.active_release(product.name)
    if active is not None:
        raise ReleaseError(
            f"release {active.id} of {product.name} is {active.state.value}; rehearse when no release is active"
        )
    status = platform.status(service)
    if not status.stable_version:
        raise ReleaseError(f"{service} has no stable version running: nothing to roll back from")
    if status.canary_version:
        raise ReleaseError(
            f"{service} runs canary {status.canary_version}; rehearse when no canary runs"
        )
    target = version or previous_version(book, product.name, service, status.stable_version)
    if not target:
        raise ReleaseError(
            f"the ledger records no version of {service} before {status.stable_version}; give version"
        )
    if target == status.stable_version:
        raise ReleaseError(f"{target} is the stable version of {service}; give an older one")

    payload: dict[str, Any] = {
        "product": product.name,
        "service": service,
        "stable_version": status.stable_version,
        "version": target,
        "ok": False,
    }
    began = time.monotonic()
    deployed = False
    try:
        step = time.monotonic()
        after = platform.deploy_canary(service, target, log=log)
        deployed = after.canary_version == target
        payload["deploy_seconds"] = round(time.monotonic() - step, 3)
        if not deployed:
            raise ReleaseError(
                f"{service} {target} did not start as a canary (stable is {after.stable_version})"
            )
        if after.canary_weight != 0:
            raise ReleaseError(
                f"{service} canary {target} got {after.canary_weight} % of traffic, expected 0 %"
            )
        step = time.monotonic()
        health = platform.health_check(service, target, log=log)
        payload["health_seconds"] = round(time.monotonic() - step, 3)
        payload["healthy"] = health.healthy
        if not health.healthy:
            raise ReleaseError(f"{service} {target} is not healthy: {health.detail}")
        step = time.monotonic()
        platform.abort(service, log=log)
        deployed = False
        payload["abort_seconds"] = round(time.monotonic() - step, 3)
        payload["ok"] = True
    except ReleaseError as exc:
        payload["error"] = str(exc)
        raise
    finally:
        if deployed or platform.status(service).canary_version == target:
            try:
                platform.abort(service, log=log)
            except ReleaseError as exc:
                payload["cleanup_error"] = str(exc)
        payload["duration_seconds"] = round(time.monotonic() - began, 3)
        book.record(None, "rehearsal", actor, run_id=run_id, payload=payload)
    log(
        f"rollback rehearsal of {service}: {target} started, healthy and aborted in {payload['duration_seconds']} s"
    )
    return payload


def build_rehearsal_job(product: Product) -> JobDefinition:
    @op(name=f"{product.name}__rehearse_rollback", tags={"kind": "rehearsal"})
    def rehearse_rollback(
        context: OpExecutionContext,
        config: RehearsalConfig,
        release_ledger: LedgerResource,
        release_platform: PlatformResource,
    ) -> None:
        """Previous version at 0 %: deploy, health-check, abort; the timings go to the ledger."""
        try:
            result = rehearse(
                release_platform.for_product(product),
                release_ledger.open(),
                product,
                config.service,
                config.version,
                actor_of(context),
                run_id=context.run_id,
                log=context.log.info,
            )
        except ReleaseError as exc:
            raise Failure(description=f"rollback rehearsal failed: {exc}") from None
        context.log.info(f"rehearsal recorded: {result}")

    return product_job(
        product,
        "rehearse_rollback",
        f"Rehearse rolling back one {product.name} service: previous version at 0 %, health, abort.",
        [rehearse_rollback],
        {},
        "rehearsal",
        executor_def=in_process_executor,
    )


def build_rehearsal_schedule(product: Product, rehearsal_job: JobDefinition) -> ScheduleDefinition:
    services = [s.name for s in product.manifest.services]

    @schedule(
        name=f"{product.name}_rehearse_rollback_weekly",
        job=rehearsal_job,
        cron_schedule="0 6 * * 1",
        execution_timezone=product.manifest.windows.timezone,
        default_status=DefaultScheduleStatus.STOPPED,
        description=f"Every Monday 06:00 ({product.manifest.windows.timezone}): rehearse the rollback of each "
        f"{product.name} service. Turn it on in the UI.",
    )
    def weekly(context: ScheduleEvaluationContext):
        stamp = (context.scheduled_execution_time or datetime.now(UTC)).isoformat()
        for service in services:
            yield RunRequest(
                run_key=f"rehearse:{service}:{stamp}",
                run_config={"ops": {"rehearse_rollback": {"config": {"service": service}}}},
                tags={TAG_PRODUCT: product.name},
            )

    return weekly
