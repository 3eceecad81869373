"""Judge quality: false alarms under continuous looks, and samples needed to catch regressions.

Compares this project's anytime-valid judge with Kayenta's Mann-Whitney rule re-run on the
cumulative window at every look and with Flagger's fixed-threshold rule (benchmarks/
reference_judges.py). Each simulated canary is judged after every tick; a tick carries 50-200
requests per side. Errors: baseline rate 0.5 %. Latency: log-normal, median 100 ms, p95 ~228 ms,
p99 ~320 ms; a regression multiplies every canary latency (so every quantile) by the factor.

Flagger limits are its documentation's examples: request success rate >= 99 % (max error rate
1 %) and request duration p99 <= 500 ms, threshold 5 failed checks. Kayenta judges the
per-interval error rate, or the per-interval p95 latency.

    python -m benchmarks.judge_quality [--quick]
"""

from __future__ import annotations

import argparse
import os
import platform
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from benchmarks.reference_judges import flagger_fails, kayenta_fails
from release_pipelines.core.judge_errors import FAIL, ratio_test_path
from release_pipelines.core.judge_latency import LatencyLook, tail_counts

BASE_ERROR_RATE = 0.005
FLAGGER_MAX_ERROR_RATE = 0.01
FLAGGER_MAX_P99_MS = 500.0
ALPHA = 0.05
JUDGES = ("this judge", "Kayenta MW", "Flagger")


@dataclass(frozen=True)
class Outcome:
    """Per judge: share of canaries failed within the horizon, canary samples at first FAIL."""

    failed: dict[str, float]
    samples: dict[str, float]


def first_fail_samples(fails: np.ndarray, canary_n: np.ndarray) -> tuple[float, float]:
    """Share failed, and median canary samples at the first failing look (inf if <half failed)."""
    failed = fails.any(axis=-1)
    at = np.where(failed, np.argmax(fails, axis=-1), -1)
    samples = np.where(failed, np.cumsum(canary_n, axis=-1)[np.arange(len(at)), at], np.inf)
    return float(failed.mean()), float(np.median(samples))


def outcome(fails: dict[str, np.ndarray], canary_n: np.ndarray) -> Outcome:
    pairs = {name: first_fail_samples(f, canary_n) for name, f in fails.items()}
    return Outcome({k: v[0] for k, v in pairs.items()}, {k: v[1] for k, v in pairs.items()})


def error_scenario(rng: np.random.Generator, factor: float, canaries: int, ticks: int) -> Outcome:
    base_n = rng.integers(50, 201, (canaries, ticks))
    can_n = rng.integers(50, 201, (canaries, ticks))
    base_k = rng.binomial(base_n, BASE_ERROR_RATE)
    can_k = rng.binomial(can_n, BASE_ERROR_RATE * factor)
    ours = ratio_test_path(base_n, base_k, can_n, can_k, alpha=ALPHA).verdict == FAIL
    kayenta = kayenta_fails(base_k / base_n, can_k / can_n)
    flagger = flagger_fails(can_k / can_n > FLAGGER_MAX_ERROR_RATE)
    return outcome(dict(zip(JUDGES, (ours, kayenta, flagger))), can_n)


def latency_scenario(rng: np.random.Generator, factor: float, canaries: int, ticks: int) -> Outcome:
    rows = []
    for _ in range(canaries):
        base_n, can_n = rng.integers(50, 201, ticks), rng.integers(50, 201, ticks)
        base = np.split(rng.lognormal(np.log(100), 0.5, base_n.sum()), np.cumsum(base_n)[:-1])
        can = np.split(factor * rng.lognormal(np.log(100), 0.5, can_n.sum()),
                       np.cumsum(can_n)[:-1])
        counts = tail_counts([LatencyLook(b, c) for b, c in zip(base, can)])
        rows.append((counts.baseline_n, counts.baseline_k, counts.canary_n, counts.canary_k,
                     [np.quantile(b, 0.95) for b in base], [np.quantile(c, 0.95) for c in can],
                     [np.quantile(c, 0.99) for c in can], can_n))
    bn, bk, cn, ck, base_p95, can_p95, can_p99, can_n = (np.array(col) for col in zip(*rows))
    ours = ratio_test_path(bn, bk, cn, ck, alpha=ALPHA, tolerance=1.5).verdict == FAIL
    kayenta = kayenta_fails(base_p95, can_p95)
    flagger = flagger_fails(can_p99 > FLAGGER_MAX_P99_MS)
    return outcome(dict(zip(JUDGES, (ours, kayenta, flagger))), can_n)


Scenario = tuple[str, Callable[..., Outcome], float]
SCENARIOS: tuple[Scenario, ...] = (
    ("errors A/A", error_scenario, 1.0),
    ("errors 1.5x", error_scenario, 1.5),
    ("errors 2x", error_scenario, 2.0),
    ("errors 5x", error_scenario, 5.0),
    ("latency A/A", latency_scenario, 1.0),
    ("latency 1.2x", latency_scenario, 1.2),
    ("latency 1.5x", latency_scenario, 1.5),
    ("latency 2x", latency_scenario, 2.0),
)


def fmt_samples(value: float) -> str:
    return "not caught" if np.isinf(value) else f"{value:,.0f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer canaries, seeds and ticks")
    args = parser.parse_args()
    seeds, canaries, ticks = (2, 40, 120) if args.quick else (3, 100, 200)
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, "
          f"Python {platform.python_version()}")
    print(f"{seeds} seeds x {canaries} canaries, judged after each of {ticks} ticks "
          f"(50-200 requests per side per tick), alpha {ALPHA}; medians over seeds\n")
    header = f"{'scenario':<14}" + "".join(f"| {j:^29} " for j in JUDGES)
    print(header)
    print(f"{'':<14}" + f"| {'failed':>6} {'canary samples to FAIL':>22} " * len(JUDGES))
    print("-" * len(header))
    started = time.perf_counter()
    for name, scenario, factor in SCENARIOS:
        runs = [scenario(np.random.default_rng([seed, int(factor * 100)]), factor, canaries, ticks)
                for seed in range(seeds)]
        cells = []
        for judge in JUDGES:
            failed = float(np.median([r.failed[judge] for r in runs]))
            samples = float(np.median([r.samples[judge] for r in runs]))
            cells.append(f"| {failed:>6.1%} {fmt_samples(samples):>22} ")
        print(f"{name:<14}" + "".join(cells), flush=True)
    print(f"\nfailed: share of canaries failed within {ticks} ticks (A/A rows: false alarms; "
          f"others: detections). canary samples to FAIL: median canary requests before the first "
          f"FAIL, 'not caught' when fewer than half failed. "
          f"({time.perf_counter() - started:.0f} s)")


if __name__ == "__main__":
    main()
