"""`<product>_contract`: the destructive migrations, after the old version is gone.

This is the point of no return, recorded as such: from `contracting` on, a release can only be
fixed forward. Allowed only for a promoted release that has finished baking, when no old version
of a service using the database still runs, and with the manifest's contract approvals.
"""

from datetime import UTC, datetime

from dagster import Config, JobDefinition, OpExecutionContext, in_process_executor, op
from pydantic import Field

from release_pipelines.assets.keys import AssetKeys
from release_pipelines.assets.tables import impact_observations
from release_pipelines.core.bake import bake_remaining
from release_pipelines.core.errors import ReleaseError
from release_pipelines.core.manifest import ApprovalPhase
from release_pipelines.core.product import Product
from release_pipelines.core.states import ReleaseState
from release_pipelines.orchestration.dagster_resources import LedgerResource, PlatformResource
from release_pipelines.orchestration.jobs.common import (
    asset_downstream,
    begin_step,
    failing_clearly,
    gate_evaluations,
    migration_materializations,
    product_job,
    readiness_observation,
    release_log,
)
from release_pipelines.steps import migrate as migrate_steps
from release_pipelines.steps.approval import missing_approvals


class ContractConfig(Config):
    release_id: str = Field(default="", description="empty = the product's active release")


def old_versions_running(product: Product, release, platform, database: str) -> list[str]:
    """Services using `database` that still run a version other than the released one."""
    running = []
    for service in product.manifest.services:
        if database not in service.depends_on:
            continue
        status = platform.status(service.name)
        expected = release.versions.get(service.name, status.stable_version)
        if status.canary_version is not None or status.stable_version != expected:
            running.append(
                f"{service.name} runs {status.stable_version}"
                + (f" and canary {status.canary_version}" if status.canary_version else "")
            )
    return running


def build_contract_job(product: Product) -> JobDefinition:
    @op(name="contract_migrations", out={}, tags={"kind": "migrate"})
    def contract_migrations(
        context: OpExecutionContext,
        config: ContractConfig,
        release_ledger: LedgerResource,
        release_platform: PlatformResource,
    ):
        """Run the contract revisions of the release's databases, then the data gates."""
        step = begin_step(context, product, "contract", release_ledger, config.release_id, release_platform)
        book, release, ctx, services = step.book, step.release, step.ctx, step.platform
        with failing_clearly(ctx, "contract"):
            if release.state == ReleaseState.CONTRACTING:
                # Past the point of no return a run was killed or failed: the only way is forward.
                started = [e for e in book.events(release.id) if e.kind == "state:contracting"]
                databases = list(started[-1].payload.get("databases", [])) if started else []
                context.log.warning(
                    f"release {release.id}: resuming contract migrations on "
                    f"{', '.join(databases) or 'no database'} (already past the point of no return)"
                )
                downstream = asset_downstream(context, product)
                for database in databases:
                    yield from migration_materializations(
                        migrate_steps.contract(ctx, database, asset_downstream=downstream.get(database)),
                        AssetKeys.of(product))
                    yield from gate_evaluations(ctx, database, {})
                book.transition(
                    release.id, ReleaseState.COMPLETED, ctx.actor, run_id=context.run_id
                )
                context.log.info(f"release {release.id} completed")
                return
            if release.state != ReleaseState.BAKING:
                raise ReleaseError(
                    f"release {release.id} is {release.state.value}; only a promoted release "
                    "(baking) can run its contract migrations"
                )
            left = bake_remaining(product, release, datetime.now(UTC))
            if left > 0:
                raise ReleaseError(f"release {release.id} is still baking for {left:.0f} s")
            databases = migrate_steps.contract_pending(product, release.versions)
            if not databases:
                raise ReleaseError(f"release {release.id} has no pending contract migrations")
            blockers = [
                b for db in databases for b in old_versions_running(product, release, services, db)
            ]
            if blockers:
                raise ReleaseError("old versions still run: " + "; ".join(blockers))
            waiting = missing_approvals(product.manifest, book, release, ApprovalPhase.contract)
            if waiting:
                raise ReleaseError(waiting)
            downstream = asset_downstream(context, product)  # the code location's graph, user assets included
            planned = {db: migrate_steps.contract_impacts(ctx, db, downstream.get(db)) for db in databases}  # before no return
            for db, found in planned.items():
                yield from impact_observations(product.manifest.database(db), found, release.id, AssetKeys.of(product))
            book.transition(
                release.id,
                ReleaseState.CONTRACTING,
                ctx.actor,
                run_id=context.run_id,
                payload={"point_of_no_return": True, "databases": databases},
            )
            yield readiness_observation(product, book, release.id, "contracting")
            release_log(context, release.id, "warning")(
                f"point of no return - contract migrations on {', '.join(databases)}"
            )
            for database in databases:
                yield from migration_materializations(
                    migrate_steps.contract(ctx, database, planned[database], downstream.get(database)),
                    AssetKeys.of(product))
                yield from gate_evaluations(ctx, database, {})
            book.transition(release.id, ReleaseState.COMPLETED, ctx.actor, run_id=context.run_id)
            yield readiness_observation(product, book, release.id, "completed")
        release_log(context, release.id)("release completed")

    return product_job(
        product,
        "contract",
        f"Point of no return: run the contract migrations of the promoted {product.name} release.",
        [contract_migrations],
        {},
        "contract",
        executor_def=in_process_executor,
    )
