"""Governance commands: approve, request (queue for a window), requests, cancel-request, show.

`governance_commands` is the list the main CLI registers. Each command reads the ledger named by
RELEASE_LEDGER_URL (else the SQLite default under RELEASE_HOME) and the manifests under
RELEASE_MANIFESTS (or --manifest).
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import click
from rich.markdown import Markdown
from rich.table import Table

from release_pipelines.cli.common import (
    console,
    manifest_option,
    open_ledger,
    parse_assignments,
    product_named,
    user_errors,
)
from release_pipelines.core.approvals import approval_refusal, signatures_required
from release_pipelines.core.environments import environment_product
from release_pipelines.core.errors import ReleaseError
from release_pipelines.core.manifest import ApprovalPhase
from release_pipelines.core.planner import plan_release
from release_pipelines.core.product import Product
from release_pipelines.core.records import render_release_notes
from release_pipelines.core.windows import next_opening, window_status
from release_pipelines.resources import settings
from release_pipelines.resources.manifest_files import load_product
from release_pipelines.steps.approval import approve, missing_approvals, sign_approval
from release_pipelines.steps.requests import queue_request, sign_request

PHASES = ["launch", "promote", "contract", "break_glass"]


@click.command("approve")
@click.argument("release_id")
@click.option("--phase", type=click.Choice(PHASES), required=True, help="what is approved")
@click.option("--as", "approver", default=None, help="who approves; default: RELEASE_ACTOR or the OS user")
@click.option("--comment", default=None, help="why; recorded with the approval")
@click.option("--key", type=click.Path(path_type=Path), default=None,
              help="SSH key to sign with: a private key, or a .pub whose private half is in the agent "
                   "(default: the SSH agent's first key)")
@click.option("--sign-only", is_flag=True,
              help="print the signed approval (for the Dagster approval job's signed_approval field); record nothing")
@manifest_option
@user_errors
def approve_command(release_id: str, phase: str, approver: str | None, comment: str | None, key: Path | None,
                    sign_only: bool, manifest: Path | None) -> None:
    """Approve a phase of a release, signed with your SSH key (never the launcher's own; only the
    rule's group). Unsigned only where the manifest's rule says `signatures: optional`."""

    book = open_ledger()
    release = book.get(release_id)
    product = product_named(release.product, manifest)
    who = approver or settings.identity()
    problem = approval_refusal(product.manifest, release, phase, who)
    if problem:
        raise ReleaseError(f"approval refused: {problem}")
    rules = [r for r in product.manifest.approvals if r.phase.value == phase]
    signed = None
    if key is not None or sign_only or signatures_required(rules):
        signed = sign_approval(book, release, phase, who, comment, key)
        if sign_only:
            click.echo(signed, nl=False)
            return
    recorded = approve(product.manifest, book, release_id, phase, who, comment, signed)
    how = "signed" if recorded.signed else "[yellow]unsigned[/]"
    console.print(f"[green]approved[/] {recorded.phase} of {recorded.release_id} by [bold]{recorded.approver}[/] ({how})")
    if phase != "break_glass":
        waiting = missing_approvals(product.manifest, book, release, ApprovalPhase(phase))
        console.print(waiting if waiting else f"{phase}: every required approval is in", highlight=False)


def requested_product(product: Product, environment: str | None) -> Product:
    """The product a request is queued for: with `environments:` one of them, whose
    `<product>_<environment>_release_window` schedule launches it within that environment's windows."""
    if environment is None:
        if product.manifest.environments:
            names = ", ".join(e.name for e in product.manifest.environments)
            raise ReleaseError(f"{product.name} is released through environments ({names}); "
                               "say which with --environment NAME")
        return product
    return environment_product(product, environment)


@click.command("request")
@click.argument("manifest", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--version", "versions", multiple=True, required=True, metavar="SERVICE=VERSION",
              help="new version (repeat)")
@click.option("--window", type=click.Choice(["next"]), default="next", show_default=True,
              help="launch in the next open release window")
@click.option("--comment", default=None)
@click.option("--as", "actor", default=None, help="who asks; default: RELEASE_ACTOR or the OS user")
@click.option("--key", type=click.Path(path_type=Path), default=None,
              help="SSH key to sign the request with: a private key, or a .pub whose private half is in the agent "
                   "(default where the manifest's requests rule requires signatures: the SSH agent's first key)")
@click.option("--environment", default=None, help="the environment to release into (manifests with environments:)")
@user_errors
def request_command(manifest: Path, versions: tuple[str, ...], window: str, comment: str | None,
                    actor: str | None, key: Path | None, environment: str | None) -> None:
    """Queue a release for the next release window; the product's schedule launches it, with you as
    the launcher. Signed with your SSH key where the manifest's `requests` rule says so."""
    product = requested_product(load_product(manifest), environment)
    wanted = parse_assignments(versions, "--version")
    book = open_ledger()
    plan_release(product.manifest, wanted, book.stable_versions(product.name))  # refuse a bad request now
    who = actor or settings.identity()
    rule = product.manifest.requests
    signed = None
    if key is not None or (rule is not None and signatures_required([rule])):
        signed = sign_request(book, product.name, wanted, who, comment, key)
    request = queue_request(product.manifest, book, wanted, who, window, comment, signed, product=product.name)
    now = datetime.now(UTC)
    windows = product.manifest.windows
    status = window_status(windows, now)
    opening = next_opening(windows, now)
    how = "signed" if request.signature else "[yellow]unsigned[/]"
    console.print(f"[green]queued[/] {request.id}: {', '.join(f'{s}={v}' for s, v in sorted(wanted.items()))} "
                  f"by [bold]{who}[/] ({how})")
    if status.open:
        console.print(f"the window is open now ({status.reason}); {product.name}_release_window launches it "
                      "within 5 minutes", highlight=False)
    elif opening:
        local = opening.astimezone(ZoneInfo(windows.timezone))
        console.print(f"window closed: {status.reason}\nnext opening: {local:%a %Y-%m-%d %H:%M %Z}", highlight=False)
    else:
        console.print(f"window closed: {status.reason}; no opening within a year", highlight=False)


@click.command("requests")
@click.option("--product", default=None)
@click.option("--state", type=click.Choice(["queued", "launched", "cancelled"]), default=None)
@user_errors
def requests_command(product: str | None, state: str | None) -> None:
    """List release requests, oldest first; `signed` means it carries a signature, which the
    release-window schedule checks against the manifest before it launches the request."""
    rows = open_ledger().release_requests(product, state)
    if not rows:
        console.print("no release requests")
        return
    table = Table(title="release requests")
    for column in ("id", "product", "state", "versions", "asked", "by", "signed", "run"):
        table.add_column(column, no_wrap=column in ("state", "signed"))
    for r in rows:
        table.add_row(r.id, r.product, r.state, ", ".join(f"{s}={v}" for s, v in sorted(r.versions.items())),
                      f"{r.created_at:%Y-%m-%d %H:%M}", r.created_by, "signed" if r.signature else "unsigned",
                      r.run_id or "")
    console.print(table)


@click.command("cancel-request")
@click.argument("request_id")
@click.option("--as", "actor", default=None)
@user_errors
def cancel_request_command(request_id: str, actor: str | None) -> None:
    """Cancel a queued release request."""
    request = open_ledger().mark_request(request_id, "cancelled", actor or settings.identity())
    console.print(f"[yellow]cancelled[/] {request.id}")


@click.command("show")
@click.argument("release_id")
@click.option("--raw", is_flag=True, help="print the Markdown source instead of rendering it")
@user_errors
def show_command(release_id: str, raw: bool) -> None:
    """The release record: every operation the release executed, as release notes."""
    book = open_ledger()
    release = book.get(release_id)
    notes = render_release_notes(release, book.events(release_id), book.approvals(release_id))
    if raw:
        click.echo(notes)
    else:
        console.print(Markdown(notes))


governance_commands = [approve_command, request_command, requests_command, cancel_request_command, show_command]
