"""The strict parser of the router's exposition (`resources.router_metrics.parse_router_metrics`):
what the router writes is read exactly as prometheus_client's general parser reads it, and
anything else - malformed lines, NaN, negative or impossible counts, buckets that are not
cumulative, a family declared as the wrong type, a repeated series - is MetricsUnavailable naming
the reason (no evidence, never a pass)."""

from __future__ import annotations

import math
import re
from collections import defaultdict

import pytest
from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from release_pipelines.core.metrics import VersionMetrics
from release_pipelines.resources.metrics import MetricsUnavailable
from release_pipelines.resources.router import BUCKETS
from release_pipelines.resources.router_metrics import parse_router_metrics


def router_exposition() -> str:
    """What a router with a stable, a canary and tenant traffic serves: its own metrics (the same
    names, labels and buckets as `resources.router.create_app`) through prometheus_client."""
    registry = CollectorRegistry()
    requests = Counter("release_router_requests_total", "Requests", ["service", "version", "role", "code_class"],
                       registry=registry)
    duration = Histogram("release_router_request_duration_seconds", "Time", ["service", "version", "role"],
                         buckets=BUCKETS, registry=registry)
    cohort_requests = Counter("release_router_cohort_requests_total", "Requests by cohort",
                              ["service", "version", "role", "cohort", "code_class"], registry=registry)
    cohort_duration = Histogram("release_router_cohort_request_duration_seconds", "Time by cohort",
                                ["service", "version", "role", "cohort"], buckets=BUCKETS, registry=registry)
    for i in range(300):
        version, role = ("1.1.0", "canary") if i % 4 == 0 else ("1.0.0", "stable")
        cohort = "tenant" if role == "canary" and i % 8 == 0 else "general"
        code_class = "5xx" if i % 37 == 0 else ("4xx" if i % 11 == 0 else "2xx")
        latency = (i % 50) / 100
        requests.labels("orders", version, role, code_class).inc()
        duration.labels("orders", version, role).observe(latency)
        cohort_requests.labels("orders", version, role, cohort, code_class).inc()
        cohort_duration.labels("orders", version, role, cohort).observe(latency)
    return generate_latest(registry).decode()


def read_with_prometheus_client(text: str, cohort: str | None = None) -> dict[str, VersionMetrics]:
    """The reference: the same reading through prometheus_client's general parser."""
    prefix = "release_router_" if cohort is None else "release_router_cohort_"
    requests, errors, buckets = defaultdict(int), defaultdict(int), defaultdict(dict)
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            version = sample.labels.get("version")
            if version is None or (cohort is not None and sample.labels.get("cohort") != cohort):
                continue
            if sample.name == f"{prefix}requests_total":
                requests[version] += int(sample.value)
                errors[version] += int(sample.value) if sample.labels["code_class"] == "5xx" else 0
            elif sample.name == f"{prefix}request_duration_seconds_bucket":
                buckets[version][float(sample.labels["le"])] = int(sample.value)
    return {v: VersionMetrics(v, requests[v], errors[v], tuple(sorted(buckets[v].items()))) for v in requests}


@pytest.mark.parametrize("cohort", [None, "general", "tenant"])
def test_reads_the_routers_exposition_as_prometheus_client_does(cohort: str | None) -> None:
    text = router_exposition()
    parsed = parse_router_metrics(text, cohort)
    assert parsed == read_with_prometheus_client(text, cohort)
    assert parsed  # every cohort has traffic here
    for metrics in parsed.values():
        assert metrics.latency_buckets[-1] == (math.inf, metrics.requests)
        assert len(metrics.latency_buckets) == len(BUCKETS) + 1


def test_comments_blank_lines_timestamps_and_other_families_are_accepted() -> None:
    text = (
        "# a free comment\n"
        "\n"
        "# HELP release_router_requests_total Requests\n"
        "# TYPE release_router_requests_total counter\n"
        'release_router_requests_total{version="1.0.0",code_class="2xx",} 10 1700000000000\n'
        'release_router_requests_total{version="1.0.0",code_class="5xx"} 1.5e1\n'
        "process_cpu_seconds_total 3.2\n"
        'http_requests_total{path="/a b"} +Inf\n'
        "  \n"
    )
    assert parse_router_metrics(text) == {"1.0.0": VersionMetrics("1.0.0", 25, 15, ())}


def test_an_escaped_label_value_is_unescaped() -> None:
    text = 'release_router_requests_total{version="1.0\\"beta\\\\2",code_class="2xx"} 4\n'
    assert set(parse_router_metrics(text)) == {'1.0"beta\\2'}


def test_samples_without_a_version_and_other_cohorts_are_not_counted() -> None:
    text = ('release_router_cohort_requests_total{code_class="2xx",cohort="tenant",version="1.1.0"} 5\n'
            'release_router_cohort_requests_total{code_class="2xx",cohort="general",version="1.1.0"} 7\n'
            'release_router_cohort_requests_total{code_class="2xx",cohort="general"} 100\n')
    assert parse_router_metrics(text, "general") == {"1.1.0": VersionMetrics("1.1.0", 7, 0, ())}
    assert parse_router_metrics(text) == {}  # the plain families are absent: no evidence, not zeros


GOOD = 'release_router_requests_total{code_class="2xx",version="1.0.0"} 10\n'
BUCKET = 'release_router_request_duration_seconds_bucket{{le="{le}",version="1.0.0"}} {count}\n'

GARBAGE = {
    "an HTML page": ("<html><body>502 Bad Gateway</body></html>", "not Prometheus text format (line 1"),
    "JSON": ('{"status": "success", "data": []}', "not Prometheus text format (line 1"),
    "a sample without a value": (GOOD + 'release_router_requests_total{version="1.1.0"}\n', "(line 2"),
    "an unclosed label set": (GOOD + 'release_router_requests_total{version="1.1.0" 3\n', "(line 2"),
    "an unquoted label value": (GOOD + "release_router_requests_total{version=1.1.0} 3\n", "(line 2"),
    "a word for a number": (GOOD + 'release_router_requests_total{version="1.1.0"} lots\n', "(line 2"),
    "a number with an underscore": (GOOD + 'release_router_requests_total{version="1.1.0"} 1_000\n', "(line 2"),
    "trailing text": (GOOD + 'release_router_requests_total{version="1.1.0"} 3 4 5\n', "(line 2"),
    "a malformed line of another family": (GOOD + "node_load1{cpu=} 0.5\n", "(line 2"),
    "binary junk": ("\x00\x01\x02\xff", "not Prometheus text format"),
    "a NaN counter": ('release_router_requests_total{code_class="2xx",version="1.0.0"} NaN\n', "is nan, not a count"),
    "an infinite counter": ('release_router_requests_total{code_class="2xx",version="1.0.0"} +Inf\n',
                            "is inf, not a count"),
    "a NaN bucket": (GOOD + BUCKET.format(le="0.1", count="NaN"), "is nan, not a count"),
    "a negative counter": ('release_router_requests_total{code_class="2xx",version="1.0.0"} -7\n', "negative counts"),
    "a negative count beside errors": (('release_router_requests_total{code_class="5xx",version="1.0.0"} 3\n'
                                       'release_router_requests_total{code_class="2xx",version="1.0.0"} -5\n'),
                                       "negative counts (requests -2, errors 3)"),
    "buckets not monotone": (GOOD + BUCKET.format(le="0.1", count=9) + BUCKET.format(le="0.5", count=4)
                             + BUCKET.format(le="+Inf", count=10), "not cumulative (le=0.5 has 4, le=0.1 below it has 9)"),
    "a bucket without le": (GOOD + 'release_router_request_duration_seconds_bucket{version="1.0.0"} 3\n',
                            "has no numeric le"),
    "a bucket with a word for le": (GOOD + BUCKET.format(le="soon", count=3), "has no numeric le"),
    "a NaN le": (GOOD + BUCKET.format(le="NaN", count=3), "has no numeric le"),
    "requests declared a gauge": ("# TYPE release_router_requests_total gauge\n" + GOOD,
                                  "line 1: release_router_requests_total is declared a gauge, not a counter"),
    "latency declared a summary": ("# TYPE release_router_request_duration_seconds summary\n" + GOOD,
                                   "declared a summary, not a histogram"),
    "a series twice": (GOOD + GOOD, "line 2: release_router_requests_total{code_class=\"2xx\",version=\"1.0.0\"} appears twice"),
}


@pytest.mark.parametrize("garbage", list(GARBAGE))
def test_garbage_is_no_evidence_with_the_reason(garbage: str) -> None:
    text, reason = GARBAGE[garbage]
    with pytest.raises(MetricsUnavailable, match="^http://router/_router/metrics: .*" + re.escape(reason)):
        parse_router_metrics(text, source="http://router/_router/metrics")


def test_a_decreasing_counter_between_scrapes_is_a_reset() -> None:
    """A restarted router counts from zero again: the later, smaller scrape is the new counts."""
    before = parse_router_metrics(GOOD.replace(" 10", " 500") + BUCKET.format(le="+Inf", count=500))["1.0.0"]
    after = parse_router_metrics(GOOD.replace(" 10", " 12") + BUCKET.format(le="+Inf", count=12))["1.0.0"]
    assert after.minus(before) == VersionMetrics("1.0.0", 12, 0, ((math.inf, 12),))

