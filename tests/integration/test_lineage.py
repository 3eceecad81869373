"""Lineage of a real release on PostgreSQL with real Alembic revisions (tests/data/lineage_product):
schema diffs with severities and revisions, discovered and dropped tables, column lineage from the
backfill declarations, contract impact, and the OpenLineage events those steps send to a real HTTP
receiver, each validated against the spec's JSON schemas (tests/data/openlineage)."""

from __future__ import annotations

import dataclasses
import json
import logging
import shutil
import textwrap
import threading
import typing
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from dagster import AssetKey, Definitions, asset, build_defs_for_component
from jsonschema import Draft202012Validator, FormatChecker
from referencing import Registry, Resource

from release_pipelines.components.release_product.component import ReleaseProductComponent
from release_pipelines.core.lineage import render_data_summary
from release_pipelines.orchestration.jobs.common import tables_downstream
from release_pipelines.resources import clients
from release_pipelines.resources.manifest_files import load_product
from release_pipelines.resources.openlineage import release_run_id
from release_pipelines.steps import migrate as migrate_steps
from release_pipelines.steps.context import StepContext

pytestmark = pytest.mark.postgres
DATA = Path(__file__).resolve().parents[1] / "data"
SCHEMAS = DATA / "openlineage"
ARTIFACTS = DATA.parents[1] / "test-artifacts"
FACET_FILES = {
    "schema": "SchemaDatasetFacet", "columnLineage": "ColumnLineageDatasetFacet",
    "version": "DatasetVersionDatasetFacet", "lifecycleStateChange": "LifecycleStateChangeDatasetFacet",
    "dataQualityAssertions": "DataQualityAssertionsDatasetFacet", "parent": "ParentRunFacet",
    "errorMessage": "ErrorMessageRunFacet", "jobType": "JobTypeJobFacet", "tags": "TagsRunFacet",
}


def spec_problems(event: dict) -> list[str]:
    """Every way `event` breaks the core schema or one of its facets' schemas."""
    core = json.loads((SCHEMAS / "OpenLineage.json").read_text())
    facet_schemas = {name: json.loads((SCHEMAS / f"{name}.json").read_text()) for name in FACET_FILES.values()}
    registry = Registry().with_resources(
        [(f"https://openlineage.io/spec/{v}/OpenLineage.json", Resource.from_contents(core))
         for v in ("1-0-1", "1-0-2", "2-0-2", "2-1-0")]
        + [(s["$id"], Resource.from_contents(s)) for s in facet_schemas.values()])
    problems = [e.message for e in Draft202012Validator(core, registry=registry,
                                                        format_checker=FormatChecker()).iter_errors(event)]
    facet_maps = [event["run"].get("facets", {}), event["job"].get("facets", {})]
    for dataset in event.get("inputs", []) + event.get("outputs", []):
        facet_maps += [dataset.get("facets", {}), dataset.get("inputFacets", {}), dataset.get("outputFacets", {})]
    for facets in facet_maps:
        for key, facet in facets.items():
            name = FACET_FILES.get(key)
            if name is None:
                problems.append(f"facet {key} has no schema in the test data")
                continue
            validator = Draft202012Validator({"$ref": f"{facet_schemas[name]['$id']}#/$defs/{name}"},
                                             registry=registry, format_checker=FormatChecker())
            problems += [f"{key}: {e.message}" for e in validator.iter_errors(facet)]
    return problems


class Receiver(BaseHTTPRequestHandler):
    events: typing.ClassVar[list[dict]] = []

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        type(self).events.append({"path": self.path, "event": json.loads(body)})
        self.send_response(201)
        self.end_headers()

    def log_message(self, *args) -> None:
        pass


@pytest.fixture
def receiver():
    Receiver.events = []
    server = ThreadingHTTPServer(("127.0.0.1", 0), Receiver)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}", Receiver.events
    finally:
        server.shutdown()


@pytest.fixture
def product(tmp_path, monkeypatch, postgres_url):
    folder = tmp_path / "product"
    shutil.copytree(DATA / "lineage_product", folder, ignore=shutil.ignore_patterns("__pycache__"))
    monkeypatch.setenv("LINEAGE_DB_URL", postgres_url)
    monkeypatch.chdir(tmp_path)  # no openlineage.yml here
    for name in ("OPENLINEAGE_URL", "OPENLINEAGE_CONFIG", "OPENLINEAGE_DISABLED"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    return load_product(folder / "release.yaml")


def context(product, tmp_path) -> StepContext:
    ledger = clients.ledger_at(f"sqlite:///{tmp_path / 'ledger.db'}")
    release = ledger.start_release(product.name, {"billing": "2.0.0"}, {"billing": "1.0.0"}, "tester")
    return StepContext(product, ledger, release.id, "tester", run_id="dagster-run-1", log=lambda _m: None)


def changes_of(outcome, table):
    change = next(c for c in outcome.tables if c.table.name == table)
    return change, [(c.kind, c.column, c.severity, c.revision) for c in change.changes]


def test_a_release_records_diffs_lineage_impact_and_sends_valid_openlineage(product, tmp_path, receiver, monkeypatch):
    url, events = receiver
    monkeypatch.setenv("OPENLINEAGE_URL", url)
    ctx = context(product, tmp_path)

    expanded = migrate_steps.expand(ctx, "app_db")
    assert expanded.to_revision == "0003_expand"
    orders, diff = changes_of(expanded, "orders")
    assert ("column_added", "total_cents", "additive", "0002_total") in diff
    assert ("column_added", "amount_cents", "additive", "0003_expand") in diff
    assert orders.data_version == "0003_expand"
    assert orders.column_lineage == {"total_cents": [("orders", "quantity"), ("orders", "unit_cents")],
                                     "amount_cents": [("orders", "amount")],
                                     "email_normalized": [("orders", "email")]}
    exports, diff = changes_of(expanded, "exports")  # discovered: not in the manifest
    assert not exports.declared and exports.lifecycle == "CREATE" and ("table_created", None, "additive",
                                                                       "0003_expand") in diff
    assert set(exports.columns) == {"id", "path"}

    contracted = migrate_steps.contract(ctx, "app_db")
    assert [(i.change.kind, i.change.column, i.readers, i.replacement) for i in contracted.impacts] == [
        ("column_dropped", "amount", ("billing",), "orders.amount_cents"),
        ("column_dropped", "email", ("billing",), "orders.email_normalized"),
        ("table_dropped", None, (), None)]
    assert contracted.impacts[0].downstream == ("services/billing", "app_db/public/invoices_summary",
                                                "services/reports")
    orders, diff = changes_of(contracted, "orders")
    assert diff == [("column_dropped", "amount", "destructive", "0004_contract"),
                    ("column_dropped", "email", "destructive", "0004_contract")]
    assert orders.previous_columns and "email" in orders.previous_columns and "email" not in orders.columns
    exports, _ = changes_of(contracted, "exports")
    assert exports.lifecycle == "DROP" and exports.columns == {} and exports.row_count is None

    summary = render_data_summary(ctx.ledger.events(ctx.release_id))
    assert "orders.email renamed to email_normalized (renamed, 0003_expand)" in summary
    assert "| exports | exports: table dropped | destructive | 0004_contract |" in summary
    assert "Readers to tell: billing." in summary

    # OpenLineage: START/COMPLETE per step, in order, one parent run (the release), all valid
    sent = [e["event"] for e in events]
    assert [(e["eventType"], e["job"]["name"]) for e in sent] == [
        ("START", "ledgerly.migrate.app_db"), ("COMPLETE", "ledgerly.migrate.app_db"),
        ("START", "ledgerly.contract.app_db"), ("COMPLETE", "ledgerly.contract.app_db")]
    assert {e["run"]["facets"]["parent"]["run"]["runId"] for e in sent} == {release_run_id(ctx.release_id)}
    assert all(e["path"] == "/api/v1/lineage" for e in events)
    for event in sent:
        assert spec_problems(event) == [], json.dumps(event, indent=1)
    dropped = next(o for o in sent[3]["outputs"] if o["name"].endswith(".exports"))
    assert dropped["facets"]["lifecycleStateChange"]["lifecycleStateChange"] == "DROP"
    assert dropped["facets"]["version"]["datasetVersion"] == "0004_contract"
    expanded_orders = next(o for o in sent[1]["outputs"] if o["name"] == "app_db.public.orders")
    assert expanded_orders["facets"]["columnLineage"]["fields"]["email_normalized"]["inputFields"] == [
        {"namespace": expanded_orders["namespace"], "name": "app_db.public.orders", "field": "email",
         "transformations": []}]
    ARTIFACTS.mkdir(exist_ok=True)  # an example event for the docs (test-artifacts/ is not committed)
    (ARTIFACTS / "openlineage-migrate-complete.json").write_text(json.dumps(sent[1], indent=1))


def test_an_invalid_event_is_caught_by_the_schemas() -> None:
    event = {"eventType": "FINISHED", "eventTime": "now", "producer": "x", "schemaURL": "y",
             "run": {"runId": "r"}, "job": {"namespace": "n", "name": "j",
                                             "facets": {"jobType": {"_producer": "p", "_schemaURL": "s"}}}}
    problems = spec_problems(event)
    assert any("processingType" in p for p in problems), problems


def test_nothing_is_sent_when_openlineage_is_not_configured(product, tmp_path, receiver):
    _url, events = receiver
    ctx = context(product, tmp_path)
    assert migrate_steps.expand(ctx, "app_db").to_revision == "0003_expand"
    assert events == []


def replace_later_revisions(product, upgrade: str = "", downgrade: str = "pass") -> None:
    """Keep revision 0001 and, given an `upgrade` body, put revision 0002_next (expand) after it."""
    versions = product.directory / "migrations" / "versions"
    for name in ("0002_total.py", "0003_expand.py", "0004_contract.py"):
        (versions / name).unlink(missing_ok=True)
    if upgrade:
        (versions / "0002_next.py").write_text(
            'from alembic import op\n\nrevision = "0002_next"\ndown_revision = "0001_orders"\nphase = "expand"\n\n\n'
            f"def upgrade() -> None:\n{textwrap.indent(upgrade, '    ')}\n\n\n"
            f"def downgrade() -> None:\n{textwrap.indent(downgrade, '    ')}\n")


def test_a_failing_migration_sends_fail_with_the_error_under_the_release(product, tmp_path, receiver, monkeypatch):
    url, events = receiver
    monkeypatch.setenv("OPENLINEAGE_URL", url)
    replace_later_revisions(product, 'op.execute("ALTER TABLE orders ADD COLUMN broken no_such_type")')
    ctx = context(product, tmp_path)
    with pytest.raises(Exception, match="no_such_type"):
        migrate_steps.expand(ctx, "app_db")
    sent = [e["event"] for e in events]
    assert [(e["eventType"], e["job"]["name"]) for e in sent] == [
        ("START", "ledgerly.migrate.app_db"), ("FAIL", "ledgerly.migrate.app_db")]
    assert sent[0]["run"]["runId"] == sent[1]["run"]["runId"]
    assert {e["run"]["facets"]["parent"]["run"]["runId"] for e in sent} == {release_run_id(ctx.release_id)}
    assert "no_such_type" in sent[1]["run"]["facets"]["errorMessage"]["message"]
    for event in sent:
        assert spec_problems(event) == [], json.dumps(event, indent=1)


def test_renames_parsed_from_the_statements_are_lineage_and_a_renamed_table_keeps_its_identity(
        product, tmp_path, receiver, monkeypatch):
    url, events = receiver
    ctx = context(product, tmp_path)
    replace_later_revisions(product)
    assert migrate_steps.expand(ctx, "app_db").to_revision == "0001_orders"  # the tables exist, then:
    monkeypatch.setenv("OPENLINEAGE_URL", url)
    replace_later_revisions(
        product,
        upgrade='op.alter_column("orders", "email", new_column_name="contact_email")\n'
                'op.rename_table("invoices_summary", "invoice_totals")',
        downgrade='op.rename_table("invoice_totals", "invoices_summary")\n'
                  'op.alter_column("orders", "contact_email", new_column_name="email")')
    outcome = migrate_steps.expand(ctx, "app_db")
    orders, diff = changes_of(outcome, "orders")
    assert ("column_renamed", "email", "breaking", "0002_next") in diff
    assert orders.column_lineage == {"contact_email": [("orders", "email")]}
    totals, diff = changes_of(outcome, "invoice_totals")  # discovered under its new name
    assert not totals.declared and totals.lifecycle == "RENAME" and totals.columns == {"id": "BIGINT"}
    assert diff == [("table_renamed", None, "breaking", "0002_next")]
    old, _ = changes_of(outcome, "invoices_summary")  # the declared name: renamed away, no columns left
    assert old.lifecycle == "RENAME" and old.columns == {} and old.row_count is None

    complete = [e["event"] for e in events][1]
    assert spec_problems(complete) == [], json.dumps(complete, indent=1)
    outputs = {o["name"]: o for o in complete["outputs"]}
    assert "app_db.public.invoices_summary" not in outputs  # one dataset, under its new name
    renamed = outputs["app_db.public.invoice_totals"]["facets"]["lifecycleStateChange"]
    assert renamed["lifecycleStateChange"] == "RENAME"
    assert renamed["previousIdentifier"] == {"name": "app_db.public.invoices_summary",
                                             "namespace": outputs["app_db.public.invoice_totals"]["namespace"]}
    assert outputs["app_db.public.orders"]["facets"]["columnLineage"]["fields"]["contact_email"]["inputFields"][0][
        "field"] == "email"


def test_openlineage_yml_with_the_file_transport_is_configuration_too(product, tmp_path):
    log_file = tmp_path / "lineage-events.jsonl"
    (tmp_path / "openlineage.yml").write_text(  # the working directory (the product fixture chdirs there)
        f"transport:\n  type: file\n  log_file_path: {log_file}\n  append: true\n")
    ctx = context(product, tmp_path)
    assert migrate_steps.expand(ctx, "app_db").to_revision == "0003_expand"
    sent = [json.loads(line) for line in log_file.read_text().splitlines() if line.strip()]
    assert [(e["eventType"], e["job"]["name"]) for e in sent] == [
        ("START", "ledgerly.migrate.app_db"), ("COMPLETE", "ledgerly.migrate.app_db")]
    for event in sent:
        assert spec_problems(event) == [], json.dumps(event, indent=1)


def test_the_console_transport_from_variables_logs_the_events(product, tmp_path, monkeypatch, caplog):
    monkeypatch.setenv("OPENLINEAGE__TRANSPORT__TYPE", "console")
    ctx = context(product, tmp_path)
    with caplog.at_level(logging.INFO, logger="openlineage.client.transport.console"):
        assert migrate_steps.expand(ctx, "app_db").to_revision == "0003_expand"
    sent = [json.loads(r.getMessage()) for r in caplog.records if r.name == "openlineage.client.transport.console"]
    assert [e["eventType"] for e in sent] == ["START", "COMPLETE"]
    assert all(spec_problems(e) == [] for e in sent)


def test_impact_names_downstream_assets_under_the_components_key_prefix(product, tmp_path):
    ctx = context(dataclasses.replace(product, asset_key_prefix=("acme",)), tmp_path)
    assert migrate_steps.expand(ctx, "app_db").to_revision == "0003_expand"
    found = migrate_steps.contract_impacts(ctx, "app_db")
    assert found[0].downstream == ("acme/services/billing", "acme/app_db/public/invoices_summary",
                                   "acme/services/reports")
    # with the asset graph of the component (key prefix acme) and a data team's asset on its orders table
    @asset(key=["analytics", "orders_report"], deps=[AssetKey(["acme", "app_db", "public", "orders"])])
    def orders_report() -> None: ...

    component = ReleaseProductComponent.from_attributes_dict(attributes={
        "manifest": str(product.directory / "release.yaml"), "translation": {"key_prefix": ["acme"]}})
    graph = Definitions.merge(build_defs_for_component(component), Definitions(assets=[orders_report])) \
        .get_repository_def().asset_graph
    downstream = tables_downstream(graph, ctx.product)
    assert downstream["app_db"]["orders"] == ["acme/services/billing", "analytics/orders_report",  # nearest first
                                              "acme/app_db/public/invoices_summary", "acme/services/reports"]
    found = migrate_steps.contract_impacts(ctx, "app_db", downstream["app_db"])
    assert found[0].downstream == ("acme/services/billing", "acme/app_db/public/invoices_summary",
                                   "acme/services/reports", "analytics/orders_report")
