"""Preflight checks that need the outside world (migration lint, reversibility, live database).

Each returns problems in words a person can act on; an empty list lets the release start. They
run before the release is recorded as started, so a refusal leaves nothing half-applied.
"""

from __future__ import annotations

from datetime import UTC, datetime

from release_pipelines.planner import ReleasePlan
from release_pipelines.product import Product
from release_pipelines.reversibility import check_rollback_plan
from resources.migration_render import lint_script
from resources.migrations import MigrationRunner


def preflight_problems(
    product: Product, plan: ReleasePlan, break_glass_reason: str = "", at: datetime | None = None
) -> list[str]:
    problems: list[str] = window_problems(product, break_glass_reason, at)
    for database in plan.databases:
        problems += migration_problems(product, database)
    return problems


def window_problems(product: Product, break_glass_reason: str = "", at: datetime | None = None) -> list[str]:
    """Outside the release window or in a freeze: refused, unless break-glass (then the release
    records the reason and waits for a break_glass approval before its first promotion)."""
    from release_pipelines.windows import launch_window_problem

    manifest = product.manifest
    has_rule = any(r.phase.value == "break_glass" for r in manifest.approvals)
    problem = launch_window_problem(manifest.windows, at or datetime.now(UTC), break_glass_reason, has_rule)
    return [problem] if problem else []


def migration_problems(product: Product, database_name: str) -> list[str]:
    """Blocking lint findings and unplanned irreversibility in the EXPAND revisions this release
    would run (contract revisions are checked when the contract job runs)."""
    database = product.manifest.database(database_name)
    runner = MigrationRunner.for_database(database, product.directory)
    pending = runner.pending("expand")
    if not pending:
        return []
    report = lint_script(runner.script_location, [r.revision for r in pending])
    problems = [
        f"{database_name} revision {f.revision}: [{f.rule}] {f.message} (line {f.line}: {f.statement.strip()[:80]}); "
        f"safe recipe: {f.recipe}"
        for f in report.blocking
    ]
    problems += [f"{database_name}: {p.message}" for p in check_rollback_plan(database, pending)]
    return problems
