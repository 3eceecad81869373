"""release_pipelines.core.canary.decide: how services' series combine into one release decision.

Series are what the canary sensor keeps: one cumulative read per tick per side,
[requests, errors, [[le, count], ...]], oldest first; a read with no data is [0, 0, []].
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import pytest

from release_pipelines.core.canary import (
    ServiceSeries,
    _buckets,
    append_read,
    decide,
    judge_service,
)
from release_pipelines.core.judge import Verdict
from release_pipelines.core.manifest import (
    Analysis,
    AnalysisMetric,
    Canary,
    Deploy,
    LocalDeploy,
    Manifest,
    MetricKind,
    OnDeadline,
    Service,
)
from release_pipelines.core.metrics import VersionMetrics

P, F, I = Verdict.passed, Verdict.failed, Verdict.inconclusive
LES = (0.005, 0.01, 0.025, 0.05, 0.1, math.inf)
SHARES = (0.5, 0.8, 0.95, 0.99, 1.0, 1.0)  # cumulative share of requests at or below each le
DOWN = "Prometheus at http://127.0.0.1:9/api/v1/query did not answer (ConnectError: refused)"


def service(name: str, *, deadline: float = 300, on_deadline: OnDeadline = OnDeadline.rollback,
            latency: bool = True) -> Service:
    metrics = [AnalysisMetric(name="error_rate", kind=MetricKind.errors)]
    if latency:
        metrics.append(AnalysisMetric(name="latency", kind=MetricKind.latency, critical=False))
    return Service(
        name=name, deploy=Deploy(local=LocalDeploy(command=["{python}", "app.py"])),
        canary=Canary(analysis=Analysis(deadline_seconds=deadline, on_deadline=on_deadline, metrics=metrics)),
    )


MANIFEST = Manifest(product="shop", services=[
    service("catalog"),
    service("orders", deadline=600, on_deadline=OnDeadline.promote),
    service("frontend", deadline=900, on_deadline=OnDeadline.wait, latency=False),
])


def reads(ticks: int, per_tick: int, error_rate: float, *, start: int = 0,
          start_errors: int | None = None) -> list[list]:
    """Cumulative reads of a steady version; `start` requests (`start_errors` errors) were counted
    before the step began."""
    out = []
    before = round(start * error_rate) if start_errors is None else start_errors
    for t in range(ticks):
        n = start + t * per_tick
        errors = before + t * round(per_tick * error_rate)
        out.append([n, errors, [[le, round(n * share)] for le, share in zip(LES, SHARES)]])
    return out


NO_DATA = [[0, 0, []]] * 3


@dataclass(frozen=True)
class Side:
    ticks: int = 20
    per_tick: int = 2000
    rate: float = 0.02


def series(name: str, baseline: Side | None = None, canary: Side | None = None) -> ServiceSeries:
    baseline, canary = baseline or Side(), canary or Side()
    return ServiceSeries(
        name,
        reads(baseline.ticks, baseline.per_tick, baseline.rate, start=1_000_000),
        reads(canary.ticks, canary.per_tick, canary.rate),
    )


HEALTHY = Side()
BAD = Side(rate=0.10)  # 5x the baseline's error rate
THIN = Side(ticks=2, per_tick=20)  # far too little traffic to tell


def thin(name: str) -> ServiceSeries:
    return series(name, THIN, THIN)


CASES = [
    # name, series, unavailable, elapsed, verdict, decided_by, reason must contain
    ("all-healthy-pass", [series("catalog"), series("orders")], {}, 60, P, "evidence", "every canary passed"),
    ("one-bad-fails-the-release", [series("catalog"), series("orders", canary=BAD)], {}, 60, F, "evidence",
     "orders: failed: error_rate"),
    ("a-failure-wins-over-missing-evidence", [series("catalog", canary=BAD)], {"orders": DOWN}, 60, F,
     "evidence", "catalog: failed"),
    ("a-failure-wins-over-waiting", [thin("catalog"), series("orders", canary=BAD)], {}, 60, F, "evidence",
     "orders: failed"),
    ("unavailable-is-never-a-pass", [series("catalog")], {"orders": DOWN}, 60, I, "evidence",
     f"orders: no evidence ({DOWN})"),
    ("all-unavailable-waits", [], {"catalog": DOWN, "orders": DOWN}, 60, I, "evidence", "no evidence"),
    ("no-data-reads-wait", [ServiceSeries("catalog", NO_DATA, NO_DATA)], {}, 60, I, "evidence",
     "catalog: waiting for evidence on error_rate"),
    ("too-little-data-waits", [thin("catalog")], {}, 299, I, "evidence", "waiting for evidence"),
    # deadline: the smallest deadline among the waiting services decides, with that service's policy
    ("deadline-rollback", [thin("catalog")], {}, 300, F, "deadline", "on_deadline=rollback"),
    ("deadline-promote", [thin("orders")], {}, 600, P, "deadline", "on_deadline=promote"),
    ("deadline-wait", [thin("frontend")], {}, 900, I, "deadline", "on_deadline=wait"),
    ("deadline-not-yet", [thin("orders")], {}, 599, I, "evidence", "waiting for evidence"),
    ("unavailable-past-deadline-rolls-back", [], {"catalog": DOWN}, 301, F, "deadline", DOWN),
    ("smallest-deadline-policy", [thin("orders")], {"catalog": DOWN}, 300, F, "deadline",
     "on_deadline=rollback"),
    ("deadline-does-not-override-a-pass", [series("catalog")], {}, 10_000, P, "evidence", "every canary passed"),
    ("deadline-does-not-override-a-fail", [series("orders", canary=BAD)], {}, 10_000, F, "evidence",
     "orders: failed"),
]


@pytest.mark.parametrize(("series_list", "unavailable", "elapsed", "verdict", "decided_by", "reason"),
                         [pytest.param(*case[1:], id=case[0]) for case in CASES])
def test_decide(series_list, unavailable, elapsed, verdict, decided_by, reason) -> None:
    decision = decide(MANIFEST, series_list, elapsed_seconds=elapsed, unavailable=unavailable)
    assert (decision.verdict, decision.decided_by) == (verdict, decided_by), decision.reason
    assert reason in decision.reason
    if verdict is I:  # the evidence behind a wait is kept per metric
        assert all(m.reason for v in decision.services.values() for m in v.metrics)
    assert set(decision.services) == {s.service for s in series_list}


def test_unavailable_metrics_are_never_a_pass_whatever_the_others_say() -> None:
    for elapsed in (0, 100, 299):
        decision = decide(MANIFEST, [series("catalog"), series("orders")], elapsed_seconds=elapsed,
                          unavailable={"frontend": DOWN})
        assert decision.verdict is I
        assert f"frontend: no evidence ({DOWN})" in decision.reason


def test_a_service_verdict_names_each_metric_with_its_evidence() -> None:
    verdict = judge_service(MANIFEST, series("catalog", canary=BAD))
    assert verdict.verdict is F
    by_name = {m.name: m for m in verdict.metrics}
    assert by_name["error_rate"].verdict is F and "10.00% vs 2.00%" in by_name["error_rate"].reason
    assert by_name["latency"].canary_n > 0  # histograms were judged too


# ------------------------------------------------------------------------ counter resets


def restarted(side: list[list], at: int) -> list[list]:
    """The same reads, but the router restarted before tick `at`: counters start again from zero."""
    base = side[at - 1]
    out = side[:at]
    for r in side[at:]:
        n, e = r[0] - base[0], r[1] - base[1]
        hist = dict(r[2])
        before = dict(base[2])
        out.append([n, e, [[le, hist[le] - before.get(le, 0)] for le, _ in r[2]]])
    return out


@pytest.mark.parametrize("at", [1, 5, 19])
def test_a_counter_reset_gives_no_negative_buckets(at: int) -> None:
    ok = series("catalog")
    canary = restarted(ok.canary, at)
    baseline = restarted(ok.baseline, at)
    for side in (canary, baseline):
        buckets = _buckets(side)
        assert len(buckets) == len(side) - 1
        assert all(b.requests >= 0 and 0 <= b.errors <= b.requests for b in buckets)
    verdict = judge_service(MANIFEST, ServiceSeries("catalog", baseline, canary))
    assert verdict.verdict is not F, verdict.reason  # a restart is not a regression
    for metric in verdict.metrics:
        assert metric.canary_n >= 0 and metric.baseline_n >= 0


def test_a_reset_right_after_a_read_counts_from_zero_not_backwards() -> None:
    side = [[100, 10, []], [150, 12, []], [7, 1, []], [30, 2, []]]
    assert [(b.requests, b.errors) for b in _buckets(side)] == [(50, 2), (7, 1), (23, 1)]


def test_a_restart_that_already_served_more_than_before_clamps_errors_at_zero() -> None:
    # Undetectable as a reset from the counts (more requests than before), but never negative.
    side = [[100, 10, []], [160, 3, []]]
    assert [(b.requests, b.errors) for b in _buckets(side)] == [(60, 0)]


def test_a_bad_canary_still_fails_across_a_router_restart() -> None:
    bad = series("catalog", canary=BAD)
    decision = decide(MANIFEST, [ServiceSeries("catalog", restarted(bad.baseline, 8), restarted(bad.canary, 8))],
                      elapsed_seconds=60, unavailable={})
    assert decision.verdict is F


def test_a_single_missing_baseline_read_does_not_fail_a_healthy_canary() -> None:
    # Both versions fail 2 % now; the stable version failed 0.1 % over its earlier lifetime.
    baseline = reads(20, 2000, 0.02, start=1_000_000, start_errors=1_000)
    canary = reads(20, 2000, 0.02)
    entry: dict = {"baseline": [], "canary": []}
    for i, (base, can) in enumerate(zip(baseline, canary)):
        stable_read = None if i == 3 else VersionMetrics("1.0.0", base[0], base[1], tuple(map(tuple, base[2])))
        skipped = append_read(entry, stable_read, VersionMetrics("1.1.0", can[0], can[1], tuple(map(tuple, can[2]))))
        assert (skipped is not None) == (i == 3)
    decision = decide(MANIFEST, [ServiceSeries("catalog", entry["baseline"], entry["canary"])], elapsed_seconds=60,
                      unavailable={})
    assert decision.verdict is P, decision.reason
