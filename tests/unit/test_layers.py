"""The layers of ARCHITECTURE.md hold: `lint-imports` keeps every contract, a wrong import makes it
fail, and the pure core imports no I/O library."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
IO_LIBRARIES = ["dagster", "sqlalchemy", "alembic", "httpx", "psycopg2", "requests", "great_expectations"]


def lint_imports(source: Path) -> subprocess.CompletedProcess[str]:
    """`lint-imports` with this repository's contracts on the `release_pipelines` folder in `source`."""
    lint = Path(sys.executable).with_name("lint-imports")
    return subprocess.run([str(lint), str(ROOT / "pyproject.toml"), "--no-cache"], cwd=source,
                          env={**os.environ, "PYTHONPATH": str(source)}, capture_output=True, text=True,
                          check=False)


def test_import_contracts_are_kept() -> None:
    result = lint_imports(ROOT)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Contracts: 4 kept, 0 broken." in result.stdout


def test_a_wrong_import_breaks_the_contracts(tmp_path: Path) -> None:
    """The check can fail: the core importing the CLI, and a resource importing Dagster glue."""
    package = tmp_path / "release_pipelines"  # a scratch copy; the links to assets/, resources/ followed
    shutil.copytree(ROOT / "release_pipelines", package, ignore=shutil.ignore_patterns("__pycache__"))
    with (package / "core" / "states.py").open("a") as states:
        states.write("\nimport release_pipelines.cli.common  # deliberately wrong\n")
    with (package / "resources" / "ledger.py").open("a") as ledger:
        ledger.write("\nimport release_pipelines.orchestration.jobs.common  # deliberately wrong\n")
    result = lint_imports(tmp_path)
    report = " ".join(result.stdout.split())  # import-linter wraps long lines
    assert result.returncode != 0
    assert "layers BROKEN" in report.replace("> core BROKEN", "layers BROKEN")
    assert "no import cycles between sibling modules or packages BROKEN" in report
    assert "release_pipelines.core.states -> release_pipelines.cli.common" in report
    assert "release_pipelines.resources.ledger -> release_pipelines.orchestration.jobs.common" in report
    assert "release_pipelines.core is not allowed to import dagster" in report  # through the CLI


def test_core_modules_import_no_io_library() -> None:
    """Every core module in a fresh interpreter: none of the I/O libraries gets imported."""
    modules = sorted(f"release_pipelines.core.{p.stem}" for p in (ROOT / "release_pipelines" / "core").glob("*.py"))
    code = (
        "import importlib, json, sys\n"
        f"for name in {modules!r}: importlib.import_module(name)\n"
        f"print(json.dumps(sorted({{m.split('.')[0] for m in sys.modules}} & set({IO_LIBRARIES!r}))))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    assert len(modules) > 15
    assert json.loads(out.stdout) == []


def test_the_cards_folders_are_the_packages() -> None:
    """`release_pipelines.assets` / `.resources` are the top-level folders the product card names."""
    for name in ("assets", "resources"):
        assert (ROOT / "release_pipelines" / name).resolve() == ROOT / name
