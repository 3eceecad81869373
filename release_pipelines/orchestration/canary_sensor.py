"""Canary sensor: each tick, judge the product's release in canary and request promote or rollback.

The metric series lives in the sensor's cursor (Dagster stores it durably), keyed by release and
step, so a restarted daemon carries on judging the same evidence. Run keys are
(release, step, decision): a decision is acted on once, however many ticks see it.

After 100 % the release bakes: the sensor keeps judging the new stable versions for the
manifest's `bake_seconds` against the reference the last judged canary step left in the cursor
(the old stable version's errors over that step; `canary.carry_cursor`) and requests the rollback
(run key `<release>:bake:rollback`) on a regression (`judge_errors.judge_against_reference`).
"""

import json
from datetime import UTC, datetime

from dagster import (
    AssetKey,
    AssetObservation,
    DefaultSensorStatus,
    JobDefinition,
    MetadataValue,
    RunRequest,
    SensorEvaluationContext,
    SensorResult,
    SkipReason,
    sensor,
)

from release_pipelines.core.bake import bake_remaining
from release_pipelines.core.budgets import budget_status, slow_requests
from release_pipelines.core.canary import (
    BAKE,
    CanaryDecision,
    ServiceSeries,
    append_read,
    carry_cursor,
    decide,
    decide_bake,
)
from release_pipelines.core.judge import Verdict
from release_pipelines.core.manifest import ApprovalPhase, MetricKind
from release_pipelines.core.product import Product
from release_pipelines.core.states import ReleaseState
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
from release_pipelines.resources.metrics import MetricsUnavailable
from release_pipelines.steps.approval import missing_approvals
from release_pipelines.steps.blue_green import expire_standbys
from release_pipelines.steps.migrate import contract_pending
from release_pipelines.steps.traffic import step_count, weights_for_step

MAX_SERIES = 5000
MAX_RESOURCE_SAMPLES = 200
RESOURCE_KINDS = (MetricKind.memory, MetricKind.cpu)


def append_resource_samples(manifest, platform, service: str, entry: dict) -> None:
    """One (stable, canary) memory MB and CPU % sample per tick into the cursor entry, when the
    service judges a memory/cpu metric and the platform can measure its processes."""
    kinds = {m.kind for m in manifest.service(service).canary.analysis.metrics} & set(RESOURCE_KINDS)
    measure = getattr(platform, "resource_usage", None)
    if not kinds or measure is None:
        return
    usage = measure(service)
    if "stable" not in usage or "canary" not in usage:
        return
    store = entry.setdefault("resources", {})
    for kind in kinds:
        index = 0 if kind is MetricKind.memory else 1
        base, can = store.setdefault(kind.value, [[], []])
        base.append(round(usage["stable"][index], 3))
        can.append(round(usage["canary"][index], 3))
        store[kind.value] = [base[-MAX_RESOURCE_SAMPLES:], can[-MAX_RESOURCE_SAMPLES:]]


def resources_of(entry: dict) -> dict[str, tuple[list[float], list[float]]]:
    return {kind: (pair[0], pair[1]) for kind, pair in entry.get("resources", {}).items()}


def bake_observations(release_id: str, decision: CanaryDecision) -> list[AssetObservation]:
    return [
        AssetObservation(
            asset_key=AssetKey(["services", service]),
            description=verdict.reason,
            metadata={
                "release_id": release_id,
                "phase": BAKE,
                "verdict": verdict.verdict.value,
                "reason": MetadataValue.md(f"**{verdict.verdict.value}**: {verdict.reason}"),
                **{
                    f"{m.name}_{field}": float(value)
                    for m in verdict.metrics
                    for field, value in (("bake_rate", m.details.get("bake_rate")), ("bake_n", m.canary_n),
                                         ("reference_n", m.baseline_n), ("bar", m.details.get("bar")))
                    if value is not None
                },
            },
        )
        for service, verdict in decision.services.items()
    ]


def judge_bake(context, product: Product, book, platform, metrics, rollback_job: JobDefinition, release, tags,
               left: float):
    """During bake, judge the new stable versions against the reference the canary steps left in
    the cursor (`canary.carry_cursor`); a regression requests the rollback (run key
    `<release>:bake:rollback`). The expanded schema stays: it is backward compatible."""
    services = platform.for_product(product)
    promoted = {s: v for s, v in release.versions.items() if services.status(s).stable_version == v}
    key = f"{release.id}:{BAKE}"
    cursor = carry_cursor(json.loads(context.cursor) if context.cursor else None, key)
    if not promoted:
        context.update_cursor(json.dumps(cursor))
        return SkipReason(f"release {release.id} baking: {left:.0f} s left; no new version is stable")
    provider = metrics.provider(services)
    unavailable: dict[str, str] = {}
    for service, version in promoted.items():
        try:
            snap = provider.snapshot(service, version, "")
        except MetricsUnavailable as exc:
            unavailable[service] = str(exc)
            continue
        if snap.stable is None:
            unavailable[service] = f"no series for {version} yet"
            continue
        entry = cursor["series"].setdefault(service, {"stable": []})
        read = [snap.stable.requests, snap.stable.errors, [list(b) for b in snap.stable.latency_buckets]]
        entry["stable"] = (entry["stable"] + [read])[-MAX_SERIES:]
    context.update_cursor(json.dumps(cursor))
    series = {s: e["stable"] for s, e in cursor["series"].items() if s in promoted}
    decision = decide_bake(product.manifest, series, cursor.get("reference") or {}, unavailable=unavailable)
    observations = bake_observations(release.id, decision)
    if decision.verdict is Verdict.failed:
        book.record(release.id, "verdict", "canary-sensor", payload={
            "step": BAKE, "verdict": "fail", "reason": decision.reason, "decided_by": decision.decided_by})
        request = RunRequest(run_key=f"{key}:rollback", job_name=rollback_job.name, tags=tags, run_config={
            "ops": {"rollback_start": {"config": {
                "release_id": release.id, "reason": f"regression during bake: {decision.reason}"[:900]}}}})
        return SensorResult(run_requests=[request], asset_events=observations)
    return SensorResult(skip_reason=SkipReason(f"release {release.id} baking: {left:.0f} s left; {decision.reason}"),
                        asset_events=observations)


def build_canary_sensor(product: Product, promote_job: JobDefinition, rollback_job: JobDefinition):
    manifest = product.manifest
    interval = int(min(s.canary.analysis.interval_seconds for s in manifest.services))

    @sensor(
        name=f"{product.name}_canary",
        jobs=[promote_job, rollback_job],
        minimum_interval_seconds=interval,
        default_status=DefaultSensorStatus.RUNNING,
        description=f"Judge {product.name} canaries against stable each tick; promote or roll back.",
    )
    def canary_sensor(
        context: SensorEvaluationContext, ledger: LedgerResource, platform: PlatformResource, metrics: MetricsResource
    ):
        book = ledger.open()

        expire_standbys(platform.for_product(product), log=context.log.info)
        release = book.active_release(product.name)
        if release is None:
            return SkipReason(f"{product.name} has no active release")
        tags = {TAG_PRODUCT: product.name, TAG_RELEASE: release.id}
        if release.state == ReleaseState.BAKING:
            left = bake_remaining(product, release, datetime.now(UTC))
            if left > 0:
                return judge_bake(context, product, book, platform, metrics, rollback_job, release, tags, left)
            pending = contract_pending(product, release.versions)
            if pending:
                waiting = missing_approvals(manifest, book, release, ApprovalPhase.contract)
                return SkipReason(
                    f"release {release.id} baked; contract migrations on {', '.join(pending)} wait for "
                    f"{product.name}_contract" + (f" ({waiting})" if waiting else "")
                )
            return RunRequest(run_key=f"{release.id}:finish", job_name=promote_job.name, tags=tags,
                              run_config={"ops": {"promote_step": {"config": {"release_id": release.id}}}})
        if release.state != ReleaseState.CANARY:
            return SkipReason(f"release {release.id} is {release.state.value}, not in a canary step")

        step = release.canary_step or 0
        services = platform.for_product(product)
        canaries = {s: v for s, v in release.versions.items() if services.status(s).canary_version == v}
        if not canaries:
            return SkipReason(f"release {release.id}: no canary is running (a promote or rollback is under way)")
        key = f"{release.id}:{step}"
        cursor = carry_cursor(json.loads(context.cursor) if context.cursor else None, key)
        provider = metrics.provider(services)
        unavailable: dict[str, str] = {}
        budget_events = []
        for service, version in canaries.items():
            stable = services.status(service).stable_version or ""
            entry = cursor["series"].get(service) or {"baseline": [], "canary": []}
            append_resource_samples(manifest, services, service, entry)
            if entry.get("resources"):
                cursor["series"][service] = entry
            try:
                snap = provider.snapshot(service, stable, version)
            except MetricsUnavailable as exc:
                unavailable[service] = str(exc)
                continue
            cursor["series"][service] = entry
            skipped = append_read(entry, snap.stable, snap.canary, MAX_SERIES)
            if skipped:
                unavailable[service] = skipped
            slo = manifest.service(service).slo
            if slo is not None and snap.stable is not None:
                status = budget_status(service, slo, snap.stable.requests, snap.stable.errors,
                                       slow_requests(snap.stable.latency_buckets, slo.latency_ms))
                budget_events.append(error_budget_observation(product, service, status, release.id))
        context.update_cursor(json.dumps(cursor))

        elapsed = (datetime.now(UTC) - release.updated_at).total_seconds()
        series = [ServiceSeries(s, e["baseline"], e["canary"], resources_of(e))
                  for s, e in cursor["series"].items() if s in canaries]
        decision = decide(manifest, series, elapsed_seconds=elapsed, unavailable=unavailable)
        observations = [
            AssetObservation(
                asset_key=AssetKey(["services", service]),
                description=verdict.reason,
                metadata={
                    "release_id": release.id,
                    "canary_step": step,
                    "verdict": verdict.verdict.value,
                    "reason": MetadataValue.md(f"**{verdict.verdict.value}**: {verdict.reason}"),
                    **{
                        f"{m.name}_{field}": float(value)
                        for m in verdict.metrics
                        for field, value in (("effect", m.effect), ("canary_n", m.canary_n), ("baseline_n", m.baseline_n))
                        if value is not None
                    },
                },
            )
            for service, verdict in decision.services.items()
        ] + budget_events
        min_step = max(manifest.service(s).canary.analysis.min_step_seconds for s in canaries)
        if decision.verdict is Verdict.failed:
            book.record(release.id, "verdict", "canary-sensor", payload={
                "step": step, "verdict": "fail", "reason": decision.reason, "decided_by": decision.decided_by})
            request = RunRequest(run_key=f"{key}:rollback", job_name=rollback_job.name, tags=tags, run_config={
                "ops": {"rollback_start": {"config": {"release_id": release.id, "reason": f"canary failed: {decision.reason}"[:900]}}}})
            return SensorResult(run_requests=[request], asset_events=observations)
        if decision.verdict is Verdict.passed and elapsed >= min_step:
            weights = weights_for_step(manifest, canaries, step + 1) if step + 1 < step_count(manifest, canaries) else {}
            waiting = missing_approvals(manifest, book, release, ApprovalPhase.promote, max(weights.values(), default=100))
            if waiting:
                return SensorResult(skip_reason=SkipReason(waiting), asset_events=observations)
            book.record(release.id, "verdict", "canary-sensor", payload={
                "step": step, "verdict": "pass", "reason": decision.reason, "decided_by": decision.decided_by})
            request = RunRequest(run_key=f"{key}:promote", job_name=promote_job.name, tags=tags, run_config={
                "ops": {"promote_step": {"config": {"release_id": release.id, "expected_step": step}}}})
            return SensorResult(run_requests=[request], asset_events=observations)
        why = decision.reason if decision.verdict is not Verdict.passed else f"passed; holding step for {min_step:.0f} s"
        return SensorResult(skip_reason=SkipReason(f"step {step}: {why}"), asset_events=observations)

    return canary_sensor
