"""Observability commands: `release readiness ID` (can this release be rolled back, how well, how long)
and `release budgets PRODUCT` (each service's remaining error budget from the routers).

`observability_commands` is the list the main CLI registers. The ledger is RELEASE_LEDGER_URL (else
the SQLite default under RELEASE_HOME); manifests come from RELEASE_MANIFESTS or --manifest.
"""

from __future__ import annotations

import json
from pathlib import Path

import click
from rich.table import Table

from release_pipelines.cli.common import (
    console,
    manifest_option,
    open_ledger,
    product_named,
    user_errors,
)
from release_pipelines.core.budgets import budget_status, slow_requests
from release_pipelines.core.readiness import Readiness
from release_pipelines.resources import clients, settings
from release_pipelines.resources.metrics import MetricsUnavailable
from release_pipelines.steps.readiness import readiness_for


@click.command("readiness")
@click.argument("release_id")
@click.option("--json", "as_json", is_flag=True, help="print JSON instead of a table")
@manifest_option
@user_errors
def readiness_command(release_id: str, as_json: bool, manifest: Path | None) -> None:
    """Rollback readiness of a release: READY, DEGRADED or IMPOSSIBLE, with an estimated duration."""
    book = open_ledger()
    release = book.get(release_id)
    product = product_named(release.product, manifest)
    readiness = readiness_for(book, product, release)
    if as_json:
        click.echo(json.dumps({"release_id": release.id, "state": release.state.value, **readiness.to_dict()}))
        return
    colour = {Readiness.ready: "green", Readiness.degraded: "yellow", Readiness.impossible: "red"}[readiness.level]
    console.print(f"release {release.id} ({release.product}, {release.state.value})")
    console.print(f"rollback readiness: [bold {colour}]{readiness.level.value}[/]", highlight=False)
    if readiness.estimated_seconds is not None:
        console.print(f"estimated rollback: ~{readiness.estimated_seconds:.0f} s (from {readiness.estimate_from})")
    for reason in readiness.reasons or ("every applied step is reversible",):
        console.print(f"  - {reason}", highlight=False)


@click.command("budgets")
@click.argument("product_name")
@manifest_option
@user_errors
def budgets_command(product_name: str, manifest: Path | None) -> None:
    """Remaining error budget of each service with an SLO, from its stable version's router counters."""
    product = product_named(product_name, manifest)
    platform = clients.platform_for(product)
    provider = clients.metrics_provider(platform, settings.prometheus_url())
    table = Table(title=f"{product.name} error budgets")
    for column in ("service", "stable", "requests", "errors", "slow", "remaining"):
        table.add_column(column)
    for service in product.manifest.services:
        if service.slo is None:
            continue
        stable = platform.status(service.name).stable_version
        try:
            metrics = provider.snapshot(service.name, stable or "", "").stable if stable else None
        except MetricsUnavailable:
            metrics = None
        if metrics is None:
            table.add_row(service.name, stable or "-", "-", "-", "-", "no data")
            continue
        status = budget_status(service.name, service.slo, metrics.requests, metrics.errors,
                               slow_requests(metrics.latency_buckets, service.slo.latency_ms))
        table.add_row(service.name, stable or "-", str(status.requests), str(status.errors), str(status.slow),
                      f"{status.remaining:.0%}")
    console.print(table)


observability_commands = [readiness_command, budgets_command]
