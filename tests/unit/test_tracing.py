"""Optional release spans: off by default, one span per step with the release id when configured."""

from __future__ import annotations

import pytest
from dagster import Failure
from release_pipelines.resources import tracing

from release_pipelines.core.errors import ReleaseError
from release_pipelines.orchestration.jobs.common import failing_clearly

pytest.importorskip("opentelemetry.sdk.trace")


@pytest.fixture(autouse=True)
def fresh(monkeypatch):
    monkeypatch.delenv("OTEL_EXPORTER_OTLP_ENDPOINT", raising=False)
    monkeypatch.delenv("RELEASE_OTEL_CONSOLE", raising=False)
    tracing.reset()
    yield
    tracing.reset()


def test_no_exporter_means_no_spans() -> None:
    with tracing.release_span("deploy orders", "shop-1") as span:
        assert span is None


def test_each_step_is_a_span_carrying_the_release_id() -> None:
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    exporter = InMemorySpanExporter()
    tracing.configure(exporter)

    class Ctx:
        release_id = "shop-20261126-1"
        product = type("P", (), {"name": "shop"})()

        def __init__(self) -> None:
            self.recorded: list = []

        def record(self, kind, **payload):
            self.recorded.append((kind, payload))

    ctx = Ctx()
    with failing_clearly(ctx, "deploy orders 1.1.0"):
        pass
    with pytest.raises(Failure), failing_clearly(ctx, "first traffic step"):
        raise ReleaseError("router down")
    spans = exporter.get_finished_spans()
    assert [s.name for s in spans] == ["deploy orders 1.1.0", "first traffic step"]
    assert {s.attributes["release.id"] for s in spans} == {"shop-20261126-1"}
    assert spans[0].attributes["release.product"] == "shop"
    assert not spans[1].status.is_ok  # the failing step's span records the error
    assert ctx.recorded[0][0] == "step:failed"


def test_console_exporter_from_the_environment(monkeypatch, capsys) -> None:
    monkeypatch.setenv("RELEASE_OTEL_CONSOLE", "1")
    with tracing.release_span("gates on shop_db", "shop-2"):
        pass
    assert '"release.id": "shop-2"' in capsys.readouterr().err
