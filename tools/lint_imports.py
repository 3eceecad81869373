"""Run import-linter on the package as it is installed.

`release_pipelines.assets` and `release_pipelines.resources` live in the top-level folders
`assets/` and `resources/` (setuptools `package-dir`), which import-linter cannot see in the
source tree: this copies the package into a scratch folder with the wheel's layout and runs
`lint-imports` there with this repository's contracts (pyproject.toml).

    python -m tools.lint_imports            # exit 0 when every contract is kept
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def installed_layout(dest: Path) -> Path:
    """Copy the package into `dest` the way the wheel lays it out; return the package folder."""
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    package = dest / "release_pipelines"
    shutil.copytree(ROOT / "release_pipelines", package, ignore=ignore)
    for name, folder in config.get("package-dir", {}).items():
        shutil.copytree(ROOT / folder, dest.joinpath(*name.split(".")), ignore=ignore)
    return package


def lint_imports(source: Path) -> subprocess.CompletedProcess[str]:
    """import-linter over a copy made by `installed_layout` in `source`."""
    lint = Path(sys.executable).with_name("lint-imports")
    env = {**os.environ, "PYTHONPATH": str(source)}
    return subprocess.run([str(lint), str(ROOT / "pyproject.toml"), "--no-cache"],
                          cwd=source, env=env, capture_output=True, text=True, check=False)


def main() -> int:
    with tempfile.TemporaryDirectory(prefix="release-layers-") as scratch:
        installed_layout(Path(scratch))
        result = lint_imports(Path(scratch))
    sys.stdout.write(result.stdout)
    sys.stderr.write(result.stderr)
    return result.returncode


if __name__ == "__main__":
    sys.exit(main())
