"""`<product>_release`: preflight -> expand migrations + gates -> canaries in waves -> first step.

Nothing moves traffic until every gate has passed; a failed op fails the run, and the run-failure
sensor launches the rollback job.
"""

import os

from dagster import (
    Config,
    DependencyDefinition,
    Failure,
    In,
    JobDefinition,
    Nothing,
    OpDefinition,
    OpExecutionContext,
    Out,
    Output,
    multi_or_in_process_executor,
    op,
)
from pydantic import Field

from release_pipelines.assets.keys import AssetKeys
from release_pipelines.core.errors import ReleaseError
from release_pipelines.core.planner import ServiceChange, plan_release
from release_pipelines.core.product import Product
from release_pipelines.core.states import ReleaseState
from release_pipelines.core.traffic import weights_for_step
from release_pipelines.orchestration.dagster_resources import (
    FlagsResource,
    LedgerResource,
    MetricsResource,
    PlatformResource,
)
from release_pipelines.orchestration.jobs.common import (
    actor_of,
    after,
    asset_downstream,
    failing_clearly,
    gate_evaluations,
    migration_materializations,
    nothing_done,
    op_name,
    product_job,
    readiness_observation,
    release_log,
    service_materialization,
    step_context,
    tag_run,
)
from release_pipelines.steps import blue_green as blue_green_steps
from release_pipelines.steps import migrate as migrate_steps
from release_pipelines.steps.deploy import apply_deploy
from release_pipelines.steps.environments import entry_problems
from release_pipelines.steps.preflight import preflight_problems
from release_pipelines.steps.traffic import apply_weights

# imported once by the forkserver, so a step's process starts with Dagster and this package loaded
PRELOAD_MODULES = ["dagster", "release_pipelines.orchestration.definitions"]


def _forkserver_unless_chosen(config: dict) -> dict:
    """Multiprocess steps fork from a server that imported Dagster and this package once, instead
    of a fresh interpreter per step importing them (seconds each); `start_method` in run config
    still wins."""
    mode, options = next(iter(config.items()), ("multiprocess", {}))  # nothing chosen: the default
    if mode == "multiprocess" and not options.get("start_method"):
        options = {**options, "start_method": {"forkserver": {"preload_modules": PRELOAD_MODULES}}}
    return {mode: options}


# the default executor (multiprocess, or in_process by run config) with forkserver as the start method
release_executor = multi_or_in_process_executor.configured(
    _forkserver_unless_chosen, config_schema=multi_or_in_process_executor.config_schema.as_field())


class ReleaseConfig(Config):
    """What a person gives at launch (Launchpad, CLI, schedule)."""

    versions: dict[str, str] = Field(description="service -> new version, e.g. {orders: '1.4.0'}")
    allow_downgrade: bool = Field(default=False, description="allow a version lower than the running stable")
    break_glass_reason: str = Field(default="", description="launch outside a release window (needs approval)")


def _metrics_provider(services):
    """Where the stable versions' counters are read for the error-budget check (as the sensor does);
    built here rather than required as a resource, so jobs built without `metrics` still run."""
    return MetricsResource(prometheus_url=os.environ.get("RELEASE_PROMETHEUS_URL", "")).provider(services)


def _preflight_op(product: Product) -> OpDefinition:
    @op(name=f"{product.name}__preflight", out=Out(str, description="release id"), tags={"kind": "preflight"})
    def preflight(
        context: OpExecutionContext,
        config: ReleaseConfig,
        release_ledger: LedgerResource,
        release_platform: PlatformResource,
        release_flags: FlagsResource,
    ) -> str:
        """Plan and check the release; only a release that passes every check is recorded as started."""
        book = release_ledger.open()
        services = release_platform.for_product(product)
        current = {
            s.name: status.stable_version
            for s in product.manifest.services
            if (status := services.status(s.name)).stable_version
        }
        actor = actor_of(context)
        try:
            plan = plan_release(product.manifest, config.versions, current, config.allow_downgrade)
            problems = preflight_problems(product, plan, break_glass_reason=config.break_glass_reason,
                                          platform=services, metrics_provider=_metrics_provider(services))
            problems += entry_problems(product, config.versions, book, actor)  # promoted, never re-chosen
            if problems:
                raise ReleaseError("preflight refused the release:\n" + "\n".join(f"  - {p}" for p in problems))
            release = book.start_release(
                product.name,
                plan.versions(),
                {c.service: c.from_version for c in plan.changes if c.from_version},
                actor,
                run_id=context.run_id,
                payload={"break_glass_reason": config.break_glass_reason} if config.break_glass_reason else None,
            )
        except ReleaseError as exc:
            book.record(None, "launch:refused", actor, run_id=context.run_id,
                        payload={"product": product.name, "versions": dict(config.versions), "reason": str(exc)})
            raise Failure(description=str(exc)) from None
        tag_run(context, product, release.id)
        plan_summary = [[step.label for step in wave] for wave in plan.waves]
        book.transition(release.id, ReleaseState.PREFLIGHT, actor, run_id=context.run_id, payload={"plan": plan_summary})
        release_flags.for_product(product).ensure(product.manifest.flags)
        book.transition(release.id, ReleaseState.EXPANDING, actor, run_id=context.run_id)
        release_log(context, release.id)("plan: " + " | ".join(", ".join(w) for w in plan_summary))
        for line in migrate_steps.contract_preview(step_context(context, product, book, release.id), release.versions,
                                                   asset_downstream(context, product)):
            release_log(context, release.id, "warning")(line)
        return release.id

    return preflight


def _migrate_op(product: Product, database: str) -> OpDefinition:
    @op(name=op_name("migrate", database), ins={"release_id": In(str)}, out=Out(dict), tags={"kind": "migrate"})
    def migrate(context: OpExecutionContext, release_id: str, release_ledger: LedgerResource):
        """Run the pending EXPAND revisions of this database (contract ones wait for the contract job)."""
        book = release_ledger.open()
        release = book.get(release_id)
        ctx = step_context(context, product, book, release_id)
        if not migrate_steps.needed(product, release.versions, database):
            ctx.log(f"{database}: no service in this release depends on it")
            yield Output({"skipped": True})
            return
        with failing_clearly(ctx, f"migrate {database}"):
            outcome = migrate_steps.expand(ctx, database)
            yield from migration_materializations(outcome, AssetKeys.of(product))
        yield Output({"database": database, "from_revision": outcome.from_revision,
                      "to_revision": outcome.to_revision, "rows_before": outcome.rows_before})

    return migrate


def _gate_op(product: Product, database: str) -> OpDefinition:
    @op(
        name=op_name("gate", database),
        ins={"release_id": In(str), "migration": In(dict)},
        out=Out(Nothing),
        tags={"kind": "gate"},
    )
    def gate(context: OpExecutionContext, release_id: str, migration: dict, release_ledger: LedgerResource):
        """Data-integrity gates on the tables; a failing blocking gate stops the release here."""
        book = release_ledger.open()
        ctx = step_context(context, product, book, release_id)
        if migration.get("skipped"):
            ctx.log(f"{database}: not part of this release")
        else:
            with failing_clearly(ctx, f"gates on {database}"):
                yield from gate_evaluations(ctx, database, migration.get("rows_before", {}))
        yield nothing_done()

    return gate


def _deploy_op(product: Product) -> OpDefinition:
    """One definition for every service, invoked as `deploy_<service>` (the node name says which):
    building an op per service made definitions of a 500-service product take seconds to load."""
    service_of = {op_name("deploy", s.name): s.name for s in product.manifest.services}

    @op(name=f"{product.name}__deploy", ins={"release_id": In(str), "after": In(Nothing)}, out=Out(Nothing),
        tags={"kind": "deploy"})
    def deploy(context: OpExecutionContext, release_id: str, release_ledger: LedgerResource,
               release_platform: PlatformResource):
        """Start the new version beside stable at 0 % traffic and wait until it is healthy."""
        service = service_of[context.op_handle.name]
        book = release_ledger.open()
        release = book.get(release_id)
        if service not in release.versions:
            release_log(context, release_id)(f"{service}: unchanged in this release")
            yield nothing_done()
            return
        ctx = step_context(context, product, book, release_id)
        change = ServiceChange(service, release.versions[service], release.previous.get(service))
        with failing_clearly(ctx, f"deploy {service} {change.to_version}"):
            status = apply_deploy(ctx, release_platform.for_product(product), change)
        yield service_materialization(product, service, status, release_id, f"canary {change.to_version} deployed")
        yield nothing_done()

    return deploy


def _first_step_op(product: Product) -> OpDefinition:
    @op(name=f"{product.name}__start_canary", ins={"release_id": In(str), "after": In(Nothing)}, out=Out(str),
        tags={"kind": "traffic"})
    def start_canary(context: OpExecutionContext, release_id: str, release_ledger: LedgerResource,
                     release_platform: PlatformResource, release_flags: FlagsResource):
        """First traffic step: each canary gets its first share; the canary sensor takes it from here.
        Blue-green services (steps/blue_green.py) are gated and switched at once instead."""
        book = release_ledger.open()
        release = book.get(release_id)
        ctx = step_context(context, product, book, release_id)
        services = release_platform.for_product(product)
        with failing_clearly(ctx, "blue-green switch"):
            switched = blue_green_steps.apply(ctx, services, release)
        for service in switched:
            yield service_materialization(product, service, services.status(service), release_id,
                                          f"{release.versions[service]} switched to at once (blue-green)")
        canaries = [s for s in release.versions if services.status(s).canary_version == release.versions[s]]
        weights = weights_for_step(product.manifest, canaries, 0)
        with failing_clearly(ctx, "first traffic step"):
            apply_weights(ctx, services, weights, 0)
        book.transition(release_id, ReleaseState.CANARY, ctx.actor, run_id=context.run_id, canary_step=0,
                        payload={"weights": weights})
        for service in canaries:
            yield service_materialization(product, service, services.status(service), release_id,
                                          f"canary at {weights[service]}%")
        if not canaries:  # only first installs (or blue-green switches): nothing to judge
            book.transition(release_id, ReleaseState.PROMOTING, ctx.actor, run_id=context.run_id)
            if switched:  # promoted at once: flags on, bake (rollback = switch back), then complete
                blue_green_steps.finish_switched(ctx, book, release_flags.for_product(product), release)
            else:
                book.transition(release_id, ReleaseState.COMPLETED, ctx.actor, run_id=context.run_id,
                                payload={"reason": "first install: no previous version to compare against"})
            ctx.log("blue-green switch done: " + ", ".join(switched) if switched
                    else "first install of every service: release completed")
        yield readiness_observation(product, book, release_id, "canary" if canaries else book.get(release_id).state.value)
        yield Output(release_id)

    return start_canary


def build_release_job(product: Product) -> JobDefinition:
    """Every service and database is a node, so the job graph shows the dependency waves; a node
    waits for what it depends on through its `after` input (a fan-in of Nothing outputs)."""
    manifest = product.manifest
    database_names = {d.name for d in manifest.databases}
    nodes: list[OpDefinition] = [_preflight_op(product), _first_step_op(product)]
    deps: dict[str, dict] = {}
    aliases: dict[str, str] = {}
    finished_by: dict[str, str] = {}  # graph node (service/db) -> op whose completion means "ready"
    for database in manifest.databases:
        migrate_name, gate_name = op_name("migrate", database.name), op_name("gate", database.name)
        nodes += [_migrate_op(product, database.name), _gate_op(product, database.name)]
        deps[migrate_name] = {"release_id": DependencyDefinition("preflight")}
        deps[gate_name] = {
            "release_id": DependencyDefinition("preflight"),
            "migration": DependencyDefinition(migrate_name),
        }
        finished_by[database.name] = gate_name
    if manifest.services:
        nodes.append(_deploy_op(product))
    for service in manifest.services:
        finished_by[service.name] = op_name("deploy", service.name)
    for service in manifest.services:
        name = op_name("deploy", service.name)
        aliases[name] = "deploy"
        deps[name] = {"release_id": DependencyDefinition("preflight")} | after(finished_by[d] for d in service.depends_on)
    every = [finished_by[n] for n in sorted(finished_by) if n not in database_names] + [
        finished_by[d] for d in sorted(database_names)
    ]
    deps["start_canary"] = {"release_id": DependencyDefinition("preflight")} | after(every)
    return product_job(
        product,
        "release",
        f"Release new versions of {product.name}: preflight, expand migrations and gates, "
        "canaries in dependency waves, first traffic step.",
        nodes,
        deps,
        "release",
        executor_def=release_executor,
        aliases=aliases,
    )
