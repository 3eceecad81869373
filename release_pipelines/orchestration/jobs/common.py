"""What every release op shares: the preamble (`begin_step`), tags, naming, the step context, and
turning errors into Failures."""

from __future__ import annotations

import contextlib
import re
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass

from dagster import (
    AssetCheckEvaluation,
    AssetKey,
    AssetMaterialization,
    AssetObservation,
    DependencyDefinition,
    Failure,
    GraphDefinition,
    MetadataValue,
    MultiDependencyDefinition,
    NodeInvocation,
    OpExecutionContext,
    Output,
)
from dagster._check import CheckError
from dagster._core.definitions.assets.graph.base_asset_graph import BaseAssetGraph

from release_pipelines.assets.checks import gate_check_evaluation
from release_pipelines.assets.keys import DEFAULT_KEYS, AssetKeys
from release_pipelines.assets.tables import table_materialization
from release_pipelines.core.errors import LedgerError, ReleaseError
from release_pipelines.core.product import Product
from release_pipelines.core.readiness import Readiness, RollbackReadiness
from release_pipelines.orchestration.dagster_resources import LedgerResource, PlatformResource
from release_pipelines.resources import settings
from release_pipelines.resources.ledger import Ledger
from release_pipelines.resources.ledger_schema import Release
from release_pipelines.resources.platform import DeploymentPlatform
from release_pipelines.resources.tracing import release_span
from release_pipelines.steps import gates as gate_steps
from release_pipelines.steps.context import StepContext
from release_pipelines.steps.migrate import MigrationOutcome
from release_pipelines.steps.readiness import readiness_for

TAG_PRODUCT = "release/product"
TAG_RELEASE = "release/id"
TAG_KIND = "release/job"
USER_TAG = "dagster/user"  # set by Dagster+ / authenticated webservers when a person launches


def op_name(prefix: str, name: str) -> str:
    """Dagster names allow [A-Za-z0-9_]; manifest names may contain '-'."""
    return f"{prefix}_{re.sub(r'[^A-Za-z0-9_]', '_', name)}"


def actor_of(context: OpExecutionContext) -> str:
    return context.run.tags.get(USER_TAG) or context.run.tags.get("release/actor") or settings.identity()


def release_prefix(release_id: str) -> str:
    """The correlation prefix of every log line an op writes for a release."""
    return f"[release {release_id}] "


def release_log(context: OpExecutionContext, release_id: str, level: str = "info") -> Callable[[str], None]:
    """`context.log.<level>` with the `[release <id>]` prefix (the release id is the correlation id)."""
    write = getattr(context.log, level)
    prefix = release_prefix(release_id)

    def log(message: str) -> None:
        write(message if message.startswith(prefix) else prefix + message)

    return log


def step_context(context: OpExecutionContext, product: Product, ledger, release_id: str) -> StepContext:
    return StepContext(
        product=product,
        ledger=ledger,
        release_id=release_id,
        actor=actor_of(context),
        run_id=context.run_id,
        log=release_log(context, release_id),
    )


def asset_downstream(context: OpExecutionContext, product: Product) -> dict[str, dict[str, list[str]]]:
    """`tables_downstream` of the code location the run came from: what a contract's impact adds to
    the manifest's graph (a data team's own assets merged into the definitions, a dbt model say)."""
    try:
        graph = context.repository_def.asset_graph
    except CheckError:  # a job executed in process on its own has no code location: the manifest's graph only
        return {}
    return tables_downstream(graph, product)


def tables_downstream(graph: BaseAssetGraph, product: Product) -> dict[str, dict[str, list[str]]]:
    """Database -> table -> every asset downstream of the table's asset (`AssetKeys.table`, under
    the component's key prefix) in `graph`, nearest first, as key strings: plain data for the steps."""
    prefix, databases = list(AssetKeys.of(product).prefix), {d.name for d in product.manifest.databases}
    found: dict[str, dict[str, list[str]]] = {}
    for key in graph.get_all_asset_keys():
        path = list(key.path)
        if len(path) != len(prefix) + 3 or path[:len(prefix)] != prefix or path[len(prefix)] not in databases:
            continue  # not a table key `[<prefix>, database, schema, table]`
        queue, seen, below = [key], {key}, []
        while queue:  # breadth first
            for child in sorted(graph.get(queue.pop(0)).child_keys, key=lambda k: k.to_user_string()):
                if child not in seen:
                    seen.add(child)
                    below.append(child.to_user_string())
                    queue.append(child)
        if below:
            known = found.setdefault(path[-3], {}).setdefault(path[-1], [])
            known += [k for k in below if k not in known]  # the same table name in two schemas
    return found


def tag_run(context: OpExecutionContext, product: Product, release_id: str) -> None:
    """Tag the run with product and release so the UI can filter and sensors can find it (a run
    launched with these tags, as the sensors launch theirs, is left as it is)."""
    tags = {TAG_PRODUCT: product.name, TAG_RELEASE: release_id}
    if any(context.run.tags.get(k) != v for k, v in tags.items()):
        context.instance.add_run_tags(context.run_id, tags)


@contextlib.contextmanager
def failing_clearly(ctx: StepContext | None, what: str) -> Iterator[None]:
    """Record a failed step in the ledger and fail the op with the project's own message.

    A LedgerError is not recorded: the ledger just refused a write (disk full, read-only), and a
    second refused write would replace its clear message with a raw driver error.
    Also the step's OpenTelemetry span (`release_pipelines.tracing`; a no-op unless configured)."""
    with release_span(what, ctx.release_id if ctx else None, product=ctx.product.name if ctx else None):
        try:
            yield
        except ReleaseError as exc:
            if ctx is not None and not isinstance(exc, LedgerError):
                ctx.record("step:failed", step=what, error=str(exc))
            raise Failure(description=f"{what}: {exc}") from None


def nothing_done() -> Output:
    """The `Nothing` output of an op, given explicitly: left implicit, Dagster writes one more event
    per op ("Emitting implicit Nothing") to the run's log."""
    return Output(None)


def find_release(book, product: Product, release_id: str):
    """The named release, or the product's active one; a clear error when there is none."""
    if release_id:
        return book.get(release_id)
    release = book.active_release(product.name)
    if release is None:
        raise ReleaseError(f"{product.name} has no active release; give release_id")
    return release


@dataclass(frozen=True)
class Step:
    """What a release op works with: the ledger, the release as the op found it, the step context
    (actor, run, log) and, when the op asked for it, the product's platform."""

    book: Ledger
    release: Release
    ctx: StepContext
    platform: DeploymentPlatform | None = None


def begin_step(context: OpExecutionContext, product: Product, what: str, ledger: LedgerResource,
               release_id: str = "", platform: PlatformResource | None = None) -> Step:
    """The preamble of every release op: open the ledger, find the release (`release_id`, or the
    product's active one; none fails the op naming `what`), tag the run, build the step context."""
    book = ledger.open()
    with failing_clearly(None, what):
        release = find_release(book, product, release_id)
    tag_run(context, product, release.id)
    return Step(book, release, step_context(context, product, book, release.id),
                platform.for_product(product) if platform is not None else None)


def service_materialization(product: Product, service: str, status, release_id: str, note: str) -> AssetMaterialization:
    """`services/<name>` with the versions that run and the canary's share of traffic."""
    return AssetMaterialization(
        asset_key=AssetKeys.of(product).service(service),
        description=note,
        metadata={
            "release_id": release_id,
            "product": product.name,
            "stable_version": status.stable_version or "",
            "canary_version": status.canary_version or "",
            "canary_weight": MetadataValue.int(int(status.canary_weight)),
            "note": note,
        },
    )


def migration_materializations(outcome: MigrationOutcome, keys: AssetKeys = DEFAULT_KEYS) -> Iterator[AssetMaterialization]:
    """One materialization per table a migration step changed (declared or discovered): the diff,
    previous and new column schema, column lineage, impact, and the revision as data version."""
    for change in outcome.tables:
        yield table_materialization(
            outcome.database, change.table, outcome.from_revision, outcome.to_revision, change.statements,
            change.duration_s, change.row_count, change.columns,
            keys.table(outcome.database, change.table.schema_, change.table.name), changes=change.changes,
            previous_columns=change.previous_columns, data_version=change.data_version,
            column_lineage=change.column_lineage, impacts=change.impacts, lifecycle=change.lifecycle,
            declared=change.declared, release_id=outcome.release_id, column_notes=change.column_notes)


def gate_evaluations(ctx: StepContext, database: str, rows_before: dict[str, int]) -> Iterator[AssetCheckEvaluation]:
    """Run the database's gates and yield each verdict as an asset check evaluation, then stop on a
    blocking failure (yielded first: an event logged before a raise would be lost)."""
    results = gate_steps.run_gates(ctx, database, rows_before)
    yield from (gate_check_evaluation(r, keys=AssetKeys.of(ctx.product)) for r in results)
    gate_steps.stop_on_blocking_failures(results)


def readiness_observation(product: Product, ledger, release_id: str, phase: str) -> AssetObservation:
    """`releases/<product>` with the release's rollback readiness, emitted when it changes phase."""
    release = ledger.get(release_id)
    try:
        readiness = readiness_for(ledger, product, release)
    except Exception as exc:  # noqa: BLE001 - an observation must never fail the release step
        readiness = RollbackReadiness(Readiness.degraded, None, (f"readiness unknown: {type(exc).__name__}: {exc}",),
                                      "unavailable")
    return AssetObservation(
        asset_key=AssetKey(["releases", product.name]),
        description=f"release {release_id} {phase}: rollback {readiness.level.value}",
        metadata={
            "release_id": release_id,
            "phase": phase,
            "state": release.state.value,
            "rollback_readiness": readiness.level.value,
            "rollback_estimated_seconds": MetadataValue.float(float(readiness.estimated_seconds or 0.0)),
            "rollback_estimate_from": readiness.estimate_from,
            "rollback_reasons": MetadataValue.md("\n".join(f"- {r}" for r in readiness.reasons) or "every step is reversible"),
        },
    )


def error_budget_observation(product: Product, service: str, status, release_id: str = "") -> AssetObservation:
    """`services/<name>` with the remaining error budget (a `budgets.BudgetStatus`), for the UI plot."""
    return AssetObservation(
        asset_key=AssetKeys.of(product).service(service),
        description=f"{service}: {status.remaining:.0%} of the error budget left",
        metadata={
            "release_id": release_id,
            "error_budget_remaining": MetadataValue.float(float(status.remaining)),
            "error_budget_requests": MetadataValue.int(int(status.requests)),
            "error_budget_errors": MetadataValue.int(int(status.errors)),
            "error_budget_slow": MetadataValue.int(int(status.slow)),
        },
    )


def product_job(product: Product, name: str, description: str, node_defs: list, dependencies: dict,
                kind: str, executor_def=None, aliases: dict[str, str] | None = None):
    """A job whose op definitions are named `<product>__<op>` but invoked under their short names.

    Dagster needs op definition names unique across a code location, and every product builds
    ops called `preflight`, `promote_step`...; the alias keeps run config (`ops: {preflight: ...}`)
    and the graph view readable. A definition already named `<product>__<op>` is used as it is
    (renaming copies it, which costs as much as building it). `aliases` maps more node names to
    the op they invoke (`deploy_orders` -> `deploy`): one definition per kind of step, and an op
    named there is invoked only under its aliases.
    """
    prefix = f"{product.name}__"
    by_short = {d.name.removeprefix(prefix): d if d.name.startswith(prefix) else
                d.with_replaced_properties(name=prefix + d.name) for d in node_defs}
    aliases = aliases or {}
    nodes = {short: short for short in by_short if short not in set(aliases.values())} | aliases
    invocations = {NodeInvocation(by_short[short].name, alias=node): dict(dependencies.get(node, {}))
                   for node, short in nodes.items()}
    graph = GraphDefinition(name=f"{product.name}_{name}", description=description,
                            node_defs=[by_short[short] for short in dict.fromkeys(nodes.values())],
                            dependencies=invocations)
    return graph.to_job(tags={TAG_PRODUCT: product.name, TAG_KIND: kind}, executor_def=executor_def)


def after(upstream: Iterable[str]) -> dict[str, MultiDependencyDefinition]:
    """The `after` input of a node that waits for every op in `upstream` (none: no dependency)."""
    ops = list(upstream)
    return {"after": MultiDependencyDefinition([DependencyDefinition(u) for u in ops])} if ops else {}
