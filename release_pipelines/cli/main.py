"""The `release` command: one group; each command lives in a module of this package.

A command's module is imported only when that command runs (click's lazy-loading pattern), so
`release validate` does not pay for Dagster, Alembic and SciPy (~3 s) that other commands need.
Every command prints a clear message and exits 2 on bad input (`cli.common`). Nothing outside
`release_pipelines.cli` imports this package.
"""

from __future__ import annotations

import importlib

import click

COMMANDS = {
    "validate": "manifests:validate",
    "plan": "manifests:plan",
    "schema": "manifests:schema",
    "history": "ledger:history",
    "verify-ledger": "ledger:verify_ledger",
    "checkpoint": "ledger:checkpoint_command",
    "demo": "demo:demo_command",
    "judge": "judge:judge_command",
    "migrations": "migrations:migrations_group",
    "launch": "remote:launch_command",
    "status": "remote:status_command",
    "rollback": "remote:rollback_command",
    "approve": "governance:approve_command",
    "request": "governance:request_command",
    "requests": "governance:requests_command",
    "cancel-request": "governance:cancel_request_command",
    "show": "governance:show_command",
    "readiness": "observability:readiness_command",
    "budgets": "observability:budgets_command",
    "promote-env": "environments:promote_env",
    "approve-env": "environments:approve_env",
    "environments": "environments:environments",
    "stop": "platform:stop_command",
}


class LazyGroup(click.Group):
    """A group that imports a command's module on first use."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(COMMANDS)

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name not in COMMANDS:
            return None
        module, attribute = COMMANDS[cmd_name].split(":")
        command = getattr(importlib.import_module(f"release_pipelines.cli.{module}"), attribute)
        return command


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="dagster-release-pipelines")
def main() -> None:
    """Run multi-step releases across services and databases with Dagster."""
