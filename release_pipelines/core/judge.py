"""Canary verdicts: tri-state per metric and overall, each carrying the evidence behind it.

Pure functions and frozen dataclasses only (no Dagster, no I/O). The statistics live next door:

- `judge_errors`: error counts, an anytime-valid mixture likelihood-ratio test on the canary's
  share of errors given the traffic split (Lindon, Sanden, Shirikian, "Rapid Regression Detection
  in Software Deployments through Sequential Testing", KDD 2022).
- `judge_latency`: a sequential rank test by betting on the whole latency distribution, from
  raw samples or histogram snapshots (router or Prometheus buckets).
- here: resource metrics (memory, cpu) by a plain spread rule, how metric verdicts combine
  (Kayenta-style criticality), and what happens when the deadline passes without evidence.

A verdict is PASS only on positive evidence that any regression is smaller than a tolerance;
no data is never a pass (nor a fail: Flagger's "no values found" rolls back healthy canaries).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, replace
from enum import Enum
from statistics import median
from typing import Any

from release_pipelines.core.manifest import Direction, MetricKind, OnDeadline


class Verdict(str, Enum):
    passed = "pass"
    failed = "fail"
    inconclusive = "inconclusive"


class NonCriticalPolicy(str, Enum):
    """What a failing non-critical metric does to the release.

    `warn` (default): it is reported, never fails the release, and counts as settled, so the
    release can still pass once every other metric passes (waiting would not change a FAIL).
    `fail`: it fails the release like a critical metric.
    """

    warn = "warn"
    fail = "fail"


def _json_value(value: Any) -> Any:
    """JSON-safe copy: enums by value, tuples as lists, non-finite floats as null (unbounded)."""
    if isinstance(value, Enum):
        return value.value
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _json_value(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_value(v) for v in value]
    return value


@dataclass(frozen=True)
class MetricVerdict:
    """One metric's verdict and its evidence.

    `effect` is canary / baseline (rate ratio, tail ratio or median ratio: see `effect_name`),
    `interval` bounds it (`interval_name` says how; inf = unbounded), `e_value` is the
    anytime-valid evidence against "no regression" (None for rules that are not tests).
    """

    name: str
    kind: MetricKind
    verdict: Verdict
    reason: str
    direction: Direction = Direction.increase
    critical: bool = True
    effect: float | None = None
    effect_name: str = ""
    interval: tuple[float, float] | None = None
    interval_name: str = ""
    baseline_n: int = 0
    canary_n: int = 0
    e_value: float | None = None
    alpha: float = 0.05
    details: dict[str, float] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return _json_value(asdict(self))


@dataclass(frozen=True)
class OverallVerdict:
    """The release decision for one step; `decided_by` is "evidence" or "deadline"."""

    verdict: Verdict
    reason: str
    metrics: tuple[MetricVerdict, ...]
    decided_by: str = "evidence"

    def to_dict(self) -> dict[str, Any]:
        return {
            "verdict": self.verdict.value,
            "reason": self.reason,
            "decided_by": self.decided_by,
            "metrics": [m.to_dict() for m in self.metrics],
        }


def judge_overall(
    metrics: Sequence[MetricVerdict], *, noncritical: NonCriticalPolicy = NonCriticalPolicy.warn
) -> OverallVerdict:
    """Any critical FAIL fails; every metric that could block PASSes -> pass; else INCONCLUSIVE."""
    metrics = tuple(metrics)
    if not metrics:
        return OverallVerdict(Verdict.inconclusive, "no metrics to judge", metrics)
    blocking = [
        m for m in metrics
        if m.verdict is Verdict.failed and (m.critical or noncritical is NonCriticalPolicy.fail)
    ]
    if blocking:
        names = ", ".join(m.name for m in blocking)
        return OverallVerdict(Verdict.failed, f"failed: {names}; {blocking[0].reason}", metrics)
    # Under `warn` a non-critical metric can never stop the release, so waiting for it would only
    # delay a decision it cannot change: only metrics that could block are waited for.
    can_block = [m for m in metrics if m.critical or noncritical is NonCriticalPolicy.fail]
    waiting = [m for m in can_block if m.verdict is Verdict.inconclusive]
    if waiting:
        names = ", ".join(m.name for m in waiting)
        return OverallVerdict(Verdict.inconclusive, f"waiting for evidence on {names} ({waiting[0].reason})", metrics)
    if not can_block:
        return OverallVerdict(Verdict.inconclusive, "no critical metric to decide on", metrics)
    unsettled = [m.name for m in metrics if m.verdict is not Verdict.passed]
    reason = "all metrics passed"
    if unsettled:
        reason = f"critical metrics passed; non-critical failing or undecided (warning only): {', '.join(unsettled)}"
    return OverallVerdict(Verdict.passed, reason, metrics)


def apply_deadline(
    overall: OverallVerdict, *, elapsed_seconds: float, deadline_seconds: float,
    on_deadline: OnDeadline,
) -> OverallVerdict:
    """Past the deadline an INCONCLUSIVE step takes the manifest's policy, recorded as such."""
    if overall.verdict is not Verdict.inconclusive or elapsed_seconds < deadline_seconds:
        return overall
    decision = {
        OnDeadline.rollback: Verdict.failed,
        OnDeadline.promote: Verdict.passed,
        OnDeadline.wait: Verdict.inconclusive,
    }[on_deadline]
    reason = (
        f"deadline reached after {elapsed_seconds:.0f} s (limit {deadline_seconds:.0f} s) "
        f"without conclusive evidence ({overall.reason}); on_deadline={on_deadline.value}"
    )
    return replace(overall, verdict=decision, reason=reason, decided_by="deadline")


def judge_resource(
    baseline: Sequence[float],
    canary: Sequence[float],
    *,
    name: str,
    kind: MetricKind = MetricKind.memory,
    direction: Direction = Direction.increase,
    critical: bool = True,
    tolerance: float = 1.25,
    min_samples: int = 3,
    alpha: float = 0.05,
) -> MetricVerdict:
    """Memory/cpu from a handful of samples per side: a spread rule, not a statistical test.

    The interval is [min(canary)/max(baseline), max(canary)/min(baseline)], every ratio the
    samples allow. FAIL when all of it lies beyond `tolerance` in the failing direction (2x
    memory fails however noisy the samples are within 25 %), PASS when all of it lies within
    tolerance, else INCONCLUSIVE. `alpha` is recorded only: with a few samples there is no
    honest error rate to promise.
    """
    base = [float(v) for v in baseline]
    can = [float(v) for v in canary]
    common: dict[str, Any] = {
        "name": name, "kind": kind, "direction": direction, "critical": critical, "alpha": alpha,
        "baseline_n": len(base), "canary_n": len(can), "effect_name": "median ratio",
        "interval_name": "sample ratio range",
    }
    if len(base) < min_samples or len(can) < min_samples:
        return MetricVerdict(
            verdict=Verdict.inconclusive,
            reason=f"{name}: {len(can)} canary / {len(base)} baseline samples, "
                   f"need {min_samples} each",
            **common,
        )
    if min(base) <= 0:
        return MetricVerdict(
            verdict=Verdict.inconclusive,
            reason=f"{name}: baseline has non-positive samples, ratios are undefined",
            **common,
        )
    ratio = median(can) / median(base)
    low, high = min(can) / max(base), max(can) / min(base)
    worse = {
        Direction.increase: low > tolerance,
        Direction.decrease: high < 1 / tolerance,
        Direction.either: low > tolerance or high < 1 / tolerance,
    }[direction]
    within = {
        Direction.increase: high < tolerance,
        Direction.decrease: low > 1 / tolerance,
        Direction.either: 1 / tolerance < low and high < tolerance,
    }[direction]
    verdict = Verdict.failed if worse else Verdict.passed if within else Verdict.inconclusive
    outcome = {
        Verdict.failed: f"regression beyond {tolerance:g}x",
        Verdict.passed: f"within {tolerance:g}x",
        Verdict.inconclusive: f"samples too spread to decide against {tolerance:g}x",
    }[verdict]
    reason = (
        f"{name} median {median(can):.4g} vs {median(base):.4g} (ratio {ratio:.2f}x, "
        f"range [{low:.2f}, {high:.2f}]) from {len(can)}/{len(base)} samples: {outcome}"
    )
    return MetricVerdict(verdict=verdict, reason=reason, effect=ratio, interval=(low, high),
                         details={"baseline_median": median(base), "canary_median": median(can)},
                         **common)
