"""The ReleaseProductComponent in process: the example dg project loads, two products merge, the
scaffolder's starter validates, `translation` and `resources` take effect, a missing manifest is
named against its defs.yaml, and the environments example (staging -> production) loads through
the component and refuses production before staging. The real `dg` CLI on our real wheel is
tests/e2e/test_dg_project.py."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import dagster as dg
import pytest
from dagster.components.core.component_tree import ComponentTree

from release_pipelines.components.release_product.component import (
    ComponentAttributeError,
    ReleaseProduct,
    ReleaseProductComponent,
    ReleaseResourceSettings,
    ReleaseTranslation,
    shared_resources,
)
from release_pipelines.components.release_product.scaffolder import ReleaseProductScaffolder
from release_pipelines.orchestration.dagster_resources import (
    LedgerResource,
    MetricsResource,
    PlatformResource,
    default_resources,
)
from release_pipelines.orchestration.definitions import product_definitions
from release_pipelines.resources.manifest_files import load_product
from tests.e2e_support import EXAMPLE_MANIFEST, ROOT

DG_PROJECT = ROOT / "examples" / "dg_project"
ENVIRONMENTS_MANIFEST = ROOT / "examples" / "shop_environments" / "release.yaml"


def _names(defs: dg.Definitions) -> tuple[set[str], set[str], set[str]]:
    repo = defs.get_repository_def()
    return (
        {j.name for j in repo.get_all_jobs() if not j.name.startswith("__")},
        {s.name for s in repo.sensor_defs},
        {k.to_user_string() for k in repo.asset_graph.get_all_asset_keys()},
    )


def _load_project(project: Path, package: str) -> dg.Definitions:
    sys.path.insert(0, str(project / "src"))
    try:
        defs = dg.load_from_defs_folder(path_within_project=project / "src" / package)
        dg.Definitions.validate_loadable(defs)
        return defs
    finally:
        sys.path.remove(str(project / "src"))
        for name in [m for m in sys.modules if m.startswith(package)]:
            del sys.modules[name]


def test_example_dg_project_loads_the_shop():
    defs = _load_project(DG_PROJECT, "shop_releases")
    jobs, sensors, assets = _names(defs)
    expected_jobs, expected_sensors, expected_assets = _names(
        dg.Definitions.merge(product_definitions(load_product(EXAMPLE_MANIFEST)),
                             dg.Definitions(resources=shared_resources()))
    )
    assert jobs == expected_jobs and {"shop_release", "shop_promote", "shop_rollback", "shop_data_checks"} <= jobs
    assert sensors == expected_sensors and {"shop_canary", "shop_rollback_on_failure"} <= sensors
    assert assets == expected_assets and "shop_db/public/orders" in assets
    assert set(defs.resources) == set(default_resources())
    checks = {k.name for k in defs.get_repository_def().asset_graph.asset_check_keys}
    assert "schema_contract" in checks


def _second_product(text: str) -> str:
    """The example manifest as product shop2 with its own service and database names."""
    text = text.replace("product: shop\n", "product: shop2\n").replace("shop_db", "shop2_db")
    text = re.sub(r"\b(catalog|frontend)\b", r"\1_2", text)
    for old, new in (("\n  - name: orders\n", "\n  - name: orders_2\n"), ("[orders, ", "[orders_2, "),
                     ("orders-api", "orders_2-api")):
        assert old in text, old
        text = text.replace(old, new)
    return text


def _two_products_project(tmp_path: Path, resources: dict[str, str] | None = None) -> Path:
    """A dg project with the shop and a second product; `resources` (product -> YAML) set on either."""
    project = tmp_path / "two_products"
    package = project / "src" / "two_products_pkg"
    for product in ("shop", "shop2"):
        folder = tmp_path / "manifests" / product
        shutil.copytree(EXAMPLE_MANIFEST.parent, folder, ignore=shutil.ignore_patterns("__pycache__"))
        manifest = folder / "release.yaml"
        if product == "shop2":  # service and database names are asset keys: unique per project
            manifest.write_text(_second_product(manifest.read_text()))
        defs_dir = package / "defs" / product
        defs_dir.mkdir(parents=True)
        (defs_dir / "defs.yaml").write_text(
            f"type: release_pipelines.ReleaseProductComponent\nattributes:\n  manifest: {manifest}\n"
            + (resources or {}).get(product, ""))
    (package / "__init__.py").write_text("")
    (package / "defs" / "__init__.py").write_text("")
    (project / "pyproject.toml").write_text(
        '[project]\nname = "two-products"\nversion = "0"\n\n'
        '[tool.dg]\ndirectory_type = "project"\n\n[tool.dg.project]\nroot_module = "two_products_pkg"\n')
    return project


def test_two_products_in_one_project_merge(tmp_path):
    same = "  resources:\n    home: /tmp/release-home\n"
    project = _two_products_project(tmp_path, {"shop": same, "shop2": same})
    jobs, sensors, assets = _names(_load_project(project, "two_products_pkg"))
    assert {"shop_release", "shop2_release", "shop_rollback", "shop2_rollback"} <= jobs
    assert {"shop_canary", "shop2_canary"} <= sensors
    assert {"shop_db/public/orders", "shop2_db/public/orders", "services/orders", "services/orders_2"} <= assets


def test_two_products_with_different_resources_are_named_with_both_files(tmp_path):
    project = _two_products_project(tmp_path, {"shop2": "  resources:\n    home: /tmp/elsewhere\n"})
    with pytest.raises(Exception) as excinfo:
        _load_project(project, "two_products_pkg")
    message = " ".join(str(e) for e in (excinfo.value, excinfo.value.__cause__) if e)
    defs = project / "src" / "two_products_pkg" / "defs"
    assert "attributes.resources: home differ from" in message
    assert str(defs / "shop2" / "defs.yaml") in message or str(defs / "shop" / "defs.yaml") in message
    assert all(str(defs / p / "defs.yaml") in message for p in ("shop", "shop2"))
    assert "separate code locations" in message


def test_the_scaffolded_starter_manifest_validates(tmp_path):
    target = tmp_path / "defs" / "Web Shop"
    target.mkdir(parents=True)
    ReleaseProductScaffolder().scaffold(dg.ScaffoldRequest(
        type_name="release_pipelines.ReleaseProductComponent", target_path=target, scaffold_format="yaml",
        project_root=tmp_path, params=None))
    assert (target / "defs.yaml").read_text().startswith("type: release_pipelines.ReleaseProductComponent")
    assert {p.name for p in (target / "migrations").iterdir()} == {"env.py", "script.py.mako", "versions"}
    product = load_product(target / "release.yaml")
    assert product.name == "web_shop"
    assert [s.name for s in product.manifest.services] == ["web_shop_web"]
    assert product.manifest.databases[0].url == "${WEB_SHOP_DB_URL:-sqlite:///.release/web_shop.db}"
    defs = dg.build_defs_for_component(ReleaseProductComponent(manifest=str(target / "release.yaml")))
    assert "web_shop_release" in _names(defs)[0]


def test_translation_and_resource_settings_take_effect(tmp_path, monkeypatch):
    monkeypatch.setenv("TEAM_PROMETHEUS", "http://127.0.0.1:9090")
    component = ReleaseProductComponent.from_attributes_dict(attributes={
        "manifest": str(EXAMPLE_MANIFEST),
        "translation": {"group_name": "shop_release"},
        "resources": {"prometheus_url": "{{ env.TEAM_PROMETHEUS }}", "home": str(tmp_path / "home"),
                      "ledger_url": "{{ env.NOT_SET_ANYWHERE }}"},
    })
    assert component.resources == ReleaseResourceSettings(prometheus_url="http://127.0.0.1:9090",
                                                          home=str(tmp_path / "home"))
    assert component.translation == ReleaseTranslation(group_name="shop_release")
    defs = dg.build_defs_for_component(component)
    groups = {spec.key.to_user_string(): spec.group_name for spec in defs.assets}
    assert groups["shop_db/public/orders"] == groups["services/catalog"] == "shop_release"
    assert groups["releases/shop"] == "releases"  # the release records keep their own group
    resources = defs.resources.values()
    assert next(r for r in resources if isinstance(r, MetricsResource)).prometheus_url == "http://127.0.0.1:9090"
    assert next(r for r in resources if isinstance(r, LedgerResource)).url == f"sqlite:///{tmp_path / 'home' / 'ledger.db'}"
    assert next(r for r in resources if isinstance(r, PlatformResource)).state_root == str(tmp_path / "home" / "platform")


def test_a_missing_manifest_is_named_against_the_defs_yaml(tmp_path):
    component = ReleaseProduct(manifest="nope/release.yaml")  # the old name still loads
    context = ComponentTree.for_test().load_context.for_path(tmp_path)
    with pytest.raises(ComponentAttributeError) as excinfo:
        component.build_defs(context)
    assert str(excinfo.value) == (f"{tmp_path / 'defs.yaml'}: attributes.manifest: no release manifest at "
                                  f"{tmp_path / 'nope' / 'release.yaml'} (a relative path starts at the folder of defs.yaml)")


def test_the_environments_example_refuses_production_before_staging(tmp_path, monkeypatch):
    monkeypatch.setenv("RELEASE_HOME", str(tmp_path / "home"))
    monkeypatch.chdir(tmp_path)
    defs = dg.build_defs_for_component(ReleaseProductComponent(manifest=str(ENVIRONMENTS_MANIFEST)))
    jobs, sensors, _assets = _names(defs)
    assert {"shop_staging_release", "shop_production_release", "shop_production_rollback"} <= jobs
    assert {"shop_staging_canary", "shop_production_canary"} <= sensors
    result = defs.resolve_job_def("shop_production_release").execute_in_process(
        run_config={"ops": {"preflight": {"config": {"versions": {"catalog": "1.0.0"}}}}},
        instance=dg.DagsterInstance.ephemeral(), raise_on_error=False)
    assert not result.success
    failure = " ".join(e.step_failure_data.user_failure_data.description or "" for e in result.all_events
                       if e.is_step_failure and e.step_failure_data.user_failure_data)
    assert "production is entered only after staging completed the same versions" in failure


@pytest.mark.slow
def test_dagster_cli_validates_the_example_project():
    """The same check `dg check defs` makes, with the dagster CLI this project installs."""
    result = subprocess.run(
        [str(Path(sys.executable).parent / "dagster"), "definitions", "validate", "-w", "workspace.yaml"],
        cwd=DG_PROJECT, check=False, capture_output=True, text=True, timeout=300,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "shop_releases" in result.stdout + result.stderr
