"""The ReleaseProduct component: the example dg project loads, and two products in one project
merge (they share one set of resources)."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import dagster as dg
import pytest
from release_pipelines.resources.manifest_files import load_product

from release_pipelines.orchestration.definitions import product_definitions
from tests.e2e_support import EXAMPLE_MANIFEST, ROOT

DG_PROJECT = ROOT / "examples" / "dg_project"


def _names(defs: dg.Definitions) -> tuple[set[str], set[str], set[str]]:
    repo = defs.get_repository_def()
    return (
        {j.name for j in repo.get_all_jobs() if not j.name.startswith("__")},
        {s.name for s in repo.sensor_defs},
        {k.to_user_string() for k in repo.asset_graph.get_all_asset_keys()},
    )


def test_example_dg_project_loads_the_shop(monkeypatch):
    monkeypatch.syspath_prepend(str(DG_PROJECT / "src"))
    defs = dg.load_from_defs_folder(path_within_project=DG_PROJECT / "src" / "shop_releases")
    dg.Definitions.validate_loadable(defs)
    jobs, sensors, assets = _names(defs)
    expected_jobs, expected_sensors, expected_assets = _names(
        dg.Definitions.merge(product_definitions(load_product(EXAMPLE_MANIFEST)),
                             dg.Definitions(resources=_resources()))
    )
    assert jobs == expected_jobs and {"shop_release", "shop_promote", "shop_rollback", "shop_data_checks"} <= jobs
    assert sensors == expected_sensors and {"shop_canary", "shop_rollback_on_failure"} <= sensors
    assert assets == expected_assets and "shop_db/public/orders" in assets
    assert set(defs.resources) >= {"ledger", "platform", "flags", "metrics"}
    checks = {k.name for k in defs.get_repository_def().asset_graph.asset_check_keys}
    assert "schema_contract" in checks


def _resources():
    from release_pipelines.components.release_product.component import shared_resources

    return shared_resources()


def _second_product(text: str) -> str:
    """The example manifest as product shop2 with its own service and database names."""
    text = text.replace("product: shop\n", "product: shop2\n").replace("shop_db", "shop2_db")
    text = re.sub(r"\b(catalog|frontend)\b", r"\1_2", text)
    for old, new in (("\n  - name: orders\n", "\n  - name: orders_2\n"), ("[orders, ", "[orders_2, "),
                     ("orders-api", "orders_2-api")):
        assert old in text, old
        text = text.replace(old, new)
    return text


def test_two_products_in_one_project_merge(tmp_path):
    project = tmp_path / "two_products"
    package = project / "src" / "two_products_pkg"
    for product in ("shop", "shop2"):
        folder = tmp_path / "manifests" / product
        shutil.copytree(EXAMPLE_MANIFEST.parent, folder, ignore=shutil.ignore_patterns("__pycache__"))
        manifest = folder / "release.yaml"
        if product == "shop2":  # asset keys are not namespaced by product: rename services and DB
            manifest.write_text(_second_product(manifest.read_text()))
        defs_dir = package / "defs" / product
        defs_dir.mkdir(parents=True)
        (defs_dir / "defs.yaml").write_text(
            f"type: release_pipelines.components.release_product.component.ReleaseProduct\nattributes:\n  manifest: {manifest}\n")
    (package / "__init__.py").write_text("")
    (package / "defs" / "__init__.py").write_text("")
    (project / "pyproject.toml").write_text(
        '[project]\nname = "two-products"\nversion = "0"\n\n'
        '[tool.dg]\ndirectory_type = "project"\n\n[tool.dg.project]\nroot_module = "two_products_pkg"\n')
    sys.path.insert(0, str(project / "src"))
    try:
        defs = dg.load_from_defs_folder(path_within_project=project)
        dg.Definitions.validate_loadable(defs)
        jobs, sensors, _assets = _names(defs)
    finally:
        sys.path.remove(str(project / "src"))
        for name in [m for m in sys.modules if m.startswith("two_products_pkg")]:
            del sys.modules[name]
    assert {"shop_release", "shop2_release", "shop_rollback", "shop2_rollback"} <= jobs
    assert {"shop_canary", "shop2_canary"} <= sensors
    assert {"shop_db/public/orders", "shop2_db/public/orders", "services/orders", "services/orders_2"} <= _assets


def test_a_missing_manifest_names_the_file(tmp_path):
    from release_pipelines.components.release_product.component import ReleaseProduct
    from release_pipelines.core.errors import ManifestError

    component = ReleaseProduct(manifest=str(tmp_path / "nope" / "release.yaml"))
    with pytest.raises(ManifestError) as excinfo:
        dg.build_defs_for_component(component)
    assert "nope" in str(excinfo.value)


@pytest.mark.slow
def test_dagster_cli_validates_the_example_project():
    """The same check `dg check defs` makes, with the dagster CLI this project installs."""
    result = subprocess.run(
        [str(Path(sys.executable).parent / "dagster"), "definitions", "validate", "-w", "workspace.yaml"],
        cwd=DG_PROJECT, check=False, capture_output=True, text=True, timeout=300,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "shop_releases" in result.stdout + result.stderr
