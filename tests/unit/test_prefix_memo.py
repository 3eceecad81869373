"""The judges resume a series judged one look shorter (every sensor tick) and give exactly what a
cold judging of the whole series gives; a changed earlier look is never resumed from."""

from __future__ import annotations

import math

import numpy as np
import pytest

from release_pipelines.core import judge_errors, judge_latency
from release_pipelines.core.canary import ServiceSeries, judge_service
from release_pipelines.core.judge_latency import ROUTER_BUCKETS
from release_pipelines.core.manifest import Direction
from release_pipelines.core.prefix_memo import PrefixMemo, prefix_digests
from release_pipelines.resources.manifest_files import load_product
from tests.release_harness import ROOT


def cumulative_series(rng: np.random.Generator, points: int, requests: int, error_rate: float, scale: float):
    """A router's cumulative reads, one per tick: [requests, errors, [[le, count], ...]]."""
    out, total, errors, hist = [], 0, 0, np.zeros(len(ROUTER_BUCKETS) + 1)
    for _ in range(points):
        total += requests
        errors += int(rng.binomial(requests, error_rate))
        np.add.at(hist, np.searchsorted(ROUTER_BUCKETS, rng.lognormal(np.log(0.05 * scale), 0.5, requests)), 1)
        out.append([total, errors, [[le, int(c)] for le, c in zip([*ROUTER_BUCKETS, math.inf], np.cumsum(hist))]])
    return out


def forget() -> None:
    judge_latency._HISTOGRAM_SCORES.clear()
    judge_errors._PATHS.clear()


@pytest.mark.parametrize("scale, error_rate", [(1.0, 0.005), (1.6, 0.04)])
def test_tick_by_tick_judging_equals_cold_judging(scale: float, error_rate: float) -> None:
    manifest = load_product(ROOT / "examples" / "shop" / "release.yaml").manifest
    service = manifest.services[0].name
    rng = np.random.default_rng(7)
    baseline = cumulative_series(rng, 40, 200, 0.005, 1.0)
    canary = cumulative_series(rng, 40, 20, error_rate, scale)
    forget()
    warm = [judge_service(manifest, ServiceSeries(service, baseline[:t], canary[:t])).to_dict()
            for t in range(1, 41)]
    for t in (1, 2, 17, 40):
        forget()
        assert judge_service(manifest, ServiceSeries(service, baseline[:t], canary[:t])).to_dict() == warm[t - 1]


def test_a_changed_earlier_look_is_judged_from_the_start() -> None:
    rng = np.random.default_rng(11)
    base = rng.integers(0, 40, (30, 16)).astype(float)
    can = rng.integers(0, 6, (30, 16)).astype(float)
    forget()
    judge_latency.histogram_pair_scores(base[:29], can[:29])
    edited = can.copy()
    edited[3, 5] += 4  # a different history with the same length and the same newest look
    warm = judge_latency.histogram_pair_scores(base, edited)
    forget()
    cold = judge_latency.histogram_pair_scores(base, edited)
    assert all(np.array_equal(w, c) for w, c in zip(warm, cold))


def test_error_paths_resume_only_single_streams_with_the_same_settings() -> None:
    rng = np.random.default_rng(3)
    n = rng.integers(50, 300, 25)
    streams = (n, rng.binomial(n, 0.01), n // 10, rng.binomial(n // 10, 0.03))
    forget()
    judge_errors.ratio_test_path(*(s[:24] for s in streams), direction=Direction.increase, alpha=0.05)
    warm = judge_errors.ratio_test_path(*streams, direction=Direction.either, alpha=0.01)
    forget()
    cold = judge_errors.ratio_test_path(*streams, direction=Direction.either, alpha=0.01)
    assert all(np.array_equal(getattr(warm, f), getattr(cold, f)) for f in ("e_value", "lower", "upper", "verdict"))


def test_the_memo_keeps_the_most_recent_states_within_its_bytes() -> None:
    memo = PrefixMemo(max_bytes=100)
    looks = np.arange(12.0).reshape(4, 3)
    digests = prefix_digests(b"s", looks)
    assert len(set(digests)) == 4
    memo.keep(digests[1], "after two looks", 60)
    assert memo.resume(digests) == (2, "after two looks")
    memo.keep(digests[3], "after four looks", 60)  # over 100 bytes: the older state goes
    assert memo.resume(digests[:3]) == (0, None)
    assert memo.resume(digests) == (4, "after four looks")
    memo.keep(digests[0], "too big", 101)
    assert memo.resume(digests[:1]) == (0, None)
    assert prefix_digests(b"t", looks)[0] != digests[0]
