"""One tick of the canary sensor as a plan: what was read goes in, what to do comes out.

The sensor (`orchestration.canary_sensor`) reads (`steps.canary_reads`), asks `plan_tick`, and
acts on the plan: it stores the new cursor, records the verdict in the ledger, requests the run
and emits the observations. Pure: no Dagster, no I/O, so every decision is tested with plain data.

The metric series lives in the cursor (Dagster stores it durably), keyed by release and step, so
a restarted daemon carries on judging the same evidence. Run keys are (release, step, decision):
a decision is acted on once, however many ticks see it. A FAIL recorded in the ledger is final:
later ticks request the same rollback again without judging (a daemon killed between the verdict
and the run request still rolls back; Dagster launches a run key once). A canary FAIL also sheds
the release's canaries (`TickPlan.shed`): the sensor sets their weight to 0 at once, so traffic is
safe at the verdict, not when the rollback run starts. After 100 % the release bakes: the new
stable versions are judged for the manifest's `bake_seconds` against the reference the last
canary step left in the cursor (`canary.carry_cursor`); every metric (errors, latency, memory, cpu)
can request the rollback (run key `<release>:bake:rollback`).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from enum import Enum
from typing import Any

from release_pipelines.core.bake import bake_remaining
from release_pipelines.core.budgets import BudgetStatus, budget_status, slow_requests
from release_pipelines.core.canary import (
    BAKE,
    CanaryDecision,
    ServiceSeries,
    append_read,
    carry_cursor,
    decide,
    decide_bake,
)
from release_pipelines.core.judge import MetricVerdict, Verdict
from release_pipelines.core.manifest import ApprovalPhase, Manifest, MetricKind
from release_pipelines.core.metrics import MetricsSnapshot
from release_pipelines.core.product import Product
from release_pipelines.core.states import ReleaseState
from release_pipelines.core.traffic import step_count, weights_for_step

MAX_SERIES = 5000
MAX_RESOURCE_SAMPLES = 200
RESOURCE_KINDS = (MetricKind.memory, MetricKind.cpu)


class TickPhase(Enum):
    """What a tick does for the product's active release; it decides what the sensor reads."""

    idle = "idle"  # no active release, or one neither in a canary step nor baking
    canary = "canary"  # judge the canaries against stable
    bake = "bake"  # judge the new stable versions against the reference
    baked = "baked"  # bake over: finish, or wait for the contract job


class Job(Enum):
    promote = "promote"
    rollback = "rollback"


@dataclass(frozen=True)
class ServiceRead:
    """One service of the release as the sensor found it this tick."""

    stable_version: str | None
    canary_version: str | None
    snapshot: MetricsSnapshot | None = None  # read for the versions the tick judges
    unavailable: str | None = None  # why the metrics could not be read (no evidence: a wait)
    usage: Mapping[str, tuple[float, float]] | None = None  # "stable"/"canary" -> (memory MB, CPU %)


@dataclass(frozen=True)
class TickReads:
    services: Mapping[str, ServiceRead] = field(default_factory=dict)
    contract_pending: tuple[str, ...] = ()  # databases whose contract revisions still wait (baked)
    contract_waiting: str | None = None  # whose contract approval is still missing
    failed: Mapping[str, str] = field(default_factory=dict)  # rollback run key -> reason of a FAIL already recorded


@dataclass(frozen=True)
class RunPlan:
    job: Job
    run_key: str
    run_config: Mapping[str, Any]


@dataclass(frozen=True)
class VerdictObservation:
    """A service's verdict this tick, for `services/<name>` (the sensor wraps it for Dagster)."""

    service: str
    verdict: str
    reason: str
    labels: Mapping[str, Any]  # release_id and canary_step (or phase: bake)
    numbers: Mapping[str, float]  # per metric: effect and sample sizes, or the bake rate and bar


@dataclass(frozen=True)
class ApprovalCheck:
    """Ask the ledger before acting: a missing approval turns the run request into a wait."""

    phase: ApprovalPhase
    weight: int | None = None


@dataclass(frozen=True)
class TickPlan:
    skip: str | None = None  # why nothing runs this tick
    run: RunPlan | None = None
    verdict: Mapping[str, Any] | None = None  # the ledger's `verdict` event, recorded with the run
    approval: ApprovalCheck | None = None
    observations: tuple[VerdictObservation, ...] = ()
    budgets: tuple[BudgetStatus, ...] = ()
    cursor: str | None = None  # the new cursor; None keeps the old one
    shed: tuple[str, ...] = ()  # services whose canary weight goes to 0 now, before the rollback run


def tick_phase(product: Product, release: Any, now: datetime) -> TickPhase:
    if release is None:
        return TickPhase.idle
    if release.state == ReleaseState.BAKING:
        return TickPhase.bake if bake_remaining(product, release, now) > 0 else TickPhase.baked
    return TickPhase.canary if release.state == ReleaseState.CANARY else TickPhase.idle


def watched_versions(phase: TickPhase, versions: Mapping[str, str],
                     services: Mapping[str, ServiceRead]) -> dict[str, str]:
    """The release's versions the tick judges: running as canary, or (bake) promoted to stable."""
    if phase is TickPhase.canary:
        return {s: v for s, v in versions.items() if services[s].canary_version == v}
    if phase is TickPhase.bake:
        return {s: v for s, v in versions.items() if services[s].stable_version == v}
    return {}


def resource_kinds(manifest: Manifest, service: str) -> set[MetricKind]:
    """The memory/cpu metrics the service judges (the platform measures them for the cursor)."""
    return {m.kind for m in manifest.service(service).canary.analysis.metrics} & set(RESOURCE_KINDS)


def plan_tick(product: Product, release: Any, cursor: str | None, reads: TickReads, now: datetime) -> TickPlan:
    """What the sensor does this tick for `release` (the product's active one, or None), given
    the cursor it stored last tick and what it read now."""
    if release is None:
        return TickPlan(skip=f"{product.name} has no active release")
    phase = tick_phase(product, release, now)
    if phase is TickPhase.canary:
        return _canary(product, release, cursor, reads, now)
    if phase is TickPhase.bake:
        return _bake(product, release, cursor, reads, bake_remaining(product, release, now))
    if phase is TickPhase.baked:
        return _baked(product, release, reads)
    return TickPlan(skip=f"release {release.id} is {release.state.value}, not in a canary step")


def _canary(product: Product, release: Any, cursor_text: str | None, reads: TickReads, now: datetime) -> TickPlan:
    manifest = product.manifest
    step = release.canary_step or 0
    canaries = watched_versions(TickPhase.canary, release.versions, reads.services)
    if not canaries:
        return TickPlan(skip=f"release {release.id}: no canary is running (a promote or rollback is under way)")
    key = f"{release.id}:{step}"
    if (recorded := reads.failed.get(f"{key}:rollback")) is not None:
        return _failed_before(release.id, f"{key}:rollback", f"canary failed: {recorded}", tuple(sorted(canaries)))
    cursor = carry_cursor(_parsed(cursor_text), key)
    unavailable: dict[str, str] = {}
    budgets = []
    for service in canaries:
        read = reads.services[service]
        entry = cursor["series"].get(service) or {"baseline": [], "canary": []}
        _append_resource_samples(resource_kinds(manifest, service), read.usage, entry)
        if entry.get("resources"):
            cursor["series"][service] = entry
        if read.snapshot is None:
            unavailable[service] = read.unavailable or "not read"
            continue
        cursor["series"][service] = entry
        skipped = append_read(entry, read.snapshot.stable, read.snapshot.canary, MAX_SERIES)
        if skipped:
            unavailable[service] = skipped
        stable, slo = read.snapshot.stable, manifest.service(service).slo
        if slo is not None and stable is not None:
            budgets.append(budget_status(service, slo, stable.requests, stable.errors,
                                         slow_requests(stable.latency_buckets, slo.latency_ms)))

    elapsed = (now - release.updated_at).total_seconds()
    series = [ServiceSeries(s, e["baseline"], e["canary"], _resources_of(e))
              for s, e in cursor["series"].items() if s in canaries]
    decision = decide(manifest, series, elapsed_seconds=elapsed, unavailable=unavailable)
    seen = {"cursor": json.dumps(cursor), "budgets": tuple(budgets),
            "observations": _observations(release.id, {"canary_step": step}, decision, _step_numbers)}
    min_step = max(manifest.service(s).canary.analysis.min_step_seconds for s in canaries)
    if decision.verdict is Verdict.failed:
        return TickPlan(**seen, verdict=_verdict(step, "fail", decision), shed=tuple(sorted(canaries)), run=RunPlan(
            Job.rollback, f"{key}:rollback", _rollback_config(release.id, f"canary failed: {decision.reason}")))
    if decision.verdict is Verdict.passed and elapsed >= min_step:
        weights = weights_for_step(manifest, canaries, step + 1) if step + 1 < step_count(manifest, canaries) else {}
        return TickPlan(**seen, verdict=_verdict(step, "pass", decision),
                        approval=ApprovalCheck(ApprovalPhase.promote, max(weights.values(), default=100)),
                        run=RunPlan(Job.promote, f"{key}:promote", {"ops": {"promote_step": {"config": {
                            "release_id": release.id, "expected_step": step}}}}))
    why = decision.reason if decision.verdict is not Verdict.passed else f"passed; holding step for {min_step:.0f} s"
    return TickPlan(**seen, skip=f"step {step}: {why}")


def _bake(product: Product, release: Any, cursor_text: str | None, reads: TickReads, left: float) -> TickPlan:
    promoted = watched_versions(TickPhase.bake, release.versions, reads.services)
    key = f"{release.id}:{BAKE}"
    if (recorded := reads.failed.get(f"{key}:rollback")) is not None:
        return _failed_before(release.id, f"{key}:rollback", f"regression during bake: {recorded}")
    cursor = carry_cursor(_parsed(cursor_text), key)
    if not promoted:
        return TickPlan(cursor=json.dumps(cursor),
                        skip=f"release {release.id} baking: {left:.0f} s left; no new version is stable")
    unavailable: dict[str, str] = {}
    for service, version in promoted.items():
        read = reads.services[service]
        if read.snapshot is None:
            unavailable[service] = read.unavailable or "not read"
            continue
        stable = read.snapshot.stable
        if stable is None:
            unavailable[service] = f"no series for {version} yet"
            continue
        entry = cursor["series"].setdefault(service, {"stable": []})
        counts = [stable.requests, stable.errors, [list(b) for b in stable.latency_buckets]]
        entry["stable"] = (entry["stable"] + [counts])[-MAX_SERIES:]
        _append_bake_resource_samples(resource_kinds(product.manifest, service), read.usage, entry)
    series = {s: e["stable"] for s, e in cursor["series"].items() if s in promoted}
    resources = {s: e.get("resources", {}) for s, e in cursor["series"].items() if s in promoted}
    decision = decide_bake(product.manifest, series, cursor.get("reference") or {}, unavailable=unavailable,
                           resources=resources)
    seen = {"cursor": json.dumps(cursor),
            "observations": _observations(release.id, {"phase": BAKE}, decision, _bake_numbers)}
    if decision.verdict is Verdict.failed:  # nothing to shed: the promoted version is stable, the old one stopped
        return TickPlan(**seen, verdict=_verdict(BAKE, "fail", decision), run=RunPlan(
            Job.rollback, f"{key}:rollback", _rollback_config(release.id, f"regression during bake: {decision.reason}")))
    return TickPlan(**seen, skip=f"release {release.id} baking: {left:.0f} s left; {decision.reason}")


def _baked(product: Product, release: Any, reads: TickReads) -> TickPlan:
    """Bake over: complete the release (the promote job finishes it), or wait for the contract job."""
    if reads.contract_pending:
        waiting = reads.contract_waiting
        return TickPlan(skip=f"release {release.id} baked; contract migrations on {', '.join(reads.contract_pending)} "
                             f"wait for {product.name}_contract" + (f" ({waiting})" if waiting else ""))
    return TickPlan(run=RunPlan(Job.promote, f"{release.id}:finish",
                                {"ops": {"promote_step": {"config": {"release_id": release.id}}}}))


def _failed_before(release_id: str, run_key: str, reason: str, shed: tuple[str, ...] = ()) -> TickPlan:
    """A FAIL an earlier tick recorded: request its rollback again (and shed again: a no-op at
    weight 0) instead of judging evidence that no longer grows once the canary has no traffic."""
    return TickPlan(shed=shed, run=RunPlan(Job.rollback, run_key, _rollback_config(release_id, reason)))


def _parsed(cursor: str | None) -> dict[str, Any] | None:
    return json.loads(cursor) if cursor else None


def _append_resource_samples(kinds: set[MetricKind], usage: Mapping[str, tuple[float, float]] | None,
                             entry: dict) -> None:
    """One (stable, canary) memory MB and CPU % sample per tick into the cursor entry, when the
    service judges a memory/cpu metric and the platform measured both processes."""
    if not kinds or not usage or "stable" not in usage or "canary" not in usage:
        return
    store = entry.setdefault("resources", {})
    for kind in kinds:
        index = 0 if kind is MetricKind.memory else 1
        base, can = store.setdefault(kind.value, [[], []])
        base.append(round(usage["stable"][index], 3))
        can.append(round(usage["canary"][index], 3))
        store[kind.value] = [base[-MAX_RESOURCE_SAMPLES:], can[-MAX_RESOURCE_SAMPLES:]]


def _append_bake_resource_samples(kinds: set[MetricKind], usage: Mapping[str, tuple[float, float]] | None,
                                  entry: dict) -> None:
    """During bake the promoted version is the stable process: one memory MB / CPU % sample of it."""
    if not kinds or not usage or "stable" not in usage:
        return
    store = entry.setdefault("resources", {})
    for kind in kinds:
        samples = store.get(kind.value, []) + [round(usage["stable"][0 if kind is MetricKind.memory else 1], 3)]
        store[kind.value] = samples[-MAX_RESOURCE_SAMPLES:]


def _resources_of(entry: dict) -> dict[str, tuple[list[float], list[float]]]:
    return {kind: (pair[0], pair[1]) for kind, pair in entry.get("resources", {}).items()}


def _verdict(step: int | str, verdict: str, decision: CanaryDecision) -> dict[str, Any]:
    return {"step": step, "verdict": verdict, "reason": decision.reason, "decided_by": decision.decided_by}


def _rollback_config(release_id: str, reason: str) -> dict[str, Any]:
    return {"ops": {"rollback_start": {"config": {"release_id": release_id, "reason": reason[:900]}}}}


def _step_numbers(metric: MetricVerdict) -> tuple[tuple[str, Any], ...]:
    return ("effect", metric.effect), ("canary_n", metric.canary_n), ("baseline_n", metric.baseline_n)


def _bake_numbers(metric: MetricVerdict) -> tuple[tuple[str, Any], ...]:
    return (("bake_rate", metric.details.get("bake_rate")), ("bake_n", metric.canary_n),
            ("reference_n", metric.baseline_n), ("bar", metric.details.get("bar")), ("effect", metric.effect))


def _observations(release_id: str, label: dict[str, Any], decision: CanaryDecision,
                  numbers_of: Callable[[MetricVerdict], tuple[tuple[str, Any], ...]]) -> tuple[VerdictObservation, ...]:
    return tuple(
        VerdictObservation(
            service, verdict.verdict.value, verdict.reason, {"release_id": release_id, **label},
            {f"{m.name}_{name}": float(value) for m in verdict.metrics for name, value in numbers_of(m)
             if value is not None},
        )
        for service, verdict in decision.services.items()
    )
