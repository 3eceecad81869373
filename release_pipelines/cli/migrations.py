"""`release migrations ...`: lint, check and run one database's Alembic migrations.

Works on a manifest's database (``--manifest FILE --database NAME``) or directly on an Alembic
project (``--script-location DIR --url URL``). Exit codes: 0 fine, 1 lint errors / failed or
refused migration / rollback-plan problems, 2 bad input. Never a traceback.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import click
from rich.table import Table
from sqlalchemy.exc import SQLAlchemyError

from release_pipelines.cli.common import EXIT_BAD_INPUT, EXIT_FINDINGS, console, fail
from release_pipelines.core.errors import ReleaseError
from release_pipelines.core.manifest import Database
from release_pipelines.core.reversibility import check_rollback_plan
from release_pipelines.resources.database_url import redact, resolve_url
from release_pipelines.resources.manifest_files import load_manifest
from release_pipelines.resources.migration_render import lint_script
from release_pipelines.resources.migrations import MigrationRunner, load_revisions

F = TypeVar("F", bound=Callable[..., Any])


class BadInput(ReleaseError):
    """The command line does not name a usable Alembic project or database."""


@dataclass(frozen=True)
class Target:
    script_location: Path
    url: str | None
    database: Database | None

    @property
    def name(self) -> str:
        return self.database.name if self.database else str(self.script_location)


@contextmanager
def _exit_on(code: int) -> Iterator[None]:
    """The project's own errors become a message and an exit code."""
    try:
        yield
    except ReleaseError as exc:
        fail(str(exc), code)
    except SQLAlchemyError as exc:
        detail = str(getattr(exc, "orig", None) or exc).strip().splitlines()
        fail(f"database error: {detail[0] if detail else type(exc).__name__}", EXIT_FINDINGS)


def target_options(func: F) -> F:
    """--manifest/--database or --script-location/--url, shared by every subcommand."""
    options = [
        click.option(
            "--manifest",
            type=click.Path(dir_okay=False, path_type=Path),
            help="release manifest (YAML)",
        ),
        click.option("--database", "database_name", help="database name in the manifest"),
        click.option(
            "--script-location",
            type=click.Path(file_okay=False, path_type=Path),
            help="Alembic project directory",
        ),
        click.option(
            "--url",
            help="database URL (with --script-location); manifests use their ${VAR} reference",
        ),
    ]
    for option in reversed(options):
        func = option(func)
    return func


def resolve_target(
    manifest: Path | None,
    database_name: str | None,
    script_location: Path | None,
    url: str | None,
    need_url: bool,
) -> Target:
    if manifest is not None:
        loaded = load_manifest(manifest)
        names = [d.name for d in loaded.databases]
        if database_name is None and len(names) == 1:
            database_name = names[0]
        if database_name not in names:
            raise BadInput(
                f"{manifest}: give --database, one of: {', '.join(names) or '(none declared)'}"
                if database_name is None
                else f"{manifest} declares no database {database_name!r}; known: {', '.join(names) or '(none)'}"
            )
        database = loaded.database(database_name)
        location = (manifest.parent / database.migrations).resolve()
        return Target(location, resolve_url(database.url) if need_url else None, database)
    if script_location is None:
        raise BadInput(
            "give --manifest FILE --database NAME, or --script-location DIR (with --url URL)"
        )
    if need_url and not url:
        raise BadInput("--url is required with --script-location for this command")
    if not (script_location / "env.py").is_file():
        raise BadInput(f"{script_location} is not an Alembic project (no env.py there)")
    return Target(script_location, resolve_url(url) if url else None, None)


def _runner(target: Target, **options: Any) -> MigrationRunner:
    return MigrationRunner(target.script_location, target.url or "", **options)


def _known_target(runner: MigrationRunner, revision: str) -> None:
    """An unknown --target is bad input, found before any lock is taken."""
    known = [r.revision for r in runner.revisions()]
    if revision not in ("expand-head", "head", "base", *known):
        raise BadInput(
            f"unknown --target {revision!r}; use expand-head, head, base or one of: {', '.join(known)}"
        )


@click.group("migrations")
def migrations_group() -> None:
    """Lint, check and run a database's migrations as release steps."""


@migrations_group.command("lint")
@target_options
@click.option(
    "--revision", "revisions", multiple=True, help="lint only these revisions (default: all)"
)
@click.option(
    "--pending", is_flag=True, help="lint only the revisions the database has not applied"
)
@click.option("--format", "fmt", type=click.Choice(["table", "json"]), default="table")
def lint_command(manifest, database_name, script_location, url, revisions, pending, fmt) -> None:
    """Render each revision's SQL offline and check it against the safety rules."""
    with _exit_on(EXIT_BAD_INPUT):
        target = resolve_target(manifest, database_name, script_location, url, need_url=pending)
        selected = (
            [r.revision for r in _runner(target).pending()]
            if pending
            else (list(revisions) or None)
        )
        report = lint_script(target.script_location, selected)
    if fmt == "json":
        click.echo(
            json.dumps(
                {
                    "findings": [dataclasses.asdict(f) for f in report.findings],
                    "not_renderable": [
                        {"revision": r.revision, "reason": r.error} for r in report.not_renderable
                    ],
                },
                indent=2,
            )
        )
    else:
        table = Table(title=f"migration lint: {target.name}")
        for column in ("revision", "line", "rule", "severity", "message / safe recipe"):
            table.add_column(column, overflow="fold")
        for f in report.findings:
            severity = (
                f"{f.severity} (suppressed: {f.suppress_reason})" if f.suppressed else f.severity
            )
            table.add_row(f.revision, str(f.line), f.rule, severity, f"{f.message}\n→ {f.recipe}")
        console.print(table)
        for r in report.not_renderable:
            console.print(f"[yellow]{r.revision}[/]: ", end="")
            console.print(r.error, markup=False)
        console.print(f"{len(report.blocking)} blocking finding(s), {len(report.findings)} in all")
    sys.exit(EXIT_FINDINGS if report.blocking else 0)


@migrations_group.command("check")
@target_options
@click.option(
    "--pending", is_flag=True, help="consider only the revisions the database has not applied"
)
def check_command(manifest, database_name, script_location, url, pending) -> None:
    """Report which revisions can be downgraded, and whether the rollback plan fits."""
    with _exit_on(EXIT_BAD_INPUT):
        target = resolve_target(manifest, database_name, script_location, url, need_url=pending)
        revisions = _runner(target).pending() if pending else load_revisions(target.script_location)
    table = Table(title=f"reversibility: {target.name}")
    for column in ("revision", "phase", "reversible", "reason"):
        table.add_column(column, overflow="fold")
    for r in revisions:
        table.add_row(
            r.revision,
            r.phase or "?",
            "yes" if r.reversible else "[red]no[/]",
            r.irreversible_reason or "",
        )
    console.print(table)
    problems = check_rollback_plan(target.database, revisions) if target.database else []
    for problem in problems:
        console.print("[red]rollback plan:[/] ", end="")
        console.print(str(problem), markup=False)
    sys.exit(EXIT_FINDINGS if problems else 0)


@migrations_group.command("status")
@target_options
def status_command(manifest, database_name, script_location, url) -> None:
    """Current revision, head, and what is pending (with phases)."""
    with _exit_on(EXIT_BAD_INPUT):
        target = resolve_target(manifest, database_name, script_location, url, need_url=True)
        runner = _runner(target)
        current, heads, pending = runner.current(), runner.heads(), runner.pending()
    console.print(f"database: {redact(target.url or '')}", markup=False)
    console.print(f"current:  {current or '<base>'}\nhead:     {', '.join(heads)}", markup=False)
    table = Table(title=f"{len(pending)} pending")
    for column in ("revision", "phase", "reversible", "description"):
        table.add_column(column, overflow="fold")
    for r in pending:
        table.add_row(
            r.revision, r.phase or "? (not declared)", "yes" if r.reversible else "no", r.doc
        )
    console.print(table)


def _run_options(func: F) -> F:
    for option in reversed(
        [
            click.option("--lock-timeout-ms", default=1000, show_default=True, type=int),
            click.option("--statement-timeout-ms", default=5000, show_default=True, type=int),
            click.option("--retries", default=10, show_default=True, type=int),
            click.option(
                "--lock-wait-s",
                default=30.0,
                show_default=True,
                type=float,
                help="wait for another runner",
            ),
        ]
    ):
        func = option(func)
    return func


def _print_results(results: list) -> None:
    for r in results:
        console.print(
            f"{r.revision}: {r.from_revision or '<base>'} -> {r.to_revision or '<base>'} "
            f"in {r.duration_s:.2f} s, {len(r.statements)} statement(s), {r.attempts} attempt(s)",
            markup=False,
        )
    if not results:
        console.print("nothing to do")


@migrations_group.command("upgrade")
@target_options
@click.option(
    "--target",
    "revision",
    default="expand-head",
    show_default=True,
    help="expand-head, head or a revision",
)
@click.option(
    "--contract", is_flag=True, help="apply contract revisions too (same as --target head)"
)
@_run_options
def upgrade_command(
    manifest,
    database_name,
    script_location,
    url,
    revision,
    contract,
    lock_timeout_ms,
    statement_timeout_ms,
    retries,
    lock_wait_s,
) -> None:
    """Apply pending revisions (expand ones only, unless --contract)."""
    with _exit_on(EXIT_BAD_INPUT):
        target = resolve_target(manifest, database_name, script_location, url, need_url=True)
        runner = _runner(
            target,
            lock_timeout_ms=lock_timeout_ms,
            statement_timeout_ms=statement_timeout_ms,
            retries=retries,
            lock_wait_s=lock_wait_s,
        )
        _known_target(runner, revision)
    with _exit_on(EXIT_FINDINGS):
        log = functools.partial(console.print, markup=False, highlight=False)
        results = runner.upgrade_contract(log) if contract else runner.upgrade(revision, log)
    _print_results(results)


@migrations_group.command("downgrade")
@target_options
@click.option("--target", "revision", required=True, help="revision to step down to, or base")
@_run_options
def downgrade_command(
    manifest,
    database_name,
    script_location,
    url,
    revision,
    lock_timeout_ms,
    statement_timeout_ms,
    retries,
    lock_wait_s,
) -> None:
    """Step down to a revision; refused if a revision on the way is irreversible."""
    with _exit_on(EXIT_BAD_INPUT):
        target = resolve_target(manifest, database_name, script_location, url, need_url=True)
        runner = _runner(
            target,
            lock_timeout_ms=lock_timeout_ms,
            statement_timeout_ms=statement_timeout_ms,
            retries=retries,
            lock_wait_s=lock_wait_s,
        )
        _known_target(runner, revision)
    with _exit_on(EXIT_FINDINGS):
        results = runner.downgrade(
            revision, functools.partial(console.print, markup=False, highlight=False)
        )
    _print_results(results)
