"""Environments: one release promoted stage by stage (staging -> production), never re-chosen.

A manifest may declare ordered `environments:`; each is the same product with overrides
(database URLs, flag defaults, windows, approvals, and `promote_into` - who must approve entering
it). Without `environments:` nothing here applies: the product is its single implicit environment
('' in the ledger), exactly as before.

How an environment is run: `environment_products` derives one `EnvironmentProduct` per stage. Its
`name` is a `ProductName` such as `shop_production`, which is what every existing builder already
uses, so each stage gets its own jobs (`shop_staging_release`, `shop_production_promote`, ...),
sensors, platform state folder (`RELEASE_HOME/platform/shop_production`: its own processes and
routers) and flag file. The ledger reads the product (`shop`) and the environment (`production`)
from that name (`resources.ledger.scope`), records the environment on the release row (migration
0003), and keeps one active release per product AND environment.

Entering a stage (`entry_problems`, called by the release job's preflight) requires a release of
the previous stage with exactly the same versions that COMPLETED with green gates and verdicts,
and, when the stage has `promote_into`, approvals of that previous release (phase
`promote_into:<stage>`) by people in the group other than its launcher and the one entering.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Self

from release_pipelines.errors import ReleaseError
from release_pipelines.manifest import Environment, Manifest
from release_pipelines.product import Product
from release_pipelines.states import ReleaseState


class ProductName(str):
    """`<product>_<environment>`: names jobs, sensors, state folders; carries both parts for the ledger."""

    base: str
    environment: str

    def __new__(cls, base: str, environment: str) -> Self:
        name = super().__new__(cls, f"{base}_{environment}")
        name.base, name.environment = str(base), str(environment)
        return name

    def __getnewargs__(self) -> tuple[str, str]:  # type: ignore[override]  # pickles as (base, environment)
        return self.base, self.environment


@dataclass(frozen=True)
class EnvironmentProduct(Product):
    """A product as it runs in one environment: the manifest with the environment's overrides."""

    environment: str = ""
    base_name: str = ""

    @property
    def name(self) -> str:
        return ProductName(self.base_name, self.environment)


def approval_phase(environment: str) -> str:
    """The ledger approval phase that lets a release's versions enter `environment`."""
    return f"promote_into:{environment}"


def environment_manifest(manifest: Manifest, env: Environment) -> Manifest:
    """The manifest with one environment's overrides applied (the environment list is kept)."""
    databases = [d.model_copy(update={"url": env.databases[d.name].url}) if d.name in env.databases else d
                 for d in manifest.databases]
    flags = [f.model_copy(update={"default": env.flags[f.name]}) if f.name in env.flags else f for f in manifest.flags]
    update: dict[str, Any] = {"databases": databases, "flags": flags}
    if env.windows is not None:
        update["windows"] = env.windows
    if env.approvals is not None:
        update["approvals"] = env.approvals
    return manifest.model_copy(update=update)


def environment_products(product: Product) -> list[EnvironmentProduct]:
    """One product per declared environment, in promotion order (empty without `environments:`)."""
    manifest = product.manifest
    return [EnvironmentProduct(environment_manifest(manifest, env), product.path, env.name, manifest.product)
            for env in manifest.environments]


def environment_product(product: Product, environment: str) -> EnvironmentProduct:
    for candidate in environment_products(product):
        if candidate.environment == environment:
            return candidate
    known = ", ".join(e.name for e in product.manifest.environments) or "none (the manifest declares no environments)"
    raise ReleaseError(f"{product.manifest.product} has no environment {environment!r}; environments: {known}")


def previous_environment(manifest: Manifest, environment: str) -> Environment | None:
    names = [e.name for e in manifest.environments]
    if environment not in names:
        raise ReleaseError(f"{manifest.product} has no environment {environment!r}; environments: {', '.join(names)}")
    index = names.index(environment)
    return manifest.environments[index - 1] if index else None


def not_green(book: Any, release_id: str) -> list[str]:
    """Why a completed release does not count as green: a failed gate or a failing verdict."""
    reasons = []
    for event in book.events(release_id):
        if event.kind == "gate" and not event.payload.get("passed", True):
            reasons.append(f"gate {event.payload.get('gate')} on {event.payload.get('table')} failed")
        elif event.kind == "verdict" and event.payload.get("verdict") == "fail":
            reasons.append(f"canary verdict failed at step {event.payload.get('step')}")
    return reasons


def qualifying_release(book: Any, product: str, environment: str, versions: Mapping[str, str]) -> tuple[Any, str | None]:
    """The newest completed, green release of `versions` in `environment`, or (None, why not)."""
    wanted = dict(versions)
    same = [r for r in book.releases(product, limit=1000, environment=environment) if r.versions == wanted]
    shown = ", ".join(f"{s}={v}" for s, v in sorted(wanted.items()))
    if not same:
        return None, f"{environment} has no release of these versions ({shown}); release them to {environment} first"
    reasons: list[str] = []
    for release in same:  # newest first
        if release.state is not ReleaseState.COMPLETED:
            reasons.append(f"release {release.id} in {environment} is {release.state.value}, not completed")
            continue
        red = not_green(book, release.id)
        if red:
            reasons.append(f"release {release.id} in {environment} completed but is not green: {'; '.join(red)}")
            continue
        return release, None
    return None, "; ".join(reasons[:3])


def missing_entry_approvals(env: Environment, book: Any, previous_release: Any, actor: str) -> str | None:
    rule = env.promote_into
    if rule is None:
        return None
    excluded = {previous_release.created_by, actor}
    got = sorted({a.approver for a in book.approvals(previous_release.id, approval_phase(env.name))
                  if a.approver in rule.group and a.approver not in excluded})
    if len(got) >= rule.required:
        return None
    eligible = [g for g in rule.group if g not in excluded and g not in got]
    return (f"entering {env.name} needs {rule.required - len(got)} more approval(s) from {', '.join(eligible) or 'nobody eligible'} "
            f"(not the launcher {previous_release.created_by} nor {actor}; have: {', '.join(got) or 'none'}); "
            f"run: release approve-env {previous_release.id} --to {env.name} --as NAME")


def entry_problems(product: Product, versions: Mapping[str, str], book: Any, actor: str) -> list[str]:
    """Preflight for an environment's release: the previous environment completed these exact
    versions (gates and verdicts green) and the entry approvals are in. [] for the first stage
    and for products without environments."""
    environment = getattr(product, "environment", "")
    if not environment:
        return []
    manifest = product.manifest
    previous = previous_environment(manifest, environment)
    if previous is None:
        return []
    base = manifest.product
    release, why = qualifying_release(book, base, previous.name, versions)
    if release is None:
        return [f"{environment} is entered only after {previous.name} completed the same versions: {why}"]
    env = next(e for e in manifest.environments if e.name == environment)
    waiting = missing_entry_approvals(env, book, release, actor)
    return [waiting] if waiting else []


def where_versions_ran(book: Any, product: str, environments: list[str]) -> dict[str, Any]:
    """environment -> the newest completed release there (None if none): which versions ran where."""
    found: dict[str, Any] = {}
    for environment in environments:
        completed = [r for r in book.releases(product, limit=200, environment=environment)
                     if r.state is ReleaseState.COMPLETED]
        found[environment] = completed[0] if completed else None
    return found


def environment_definitions(product: Product):
    """The Dagster definitions of a product with environments: every job, sensor and schedule per
    environment (`<product>_<env>_*`); table/service assets and the data-checks job once (on the
    first environment's databases, since asset keys name tables, not environments)."""
    from dagster import AssetKey, AssetSpec, Definitions

    from assets.checks import checks_job, table_asset_checks
    from assets.tables import service_asset_specs, table_asset_specs
    from release_pipelines.canary_sensor import build_canary_sensor
    from release_pipelines.failure_sensor import build_failure_sensor
    from release_pipelines.jobs.approval import build_approval_job
    from release_pipelines.jobs.contract import build_contract_job
    from release_pipelines.jobs.promote import build_promote_job
    from release_pipelines.jobs.rehearsal import build_rehearsal_job, build_rehearsal_schedule
    from release_pipelines.jobs.release import build_release_job
    from release_pipelines.jobs.rollback import build_rollback_job
    from release_pipelines.schedules import build_records_sensor, build_release_window_schedule

    stages = environment_products(product)
    first = stages[0]
    assets: list[Any] = [*table_asset_specs(first.manifest), *service_asset_specs(first.manifest)]
    jobs: list[Any] = [checks_job(first.manifest)]
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
        ]
    return Definitions(assets=assets, asset_checks=table_asset_checks(first.manifest, first.directory),
                       jobs=jobs, schedules=schedules, sensors=sensors)


def namespaced_job(job: Any, prefix: str) -> Any:
    """The same job with its op definitions renamed `<prefix>__<op>` but invoked under their old
    names, so run config (`ops: {preflight: ...}`), sensors and the UI see the same op names while
    one repository can hold the job once per environment (Dagster wants op definition names
    unique per repository)."""
    from dagster import GraphDefinition
    from dagster._core.definitions.dependency import NodeInvocation

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
