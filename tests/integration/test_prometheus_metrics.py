"""PrometheusMetricsProvider against a real Prometheus scraping a real router every second.

The router sends 50 % of traffic to a canary that fails half its requests (examples/shop
service.py with SHOP_ERROR_RATE=0.5); the stable version fails none. What Prometheus answers must
be what the router itself reports once the last scrape has landed, and feeding those snapshots to
the canary judge, as the canary sensor does, must fail the canary.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import psutil
import pytest
from release_pipelines.resources.metrics import MetricsUnavailable
from release_pipelines.resources.prometheus_metrics import (
    PrometheusMetricsProvider,
    PromQLTemplates,
)
from release_pipelines.resources.router_metrics import RouterMetricsProvider

from release_pipelines.core.canary import (
    ServiceSeries,
    _counts,  # exactly what the sensor keeps per tick
    decide,
    judge_service,
)
from release_pipelines.core.judge import Verdict
from release_pipelines.core.manifest import Canary, Deploy, LocalDeploy, Manifest, Service
from release_pipelines.core.metrics import MetricsSnapshot
from tests.prometheus_server import Processes, PrometheusServer, free_port, wait_until

pytestmark = pytest.mark.slow

SERVICE = "catalog"
STABLE, CANARY = "1.0.0", "1.1.0-bad"
MANIFEST = Manifest(product="shop", services=[
    Service(name=SERVICE, deploy=Deploy(local=LocalDeploy(command=["{python}", "service.py"])),
            canary=Canary()),  # default analysis: error_rate (critical) + latency, rollback at deadline
])


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
    router_url: str
    prometheus: PrometheusServer
    provider: PrometheusMetricsProvider
    router: RouterMetricsProvider


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    procs = Processes(tmp_path_factory.mktemp("prometheus-metrics"))
    prometheus = None
    try:
        stable = procs.shop_backend(STABLE, error_rate=0.0)
        canary = procs.shop_backend(CANARY, error_rate=0.5)
        port, _ = procs.router(SERVICE, stable=(STABLE, stable), canary=(CANARY, canary), weight=50)
        url = f"http://127.0.0.1:{port}"
        prometheus = PrometheusServer.start([f"127.0.0.1:{port}"], metrics_path="/_router/metrics",
                                            job="routers", scrape_interval="1s")
        send(url, 20)  # so that both versions have series by the first scrape
        prometheus.wait_for_data(f'release_router_requests_total{{version="{CANARY}"}}')
        yield Stack(url, prometheus, PrometheusMetricsProvider(prometheus.url),
                    RouterMetricsProvider(lambda service: url))
    finally:
        try:
            if prometheus is not None:
                prometheus.stop()
        finally:
            procs.stop_all()


def send(url: str, requests: int) -> None:
    with httpx.Client(timeout=5) as client:
        for _ in range(requests):
            client.get(f"{url}/products")  # 500s from the bad canary are the point: no raise


def caught_up(stack: Stack, canary: str = CANARY, timeout: float = 5.0) -> MetricsSnapshot:
    """Poll Prometheus until it says what the router says (the next scrape, ~1 s); never ahead."""

    def same() -> MetricsSnapshot | None:
        truth = stack.router.snapshot(SERVICE, STABLE, canary)
        seen = stack.provider.snapshot(SERVICE, STABLE, canary)
        for mine, theirs in ((seen.stable, truth.stable), (seen.canary, truth.canary)):
            if mine is not None and theirs is not None:
                assert mine.requests <= theirs.requests and mine.errors <= theirs.errors
        return seen if seen == truth else None

    return wait_until(same, timeout=timeout, what="Prometheus to catch up with the router",
                      interval=0.2)  # type: ignore[return-value]


def test_snapshot_matches_what_the_router_reports(stack: Stack) -> None:
    send(stack.router_url, 200)
    snap = caught_up(stack)
    assert snap.service == SERVICE
    for metrics, version in ((snap.stable, STABLE), (snap.canary, CANARY)):
        assert metrics is not None and metrics.version == version
        assert metrics.requests > 50  # 50 % weight: both versions get traffic
        buckets = dict(metrics.latency_buckets)
        assert buckets[math.inf] == metrics.requests and len(buckets) == 16  # the router's 15 + Inf
    assert snap.stable.errors == 0
    assert 0.3 < snap.canary.errors / snap.canary.requests < 0.7  # the 5xx answers, as errors


def test_a_version_without_series_is_no_evidence_not_zero(stack: Stack) -> None:
    snap = stack.provider.snapshot(SERVICE, STABLE, "9.9.9")
    assert snap.stable is not None and snap.canary is None
    nothing = stack.provider.snapshot("no-such-service", STABLE, CANARY)
    assert nothing.stable is None and nothing.canary is None
    assert stack.provider.snapshot(SERVICE, "", CANARY).stable is None  # no stable version yet


def test_a_prometheus_that_is_down_is_unavailable_naming_the_url() -> None:
    url = f"http://127.0.0.1:{free_port()}"
    provider = PrometheusMetricsProvider(url, timeout=1.0)
    with pytest.raises(MetricsUnavailable, match=f"Prometheus at {url}/api/v1/query did not answer"):
        provider.snapshot(SERVICE, STABLE, CANARY)


def test_something_that_is_not_prometheus_is_unavailable(stack: Stack) -> None:
    provider = PrometheusMetricsProvider(stack.router_url, timeout=2.0)  # the router, not Prometheus
    with pytest.raises(MetricsUnavailable, match="without a Prometheus API body"):
        provider.snapshot(SERVICE, STABLE, CANARY)


def test_a_broken_template_is_unavailable_with_prometheus_own_error(stack: Stack) -> None:
    provider = PrometheusMetricsProvider(stack.prometheus.url, PromQLTemplates(requests="sum(oops{"))
    with pytest.raises(MetricsUnavailable, match=r"refused the query 'sum\(oops\{': bad_data"):
        provider.snapshot(SERVICE, STABLE, CANARY)


def test_templates_use_plain_promql_braces_and_a_window(stack: Stack) -> None:
    # max over the window of a counter is its latest value: same number, but a range query
    templates = PromQLTemplates(
        requests='sum(max_over_time(release_router_requests_total{service="{service}",version="{version}"}[{window}]))',
        window="1m",
    )
    provider = PrometheusMetricsProvider(stack.prometheus.url, templates)
    assert 'version="1.0.0"}[1m]' in provider.render(templates.requests, SERVICE, STABLE)
    assert provider.render('x{v="{version}"}', SERVICE, 'a"b') == 'x{v="a\\"b"}'
    truth = caught_up(stack)
    assert provider.version_metrics(SERVICE, STABLE).requests == truth.stable.requests


def test_a_bad_canary_fails_through_the_prometheus_path(stack: Stack) -> None:
    baseline, canary, decisions = [], [], []
    for _ in range(8):
        snap = caught_up(stack)  # one sensor tick: read what Prometheus has now
        baseline.append(_counts(snap.stable))
        canary.append(_counts(snap.canary))
        decision = decide(MANIFEST, [ServiceSeries(SERVICE, baseline, canary)], elapsed_seconds=10,
                          unavailable={})
        decisions.append(decision.verdict)
        if decision.verdict is Verdict.failed:
            break
        send(stack.router_url, 100)
    assert decisions[-1] is Verdict.failed, decision.reason
    assert decisions[0] is Verdict.inconclusive  # one read is a starting point, not evidence
    assert decision.decided_by == "evidence"
    assert decision.reason.startswith(f"{SERVICE}: failed: error_rate")


def test_no_data_through_the_prometheus_path_is_inconclusive(stack: Stack) -> None:
    baseline, canary = [], []
    for _ in range(3):  # a canary version Prometheus has never seen: None, recorded as no counts
        snap = stack.provider.snapshot(SERVICE, STABLE, "9.9.9")
        assert snap.canary is None
        baseline.append(_counts(snap.stable))
        canary.append(_counts(snap.canary))
    verdict = judge_service(MANIFEST, ServiceSeries(SERVICE, baseline, canary))
    assert verdict.verdict is Verdict.inconclusive
    assert "no requests yet (0 canary" in verdict.metrics[0].reason

    down = f"http://127.0.0.1:{free_port()}"
    with pytest.raises(MetricsUnavailable) as unavailable:
        PrometheusMetricsProvider(down, timeout=1.0).snapshot(SERVICE, STABLE, CANARY)
    why = str(unavailable.value)
    decision = decide(MANIFEST, [], elapsed_seconds=10, unavailable={SERVICE: why})
    assert decision.verdict is Verdict.inconclusive and down in decision.reason
    late = decide(MANIFEST, [], elapsed_seconds=10_000, unavailable={SERVICE: why})
    assert (late.verdict, late.decided_by) == (Verdict.failed, "deadline")  # on_deadline=rollback


def test_prometheus_data_lives_in_a_temporary_directory(stack: Stack) -> None:
    assert Path(stack.prometheus.workdir, "data").is_dir()
    assert stack.prometheus.proc.poll() is None
