"""`release stop`: stop what the local platform started for a product after trying it out."""

from __future__ import annotations

from pathlib import Path

import click

from release_pipelines.cli.common import (
    console,
    manifest_option,
    open_ledger,
    product_named,
    user_errors,
)
from release_pipelines.core.errors import ReleaseError
from release_pipelines.resources.clients import platform_for


@click.command()
@click.argument("product")
@manifest_option
@click.option("--force", is_flag=True, help="stop even while a release of the product is under way")
@user_errors
def stop_command(product: str, manifest: Path | None, force: bool) -> None:
    """Stop every router and version the platform runs for PRODUCT (the stable ones too).

    The local platform keeps the stable version and its router running after a release, as a
    service would; this ends them. Refused while a release is active: roll it back first.
    """
    loaded = product_named(product, manifest)
    active = open_ledger().active_release(loaded.name)
    if active is not None and not force:
        raise ReleaseError(f"{loaded.name} has an active release {active.id} ({active.state.value}): "
                           f"roll it back first (launch {loaded.name}_rollback, or `release rollback {active.id}`), "
                           "or pass --force")
    platform_for(loaded).stop_all(log=lambda line: console.print(f"{loaded.name}: {line}", highlight=False))
