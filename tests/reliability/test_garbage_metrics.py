"""R9, metrics that answer garbage: a real HTTP server answers HTTP 200 with bodies that are not the
Prometheus API's (or not the router's text format), NaN / negative counts, more errors than
requests, histogram buckets that are not cumulative. Each is MetricsUnavailable naming the reason -
which the canary sensor records as no evidence (a wait), never a pass. A counter that goes down
between two scrapes (a restarted router) is a reset: the counts start again from zero."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import ClassVar
from urllib.parse import unquote_plus

import pytest
from release_pipelines.resources.metrics import MetricsUnavailable
from release_pipelines.resources.prometheus_metrics import PrometheusMetricsProvider
from release_pipelines.resources.router_metrics import RouterMetricsProvider


class Garbage:
    """What the server answers next: a body per path (the query's text picks the Prometheus answer)."""

    router: ClassVar[str] = ""
    prometheus: ClassVar[dict[str, object]] = {}


class Handler(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        if self.path.startswith("/_router/metrics"):
            body = Garbage.router
        else:
            query = unquote_plus(self.path)
            answer = next((v for k, v in Garbage.prometheus.items() if k in query), Garbage.prometheus.get("*"))
            body = answer if isinstance(answer, str) else json.dumps(answer)
        data = body.encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args) -> None:
        pass


@pytest.fixture(scope="module")
def server() -> Iterator[str]:
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_port}"
    httpd.shutdown()
    httpd.server_close()


def vector(*samples: tuple[dict, object]) -> dict:
    return {"status": "success", "data": {"resultType": "vector",
                                          "result": [{"metric": m, "value": [1.0, v]} for m, v in samples]}}


HEALTHY = {
    "5xx": vector(({}, "3")),
    "by (le)": vector(({"le": "0.1"}, "50"), ({"le": "0.5"}, "90"), ({"le": "+Inf"}, "100")),
    "*": vector(({}, "100")),
}
PROMETHEUS_GARBAGE = {
    "an HTML page": ({"*": "<html><body>Grafana</body></html>"}, "without a Prometheus API body"),
    "JSON that is not the API's": ({"*": {"ok": True, "rows": [1, 2]}}, "without a Prometheus API body"),
    "samples without values": ({"*": {"status": "success", "data": {"resultType": "vector", "result": [{"x": 1}]}}},
                               "samples that are not the API's"),
    "a NaN counter": ({**HEALTHY, "*": vector(({}, "NaN"))}, "gave 'NaN', not a count"),
    "a negative counter": ({**HEALTHY, "*": vector(({}, "-40"))}, "gave '-40', not a count"),
    "a word for a number": ({**HEALTHY, "*": vector(({}, "lots"))}, "gave 'lots', not a count"),
    "more errors than requests": ({**HEALTHY, "5xx": vector(({}, "500"))}, "more errors (500) than requests"),
    "buckets not monotone": ({**HEALTHY, "by (le)": vector(({"le": "0.1"}, "80"), ({"le": "0.5"}, "20"),
                                                      ({"le": "+Inf"}, "100"))}, "not cumulative (le=0.5 has 20"),
}


@pytest.mark.parametrize("garbage", list(PROMETHEUS_GARBAGE))
def test_prometheus_garbage_is_no_evidence_with_the_reason(server: str, garbage: str) -> None:
    Garbage.prometheus, reason = PROMETHEUS_GARBAGE[garbage]
    with pytest.raises(MetricsUnavailable, match=reason.replace("(", r"\(").replace(")", r"\)")):
        PrometheusMetricsProvider(server).snapshot("orders", "1.0.0", "1.1.0")


def test_prometheus_healthy_answer_is_read(server: str) -> None:
    Garbage.prometheus = HEALTHY
    canary = PrometheusMetricsProvider(server).snapshot("orders", "1.0.0", "1.1.0").canary
    assert (canary.requests, canary.errors, canary.latency_buckets) == (100, 3, ((0.1, 50), (0.5, 90), (float("inf"), 100)))


def router_text(requests: str, errors: str = "0", buckets: tuple[str, str, str] = ("5", "9", "10")) -> str:
    lines = ["# TYPE release_router_requests_total counter"]
    lines += [f'release_router_requests_total{{service="orders",version="{v}",role="r",code_class="2xx"}} {requests}'
              for v in ("1.0.0", "1.1.0")]
    lines += [f'release_router_requests_total{{service="orders",version="1.1.0",role="r",code_class="5xx"}} {errors}',
              "# TYPE release_router_request_duration_seconds histogram"]
    lines += [f'release_router_request_duration_seconds_bucket{{service="orders",version="1.1.0",role="r",le="{le}"}} {c}'
              for le, c in zip(("0.1", "0.5", "+Inf"), buckets, strict=True)]
    return "\n".join(lines) + "\n"


ROUTER_GARBAGE = {
    "an HTML page": ("<html><body>502 Bad Gateway</body></html>", "not Prometheus text format"),
    "JSON": ('{"status": "success"}', "not Prometheus text format"),
    "a NaN counter": (router_text("NaN"), "is nan, not a count"),
    "a negative counter": (router_text("-7"), "negative counts"),
    "buckets not monotone": (router_text("10", buckets=("9", "4", "10")), "not cumulative (le=0.5 has 4"),
}


@pytest.mark.parametrize("garbage", list(ROUTER_GARBAGE))
def test_router_garbage_is_no_evidence_with_the_reason(server: str, garbage: str) -> None:
    Garbage.router, reason = ROUTER_GARBAGE[garbage]
    with pytest.raises(MetricsUnavailable, match=reason.replace("(", r"\(").replace(")", r"\)")):
        RouterMetricsProvider(lambda _service: server).snapshot("orders", "1.0.0", "1.1.0")


def test_a_counter_that_goes_down_is_a_reset(server: str) -> None:
    """A restarted router starts its counters at zero: the counts since the last tick are the new
    ones, never a negative difference and never the old total subtracted again."""
    provider = RouterMetricsProvider(lambda _service: server)
    Garbage.router = router_text("1000", errors="10", buckets=("500", "900", "1010"))
    before = provider.snapshot("orders", "1.0.0", "1.1.0").canary
    Garbage.router = router_text("30", errors="1", buckets=("20", "28", "31"))
    after = provider.snapshot("orders", "1.0.0", "1.1.0").canary
    since = after.minus(before)
    assert (since.requests, since.errors, since.latency_buckets) == (31, 1, ((0.1, 20), (0.5, 28), (float("inf"), 31)))
