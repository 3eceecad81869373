"""`release history | verify-ledger | checkpoint`: read the release ledger, check it, anchor it."""

from __future__ import annotations

import os
import sys

import click
from rich.table import Table

from release_pipelines.cli.common import console, err_console, open_ledger, user_errors
from release_pipelines.resources.checkpoints import (
    CheckpointSettings,
    verify_anchors,
    write_checkpoint,
)
from release_pipelines.resources.signatures import describe_key


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
    """Recompute the event hash chain and check every signed checkpoint (the ledger's and the copy
    in RELEASE_CHECKPOINT_FILE); name the first altered, missing or rewritten event."""
    book = open_ledger()
    report = book.verify()
    if not report.ok:
        err_console.print(f"[bold red]ledger chain broken:[/] {report.first_problem}")
        sys.exit(1)
    anchors = verify_anchors(book, CheckpointSettings.from_env())
    for note in anchors.notes:
        err_console.print(f"[yellow]note:[/] {note}", highlight=False)
    if anchors.problems:
        err_console.print(f"[bold red]ledger rewritten:[/] {anchors.problems[0]}", highlight=False)
        for problem in anchors.problems[1:]:
            err_console.print(f"  also: {problem}", highlight=False)
        sys.exit(1)
    newest = anchors.newest
    anchored = (f"; {anchors.checkpoints} checkpoint(s) match, the newest at event {newest.seq} signed by "
                f"{describe_key(newest.public_key)}" if newest else "; no checkpoints yet (release checkpoint)")
    console.print(f"[green]ok[/] ledger chain verified: {report.checked} events{anchored}", highlight=False)


@click.command("checkpoint")
@user_errors
def checkpoint_command() -> None:
    """Sign the chain head with the deployment key (RELEASE_CHECKPOINT_KEY) and store the checkpoint
    in the ledger and its copies (RELEASE_CHECKPOINT_FILE, RELEASE_CHECKPOINT_WEBHOOK); with
    DAGSTER_HOME set, also as an asset observation of releases/<product> in that instance."""
    book = open_ledger()
    checkpoint, warnings = write_checkpoint(book, CheckpointSettings.from_env())
    for warning in warnings:
        err_console.print(f"[yellow]warning:[/] {warning}", highlight=False)
    console.print(f"checkpoint at event {checkpoint.seq} ({checkpoint.head[:12]}) signed by "
                  f"{describe_key(checkpoint.public_key)}", highlight=False)
    if os.environ.get("DAGSTER_HOME"):
        # lazy: Dagster takes seconds to import, and history / verify-ledger never need it
        from dagster import DagsterInstance

        from release_pipelines.orchestration.checkpoints import report_checkpoint

        with DagsterInstance.get() as instance:
            observed = report_checkpoint(instance, book, checkpoint)
        console.print(f"observed on {', '.join(observed) or 'no product yet'} (Dagster instance at "
                      f"{os.environ['DAGSTER_HOME']})", highlight=False)


ledger_commands = [history, verify_ledger, checkpoint_command]
