"""Reference canary judges, re-implemented from their published rules, for judge_quality.

- Kayenta (Spinnaker's NetflixACAJudge, MannWhitneyClassifier): per metric, a two-sided
  Mann-Whitney test on the per-interval values of both sides; the Hodges-Lehmann shift and its
  98 % confidence interval classify the metric High when the interval's lower end clears
  0.25 x |shift| and the mean ratio exceeds allowedIncrease (Low symmetrically); no data is
  NoData. Score = 100 x Pass / (Pass + High + Low + NoData); pass >= 75. Run on the cumulative
  window at every look, as interval-by-interval canary analysis does.
- Flagger: every interval checks the canary's value against a fixed limit; an interval with no
  data is a failed check; the canary is rolled back after `threshold` (default 5) failed checks.

Both are vectorised over a leading axis of simulated canaries.
"""

from __future__ import annotations

import numpy as np

KAYENTA_CONFIDENCE = 0.98
KAYENTA_FRACTION = 0.25
KAYENTA_PASS_SCORE = 75.0
Z_98 = 2.3263478740408408  # standard normal quantile 0.99: two-sided 98 %


def hodges_lehmann(experiment: np.ndarray, control: np.ndarray) -> tuple[np.ndarray, ...]:
    """Shift estimate and 98 % interval from all pairwise differences; arrays (canaries, n).

    The interval takes the order statistics of the differences at the Mann-Whitney critical
    value (normal approximation, as R's wilcox.test for larger samples); too few points give
    an unbounded interval.
    """
    m, n = experiment.shape[-1], control.shape[-1]
    total = m * n
    diffs = experiment[..., :, None] - control[..., None, :]
    diffs = diffs.reshape(*experiment.shape[:-1], total)
    k = int(np.floor(total / 2 - Z_98 * np.sqrt(total * (m + n + 1) / 12)))
    mids = sorted({(total - 1) // 2, total // 2})
    kth = sorted({*mids, *([k, total - 1 - k] if k >= 0 else [])})
    ordered = np.partition(diffs, kth, axis=-1)
    estimate = ordered[..., mids].mean(axis=-1)
    if k < 0:
        inf = np.full(estimate.shape, np.inf)
        return estimate, -inf, inf
    return estimate, ordered[..., k], ordered[..., total - 1 - k]


def kayenta_fails(control: np.ndarray, experiment: np.ndarray, *, increase_only: bool = True,
                  allowed_increase: float = 1.0, ends: np.ndarray | None = None) -> np.ndarray:
    """Per look, does Kayenta score the canary below 75? Series shaped (canaries, points).

    A look judges the points up to `ends[look]` (default: one look per point, so per-interval
    values); raw samples with `ends` at each look's last sample feed it every request instead.
    With one metric the score is 100 (Pass) or 0 (High, Low or NoData).
    """
    canaries, points = control.shape
    ends = np.arange(1, points + 1) if ends is None else np.asarray(ends)
    fails = np.zeros((canaries, ends.size), dtype=bool)
    for t, end in enumerate(ends):
        ctrl, exp = control[:, :end], experiment[:, :end]
        estimate, lower, upper = hodges_lehmann(exp, ctrl)
        bound = KAYENTA_FRACTION * np.abs(estimate)
        with np.errstate(divide="ignore", invalid="ignore"):
            ratio = exp.mean(axis=-1) / ctrl.mean(axis=-1)
        high = (lower > bound) & (ratio > allowed_increase)
        low = (upper < -bound) & (ratio < 1 / allowed_increase) & (not increase_only)
        nodata = np.isnan(ctrl).all(axis=-1) | np.isnan(exp).all(axis=-1)
        score = 100.0 * ~(high | low | nodata)
        fails[:, t] = score < KAYENTA_PASS_SCORE
    return fails


def flagger_fails(check_failed: np.ndarray, threshold: int = 5) -> np.ndarray:
    """Per look, has the canary been rolled back (failed checks so far >= threshold)?"""
    return np.cumsum(check_failed, axis=-1) >= threshold
