"""Judge quality: false alarms under continuous looks, and samples needed to catch regressions.

Side by side on the same simulated streams: this project's anytime-valid judge, Kayenta's
Mann-Whitney rule re-run at every look (benchmarks/reference_judges.py), Flagger's fixed-limit
rule, and an oracle: the best fixed-sample test that knows the effect in advance (the limit for a
given alpha and power; a sequential test cannot know the effect, so it is a floor, not a rival).

Errors: each tick carries 50-200 requests per side, baseline error rate 0.5 %. Oracle: the
conditional binomial test (UMP for the rate ratio) at the fewest requests per side that reach
50 % / 80 % power; "SPRT, effect known" is the anytime-valid counterpart (the likelihood ratio
against the true ratio, stopped at 1/alpha): no anytime-valid test can be expected to beat it.
Kayenta judges per-interval error rates; Flagger's limit is 1 % errors. The last error rows are
healthy canaries whose errors (on both sides) arrive several at a time, as a stall or a failing
dependency makes them: the same mean rate, more variance between ticks than independent requests.

Latency: raw samples, 10 per side per look, up to `--looks` looks, log-normal (median 100 ms,
sigma 0.5), the canary multiplied by the factor. This judge runs on the raw samples and on the
same samples binned into the router's histogram buckets; Kayenta's rule is fed every raw sample
(not per-look p95s); Flagger checks each look's p99 against 500 ms (5 failed checks). Oracle: the
one-sided z-test on log latencies with sigma known. The anytime limit, two ways, on the judge's
own pairs, stopped at 1/alpha with no tolerance check: "best bet, effect known" is the fixed bet
prod (1 + lambda d) on the judge's pair scores with the lambda that grows fastest on this
scenario's scores (chosen knowing the effect: what the judge's mixture pays for not knowing it);
"LR, shift known" is the likelihood ratio of the log-normal shift (sigma known) on each pair's log
difference, the parametric limit that no test on ranks can beat.

    python -m benchmarks.judge_quality [--quick] [--only errors|latency] [--seed N]

`--seed N` (default 0: the benchmark's own streams) draws other streams of the same kind.
"""

from __future__ import annotations

import argparse
import math
import os
import platform
import time

import numpy as np
from scipy import stats

from benchmarks.reference_judges import flagger_fails, kayenta_fails
from release_pipelines.core.judge_errors import FAIL, ratio_test_path
from release_pipelines.core.judge_latency import (
    ROUTER_BUCKETS,
    TOLERANCE,
    histogram_pair_scores,
    histogram_quantile,
    log_e_values,
    pair_scores,
)

BASE_ERROR_RATE = 0.005
FLAGGER_MAX_ERROR_RATE = 0.01
FLAGGER_MAX_P99_MS = 500.0
SIGMA = 0.5
PER_LOOK = 10
EDGES_MS = np.array([*ROUTER_BUCKETS, math.inf]) * 1000


def summary(first: np.ndarray) -> tuple[float, float, float]:
    """Share failed, median and 80th percentile of samples at the first FAIL (inf: not reached)."""
    ordered = np.sort(first)
    return (float(np.isfinite(first).mean()), float(ordered[(first.size - 1) // 2]),
            float(ordered[math.ceil(0.8 * first.size) - 1]))


def first_fail(fails: np.ndarray, samples: np.ndarray) -> np.ndarray:
    """Canary samples at the first failing look, per canary (inf if never); arrays (canaries, looks)."""
    hit = fails.any(axis=-1)
    at = np.argmax(fails, axis=-1)
    return np.where(hit, np.take_along_axis(samples, at[:, None], axis=-1)[:, 0], np.inf)


# ------------------------------------------------------------------ errors


def error_oracle(factor: float, alpha: float, power: float) -> float:
    """Fewest requests per side for the conditional binomial test to reach `power` (Poisson errors)."""
    share = factor / (1 + factor)
    for n in np.unique(np.geomspace(50, 2_000_000, 600).astype(int)):
        mean = n * BASE_ERROR_RATE * (1 + factor)
        totals = np.arange(int(mean + 10 * math.sqrt(mean) + 20))
        critical = stats.binom.isf(alpha, totals, 0.5) + 1  # reject when canary errors >= this
        reached = stats.poisson.pmf(totals, mean) @ stats.binom.sf(critical - 1, totals, share)
        if reached >= power:
            return float(n)
    return math.inf


def known_effect_sprt_fails(base_n, base_k, can_n, can_k, factor: float, alpha: float) -> np.ndarray:
    """The likelihood-ratio test of R = 1 against the true R (known), stopped at 1/alpha: the
    fewest samples any anytime-valid test needs (growth-optimal for that R), where the oracle is
    the fixed-sample limit. Same conditional binomial model as the judge."""
    odds = can_n / base_n
    step = can_k * math.log(factor) - (base_k + can_k) * np.log((1 + odds * factor) / (1 + odds))
    return np.cumsum(step, axis=-1) >= math.log(1 / alpha)


def clustered_errors(rng: np.random.Generator, n: np.ndarray, rate: float, cluster: int) -> np.ndarray:
    """Errors that arrive `cluster` at a time (a stall or a failing dependency fails several
    requests at once): the same mean rate as independent errors, more variance between ticks."""
    if cluster == 1:
        return rng.binomial(n, rate)
    return np.minimum(rng.poisson(n * rate / cluster) * cluster, n)


def error_scenario(rng: np.random.Generator, factor: float, canaries: int, ticks: int, alpha: float,
                   cluster: int = 1) -> dict:
    base_n = rng.integers(50, 201, (canaries, ticks))
    can_n = rng.integers(50, 201, (canaries, ticks))
    base_k = clustered_errors(rng, base_n, BASE_ERROR_RATE, cluster)
    can_k = clustered_errors(rng, can_n, BASE_ERROR_RATE * factor, cluster)
    samples = np.cumsum(can_n, axis=-1)
    return {
        "this judge": first_fail(ratio_test_path(base_n, base_k, can_n, can_k, alpha=alpha).verdict == FAIL, samples),
        "Kayenta MW": first_fail(kayenta_fails(base_k / base_n, can_k / can_n), samples),
        "Flagger": first_fail(flagger_fails(can_k / can_n > FLAGGER_MAX_ERROR_RATE), samples),
    } | ({"SPRT, effect known": first_fail(known_effect_sprt_fails(base_n, base_k, can_n, can_k, factor, alpha),
                                            samples)} if factor > 1 else {})


# ------------------------------------------------------------------ latency


def latency_oracle(factor: float, alpha: float, power: float) -> float:
    """Samples per side for the one-sided z-test on log latencies (sigma known) to reach `power`."""
    if factor <= 1:
        return math.inf
    return 2 * SIGMA**2 * (stats.norm.isf(alpha) + stats.norm.ppf(power)) ** 2 / math.log(factor) ** 2


def shifts(p50: np.ndarray, p95: np.ndarray) -> np.ndarray:
    """The judge's observed shift: the larger of the p50 and p95 ratios (increase)."""
    return np.maximum(p50, p95)


def raw_canary(base: np.ndarray, can: np.ndarray, looks: int, alpha: float, tolerances) -> tuple[dict, np.ndarray]:
    """FAIL per look for each tolerance, and the pair scores (for the anytime-limit rows)."""
    ends = np.arange(1, looks + 1) * PER_LOOK
    scores, score_ends = pair_scores(np.split(base, looks), np.split(can, looks))
    log_e = np.maximum.accumulate(log_e_values(scores, score_ends))
    ratio = shifts(*(np.array([np.quantile(can[:e], q) / np.quantile(base[:e], q) for e in ends])
                     for q in (0.5, 0.95)))
    return {tol: (log_e >= math.log(1 / alpha)) & (ratio > tol) for tol in tolerances}, scores


def anytime_limits(scores: np.ndarray, base: np.ndarray, can: np.ndarray, factor: float, looks: int,
                   alpha: float) -> dict:
    """FAIL per look (canaries, looks) of the two anytime limits, arrays (canaries, pairs).

    The bet's lambda maximises the mean log growth over all canaries' scores of the scenario
    (the population optimum, to the grid's 0.01). The likelihood ratio of a log-normal shift
    delta with sigma known, per pair z = log canary - log baseline ~ N(delta, 2 sigma^2), grows by
    delta z / (2 sigma^2) - delta^2 / (4 sigma^2).
    """
    at = np.arange(1, looks + 1) * PER_LOOK - 1
    grid = np.linspace(0.01, 0.99, 99)
    best = grid[np.argmax([np.log1p(lam * scores).mean() for lam in grid])]
    bet = np.cumsum(np.log1p(best * scores), axis=1)[:, at]
    delta = math.log(factor)
    z = np.log(can) - np.log(base)
    ratio = np.cumsum(delta * z / (2 * SIGMA**2) - delta**2 / (4 * SIGMA**2), axis=1)[:, at]
    threshold = math.log(1 / alpha)
    return {f"anytime limit: best bet (lambda {best:.2f})": bet >= threshold,
            "anytime limit: LR, shift known": ratio >= threshold}


def histogram_canary(base: np.ndarray, can: np.ndarray, looks: int, alpha: float, tolerances) -> dict:
    counts = [np.array([np.bincount(np.searchsorted(EDGES_MS, look), minlength=EDGES_MS.size)
                        for look in np.split(side, looks)]) for side in (base, can)]
    log_e = np.maximum.accumulate(log_e_values(*histogram_pair_scores(*counts)))
    running = [np.cumsum(c, axis=0) for c in counts]

    def quantile(side: np.ndarray, look: int, q: float) -> float:
        cumulative = np.cumsum(side[look])
        return histogram_quantile({**dict(zip(ROUTER_BUCKETS, cumulative[:-1])), math.inf: cumulative[-1]},
                                  q, log_scale=True)

    ratio = shifts(*(np.array([quantile(running[1], t, q) / quantile(running[0], t, q) for t in range(looks)])
                     for q in (0.5, 0.95)))
    return {tol: (log_e >= math.log(1 / alpha)) & (ratio > tol) for tol in tolerances}


def kayenta_first_fail(base: np.ndarray, can: np.ndarray, looks: int) -> float:
    """Kayenta's rule on every raw sample so far, at each look until it first fails."""
    for look in range(1, looks + 1):
        end = look * PER_LOOK
        if kayenta_fails(base[None, :end], can[None, :end], ends=np.array([end]))[0, 0]:
            return float(end)
    return math.inf


def latency_scenario(rng: np.random.Generator, factor: float, canaries: int, looks: int, alpha: float,
                     tolerances: tuple[float, ...]) -> dict:
    total = looks * PER_LOOK
    samples = np.tile(np.arange(1, looks + 1) * PER_LOOK, (canaries, 1))
    raw = {tol: [] for tol in tolerances}
    binned = {tol: [] for tol in tolerances}
    kayenta, flagger, scores, streams = [], [], [], []
    for _ in range(canaries):
        base = rng.lognormal(math.log(100), SIGMA, total)
        can = factor * rng.lognormal(math.log(100), SIGMA, total)
        fails, pair = raw_canary(base, can, looks, alpha, tolerances)
        for tol, fail in fails.items():
            raw[tol].append(fail)
        for tol, fail in histogram_canary(base, can, looks, alpha, tolerances).items():
            binned[tol].append(fail)
        scores.append(pair)
        streams.append((base, can))
        kayenta.append(kayenta_first_fail(base, can, looks))
        flagger.append(np.quantile(can.reshape(looks, PER_LOOK), 0.99, axis=1) > FLAGGER_MAX_P99_MS)
    out = {f"this judge, samples, tol {tol:g}": first_fail(np.array(raw[tol]), samples) for tol in tolerances}
    out |= {f"this judge, histograms, tol {tol:g}": first_fail(np.array(binned[tol]), samples) for tol in tolerances}
    out["Kayenta MW, samples"] = np.array(kayenta)
    out["Flagger p99"] = first_fail(flagger_fails(np.array(flagger)), samples)
    if factor > 1:
        base, can = (np.array(side) for side in zip(*streams))
        out |= {name: first_fail(fails, samples)
                for name, fails in anytime_limits(np.array(scores), base, can, factor, looks, alpha).items()}
    return out


# ------------------------------------------------------------------ report


def fmt(value: float) -> str:
    return f"{value:,.0f}" if math.isfinite(value) else "-"


def print_rows(title: str, results: dict, oracle: tuple[float, float] | None) -> None:
    print(f"\n{title}")
    for judge, first in results.items():
        failed, p50, p80 = summary(first)
        print(f"  {judge:<40} failed {failed:6.1%}   median {fmt(p50):>7}   80th pct {fmt(p80):>7}")
    if oracle:
        print(f"  {'oracle (fixed n, effect known)':<40} n for 50 % power {fmt(oracle[0]):>7}   "
              f"80 % power {fmt(oracle[1]):>7}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer canaries and looks")
    parser.add_argument("--only", choices=("errors", "latency"), help="run one kind of rows")
    parser.add_argument("--seed", type=int, default=0, help="other streams of the same kind (0: the benchmark's own)")
    args = parser.parse_args()
    offset = [args.seed] if args.seed else []
    canaries, ticks, looks = (60, 150, 60) if args.quick else (200, 300, 100)
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, "
          f"Python {platform.python_version()}, load average {os.getloadavg()[0]:.1f}")
    print(f"{canaries} canaries per row; errors: {ticks} ticks of 50-200 requests per side; latency: "
          f"{looks} looks of {PER_LOOK} samples per side. Columns: share of canaries failed, median and "
          "80th percentile of canary samples (requests) at the first FAIL ('-': not reached)")
    started = time.perf_counter()
    for alpha in (0.01, 0.05) if args.only != "latency" else ():
        for factor in (1.0, 1.5, 2.0, 5.0):
            rng = np.random.default_rng([1, int(factor * 100), int(alpha * 1000), *offset])
            oracle = (error_oracle(factor, alpha, 0.5), error_oracle(factor, alpha, 0.8)) if factor > 1 else None
            print_rows(f"errors x{factor:g} at {BASE_ERROR_RATE:.1%}, alpha {alpha}",
                       error_scenario(rng, factor, canaries, ticks, alpha), oracle)
    for cluster in (3, 10) if args.only != "latency" else ():  # a healthy canary: false alarms only
        rng = np.random.default_rng([3, cluster, *offset])
        print_rows(f"errors x1 at {BASE_ERROR_RATE:.1%} arriving {cluster} at a time (both sides), alpha 0.05",
                   error_scenario(rng, 1.0, canaries, ticks, 0.05, cluster), None)
    for alpha, factors in ((0.01, (1.0, 1.1, 1.5, 2.0)), (0.05, (1.0,))) if args.only != "errors" else ():
        for factor in factors:
            rng = np.random.default_rng([2, int(factor * 100), int(alpha * 1000), *offset])
            tolerances = (1.05, TOLERANCE) if factor == 1.1 else (TOLERANCE,)
            oracle = (latency_oracle(factor, alpha, 0.5), latency_oracle(factor, alpha, 0.8)) if factor > 1 else None
            print_rows(f"latency x{factor:g}, alpha {alpha}",
                       latency_scenario(rng, factor, canaries, looks, alpha, tolerances), oracle)
    print(f"\n({time.perf_counter() - started:.0f} s)")


if __name__ == "__main__":
    main()
