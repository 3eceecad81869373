"""Bake: the one-sample rule against the reference (judge_errors.judge_against_reference), the
cursor's reference carry-over (canary.carry_cursor) and the bake decision (canary.decide_bake)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from release_pipelines.resources.manifest_files import load_manifest

from release_pipelines.core.canary import carry_cursor, decide_bake, series_totals
from release_pipelines.core.judge import Verdict
from release_pipelines.core.judge_errors import judge_against_reference

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
