"""Latency as a distribution: is the canary stochastically slower than the baseline?

Method: a sequential rank test by betting (the anytime-valid Mann-Whitney idea; Shekhar and
Ramdas, "Nonparametric two-sample testing by betting", 2023; Waudby-Smith and Ramdas, JRSS-B
2024, for the bets). Within each look the i-th canary sample is paired with the i-th baseline
sample (arrival order; histogram counts in a fixed seeded shuffle). Each pair is scored against
a reference of everything seen before it, both sides pooled: s(v) is v's mid-rank share in that
reference, and the pair's score is d = s(canary) - s(baseline), in [-1, 1]. s is fixed before the
pair arrives and non-decreasing, so when the canary is no slower than the baseline in stochastic
order (at the same moment: drifts that move both sides together do not matter) E[d | past] <= 0,
and every bet `prod (1 + lambda d_k)` with lambda in [0, 1) is a nonnegative supermartingale. The
e-value is a mixture, fixed in advance, of two such bets (`BETS`): half on lambda 0.3, the
growth-optimal bet for the smallest shift that matters (x1.1 on a log-normal spread of 0.5: mean
score ~0.054, variance ~1/6), half on 0.95 for large shifts that must be seen within a few dozen
pairs. By Ville's inequality it reaches 1/alpha with probability <= alpha however often one looks.
Every sample counts from the first pair: no warm-up.

- FAIL: the e-value against "canary not slower" reached 1/alpha (sticky) *and* the observed
  shift (the larger of the p50 and p95 ratios) is beyond `tolerance`: a real but smaller shift is
  evidence of a change, not of one that matters (Kayenta's allowedIncrease plays the same role).
- PASS: the e-value against "canary at least `tolerance` x slower" (the same test on canary /
  tolerance) reached 1/alpha, with at least `MIN_PASS_SAMPLES` per side. From histograms a value is known only up to its bucket, so this
  side compares the canary with the baseline moved up one bucket (a conservative `tolerance` of
  the buckets' resolution); the FAIL side needs no rounding.
- `decrease` swaps the roles (a canary significantly *faster*, for metrics where that is
  suspicious); `either` averages the two FAIL e-values and needs both PASS sides.

Inputs, one entry per look, oldest first: `LatencyLook` with the samples (ms) that arrived since
the previous look, or `HistogramLook` with cumulative histogram counters (le in seconds -> count,
+Inf = total) read at that look; the first histogram look is only the starting point.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from itertools import pairwise
from typing import Any

import numpy as np
from scipy.stats import beta

from release_pipelines.core.judge import MetricVerdict, Verdict
from release_pipelines.core.judge_errors import rate_bounds
from release_pipelines.core.manifest import Direction, MetricKind
from release_pipelines.core.prefix_memo import PrefixMemo, prefix_digests

ROUTER_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.5, 0.75, 1, 2.5, 5, 10)
"""Histogram boundaries (seconds) the project's router exposes."""
TOLERANCE = 1.1
"""Default practical-significance margin: a canary up to 10 % slower is not a regression."""
BETS = np.array([0.3, 0.95])
BET_WEIGHTS = np.array([0.5, 0.5])
"""The e-value's mixture. Its cost is log(1 / weight) of evidence for the bet that fits: 0.7 nats
each here, against 2.3 for the small bet when five fixed bets and an adaptive one shared the mass
(x1.1 caught within 1,000 samples/arm: 73 % -> 81 % on the benchmark's streams; x1.5 / x2
unchanged; a shift between the two bets, x1.25, needs ~6 % more pairs; issue 17)."""
MIN_PASS_SAMPLES = 20
"""PASS also needs this many samples per side: a handful of equal values is no evidence."""
CHUNK = 256
"""Pairs scored together against the within-look reference (bounds the comparison matrix)."""


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


# ------------------------------------------------------------------ the sequential rank test


def _mid_rank(sorted_ref: np.ndarray, values: np.ndarray) -> np.ndarray:
    low = np.searchsorted(sorted_ref, values, "left")
    return low + 0.5 * (np.searchsorted(sorted_ref, values, "right") - low)


def _earlier_mid_rank(chunk: np.ndarray, values: np.ndarray) -> np.ndarray:
    """Mid-rank of pair k's value among the pairs before k in the chunk (`chunk`: x's then y's)."""
    earlier = np.tile(np.arange(values.size), 2)[None, :] < np.arange(values.size)[:, None]
    below = (chunk[None, :] < values[:, None]) + 0.5 * (chunk[None, :] == values[:, None])
    return (below * earlier).sum(axis=1)


def pair_scores(baseline: Sequence[np.ndarray], canary: Sequence[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """Scores d = s(canary) - s(baseline) of every pair, and the pair count at the end of each look.

    s is the mid-rank share in everything before the pair: earlier looks (paired or not) and the
    earlier pairs of this look. Unpaired samples of a look join the reference after it.
    """
    reference = np.empty(0)
    scores, ends = [], []
    for base, can in zip(baseline, canary):
        base, can = np.asarray(base, float), np.asarray(can, float)
        pairs = min(base.size, can.size)
        for start in range(0, pairs, CHUNK):
            stop = min(start + CHUNK, pairs)
            x, y = base[start:stop], can[start:stop]
            both = np.concatenate([x, y])
            size = reference.size + 2 * np.arange(y.size)
            diff = (_mid_rank(reference, y) + _earlier_mid_rank(both, y)
                    - _mid_rank(reference, x) - _earlier_mid_rank(both, x))
            scores.append(np.where(size > 0, diff / np.maximum(size, 1), 0.0))
            reference = np.sort(np.concatenate([reference, both]))
        rest = np.concatenate([base[pairs:], can[pairs:]])
        if rest.size:
            reference = np.sort(np.concatenate([reference, rest]))
        ends.append(sum(s.size for s in scores))
    return (np.concatenate(scores) if scores else np.empty(0)), np.asarray(ends, dtype=int)


_HISTOGRAM_SCORES = PrefixMemo(max_bytes=64 << 20)
"""Scores per series seen lately: the sensor's next tick scores only its newest look."""


def histogram_pair_scores(baseline: np.ndarray, canary: np.ndarray, shift_baseline: np.ndarray | None = None,
                          ) -> tuple[np.ndarray, np.ndarray]:
    """`pair_scores` for bucket counts per look, shaped (looks, buckets): values are bucket indices.

    Samples of a look are shuffled with a seed fixed by the look's index (a pairing that does not
    depend on the values, and the same at every re-judging). `shift_baseline` maps a baseline
    bucket to the one it is compared as (the PASS side's one-bucket move). A look's scores depend
    on the looks before it only, so a series judged before with fewer looks resumes from there.
    """
    buckets = baseline.shape[1]
    salt = b"-" if shift_baseline is None else np.asarray(shift_baseline, dtype=float).tobytes()
    digests = prefix_digests(salt, np.hstack([baseline, canary]))
    done, state = _HISTOGRAM_SCORES.resume(digests)
    reference, earlier, ends = (np.zeros(buckets), np.empty(0), []) if state is None else (
        state[0].copy(), state[1], list(state[2]))
    scores = [earlier]
    for look in range(done, len(baseline)):
        pair = _histogram_look(look, baseline[look], canary[look], reference, shift_baseline)
        scores.append(pair)
        ends.append(ends[-1] + pair.size if ends else pair.size)
    all_scores = np.concatenate(scores)
    if digests and done < len(digests):
        _HISTOGRAM_SCORES.keep(digests[-1], (reference, all_scores, tuple(ends)),
                               reference.nbytes + all_scores.nbytes + 8 * len(ends))
    return all_scores, np.asarray(ends, dtype=int)


def _histogram_look(look: int, base_counts: np.ndarray, can_counts: np.ndarray, reference: np.ndarray,
                    shift_baseline: np.ndarray | None) -> np.ndarray:
    """Score one look's pairs against `reference` (counts per bucket so far), then add the look to it."""
    buckets = reference.size
    rng = np.random.default_rng([17, look])
    x = rng.permutation(np.repeat(np.arange(buckets), base_counts.astype(int)))
    y = rng.permutation(np.repeat(np.arange(buckets), can_counts.astype(int)))
    pairs = min(x.size, y.size)
    if shift_baseline is not None:
        x = shift_baseline[x]
    scores = np.empty(0)
    if pairs:
        xp, yp = x[:pairs], y[:pairs]
        # counts per bucket of the earlier pairs of this look, at each pair
        seen = np.zeros((pairs, buckets))
        np.add.at(seen, (np.arange(pairs), xp), 1)
        np.add.at(seen, (np.arange(pairs), yp), 1)
        seen = np.cumsum(seen, axis=0) - seen + reference
        mid_below = np.cumsum(seen, axis=1) - 0.5 * seen  # per bucket: below + half of it
        rows = np.arange(pairs)
        size = seen.sum(axis=1)
        diff = mid_below[rows, yp] - mid_below[rows, xp]
        scores = np.where(size > 0, diff / np.maximum(size, 1), 0.0)
    np.add.at(reference, x, 1)
    np.add.at(reference, y, 1)
    return scores


def log_e_values(scores: np.ndarray, ends: np.ndarray) -> np.ndarray:
    """log e-value against "E[score] <= 0" at the end of each look (0 before any pair):
    log of sum_j w_j prod_k (1 + lambda_j d_k) over `BETS` / `BET_WEIGHTS`."""
    if not scores.size:
        return np.zeros(ends.size)
    wealth = np.cumsum(np.log1p(BETS[:, None] * scores[None, :]), axis=1)
    at = np.where(ends > 0, ends - 1, 0)
    log_e = np.logaddexp.reduce(wealth[:, at] + np.log(BET_WEIGHTS)[:, None], axis=0)
    return np.where(ends > 0, log_e, 0.0)


# ------------------------------------------------------------------ reading histograms


def _delta(now: Mapping[float, float], before: Mapping[float, float]) -> dict[float, float]:
    """Counts added between two reads; a total that went down means the process restarted."""
    if now.get(math.inf, 0) < before.get(math.inf, 0):
        return dict(now)
    return {le: max(0.0, count - before.get(le, 0)) for le, count in now.items()}


def histogram_increase(reads: Sequence[Mapping[float, float]]) -> dict[float, float]:
    """Counts added between the first and the last cumulative read (a restart counts from zero)."""
    total: dict[float, float] = {}
    for before, now in pairwise(reads):
        for le, count in _delta(now, before).items():
            total[le] = total.get(le, 0.0) + count
    return total


def _counts_per_look(reads: Sequence[Mapping[float, float]], bounds: Sequence[float]) -> np.ndarray:
    """Non-cumulative counts per bucket added between consecutive cumulative reads, shaped
    (reads - 1, buckets); the last bucket is above the highest finite boundary. A total that went
    down means the process restarted: that look counts from zero."""
    edges = [*bounds, math.inf]
    cumulative = np.array([[read.get(le, 0) for le in edges] for read in reads], dtype=float).reshape(len(reads), len(edges))
    now, before = cumulative[1:], cumulative[:-1]
    added = np.where((now[:, -1] < before[:, -1])[:, None], now, np.maximum(0.0, now - before))
    running = np.maximum.accumulate(added, axis=1)  # a cumulative counter cannot go down across buckets
    return np.diff(running, axis=1, prepend=0.0)


def histogram_quantile(cumulative: Mapping[float, float], quantile: float, *, log_scale: bool = False) -> float:
    """Quantile in ms by linear interpolation inside the bucket, as PromQL's histogram_quantile.

    `log_scale` interpolates the logarithm instead (not in the lowest bucket): latencies are
    closer to log-uniform than uniform within a bucket, so shifts read truer.
    """
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
            if log_scale and prev_le > 0:
                return prev_le * (le / prev_le) ** share * 1000
            return (prev_le + (le - prev_le) * share) * 1000
        prev_le, prev_count = le, count
    return prev_le * 1000


def _check_histograms(looks: Sequence[HistogramLook]) -> list[float]:
    bounds = set(looks[0].baseline) if looks else set()
    for i, look in enumerate(looks):
        for side, hist in (("baseline", look.baseline), ("canary", look.canary)):
            if math.inf not in hist:
                raise ValueError(f"look {i}: {side} histogram has no +Inf bucket (the total)")
            if set(hist) != bounds:
                raise ValueError(f"look {i}: {side} histogram boundaries differ from the first "
                                 "baseline read; both sides need the same buckets")
    return sorted(b for b in bounds if math.isfinite(b))


# ------------------------------------------------------------------ verdicts


@dataclass(frozen=True)
class _Evidence:
    """What both judges hand to `_verdict`: e-values, sample counts and the observed quantiles."""

    fail_log_e: float
    pass_log_e: float
    baseline_n: int
    canary_n: int
    quantiles: dict[str, tuple[float, float]]  # "p50"/"p95" -> (baseline ms, canary ms)
    slower_share: float
    resolution: str = ""


def _sides(direction: Direction) -> tuple[Direction, ...]:
    return (Direction.increase, Direction.decrease) if direction is Direction.either else (direction,)


def _combine_fail(log_es: Sequence[np.ndarray]) -> float:
    """Running maximum of the FAIL e-value; `either` averages the two sides' e-processes."""
    path = np.logaddexp.reduce(np.vstack(log_es), axis=0) - math.log(len(log_es))
    return float(np.maximum.accumulate(path)[-1]) if path.size else 0.0


def _combine_pass(log_es: Sequence[np.ndarray]) -> float:
    """PASS needs every side; each side's running maximum, at a Bonferroni share of alpha."""
    return min(float(np.max(e, initial=0.0)) for e in log_es) - math.log(len(log_es))


def judge_latency(
    looks: Sequence[LatencyLook], *, name: str = "latency",
    direction: Direction = Direction.increase, critical: bool = True, alpha: float = 0.05,
    tolerance: float = TOLERANCE, quantile: float = 0.95,
) -> MetricVerdict:
    """Judge latency samples (ms) per look (`release judge`, files, simulations)."""
    base = [np.asarray(look.baseline, float) for look in looks]
    can = [np.asarray(look.canary, float) for look in looks]
    fail, passed = [], []
    for side in _sides(direction):
        sign = 1.0 if side is Direction.increase else -1.0
        scores, ends = pair_scores(base, can)
        fail.append(log_e_values(sign * scores, ends))
        scale = tolerance ** -sign  # compare with canary / tolerance (or x tolerance for decrease)
        scores, ends = pair_scores(base, [c * scale for c in can])
        passed.append(log_e_values(-sign * scores, ends))
    all_base = np.concatenate(base) if base else np.empty(0)
    all_can = np.concatenate(can) if can else np.empty(0)
    quantiles = {
        f"p{q * 100:g}": tuple(float(np.quantile(v, q)) if v.size else math.nan for v in (all_base, all_can))
        for q in (0.5, quantile)
    }
    scores, _ = pair_scores(base, can)
    evidence = _Evidence(_combine_fail(fail), _combine_pass(passed), all_base.size, all_can.size,
                         quantiles, 0.5 + float(scores.mean()) if scores.size else math.nan)
    return _verdict(evidence, name=name, direction=direction, critical=critical, alpha=alpha,
                    tolerance=tolerance)


def judge_latency_histograms(
    looks: Sequence[HistogramLook], *, name: str = "latency",
    direction: Direction = Direction.increase, critical: bool = True, alpha: float = 0.05,
    tolerance: float = TOLERANCE, quantile: float = 0.95,
) -> MetricVerdict:
    """Judge latency from histogram reads, one per look (the live sensor's view)."""
    bounds = _check_histograms(looks)
    edges = np.array([*bounds, math.inf])
    base = _counts_per_look([look.baseline for look in looks], bounds).reshape(-1, edges.size)
    can = _counts_per_look([look.canary for look in looks], bounds).reshape(-1, edges.size)
    # PASS side: a baseline sample in bucket i is compared as the bucket holding tolerance x its
    # upper edge (increase) or its lower edge / tolerance (decrease): at least one bucket away
    lower_edges = np.concatenate([[0.0], edges[:-1]])
    moved = {
        Direction.increase: np.minimum(np.maximum(np.searchsorted(edges, edges * tolerance, "left"),
                                                  np.arange(edges.size) + 1), edges.size - 1),
        Direction.decrease: np.maximum(np.minimum(np.searchsorted(edges, lower_edges / tolerance, "left"),
                                                  np.arange(edges.size) - 1), 0),
    }
    fail, passed = [], []
    for side in _sides(direction):
        sign = 1.0 if side is Direction.increase else -1.0
        scores, ends = histogram_pair_scores(base, can)
        fail.append(log_e_values(sign * scores, ends))
        scores, ends = histogram_pair_scores(base, can, shift_baseline=moved[side])
        passed.append(log_e_values(-sign * scores, ends))
    totals = [_delta(getattr(looks[-1], s), getattr(looks[0], s)) if len(looks) >= 2 else {}
              for s in ("baseline", "canary")]
    quantiles = {f"p{q * 100:g}": tuple(histogram_quantile(t, q, log_scale=True) for t in totals)
                 for q in (0.5, quantile)}
    scores, _ = histogram_pair_scores(base, can)
    steps = edges[1:-1] / edges[:-2] if edges.size > 2 else np.array([math.inf])
    evidence = _Evidence(_combine_fail(fail), _combine_pass(passed), int(base.sum()), int(can.sum()),
                         quantiles, 0.5 + float(scores.mean()) if scores.size else math.nan,
                         resolution=f" (from histograms: PASS at the buckets' resolution, "
                                    f"{float(steps.min()):.2g}-{float(steps.max()):.2g}x per bucket)")
    return _verdict(evidence, name=name, direction=direction, critical=critical, alpha=alpha,
                    tolerance=tolerance)


def _shift(quantiles: Mapping[str, tuple[float, float]], direction: Direction) -> float:
    """Observed shift in the failing direction: the quantile ratio that moved furthest that way."""
    ratios = [can / base for base, can in quantiles.values() if base > 0 and not math.isnan(can)]
    if not ratios:
        return math.nan
    pick: Callable[..., float] = {
        Direction.increase: max, Direction.decrease: min,
        Direction.either: lambda *r: max(r, key=lambda v: abs(math.log(v)) if v > 0 else math.inf),
    }[direction]
    return float(pick(*ratios))


def _beyond(shift: float, tolerance: float, direction: Direction) -> bool:
    if math.isnan(shift):
        return False
    return {
        Direction.increase: shift > tolerance,
        Direction.decrease: shift < 1 / tolerance,
        Direction.either: shift > tolerance or shift < 1 / tolerance,
    }[direction]


def _verdict(evidence: _Evidence, *, name: str, direction: Direction, critical: bool, alpha: float,
             tolerance: float) -> MetricVerdict:
    common: dict[str, Any] = {
        "name": name, "kind": MetricKind.latency, "direction": direction, "critical": critical,
        "alpha": alpha, "baseline_n": evidence.baseline_n, "canary_n": evidence.canary_n,
        "effect_name": "latency ratio canary / baseline (p50 or p95, whichever moved more)",
    }
    if evidence.baseline_n == 0 or evidence.canary_n == 0:
        return MetricVerdict(verdict=Verdict.inconclusive, reason=(
            f"{name}: no samples to compare yet ({evidence.canary_n} canary / {evidence.baseline_n} "
            "baseline)"), **common)
    threshold = math.log(1 / alpha)
    shift = _shift(evidence.quantiles, direction)
    fail_e, pass_e = math.exp(min(evidence.fail_log_e, 700)), math.exp(min(evidence.pass_log_e, 700))
    bar = {Direction.increase: f"{tolerance:g}x", Direction.decrease: f"{1 / tolerance:.3g}x",
           Direction.either: f"{tolerance:g}x either way"}[direction]
    if evidence.fail_log_e >= threshold and _beyond(shift, tolerance, direction):
        verdict = Verdict.failed
        outcome = f"regression beyond {bar} (e-value {fail_e:.3g} >= 1/alpha = {1 / alpha:.3g})"
    elif evidence.pass_log_e >= threshold and min(evidence.baseline_n, evidence.canary_n) >= MIN_PASS_SAMPLES:
        verdict = Verdict.passed
        outcome = f"no regression beyond {bar}{evidence.resolution} (e-value {pass_e:.3g} against it)"
    elif evidence.fail_log_e >= threshold:
        verdict = Verdict.inconclusive
        outcome = f"a change (e-value {fail_e:.3g}), but the shift is within {bar}: not a regression that matters"
    else:
        verdict = Verdict.inconclusive
        outcome = (f"not enough evidence yet (e-value {fail_e:.3g} for a regression, {pass_e:.3g} "
                   f"against one beyond {bar}; need {1 / alpha:.3g})")
    text = ", ".join(f"{q} {can:.0f} ms vs {base:.0f} ms ({can / base if base > 0 else math.nan:.2f}x)"
                     for q, (base, can) in evidence.quantiles.items())
    reason = (f"{text}; canary slower than baseline in {evidence.slower_share:.0%} of paired samples, "
              f"after {evidence.canary_n} canary / {evidence.baseline_n} baseline samples: {outcome}")
    p50_base, p50_can = evidence.quantiles["p50"]
    tail = list(evidence.quantiles)[-1]
    tail_base, tail_can = evidence.quantiles[tail]
    details = {f"baseline_{tail}_ms": tail_base, f"canary_{tail}_ms": tail_can,
               "baseline_p50_ms": p50_base, "canary_p50_ms": p50_can,
               "quantile_ratio": tail_can / tail_base if tail_base > 0 else math.nan,
               "median_ratio": p50_can / p50_base if p50_base > 0 else math.nan,
               "slower_share": evidence.slower_share, "pass_e_value": pass_e, "tolerance": tolerance}
    return MetricVerdict(verdict=verdict, reason=reason, effect=None if math.isnan(shift) else shift,
                         e_value=fail_e, details=details, **common)


# ------------------------------------------------------------------ bake: against a fixed reference


def judge_latency_against_reference(
    bake: Mapping[float, float], reference: Mapping[float, float], *, name: str = "latency",
    critical: bool = True, alpha: float = 0.05, tolerance: float = TOLERANCE, quantile: float = 0.95,
) -> MetricVerdict:
    """Bake rule: the new stable version's latency histogram (cumulative counts since bake start,
    le seconds -> count, inf = total) against the old stable version's over the last canary step.

    At every finite bucket edge e, the bake's share of requests above e gets an anytime-valid
    lower bound (`rate_bounds`) and the reference's share an exact upper bound (Clopper-Pearson:
    the reference is one fixed sample), each at alpha / (2 x edges). FAIL when at some edge the
    bake's lower bound exceeds the reference's upper bound - the new version is stochastically
    slower, at any quantile - *and* the observed shift (p50 or p95 ratio) is beyond `tolerance`,
    as in the canary judge. If the new version is no slower than the reference, a FAIL needs one
    of the bounds to miss, so the false-FAIL rate is <= alpha however often one looks. Never
    PASS: the bake ends by time.
    """
    ref_n, bake_n = int(reference.get(math.inf, 0)), int(bake.get(math.inf, 0))
    common: dict[str, Any] = {
        "name": name, "kind": MetricKind.latency, "direction": Direction.increase, "critical": critical,
        "alpha": alpha, "baseline_n": ref_n, "canary_n": bake_n,
        "effect_name": "bake / reference latency (p50 or p95, whichever moved more)",
    }
    if ref_n == 0 or bake_n == 0:
        missing = "reference latency to bake against" if ref_n == 0 else "requests on the new version yet"
        return MetricVerdict(verdict=Verdict.inconclusive, reason=f"bake {name}: no {missing}", **common)
    edges = sorted(b for b in set(bake) & set(reference) if math.isfinite(b))
    share_alpha = alpha / (2 * max(len(edges), 1))
    quantiles = {f"p{q * 100:g}": tuple(histogram_quantile(h, q, log_scale=True) for h in (reference, bake))
                 for q in (0.5, quantile)}
    shift = _shift(quantiles, Direction.increase)
    details: dict[str, float] = {"tolerance": tolerance, **{f"{side}_{q}_ms": pair[i] for q, pair in quantiles.items()
                                                           for i, side in enumerate(("reference", "bake"))}}
    slower_at = None
    for edge in edges:
        ref_above, bake_above = ref_n - int(reference[edge]), bake_n - int(bake[edge])
        if bake_above / bake_n <= ref_above / ref_n:
            continue  # observed shares inside both bounds: no evidence at this edge
        ref_upper = 1.0 if ref_above >= ref_n else float(beta.ppf(1 - share_alpha, ref_above + 1, ref_n - ref_above))
        bake_lower = rate_bounds(bake_n, bake_above, share_alpha, (1.0, 1.0))[0]
        if bake_lower > ref_upper:
            slower_at = edge
            details.update({"edge_ms": edge * 1000, "bake_share_lower": bake_lower, "reference_share_upper": ref_upper})
            break
    text = ", ".join(f"{q} {can:.0f} ms vs {base:.0f} ms" for q, (base, can) in quantiles.items())
    if slower_at is not None and _beyond(shift, tolerance, Direction.increase):
        verdict, outcome = Verdict.failed, (
            f"regression beyond {tolerance:g}x ({details['bake_share_lower']:.0%}+ of requests above "
            f"{slower_at * 1000:g} ms, reference at most {details['reference_share_upper']:.0%})")
    elif slower_at is not None:
        verdict, outcome = Verdict.inconclusive, f"slower, but within {tolerance:g}x: not a regression that matters"
    else:
        verdict, outcome = Verdict.inconclusive, "no regression proven"
    reason = f"bake {name} {text} (reference) after {bake_n} / {ref_n} requests: {outcome}"
    return MetricVerdict(verdict=verdict, reason=reason, effect=None if math.isnan(shift) else shift,
                         details=details, **common)
