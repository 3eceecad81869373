"""Lint every revision, or say which could not be linted and why: a check that could not run never
looks like a pass.

Static: each revision's ``upgrade()`` is rendered offline (PostgreSQL dialect, literal SQL) in an
Alembic environment of our own, so env.py - its logging setup, its app imports, its URL handling
- is not in the way; what fails is the revision itself, named with its file and line. Revisions
that need a live database (they read through ``op.get_bind()`` or inspect the schema) are then
applied in a shadow database (`shadow_lint`), where their statements are linted as captured and
the locks they took are observed. Nothing here connects to the target database.
"""

from __future__ import annotations

import inspect
import io
import traceback
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from alembic.operations import Operations
from alembic.runtime.environment import EnvironmentContext
from alembic.script import ScriptDirectory

from release_pipelines.core.linter import RULES, Finding, RevisionSQL, lint_revisions
from release_pipelines.resources.alembic_config import (
    AlembicProject,
    as_project,
    make_config,
    preserved_logging,
    version_table_options,
)
from release_pipelines.resources.migration_safety import ALEMBIC_LOCK, MigrationError
from release_pipelines.resources.migrations import RevisionInfo, load_revisions, script_directory
from release_pipelines.resources.shadow_lint import shadow_lint

OFFLINE_URL = "postgresql+psycopg2://"
NOT_LINTED = "not-linted"
NO_STATEMENTS = "shadow-no-statements"


@dataclass(frozen=True)
class RenderedRevision:
    revision: str
    phase: str | None
    sql: str | None
    error: str | None = None
    lint_suppress: Mapping[str, str] = field(default_factory=dict)

    @property
    def renderable(self) -> bool:
        return self.sql is not None


@dataclass(frozen=True)
class RevisionCoverage:
    """How one revision was linted: "static", "shadow", or not at all (with the cause)."""

    revision: str
    linted_by: str | None
    reason: str | None = None
    accepted: str | None = None  # why going unlinted is accepted (lint_suppress / --allow-unlinted)


@dataclass(frozen=True)
class LintReport:
    findings: list[Finding]
    coverage: list[RevisionCoverage]
    observations: list[Any] = field(default_factory=list)

    @property
    def blocking(self) -> list[Finding]:
        return [f for f in self.findings if f.blocking]

    @property
    def not_linted(self) -> list[RevisionCoverage]:
        return [c for c in self.coverage if c.linted_by is None]

    @property
    def unaccepted(self) -> list[RevisionCoverage]:
        """Revisions nobody checked and nobody accepted: these fail the lint."""
        return [c for c in self.not_linted if c.accepted is None]

    @property
    def failed(self) -> bool:
        return bool(self.blocking or self.unaccepted)

    def counts(self) -> dict[str, int]:
        return {
            "revisions": len(self.coverage),
            "linted_static": sum(c.linted_by == "static" for c in self.coverage),
            "linted_shadow": sum(c.linted_by == "shadow" for c in self.coverage),
            "linted_shadow_no_statements": sum(
                f.rule == NO_STATEMENTS for f in self.findings
            ),
            "not_linted": len(self.not_linted),
            "not_linted_accepted": len(self.not_linted) - len(self.unaccepted),
            "blocking_findings": len(self.blocking),
            "findings": len(self.findings),
        }


def render_revision(
    project: AlembicProject, scripts: ScriptDirectory, info: RevisionInfo
) -> RenderedRevision:
    """The SQL one revision's upgrade() emits offline, in its own transaction (BEGIN ... COMMIT,
    with autocommit blocks as COMMIT ... BEGIN), without Alembic's version bookkeeping."""
    buffer = io.StringIO()
    script = scripts.get_revision(info.revision)
    config = make_config(project, url=OFFLINE_URL)
    try:
        upgrade = script.module.upgrade
        kwargs = _engine_argument(project, upgrade)
        with (
            ALEMBIC_LOCK,
            preserved_logging(),
            EnvironmentContext(config, scripts, as_sql=True, destination_rev=info.revision) as env,
        ):
            env.configure(
                url=OFFLINE_URL,
                output_buffer=buffer,
                literal_binds=True,
                transaction_per_migration=True,
                **version_table_options(config),
            )
            migration = env.get_context()
            with Operations.context(migration), migration.begin_transaction(_per_migration=True):
                upgrade(**kwargs)
    except Exception as exc:  # noqa: BLE001 - whatever stops rendering is the reason, verbatim
        return RenderedRevision(
            info.revision, info.phase, None, offline_failure(exc, info), info.lint_suppress
        )
    return RenderedRevision(info.revision, info.phase, buffer.getvalue(), None, info.lint_suppress)


def _engine_argument(project: AlembicProject, upgrade: Any) -> dict[str, str]:
    """A multidb revision's upgrade(engine_name) runs the selected database's steps."""
    if "engine_name" not in inspect.signature(upgrade).parameters:
        return {}
    if project.engine is None:
        raise MigrationError("multidb revision: choose the database with engine: NAME (--engine)")
    return {"engine_name": project.engine}


def offline_failure(exc: BaseException, info: RevisionInfo) -> str:
    """Where in the revision rendering stopped, and the exception as raised."""
    frames = [f for f in traceback.extract_tb(exc.__traceback__) if f.filename == info.path]
    where = (
        f" at {Path(info.path).name}:{frames[-1].lineno} (`{(frames[-1].line or '').strip()}`)"
        if frames
        else ""
    )
    detail = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    return f"upgrade() cannot run offline{where}: {type(exc).__name__}: {detail}".rstrip(": ")


def shadow_failure(info: RevisionInfo, reason: str) -> Finding:
    """A revision that renders but fails when applied: a fact worth blocking on."""
    return _revision_finding(info, "shadow-failure", reason)


def _revision_finding(info: RevisionInfo, name: str, message: str) -> Finding:
    rule = RULES[name]
    accepted = info.lint_suppress.get(rule.name)
    return Finding(
        info.revision,
        rule.name,
        rule.severity,
        message,
        rule.recipe,
        "",
        0,
        accepted is not None,
        accepted,
    )


def select_revisions(
    infos: list[RevisionInfo], revisions: Iterable[str] | None, where: object
) -> list[RevisionInfo]:
    if revisions is None:
        return infos
    wanted = set(revisions)
    unknown = wanted - {i.revision for i in infos}
    if unknown:
        raise MigrationError(
            f"unknown revision(s) {', '.join(sorted(unknown))} in {where}; known: "
            + ", ".join(i.revision for i in infos)
        )
    return [i for i in infos if i.revision in wanted]


def render_revisions(
    project: AlembicProject | str | Path, revisions: Iterable[str] | None = None
) -> list[RenderedRevision]:
    """Render the named revisions (default: all), base first."""
    project = as_project(project)
    scripts = script_directory(project)
    infos = select_revisions(load_revisions(project), revisions, project.script_location)
    return [render_revision(project, scripts, i) for i in infos]


def lint_script(
    project: AlembicProject | str | Path,
    revisions: Iterable[str] | None = None,
    *,
    shadow_server: str | None = None,
    shadow_all: bool = False,
    live_url: str | None = None,
    sample_rows: int = 0,
    allow_unlinted: Iterable[str] = (),
) -> LintReport:
    """Lint statically; with `shadow_server` (a PostgreSQL URL whose server may create a scratch
    database) apply the revisions there too - those that could not be rendered, or all with
    `shadow_all` - so every revision is linted or listed with its cause."""
    project = as_project(project)
    infos = load_revisions(project)
    selected = select_revisions(infos, revisions, project.script_location)
    scripts = script_directory(project)
    rendered = {i.revision: render_revision(project, scripts, i) for i in selected}
    static_ok = [r for r in rendered.values() if r.renderable]
    findings = lint_revisions(
        RevisionSQL(r.revision, r.sql or "", r.phase, r.lint_suppress) for r in static_ok
    )
    linted_by = {r.revision: "static" for r in static_ok}
    by_id = {i.revision: i for i in selected}
    reasons = {r.revision: r.error for r in rendered.values() if not r.renderable}
    observations: list[Any] = []
    need_shadow = [i for i in selected if i.revision in reasons or shadow_all]
    if shadow_server is not None and need_shadow:
        outcome = shadow_lint(
            project, infos, [i.revision for i in need_shadow], shadow_server, live_url, sample_rows
        )
        observations = outcome.observations
        ran = {o.revision for o in outcome.observations}
        for revision in outcome.linted:
            if revision in reasons:
                linted_by[revision] = "shadow"
                reasons.pop(revision)
                if revision not in ran:  # applied, but nothing to lint: say so, not a silent pass
                    findings.append(
                        _revision_finding(
                            by_id[revision],
                            NO_STATEMENTS,
                            f"{revision} ran no statement in the shadow database: its upgrade() "
                            "found nothing to do in the schema built from the history",
                        )
                    )
        findings += [
            f
            for f in outcome.findings
            if linted_by.get(f.revision) == "shadow" or f.rule.startswith("observed-")
        ]
        for revision, reason in outcome.failures.items():
            if revision in reasons:
                reasons[revision] = f"{reasons[revision]}; shadow database: {reason}"
            elif revision in linted_by:
                findings.append(shadow_failure(by_id[revision], reason))
    elif reasons:
        reasons = {
            rev: f"{reason}; it needs a live database: lint it with --shadow auto (or --shadow URL)"
            for rev, reason in reasons.items()
        }
    allowed = set(allow_unlinted)
    coverage = []
    for info in selected:
        accepted = info.lint_suppress.get(NOT_LINTED) or (
            "--allow-unlinted" if info.revision in allowed else None
        )
        coverage.append(
            RevisionCoverage(
                info.revision, linted_by.get(info.revision), reasons.get(info.revision), accepted
            )
        )
    return LintReport(findings, coverage, observations)
