"""core.canary_tick.plan_tick: one canary-sensor tick as plain data, without Dagster.

Each test feeds what the sensor would have read (cumulative router counters per version, the
platform's versions, pending contract migrations) tick after tick, carrying the cursor the plan
returns, and checks what the sensor would do: the run it requests and its run key, the verdict it
records, the observations, or why it waits.
"""

from __future__ import annotations

import json
import math
from datetime import UTC, datetime, timedelta
from pathlib import Path

from release_pipelines.resources.ledger_schema import Release

from release_pipelines.core.canary_tick import (
    ApprovalCheck,
    Job,
    ServiceRead,
    TickPhase,
    TickPlan,
    TickReads,
    plan_tick,
    tick_phase,
)
from release_pipelines.core.manifest import ApprovalPhase
from release_pipelines.core.manifest_loader import parse_manifest
from release_pipelines.core.metrics import MetricsSnapshot, VersionMetrics
from release_pipelines.core.product import Product
from release_pipelines.core.states import ReleaseState

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "shop" / "release.yaml"
NOW = datetime(2026, 3, 2, 12, 0, tzinfo=UTC)
LES = (0.005, 0.05, 0.25, math.inf)
SHARES = (0.5, 0.9, 1.0, 1.0)  # cumulative share of requests at or below each le


def shop(text_edit: tuple[str, str] | None = None) -> Product:
    """The example shop (its approvals left out: the sensor's reads bring what approvals wait for)."""
    text = EXAMPLE.read_text().split("\napprovals:")[0]
    if text_edit:
        assert text_edit[0] in text
        text = text.replace(*text_edit)
    return Product(parse_manifest(text, str(EXAMPLE)), EXAMPLE)


def release(state: ReleaseState = ReleaseState.CANARY, step: int | None = 0, since: float = 60,
            versions: dict[str, str] | None = None) -> Release:
    return Release(
        id="shop-7", product="shop", state=state, versions=versions or {"orders": "1.1.0"},
        previous={"orders": "1.0.0"}, canary_step=step, created_at=NOW - timedelta(hours=1),
        updated_at=NOW - timedelta(seconds=since), created_by="alice", updated_by="alice", run_id=None,
    )


def counters(version: str, requests: int, error_rate: float) -> VersionMetrics:
    return VersionMetrics(version, requests, round(requests * error_rate),
                          tuple((le, round(requests * share)) for le, share in zip(LES, SHARES)))


def canary_reads(tick: int, canary_rate: float, stable_rate: float = 0.01, per_tick: int = 1000,
                 service: str = "orders") -> TickReads:
    """Tick `tick` of a canary step: stable 1.0.0 takes 3x the canary's requests."""
    snapshot = MetricsSnapshot(service, counters("1.0.0", 3 * per_tick * (tick + 1), stable_rate),
                               counters("1.1.0", per_tick * (tick + 1), canary_rate))
    return TickReads(services={service: ServiceRead("1.0.0", "1.1.0", snapshot)})


def ticks(product: Product, rel: Release, reads_at, limit: int = 40, cursor: str | None = None) -> TickPlan:
    """Plan tick after tick (carrying the cursor) until a run is planned; the last plan."""
    for tick in range(limit):
        plan = plan_tick(product, rel, cursor, reads_at(tick), NOW)
        cursor = plan.cursor if plan.cursor is not None else cursor
        if plan.run is not None:
            return plan
    return plan


def test_a_failing_canary_plans_the_rollback_with_the_verdict_to_record() -> None:
    plan = ticks(shop(), release(step=1), lambda t: canary_reads(t, canary_rate=0.20))
    assert plan.run is not None and plan.run.job is Job.rollback
    assert plan.run.run_key == "shop-7:1:rollback"  # (release, step, decision)
    config = plan.run.run_config["ops"]["rollback_start"]["config"]
    assert config["release_id"] == "shop-7" and config["reason"].startswith("canary failed: orders:")
    assert plan.verdict == {"step": 1, "verdict": "fail", "reason": plan.verdict["reason"], "decided_by": "evidence"}
    assert "error" in plan.verdict["reason"] and plan.approval is None and plan.skip is None
    [observed] = plan.observations
    assert (observed.service, observed.verdict) == ("orders", "fail")
    assert observed.labels == {"release_id": "shop-7", "canary_step": 1}
    assert observed.numbers["error_rate_canary_n"] > 0 and observed.numbers["error_rate_effect"] > 1


def test_a_passing_canary_past_min_step_plans_the_promotion_after_an_approval_check() -> None:
    plan = ticks(shop(), release(step=0), lambda t: canary_reads(t, canary_rate=0.01))
    assert plan.run is not None and plan.run.job is Job.promote
    assert plan.run.run_key == "shop-7:0:promote"
    assert plan.run.run_config == {"ops": {"promote_step": {"config": {"release_id": "shop-7", "expected_step": 0}}}}
    assert plan.verdict["verdict"] == "pass" and plan.verdict["step"] == 0
    # orders' steps are 25, 50, 100: the next step gives it 50 % - what promote approvals are asked for
    assert plan.approval == ApprovalCheck(ApprovalPhase.promote, 50)


def test_the_last_judged_step_asks_approval_for_full_traffic() -> None:
    plan = ticks(shop(), release(step=1), lambda t: canary_reads(t, canary_rate=0.01))
    assert plan.run.run_key == "shop-7:1:promote" and plan.approval == ApprovalCheck(ApprovalPhase.promote, 100)


def test_a_pass_before_min_step_holds_the_step() -> None:
    orders = "      steps: [25, 50, 100]\n      analysis:\n        interval_seconds: 5\n        deadline_seconds: 300\n"
    product = shop((orders, orders.replace("300\n", "3000\n        min_step_seconds: 1200\n")))
    plan = ticks(product, release(since=600), lambda t: canary_reads(t, canary_rate=0.01), limit=60)
    assert plan.run is None and plan.skip == "step 0: passed; holding step for 1200 s"
    assert plan.observations[0].verdict == "pass"
    later = ticks(product, release(since=1300), lambda t: canary_reads(t, canary_rate=0.01), limit=60)
    assert later.run is not None and later.run.job is Job.promote


def test_the_first_tick_waits_says_why_and_starts_the_series() -> None:
    plan = plan_tick(shop(), release(), None, canary_reads(0, canary_rate=0.01), NOW)
    assert plan.run is None and plan.verdict is None and plan.skip.startswith("step 0: ")
    cursor = json.loads(plan.cursor)
    assert cursor["key"] == "shop-7:0" and len(cursor["series"]["orders"]["canary"]) == 1
    assert [o.verdict for o in plan.observations] == ["inconclusive"]


def test_unreadable_metrics_are_no_evidence_and_never_a_pass() -> None:
    down = TickReads(services={"orders": ServiceRead("1.0.0", "1.1.0", unavailable="router down")})
    plan = ticks(shop(), release(since=30), lambda t: canary_reads(t, 0.01) if t < 1 else down, limit=5)
    assert plan.run is None and "orders: no evidence (router down)" in plan.skip


def test_no_running_canary_waits_without_touching_the_cursor() -> None:
    reads = TickReads(services={"orders": ServiceRead("1.0.0", None)})
    plan = plan_tick(shop(), release(), '{"key": "shop-7:0", "series": {}}', reads, NOW)
    assert plan == TickPlan(skip="release shop-7: no canary is running (a promote or rollback is under way)")


def test_no_active_release_and_other_states_wait() -> None:
    assert plan_tick(shop(), None, None, TickReads(), NOW).skip == "shop has no active release"
    expanding = plan_tick(shop(), release(ReleaseState.EXPANDING, step=None), None, TickReads(), NOW)
    assert expanding == TickPlan(skip="release shop-7 is expanding, not in a canary step")


def test_a_regression_during_bake_plans_the_rollback() -> None:
    product, baking = shop(), release(ReleaseState.BAKING, step=None, since=2)  # orders bakes 10 s
    assert tick_phase(product, baking, NOW) is TickPhase.bake
    # the last canary step left the old version's rate (1 %) as the reference
    step_cursor = json.dumps({"key": "shop-7:1", "reference": {}, "series": {"orders": {
        "baseline": [[0, 0, []], [20000, 200, []]], "canary": [[0, 0, []], [5000, 50, []]]}}})

    def bake_reads(tick: int) -> TickReads:
        promoted = MetricsSnapshot("orders", counters("1.1.0", 2000 * (tick + 1), 0.10), None)
        return TickReads(services={"orders": ServiceRead("1.1.0", None, promoted)})

    plan = ticks(product, baking, bake_reads, cursor=step_cursor)
    assert plan.run is not None and plan.run.job is Job.rollback
    assert plan.run.run_key == "shop-7:bake:rollback"
    assert plan.run.run_config["ops"]["rollback_start"]["config"]["reason"].startswith("regression during bake: orders")
    assert plan.verdict["step"] == "bake" and plan.verdict["verdict"] == "fail"
    assert json.loads(plan.cursor)["reference"] == {"orders": {"requests": 20000, "errors": 200}}
    assert plan.observations[0].labels == {"release_id": "shop-7", "phase": "bake"}


def test_a_quiet_bake_waits_for_the_time_to_pass() -> None:
    baking = release(ReleaseState.BAKING, step=None, since=2)
    reads = TickReads(services={"orders": ServiceRead("1.0.0", None)})  # promoted version not stable yet
    plan = plan_tick(shop(), baking, None, reads, NOW)
    assert plan.run is None and plan.skip == "release shop-7 baking: 8 s left; no new version is stable"
    assert json.loads(plan.cursor)["key"] == "shop-7:bake"


def test_baked_with_contract_migrations_pending_waits_for_the_contract_job() -> None:
    baked = release(ReleaseState.BAKING, step=None, since=60)
    assert tick_phase(shop(), baked, NOW) is TickPhase.baked
    reads = TickReads(contract_pending=("shop_db",), contract_waiting="contract waits for 1 approval from alice, bob, carol")
    plan = plan_tick(shop(), baked, None, reads, NOW)
    assert plan == TickPlan(skip="release shop-7 baked; contract migrations on shop_db wait for shop_contract "
                                 "(contract waits for 1 approval from alice, bob, carol)")


def test_baked_without_contract_migrations_finishes_the_release() -> None:
    plan = plan_tick(shop(), release(ReleaseState.BAKING, step=None, since=60), None, TickReads(), NOW)
    assert plan.run.job is Job.promote and plan.run.run_key == "shop-7:finish"
    assert plan.run.run_config == {"ops": {"promote_step": {"config": {"release_id": "shop-7"}}}}
    assert plan.verdict is None and plan.cursor is None


def test_run_keys_repeat_for_the_same_decision_and_differ_by_step() -> None:
    failing = [ticks(shop(), release(step=s), lambda t: canary_reads(t, canary_rate=0.20)) for s in (0, 0, 2)]
    assert [p.run.run_key for p in failing] == ["shop-7:0:rollback", "shop-7:0:rollback", "shop-7:2:rollback"]


def test_error_budgets_of_services_with_an_slo() -> None:
    product = shop(("      bake_seconds: 10\n", "      bake_seconds: 10\n    slo: {availability: 0.99}\n"))
    plan = plan_tick(product, release(), None, canary_reads(3, canary_rate=0.01, stable_rate=0.005), NOW)
    [budget] = plan.budgets
    assert (budget.service, budget.requests, budget.errors) == ("orders", 12000, 60)
    assert 0 < budget.remaining < 1


ORDERS_LATENCY = "- {name: latency, kind: latency, direction: increase, critical: false}\n      bake_seconds"
SLOWER_SHARES = (0.1, 0.4, 1.0, 1.0)  # the median moves from below 5 ms to above 50 ms


def bake_cursor(usage: tuple[float, ...] = ()) -> str:
    """The cursor the last canary step left: the old version at 1 % errors, SHARES latency, and
    its memory samples (MB) when given."""
    def read(requests: int) -> list:
        return [requests, requests // 100, [[le, round(requests * share)] for le, share in zip(LES, SHARES)]]
    entry: dict = {"baseline": [read(0), read(20000)], "canary": [read(0), read(5000)]}
    if usage:
        entry["resources"] = {"memory": [list(usage), list(usage)]}
    return json.dumps({"key": "shop-7:1", "reference": {}, "series": {"orders": entry}})


def bake_reads(shares: tuple[float, ...] = SHARES, memory_mb: float = 100.0):
    def at(tick: int) -> TickReads:
        requests = 200 * (tick + 1)
        promoted = VersionMetrics("1.1.0", requests, requests // 100,
                                  tuple((le, round(requests * share)) for le, share in zip(LES, shares)))
        return TickReads(services={"orders": ServiceRead(
            "1.1.0", None, MetricsSnapshot("orders", promoted, None), usage={"stable": (memory_mb, 5.0)})})
    return at


def test_a_latency_regression_during_bake_plans_the_rollback() -> None:
    product = shop((ORDERS_LATENCY, ORDERS_LATENCY.replace("critical: false", "critical: true")))
    baking = release(ReleaseState.BAKING, step=None, since=2)
    plan = ticks(product, baking, bake_reads(SLOWER_SHARES), cursor=bake_cursor())
    assert plan.run is not None and plan.run.job is Job.rollback and plan.verdict["step"] == "bake"
    reason = plan.run.run_config["ops"]["rollback_start"]["config"]["reason"]
    assert reason.startswith("regression during bake: orders") and "latency" in reason and "beyond 1.1x" in reason
    reference = json.loads(plan.cursor)["reference"]["orders"]
    assert reference["requests"] == 20000 and reference["latency"][-1] == [math.inf, 20000]


def test_a_memory_regression_during_bake_plans_the_rollback() -> None:
    memory = "- {name: memory, kind: memory, direction: increase, critical: true}\n          " + ORDERS_LATENCY
    product, baking = shop((ORDERS_LATENCY, memory)), release(ReleaseState.BAKING, step=None, since=2)
    plan = ticks(product, baking, bake_reads(memory_mb=250.0), cursor=bake_cursor((100.0, 104.0, 98.0, 101.0)))
    assert plan.run is not None and plan.run.job is Job.rollback
    assert "memory" in plan.run.run_config["ops"]["rollback_start"]["config"]["reason"]
    assert json.loads(plan.cursor)["series"]["orders"]["resources"]["memory"][:3] == [250.0, 250.0, 250.0]


def test_a_healthy_bake_judges_every_metric_and_waits_for_the_time_to_pass() -> None:
    memory = "- {name: memory, kind: memory, direction: increase, critical: true}\n          " + ORDERS_LATENCY
    product = shop((ORDERS_LATENCY, memory.replace("critical: false", "critical: true")))
    baking = release(ReleaseState.BAKING, step=None, since=2)
    plan = ticks(product, baking, bake_reads(memory_mb=102.0), cursor=bake_cursor((100.0, 104.0, 98.0, 101.0)))
    assert plan.run is None and plan.skip.startswith("release shop-7 baking: 8 s left")
    assert {"error_rate_bake_n", "latency_bake_n", "memory_bake_n"} <= set(plan.observations[0].numbers)


def test_a_canary_fail_sheds_every_canary_of_the_release_and_a_pass_sheds_nothing() -> None:
    two = release(step=1, versions={"orders": "1.1.0", "catalog": "1.1.0"})

    def both(tick: int) -> TickReads:
        orders = canary_reads(tick, canary_rate=0.20).services["orders"]
        catalog = canary_reads(tick, canary_rate=0.01, service="catalog").services["catalog"]
        return TickReads(services={"orders": orders, "catalog": catalog})

    failed = ticks(shop(), two, both)
    assert failed.run.job is Job.rollback and failed.shed == ("catalog", "orders")  # the whole release, not one service
    passed = ticks(shop(), release(step=0), lambda t: canary_reads(t, canary_rate=0.01))
    assert passed.run.job is Job.promote and passed.shed == ()


def test_a_fail_in_the_ledger_requests_the_same_rollback_without_judging_again() -> None:
    # a daemon killed after the verdict and the shed, before its run request: the next tick's evidence
    # would not grow (the canary has no traffic), so the recorded FAIL is what it acts on
    first = ticks(shop(), release(step=1), lambda t: canary_reads(t, canary_rate=0.20))
    recorded = {first.run.run_key: first.verdict["reason"]}
    healthy_now = TickReads(services=canary_reads(0, canary_rate=0.01).services, failed=recorded)
    again = plan_tick(shop(), release(step=1), None, healthy_now, NOW)
    assert again == TickPlan(run=first.run, shed=("orders",))  # same key and config; no verdict to record twice
    other_step = plan_tick(shop(), release(step=2), None, healthy_now, NOW)
    assert other_step.run is None  # a FAIL of an earlier step is not this step's


def test_a_bake_fail_sheds_nothing_and_a_recorded_one_is_requested_again() -> None:
    product = shop((ORDERS_LATENCY, ORDERS_LATENCY.replace("critical: false", "critical: true")))
    baking = release(ReleaseState.BAKING, step=None, since=2)
    plan = ticks(product, baking, bake_reads(SLOWER_SHARES), cursor=bake_cursor())
    assert plan.run.job is Job.rollback and plan.shed == ()  # promoted is stable, the old one stopped: no weight to move
    recorded = {"shop-7:bake:rollback": "orders: error rate 10.0 %"}
    again = plan_tick(product, baking, None, TickReads(services=bake_reads()(0).services, failed=recorded), NOW)
    assert again.run.run_key == "shop-7:bake:rollback" and again.shed == () and again.verdict is None
    assert again.run.run_config["ops"]["rollback_start"]["config"]["reason"] == (
        "regression during bake: orders: error rate 10.0 %")
