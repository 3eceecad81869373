"""Bake: the one-sample rules against the reference (judge_errors.judge_against_reference for
errors, judge_latency.judge_latency_against_reference for latency), the cursor's reference carry-over (canary.carry_cursor) and the bake decision (canary.decide_bake)."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
from release_pipelines.resources.manifest_files import load_manifest

from release_pipelines.core.canary import carry_cursor, decide_bake, series_totals
from release_pipelines.core.judge import Verdict
from release_pipelines.core.manifest_loader import parse_manifest
from release_pipelines.core.judge_errors import judge_against_reference
from release_pipelines.core.judge_latency import ROUTER_BUCKETS, judge_latency_against_reference

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "shop" / "release.yaml"
F, I = Verdict.failed, Verdict.inconclusive


def first_fail(rate: float, reference: tuple[int, int], rng, *, looks: int = 100, per_look: int = 50,
               tolerance: float = 1.25, margin: float = 0.01) -> int | None:
    """Look after every batch of a simulated bake stream; the look of the first FAIL, if any."""
    counts = rng.binomial(per_look, rate, size=looks).cumsum()
    for look, errors in enumerate(counts, start=1):
        verdict = judge_against_reference(look * per_look, int(errors), *reference, alpha=0.05,
                                          tolerance=tolerance, absolute_margin=margin)
        assert verdict.verdict is not Verdict.passed  # the bake ends by time, never by a pass
        if verdict.verdict is F:
            return look
    return None


def test_a_stream_as_good_as_its_reference_stays_within_alpha_over_100_looks() -> None:
    rng = np.random.default_rng(20261126)
    fails = 0
    for _ in range(300):
        reference = (2000, int(rng.binomial(2000, 0.02)))
        fails += first_fail(0.02, reference, rng) is not None
    assert fails <= 0.07 * 300, fails


def test_a_stream_at_the_no_reference_bar_stays_within_alpha() -> None:
    """The hardest null without reference: the new rate exactly at the absolute margin."""
    rng = np.random.default_rng(7)
    fails = sum(first_fail(0.03, (0, 0), rng, looks=50, per_look=100, margin=0.03) is not None
                for _ in range(100))
    assert fails <= 7, fails


def test_a_5x_stream_fails() -> None:
    rng = np.random.default_rng(11)
    looks = [first_fail(0.10, (2000, 40), rng) for _ in range(20)]
    assert all(look is not None for look in looks), looks
    assert max(looks) <= 40  # within 2000 requests


def test_without_reference_only_the_absolute_margin_counts() -> None:
    bad = judge_against_reference(3000, 150, 0, 0, alpha=0.05, tolerance=1.25, absolute_margin=0.03)
    assert bad.verdict is F and "no reference" in bad.reason and "regression" in bad.reason
    fine = judge_against_reference(3000, 45, 0, 0, alpha=0.05, tolerance=1.25, absolute_margin=0.03)
    assert fine.verdict is I
    off = judge_against_reference(3000, 3000, 0, 0, alpha=0.05, tolerance=1.25, absolute_margin=0.0)
    assert off.verdict is I and "nothing to judge" in off.reason


def test_the_reference_uncertainty_raises_the_bar() -> None:
    # 6 % against 2 % measured on only 100 requests: the reference might be far higher
    assert judge_against_reference(5000, 300, 100, 2, alpha=0.05, tolerance=1.25, absolute_margin=0.01).verdict is I
    # the same rates with a well-measured reference fail
    assert judge_against_reference(5000, 300, 10000, 200, alpha=0.05, tolerance=1.25, absolute_margin=0.01).verdict is F


def test_no_requests_and_bad_counts() -> None:
    assert judge_against_reference(0, 0, 100, 1, alpha=0.05, tolerance=1.25, absolute_margin=0.01).verdict is I
    with pytest.raises(ValueError):
        judge_against_reference(10, 11, 0, 0, alpha=0.05, tolerance=1.25, absolute_margin=0.01)


def read(requests: int, errors: int) -> list:
    return [requests, errors, []]


STEP = {"orders": {"baseline": [read(100, 1), read(400, 4), read(1100, 12)], "canary": [read(0, 0), read(300, 3)]}}


def test_reference_is_carried_from_the_last_canary_step_to_bake() -> None:
    cursor = carry_cursor({"key": "r1:1", "series": STEP}, "r1:bake")
    assert cursor == {"key": "r1:bake", "series": {}, "reference": {"orders": {"requests": 1000, "errors": 11}}}
    # the same key keeps the cursor (and its bake series)
    cursor["series"] = {"orders": {"stable": [read(5, 0)]}}
    assert carry_cursor(cursor, "r1:bake") == cursor


def test_a_later_step_overrides_an_earlier_one_and_an_empty_one_keeps_it() -> None:
    after_step_0 = carry_cursor({"key": "r1:0", "series": STEP}, "r1:1")
    assert after_step_0["reference"] == {"orders": {"requests": 1000, "errors": 11}}
    later = {"orders": {"baseline": [read(1100, 12), read(1600, 22)], "canary": []},
             "catalog": {"baseline": [read(7, 0)], "canary": []}}  # one read: no totals yet
    after_step_1 = carry_cursor({**after_step_0, "series": later}, "r1:bake")
    assert after_step_1["reference"] == {"orders": {"requests": 500, "errors": 10}}


def test_no_reference_without_a_judged_step_or_from_another_release() -> None:
    assert carry_cursor(None, "r2:bake") == {"key": "r2:bake", "series": {}, "reference": {}}
    assert carry_cursor({"key": "r1:1", "series": STEP, "reference": {"orders": {"requests": 9, "errors": 0}}},
                        "r2:bake")["reference"] == {}
    # a bake series is no reference for a later key of the same release
    assert carry_cursor({"key": "r1:bake", "series": {"orders": {"stable": [read(0, 0), read(50, 5)]}}},
                        "r1:2")["reference"] == {}


def test_series_totals_count_a_reset_from_zero() -> None:
    assert series_totals([read(100, 1), read(300, 3), read(50, 2)]) == (250, 4)
    assert series_totals([read(5, 0)]) == (0, 0)


def test_decide_bake_fails_a_regressed_service_and_waits_otherwise() -> None:
    manifest = load_manifest(EXAMPLE)
    bad = [read(200, 1), read(3200, 151)]  # 5 % over 3000 requests since bake start
    good = [read(200, 1), read(3200, 16)]
    failed = decide_bake(manifest, {"orders": bad}, {}, unavailable={})
    assert failed.verdict is F and failed.reason.startswith("orders:") and "no reference" in failed.reason
    waiting = decide_bake(manifest, {"orders": good}, {"orders": {"requests": 1000, "errors": 5}},
                          unavailable={"catalog": "router down"})
    assert waiting.verdict is I and "catalog: no evidence (router down)" in waiting.reason


def histogram(samples_ms: np.ndarray) -> dict[float, float]:
    """Router buckets (le seconds -> cumulative count, inf = total) of latency samples in ms."""
    seconds = np.sort(samples_ms) / 1000
    return {**{le: float(np.searchsorted(seconds, le, "right")) for le in ROUTER_BUCKETS}, math.inf: float(seconds.size)}


def first_latency_fail(shift: float, rng, *, looks: int = 20, per_look: int = 25) -> int | None:
    """A bake stream of lognormal latencies (median 50 ms x shift, sigma 0.5) judged after every
    batch against a 3,000-sample reference of the unshifted distribution; the first FAIL's look."""
    reference = histogram(rng.lognormal(math.log(50), 0.5, 3000))
    stream = rng.lognormal(math.log(50 * shift), 0.5, looks * per_look)
    for look in range(1, looks + 1):
        verdict = judge_latency_against_reference(histogram(stream[: look * per_look]), reference, alpha=0.05)
        assert verdict.verdict is not Verdict.passed  # the bake ends by time, never by a pass
        if verdict.verdict is F:
            return look
    return None


def test_bake_latency_as_fast_as_its_reference_stays_within_alpha_over_20_looks() -> None:
    rng = np.random.default_rng(11)
    assert sum(first_latency_fail(1.0, rng) is not None for _ in range(100)) <= 5


def test_bake_latency_fails_a_1_5x_shift_and_never_one_below_the_tolerance() -> None:
    rng = np.random.default_rng(12)
    looks = [first_latency_fail(1.5, rng) for _ in range(20)]
    assert all(look is not None for look in looks) and np.median(looks) <= 4  # within 100 requests
    assert all(first_latency_fail(1.05, rng) is None for _ in range(20))  # default tolerance 1.1x


def test_bake_latency_names_what_it_saw() -> None:
    rng = np.random.default_rng(13)
    reference = histogram(rng.lognormal(math.log(50), 0.5, 3000))
    slow = judge_latency_against_reference(histogram(rng.lognormal(math.log(100), 0.5, 400)), reference)
    assert slow.verdict is F and "p50" in slow.reason and "p95" in slow.reason and "regression beyond 1.1x" in slow.reason
    assert slow.effect is not None and 1.6 < slow.effect < 2.6
    assert judge_latency_against_reference(histogram(np.array([60.0])), {math.inf: 0.0}).reason == (
        "bake latency: no reference latency to bake against")


def test_latency_and_resources_are_carried_to_bake() -> None:
    def timed(requests: int, errors: int) -> list:
        return [requests, errors, [[0.05, requests // 2], [math.inf, requests]]]
    step = {"orders": {"baseline": [timed(100, 1), timed(1100, 12)], "canary": [],
                       "resources": {"memory": [[100.0, 101.0], [180.0, 181.0]]}}}
    reference = carry_cursor({"key": "r1:1", "series": step}, "r1:bake")["reference"]["orders"]
    assert reference == {"requests": 1000, "errors": 11, "latency": [[0.05, 500.0], [math.inf, 1000.0]],
                         "resources": {"memory": [100.0, 101.0]}}


def test_decide_bake_judges_latency_and_memory_when_given() -> None:
    text = EXAMPLE.read_text().replace(
        "- {name: latency, kind: latency, direction: increase, critical: false}\n      bake_seconds",
        "- {name: latency, kind: latency, direction: increase, critical: true}\n"
        "          - {name: memory, kind: memory, direction: increase, critical: true}\n      bake_seconds")
    manifest = parse_manifest(text, str(EXAMPLE))
    reference = {"orders": {"requests": 10000, "errors": 50, "latency": [[0.05, 9000], [0.25, 10000], [math.inf, 10000]],
                            "resources": {"memory": [100.0, 102.0, 99.0]}}}
    healthy = [[0, 0, [[0.05, 0], [0.25, 0], [math.inf, 0]]], [1000, 5, [[0.05, 905], [0.25, 1000], [math.inf, 1000]]]]
    slow = [[0, 0, [[0.05, 0], [0.25, 0], [math.inf, 0]]], [1000, 5, [[0.05, 400], [0.25, 1000], [math.inf, 1000]]]]
    fine = decide_bake(manifest, {"orders": healthy}, reference, unavailable={},
                       resources={"orders": {"memory": [101.0, 100.0, 103.0]}})
    assert fine.verdict is I and {m.name for m in fine.services["orders"].metrics} == {"error_rate", "latency", "memory"}
    assert decide_bake(manifest, {"orders": slow}, reference, unavailable={}).verdict is F
    bloated = decide_bake(manifest, {"orders": healthy}, reference, unavailable={},
                          resources={"orders": {"memory": [260.0, 255.0, 262.0]}})
    assert bloated.verdict is F and "memory" in bloated.reason
