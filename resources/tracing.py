"""Optional OpenTelemetry spans per release step, with the release id as an attribute.

Off unless an exporter is configured: `OTEL_EXPORTER_OTLP_ENDPOINT` (needs the optional package
`opentelemetry-exporter-otlp-proto-http`) or `RELEASE_OTEL_CONSOLE=1` (spans printed to stderr).
Needs `opentelemetry-sdk`, which is not a dependency of this project: without it, or without an
exporter, `release_span` is a no-op and costs nothing. Tests call `configure(exporter)` directly.
"""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Iterator
from typing import Any

_state: dict[str, Any] = {"tracer": None, "configured": False}


def configure(exporter: Any | None = None) -> Any | None:
    """Set up a tracer for `exporter`, or from the environment; returns the tracer (None = off)."""
    _state["configured"] = True
    _state["tracer"] = None
    if exporter is None and not (os.environ.get("OTEL_EXPORTER_OTLP_ENDPOINT")
                                 or os.environ.get("RELEASE_OTEL_CONSOLE") == "1"):
        return None  # off: do not even import the SDK
    try:  # lazy: the OpenTelemetry SDK is optional, imported only when tracing is configured
        from opentelemetry.sdk.resources import Resource
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor, SimpleSpanProcessor
    except ImportError:
        return None
    processor: Any = None
    if exporter is not None:
        processor = SimpleSpanProcessor(exporter)
    elif os.environ.get("OTEL_EXPORTER_OTLP_ENDPOINT"):
        try:
            from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
        except ImportError:
            print("OTEL_EXPORTER_OTLP_ENDPOINT is set but opentelemetry-exporter-otlp-proto-http is not "
                  "installed: no release spans are exported", file=sys.stderr)
            return None
        processor = BatchSpanProcessor(OTLPSpanExporter())
    elif os.environ.get("RELEASE_OTEL_CONSOLE") == "1":
        from opentelemetry.sdk.trace.export import ConsoleSpanExporter

        processor = SimpleSpanProcessor(ConsoleSpanExporter(out=sys.stderr))
    if processor is None:
        return None
    provider = TracerProvider(resource=Resource.create({"service.name": os.environ.get(
        "OTEL_SERVICE_NAME", "release-pipelines")}))
    provider.add_span_processor(processor)
    _state["tracer"] = provider.get_tracer("release_pipelines")
    return _state["tracer"]


def reset() -> None:
    """Forget the configuration (the next span reads the environment again)."""
    _state.update(tracer=None, configured=False)


@contextlib.contextmanager
def release_span(name: str, release_id: str | None, **attributes: Any) -> Iterator[Any]:
    """A span named `name` with `release.id` (the correlation id); a no-op when tracing is off."""
    if not _state["configured"]:
        configure()
    tracer = _state["tracer"]
    if tracer is None:
        yield None
        return
    attrs = {f"release.{k}": str(v) for k, v in attributes.items() if v is not None}
    if release_id:
        attrs["release.id"] = release_id
    with tracer.start_as_current_span(name, attributes=attrs) as span:
        yield span
