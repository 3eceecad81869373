"""The layers of ARCHITECTURE.md hold: import-linter's contracts pass on the package as installed,
a wrong import makes them fail, and the pure core imports no I/O library."""

from __future__ import annotations

import json
import subprocess
import sys
import tomllib
from pathlib import Path

from tools.lint_imports import installed_layout, lint_imports

ROOT = Path(__file__).resolve().parents[2]
IO_LIBRARIES = ["dagster", "sqlalchemy", "alembic", "httpx", "psycopg2", "requests", "great_expectations"]


def test_import_contracts_are_kept(tmp_path: Path) -> None:
    installed_layout(tmp_path)
    result = lint_imports(tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Contracts: 4 kept, 0 broken." in result.stdout


def test_a_wrong_import_breaks_the_contracts(tmp_path: Path) -> None:
    """The check can fail: the core importing the CLI, and a resource importing Dagster glue."""
    package = installed_layout(tmp_path)
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


def test_every_package_folder_is_listed_for_the_wheel() -> None:
    """pyproject's explicit package list matches the folders (a new subpackage must be added)."""
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    folders = {"release_pipelines": ROOT / "release_pipelines"} | {
        name: ROOT / folder for name, folder in config["package-dir"].items()}
    found = set()
    for name, folder in folders.items():
        for init in folder.rglob("__init__.py"):
            relative = init.parent.relative_to(folder).parts
            found.add(".".join((name, *relative)))
    assert found == set(config["packages"])
