"""Loading definitions must stay cheap: Great Expectations (~3 s, ~240 MB) and the optional
clients are imported lazily."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_loading_the_code_location_imports_no_heavy_optional_library(tmp_path: Path) -> None:
    """Definitions load (and so every sensor tick's code server) without Great Expectations, the
    OpenLineage client or the OpenTelemetry SDK: those load only when a suite runs or when
    lineage / tracing is configured."""
    code = (
        "import sys, release_pipelines.code_location\n"
        "print(sorted({m.split('.')[0] for m in sys.modules} & {'great_expectations', 'openlineage', 'opentelemetry'}))"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OPENLINEAGE", "OTEL_"))}
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True,
                         env=env | {"RELEASE_HOME": str(tmp_path)})
    assert out.stdout.strip() == "[]"
