"""Irreversible revisions are known before launch, and the rollback plan must account for them."""

from __future__ import annotations

import ast
import textwrap
from pathlib import Path

import pytest

from release_pipelines.core.manifest import Database, RollbackStrategy
from release_pipelines.core.reversibility import analyze_revision_source, check_rollback_plan
from release_pipelines.resources.migrations import analyze_revision_file, load_revisions

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "shop" / "migrations"


def revision_file(tmp_path: Path, downgrade: str) -> Path:
    path = tmp_path / "0009_x.py"
    path.write_text(
        'revision = "0009_x"\ndown_revision = None\n\ndef upgrade():\n    pass\n\n'
        + textwrap.dedent(downgrade)
    )
    return path


@pytest.mark.parametrize(
    "downgrade, reason",
    [
        ("def downgrade():\n    pass\n", "downgrade() is empty"),
        ('def downgrade():\n    """Nothing to undo."""\n', "downgrade() is empty"),
        ('def downgrade():\n    """Data is gone."""\n    pass\n', "downgrade() is empty"),
        ("def downgrade():\n    ...\n", "downgrade() is empty"),
        (
            "def downgrade():\n    raise NotImplementedError('no way back')\n",
            "raises NotImplementedError",
        ),
        ("", "no downgrade() function"),
    ],
)
def test_empty_downgrades_are_irreversible(tmp_path: Path, downgrade: str, reason: str) -> None:
    result = analyze_revision_file(revision_file(tmp_path, downgrade))
    assert result.revision == "0009_x"
    assert not result.reversible
    assert reason in (result.reason or "")


def test_a_downgrade_that_does_something_is_reversible(tmp_path: Path) -> None:
    result = analyze_revision_file(
        revision_file(tmp_path, 'def downgrade():\n    """Undo."""\n    op.drop_column("t", "c")\n')
    )
    assert result.reversible and result.reason is None


def test_example_revisions_are_all_reversible() -> None:
    report = load_revisions(EXAMPLE)
    assert len(report) == 6
    assert all(r.reversible for r in report)


def _database(rollback: RollbackStrategy) -> Database:
    return Database(
        name="shop_db", url="${SHOP_DB_URL}", migrations="migrations", rollback=rollback
    )


def test_rollback_plan_refuses_downgrade_over_an_irreversible_revision(tmp_path: Path) -> None:
    irreversible = analyze_revision_file(revision_file(tmp_path, "def downgrade():\n    pass\n"))
    (problem,) = check_rollback_plan(_database(RollbackStrategy.downgrade), [irreversible])
    assert problem.path == "databases.shop_db.rollback"
    assert (
        "0009_x" in problem.message
        and "roll-forward" in problem.message
        and "snapshot" in problem.message
    )
    assert check_rollback_plan(_database(RollbackStrategy.roll_forward), [irreversible]) == []
    assert check_rollback_plan(_database(RollbackStrategy.snapshot), [irreversible]) == []
    assert (
        check_rollback_plan(_database(RollbackStrategy.downgrade), load_revisions(EXAMPLE))
        == []
    )


def test_a_parse_that_lost_cpythons_ast_thread_race_is_tried_again(monkeypatch: pytest.MonkeyPatch) -> None:
    """CPython 3.11 raises SystemError when another thread builds an AST at the same moment
    (python/cpython#106905); 20 launches in one process hit it in preflight."""
    real_parse = ast.parse
    calls: list[str] = []

    def parse_losing_the_race_once(source: str, filename: str) -> ast.Module:
        calls.append(filename)
        if len(calls) == 1:
            raise SystemError("AST constructor recursion depth mismatch (before=90, after=155)")
        return real_parse(source, filename=filename)

    monkeypatch.setattr(ast, "parse", parse_losing_the_race_once)
    source = 'revision = "r_race"\ndef downgrade():\n    op.drop_table("race")\n'
    result = analyze_revision_source(source, "r_race.py")
    assert result.reversible and result.revision == "r_race" and len(calls) == 2
