"""Column lineage declared by the revisions that fill columns (`backfill(..., lineage=...)`).

A revision runs deep inside Alembic; the migrate step sets `lineage_recorder` for the duration of
a migration and records each declaration in the ledger, so the table's materialization and the
OpenLineage event carry `new column <- source columns` without the revision knowing Dagster.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from contextvars import ContextVar

from release_pipelines.core.errors import ReleaseError
from release_pipelines.core.lineage import KINDS, Derivation

lineage_recorder: ContextVar[Callable[[Derivation], None] | None] = ContextVar("lineage_recorder", default=None)


def declare_column_lineage(table: str, column: str, sources: Sequence[str], kind: str = "derived") -> Derivation:
    """`table.column` comes from `sources` ("column" of the same table or "table.column");
    kind "renamed" or "retyped" for the new column of a rename or type migration."""
    if kind not in KINDS:
        raise ReleaseError(f"column lineage of {table}.{column}: kind {kind!r} is not one of {', '.join(KINDS)}")
    if isinstance(sources, str) or not sources:
        raise ReleaseError(f"column lineage of {table}.{column}: give the source columns as a list")
    derivation = Derivation(table, column, tuple(sources), kind)
    if (recorder := lineage_recorder.get()) is not None:
        recorder(derivation)
    return derivation
