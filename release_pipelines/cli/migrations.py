"""`release migrations ...`: lint, check and run one database's Alembic migrations.

Works on a manifest's database (``--manifest FILE --database NAME``) or directly on an Alembic
project as its users have it (``--script-location DIR`` and/or ``--ini alembic.ini``, ``--url``).
Every command takes ``--format json``. Exit codes: 0 clean, 1 findings / unlinted revisions /
irreversible revisions under --strict / failed or refused migration, 2 bad input (including a
database that cannot be reached). Never a traceback.
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
from sqlalchemy.exc import OperationalError, SQLAlchemyError

from release_pipelines.cli.common import EXIT_BAD_INPUT, EXIT_FINDINGS, console, fail
from release_pipelines.core.errors import ReleaseError
from release_pipelines.core.manifest import Database, RollbackStrategy
from release_pipelines.core.reversibility import check_rollback_plan
from release_pipelines.resources.alembic_config import (
    AlembicProject,
    find_project,
    project_for,
)
from release_pipelines.resources.database_url import redact, resolve_url
from release_pipelines.resources.manifest_files import load_manifest
from release_pipelines.resources.migration_render import LintReport, lint_script
from release_pipelines.resources.migrations import MigrationRunner, load_revisions

F = TypeVar("F", bound=Callable[..., Any])


class BadInput(ReleaseError):
    """The command line does not name a usable Alembic project or database."""


@dataclass(frozen=True)
class Target:
    project: AlembicProject
    url: str | None
    database: Database | None

    @property
    def name(self) -> str:
        return self.database.name if self.database else str(self.project.script_location)

    @property
    def rollback(self) -> RollbackStrategy:
        return self.database.rollback if self.database else RollbackStrategy.downgrade


def _emit(fmt: str, payload: dict[str, Any]) -> None:
    click.echo(json.dumps(payload, indent=2, default=str))


@contextmanager
def _exit_on(code: int, fmt: str = "table", url: str | None = None) -> Iterator[None]:
    """The project's own errors become one message (or a JSON error) and an exit code."""
    try:
        yield
    except ReleaseError as exc:
        _fail(str(exc), code, fmt)
    except OperationalError as exc:
        detail = str(getattr(exc, "orig", None) or exc).strip().splitlines()
        _fail(
            f"cannot reach the database {redact(url or '')}: {detail[0] if detail else type(exc).__name__}; "
            "check that the server runs and the URL (host, port, database, credentials) is right",
            EXIT_BAD_INPUT,
            fmt,
        )
    except SQLAlchemyError as exc:
        detail = str(getattr(exc, "orig", None) or exc).strip().splitlines()
        _fail(f"database error: {detail[0] if detail else type(exc).__name__}", EXIT_FINDINGS, fmt)


def _fail(message: str, code: int, fmt: str) -> None:
    if fmt == "json":
        click.echo(json.dumps({"error": message, "exit_code": code}, indent=2))
        sys.exit(code)
    fail(message, code)


def target_options(func: F) -> F:
    """Which project and database, shared by every subcommand."""
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
            help="Alembic project directory (its alembic.ini beside or above it is read)",
        ),
        click.option(
            "--ini",
            type=click.Path(dir_okay=False, path_type=Path),
            help="alembic.ini or pyproject.toml ([tool.alembic]) of the project",
        ),
        click.option("--section", "-n", default="alembic", help="ini section (alembic -n)"),
        click.option("--engine", help="multidb template: which of `databases` to use"),
        click.option(
            "-x",
            "--x",
            "x_arguments",
            multiple=True,
            help="key=value for env.py's context.get_x_argument() (repeatable)",
        ),
        click.option(
            "--url",
            help="database URL (with --script-location/--ini); manifests use their ${VAR} reference",
        ),
        click.option("--format", "fmt", type=click.Choice(["table", "json"]), default="table"),
    ]
    for option in reversed(options):
        func = option(func)
    return func


def resolve_target(options: dict[str, Any], need_url: bool) -> Target:
    manifest = options["manifest"]
    if manifest is not None:
        loaded = load_manifest(manifest)
        names = [d.name for d in loaded.databases]
        database_name = options["database_name"]
        if database_name is None and len(names) == 1:
            database_name = names[0]
        if database_name not in names:
            raise BadInput(
                f"{manifest}: give --database, one of: {', '.join(names) or '(none declared)'}"
                if database_name is None
                else f"{manifest} declares no database {database_name!r}; known: {', '.join(names) or '(none)'}"
            )
        database = loaded.database(database_name)
        project = project_for(database, manifest.parent.resolve())
        if options["x_arguments"]:
            project = dataclasses.replace(project, x_arguments=tuple(options["x_arguments"]))
        return Target(project, resolve_url(database.url) if need_url else None, database)
    if options["script_location"] is None and options["ini"] is None:
        raise BadInput(
            "give --manifest FILE --database NAME, or --script-location DIR / --ini alembic.ini "
            "(with --url URL)"
        )
    if need_url and not options["url"]:
        raise BadInput("--url is required with --script-location/--ini for this command")
    project = find_project(
        options["script_location"],
        ini=options["ini"],
        section=options["section"],
        engine=options["engine"],
        x_arguments=options["x_arguments"],
    )
    url = options["url"]
    return Target(project, resolve_url(url) if url else None, None)


def _runner(target: Target, **options: Any) -> MigrationRunner:
    if target.database is not None:
        locks = {
            "lock_timeout_ms": target.database.lock_timeout_ms,
            "max_lock_wait_s": target.database.max_lock_wait_s,
            "cancel_blockers_after_s": target.database.cancel_blockers_after_s,
        }
        options = {**locks, **options}
    return MigrationRunner(target.project, target.url or "", **options)


def _known_target(runner: MigrationRunner, revision: str) -> None:
    """An unknown --target is bad input, found before any lock is taken."""
    known = [r.revision for r in runner.revisions()]
    if revision not in ("expand-head", "head", "base", *known):
        raise BadInput(
            f"unknown --target {revision!r}; use expand-head, head, base or one of: {', '.join(known)}"
        )


TARGET_KEYS = (
    "manifest",
    "database_name",
    "script_location",
    "ini",
    "section",
    "engine",
    "x_arguments",
    "url",
)


def _target_args(kwargs: dict[str, Any]) -> dict[str, Any]:
    return {k: kwargs.pop(k) for k in TARGET_KEYS}


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
@click.option(
    "--shadow",
    metavar="URL|auto",
    help="also apply the revisions in a scratch database on this PostgreSQL server (auto: the "
    "--url's server) and report the locks each statement took; created and dropped here",
)
@click.option(
    "--sample-rows", default=0, show_default=True, help="with --shadow and a URL: rows per table"
)
@click.option(
    "--allow-unlinted",
    multiple=True,
    metavar="REV",
    help="accept that this revision could not be linted (repeatable)",
)
def lint_command(fmt, revisions, pending, shadow, sample_rows, allow_unlinted, **kwargs) -> None:
    """Lint every revision (offline SQL; --shadow: also as applied). Exit 1 on blocking findings
    or on any revision that could not be linted and is not accepted."""
    args = _target_args(kwargs)
    with _exit_on(EXIT_BAD_INPUT, fmt, args["url"]):
        target = resolve_target(args, need_url=pending or shadow == "auto")
        selected = (
            [r.revision for r in _runner(target).pending()]
            if pending
            else (list(revisions) or None)
        )
        shadow_server = target.url if shadow == "auto" else shadow
        report = lint_script(
            target.project,
            selected,
            shadow_server=shadow_server,
            shadow_all=shadow is not None,
            live_url=target.url,
            sample_rows=sample_rows,
            allow_unlinted=allow_unlinted,
        )
    if fmt == "json":
        _emit(fmt, _lint_json(target, report))
    else:
        _print_lint(target, report)
    sys.exit(EXIT_FINDINGS if report.failed else 0)


def _lint_json(target: Target, report: LintReport) -> dict[str, Any]:
    return {
        "target": target.name,
        "counts": report.counts(),
        "revisions": [dataclasses.asdict(c) for c in report.coverage],
        "not_linted": [dataclasses.asdict(c) for c in report.not_linted],
        "findings": [dataclasses.asdict(f) for f in report.findings],
        "observed": [dataclasses.asdict(o) for o in report.observations],
    }


def _print_lint(target: Target, report: LintReport) -> None:
    table = Table(title=f"migration lint: {target.name}")
    for column in ("revision", "line", "rule", "severity", "message / safe recipe"):
        table.add_column(column, overflow="fold")
    for f in report.findings:
        severity = f"{f.severity} (suppressed: {f.suppress_reason})" if f.suppressed else f.severity
        table.add_row(f.revision, str(f.line), f.rule, severity, f"{f.message}\n→ {f.recipe}")
    console.print(table)
    for c in report.not_linted:
        status = f"accepted ({c.accepted})" if c.accepted else "NOT LINTED"
        console.print(f"[yellow]{c.revision}[/]: {status}: ", end="")
        console.print(c.reason or "", markup=False)
    counts = report.counts()
    console.print(
        f"{counts['revisions']} revision(s): {counts['linted_static']} linted statically, "
        f"{counts['linted_shadow']} in the shadow database "
        f"({counts['linted_shadow_no_statements']} of them ran no statement there), "
        f"{counts['not_linted']} not linted "
        f"({counts['not_linted_accepted']} accepted); {len(report.blocking)} blocking finding(s), "
        f"{len(report.findings)} in all",
        markup=False,
    )
    if report.unaccepted:
        console.print(
            "not linted means not checked: lint them with --shadow auto, or accept each with "
            "--allow-unlinted REV or lint_suppress = {'not-linted': 'reason'} in the revision",
            markup=False,
        )


@migrations_group.command("check")
@target_options
@click.option(
    "--pending", is_flag=True, help="consider only the revisions the database has not applied"
)
@click.option(
    "--strict",
    is_flag=True,
    help="exit 1 when any revision is irreversible and the rollback strategy is downgrade",
)
def check_command(fmt, pending, strict, **kwargs) -> None:
    """Report which revisions can be downgraded, and whether the rollback plan fits."""
    args = _target_args(kwargs)
    with _exit_on(EXIT_BAD_INPUT, fmt, args["url"]):
        target = resolve_target(args, need_url=pending)
        revisions = _runner(target).pending() if pending else load_revisions(target.project)
    problems = (
        [str(p) for p in check_rollback_plan(target.database, revisions)] if target.database else []
    )
    irreversible = [r for r in revisions if not r.reversible]
    refused = bool(problems) or (
        strict and bool(irreversible) and target.rollback is RollbackStrategy.downgrade
    )
    if fmt == "json":
        _emit(
            fmt,
            {
                "target": target.name,
                "rollback": target.rollback.value,
                "revisions": [
                    {
                        "revision": r.revision,
                        "phase": r.phase,
                        "reversible": r.reversible,
                        "reason": r.irreversible_reason,
                        "merge": r.is_merge,
                    }
                    for r in revisions
                ],
                "irreversible": [r.revision for r in irreversible],
                "problems": problems,
            },
        )
    else:
        table = Table(title=f"reversibility: {target.name}")
        for column in ("revision", "phase", "reversible", "reason"):
            table.add_column(column, overflow="fold")
        for r in revisions:
            table.add_row(
                r.revision,
                r.phase or "? (not declared: expand for lint)",
                "yes" if r.reversible else "[red]no[/]",
                r.irreversible_reason or "",
            )
        console.print(table)
        for problem in problems:
            console.print("[red]rollback plan:[/] ", end="")
            console.print(problem, markup=False)
        if strict and irreversible and not problems:
            console.print(
                f"--strict: {len(irreversible)} irreversible revision(s) under rollback: "
                f"{target.rollback.value}: {', '.join(r.revision for r in irreversible)}",
                markup=False,
            )
    sys.exit(EXIT_FINDINGS if refused else 0)


@migrations_group.command("status")
@target_options
def status_command(fmt, **kwargs) -> None:
    """Current revision, head, and what is pending (with phases)."""
    args = _target_args(kwargs)
    with _exit_on(EXIT_BAD_INPUT, fmt, args["url"]):
        target = resolve_target(args, need_url=True)
        runner = _runner(target)
        current, heads, pending = runner.current(), runner.heads(), runner.pending()
    if fmt == "json":
        _emit(
            fmt,
            {
                "database": redact(target.url or ""),
                "current": current,
                "heads": heads,
                "pending": [
                    {
                        "revision": r.revision,
                        "phase": r.phase,
                        "reversible": r.reversible,
                        "doc": r.doc,
                    }
                    for r in pending
                ],
            },
        )
        return
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
    if any(r.phase is None for r in pending):
        console.print(
            "revisions without `phase` are not applied by the default target expand-head: "
            'use --target head, or declare phase = "expand" / "contract" in them',
            markup=False,
        )


def _run_options(func: F) -> F:
    for option in reversed(
        [
            click.option(
                "--lock-timeout-ms", default=None, type=int, help="default: manifest or 50"
            ),
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


def _running_runner(args: dict[str, Any], revision: str, lock_timeout_ms, statement_timeout_ms, retries,
                    lock_wait_s) -> MigrationRunner:
    """The runner `upgrade` / `downgrade` apply revisions with: the target resolved (a URL is
    needed), the command line's lock settings over the manifest's, the --target revision known."""
    settings = {"statement_timeout_ms": statement_timeout_ms, "retries": retries, "lock_wait_s": lock_wait_s}
    if lock_timeout_ms is not None:
        settings["lock_timeout_ms"] = lock_timeout_ms
    runner = _runner(resolve_target(args, need_url=True), **settings)
    _known_target(runner, revision)
    return runner


def _report_results(fmt: str, results: list, log: list[str]) -> None:
    if fmt == "json":
        _emit(fmt, {"applied": [dataclasses.asdict(r) for r in results], "log": log})
        return
    for r in results:
        console.print(
            f"{r.revision}: {r.from_revision or '<base>'} -> {r.to_revision or '<base>'} "
            f"in {r.duration_s:.2f} s, {len(r.statements)} statement(s), {r.attempts} attempt(s)",
            markup=False,
        )
    if not results:
        console.print("nothing to do", markup=False)


def _logger(fmt: str, lines: list[str]) -> Callable[[str], None]:
    if fmt == "json":
        return lines.append
    return functools.partial(console.print, markup=False, highlight=False)


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
    fmt, revision, contract, lock_timeout_ms, statement_timeout_ms, retries, lock_wait_s, **kwargs
) -> None:
    """Apply pending revisions (expand ones only, unless --contract or --target head)."""
    args = _target_args(kwargs)
    with _exit_on(EXIT_BAD_INPUT, fmt, args["url"]):
        runner = _running_runner(args, revision, lock_timeout_ms, statement_timeout_ms, retries, lock_wait_s)
        undeclared = [r.revision for r in runner.pending() if r.phase is None]
    lines: list[str] = []
    log = _logger(fmt, lines)
    if undeclared and revision == "expand-head" and not contract:
        log(
            f"{', '.join(undeclared)} declare(s) no phase: expand-head stops before them; "
            "use --target head to apply them"
        )
    with _exit_on(EXIT_FINDINGS, fmt, args["url"]):
        results = runner.upgrade_contract(log) if contract else runner.upgrade(revision, log)
    _report_results(fmt, results, lines)


@migrations_group.command("downgrade")
@target_options
@click.option("--target", "revision", required=True, help="revision to step down to, or base")
@_run_options
def downgrade_command(
    fmt, revision, lock_timeout_ms, statement_timeout_ms, retries, lock_wait_s, **kwargs
) -> None:
    """Step down to a revision; refused if a revision on the way is irreversible."""
    args = _target_args(kwargs)
    with _exit_on(EXIT_BAD_INPUT, fmt, args["url"]):
        runner = _running_runner(args, revision, lock_timeout_ms, statement_timeout_ms, retries, lock_wait_s)
    lines: list[str] = []
    with _exit_on(EXIT_FINDINGS, fmt, args["url"]):
        results = runner.downgrade(revision, _logger(fmt, lines))
    _report_results(fmt, results, lines)
