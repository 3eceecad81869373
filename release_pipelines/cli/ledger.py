"""`release history | verify-ledger`: read the release ledger."""

from __future__ import annotations

import sys

import click
from rich.table import Table

from release_pipelines.cli.common import console, err_console, open_ledger, user_errors


@click.command()
@click.option("--product", default=None, help="only this product")
@click.option("--limit", default=20, show_default=True)
@user_errors
def history(product: str | None, limit: int) -> None:
    """List releases, newest first."""
    releases = open_ledger().releases(product=product, limit=limit)
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


@click.command("verify-ledger")
@user_errors
def verify_ledger() -> None:
    """Recompute the event hash chain; name the first altered or missing event."""
    report = open_ledger().verify()
    if report.ok:
        console.print(f"[green]ok[/] ledger chain verified: {report.checked} events")
        return
    err_console.print(f"[bold red]ledger chain broken:[/] {report.first_problem}")
    sys.exit(1)


ledger_commands = [history, verify_ledger]
