"""Latency as a distribution: is the canary's tail heavier than the baseline's p95?

Method: at each look, a request is "slow" when it exceeds a threshold tau, the baseline's p95
estimated from looks *before* this one (predictable, so it cannot be tuned to the data it
judges). Slow requests are then counts, tested exactly like errors by `judge_errors`' mixture
likelihood-ratio test (Lindon et al., KDD 2022): under A/A both sides share one distribution, so
the tail ratio P(canary > tau) / P(baseline > tau) is 1 for every tau and the e-value keeps its
anytime-valid guarantee. A 1.5x slower p95 typically quadruples the share of requests beyond the
baseline p95, so the tail ratio detects quantile shifts quickly; the report also gives both p95s.

tau follows the baseline until `freeze_after` baseline samples, then stays, so that the
confidence sequence estimates one fixed quantity. Looks before the baseline has `min_samples`
are warm-up and not tested.

Inputs, one entry per look, oldest first: `LatencyLook` with the samples (ms) that arrived
since the previous look, or `HistogramLook` with Prometheus cumulative histogram counters
(le in seconds -> count, +Inf = total) read at that look; the first histogram look is only the
starting point. With histograms tau is a bucket boundary: the highest one at or below the p95.

Direction `decrease` fails a canary with significantly *fewer* slow requests (a tail ratio
below 1), for metrics where faster is suspicious; `either` fails both.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from itertools import pairwise
from typing import Any

import numpy as np

from release_pipelines.core.judge import MetricVerdict, Verdict
from release_pipelines.core.judge_errors import (
    CODES,
    format_interval,
    outcome_phrase,
    ratio_test_path,
)
from release_pipelines.core.manifest import Direction, MetricKind

MIN_SAMPLES = 20
"""Baseline samples needed before the first threshold is set (earlier looks are warm-up)."""
ROUTER_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.5, 0.75, 1, 2.5, 5, 10)
"""Histogram boundaries (seconds) the project's router exposes."""


@dataclass(frozen=True)
class LatencyLook:
    """Latency samples in ms that arrived on each side since the previous look."""

    baseline: Sequence[float]
    canary: Sequence[float]


@dataclass(frozen=True)
class HistogramLook:
    """Cumulative histogram counters (le seconds -> count, math.inf = total) read at one look."""

    baseline: Mapping[float, float]
    canary: Mapping[float, float]


@dataclass(frozen=True)
class TailCounts:
    """Per-look trials and slow requests on each side, and the threshold used (nan = warm-up)."""

    baseline_n: np.ndarray
    baseline_k: np.ndarray
    canary_n: np.ndarray
    canary_k: np.ndarray
    threshold_ms: np.ndarray


def tail_counts(
    looks: Sequence[LatencyLook], *, quantile: float = 0.95, min_samples: int = MIN_SAMPLES,
    freeze_after: int = 1000,
) -> TailCounts:
    """Count, per look, the samples above the baseline quantile of the previous looks."""
    rows, history, tau = [], np.empty(0), math.nan
    for look in looks:
        base, can = np.asarray(look.baseline, float), np.asarray(look.canary, float)
        if history.size >= min_samples:
            rows.append((base.size, np.count_nonzero(base > tau),
                         can.size, np.count_nonzero(can > tau), tau))
        else:
            rows.append((0, 0, 0, 0, math.nan))
        if history.size < freeze_after:
            history = np.concatenate([history, base])
            if history.size >= min_samples:
                tau = float(np.quantile(history, quantile))
    return _as_counts(rows)


def _as_counts(rows: list[tuple[float, ...]]) -> TailCounts:
    cols = np.array(rows, dtype=float).reshape(-1, 5).T
    return TailCounts(*cols)


def _delta(now: Mapping[float, float], before: Mapping[float, float]) -> dict[float, float]:
    """Counts added between two reads; a total that went down means the process restarted."""
    if now.get(math.inf, 0) < before.get(math.inf, 0):
        return dict(now)
    return {le: count - before.get(le, 0) for le, count in now.items()}


def _boundary_below(cumulative: Mapping[float, float], quantile: float) -> float:
    """Highest finite boundary whose cumulative share is at most `quantile` (else the lowest)."""
    total = cumulative[math.inf]
    bounds = sorted(le for le in cumulative if math.isfinite(le))
    below = [le for le in bounds if cumulative[le] <= quantile * total]
    return below[-1] if below else bounds[0]


def histogram_tail_counts(
    looks: Sequence[HistogramLook], *, quantile: float = 0.95, min_samples: int = MIN_SAMPLES,
    freeze_after: int = 1000,
) -> TailCounts:
    """Like `tail_counts`, from cumulative histogram reads (one row per read after the first)."""
    for i, look in enumerate(looks):
        for side, hist in (("baseline", look.baseline), ("canary", look.canary)):
            if math.inf not in hist:
                raise ValueError(f"look {i}: {side} histogram has no +Inf bucket (the total)")
            if set(hist) != set(looks[0].baseline):
                raise ValueError(f"look {i}: {side} histogram boundaries differ from the first "
                                 "baseline read; both sides need the same buckets")
    rows, tau = [], math.nan
    for before, now in pairwise(looks):
        seen = before.baseline[math.inf]
        if seen >= min_samples and (math.isnan(tau) or seen < freeze_after):
            tau = _boundary_below(before.baseline, quantile)
        base, can = _delta(now.baseline, before.baseline), _delta(now.canary, before.canary)
        if math.isnan(tau):
            rows.append((0, 0, 0, 0, math.nan))
            continue
        rows.append((base[math.inf], base[math.inf] - base[tau],
                     can[math.inf], can[math.inf] - can[tau], tau * 1000))
    return _as_counts(rows)


def histogram_quantile(cumulative: Mapping[float, float], quantile: float) -> float:
    """Quantile in ms by linear interpolation inside the bucket, as PromQL's histogram_quantile."""
    total = cumulative.get(math.inf, 0)
    if total <= 0:
        return math.nan
    prev_le, prev_count = 0.0, 0.0
    for le in sorted(cumulative):
        count = cumulative[le]
        if count >= quantile * total:
            if math.isinf(le):
                return prev_le * 1000
            share = (quantile * total - prev_count) / max(count - prev_count, 1e-12)
            return (prev_le + (le - prev_le) * share) * 1000
        prev_le, prev_count = le, count
    return prev_le * 1000


def judge_latency(
    looks: Sequence[LatencyLook], *, name: str = "latency",
    direction: Direction = Direction.increase, critical: bool = True, alpha: float = 0.05,
    tolerance: float = 1.5, quantile: float = 0.95,
) -> MetricVerdict:
    """Judge latency samples (ms) per look. PASS: tail ratio bounded below `tolerance`."""
    counts = tail_counts(looks, quantile=quantile)
    tested = ~np.isnan(counts.threshold_ms)
    base = np.concatenate([np.asarray(look.baseline, float) for look, t in zip(looks, tested) if t]
                          or [np.empty(0)])
    can = np.concatenate([np.asarray(look.canary, float) for look, t in zip(looks, tested) if t]
                         or [np.empty(0)])
    quantiles = (float(np.quantile(base, quantile)) if base.size else math.nan,
                 float(np.quantile(can, quantile)) if can.size else math.nan)
    seen = sum(len(look.baseline) for look in looks)
    return _verdict(counts, quantiles, warmup_seen=seen, name=name, direction=direction,
                    critical=critical, alpha=alpha, tolerance=tolerance, quantile=quantile)


def judge_latency_histograms(
    looks: Sequence[HistogramLook], *, name: str = "latency",
    direction: Direction = Direction.increase, critical: bool = True, alpha: float = 0.05,
    tolerance: float = 1.5, quantile: float = 0.95,
) -> MetricVerdict:
    """Judge latency from histogram reads, one per look (the live sensor's only view)."""
    counts = histogram_tail_counts(looks, quantile=quantile)
    quantiles = (math.nan, math.nan)
    seen = looks[-1].baseline.get(math.inf, 0) if looks else 0
    if len(looks) >= 2:
        quantiles = tuple(
            histogram_quantile(_delta(getattr(looks[-1], side), getattr(looks[0], side)), quantile)
            for side in ("baseline", "canary")
        )
    return _verdict(counts, quantiles, warmup_seen=seen, name=name, direction=direction,
                    critical=critical, alpha=alpha, tolerance=tolerance, quantile=quantile)


def _verdict(
    counts: TailCounts, quantiles: tuple[float, float], *, warmup_seen: float, name: str,
    direction: Direction, critical: bool, alpha: float, tolerance: float, quantile: float,
) -> MetricVerdict:
    base_n, can_n = int(counts.baseline_n.sum()), int(counts.canary_n.sum())
    base_k, can_k = int(counts.baseline_k.sum()), int(counts.canary_k.sum())
    pct = f"p{quantile * 100:g}"
    common: dict[str, Any] = {
        "name": name, "kind": MetricKind.latency, "direction": direction, "critical": critical,
        "alpha": alpha, "baseline_n": base_n, "canary_n": can_n,
        "effect_name": f"ratio of shares slower than the baseline {pct}",
        "interval_name": f"{1 - alpha:.0%} confidence sequence",
    }
    if base_n == 0 or can_n == 0:
        why = (f"baseline has {warmup_seen:g} samples, the {pct} threshold needs {MIN_SAMPLES}"
               if np.isnan(counts.threshold_ms).all()
               else f"no samples yet after warm-up ({can_n} canary / {base_n} baseline)")
        return MetricVerdict(verdict=Verdict.inconclusive, reason=f"{name}: {why}", **common)
    path = ratio_test_path(counts.baseline_n, counts.baseline_k, counts.canary_n, counts.canary_k,
                           direction=direction, alpha=alpha, tolerance=tolerance)
    e_value, lower, upper = (float(a[-1]) for a in (path.e_value, path.lower, path.upper))
    verdict = CODES[int(path.verdict[-1])]
    base_share, can_share = base_k / base_n, can_k / can_n
    ratio = can_share / base_share if base_share > 0 else (math.inf if can_share > 0 else math.nan)
    tau = float(counts.threshold_ms[~np.isnan(counts.threshold_ms)][-1])
    base_q, can_q = quantiles
    shift = can_q / base_q if base_q > 0 else math.nan
    reason = (
        f"{pct} {can_q:.0f} ms vs {base_q:.0f} ms ({shift:.2f}x); {can_share:.1%} vs "
        f"{base_share:.1%} slower than {tau:.0f} ms (ratio "
        f"{'n/a' if math.isnan(ratio) else f'{ratio:.2f}x'}, {1 - alpha:.0%} CS "
        f"{format_interval(lower, upper)}) after {can_n} canary / {base_n} baseline samples: "
        f"{outcome_phrase(verdict, e_value, alpha, tolerance, direction)}"
    )
    details = {f"baseline_{pct}_ms": base_q, f"canary_{pct}_ms": can_q, "quantile_ratio": shift,
               "threshold_ms": tau, "baseline_slow": base_k, "canary_slow": can_k,
               "tolerance": tolerance}
    effect = None if math.isnan(ratio) else ratio
    return MetricVerdict(verdict=verdict, reason=reason, effect=effect, interval=(lower, upper),
                         e_value=e_value, details=details, **common)
