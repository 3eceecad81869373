"""Render each revision's SQL offline (Alembic ``--sql`` mode, PostgreSQL dialect) and lint it.

Rendering is per revision so one revision that needs a live connection (it reads results
through ``op.get_bind()``) is reported as "not renderable offline" while the others are still
linted. Nothing here connects to a database.
"""

from __future__ import annotations

import io
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from alembic import command
from release_pipelines.resources.migration_safety import ALEMBIC_LOCK, MigrationError
from release_pipelines.resources.migrations import RevisionInfo, alembic_config, load_revisions

from release_pipelines.core.linter import Finding, RevisionSQL, lint_revisions

OFFLINE_URL = "postgresql+psycopg2://"


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
class LintReport:
    findings: list[Finding]
    not_renderable: list[RenderedRevision]

    @property
    def blocking(self) -> list[Finding]:
        return [f for f in self.findings if f.blocking]


def render_revision(script_location: str | Path, info: RevisionInfo) -> RenderedRevision:
    """The offline SQL `alembic upgrade <down>:<rev> --sql` prints for one revision."""
    if isinstance(info.down_revision, tuple):
        return RenderedRevision(
            info.revision,
            info.phase,
            None,
            "merge revision: render its parents instead",
            info.lint_suppress,
        )
    buffer = io.StringIO()
    cfg = alembic_config(script_location, url=OFFLINE_URL)
    cfg.output_buffer = buffer
    start = info.down_revision or "base"
    try:
        with ALEMBIC_LOCK:
            command.upgrade(cfg, f"{start}:{info.revision}", sql=True)
    except Exception as exc:  # noqa: BLE001 - any failure here means "needs a live database"
        detail = str(exc).splitlines()[0] if str(exc) else ""
        reason = (
            f"not renderable offline ({type(exc).__name__}: {detail}): it probably reads results "
            "through op.get_bind(); guard the live part with `if not op.get_context().as_sql:` "
            "so its DDL can be linted, and review the rest by hand"
        )
        return RenderedRevision(info.revision, info.phase, None, reason, info.lint_suppress)
    return RenderedRevision(info.revision, info.phase, buffer.getvalue(), None, info.lint_suppress)


def render_revisions(
    script_location: str | Path, revisions: Iterable[str] | None = None
) -> list[RenderedRevision]:
    """Render the named revisions (default: all), base first."""
    wanted = set(revisions) if revisions is not None else None
    infos = load_revisions(script_location)
    if wanted is not None:
        unknown = wanted - {i.revision for i in infos}
        if unknown:
            raise MigrationError(
                f"unknown revision(s) {', '.join(sorted(unknown))} in {script_location}; known: "
                + ", ".join(i.revision for i in infos)
            )
    return [
        render_revision(script_location, i) for i in infos if wanted is None or i.revision in wanted
    ]


def lint_script(script_location: str | Path, revisions: Iterable[str] | None = None) -> LintReport:
    """Render then lint; revisions that cannot be rendered are listed, not fatal."""
    rendered = render_revisions(script_location, revisions)
    findings = lint_revisions(
        RevisionSQL(r.revision, r.sql, r.phase, r.lint_suppress)
        for r in rendered
        if r.sql is not None
    )
    return LintReport(findings, [r for r in rendered if not r.renderable])
