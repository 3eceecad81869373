"""The latency judge (sequential rank test by betting) on seeded simulations.

Raw samples: looks of 10 log-normal samples per side (median 100 ms, sigma 0.5). Histograms: the
router's buckets, reads of 40-80 requests per side. The A/A runs are 300 canaries x 50 looks. A/A checks use the e-value path at
every look (`pair_scores` / `histogram_pair_scores` + `log_e_values`, what the judges run), so
"false FAIL at any look" is measured, not only at the end.
"""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from release_pipelines.core.judge import Verdict
from release_pipelines.core.judge_latency import (
    ROUTER_BUCKETS,
    HistogramLook,
    LatencyLook,
    histogram_pair_scores,
    judge_latency,
    judge_latency_histograms,
    log_e_values,
    pair_scores,
)
from release_pipelines.core.manifest import Direction

CANARIES = 300


def sample_looks(rng: np.random.Generator, scale: float, looks: int = 100, per_look: int = 10):
    base = [rng.lognormal(math.log(100), 0.5, per_look) for _ in range(looks)]
    can = [scale * rng.lognormal(math.log(100), 0.5, per_look) for _ in range(looks)]
    return base, can


def bucket_counts(rng: np.random.Generator, scale: float, looks: int = 60, bounds=ROUTER_BUCKETS):
    """Per-look counts per bucket (the last is +Inf), shaped (looks, buckets), for both sides."""
    edges = np.array([*bounds, np.inf])

    def side(factor: float) -> np.ndarray:
        return np.array([np.bincount(np.searchsorted(edges, factor * rng.lognormal(math.log(0.1), 0.5,
                                                                                   rng.integers(40, 81))),
                                     minlength=edges.size) for _ in range(looks)])

    return side(1.0), side(scale)


def cumulative_reads(base: np.ndarray, can: np.ndarray, bounds=ROUTER_BUCKETS) -> list[HistogramLook]:
    """Counts per look -> cumulative histogram reads (le -> count), starting with an empty read."""
    def read(counts: np.ndarray) -> dict[float, float]:
        running = np.cumsum(counts)
        return {**dict(zip(bounds, running[:-1].tolist())), math.inf: float(running[-1])}

    zero = np.zeros(len(bounds) + 1)
    totals = [np.cumsum(np.vstack([zero, side]), axis=0) for side in (base, can)]
    return [HistogramLook(read(b), read(c)) for b, c in zip(*totals)]


def fail_paths_from_samples(seed: int, scale: float, canaries: int = CANARIES, looks: int = 50) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return np.array([log_e_values(*pair_scores(*sample_looks(rng, scale, looks))) for _ in range(canaries)])


def fail_paths_from_histograms(seed: int, scale: float, canaries: int = CANARIES, looks: int = 30) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return np.array([log_e_values(*histogram_pair_scores(*bucket_counts(rng, scale, looks)))
                     for _ in range(canaries)])


@pytest.fixture(scope="module")
def aa_samples() -> np.ndarray:
    return fail_paths_from_samples(seed=101, scale=1.0)


@pytest.fixture(scope="module")
def aa_histograms() -> np.ndarray:
    return fail_paths_from_histograms(seed=102, scale=1.0)


@pytest.mark.parametrize("alpha", [0.01, 0.05])
def test_aa_false_fail_rate_from_samples_stays_below_alpha_at_every_look(aa_samples, alpha):
    ever = (aa_samples >= math.log(1 / alpha)).any(axis=1)
    assert ever.mean() <= alpha


@pytest.mark.parametrize("alpha", [0.01, 0.05])
def test_aa_false_fail_rate_from_histograms_stays_below_alpha_at_every_look(aa_histograms, alpha):
    ever = (aa_histograms >= math.log(1 / alpha)).any(axis=1)
    assert ever.mean() <= alpha


def test_the_path_is_what_the_public_judge_returns():
    rng = np.random.default_rng(7)
    base, can = sample_looks(rng, 1.3, looks=12)
    path = log_e_values(*pair_scores(base, can))
    for look in (0, 5, 11):
        verdict = judge_latency([LatencyLook(b, c) for b, c in zip(base[:look + 1], can[:look + 1])])
        assert math.log(verdict.e_value) == pytest.approx(np.maximum.accumulate(path)[look])


def test_a_1_5x_shift_is_failed_from_samples_and_from_histograms():
    samples = fail_paths_from_samples(seed=103, scale=1.5, canaries=50)
    assert (samples[:, -1] >= math.log(20)).all()
    rng = np.random.default_rng(104)
    for _ in range(20):
        verdict = judge_latency_histograms(cumulative_reads(*bucket_counts(rng, 1.5)))
        assert verdict.verdict is Verdict.failed, verdict.reason


def test_a_shift_below_the_tolerance_is_never_failed():
    """1.05x slower with tolerance 1.1: the rank test sees a change after enough samples, but a
    change that small is not a regression (neither from samples nor from histograms)."""
    rng = np.random.default_rng(105)
    for _ in range(10):
        base, can = sample_looks(rng, 1.05, looks=100, per_look=40)
        verdict = judge_latency([LatencyLook(b, c) for b, c in zip(base, can)], tolerance=1.1)
        assert verdict.verdict is not Verdict.failed, verdict.reason
        histogram = judge_latency_histograms(cumulative_reads(*bucket_counts(rng, 1.05, looks=100)), tolerance=1.1)
        assert histogram.verdict is not Verdict.failed, histogram.reason


def test_healthy_canaries_pass():
    rng = np.random.default_rng(106)
    base, can = sample_looks(rng, 1.0, looks=100, per_look=50)
    assert judge_latency([LatencyLook(b, c) for b, c in zip(base, can)]).verdict is Verdict.passed
    assert judge_latency_histograms(cumulative_reads(*bucket_counts(rng, 1.0))).verdict is Verdict.passed


@pytest.mark.parametrize(
    ("direction", "scale", "expected"),
    [
        (Direction.increase, 0.6, Verdict.passed),   # faster is fine when only slower is a regression
        (Direction.decrease, 0.6, Verdict.failed),   # ... and a regression when faster is suspicious
        (Direction.decrease, 1.5, Verdict.passed),
        (Direction.either, 0.6, Verdict.failed),
        (Direction.either, 1.5, Verdict.failed),
        (Direction.either, 1.0, Verdict.passed),
    ],
)
def test_directions(direction, scale, expected):
    rng = np.random.default_rng(107)
    base, can = sample_looks(rng, scale, looks=60, per_look=40)
    verdict = judge_latency([LatencyLook(b, c) for b, c in zip(base, can)], direction=direction)
    assert verdict.verdict is expected, verdict.reason
    histogram = judge_latency_histograms(cumulative_reads(*bucket_counts(rng, scale)), direction=direction)
    assert histogram.verdict is expected, histogram.reason


def test_coarse_buckets_still_fail_a_2x_shift_and_keep_aa_within_alpha():
    """Two finite buckets (100 ms, 250 ms): most of the distribution shares a bucket."""
    coarse = (0.1, 0.25)
    rng = np.random.default_rng(108)
    bad = judge_latency_histograms(cumulative_reads(*bucket_counts(rng, 2.0, bounds=coarse), bounds=coarse))
    assert bad.verdict is Verdict.failed, bad.reason
    aa = [log_e_values(*histogram_pair_scores(*bucket_counts(rng, 1.0, looks=30, bounds=coarse)))
          for _ in range(CANARIES)]
    assert (np.array(aa) >= math.log(20)).any(axis=1).mean() <= 0.05


def test_empty_buckets_and_looks_without_canary_traffic():
    rng = np.random.default_rng(109)
    base, can = bucket_counts(rng, 2.0, looks=40)
    can[::2] = 0  # every other read: no canary request at all
    reads = cumulative_reads(base, can)
    verdict = judge_latency_histograms(reads)
    assert verdict.verdict is Verdict.failed, verdict.reason
    assert verdict.canary_n == int(can.sum())
    idle = judge_latency_histograms(cumulative_reads(base, np.zeros_like(can)))
    assert idle.verdict is Verdict.inconclusive and "0 canary" in idle.reason


def test_verdict_text_names_effect_and_evidence():
    rng = np.random.default_rng(110)
    base, can = sample_looks(rng, 1.5, looks=10)
    verdict = judge_latency([LatencyLook(b, c) for b, c in zip(base, can)], alpha=0.01)
    data = json.loads(json.dumps(verdict.to_dict(), allow_nan=False))
    assert data["verdict"] == "fail"
    assert data["effect"] == pytest.approx(1.5, rel=0.25)
    assert data["e_value"] >= 100 and data["canary_n"] == data["baseline_n"] == 100
    for words in ("p50 ", "p95 ", "x)", "slower than baseline in", "after 100 canary / 100 baseline samples",
                  "regression beyond 1.1x", "e-value", "1/alpha = 100"):
        assert words in data["reason"]


def test_the_e_value_is_the_fixed_mixture_of_two_bets():
    """Half on lambda 0.3 (growth-optimal near x1.1 at sigma 0.5), half on 0.95; weights fixed in advance."""
    scores = np.random.default_rng(111).uniform(-0.5, 0.7, 40)
    wealth = [np.prod(1 + lam * scores[:25]) for lam in (0.3, 0.95)]
    assert log_e_values(scores, np.array([0, 25, 40]))[:2] == pytest.approx([0.0, math.log(np.mean(wealth))])
