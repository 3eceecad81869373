"""`translation: {key_prefix: [acme]}` moves the whole catalog: the specs, the asset checks, and the
events the release job writes to a real Dagster instance (table materializations from migrations,
gate check evaluations, service materializations) and the canary sensor's observations all sit
under `acme/...`, so no event lands on a key that has no definition. Without a translation the keys
stay `services/<name>` and `<database>/<schema>/<table>` (tests/e2e/test_component.py)."""

from __future__ import annotations

import dagster as dg
import pytest
from dagster.components.core.component_tree import ComponentTree

from release_pipelines.components.release_product.component import ComponentAttributeError, ReleaseProductComponent
from tests.release_harness import EXAMPLE, processes_under, release_config, send_load, shop_environment

FIRST = {"catalog": "1.0.0", "orders": "1.0.0", "frontend": "1.0.0"}
PREFIX = "acme"


@pytest.fixture
def acme_shop(monkeypatch, tmp_path):
    shop = shop_environment(monkeypatch, tmp_path)
    shop.defs = dg.build_defs_for_component(ReleaseProductComponent.from_attributes_dict(attributes={
        "manifest": str(EXAMPLE), "translation": {"key_prefix": [PREFIX], "group_name": "shop_release"}}))
    (tmp_path / "dagster_home").mkdir()
    (tmp_path / "dagster_home" / "dagster.yaml").write_text("telemetry:\n  enabled: false\n")
    shop.instance = dg.DagsterInstance.local_temp(str(tmp_path / "dagster_home"))
    try:
        yield shop
    finally:
        shop.stop()
        shop.instance.dispose()
        assert not processes_under(shop.home)


def _own_keys(defs: dg.Definitions) -> set[dg.AssetKey]:
    """Table and service keys: everything but the release records and metrics."""
    keys = defs.get_repository_def().asset_graph.get_all_asset_keys()
    return {k for k in keys if k.path[0] not in ("releases", "metrics")}


def test_specs_and_checks_carry_the_prefix_and_group(acme_shop):
    defs = acme_shop.defs
    own = _own_keys(defs)
    assert {dg.AssetKey([PREFIX, "services", "catalog"]), dg.AssetKey([PREFIX, "shop_db", "public", "orders"])} <= own
    assert all(k.path[0] == PREFIX for k in own)
    groups = {spec.key: spec.group_name for spec in defs.assets}
    assert {groups[k] for k in own} == {"shop_release"}
    orders = next(s for s in defs.assets if s.key == dg.AssetKey([PREFIX, "shop_db", "public", "orders"]))
    assert {d.asset_key for d in orders.deps} <= own  # lineage drawn between the prefixed keys
    check_keys = defs.get_repository_def().asset_graph.asset_check_keys
    assert check_keys and {c.asset_key for c in check_keys} <= own
    checks_job = defs.resolve_job_def("shop_data_checks")
    assert {c.asset_key for c in checks_job.asset_layer.asset_graph.asset_check_keys} <= own


def test_the_release_job_and_canary_sensor_write_under_the_prefix(acme_shop):
    shop, instance = acme_shop, acme_shop.instance
    own = _own_keys(shop.defs)
    install = shop.run("release", release_config(FIRST))
    assert install.success, shop.failure_message(install)
    canary = shop.run("release", release_config({"catalog": "1.1.0"}))
    assert canary.success, shop.failure_message(canary)

    materialized = {e.asset_key for r in (install, canary) for e in r.get_asset_materialization_events()}
    evaluated = {e.asset_key for r in (install, canary) for e in r.get_asset_check_evaluations()}
    assert dg.AssetKey([PREFIX, "shop_db", "public", "orders"]) in materialized  # the migrations' tables
    assert dg.AssetKey([PREFIX, "services", "catalog"]) in materialized
    assert evaluated and evaluated <= own
    assert {k for k in materialized if k.path[0] not in ("releases", "metrics")} <= own

    send_load(shop, "catalog", 30)
    tick = shop.tick()
    observed = {e.asset_key for e in tick.asset_events}
    assert dg.AssetKey([PREFIX, "services", "catalog"]) in observed, tick.skip_message
    assert observed <= own

    # read back from the instance: the prefixed keys hold the events, the default keys hold none
    assert instance.get_latest_materialization_event(dg.AssetKey([PREFIX, "services", "catalog"])) is not None
    assert instance.get_latest_materialization_event(dg.AssetKey([PREFIX, "shop_db", "public", "orders"])) is not None
    for unprefixed in (dg.AssetKey(["services", "catalog"]), dg.AssetKey(["shop_db", "public", "orders"])):
        assert instance.get_latest_materialization_event(unprefixed) is None
    stored = set(instance.all_asset_keys())
    assert {k for k in stored if k.path[0] not in ("releases", "metrics")} <= own


def test_a_prefix_part_with_a_slash_is_named_against_the_defs_yaml(tmp_path):
    component = ReleaseProductComponent.from_attributes_dict(attributes={
        "manifest": str(EXAMPLE), "translation": {"key_prefix": ["acme", "team/shop"]}})
    context = ComponentTree.for_test().load_context.for_path(tmp_path)
    with pytest.raises(ComponentAttributeError) as excinfo:
        component.build_defs(context)
    assert str(excinfo.value) == (
        f"{tmp_path / 'defs.yaml'}: attributes.translation.key_prefix[1]: 'team/shop' is not a key part "
        "(letters, digits, _ and -; write [acme, shop] rather than acme/shop)")


def test_a_prefix_written_as_a_string_is_one_part(tmp_path):
    """`key_prefix: acme` (the YAML schema takes a string too) is [acme], as in Dagster's own
    key_prefix, not one part per letter; a string with a slash is named without an index."""
    context = ComponentTree.for_test().load_context.for_path(tmp_path)
    component = ReleaseProductComponent.from_attributes_dict(attributes={
        "manifest": str(EXAMPLE), "translation": {"key_prefix": PREFIX}})
    assert dg.AssetKey([PREFIX, "services", "catalog"]) in _own_keys(component.build_defs(context))
    slashed = ReleaseProductComponent.from_attributes_dict(attributes={
        "manifest": str(EXAMPLE), "translation": {"key_prefix": "acme/shop"}})
    with pytest.raises(ComponentAttributeError) as excinfo:
        slashed.build_defs(context)
    assert str(excinfo.value).startswith(
        f"{tmp_path / 'defs.yaml'}: attributes.translation.key_prefix: 'acme/shop' is not a key part")
