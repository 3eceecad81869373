"""Know before launch which revisions can be downgraded.

A revision whose ``downgrade()`` does nothing (only ``pass``, ``...``, a docstring, or a bare
``raise NotImplementedError``) cannot be rolled back; a release containing one needs another
rollback plan, chosen in the manifest before launch. Reads the source with `ast`: never imports
or runs it.
"""

from __future__ import annotations

import ast
import functools
import threading
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import PurePath
from typing import Protocol

from release_pipelines.core.errors import Problem
from release_pipelines.core.manifest import Database, RollbackStrategy


@dataclass(frozen=True)
class Reversibility:
    revision: str
    path: str
    reversible: bool
    reason: str | None = None


class HasReversibility(Protocol):
    revision: str
    reversible: bool


def _is_noop(statement: ast.stmt) -> bool:
    if isinstance(statement, ast.Pass):
        return True
    return isinstance(statement, ast.Expr) and isinstance(
        statement.value, ast.Constant
    )  # docstring, `...`


def _raises_not_implemented(statement: ast.stmt) -> bool:
    if not isinstance(statement, ast.Raise) or statement.exc is None:
        return False
    target = statement.exc.func if isinstance(statement.exc, ast.Call) else statement.exc
    return isinstance(target, ast.Name) and target.id == "NotImplementedError"


def _module_string(tree: ast.Module, name: str) -> str | None:
    for node in tree.body:
        if isinstance(node, ast.Assign | ast.AnnAssign):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            if any(isinstance(t, ast.Name) and t.id == name for t in targets):
                value = node.value
                return (
                    value.value
                    if isinstance(value, ast.Constant) and isinstance(value.value, str)
                    else None
                )
    return None


# CPython 3.11's AST constructor keeps its recursion depth per interpreter, not per thread: an
# ast.parse racing another thread's (ours, or the traceback module's while Dagster formats an error)
# raises "SystemError: AST constructor recursion depth mismatch" (python/cpython#106905). Ours run
# one at a time, and a parse that lost the race to someone else's is tried again.
_PARSE_LOCK = threading.Lock()
_PARSE_ATTEMPTS = 3


def _parse(source: str, path: str) -> ast.Module:
    for _ in range(_PARSE_ATTEMPTS - 1):
        try:
            with _PARSE_LOCK:
                return ast.parse(source, filename=path)
        except SystemError:
            continue
    with _PARSE_LOCK:
        return ast.parse(source, filename=path)


@functools.lru_cache(maxsize=4096)  # the same file is read by preflight, migrate and rollback
def analyze_revision_source(source: str, path: str, function: str = "downgrade") -> Reversibility:
    """Whether one revision's downgrade() does anything, with the reason when it does not.

    `path` names the file in messages; the caller reads it (`resources.migrations`). A multidb
    project's revisions keep each database's steps in `downgrade_<name>()`: pass that name."""
    name = PurePath(path).name
    try:
        tree = _parse(source, path)
    except SyntaxError as exc:
        return Reversibility(PurePath(path).stem, path, False, f"cannot parse {name}: line {exc.lineno}: {exc.msg}")
    revision = _module_string(tree, "revision") or PurePath(path).stem
    downgrade = next(
        (n for n in tree.body if isinstance(n, ast.FunctionDef) and n.name == function), None
    )
    if downgrade is None:
        return Reversibility(revision, path, False, f"no {function}() function")
    body = [s for s in downgrade.body if not _is_noop(s)]
    where = f"{name}:{downgrade.lineno}"
    if not body:
        return Reversibility(revision, path, False, f"{function}() is empty ({where})")
    if len(body) == 1 and _raises_not_implemented(body[0]):
        return Reversibility(revision, path, False, f"{function}() raises NotImplementedError ({where})")
    return Reversibility(revision, path, True)


def _reason(revision: HasReversibility) -> str | None:
    """Reversibility calls it `reason`, the runner's RevisionInfo `irreversible_reason`."""
    return getattr(revision, "reason", None) or getattr(revision, "irreversible_reason", None)


def check_rollback_plan(database: Database, revisions: Iterable[HasReversibility]) -> list[Problem]:
    """A problem per irreversible pending revision when the database's rollback is `downgrade`."""
    if database.rollback != RollbackStrategy.downgrade:
        return []
    return [
        Problem(
            path=f"databases.{database.name}.rollback",
            message=(
                f"revision {r.revision} cannot be downgraded"
                + (f" ({_reason(r)})" if _reason(r) else "")
                + "; set rollback: roll-forward (fix forward with a new revision) or "
                "rollback: snapshot (copy the affected tables before the migration) for "
                f"database {database.name}, or write its downgrade()"
            ),
        )
        for r in revisions
        if not r.reversible
    ]
