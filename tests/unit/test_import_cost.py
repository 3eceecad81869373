"""Loading definitions must stay cheap: Great Expectations (~3 s, ~240 MB) is imported lazily."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_asset_modules_do_not_import_great_expectations() -> None:
    code = (
        "import sys, release_pipelines.assets.tables, release_pipelines.assets.checks, release_pipelines.assets.gates, release_pipelines.assets.great_expectations\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] == 'great_expectations'))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True
    )
    assert out.stdout.strip() == "[]"
