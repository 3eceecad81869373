"""The `release` command: validate and plan manifests, inspect the ledger, run the demo.

Every command prints a clear message and exits 2 on bad input; no traceback reaches the user.
"""

from __future__ import annotations

import functools
import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import click
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from release_pipelines import settings
from release_pipelines.errors import ReleaseError

F = TypeVar("F", bound=Callable[..., Any])

console = Console()
err_console = Console(stderr=True)

EXIT_BAD_INPUT = 2


def user_errors(func: F) -> F:
    """Turn the project's own errors into a red message and exit code 2."""

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return func(*args, **kwargs)
        except ReleaseError as exc:
            # escape: a message quoting a pattern such as ^[a-z][a-z0-9_-]$ is not markup
            err_console.print(f"[bold red]error:[/] {escape(str(exc))}", highlight=False, markup=True)
            sys.exit(EXIT_BAD_INPUT)

    return wrapper  # type: ignore[return-value]


def parse_assignments(pairs: tuple[str, ...], option: str) -> dict[str, str]:
    """`svc=1.2.3` pairs into a dict, refusing malformed ones by name."""
    result: dict[str, str] = {}
    for pair in pairs:
        name, sep, value = pair.partition("=")
        if not sep or not name or not value:
            raise ReleaseError(f"{option} {pair!r}: expected SERVICE=VERSION, e.g. {option} orders=1.4.0")
        if name in result:
            raise ReleaseError(f"{option}: service {name!r} given twice")
        result[name] = value
    return result


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="dagster-release-pipelines")
def main() -> None:
    """Run multi-step releases across services and databases with Dagster."""


@main.command()
@click.argument("manifest", type=click.Path(dir_okay=False, path_type=Path))
@user_errors
def validate(manifest: Path) -> None:
    """Check a release manifest; print every problem with its line and field."""
    from release_pipelines.manifest_loader import load_manifest

    loaded = load_manifest(manifest)
    console.print(
        f"[green]ok[/] {manifest}: product [bold]{loaded.product}[/], "
        f"{len(loaded.services)} services, {len(loaded.databases)} databases, "
        f"{len(loaded.flags)} flags"
    )


@main.command()
@click.argument("manifest", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--version", "versions", multiple=True, metavar="SERVICE=VERSION", help="new version (repeat)")
@click.option("--current", "currents", multiple=True, metavar="SERVICE=VERSION", help="running stable version; default: from the ledger")
@click.option("--allow-downgrade", is_flag=True, help="allow a version lower than the running stable one")
@click.option("--format", "fmt", type=click.Choice(["table", "json"]), default="table")
@user_errors
def plan(manifest: Path, versions: tuple[str, ...], currents: tuple[str, ...], allow_downgrade: bool, fmt: str) -> None:
    """Show the waves a release would run, databases before the services that need them."""
    from release_pipelines.manifest_loader import load_manifest
    from release_pipelines.planner import plan_release

    loaded = load_manifest(manifest)
    current = parse_assignments(currents, "--current") if currents else _stable_versions(loaded.product)
    release_plan = plan_release(loaded, parse_assignments(versions, "--version"), current, allow_downgrade)
    if fmt == "json":
        click.echo(json.dumps(_plan_json(release_plan), indent=2))
        return
    table = Table(title=f"release plan for {release_plan.product}")
    for column in ("wave", "step", "target", "change"):
        table.add_column(column)
    for index, wave in enumerate(release_plan.waves, start=1):
        for step in wave:
            change = (
                f"{step.change.from_version or '(new)'} -> {step.change.to_version}"
                if step.change
                else "expand migrations, then data gates"
            )
            table.add_row(str(index), step.kind.value, step.target, change)
    console.print(table)
    rollback = " -> ".join(", ".join(s.target for s in wave) for wave in release_plan.rollback_waves)
    console.print(f"rollback order: {rollback}")


def _plan_json(release_plan: Any) -> dict[str, Any]:
    return {
        "product": release_plan.product,
        "waves": [
            [
                {
                    "kind": s.kind.value,
                    "target": s.target,
                    "from": s.change.from_version if s.change else None,
                    "to": s.change.to_version if s.change else None,
                }
                for s in wave
            ]
            for wave in release_plan.waves
        ],
        "rollback": [[s.target for s in wave] for wave in release_plan.rollback_waves],
    }


def _stable_versions(product: str) -> dict[str, str]:
    """The versions the ledger last recorded as stable for a product (empty before any release)."""
    from resources.ledger import Ledger

    return Ledger(settings.ledger_url()).stable_versions(product)


@main.command()
def schema() -> None:
    """Print the manifest's JSON Schema (point your editor's YAML plugin at it)."""
    from release_pipelines.manifest import Manifest

    click.echo(json.dumps(Manifest.model_json_schema(by_alias=True), indent=2))


@main.command()
@click.option("--product", default=None, help="only this product")
@click.option("--limit", default=20, show_default=True)
@user_errors
def history(product: str | None, limit: int) -> None:
    """List releases, newest first."""
    from resources.ledger import Ledger

    releases = Ledger(settings.ledger_url()).releases(product=product, limit=limit)
    if not releases:
        console.print("no releases recorded yet")
        return
    table = Table(title="releases")
    for column in ("id", "product", "state", "versions", "started", "by"):
        table.add_column(column)
    for r in releases:
        versions = ", ".join(f"{s}={v}" for s, v in sorted(r.versions.items()))
        table.add_row(r.id, r.product, r.state.value, versions, f"{r.created_at:%Y-%m-%d %H:%M:%S}", r.created_by)
    console.print(table)


@main.command("verify-ledger")
@user_errors
def verify_ledger() -> None:
    """Recompute the event hash chain; name the first altered or missing event."""
    from resources.ledger import Ledger

    report = Ledger(settings.ledger_url()).verify()
    if report.ok:
        console.print(f"[green]ok[/] ledger chain verified: {report.checked} events")
        return
    err_console.print(f"[bold red]ledger chain broken:[/] {report.first_problem}")
    sys.exit(1)


@main.command()
def demo() -> None:
    """A full demo release on embedded defaults: install, a good release, a bad one rolled back."""
    from release_pipelines.demo import run_demo

    sys.exit(run_demo(console))


def _register_subcommands() -> None:
    """Commands whose modules live beside this one; each is a click command or group."""
    from release_pipelines.cli_environments import environment_commands
    from release_pipelines.cli_governance import governance_commands
    from release_pipelines.cli_judge import judge_command
    from release_pipelines.cli_migrations import migrations_group
    from release_pipelines.cli_observability import observability_commands
    from release_pipelines.cli_remote import launch_command, rollback_command, status_command

    main.add_command(judge_command, "judge")
    main.add_command(migrations_group, "migrations")
    main.add_command(launch_command, "launch")
    main.add_command(status_command, "status")
    main.add_command(rollback_command, "rollback")
    for command in [*governance_commands, *observability_commands, *environment_commands]:
        main.add_command(command)


_register_subcommands()
