"""Preflight checks that need the outside world (migration lint, reversibility, live database).

Each returns problems in words a person can act on; an empty list lets the release start. Runs
before the release is recorded as started, so a refusal leaves nothing half-applied.
"""

from __future__ import annotations

from release_pipelines.planner import ReleasePlan
from release_pipelines.product import Product


def preflight_problems(product: Product, plan: ReleasePlan, break_glass_reason: str = "") -> list[str]:
    problems: list[str] = []
    for database in plan.databases:
        problems += migration_problems(product, database)
    return problems


def migration_problems(product: Product, database_name: str) -> list[str]:
    """Lint errors and unplanned irreversibility in the revisions this release would run."""
    from release_pipelines.steps.migrate import runner_for

    runner = runner_for(product, database_name)
    return runner.preflight(product.manifest.database(database_name))
