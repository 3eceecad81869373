"""A release of tests/data/lineage_product through the real Dagster jobs, on a real instance.

Shared by tests/integration/test_lineage_jobs.py (reads the instance back) and the browser test
(opens the table page of the same instance). `RepositoryShop` runs the jobs as a run worker does,
from the reconstructed code location: here the product's definitions merged with a data team's
own assets on top of `orders` (`merged_definitions`), as the dg component or `Definitions.merge`
put them in one code location. The product is copied with only its first revision;
release 1 installs billing and reports 1.0.0 (first install), then revisions 0002-0004 are added
the way a team adds them between releases, and release 2 (billing 2.0.0) expands, promotes through
its canary steps, bakes (0 s) and runs the contract job; the records sensor then materializes
`releases/ledgerly` into the instance, as the daemon would.
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from dagster import AssetKey, DagsterInstance, Definitions, asset, build_sensor_context, execute_job
from dagster._core.definitions.reconstruct import ReconstructableRepository

from release_pipelines.core.states import ReleaseState
from release_pipelines.orchestration.definitions import build_definitions
from tests.e2e_support import write_instance
from tests.release_harness import QUIET, Shop, promote_config, release_config

DATA = Path(__file__).resolve().parent / "data"
LATER = ["0002_total.py", "0003_expand.py", "0004_contract.py"]
# A plain HTTP server is enough of a service here: the data is what the test looks at.
SERVICE = """
  - name: {name}
    depends_on: [app_db]
    deploy: {{local: {{command: ["{{python}}", "-m", "http.server", "{{port}}", "--bind", "127.0.0.1"]}}}}
    health: {{path: /}}
    canary: {{steps: [50, 100], bake_seconds: 0}}
"""


def stage_product(folder: Path) -> Path:
    """The fixture product in `folder` with only revision 0001; returns its release.yaml."""
    shutil.copytree(DATA / "lineage_product", folder, ignore=shutil.ignore_patterns("__pycache__"))
    manifest = folder / "release.yaml"
    text = manifest.read_text()
    for name in ("billing", "reports"):
        start = text.index(f"  - name: {name}\n")
        end = text.index("    reads:", start)
        text = text[:start] + SERVICE.format(name=name).lstrip("\n") + text[end:]
    manifest.write_text(text)
    later = folder.parent / "later_revisions"
    later.mkdir()
    for name in LATER:
        shutil.move(folder / "migrations" / "versions" / name, later / name)
    return manifest


def add_later_revisions(folder: Path) -> None:
    for name in LATER:
        shutil.copy(folder.parent / "later_revisions" / name, folder / "migrations" / "versions" / name)


MANIFEST_ENV = "LINEAGE_TEST_MANIFEST"  # the manifest `merged_definitions` builds from
USER_ASSETS = ["analytics/orders_report", "analytics/weekly_revenue"]  # downstream of orders, not in the manifest


@asset(key=["analytics", "orders_report"], deps=[AssetKey(["app_db", "public", "orders"])])
def orders_report() -> None:
    """A data team's model on top of the orders table (a dbt model, say)."""


@asset(key=["analytics", "weekly_revenue"], deps=[orders_report])
def weekly_revenue() -> None:
    """Downstream of the report: two hops from orders."""


def merged_definitions() -> Definitions:
    """The code location a run worker reconstructs: the product's definitions and the user's assets."""
    return Definitions.merge(build_definitions(os.environ[MANIFEST_ENV]),
                             Definitions(assets=[orders_report, weekly_revenue]))


class RepositoryShop(Shop):
    """A shop whose jobs run from the reconstructed code location (`merged_definitions`), in this
    process, so an op sees the code location's asset graph as it does under a run worker.
    MANIFEST_ENV must name the manifest."""

    def __post_init__(self) -> None:
        super().__post_init__()
        self.defs = merged_definitions()

    def run(self, job: str, run_config: dict[str, Any]):
        name = f"{self.product.name}_{job}"
        reconstructed = ReconstructableRepository.for_module(
            __name__, "merged_definitions", str(Path(__file__).resolve().parent.parent)).get_reconstructable_job(name)
        config = {**run_config, **QUIET}
        if job == "release":  # multiprocess by default; in process here, like execute_in_process
            config["execution"] = {"config": {"in_process": {}}}
        with execute_job(reconstructed, instance=self.instance, run_config=config) as result:
            return result


@dataclass
class LineageRelease:
    first_release: str
    release: str


def run_lineage_release(shop: Shop, folder: Path, before_second=lambda: None) -> LineageRelease:
    """Release 1 (first install), revisions added, release 2 through contract, records sensor."""
    first = shop.run("release", release_config({"billing": "1.0.0", "reports": "1.0.0"}))
    assert first.success, shop.failure_message(first)
    first_id = shop.ledger.releases(product=shop.product.name, limit=1)[0].id
    add_later_revisions(folder)
    before_second()
    second = shop.run("release", release_config({"billing": "2.0.0"}))
    assert second.success, shop.failure_message(second)
    release = shop.active()
    for _ in range(3):
        if shop.ledger.get(release.id).state is ReleaseState.BAKING:
            break
        promoted = shop.run("promote", promote_config(release.id))
        assert promoted.success, shop.failure_message(promoted)
    assert shop.ledger.get(release.id).state is ReleaseState.BAKING
    contracted = shop.run("contract", {"ops": {"contract_migrations": {"config": {"release_id": release.id}}}})
    assert contracted.success, shop.failure_message(contracted)
    assert shop.ledger.get(release.id).state is ReleaseState.COMPLETED
    record_releases(shop)
    return LineageRelease(first_id, release.id)


def record_releases(shop: Shop) -> None:
    """One tick of the records sensor; its materializations stored as the daemon stores them."""
    sensor = shop.defs.resolve_sensor_def(f"{shop.product.name}_release_records")
    context = build_sensor_context(instance=shop.instance, resources=shop.defs.resources, definitions=shop.defs)
    result = sensor.evaluate_tick(context)
    for event in result.asset_events:
        shop.instance.report_runless_asset_event(event)


def instance_at(dagster_home: Path) -> DagsterInstance:
    """A persistent instance in `dagster_home` (SQLite storage there), as a webserver would open it."""
    write_instance(dagster_home, postgres=False)
    return DagsterInstance.from_config(str(dagster_home))
