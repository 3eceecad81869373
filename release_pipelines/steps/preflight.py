"""Preflight checks that need the outside world (migration lint, reversibility, live database).

Each returns problems in words a person can act on; an empty list lets the release start. They
run before the release is recorded as started, so a refusal leaves nothing half-applied.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import psutil

from release_pipelines.core.budgets import (
    budget_problem,
    budget_status,
    memory_room_problem,
    slow_requests,
)
from release_pipelines.core.planner import ReleasePlan
from release_pipelines.core.product import Product
from release_pipelines.core.reversibility import check_rollback_plan
from release_pipelines.core.windows import launch_window_problem
from release_pipelines.resources.metrics import MetricsUnavailable
from release_pipelines.resources.migration_render import lint_script
from release_pipelines.resources.migrations import MigrationRunner
from release_pipelines.resources.router_metrics import RouterMetricsProvider


def preflight_problems(
    product: Product, plan: ReleasePlan, break_glass_reason: str = "", at: datetime | None = None,
    platform: Any = None, metrics_provider: Any = None, available_mb: float | None = None,
) -> list[str]:
    problems: list[str] = window_problems(product, break_glass_reason, at)
    for database in plan.databases:
        problems += migration_problems(product, database)
    if platform is not None:
        problems += error_budget_problems(product, plan, platform, metrics_provider)
        problems += resource_problems(product, plan, platform, available_mb)
    return problems


def error_budget_problems(product: Product, plan: ReleasePlan, platform: Any, metrics_provider: Any = None) -> list[str]:
    """A service the release changes whose stable version has spent its SLO's error budget
    (read from the router counters, or Prometheus) is refused; unreadable metrics refuse nothing."""
    if metrics_provider is None:
        metrics_provider = RouterMetricsProvider(lambda service: platform.status(service).endpoint)
    problems = []
    for change in plan.changes:
        slo = product.manifest.service(change.service).slo
        if slo is None or not change.from_version:
            continue
        try:
            stable = metrics_provider.snapshot(change.service, change.from_version, change.to_version).stable
        except MetricsUnavailable:
            continue
        if stable is None:
            continue
        status = budget_status(change.service, slo, stable.requests, stable.errors,
                               slow_requests(stable.latency_buckets, slo.latency_ms))
        if problem := budget_problem(status, slo):
            problems.append(problem)
    return problems


def resource_problems(product: Product, plan: ReleasePlan, platform: Any, available_mb: float | None = None) -> list[str]:
    """Room to run each canary beside the running stable versions, by their memory budgets."""
    if available_mb is None:
        available_mb = psutil.virtual_memory().available / (1024 * 1024)
    manifest = product.manifest
    running = [s.name for s in manifest.services if platform.status(s.name).stable_version]
    # a first install runs no canary beside a stable version: only upgrades need the room
    canaries = [c.service for c in plan.changes if c.from_version]
    problem = memory_room_problem(manifest, running, canaries, available_mb)
    return [problem] if problem else []


def window_problems(product: Product, break_glass_reason: str = "", at: datetime | None = None) -> list[str]:
    """Outside the release window or in a freeze: refused, unless break-glass (then the release
    records the reason and waits for a break_glass approval before its first promotion)."""
    manifest = product.manifest
    has_rule = any(r.phase.value == "break_glass" for r in manifest.approvals)
    problem = launch_window_problem(manifest.windows, at or datetime.now(UTC), break_glass_reason, has_rule)
    return [problem] if problem else []


def migration_problems(product: Product, database_name: str) -> list[str]:
    """Blocking lint findings, revisions nobody could lint, and unplanned irreversibility in the
    EXPAND revisions this release would run (contract revisions are checked by the contract job).
    Revisions that cannot be rendered offline are applied in a scratch database on the same
    PostgreSQL server first; one that still cannot be linted refuses the release, by name."""
    database = product.manifest.database(database_name)
    runner = MigrationRunner.for_database(database, product.directory)
    pending = runner.pending("expand")
    if not pending:
        return []
    report = lint_script(
        runner.project,
        [r.revision for r in pending],
        shadow_server=runner.url if runner.is_postgres else None,
        live_url=runner.url,
    )
    problems = [
        f"{database_name} revision {f.revision}: [{f.rule}] {f.message} (line {f.line}: {f.statement.strip()[:80]}); "
        f"safe recipe: {f.recipe}"
        for f in report.blocking
    ]
    problems += [
        f"{database_name} revision {c.revision} could not be linted: {c.reason}. Lint it "
        f"(`release migrations lint --manifest ... --database {database_name} --pending --shadow auto`) "
        f"or accept it with lint_suppress = {{\"not-linted\": \"<why it is safe>\"}} in the revision"
        for c in report.unaccepted
    ]
    problems += [f"{database_name}: {p.message}" for p in check_rollback_plan(database, pending)]
    return problems
