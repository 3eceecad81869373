"""`release validate | plan | schema`: check a manifest, show the waves a release would run."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import click
from rich.table import Table

from release_pipelines.cli.common import console, open_ledger, parse_assignments, user_errors
from release_pipelines.core.manifest import Manifest
from release_pipelines.core.planner import plan_release
from release_pipelines.resources.manifest_files import load_manifest


@click.command()
@click.argument("manifest", type=click.Path(dir_okay=False, path_type=Path))
@user_errors
def validate(manifest: Path) -> None:
    """Check a release manifest; print every problem with its line and field."""
    loaded = load_manifest(manifest)
    console.print(
        f"[green]ok[/] {manifest}: product [bold]{loaded.product}[/], "
        f"{len(loaded.services)} services, {len(loaded.databases)} databases, "
        f"{len(loaded.flags)} flags"
    )


@click.command()
@click.argument("manifest", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--version", "versions", multiple=True, metavar="SERVICE=VERSION", help="new version (repeat)")
@click.option("--current", "currents", multiple=True, metavar="SERVICE=VERSION", help="running stable version; default: from the ledger")
@click.option("--allow-downgrade", is_flag=True, help="allow a version lower than the running stable one")
@click.option("--format", "fmt", type=click.Choice(["table", "json"]), default="table")
@user_errors
def plan(manifest: Path, versions: tuple[str, ...], currents: tuple[str, ...], allow_downgrade: bool, fmt: str) -> None:
    """Show the waves a release would run, databases before the services that need them."""
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

    return open_ledger().stable_versions(product)


@click.command()
def schema() -> None:
    """Print the manifest's JSON Schema (point your editor's YAML plugin at it)."""
    click.echo(json.dumps(Manifest.model_json_schema(by_alias=True), indent=2))


manifest_commands = [validate, plan, schema]
