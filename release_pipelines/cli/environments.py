"""`release promote-env`, `release approve-env`, `release environments`: one release, stage by stage.

    release environments shop                              which versions ran where
    release approve-env shop-staging-2026... --to production --as bob
    release promote-env shop-staging-2026... --to production            plan (checks, run config)
    release promote-env shop-staging-2026... --to production --launch   launch on the webserver

`promote-env` never re-chooses versions: it takes the versions of the given release and refuses
unless that release completed green in the environment just before `--to` (and the entry
approvals are in). The release job's preflight checks the same again, so a launch from the UI
cannot skip a stage either.
"""

from __future__ import annotations

import json
from pathlib import Path

import click
from rich.table import Table

from release_pipelines.cli.common import (
    console,
    err_console,
    open_ledger,
    product_named,
    user_errors,
)
from release_pipelines.cli.remote import submit
from release_pipelines.core.environments import (
    approval_phase,
    environment_product,
    previous_environment,
)
from release_pipelines.core.errors import ReleaseError
from release_pipelines.core.states import ReleaseState
from release_pipelines.resources import settings
from release_pipelines.steps.approval import approve_entry, sign_approval
from release_pipelines.steps.environments import entry_problems, where_versions_ran


def _source(book, release_id: str, to: str, manifests: Path | None):
    release = book.get(release_id)
    product = product_named(release.product, manifests)
    previous = previous_environment(product.manifest, to)
    if previous is None:
        raise ReleaseError(f"{to} is the first environment of {release.product}: launch {release.product}_{to}_release directly")
    if release.environment != previous.name:
        raise ReleaseError(f"release {release.id} ran in {release.environment or 'no environment'}; "
                           f"only a {previous.name} release can be promoted into {to}")
    return release, product


manifests_option = click.option("--manifests", type=click.Path(path_type=Path), default=None,
                                help="manifest file or folder; default: RELEASE_MANIFESTS")


@click.command("promote-env")
@click.argument("release_id")
@click.option("--to", "to", required=True, help="the environment to enter, e.g. production")
@click.option("--launch", is_flag=True, help="launch the release job on the webserver (default: print the plan)")
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=3000, show_default=True, type=int)
@click.option("--location", default=None, help="code location name")
@manifests_option
@user_errors
def promote_env(release_id: str, to: str, launch: bool, host: str, port: int, location: str | None,
                manifests: Path | None) -> None:
    """Release the versions of RELEASE_ID (a completed release of the previous environment) into --to."""
    book = open_ledger()
    release, product = _source(book, release_id, to, manifests)
    stage = environment_product(product, to)
    actor = settings.identity()
    problems = entry_problems(stage, release.versions, book, actor)
    if problems:
        raise ReleaseError(f"cannot enter {to} yet:\n" + "\n".join(f"  - {p}" for p in problems))
    job = f"{stage.name}_release"
    run_config = {"ops": {"preflight": {"config": {"versions": dict(release.versions)}}}}
    versions = ", ".join(f"{s}={v}" for s, v in sorted(release.versions.items()))
    if not launch:
        console.print(f"{release.environment} -> {to}: {job} with {versions} (from {release.id})", highlight=False)
        click.echo(json.dumps(run_config, sort_keys=True))
        return
    run_id = submit(host, port, job, run_config,
                    {"release/actor": actor, "release/environment": to, "release/promoted_from": release.id}, location)
    err_console.print(f"[green]launched[/] {job} ({versions}): run {run_id}", highlight=False)
    click.echo(run_id)


@click.command("approve-env")
@click.argument("release_id")
@click.option("--to", "to", required=True, help="the environment the approval lets the release enter")
@click.option("--as", "approver", default=None, help="who approves; default: RELEASE_ACTOR or the OS user")
@click.option("--comment", default=None)
@click.option("--key", type=click.Path(path_type=Path), default=None,
              help="SSH key to sign with (default: the SSH agent when the rule needs signatures)")
@manifests_option
@user_errors
def approve_env(release_id: str, to: str, approver: str | None, comment: str | None, key: Path | None,
                manifests: Path | None) -> None:
    """Approve the versions of RELEASE_ID entering --to (the environment's `promote_into` rule)."""
    book = open_ledger()
    release, product = _source(book, release_id, to, manifests)
    approver = approver or settings.identity()
    env = next(e for e in product.manifest.environments if e.name == to)
    if env.promote_into is None:
        raise ReleaseError(f"entering {to} needs no approval (no promote_into rule)")
    if approver == release.created_by:
        raise ReleaseError(f"{approver} launched {release.id} and cannot approve it into {to}")
    if approver not in env.promote_into.group:
        raise ReleaseError(f"{approver} may not approve entering {to}; the approvers are: {', '.join(env.promote_into.group)}")
    if release.state is not ReleaseState.COMPLETED:
        raise ReleaseError(f"release {release.id} is {release.state.value}; approve it into {to} once it completed")
    rule, phase = env.promote_into, approval_phase(to)
    signed = (sign_approval(book, release, phase, approver, comment, key)
              if key is not None or rule.signatures.value == "required" else None)
    approve_entry(rule, book, release, phase, approver, comment, signed)
    console.print(f"{approver} approved {release.id} into {to} ({'signed' if signed else 'unsigned'})", highlight=False)


@click.command("environments")
@click.argument("product_name", metavar="PRODUCT")
@manifests_option
@user_errors
def environments(product_name: str, manifests: Path | None) -> None:
    """Which versions completed in each environment of PRODUCT (from the ledger)."""
    product = product_named(product_name, manifests)
    names = [e.name for e in product.manifest.environments] or [""]
    table = Table("environment", "release", "versions", "completed at")
    for name, release in where_versions_ran(open_ledger(), product.name, names).items():
        if release is None:
            table.add_row(name or "(default)", "-", "-", "-")
        else:
            table.add_row(name or "(default)", release.id,
                          ", ".join(f"{s}={v}" for s, v in sorted(release.versions.items())),
                          f"{release.updated_at:%Y-%m-%d %H:%M:%S}")
    console.print(table)


environment_commands = [promote_env, approve_env, environments]
