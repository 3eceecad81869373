"""From metric snapshots to a canary decision (pure: no Dagster, no I/O).

The sensor appends one cumulative snapshot per service per tick to a series kept in its cursor;
this module turns each service's series into per-interval buckets, asks the judge for each metric
the manifest lists, and combines services: any failing service fails the release, all passing
services pass it, anything else waits (and past the deadline the manifest's policy decides).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from itertools import pairwise
from typing import Any

from release_pipelines.core.judge import (
    MetricVerdict,
    OverallVerdict,
    Verdict,
    apply_deadline,
    judge_overall,
    judge_resource,
)
from release_pipelines.core.judge_errors import Bucket, judge_against_reference, judge_errors
from release_pipelines.core.judge_latency import (
    HistogramLook,
    histogram_increase,
    judge_latency_against_reference,
    judge_latency_histograms,
)
from release_pipelines.core.manifest import Direction, Manifest, MetricKind

# One tick's cumulative counts for one version: [requests, errors, [[le, count], ...]].
Counts = list[Any]


@dataclass(frozen=True)
class ServiceSeries:
    """A service's snapshots since the step began, oldest first (baseline and canary aligned)."""

    service: str
    baseline: Sequence[Counts]
    canary: Sequence[Counts]
    # kind ("memory" | "cpu") -> (baseline samples, canary samples), measured by the platform
    resources: Mapping[str, tuple[Sequence[float], Sequence[float]]] | None = None


@dataclass(frozen=True)
class CanaryDecision:
    verdict: Verdict
    reason: str
    services: Mapping[str, OverallVerdict]
    decided_by: str = "evidence"


def _counts(metrics: Any) -> Counts:
    if metrics is None:
        return [0, 0, []]
    return [metrics.requests, metrics.errors, [list(b) for b in metrics.latency_buckets]]


def append_read(entry: dict[str, list[Counts]], stable: Any, canary: Any, limit: int = 5000) -> str | None:
    """Add one tick's cumulative reads to a service's series; returns why a tick was skipped.

    A missing stable read (a missed scrape) skips the tick: recording zeros would look like a
    counter reset and dump the stable version's whole history into one bucket. A missing canary
    read repeats its last one (no new requests), or zeros before its first request.
    """
    if stable is None:
        return "no series for the stable version this tick"
    canary_read = _counts(canary) if canary is not None else (entry["canary"][-1] if entry["canary"] else _counts(None))
    entry["baseline"] = (entry["baseline"] + [_counts(stable)])[-limit:]
    entry["canary"] = (entry["canary"] + [canary_read])[-limit:]
    return None


def _buckets(series: Sequence[Counts]) -> list[Bucket]:
    out = []
    for earlier, later in pairwise(series):
        requests = later[0] - earlier[0]
        errors = later[1] - earlier[1]
        if requests < 0:  # a restarted router resets its counters: count from zero
            requests, errors = later[0], later[1]
        out.append(Bucket(max(0, requests), min(max(0, errors), max(0, requests))))
    return out


def _looks(baseline: Sequence[Counts], canary: Sequence[Counts]) -> list[HistogramLook]:
    """Pair the two sides' histogram reads; a side with no requests yet reads as all zeros."""
    bounds = {math.inf} | {float(le) for counts in (*baseline, *canary) for le, _ in counts[2]}
    looks = []
    for base, can in zip(baseline, canary):
        base_hist = {float(le): int(n) for le, n in base[2]}
        can_hist = {float(le): int(n) for le, n in can[2]}
        looks.append(HistogramLook({b: base_hist.get(b, 0) for b in bounds}, {b: can_hist.get(b, 0) for b in bounds}))
    return looks


def judge_service(manifest: Manifest, series: ServiceSeries) -> OverallVerdict:
    analysis = manifest.service(series.service).canary.analysis
    verdicts: list[MetricVerdict] = []
    for metric in analysis.metrics:
        if metric.kind is MetricKind.errors:
            options = {k: v for k, v in (("tolerance", metric.tolerance), ("absolute_margin", metric.absolute_margin)) if v is not None}
            verdicts.append(
                judge_errors(_buckets(series.baseline), _buckets(series.canary), name=metric.name,
                             direction=metric.direction, critical=metric.critical, alpha=analysis.alpha, **options)
            )
        elif metric.kind is MetricKind.latency:
            verdicts.append(
                judge_latency_histograms(_looks(series.baseline, series.canary), name=metric.name,
                                         direction=metric.direction, critical=metric.critical, alpha=analysis.alpha,
                                         **({"tolerance": metric.tolerance} if metric.tolerance else {}))
            )
        elif metric.kind in (MetricKind.memory, MetricKind.cpu):
            # process measurements (LocalPlatform.resource_usage) kept in the sensor's cursor
            baseline, canary = (series.resources or {}).get(metric.kind.value, ((), ()))
            verdicts.append(
                judge_resource(baseline, canary, name=metric.name, kind=metric.kind, direction=metric.direction,
                               critical=metric.critical, alpha=analysis.alpha,
                               **({"tolerance": metric.tolerance} if metric.tolerance else {}))
            )
    return judge_overall(verdicts)


def decide(
    manifest: Manifest, series: Sequence[ServiceSeries], *, elapsed_seconds: float, unavailable: Mapping[str, str]
) -> CanaryDecision:
    """Combine services; `unavailable` maps a service to why its metrics could not be read."""
    verdicts = {s.service: judge_service(manifest, s) for s in series}
    failed = {name: v for name, v in verdicts.items() if v.verdict is Verdict.failed}
    if failed:
        name, verdict = next(iter(failed.items()))
        return CanaryDecision(Verdict.failed, f"{name}: {verdict.reason}", verdicts)
    waiting = [f"{name}: {v.reason}" for name, v in verdicts.items() if v.verdict is Verdict.inconclusive]
    waiting += [f"{name}: no evidence ({why})" for name, why in unavailable.items()]
    if not waiting:
        return CanaryDecision(Verdict.passed, "every canary passed: " + "; ".join(
            f"{n}: {v.reason}" for n, v in verdicts.items()), verdicts)
    analysis = [manifest.service(s).canary.analysis for s in [*verdicts, *unavailable]]
    deadline = min(a.deadline_seconds for a in analysis)
    policy = next(a.on_deadline for a in analysis if a.deadline_seconds == deadline)
    pending = OverallVerdict(Verdict.inconclusive, "; ".join(waiting), ())
    final = apply_deadline(pending, elapsed_seconds=elapsed_seconds, deadline_seconds=deadline, on_deadline=policy)
    return CanaryDecision(final.verdict, final.reason, verdicts, final.decided_by)


# --- bake: after 100 %, the new stable version against the reference the canary steps left ----

BAKE = "bake"


def series_totals(series: Sequence[Counts]) -> tuple[int, int]:
    """(requests, errors) between the first and the last cumulative read (resets count from zero)."""
    buckets = _buckets(series)
    return sum(b.requests for b in buckets), sum(b.errors for b in buckets)


def series_histogram(series: Sequence[Counts]) -> dict[float, float]:
    """Latency histogram (le -> cumulative count, inf = total) between the first and last read."""
    return histogram_increase([{float(le): float(n) for le, n in counts[2]} for counts in series])


def carry_cursor(cursor: Mapping[str, Any] | None, key: str) -> dict[str, Any]:
    """The sensor's cursor for `key` (`<release>:<step>` or `<release>:bake`).

    The same key keeps the cursor. A new key of the same release starts an empty series but
    keeps `reference`: per service, what the baseline (the old stable version) showed over the
    last judged canary step that had baseline traffic - its requests and errors, its latency
    histogram (`latency`: [[le, count], ...]) and its memory/cpu samples (`resources`) - what the
    bake compares the new version against. A key of another release (or none) starts without.
    """
    if cursor and cursor.get("key") == key:
        return dict(cursor)
    fresh: dict[str, Any] = {"key": key, "series": {}, "reference": {}}
    if not cursor or not cursor.get("key"):
        return fresh
    release, _ = key.rsplit(":", 1)
    old_release, old_step = str(cursor["key"]).rsplit(":", 1)
    if old_release != release:
        return fresh
    reference = {s: dict(r) for s, r in (cursor.get("reference") or {}).items()}
    if old_step != BAKE:
        for service, entry in (cursor.get("series") or {}).items():
            carried: dict[str, Any] = {}
            baseline = entry.get("baseline") or []
            requests, errors = series_totals(baseline)
            if requests > 0:
                carried = {"requests": requests, "errors": errors}
                latency = series_histogram(baseline)
                if latency.get(math.inf, 0) > 0:
                    carried["latency"] = [[le, n] for le, n in sorted(latency.items())]
            samples = {kind: pair[0] for kind, pair in (entry.get("resources") or {}).items() if pair[0]}
            if samples:
                carried["resources"] = samples
            if carried:
                reference[service] = {**reference.get(service, {}), **carried}
    fresh["reference"] = reference
    return fresh


def judge_bake_service(manifest: Manifest, service: str, series: Sequence[Counts],
                       reference: Mapping[str, Any] | None,
                       resources: Mapping[str, Sequence[float]] | None = None) -> OverallVerdict:
    """Every metric judged for an increase, over the bake so far, against the service's reference
    (`carry_cursor`; None: the absolute error margin only). `series`: the new stable version's
    cumulative reads since bake start; `resources`: its memory/cpu samples since then (kind ->
    samples). Metrics judged only for a decrease are not watched during bake."""
    analysis = manifest.service(service).canary.analysis
    reference = reference or {}
    requests, errors = series_totals(series)
    bake_latency = series_histogram(series)
    reference_latency = {float(le): float(n) for le, n in reference.get("latency") or []}
    verdicts = []
    for metric in analysis.metrics:
        if metric.direction is Direction.decrease:
            continue
        options = {"tolerance": metric.tolerance} if metric.tolerance is not None else {}
        common = {"name": metric.name, "critical": metric.critical, "alpha": analysis.alpha}
        if metric.kind is MetricKind.errors:
            if metric.absolute_margin is not None:
                options["absolute_margin"] = metric.absolute_margin
            verdicts.append(judge_against_reference(requests, errors, int(reference.get("requests", 0)),
                                                    int(reference.get("errors", 0)), **common, **options))
        elif metric.kind is MetricKind.latency:
            verdicts.append(judge_latency_against_reference(bake_latency, reference_latency, **common, **options))
        elif metric.kind in (MetricKind.memory, MetricKind.cpu):
            # the spread rule on the old version's samples against the new one's; only its FAIL acts
            verdicts.append(judge_resource((reference.get("resources") or {}).get(metric.kind.value, ()),
                                           (resources or {}).get(metric.kind.value, ()),
                                           kind=metric.kind, direction=Direction.increase, **common, **options))
    if not verdicts:
        return OverallVerdict(Verdict.inconclusive, "no metric to watch during bake", ())
    return judge_overall(verdicts)


def decide_bake(manifest: Manifest, series: Mapping[str, Sequence[Counts]],
                references: Mapping[str, Mapping[str, Any]], *, unavailable: Mapping[str, str],
                resources: Mapping[str, Mapping[str, Sequence[float]]] | None = None) -> CanaryDecision:
    """FAIL when any service regressed during bake; otherwise wait (the bake ends by time).
    `resources`: per service, the new stable version's memory/cpu samples since bake start."""
    verdicts = {s: judge_bake_service(manifest, s, reads, references.get(s), (resources or {}).get(s))
                for s, reads in series.items()}
    failed = {name: v for name, v in verdicts.items() if v.verdict is Verdict.failed}
    if failed:
        name, verdict = next(iter(failed.items()))
        return CanaryDecision(Verdict.failed, f"{name}: {verdict.reason}", verdicts)
    watching = [f"{name}: {v.reason}" for name, v in verdicts.items()]
    watching += [f"{name}: no evidence ({why})" for name, why in unavailable.items()]
    return CanaryDecision(Verdict.inconclusive, "; ".join(watching) or "nothing to watch", verdicts)
