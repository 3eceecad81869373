"""RouterMetricsProvider against a real router in front of two real shop backends, and the parser."""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import psutil
import pytest
from prometheus_client.parser import text_string_to_metric_families

from release_pipelines.core.metrics import VersionMetrics
from release_pipelines.resources.metrics import MetricsUnavailable
from release_pipelines.resources.router_metrics import RouterMetricsProvider, parse_router_metrics
from tests.prometheus_server import Processes, free_port, stop

SERVICE = "catalog"
STABLE, CANARY = "1.0.0", "1.1.0"


def _descendants() -> set[int]:
    return {p.pid for p in psutil.Process().children(recursive=True) if p.status() != psutil.STATUS_ZOMBIE}


@pytest.fixture(autouse=True, scope="module")
def no_orphans() -> Iterator[None]:
    before = _descendants()
    yield
    left = _descendants() - before
    assert not left, f"orphan processes left behind: {[psutil.Process(p).cmdline() for p in left]}"


@dataclass
class Stack:
    url: str
    procs: Processes


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    procs = Processes(tmp_path_factory.mktemp("router-metrics"))
    try:
        stable = procs.shop_backend(STABLE, error_rate=0.0)
        canary = procs.shop_backend(CANARY, error_rate=0.3)
        port, _ = procs.router(SERVICE, stable=(STABLE, stable), canary=(CANARY, canary), weight=50)
        yield Stack(f"http://127.0.0.1:{port}", procs)
    finally:
        procs.stop_all()


def send(url: str, requests: int) -> tuple[Counter, Counter]:
    """GET /products `requests` times; (answers, 5xx answers) per version as the client saw them."""
    seen, failed = Counter(), Counter()
    with httpx.Client(timeout=5) as client:
        for _ in range(requests):
            response = client.get(f"{url}/products")
            version = response.headers["X-Release-Version"]
            seen[version] += 1
            failed[version] += response.status_code >= 500
    return seen, failed


def test_counts_per_version_match_what_clients_saw(stack: Stack) -> None:
    provider = RouterMetricsProvider(lambda service: stack.url)
    before = provider.snapshot(SERVICE, STABLE, CANARY)
    seen, failed = send(stack.url, 300)
    after = provider.snapshot(SERVICE, STABLE, CANARY)

    assert after.service == SERVICE
    for version, now, then in ((STABLE, after.stable, before.stable), (CANARY, after.canary, before.canary)):
        assert now is not None and now.version == version
        delta = now.minus(then)
        assert delta.requests == seen[version]
        assert delta.errors == failed[version]
        buckets = dict(delta.latency_buckets)
        assert buckets[math.inf] == delta.requests  # +Inf bucket is the count
        counts = [c for _, c in delta.latency_buckets]
        assert counts == sorted(counts), "cumulative buckets must not decrease"
    # 50 % weight: both sides get traffic; 5xx are counted as errors, only on the bad canary
    assert seen[STABLE] > 50 and seen[CANARY] > 50
    assert failed[STABLE] == 0 and failed[CANARY] > 0


def test_the_strict_parser_reads_a_live_router_as_prometheus_client_does(stack: Stack) -> None:
    """The router's own exposition (HELP, TYPE, _created, _sum, both cohorts' families), scraped
    over HTTP, reads the same through the strict parser as through prometheus_client's."""
    send(stack.url, 40)
    text = httpx.get(f"{stack.url}/_router/metrics", timeout=5).text
    for cohort, prefix in ((None, "release_router_"), ("general", "release_router_cohort_")):
        requests, errors, buckets = Counter(), Counter(), {}
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                version = sample.labels.get("version")
                if version is None or (cohort and sample.labels.get("cohort") != cohort):
                    continue
                if sample.name == f"{prefix}requests_total":
                    requests[version] += int(sample.value)
                    errors[version] += int(sample.value) * (sample.labels["code_class"] == "5xx")
                elif sample.name == f"{prefix}request_duration_seconds_bucket":
                    buckets.setdefault(version, []).append((float(sample.labels["le"]), int(sample.value)))
        expected = {v: VersionMetrics(v, requests[v], errors[v], tuple(sorted(buckets[v]))) for v in requests}
        assert parse_router_metrics(text, cohort) == expected
        assert set(expected) == {STABLE, CANARY} and expected[CANARY].errors > 0


def test_a_version_without_traffic_has_no_metrics(stack: Stack) -> None:
    send(stack.url, 5)
    snap = RouterMetricsProvider(lambda service: stack.url).snapshot(SERVICE, STABLE, "9.9.9")
    assert snap.stable is not None and snap.canary is None  # no evidence, not zeros


def test_a_router_that_is_down_is_unavailable_naming_the_url(tmp_path: Path) -> None:
    procs = Processes(tmp_path)
    try:
        port, proc = procs.router("orders", stable=None, canary=None, weight=0)
        url = f"http://127.0.0.1:{port}"
        provider = RouterMetricsProvider(lambda service: url)
        assert provider.snapshot("orders", STABLE, CANARY).stable is None  # up, but no series yet
        stop(proc)
        with pytest.raises(MetricsUnavailable, match=f"orders: router metrics at {url}/_router/metrics"):
            provider.snapshot("orders", STABLE, CANARY)
    finally:
        procs.stop_all()


def test_no_router_at_all_is_unavailable() -> None:
    with pytest.raises(MetricsUnavailable, match="no router is running"):
        RouterMetricsProvider(lambda service: None).snapshot(SERVICE, STABLE, CANARY)
    url = f"http://127.0.0.1:{free_port()}"
    with pytest.raises(MetricsUnavailable, match=url):
        RouterMetricsProvider(lambda service: url, timeout=0.5).snapshot(SERVICE, STABLE, CANARY)


# ------------------------------------------------------------------------ parse_router_metrics

SCRAPE = """\
# HELP release_router_requests_total Requests answered, by backend version and status class
# TYPE release_router_requests_total counter
release_router_requests_total{code_class="2xx",role="stable",service="catalog",version="1.0.0"} 90.0
release_router_requests_total{code_class="5xx",role="stable",service="catalog",version="1.0.0"} 2.0
release_router_requests_total{code_class="4xx",role="stable",service="catalog",version="1.0.0"} 8.0
release_router_requests_total{code_class="2xx",role="canary",service="catalog",version="1.1.0"} 7.0
# HELP release_router_requests_created Requests answered
# TYPE release_router_requests_created gauge
release_router_requests_created{code_class="2xx",role="stable",service="catalog",version="1.0.0"} 1.7e+09
# HELP release_router_request_duration_seconds Time to answer, by backend version
# TYPE release_router_request_duration_seconds histogram
release_router_request_duration_seconds_bucket{le="0.005",role="stable",service="catalog",version="1.0.0"} 60.0
release_router_request_duration_seconds_bucket{le="0.1",role="stable",service="catalog",version="1.0.0"} 95.0
release_router_request_duration_seconds_bucket{le="+Inf",role="stable",service="catalog",version="1.0.0"} 100.0
release_router_request_duration_seconds_count{role="stable",service="catalog",version="1.0.0"} 100.0
release_router_request_duration_seconds_sum{role="stable",service="catalog",version="1.0.0"} 1.5
release_router_request_duration_seconds_bucket{le="0.005",role="canary",service="catalog",version="1.1.0"} 7.0
release_router_request_duration_seconds_bucket{le="0.1",role="canary",service="catalog",version="1.1.0"} 7.0
release_router_request_duration_seconds_bucket{le="+Inf",role="canary",service="catalog",version="1.1.0"} 7.0
# HELP process_cpu_seconds_total CPU
# TYPE process_cpu_seconds_total counter
process_cpu_seconds_total 3.0
"""


def test_parse_sums_code_classes_and_counts_only_5xx_as_errors() -> None:
    parsed = parse_router_metrics(SCRAPE)
    assert set(parsed) == {"1.0.0", "1.1.0"}  # unlabelled families are ignored
    assert parsed["1.0.0"] == VersionMetrics("1.0.0", 100, 2, ((0.005, 60), (0.1, 95), (math.inf, 100)))
    assert parsed["1.1.0"] == VersionMetrics("1.1.0", 7, 0, ((0.005, 7), (0.1, 7), (math.inf, 7)))


def test_parse_adds_up_a_version_served_in_two_roles() -> None:
    """After a promotion the same version has been counted as canary and then as stable."""
    parsed = parse_router_metrics(
        "# TYPE release_router_requests_total counter\n"
        'release_router_requests_total{code_class="2xx",role="canary",service="catalog",version="1.1.0"} 7.0\n'
        'release_router_requests_total{code_class="5xx",role="stable",service="catalog",version="1.1.0"} 3.0\n'
    )
    assert (parsed["1.1.0"].requests, parsed["1.1.0"].errors) == (10, 3)


def test_an_empty_scrape_has_no_versions() -> None:
    assert parse_router_metrics("") == {}


@pytest.mark.parametrize(
    ("earlier", "later", "expected"),
    [
        pytest.param(None, VersionMetrics("v", 10, 1, ((0.1, 8), (math.inf, 10))),
                     VersionMetrics("v", 10, 1, ((0.1, 8), (math.inf, 10))), id="first-read"),
        pytest.param(VersionMetrics("v", 10, 1, ((0.1, 8), (math.inf, 10))),
                     VersionMetrics("v", 25, 4, ((0.1, 20), (math.inf, 25))),
                     VersionMetrics("v", 15, 3, ((0.1, 12), (math.inf, 15))), id="growth"),
        pytest.param(VersionMetrics("v", 500, 40, ((0.1, 450), (math.inf, 500))),
                     VersionMetrics("v", 12, 1, ((0.1, 11), (math.inf, 12))),
                     VersionMetrics("v", 12, 1, ((0.1, 11), (math.inf, 12))), id="router-restarted"),
        pytest.param(VersionMetrics("v", 10, 0, ((0.1, 10), (math.inf, 10))),
                     VersionMetrics("v", 10, 0, ((0.1, 10), (math.inf, 10))),
                     VersionMetrics("v", 0, 0, ((0.1, 0), (math.inf, 0))), id="no-new-traffic"),
    ],
)
def test_minus_gives_counts_since_the_earlier_read_and_handles_a_reset(earlier, later, expected) -> None:
    delta = later.minus(earlier)
    assert delta == expected
    assert delta.requests >= 0 and delta.errors >= 0 and all(c >= 0 for _, c in delta.latency_buckets)


def test_minus_after_a_reset_parsed_from_two_real_scrapes() -> None:
    before = parse_router_metrics(SCRAPE)["1.0.0"]
    restarted = parse_router_metrics(
        '# TYPE release_router_requests_total counter\n'
        'release_router_requests_total{code_class="5xx",role="stable",service="catalog",version="1.0.0"} 1.0\n'
        'release_router_requests_total{code_class="2xx",role="stable",service="catalog",version="1.0.0"} 4.0\n'
    )["1.0.0"]
    assert restarted.minus(before) == VersionMetrics("1.0.0", 5, 1, ())
