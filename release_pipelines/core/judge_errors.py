"""Error rates as counts: an anytime-valid test on the canary / baseline error-rate ratio.

Method (Lindon, Sanden, Shirikian, KDD 2022, "Rapid Regression Detection in Software
Deployments through Sequential Testing"): errors on each side are Poisson streams whose
intensities are proportional to traffic. Given the `e` errors of one time bucket, the canary's
count is Binomial(e, p) with p = n_c R / (n_c R + n_b), where n_c, n_b are the bucket's requests
and R is the rate ratio: the unknown baseline rate cancels, and the traffic split is known from
request counts, bucket by bucket. The product of these likelihood ratios over buckets, mixed
over a normal prior on log R (a fine grid), is a nonnegative martingale under any fixed R, so:

- e-value against "no regression" (R = 1; prior restricted to the failing side): by Ville's
  inequality P(it ever reaches 1/alpha) <= alpha, however often one looks -> FAIL.
- confidence sequence {R: e-value against R < 1/alpha}, intersected over time, covers the true
  R at all times with probability >= 1 - alpha -> PASS when it excludes the tolerance.

With binomial (not Poisson) data and equal rates, the conditional count is hypergeometric,
which is smaller in convex order than the binomial (Hoeffding 1963), so the A/A guarantee holds
exactly; for unequal rates the Poisson model is the usual small-rate approximation.

Input: per-interval buckets (requests, errors), aligned in time between the two sides;
`buckets_from_cumulative` turns counter snapshots (Prometheus `_total`) into such buckets.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache
from itertools import pairwise
from typing import Any

import numpy as np
from scipy.special import betaln

from release_pipelines.core.judge import MetricVerdict, Verdict
from release_pipelines.core.manifest import Direction, MetricKind
from release_pipelines.core.prefix_memo import PrefixMemo, prefix_digests

LOG_RATIO_GRID = np.linspace(np.log(1e-3), np.log(1e3), 481)
"""Log rate ratios the mixture and the confidence sequence range over (2.9 % steps)."""
PRIOR_SD = 1.0
"""Prior sd of log R: most weight on ratios 0.37x-2.7x, where canary regressions live."""

_NO_CHANGE = len(LOG_RATIO_GRID) // 2
_RATIOS = np.exp(LOG_RATIO_GRID)
_PRIOR = np.exp(-0.5 * (LOG_RATIO_GRID / PRIOR_SD) ** 2)
_PRIOR /= _PRIOR.sum()

PASS, INCONCLUSIVE, FAIL = 1, 0, -1


@dataclass(frozen=True)
class Bucket:
    """Requests and errors of one side during one interval."""

    requests: int
    errors: int


@dataclass(frozen=True)
class RatioPath:
    """The test after each bucket; arrays shaped (..., buckets)."""

    e_value: np.ndarray
    """Running maximum of the e-value against no regression in the failing direction."""
    lower: np.ndarray
    upper: np.ndarray
    """Confidence sequence for the ratio (running intersection; 0 and inf = unbounded)."""
    verdict: np.ndarray
    """PASS, INCONCLUSIVE or FAIL codes."""


def _failing_side_prior(direction: Direction) -> np.ndarray:
    keep = {
        Direction.increase: LOG_RATIO_GRID > 0,
        Direction.decrease: LOG_RATIO_GRID < 0,
        Direction.either: LOG_RATIO_GRID != 0,
    }[direction]
    prior = np.where(keep, _PRIOR, 0.0)
    return prior / prior.sum()


_PATHS = PrefixMemo(max_bytes=32 << 20)
"""Paths of single streams seen lately: the sensor's next tick runs only its newest bucket."""


def ratio_test_path(
    baseline_n: np.ndarray, baseline_k: np.ndarray, canary_n: np.ndarray, canary_k: np.ndarray,
    *, direction: Direction = Direction.increase, alpha: float = 0.05, tolerance: float = 1.25,
) -> RatioPath:
    """Run the test bucket by bucket; `k` events among `n` trials per side, shaped (..., T).

    Vectorised over leading axes so simulations judge thousands of canaries at every look.
    Buckets where one side had no traffic carry no information and are skipped. A single stream
    judged before with fewer buckets (the sensor's last tick) resumes where that run ended.
    """
    arrays = np.broadcast_arrays(*(np.asarray(a, dtype=float) for a in
                                   (baseline_n, baseline_k, canary_n, canary_k)))
    base_n, base_k, can_n, can_k = arrays
    batch, steps = base_n.shape[:-1], base_n.shape[-1]
    size = LOG_RATIO_GRID.size
    fail_prior = _failing_side_prior(direction)
    threshold = np.log(1 / alpha)
    digests = [] if batch else prefix_digests(f"{direction.value}:{alpha!r}".encode(), np.stack(arrays, axis=-1))
    done, state = _PATHS.resume(digests)
    if state is None:
        log_lik = np.zeros((*batch, size))
        best_e = np.full(batch, -np.inf)
        low_i = np.zeros(batch, dtype=int)
        high_i = np.full(batch, size - 1)
        e_value, lower, upper = (np.empty(base_n.shape) for _ in range(3))
    else:
        log_lik, best_e, low_i, high_i, *paths = (np.copy(a) for a in state)
        e_value, lower, upper = (np.concatenate([p, np.empty(steps - done)]) for p in paths)
    for t in range(done, steps):
        bn, bk, cn, ck = base_n[..., t], base_k[..., t], can_n[..., t], can_k[..., t]
        live = (bn > 0) & (cn > 0) & (bk + ck > 0)
        odds = (np.where(live, cn, 1.0) / np.where(live, bn, 1.0))[..., None]
        # log Binomial(ck | bk + ck, p) up to a constant, with p = odds R / (1 + odds R)
        step = ck[..., None] * LOG_RATIO_GRID - (bk + ck)[..., None] * np.log1p(odds * _RATIOS)
        log_lik += np.where(live[..., None], step, 0.0)
        top = log_lik.max(axis=-1)
        scaled = np.exp(log_lik - top[..., None])
        best_e = np.maximum(best_e, top + np.log(scaled @ fail_prior) - log_lik[..., _NO_CHANGE])
        inside = log_lik > (top + np.log(scaled @ _PRIOR) - threshold)[..., None]
        # widen by one grid step each side: the true set is an interval between grid points
        low_i = np.maximum(low_i, np.argmax(inside, axis=-1) - 1)
        high_i = np.minimum(high_i, size - np.argmax(inside[..., ::-1], axis=-1))
        e_value[..., t] = np.exp(np.minimum(best_e, 700.0))  # e^700: overwhelming anyway
        lower[..., t] = np.where(low_i <= 0, 0.0, _RATIOS[np.clip(low_i, 0, size - 1)])
        upper[..., t] = np.where(high_i >= size - 1, np.inf, _RATIOS[np.clip(high_i, 0, size - 1)])
    if digests and done < steps:
        kept = tuple(np.array(a) for a in (log_lik, best_e, low_i, high_i, e_value, lower, upper))
        _PATHS.keep(digests[-1], kept, sum(a.nbytes for a in kept))
    within = {
        Direction.increase: upper < tolerance,
        Direction.decrease: lower > 1 / tolerance,
        Direction.either: (upper < tolerance) & (lower > 1 / tolerance),
    }[direction]
    verdict = np.where(e_value >= 1 / alpha, FAIL, np.where(within, PASS, INCONCLUSIVE))
    return RatioPath(e_value=e_value, lower=lower, upper=upper, verdict=verdict.astype(np.int8))


CODES = {PASS: Verdict.passed, INCONCLUSIVE: Verdict.inconclusive, FAIL: Verdict.failed}


def outcome_phrase(verdict: Verdict, e_value: float, alpha: float, tolerance: float,
                   direction: Direction) -> str:
    """The closing words of a reason line: what the evidence says and against which bar."""
    if verdict is Verdict.failed:
        return f"regression (e-value {e_value:.3g} >= 1/alpha = {1 / alpha:.3g})"
    if verdict is Verdict.passed:
        bar = f"{tolerance:g}x" if direction is not Direction.decrease else f"{1 / tolerance:.3g}x"
        return f"no regression beyond {bar}"
    return f"not enough evidence yet (e-value {e_value:.3g}, need {1 / alpha:.3g})"


def buckets_from_cumulative(snapshots: Sequence[tuple[int, int]]) -> list[Bucket]:
    """Per-interval buckets from cumulative (requests_total, errors_total) counter snapshots.

    The first snapshot is the starting point; a counter that went down was reset (process
    restart), so its new value is the interval's count, as Prometheus' increase() assumes.
    """
    buckets = []
    for (prev_n, prev_k), (n, k) in pairwise(snapshots):
        reset = n < prev_n or k < prev_k
        buckets.append(Bucket(n if reset else n - prev_n, k if reset else k - prev_k))
    return buckets


def format_interval(lower: float, upper: float) -> str:
    return f"[{lower:.2f}, {'inf' if np.isinf(upper) else f'{upper:.2f}'}]"


RATE_PRIOR = (1.0, 99.0)
"""Beta prior of the per-side rate confidence sequences: mean 1 %, where error rates live. Any
prior keeps the sequences valid; this one only makes them tight for small rates."""


def rate_bounds(n: int, k: int, alpha: float, prior: tuple[float, float] = RATE_PRIOR) -> tuple[float, float]:
    """Anytime-valid bounds on one side's error rate after `k` errors in `n` requests.

    The beta-binomial mixture likelihood ratio against a rate p is a nonnegative martingale
    under p (Robbins' method of mixtures), so {p: mixture / likelihood(p) < 1/alpha} covers the
    true rate at every look with probability >= 1 - alpha. `prior` (Beta a, b) only decides
    where the bounds are tight: put its mean near the rates that matter.
    """
    if n <= 0:
        return 0.0, 1.0
    a, b = prior
    log_mixture = betaln(k + a, n - k + b) - betaln(a, b)
    limit = np.log(1 / alpha)

    def outside(p: float) -> bool:
        return log_mixture - k * np.log(p) - (n - k) * np.log1p(-p) >= limit

    def search(lo: float, hi: float, towards_hi: bool) -> float:
        for _ in range(60):
            mid = (lo + hi) / 2
            if outside(mid) == towards_hi:
                hi = mid
            else:
                lo = mid
        return hi if towards_hi else lo

    centre = min(max(k / n, 1e-12), 1 - 1e-12)
    upper = 1.0 if not outside(1 - 1e-12) else search(centre, 1 - 1e-12, True)
    lower = 0.0 if not outside(1e-12) else search(1e-12, centre, False)
    return lower, upper


def _within_margin(base_n: int, base_k: int, can_n: int, can_k: int, alpha: float,
                   margin: float, direction: Direction) -> tuple[bool, str]:
    """PASS on absolute evidence: the canary's rate is provably within `margin` of baseline's
    on the failing side. Lets a near-error-free service pass, where a ratio cannot be bounded."""
    base_lo, base_hi = rate_bounds(base_n, base_k, alpha / 2)
    can_lo, can_hi = rate_bounds(can_n, can_k, alpha / 2)
    up_ok = can_hi < base_lo + margin
    down_ok = can_lo > base_hi - margin
    ok = {Direction.increase: up_ok, Direction.decrease: down_ok, Direction.either: up_ok and down_ok}[direction]
    text = (f"canary rate <= {can_hi:.2%} and baseline >= {base_lo:.2%} ({1 - alpha:.0%} CS): "
            f"within {margin:.2%} of baseline")
    return ok, text


def judge_errors(
    baseline: Sequence[Bucket],
    canary: Sequence[Bucket],
    *,
    name: str = "error_rate",
    direction: Direction = Direction.increase,
    critical: bool = True,
    alpha: float = 0.05,
    tolerance: float = 1.25,
    absolute_margin: float = 0.01,
) -> MetricVerdict:
    """Judge error counts; both sides list the same time intervals, oldest first.

    FAIL: e-value against "canary no worse" reached 1/alpha at some bucket (sticky).
    PASS: the confidence sequence for the rate ratio excludes `tolerance` on the failing side,
    or the canary's rate is provably within `absolute_margin` of the baseline's (a regression
    must be both relatively and absolutely large to matter; 0 turns the second rule off).
    """
    if len(baseline) != len(canary):
        raise ValueError(f"baseline has {len(baseline)} buckets and canary {len(canary)}: "
                         "buckets must be the same time intervals on both sides")
    for side, buckets in (("baseline", baseline), ("canary", canary)):
        for i, b in enumerate(buckets):
            if b.requests < 0 or b.errors < 0 or b.errors > b.requests:
                raise ValueError(f"{side} bucket {i}: need 0 <= errors <= requests, got {b}")
    base_n = sum(b.requests for b in baseline)
    base_k = sum(b.errors for b in baseline)
    can_n = sum(b.requests for b in canary)
    can_k = sum(b.errors for b in canary)
    common: dict[str, Any] = {
        "name": name, "kind": MetricKind.errors, "direction": direction, "critical": critical,
        "alpha": alpha, "baseline_n": base_n, "canary_n": can_n, "effect_name": "error rate ratio",
        "interval_name": f"{1 - alpha:.0%} confidence sequence",
    }
    if base_n == 0 or can_n == 0:
        return MetricVerdict(verdict=Verdict.inconclusive, reason=(
            f"no requests yet ({can_n} canary / {base_n} baseline): nothing to compare"), **common)
    base_rate, can_rate = base_k / base_n, can_k / can_n
    details = {"baseline_errors": base_k, "canary_errors": can_k,
               "baseline_rate": base_rate, "canary_rate": can_rate, "tolerance": tolerance}
    path = ratio_test_path(
        [b.requests for b in baseline], [b.errors for b in baseline],
        [b.requests for b in canary], [b.errors for b in canary],
        direction=direction, alpha=alpha, tolerance=tolerance,
    )
    e_value, lower, upper = (float(a[-1]) for a in (path.e_value, path.lower, path.upper))
    verdict = CODES[int(path.verdict[-1])]
    ratio = can_rate / base_rate if base_rate > 0 else (np.inf if can_rate > 0 else np.nan)
    ratio_text = "n/a" if np.isnan(ratio) else "inf" if np.isinf(ratio) else f"{ratio:.2f}x"
    reason = (
        f"error rate {can_rate:.2%} vs {base_rate:.2%} (ratio {ratio_text}, "
        f"{1 - alpha:.0%} CS {format_interval(lower, upper)}) after {can_n} canary / {base_n} "
        f"baseline requests: {outcome_phrase(verdict, e_value, alpha, tolerance, direction)}"
    )
    if verdict is Verdict.inconclusive and absolute_margin > 0:
        within, text = _within_margin(base_n, base_k, can_n, can_k, alpha, absolute_margin, direction)
        if within:
            verdict = Verdict.passed
            reason = (f"error rate {can_rate:.2%} vs {base_rate:.2%} after {can_n} canary / {base_n} "
                      f"baseline requests: no regression that matters ({text})")
    if verdict is Verdict.inconclusive and base_k + can_k == 0:
        reason += "; no errors on either side yet, so the ratio cannot be bounded"
    details["absolute_margin"] = absolute_margin
    return MetricVerdict(verdict=verdict, reason=reason, effect=None if np.isnan(ratio) else ratio,
                         interval=(lower, upper), e_value=e_value, details=details, **common)


@lru_cache(maxsize=256)
def _reference_upper(n: int, k: int, alpha: float) -> float:
    """The reference does not change during a bake: its bound is computed once per tick stream."""
    return rate_bounds(n, k, alpha)[1]


def judge_against_reference(
    requests: int,
    errors: int,
    reference_requests: int,
    reference_errors: int,
    *,
    alpha: float = 0.05,
    tolerance: float = 1.25,
    absolute_margin: float = 0.01,
    name: str = "error_rate",
    critical: bool = True,
) -> MetricVerdict:
    """One-sample bake rule: the new stable version's errors against a fixed reference rate.

    During bake nothing else runs beside the new version, so it is judged against what the old
    stable version did during the last judged canary step (`reference_*`: its requests and
    errors over that step; 0 requests = no reference).

    Rule (conservative; FAIL or INCONCLUSIVE, never PASS - the bake ends by time):
        FAIL when  lower(new, alpha/2) > max(upper(ref, alpha/2) * tolerance,
                                             upper(ref, alpha/2) + absolute_margin)
    with `rate_bounds` (anytime-valid beta-binomial confidence sequences). The reference's own
    uncertainty enters through its upper bound. Without a reference the bar is `absolute_margin`
    alone (0 then turns the rule off). Guarantee: if the new rate p is no regression - p <=
    max(tolerance * p_ref, p_ref + absolute_margin) - a FAIL needs the new version's lower bound
    above p or the reference's upper bound below p_ref; each happens with probability <= alpha/2
    (the first at any time, however often one looks), so the false-FAIL rate is <= alpha.

    The new version's bound is computed only when its observed rate is above the bar: the
    observed rate always lies inside the confidence sequence, so below the bar it cannot FAIL.
    """
    for label, n, k in (("new version", requests, errors), ("reference", reference_requests, reference_errors)):
        if n < 0 or k < 0 or k > n:
            raise ValueError(f"{label}: need 0 <= errors <= requests, got {k} errors in {n} requests")
    common: dict[str, Any] = {
        "name": name, "kind": MetricKind.errors, "direction": Direction.increase, "critical": critical,
        "alpha": alpha, "baseline_n": reference_requests, "canary_n": requests,
        "effect_name": "bake error rate / reference rate",
        "interval_name": f"{1 - alpha / 2:.1%} confidence sequence on the bake error rate",
    }
    has_reference = reference_requests > 0
    if has_reference:
        ref_rate = reference_errors / reference_requests
        ref_upper = _reference_upper(reference_requests, reference_errors, alpha / 2)
        bar = max(ref_upper * tolerance, ref_upper + absolute_margin)
        against = (f"reference {ref_rate:.2%} ({reference_errors}/{reference_requests}, upper bound "
                   f"{ref_upper:.2%}): bar max({tolerance:g}x, +{absolute_margin:.2%}) = {bar:.2%}")
    else:
        ref_rate, ref_upper, bar = float("nan"), float("nan"), absolute_margin
        against = f"no reference: bar is the absolute margin {absolute_margin:.2%}"
    details = {"bake_errors": errors, "bake_requests": requests, "reference_errors": reference_errors,
               "reference_requests": reference_requests, "reference_upper": ref_upper, "bar": bar,
               "tolerance": tolerance, "absolute_margin": absolute_margin}
    if not has_reference and absolute_margin <= 0:
        return MetricVerdict(verdict=Verdict.inconclusive, details=details, reason=(
            "no reference and no absolute margin: nothing to judge the bake against"), **common)
    if requests == 0:
        return MetricVerdict(verdict=Verdict.inconclusive, details=details,
                             reason=f"no requests on the new version yet; {against}", **common)
    rate = errors / requests
    effect = rate / ref_rate if has_reference and ref_rate > 0 else None
    details["bake_rate"] = rate
    if rate <= bar:
        return MetricVerdict(verdict=Verdict.inconclusive, effect=effect, details=details, reason=(
            f"bake error rate {rate:.2%} ({errors}/{requests}) is not above the bar; {against}"), **common)
    lower, upper = rate_bounds(requests, errors, alpha / 2)
    details["bake_lower"] = lower
    verdict = Verdict.failed if lower > bar else Verdict.inconclusive
    outcome = "regression" if verdict is Verdict.failed else "not enough evidence yet"
    return MetricVerdict(verdict=verdict, effect=effect, interval=(lower, upper), details=details, reason=(
        f"bake error rate {rate:.2%} ({errors}/{requests}), at least {lower:.2%} "
        f"({1 - alpha / 2:.1%} CS); {against}: {outcome}"), **common)
