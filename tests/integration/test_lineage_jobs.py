"""Lineage of a release run through the real Dagster jobs (release, promote, contract, records
sensor) on a real instance (temp DAGSTER_HOME, SQLite storage) over real PostgreSQL and Alembic,
read back from the instance: each table's materializations with their diff, data version
(the Alembic revision), previous and new column schema, column lineage; a table created then
dropped marked dropped; the contract's impact shown before the point of no return, its downstream
assets from the code location's asset graph (a data team's own assets merged into the definitions,
not only the manifest's); the data team's summary on releases/<product>; OpenLineage silent when
not configured, then events at a real HTTP receiver in order, with the release as parent run, each
valid against the spec's schemas."""

from __future__ import annotations

import pytest
from dagster import AssetKey, DagsterEventType

from release_pipelines.resources.openlineage import release_run_id
from tests.integration.test_lineage import receiver, spec_problems  # noqa: F401 - the receiver fixture
from tests.lineage_release import (
    MANIFEST_ENV,
    USER_ASSETS,
    RepositoryShop,
    instance_at,
    run_lineage_release,
    stage_product,
)
from tests.release_harness import processes_under

pytestmark = pytest.mark.postgres
ORDERS = AssetKey(["app_db", "public", "orders"])
EXPORTS = AssetKey(["app_db", "public", "exports"])


@pytest.fixture
def staged(tmp_path, monkeypatch, postgres_url):
    folder = tmp_path / "ledgerly"
    manifest = stage_product(folder)
    home = tmp_path / "release_home"
    home.mkdir()
    monkeypatch.setenv("RELEASE_HOME", str(home))
    monkeypatch.setenv("LINEAGE_DB_URL", postgres_url)
    monkeypatch.setenv("RELEASE_ACTOR", "data-team-test")
    monkeypatch.setenv(MANIFEST_ENV, str(manifest))
    monkeypatch.setenv("HOME", str(tmp_path))  # no ~/.openlineage/openlineage.yml
    monkeypatch.chdir(tmp_path)  # no ./openlineage.yml
    for name in ("RELEASE_LEDGER_URL", "RELEASE_PROMETHEUS_URL", "OPENLINEAGE_URL", "OPENLINEAGE_CONFIG",
                 "OPENLINEAGE_DISABLED"):
        monkeypatch.delenv(name, raising=False)
    shop = RepositoryShop(home, manifest, instance_at(tmp_path / "dagster_home"))
    try:
        yield shop, folder
    finally:
        shop.stop()
        assert not processes_under(home)


def materializations(instance, key: AssetKey) -> list:
    records = instance.fetch_materializations(key, limit=50, ascending=True).records
    return [r.asset_materialization for r in records]


def test_a_release_through_the_jobs_leaves_its_lineage_in_the_instance(staged, receiver, monkeypatch):  # noqa: F811
    shop, folder = staged
    url, events = receiver

    def configure_openlineage():
        assert events == []  # release 1 ran with OpenLineage unconfigured: nothing sent
        monkeypatch.setenv("OPENLINEAGE_URL", url)

    ran = run_lineage_release(shop, folder, before_second=configure_openlineage)
    instance = shop.instance

    # orders: release 1 created it; release 2's expand added columns with lineage; contract dropped two
    created, expanded, contracted = materializations(instance, ORDERS)
    assert created.tags["dagster/data_version"] == "0001_orders"
    assert created.metadata["lifecycle"].value == "CREATE"
    assert expanded.tags["dagster/data_version"] == "0003_expand"
    assert [c["column"] for c in expanded.metadata["schema_changes"].value if c["kind"] == "column_added"] == [
        "total_cents", "amount_cents", "email_normalized"]
    lineage = expanded.metadata["dagster/column_lineage"].value.deps_by_column
    assert {column: [(d.asset_key, d.column_name) for d in deps] for column, deps in lineage.items()} == {
        "total_cents": [(ORDERS, "quantity"), (ORDERS, "unit_cents")],
        "amount_cents": [(ORDERS, "amount")], "email_normalized": [(ORDERS, "email")]}
    previous = [c.name for c in expanded.metadata["previous_column_schema"].value.columns]
    new = [c.name for c in expanded.metadata["dagster/column_schema"].value.columns]
    assert "total_cents" not in previous and {"total_cents", "amount_cents", "email_normalized"} <= set(new)
    assert contracted.metadata["release_id"].value == ran.release
    assert contracted.description.startswith(f"release {ran.release}: migrated 0003_expand -> 0004_contract")
    assert contracted.tags["dagster/data_version"] == "0004_contract"
    assert contracted.metadata["worst_severity"].value == "destructive"
    diff = contracted.metadata["schema_diff"].value
    assert "| destructive | 0004_contract |" in diff and "email" in diff
    assert "email" not in [c.name for c in contracted.metadata["dagster/column_schema"].value.columns]
    assert ("orders.email: column dropped [destructive, 0004_contract], replaced by orders.email_normalized: "
            "read by billing") in contracted.metadata["impact"].value
    assert contracted.metadata["affected_services"].value == ["billing"]
    # downstream: the manifest's graph, then the user's assets on top of orders (the code location's graph)
    assert ("downstream assets: services/billing, app_db/public/invoices_summary, services/reports, "
            + ", ".join(USER_ASSETS)) in contracted.metadata["impact"].value
    # the column list itself says which release and revision last changed each column, and from what
    notes = {c.name: c.description for c in contracted.metadata["dagster/column_schema"].value.columns}
    assert notes["id"] == f"created with the table (release {ran.first_release}, revision 0001_orders)"
    assert notes["total_cents"] == (f"column added (bigint) (release {ran.release}, revision 0002_total); "
                                    "from quantity, unit_cents")
    assert notes["email_normalized"].startswith(f"column added (varchar(200)) (release {ran.release}, "
                                                "revision 0003_expand); from email")

    # exports: never declared in the manifest; appears when created, marked dropped when dropped
    made, dropped = materializations(instance, EXPORTS)
    assert made.metadata["declared_in_manifest"].value is False and made.metadata["lifecycle"].value == "CREATE"
    assert made.tags["dagster/data_version"] == "0003_expand"
    assert dropped.metadata["lifecycle"].value == "DROP"
    assert dropped.description == f"release {ran.release}: dropped by revision 0004_contract"
    assert dropped.metadata["dagster/column_schema"].value.columns == []

    # the impact, observed on the tables before the point of no return (the contracting transition)
    observed = instance.fetch_observations(ORDERS, limit=10).records
    impact = next(r for r in observed if "impact" in r.asset_observation.metadata)
    assert "read by billing" in impact.asset_observation.metadata["impact"].value
    assert impact.asset_observation.metadata["downstream_assets"].value == [
        *USER_ASSETS, "app_db/public/invoices_summary", "services/billing", "services/reports"]
    assert ", ".join(USER_ASSETS) in impact.asset_observation.metadata["impact"].value
    contract_run = impact.run_id
    logs = [r.event_log_entry for r in instance.get_records_for_run(contract_run, limit=1000).records]
    warned = next(i for i, e in enumerate(logs) if "point of no return" in (e.user_message or ""))
    observed_at = next(i for i, e in enumerate(logs) if e.dagster_event and
                       e.dagster_event.event_type is DagsterEventType.ASSET_OBSERVATION and
                       e.dagster_event.asset_key == ORDERS)
    assert observed_at < warned
    preflight_run = shop.ledger.events(ran.release)[0].run_id
    preflight_log = [r.event_log_entry.user_message for r in
                     instance.get_records_for_run(preflight_run, limit=2000).records]
    assert any("app_db contract (later, by the contract job): orders.email: column dropped" in m
               and m.endswith(", ".join(USER_ASSETS)) for m in preflight_log), preflight_log
    kinds = [e.kind for e in shop.ledger.events(ran.release)]
    assert kinds.index("schema:impact") < kinds.index("state:contracting")

    # the release record a data team reads
    records = instance.fetch_materializations(AssetKey(["releases", "ledgerly"]), limit=100).records
    summary = next(r.asset_materialization.metadata["data_summary"].value for r in records
                   if r.asset_materialization.metadata["release_id"].value == ran.release)
    assert "## What this release did to the data" in summary
    assert "| orders | orders.total_cents: column added (bigint) | additive | 0002_total |" in summary, summary
    assert "orders.email renamed to email_normalized (renamed, 0003_expand)" in summary
    assert "| exports | exports: table dropped | destructive | 0004_contract |" in summary
    assert "Readers to tell: billing." in summary
    assert summary.count("- orders.email: column dropped") == 1, summary  # planned and done: shown once

    # OpenLineage, configured for release 2 only: each step START then COMPLETE, the release as parent
    sent = [e["event"] for e in events]
    assert [(e["eventType"], e["job"]["name"]) for e in sent] == [
        ("START", "ledgerly.migrate.app_db"), ("COMPLETE", "ledgerly.migrate.app_db"),
        ("START", "ledgerly.gates.app_db"), ("COMPLETE", "ledgerly.gates.app_db"),
        ("START", "ledgerly.contract.app_db"), ("COMPLETE", "ledgerly.contract.app_db"),
        ("START", "ledgerly.gates.app_db"), ("COMPLETE", "ledgerly.gates.app_db")]
    parents = {e["run"]["facets"]["parent"]["run"]["runId"] for e in sent}
    assert parents == {release_run_id(ran.release)} != {release_run_id(ran.first_release)}
    for event in sent:
        assert spec_problems(event) == [], event
    dropped_event = next(o for o in sent[5]["outputs"] if o["name"] == "app_db.public.exports")
    assert dropped_event["facets"]["lifecycleStateChange"]["lifecycleStateChange"] == "DROP"
    # the gates' verdicts as data-quality assertions on the tables they checked (no made-up empty schema)
    checked = next(i for i in sent[7]["inputs"] if i["name"] == "app_db.public.orders")
    assertions = checked["inputFacets"]["dataQualityAssertions"]["assertions"]
    assert {a["assertion"] for a in assertions} >= {"schema_contract"} and all(a["success"] for a in assertions)
    assert "schema" not in checked["facets"]
