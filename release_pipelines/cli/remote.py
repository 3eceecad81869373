"""`release launch | status | rollback`: drive releases on a running Dagster webserver.

    release launch examples/shop/release.yaml --version orders=1.4.0 [--host 127.0.0.1 --port 3000]
    release status <release-id or run-id> [--follow]
    release rollback <release-id> [--reason "..."]

`launch` and `rollback` submit the product's jobs through the webserver's GraphQL API, so the run
goes through the instance's run queue (one release run per product, see dagster.yaml) and the
daemon's sensors take over from there. `status` reads the release ledger directly
(RELEASE_LEDGER_URL), so it works without the webserver.

Every failure is a clear message and exit code 2, never a traceback.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import click
import requests
import yaml
from rich.console import Group
from rich.live import Live
from rich.table import Table
from rich.text import Text

from release_pipelines.cli.common import (
    clear_errors,
    console,
    err_console,
    open_ledger,
    parse_assignments,
)
from release_pipelines.core.errors import ReleaseError
from release_pipelines.resources import settings
from release_pipelines.resources.database_url import redact
from release_pipelines.resources.manifest_files import load_manifest

F = TypeVar("F", bound=Callable[..., Any])

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 3000
FINAL_STATES = {"completed", "rolled_back", "failed"}
EVENTS_SHOWN = 12
IN_PROCESS = {"execution": {"config": {"in_process": {}}}}


class RemoteError(ReleaseError):
    """The webserver could not be reached or refused the request."""


def server_options(func: F) -> F:
    func = click.option("--location", default=None, metavar="NAME",
                        help="code location name; default: from --workspace, else found by job name")(func)
    func = click.option("--workspace", default="workspace.yaml", show_default=True,
                        type=click.Path(dir_okay=False, path_type=Path),
                        help="workspace file the webserver was started with (for the location name)")(func)
    func = click.option("--port", default=lambda: int(os.environ.get("DAGSTER_PORT", DEFAULT_PORT)),
                        type=int, show_default="3000 or DAGSTER_PORT", help="webserver port")(func)
    func = click.option("--host", default=lambda: os.environ.get("DAGSTER_HOST", DEFAULT_HOST),
                        show_default="127.0.0.1 or DAGSTER_HOST", help="webserver host")(func)
    return func


# -- talking to the webserver ---------------------------------------------------------------------


def _how_to_start(host: str, port: int) -> str:
    return (
        f"the Dagster webserver at http://{host}:{port} is not reachable. Start it with\n"
        f"  DAGSTER_HOME=<instance folder> dagster-webserver -w workspace.yaml -h {host} -p {port}\n"
        "and the daemon (run queue, sensors) with\n"
        "  DAGSTER_HOME=<instance folder> dagster-daemon run -w workspace.yaml\n"
        "or pass --host/--port (see docs/production.md)"
    )


def _client(host: str, port: int):
    # lazy: dagster_graphql imports all of Dagster (~1 s), which no other command needs
    from dagster_graphql import DagsterGraphQLClient, DagsterGraphQLClientError

    try:  # a cheap probe first, so an absent server gets the how-to, not a GraphQL error
        requests.get(f"http://{host}:{port}/server_info", timeout=5).raise_for_status()
    except requests.RequestException:
        raise RemoteError(_how_to_start(host, port)) from None
    try:
        return DagsterGraphQLClient(host, port_number=port, timeout=60)
    except DagsterGraphQLClientError:
        raise RemoteError(_how_to_start(host, port)) from None


def location_from_workspace(workspace: Path) -> str | None:
    """The single location name in a workspace file (None when absent or ambiguous)."""
    if not workspace.is_file():
        return None
    try:
        doc = yaml.safe_load(workspace.read_text()) or {}
    except yaml.YAMLError as exc:
        raise ReleaseError(f"{workspace}: not valid YAML ({exc})") from None
    names = []
    for entry in doc.get("load_from") or []:
        for kind, target in (entry or {}).items():
            if isinstance(target, dict):
                names.append(target.get("location_name") or target.get("module_name") or target.get("python_file"))
            elif kind == "python_module" and isinstance(target, str):
                names.append(target)
    names = [n for n in names if n]
    return names[0] if len(names) == 1 else None


def submit(host: str, port: int, job: str, run_config: dict, tags: dict[str, str], location: str | None) -> str:
    from dagster_graphql import DagsterGraphQLClientError  # lazy: see _client

    client = _client(host, port)
    try:
        return client.submit_job_execution(job, repository_location_name=location, run_config=run_config, tags=tags)
    except DagsterGraphQLClientError as exc:
        raise RemoteError(f"the webserver refused {job}: {_describe(exc)}") from None


def _describe(exc: Exception) -> str:
    parts = [str(a) for a in exc.args if a]
    body = getattr(exc, "body", None)
    if isinstance(body, list):  # config errors: one line each
        parts += [getattr(e, "message", str(e)) for e in body]
    elif body:
        parts.append(str(body))
    text = "; ".join(parts) or type(exc).__name__
    if "PipelineNotFoundError" in text or "JobNotFoundError" in text or "no job" in text.lower():
        text += " (is the manifest under RELEASE_MANIFESTS of the webserver's code location?)"
    return text


def _resolve_location(location: str | None, workspace: Path) -> str | None:
    return location or location_from_workspace(workspace)


# -- commands -------------------------------------------------------------------------------------


def _versions(pairs: tuple[str, ...]) -> dict[str, str]:
    return parse_assignments(pairs, "--version")


@click.command("launch")
@click.argument("manifest", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--version", "versions", multiple=True, required=True, metavar="SERVICE=VERSION",
              help="new version (repeat)")
@click.option("--allow-downgrade", is_flag=True, help="allow a version lower than the running stable")
@click.option("--break-glass", "break_glass", default="", metavar="REASON",
              help="launch outside a release window (needs approval)")
@click.option("--in-process", is_flag=True,
              help="run every step in the run's own process (starts faster; no per-step process isolation)")
@server_options
@clear_errors
def launch_command(manifest: Path, versions: tuple[str, ...], allow_downgrade: bool, break_glass: str,
                   in_process: bool, host: str, port: int, workspace: Path, location: str | None) -> None:
    """Launch <product>_release on a running webserver; print the run id."""
    loaded = load_manifest(manifest)
    wanted = _versions(versions)
    unknown = sorted(set(wanted) - {s.name for s in loaded.services})
    if unknown:
        raise ReleaseError(f"{manifest}: no service named {', '.join(unknown)} in product {loaded.product}")
    config: dict[str, Any] = {"versions": wanted}
    if allow_downgrade:
        config["allow_downgrade"] = True
    if break_glass:
        config["break_glass_reason"] = break_glass
    job = f"{loaded.product}_release"
    run_config: dict[str, Any] = {"ops": {"preflight": {"config": config}}} | (IN_PROCESS if in_process else {})
    run_id = submit(host, port, job, run_config,
                    {"release/actor": settings.identity()}, _resolve_location(location, workspace))
    err_console.print(f"[green]launched[/] {job} ({', '.join(f'{s}={v}' for s, v in wanted.items())}) "
                      f"on http://{host}:{port}: run {run_id}\n"
                      f"follow it: release status {run_id} --follow", highlight=False, soft_wrap=True)
    click.echo(run_id)


@click.command("rollback")
@click.argument("release_id")
@click.option("--reason", default="requested from the CLI", show_default=True)
@server_options
@clear_errors
def rollback_command(release_id: str, reason: str, host: str, port: int, workspace: Path,
                     location: str | None) -> None:
    """Launch <product>_rollback for a release on a running webserver; print the run id.
    (The rollback job always runs its steps in one process.)"""
    release = open_ledger().get(release_id)
    job = f"{release.product}_rollback"
    config = {"ops": {"rollback_start": {"config": {"release_id": release.id, "reason": reason}}}}
    run_id = submit(host, port, job, config, {"release/actor": settings.identity()},
                    _resolve_location(location, workspace))
    err_console.print(f"[green]launched[/] {job} for {release.id} (now {release.state.value}): run {run_id}",
                      highlight=False)
    click.echo(run_id)


def find_release(book, identifier: str):
    """A release by its id, or the release a Dagster run belongs to. None when the run was refused."""
    try:
        return book.get(identifier), None
    except ReleaseError:
        pass
    for release in book.releases(limit=500):
        if release.run_id == identifier:
            return release, None
    mentions = [e for e in book.events() if e.run_id == identifier]
    owned = next((e.release_id for e in mentions if e.release_id), None)
    if owned:
        return book.get(owned), None
    if mentions:  # e.g. launch:refused: the run never got a release
        return None, mentions
    raise ReleaseError(
        f"no release or run {identifier!r} in the ledger at {_redacted(settings.ledger_url())}; "
        "a launched run shows up once its preflight step has run (release history lists releases)"
    )


def _redacted(url: str) -> str:
    return redact(url)


def _events_table(events: list) -> Table:
    table = Table(title="recent events", title_justify="left")
    for column in ("#", "when (UTC)", "event", "by", "details"):
        table.add_column(column, overflow="fold")
    for event in events[-EVENTS_SHOWN:]:
        details = ", ".join(f"{k}={v}" for k, v in event.payload.items() if k not in ("versions", "previous"))
        table.add_row(str(event.seq), f"{event.created_at:%H:%M:%S}", event.kind, event.actor, details[:160])
    return table


def render_status(book, identifier: str):
    """(renderable, state) for a release id or run id."""
    release, refused = find_release(book, identifier)
    if release is None:
        reason = next((e.payload.get("reason") for e in refused if e.payload.get("reason")), "")
        text = Text.assemble(("run ", ""), (identifier, "bold"), (" was refused before a release started", "red"),
                             f"\n{reason}" if reason else "")
        return Group(text, _events_table(refused)), "refused"
    state = release.state.value
    step = f" step {release.canary_step}" if state == "canary" and release.canary_step is not None else ""
    colour = {"completed": "green", "rolled_back": "yellow", "failed": "red"}.get(state, "cyan")
    head = Table.grid(padding=(0, 2))
    head.add_row("release", Text(release.id, style="bold"))
    head.add_row("product", release.product)
    head.add_row("state", Text(f"{state}{step}", style=f"bold {colour}"))
    head.add_row("versions", ", ".join(f"{s}={v}" for s, v in sorted(release.versions.items())))
    if release.previous:
        head.add_row("previous", ", ".join(f"{s}={v}" for s, v in sorted(release.previous.items())))
    head.add_row("started", f"{release.created_at:%Y-%m-%d %H:%M:%S} UTC by {release.created_by}")
    head.add_row("updated", f"{release.updated_at:%Y-%m-%d %H:%M:%S} UTC by {release.updated_by}")
    return Group(head, _events_table(book.events(release.id))), state


@click.command("status")
@click.argument("identifier", metavar="ID")
@click.option("--follow", is_flag=True, help="refresh live until the release completes, rolls back or fails")
@click.option("--interval", default=2.0, show_default=True, type=float, help="seconds between refreshes")
@click.option("--timeout", default=0.0, type=float, help="with --follow: give up after this many seconds (0 = never)")
@clear_errors
def status_command(identifier: str, follow: bool, interval: float, timeout: float) -> None:
    """A release's state and recent ledger events (ID: release id or Dagster run id)."""
    book = open_ledger()
    renderable, state = render_status(book, identifier)
    if not follow or state in FINAL_STATES | {"refused"}:
        console.print(renderable)
        return
    deadline = time.monotonic() + timeout if timeout > 0 else None
    with Live(renderable, console=console, refresh_per_second=4, transient=False) as live:
        while state not in FINAL_STATES | {"refused"}:
            if deadline is not None and time.monotonic() > deadline:
                raise ReleaseError(f"still {state} after {timeout:.0f} s (--timeout)")
            time.sleep(interval)
            renderable, state = render_status(book, identifier)
            live.update(renderable)
    console.print(f"final state: [bold]{state}[/]")
