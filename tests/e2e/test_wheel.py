"""The built wheel installs beside anything: one top-level package, and a project or another
distribution with its own `assets` and `resources` packages neither breaks nor is broken by it.

Real wheels, a real fresh virtual environment; the dependencies (Dagster, ...) come from the
project's environment through a path entry, so no download is needed.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import textwrap
import zipfile
from pathlib import Path

import pytest

from tests.e2e_support import build_wheel, fresh_venv

pytestmark = pytest.mark.slow  # a minute or more in all: the longer time limit (tests/conftest.py)

ROOT = Path(__file__).resolve().parents[2]


def run(*args: str | Path, cwd: Path | None = None, env: dict[str, str] | None = None) -> str:
    result = subprocess.run([str(a) for a in args], cwd=cwd, env=env, capture_output=True, text=True, check=False)
    assert result.returncode == 0, f"{args}\n{result.stdout}\n{result.stderr}"
    return result.stdout


@pytest.fixture(scope="module")
def wheels(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    out = tmp_path_factory.mktemp("wheels")
    ours = build_wheel(out, tmp_path_factory.mktemp("ours"))
    other = tmp_path_factory.mktemp("other-dist")
    (other / "pyproject.toml").write_text(textwrap.dedent("""\
        [build-system]
        requires = ["setuptools>=68"]
        build-backend = "setuptools.build_meta"
        [project]
        name = "someone-elses-assets"
        version = "1.0"
        [tool.setuptools]
        packages = ["assets", "resources"]
    """))
    for name in ("assets", "resources"):
        (other / name).mkdir()
        (other / name / "__init__.py").write_text(f"OWNER = 'someone else'  # {name}\n")
    (other / "assets" / "checks.py").write_text("WHOSE = 'theirs'\n")
    run(sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", out, other)
    theirs = next(out.glob("someone_elses_assets-*.whl"))
    return {"ours": ours, "theirs": theirs}


def test_the_wheel_has_one_top_level_package(wheels: dict[str, Path]) -> None:
    with zipfile.ZipFile(wheels["ours"]) as wheel:
        names = wheel.namelist()
        top_level = next(n for n in names if n.endswith(".dist-info/top_level.txt"))
        assert wheel.read(top_level).decode().split() == ["release_pipelines"]
    roots = {n.split("/")[0] for n in names if not n.split("/")[0].endswith(".dist-info")}
    assert roots == {"release_pipelines"}
    assert "release_pipelines/assets/expectations/orders.json" in names  # package data kept
    assert "release_pipelines/resources/ledger_migrations/script.py.mako" in names
    assert not any(n.startswith(("tests/", "benchmarks/", "examples/")) for n in names)


def test_installs_beside_a_distribution_and_a_project_with_their_own_assets(
        wheels: dict[str, Path], tmp_path: Path) -> None:
    venv = tmp_path / "venv"
    python = fresh_venv(venv, wheels["theirs"], wheels["ours"])

    # a user's project folder with its own assets/ and resources/ (the working directory comes
    # first on sys.path, as under `dagster dev`)
    project = tmp_path / "user_project"
    for name in ("assets", "resources"):
        (project / name).mkdir(parents=True)
        (project / name / "__init__.py").write_text(f"OWNER = 'the user'  # {name}\n")
    (project / "assets" / "checks.py").write_text("WHOSE = 'the user'\n")
    shutil.copytree(ROOT / "examples" / "shop", project / "release", ignore=shutil.ignore_patterns("__pycache__"))
    env = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), "RELEASE_HOME": str(tmp_path / "home"),
           "RELEASE_MANIFESTS": str(project / "release" / "release.yaml")}
    probe = textwrap.dedent(f"""\
        import assets, assets.checks, resources, release_pipelines.code_location as location
        import release_pipelines, release_pipelines.assets.checks as ours
        print(assets.OWNER, '|', assets.checks.WHOSE, '|', resources.OWNER)
        print(release_pipelines.__file__.startswith({str(venv)!r}))
        print(ours.__name__, sorted(j.name for j in location.defs.jobs)[:2])
    """)
    lines = run(python, "-c", probe, cwd=project, env=env).splitlines()
    assert lines[0] == "the user | the user | the user"
    assert lines[1] == "True"  # our package comes from the wheel, not from a source checkout
    assert lines[2] == "release_pipelines.assets.checks ['shop_approve', 'shop_contract']"

    # elsewhere, the other distribution's packages are the ones seen; uninstalling it leaves ours whole
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    assert run(python, "-c", "import assets.checks, resources; print(assets.checks.WHOSE, resources.OWNER)",
               cwd=outside, env=env).split() == ["theirs", "someone", "else"]
    run(python, "-m", "pip", "uninstall", "-q", "-y", "someone-elses-assets")
    assert "release_pipelines.resources.ledger" in run(
        python, "-c", "import release_pipelines.resources.ledger as m; print(m.__name__)", cwd=outside, env=env)


def test_without_manifests_the_code_location_says_how_to_point_it_at_one(
        wheels: dict[str, Path], tmp_path: Path) -> None:
    python = fresh_venv(tmp_path / "venv", wheels["ours"])
    result = subprocess.run([str(python), "-c", "import release_pipelines.code_location"], cwd=tmp_path,
                            env={"PATH": "/usr/bin:/bin", "HOME": str(tmp_path)}, capture_output=True, text=True,
                            check=False)
    assert result.returncode != 0
    assert "RELEASE_MANIFESTS: not set, and there is no example product beside the package" in result.stderr
