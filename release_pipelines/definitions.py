"""The Dagster code location: every product manifest under RELEASE_MANIFESTS becomes jobs,
sensors, schedules and assets. A broken manifest fails the load with the same clear message the
CLI prints.

    dagster dev -m release_pipelines.definitions
"""

from pathlib import Path

from dagster import AssetKey, AssetSpec, Definitions

from assets.checks import checks_job, table_asset_checks
from assets.tables import service_asset_specs, table_asset_specs
from release_pipelines import settings
from release_pipelines.canary_sensor import build_canary_sensor
from release_pipelines.failure_sensor import build_failure_sensor
from release_pipelines.jobs.approval import build_approval_job
from release_pipelines.jobs.contract import build_contract_job
from release_pipelines.jobs.promote import build_promote_job
from release_pipelines.jobs.rehearsal import build_rehearsal_job, build_rehearsal_schedule
from release_pipelines.jobs.release import build_release_job
from release_pipelines.jobs.rollback import build_rollback_job
from release_pipelines.product import Product, load_products
from release_pipelines.schedules import build_records_sensor, build_release_window_schedule
from resources.dagster_resources import default_resources


def product_definitions(product: Product) -> Definitions:
    if product.manifest.environments:  # one set of jobs and sensors per environment
        from release_pipelines.environments import environment_definitions

        return environment_definitions(product)
    release, promote, rollback = build_release_job(product), build_promote_job(product), build_rollback_job(product)
    approve, rehearse, contract = build_approval_job(product), build_rehearsal_job(product), build_contract_job(product)
    return Definitions(
        assets=[
            *table_asset_specs(product.manifest),
            *service_asset_specs(product.manifest),
            AssetSpec(AssetKey(["releases", product.name]), group_name="releases",
                      description=f"Release records of {product.name}, one materialization per release."),
            AssetSpec(AssetKey(["metrics", product.name]), group_name="releases",
                      description=f"Delivery metrics of {product.name} (duration, change failure rate, "
                      "time to restore, frequency), updated when a release finishes."),
        ],
        asset_checks=table_asset_checks(product.manifest, product.directory),
        jobs=[release, promote, rollback, contract, checks_job(product.manifest), approve, rehearse],
        schedules=[build_release_window_schedule(product, release), build_rehearsal_schedule(product, rehearse)],
        sensors=[
            build_canary_sensor(product, promote, rollback),
            build_failure_sensor(product, [release, promote, contract], rollback),
            build_records_sensor(product),
        ],
    )


def build_definitions(location: str | Path | None = None) -> Definitions:
    products = load_products(location or settings.default_manifest_path())
    return Definitions.merge(*(product_definitions(p) for p in products), Definitions(resources=default_resources()))


defs = build_definitions()
