"""A product's Dagster definitions: its release, promote, rollback, contract, approval,
rehearsal and checks jobs, the canary, run-failure, records and ledger-checkpoint sensors, the
schedules, and the table and service assets with their checks. `release_pipelines.code_location`
and the component call these; nothing here runs at import.
"""

from pathlib import Path
from typing import Any

from dagster import AssetKey, AssetSpec, Definitions, GraphDefinition
from dagster._core.definitions.dependency import NodeInvocation

from release_pipelines.assets.checks import checks_job, table_asset_checks
from release_pipelines.assets.keys import AssetKeys
from release_pipelines.assets.tables import (
    TableAssetTranslator,
    service_asset_specs,
    table_asset_specs,
)
from release_pipelines.core.environments import environment_products
from release_pipelines.core.product import Product
from release_pipelines.orchestration.canary_sensor import build_canary_sensor
from release_pipelines.orchestration.checkpoints import build_checkpoint_sensor
from release_pipelines.orchestration.dagster_resources import default_resources
from release_pipelines.orchestration.failure_sensor import build_failure_sensor
from release_pipelines.orchestration.jobs.approval import build_approval_job
from release_pipelines.orchestration.jobs.contract import build_contract_job
from release_pipelines.orchestration.jobs.promote import build_promote_job
from release_pipelines.orchestration.jobs.rehearsal import (
    build_rehearsal_job,
    build_rehearsal_schedule,
)
from release_pipelines.orchestration.jobs.release import build_release_job
from release_pipelines.orchestration.jobs.rollback import build_rollback_job
from release_pipelines.orchestration.schedules import (
    build_records_sensor,
    build_release_window_schedule,
)
from release_pipelines.resources.manifest_files import load_products


def product_definitions(product: Product) -> Definitions:
    if product.manifest.environments:  # one set of jobs and sensors per environment
        return environment_definitions(product)
    release, promote, rollback = build_release_job(product), build_promote_job(product), build_rollback_job(product)
    approve, rehearse, contract = build_approval_job(product), build_rehearsal_job(product), build_contract_job(product)
    translator = TableAssetTranslator(AssetKeys.of(product))
    return Definitions(
        assets=[
            *table_asset_specs(product.manifest, translator),
            *service_asset_specs(product.manifest, translator),
            AssetSpec(AssetKey(["releases", product.name]), group_name="releases",
                      description=f"Release records of {product.name}, one materialization per release."),
            AssetSpec(AssetKey(["metrics", product.name]), group_name="releases",
                      description=f"Delivery metrics of {product.name} (duration, change failure rate, "
                      "time to restore, frequency), updated when a release finishes."),
        ],
        asset_checks=table_asset_checks(product.manifest, product.directory, translator),
        jobs=[release, promote, rollback, contract, checks_job(product.manifest, translator), approve, rehearse],
        schedules=[build_release_window_schedule(product, release), build_rehearsal_schedule(product, rehearse)],
        sensors=[
            build_canary_sensor(product, promote, rollback),
            build_failure_sensor(product, [release, promote, contract], rollback),
            build_records_sensor(product),
            build_checkpoint_sensor(product),
        ],
    )


def build_definitions(location: str | Path) -> Definitions:
    """Definitions of every product under `location` (a manifest file or a folder of them)."""
    products = load_products(location)
    return Definitions.merge(*(product_definitions(p) for p in products), Definitions(resources=default_resources()))


def environment_definitions(product: Product) -> Definitions:
    """The Dagster definitions of a product with environments: every job, sensor and schedule per
    environment (`<product>_<env>_*`); table/service assets and the data-checks job once (on the
    first environment's databases, since asset keys name tables, not environments)."""
    stages = environment_products(product)
    first = stages[0]
    translator = TableAssetTranslator(AssetKeys.of(product))
    assets: list[Any] = [*table_asset_specs(first.manifest, translator), *service_asset_specs(first.manifest, translator)]
    jobs: list[Any] = [checks_job(first.manifest, translator)]
    schedules: list[Any] = []
    sensors: list[Any] = []
    for stage in stages:
        prefix = stage.name
        release, promote, rollback, approve, rehearse, contract = (
            namespaced_job(build(stage), prefix) for build in (
                build_release_job, build_promote_job, build_rollback_job, build_approval_job, build_rehearsal_job,
                build_contract_job))
        assets += [
            AssetSpec(AssetKey(["releases", stage.name]), group_name="releases",
                      description=f"Release records of {stage.base_name} in {stage.environment}."),
            AssetSpec(AssetKey(["metrics", stage.name]), group_name="releases",
                      description=f"Delivery metrics of {stage.base_name} in {stage.environment}."),
        ]
        jobs += [release, promote, rollback, contract, approve, rehearse]
        schedules += [build_release_window_schedule(stage, release), build_rehearsal_schedule(stage, rehearse)]
        sensors += [
            build_canary_sensor(stage, promote, rollback),
            build_failure_sensor(stage, [release, promote, contract], rollback),
            build_records_sensor(stage),
            build_checkpoint_sensor(stage),
        ]
    return Definitions(assets=assets, asset_checks=table_asset_checks(first.manifest, first.directory, translator),
                       jobs=jobs, schedules=schedules, sensors=sensors)


def namespaced_job(job: Any, prefix: str) -> Any:
    """The same job with its op definitions renamed `<prefix>__<op>` but invoked under their old
    names, so run config (`ops: {preflight: ...}`), sensors and the UI see the same op names while
    one repository can hold the job once per environment (Dagster wants op definition names
    unique per repository)."""
    graph = job.graph
    if all(d.name.startswith(f"{prefix}__") for d in graph.node_defs):
        return job  # already namespaced by its builder (jobs.common.product_job)
    renamed = {d.name: d.with_replaced_properties(name=f"{prefix}__{d.name}") for d in graph.node_defs}
    dependencies: dict[Any, Any] = {}
    invoked: set[str] = set()
    for key, deps in graph.dependencies.items():
        name, alias = (key.name, key.alias) if isinstance(key, NodeInvocation) else (key, None)
        alias = alias or name
        invoked.add(alias)
        dependencies[NodeInvocation(renamed[name].name, alias=alias, tags=getattr(key, "tags", None),
                                    hook_defs=getattr(key, "hook_defs", None),
                                    retry_policy=getattr(key, "retry_policy", None))] = deps
    for old, new in renamed.items():
        if old not in invoked:
            dependencies[NodeInvocation(new.name, alias=old)] = {}
    rebuilt = GraphDefinition(name=graph.name, description=graph.description, node_defs=list(renamed.values()),
                              dependencies=dependencies)
    return rebuilt.to_job(name=job.name, description=job.description, tags=job.tags)  # resources bound by Definitions
