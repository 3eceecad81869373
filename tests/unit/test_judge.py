"""The canary judge: anytime validity by simulation, power, tri-state rules, evidence, deadline.

Simulations judge every canary at every one of 200 ticks (50-200 requests per side per tick)
with `ratio_test_path`, the vectorised core that `judge_errors` runs; a test below checks that
the path equals the public judge on prefixes. Seeds are fixed. The latency test's own
simulations are in test_judge_latency.py.
"""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from release_pipelines.core.judge import (
    MetricVerdict,
    NonCriticalPolicy,
    OverallVerdict,
    Verdict,
    apply_deadline,
    judge_overall,
    judge_resource,
)
from release_pipelines.core.judge_errors import (
    FAIL,
    PASS,
    Bucket,
    buckets_from_cumulative,
    judge_errors,
    rate_bounds,
    ratio_test_path,
)
from release_pipelines.core.judge_latency import (
    ROUTER_BUCKETS,
    HistogramLook,
    LatencyLook,
    histogram_quantile,
    judge_latency,
    judge_latency_histograms,
)
from release_pipelines.core.manifest import Direction, MetricKind, OnDeadline

ALPHA = 0.05
CANARIES, TICKS = 300, 200


def error_streams(seed: int, base_rate: float, canary_rate: float, canaries: int = CANARIES):
    """Per-tick (requests, errors) per side, shaped (canaries, ticks)."""
    rng = np.random.default_rng(seed)
    base_n = rng.integers(50, 201, (canaries, TICKS))
    can_n = rng.integers(50, 201, (canaries, TICKS))
    return base_n, rng.binomial(base_n, base_rate), can_n, rng.binomial(can_n, canary_rate)


def latency_looks(rng: np.random.Generator, scale: float, ticks: int = TICKS) -> list[LatencyLook]:
    """Log-normal latencies (median 100 ms, p95 ~228 ms); the canary's are multiplied by scale."""
    base_n, can_n = rng.integers(50, 201, ticks), rng.integers(50, 201, ticks)
    base = rng.lognormal(math.log(100), 0.5, base_n.sum())
    can = scale * rng.lognormal(math.log(100), 0.5, can_n.sum())
    return [LatencyLook(b, c) for b, c in zip(np.split(base, np.cumsum(base_n)[:-1]),
                                               np.split(can, np.cumsum(can_n)[:-1]))]


def ever(path_verdict: np.ndarray, code: int) -> np.ndarray:
    return (path_verdict == code).any(axis=-1)


def naive_z_ever_significant(base_n, base_k, can_n, can_k) -> np.ndarray:
    """Fixed-horizon one-sided two-proportion z-test at alpha, re-run on the cumulative window."""
    bn, bk, cn, ck = (np.cumsum(a, axis=-1).astype(float) for a in (base_n, base_k, can_n, can_k))
    with np.errstate(divide="ignore", invalid="ignore"):  # warm-up looks have no samples
        pooled = (bk + ck) / (bn + cn)
        se = np.sqrt(pooled * (1 - pooled) * (1 / bn + 1 / cn))
        z = np.where(se > 0, (ck / cn - bk / bn) / se, 0.0)
    return (z > 1.6449).any(axis=-1)


# ---------------------------------------------------------------- anytime validity (A/A)


@pytest.fixture(scope="module")
def aa_errors():
    streams = error_streams(seed=11, base_rate=0.02, canary_rate=0.02)
    return streams, ratio_test_path(*streams, alpha=ALPHA)


def test_aa_error_streams_false_fail_rate_stays_below_alpha_at_every_look(aa_errors):
    _, path = aa_errors
    assert ever(path.verdict, FAIL).mean() <= ALPHA + 0.02


def test_naive_fixed_horizon_test_on_the_same_error_streams_exceeds_alpha(aa_errors):
    streams, _ = aa_errors
    assert naive_z_ever_significant(*streams).mean() > 3 * ALPHA


def test_the_vectorised_path_is_what_the_public_judges_return():
    base_n, base_k, can_n, can_k = error_streams(seed=3, base_rate=0.03, canary_rate=0.05,
                                                 canaries=1)
    path = ratio_test_path(base_n, base_k, can_n, can_k, alpha=ALPHA)
    for tick in (0, 9, 49, 199):
        verdict = judge_errors(
            [Bucket(int(n), int(k)) for n, k in zip(base_n[0, :tick + 1], base_k[0, :tick + 1])],
            [Bucket(int(n), int(k)) for n, k in zip(can_n[0, :tick + 1], can_k[0, :tick + 1])],
            alpha=ALPHA,
        )
        code = {Verdict.passed: PASS, Verdict.failed: FAIL}.get(verdict.verdict, 0)
        assert code == path.verdict[0, tick]
        assert verdict.e_value == pytest.approx(path.e_value[0, tick])


def test_the_confidence_sequence_covers_the_true_ratio_at_every_look():
    """What makes PASS safe: a canary 1.3x worse (beyond the 1.25x tolerance) rarely passes."""
    path = ratio_test_path(*error_streams(seed=13, base_rate=0.02, canary_rate=0.026), alpha=ALPHA)
    covered = ((path.lower <= 1.3) & (1.3 <= path.upper)).all(axis=-1)
    assert covered.mean() >= 1 - ALPHA - 0.02
    assert ever(path.verdict, PASS).mean() <= ALPHA + 0.02


# ---------------------------------------------------------------- power and healthy canaries


def test_a_2x_error_rate_regression_fails_within_200_ticks():
    path = ratio_test_path(*error_streams(seed=21, base_rate=0.01, canary_rate=0.02), alpha=ALPHA)
    assert ever(path.verdict, FAIL).mean() >= 0.97


def test_healthy_canaries_reach_pass():
    errors = ratio_test_path(*error_streams(seed=31, base_rate=0.05, canary_rate=0.05), alpha=ALPHA)
    assert ever(errors.verdict, PASS).mean() >= 0.8


def test_one_healthy_canary_passes_through_the_public_judges():
    rng = np.random.default_rng(33)
    base = [Bucket(150, int(k)) for k in rng.binomial(150, 0.05, 200)]
    can = [Bucket(120, int(k)) for k in rng.binomial(120, 0.05, 200)]
    assert judge_errors(base, can).verdict is Verdict.passed
    assert judge_latency(latency_looks(rng, 1.0)).verdict is Verdict.passed


def test_a_significant_improvement_is_a_pass_not_a_fail():
    path = ratio_test_path(*error_streams(seed=41, base_rate=0.04, canary_rate=0.02, canaries=50),
                           alpha=ALPHA)
    assert not ever(path.verdict, FAIL).any()
    assert (path.verdict[:, -1] == PASS).all()


# ---------------------------------------------------------------- no data is never a pass


@pytest.mark.parametrize(
    "verdict",
    [
        pytest.param(lambda: judge_errors([], []), id="errors-empty"),
        pytest.param(lambda: judge_errors([Bucket(0, 0)] * 5, [Bucket(0, 0)] * 5), id="no-traffic"),
        pytest.param(lambda: judge_errors([Bucket(100, 0)] * 50, [Bucket(0, 0)] * 50),
                     id="canary-no-traffic"),
        pytest.param(lambda: judge_errors([Bucket(100, 0)] * 200, [Bucket(100, 0)] * 200, absolute_margin=0),
                     id="no-errors-either-side-relative-only"),
        pytest.param(lambda: judge_latency([]), id="latency-empty"),
        pytest.param(lambda: judge_latency([LatencyLook([100.0] * 10, [100.0] * 10)]),
                     id="latency-warm-up"),
        pytest.param(lambda: judge_latency_histograms([]), id="histograms-empty"),
        pytest.param(lambda: judge_resource([], [], name="rss"), id="resource-empty"),
    ],
)
def test_no_or_too_little_data_is_inconclusive_with_a_reason(verdict):
    result = verdict()
    assert result.verdict is Verdict.inconclusive
    assert result.reason


def test_mismatched_or_impossible_buckets_are_refused():
    with pytest.raises(ValueError, match="same time intervals"):
        judge_errors([Bucket(10, 1)], [])
    with pytest.raises(ValueError, match="errors <= requests"):
        judge_errors([Bucket(10, 11)], [Bucket(10, 1)])


# ---------------------------------------------------------------- direction (table-driven)


def steady(rate: float, buckets: int = 100, requests: int = 1000) -> list[Bucket]:
    return [Bucket(requests, round(requests * rate))] * buckets


@pytest.mark.parametrize(
    ("direction", "canary_rate", "expected"),
    [
        (Direction.increase, 0.04, Verdict.failed),
        (Direction.increase, 0.01, Verdict.passed),  # improvement
        (Direction.increase, 0.02, Verdict.passed),
        (Direction.increase, 0.022, Verdict.inconclusive),  # 1.1x: neither proven nor excluded
        (Direction.decrease, 0.04, Verdict.passed),
        (Direction.decrease, 0.01, Verdict.failed),
        (Direction.either, 0.04, Verdict.failed),
        (Direction.either, 0.01, Verdict.failed),
        (Direction.either, 0.02, Verdict.passed),
    ],
)
def test_error_direction(direction, canary_rate, expected):
    buckets = 100 if expected is not Verdict.inconclusive else 20
    verdict = judge_errors(steady(0.02, buckets), steady(canary_rate, buckets), direction=direction,
                           absolute_margin=0)  # the relative rule alone; the margin has its own tests
    assert verdict.verdict is expected, verdict.reason


@pytest.mark.parametrize(
    ("direction", "baseline", "canary", "expected"),
    [
        (Direction.increase, [100, 104, 98, 101], [200, 205, 198], Verdict.failed),  # 2x memory
        (Direction.increase, [100, 104, 98, 101], [101, 99, 103], Verdict.passed),
        (Direction.increase, [100, 104, 98, 101], [50, 52, 49], Verdict.passed),
        (Direction.increase, [100, 104, 98, 101], [90, 160, 100], Verdict.inconclusive),
        (Direction.decrease, [100, 104, 98, 101], [50, 52, 49], Verdict.failed),
        (Direction.decrease, [100, 104, 98, 101], [200, 205, 198], Verdict.passed),
        (Direction.either, [100, 104, 98, 101], [50, 52, 49], Verdict.failed),
        (Direction.either, [100, 104, 98, 101], [101, 99, 103], Verdict.passed),
        (Direction.increase, [100, 104], [200, 205], Verdict.inconclusive),  # too few samples
    ],
)
def test_resource_direction(direction, baseline, canary, expected):
    verdict = judge_resource(baseline, canary, name="rss", direction=direction)
    assert verdict.verdict is expected, verdict.reason


# ---------------------------------------------------------------- criticality (table-driven)


def metric(verdict: Verdict, critical: bool = True, name: str = "m") -> MetricVerdict:
    return MetricVerdict(name=name, kind=MetricKind.errors, verdict=verdict,
                         reason=f"{name} said so", critical=critical)


P, F, I = Verdict.passed, Verdict.failed, Verdict.inconclusive


@pytest.mark.parametrize(
    ("metrics", "policy", "expected"),
    [
        ([(P, True), (P, False)], NonCriticalPolicy.warn, P),
        ([(F, True), (P, False)], NonCriticalPolicy.warn, F),
        ([(F, True), (I, True)], NonCriticalPolicy.warn, F),  # a critical fail does not wait
        ([(P, True), (F, False)], NonCriticalPolicy.warn, P),  # warning only
        ([(P, True), (F, False)], NonCriticalPolicy.fail, F),
        ([(I, True), (F, False)], NonCriticalPolicy.warn, I),
        ([(P, True), (I, False)], NonCriticalPolicy.warn, P),  # a warn-only metric is not waited for
        ([(P, True), (I, False)], NonCriticalPolicy.fail, I),  # one that can fail the release is
        ([(I, True), (P, False)], NonCriticalPolicy.warn, I),
        ([], NonCriticalPolicy.warn, I),
    ],
)
def test_overall_criticality(metrics, policy, expected):
    verdicts = [metric(v, c, f"m{i}") for i, (v, c) in enumerate(metrics)]
    assert judge_overall(verdicts, noncritical=policy).verdict is expected


# ---------------------------------------------------------------- deadline


@pytest.mark.parametrize(
    ("start", "elapsed", "policy", "expected", "by"),
    [
        (I, 899, OnDeadline.rollback, I, "evidence"),
        (I, 900, OnDeadline.rollback, F, "deadline"),
        (I, 1200, OnDeadline.promote, P, "deadline"),
        (I, 1200, OnDeadline.wait, I, "deadline"),
        (P, 5000, OnDeadline.rollback, P, "evidence"),
        (F, 5000, OnDeadline.promote, F, "evidence"),
    ],
)
def test_deadline_turns_only_inconclusive_into_the_policy(start, elapsed, policy, expected, by):
    overall = OverallVerdict(start, "waiting", (metric(start),))
    decided = apply_deadline(overall, elapsed_seconds=elapsed, deadline_seconds=900,
                             on_deadline=policy)
    assert (decided.verdict, decided.decided_by) == (expected, by)
    if by == "deadline":
        assert "deadline reached" in decided.reason and policy.value in decided.reason


# ---------------------------------------------------------------- evidence


def test_every_verdict_carries_json_evidence():
    verdict = judge_errors(steady(0.005, 20, 200), steady(0.05, 20, 200))
    data = json.loads(json.dumps(verdict.to_dict(), allow_nan=False))
    assert data["verdict"] == "fail"
    assert data["effect"] == pytest.approx(10.0)
    low, high = data["interval"]
    assert 1 < low < 10 < high
    assert (data["baseline_n"], data["canary_n"]) == (4000, 4000)
    assert data["e_value"] >= 1 / ALPHA and data["alpha"] == ALPHA
    assert "error rate 5.00% vs 0.50% (ratio 10.00x, 95% CS [" in data["reason"]
    assert "regression" in data["reason"]
    unbounded = judge_errors([Bucket(100, 0)], [Bucket(100, 0)]).to_dict()
    assert unbounded["interval"] == [0.0, None]  # inf is null in JSON
    json.dumps(unbounded, allow_nan=False)


def test_latency_evidence_names_quantiles_and_shift():
    verdict = judge_latency(latency_looks(np.random.default_rng(5), 1.5, ticks=40))
    assert verdict.verdict is Verdict.failed
    assert verdict.details["quantile_ratio"] == pytest.approx(1.5, rel=0.15)
    assert "p95" in verdict.reason and "slower than" in verdict.reason
    json.dumps(verdict.to_dict(), allow_nan=False)


def test_buckets_from_cumulative_counters_handle_resets():
    snapshots = [(100, 1), (250, 4), (40, 2), (90, 2)]
    assert buckets_from_cumulative(snapshots) == [Bucket(150, 3), Bucket(40, 2), Bucket(50, 0)]
    assert buckets_from_cumulative(snapshots[:1]) == []


# ---------------------------------------------------------------- histograms (the live sensor)


def histogram_reads(rng: np.random.Generator, scale: float, ticks: int) -> list[HistogramLook]:
    """Cumulative router histograms (seconds) read after every tick, plus a first empty read."""
    bounds = np.array(ROUTER_BUCKETS)
    totals = {"baseline": np.zeros(len(bounds) + 1), "canary": np.zeros(len(bounds) + 1)}
    reads = [HistogramLook({**dict.fromkeys(ROUTER_BUCKETS, 0), math.inf: 0},
                           {**dict.fromkeys(ROUTER_BUCKETS, 0), math.inf: 0})]
    for _ in range(ticks):
        for side, factor in (("baseline", 1.0), ("canary", scale)):
            seconds = factor * rng.lognormal(math.log(0.1), 0.5, rng.integers(50, 201))
            below = [np.count_nonzero(seconds <= b) for b in bounds]
            totals[side] += np.append(below, seconds.size)
        reads.append(HistogramLook(
            *({**dict(zip(ROUTER_BUCKETS, totals[s][:-1])), math.inf: totals[s][-1]}
              for s in ("baseline", "canary"))))
    return reads


def test_histograms_catch_a_1_5x_regression_and_pass_a_healthy_canary():
    rng = np.random.default_rng(51)
    bad = judge_latency_histograms(histogram_reads(rng, 1.5, 60))
    assert bad.verdict is Verdict.failed, bad.reason
    assert bad.details["quantile_ratio"] == pytest.approx(1.5, rel=0.25)
    good = judge_latency_histograms(histogram_reads(rng, 1.0, 200))
    assert good.verdict is Verdict.passed, good.reason


def test_histogram_quantile_interpolates_like_promql():
    cumulative = {0.1: 50, 0.2: 100, math.inf: 100}
    assert histogram_quantile(cumulative, 0.5) == pytest.approx(100.0)
    assert histogram_quantile(cumulative, 0.75) == pytest.approx(150.0)


def test_histogram_boundaries_must_match():
    first = HistogramLook({0.1: 1, math.inf: 2}, {0.1: 1, math.inf: 2})
    odd = HistogramLook({0.1: 1, math.inf: 2}, {0.2: 1, math.inf: 2})
    with pytest.raises(ValueError, match="boundaries differ"):
        judge_latency_histograms([first, odd])


# ---------------------------------------------------------------- absolute margin


def test_error_free_canary_passes_on_the_absolute_margin():
    verdict = judge_errors([Bucket(100, 0)] * 200, [Bucket(100, 0)] * 200)
    assert verdict.verdict is Verdict.passed
    assert "no regression that matters" in verdict.reason


def test_rate_bounds_cover_and_tighten():
    low, high = rate_bounds(10_000, 50, 0.05)
    assert low < 0.005 < high
    assert high - low < rate_bounds(1_000, 5, 0.05)[1] - rate_bounds(1_000, 5, 0.05)[0]
    assert rate_bounds(0, 0, 0.05) == (0.0, 1.0)


def test_a_regression_beyond_the_margin_rarely_passes():
    """Canary at 2 % against 0.5 % (1.5 points worse, margin 1 point): PASS at any of 100 looks
    must stay within alpha, since both rate sequences are anytime-valid."""
    rng = np.random.default_rng(7)
    passed = 0
    runs = 200
    for _ in range(runs):
        base = rng.binomial(400, 0.005, size=100)
        can = rng.binomial(100, 0.02, size=100)
        for t in range(5, 101, 5):
            verdict = judge_errors([Bucket(400, int(k)) for k in base[:t]], [Bucket(100, int(k)) for k in can[:t]])
            if verdict.verdict is Verdict.passed:
                passed += 1
                break
    assert passed / runs <= 0.05
