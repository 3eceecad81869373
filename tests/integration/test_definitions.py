"""The code location: loads the example, validates with Dagster's own CLI, fails clearly."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from dagster import Definitions

from release_pipelines.core.errors import ManifestError
from release_pipelines.orchestration.definitions import build_definitions

ROOT = Path(__file__).resolve().parents[2]
DAGSTER = str(Path(sys.executable).with_name("dagster"))


def test_example_definitions_are_loadable() -> None:
    defs = build_definitions(ROOT / "examples" / "shop")
    Definitions.validate_loadable(defs)
    jobs = {j.name for j in defs.jobs}
    assert {"shop_release", "shop_promote", "shop_rollback", "shop_contract", "shop_data_checks"} <= jobs
    graph = defs.resolve_job_def("shop_release").graph
    assert {"preflight", "migrate_shop_db", "gate_shop_db", "deploy_catalog", "deploy_orders",
            "deploy_frontend", "start_canary"} <= {n.name for n in graph.nodes}
    # the waves: orders waits for catalog and the database gate
    upstream = {o.node_name for o in graph.dependency_structure.all_upstream_outputs_from_node("deploy_orders")}
    assert {"deploy_catalog", "gate_shop_db", "preflight"} <= upstream


def test_dagster_cli_validates_the_code_location(tmp_path) -> None:
    env = {**os.environ, "DAGSTER_HOME": str(tmp_path), "RELEASE_HOME": str(tmp_path)}
    result = subprocess.run([DAGSTER, "definitions", "validate", "-m", "release_pipelines.code_location"],
                            capture_output=True, text=True, env=env, cwd=ROOT, timeout=180)
    assert result.returncode == 0, result.stdout + result.stderr


def test_broken_manifest_fails_the_load_with_the_cli_message(tmp_path) -> None:
    (tmp_path / "release.yaml").write_text((ROOT / "examples" / "broken" / "unknown_key.yaml").read_text())
    with pytest.raises(ManifestError, match="did you mean 'depends_on'"):
        build_definitions(tmp_path)
    env = {**os.environ, "DAGSTER_HOME": str(tmp_path), "RELEASE_MANIFESTS": str(tmp_path)}
    result = subprocess.run([DAGSTER, "definitions", "validate", "-m", "release_pipelines.code_location"],
                            capture_output=True, text=True, env=env, cwd=ROOT, timeout=180)
    assert result.returncode != 0
    assert "unknown key 'depnds_on'; did you mean 'depends_on'?" in result.stdout + result.stderr


def _product_copy(tmp_path: Path, name: str, rename: bool) -> None:
    import shutil

    folder = tmp_path / name
    shutil.copytree(ROOT / "examples" / "shop", folder, ignore=shutil.ignore_patterns("__pycache__"))
    text = (folder / "release.yaml").read_text().replace("product: shop\n", f"product: {name}\n")
    if rename:
        for old in ("catalog", "orders", "frontend", "shop_db"):
            text = text.replace(old, f"{name}_{old}")
    (folder / "release.yaml").write_text(text)


def test_two_products_load_side_by_side(tmp_path) -> None:
    _product_copy(tmp_path, "shop", rename=False)
    _product_copy(tmp_path, "books", rename=True)
    defs = build_definitions(tmp_path)
    Definitions.validate_loadable(defs)
    assert {"shop_release", "books_release"} <= {j.name for j in defs.jobs}
    assert defs.resolve_job_def("books_release").graph.node_named("preflight")


def test_two_products_sharing_a_service_name_get_a_clear_error(tmp_path) -> None:
    _product_copy(tmp_path, "shop", rename=False)
    _product_copy(tmp_path, "shop2", rename=False)
    with pytest.raises(ManifestError, match="'catalog' is declared by products 'shop' and 'shop2'"):
        build_definitions(tmp_path)
