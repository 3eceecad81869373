"""The migration linter: every rule fires on its unsafe form and stays quiet on the safe one."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest
from release_pipelines.resources.migration_render import lint_script, render_revisions

from release_pipelines.core.linter import RULES, RevisionSQL, lint_revisions, lint_sql

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "shop" / "migrations"


def rules(sql: str, phase: str = "expand", **kwargs) -> list[str]:
    return [f.rule for f in lint_sql(sql, phase=phase, **kwargs)]


# rule -> (unsafe SQL that must be flagged, safe SQL that must not be)
CASES = {
    "require-concurrent-index-creation": (
        "CREATE INDEX ix ON orders (status);",
        "COMMIT; CREATE INDEX CONCURRENTLY ix ON orders (status); BEGIN;",
    ),
    "require-concurrent-index-deletion": ("DROP INDEX ix;", "DROP INDEX CONCURRENTLY ix;"),
    "ban-concurrent-index-creation-in-transaction": (
        "BEGIN; CREATE INDEX CONCURRENTLY ix ON orders (status); COMMIT;",
        "BEGIN; COMMIT; CREATE INDEX CONCURRENTLY ix ON orders (status); BEGIN; COMMIT;",
    ),
    "adding-not-nullable-field": (
        "ALTER TABLE orders ADD COLUMN note text NOT NULL;",
        "ALTER TABLE orders ADD COLUMN note text NOT NULL DEFAULT '';",
    ),
    "adding-field-with-default": (
        "ALTER TABLE orders ADD COLUMN token uuid DEFAULT gen_random_uuid();",
        "ALTER TABLE orders ADD COLUMN created timestamptz DEFAULT now();",
    ),
    "adding-foreign-key-constraint": (
        "ALTER TABLE orders ADD CONSTRAINT fk FOREIGN KEY (product_id) REFERENCES products (id);",
        "ALTER TABLE orders ADD CONSTRAINT fk FOREIGN KEY (product_id) REFERENCES products (id) NOT VALID;",
    ),
    "constraint-missing-not-valid": (
        "ALTER TABLE orders ADD CONSTRAINT ck CHECK (quantity > 0);",
        "ALTER TABLE orders ADD CONSTRAINT ck CHECK (quantity > 0) NOT VALID;",
    ),
    "disallowed-unique-constraint": (
        "ALTER TABLE orders ADD CONSTRAINT u UNIQUE (status);",
        "ALTER TABLE orders ADD CONSTRAINT u UNIQUE USING INDEX ix_u;",
    ),
    "changing-column-type": (
        "ALTER TABLE orders ALTER COLUMN quantity TYPE bigint;",
        "ALTER TABLE orders ADD COLUMN quantity_big bigint;",
    ),
    "set-not-null-without-check": (
        "ALTER TABLE orders ALTER COLUMN status SET NOT NULL;",
        (
            "ALTER TABLE orders ADD CONSTRAINT ck CHECK (status IS NOT NULL) NOT VALID;"
            " ALTER TABLE orders VALIDATE CONSTRAINT ck; ALTER TABLE orders ALTER COLUMN status SET NOT NULL;"
        ),
    ),
    "ban-drop-column": (
        "ALTER TABLE orders DROP COLUMN status;",
        "ALTER TABLE orders ADD COLUMN note text;",
    ),
    "ban-drop-table": (
        "DROP TABLE orders;",
        "CREATE TABLE scratch (id bigint); DROP TABLE scratch;",
    ),
    "renaming-column": (
        "ALTER TABLE orders RENAME COLUMN status TO state;",
        "ALTER TABLE orders ADD COLUMN state text;",
    ),
    "renaming-table": (
        "ALTER TABLE orders RENAME TO purchases;",
        "CREATE TABLE purchases (id bigint);",
    ),
    "prefer-bigint-over-int": ("CREATE TABLE t (id integer);", "CREATE TABLE t (id bigint);"),
    "prefer-timestamptz": ("CREATE TABLE t (at timestamp);", "CREATE TABLE t (at timestamptz);"),
}


@pytest.mark.parametrize("rule", sorted(CASES))
def test_rule_flags_the_unsafe_form(rule: str) -> None:
    unsafe, _ = CASES[rule]
    assert rule in rules(unsafe)


@pytest.mark.parametrize("rule", sorted(CASES))
def test_rule_accepts_the_safe_form(rule: str) -> None:
    _, safe = CASES[rule]
    assert rule not in rules(safe)


def test_every_catalogue_rule_has_cases_except_meta_rules() -> None:
    assert set(RULES) - set(CASES) == {"missing-phase", "unparseable-sql"}


@pytest.mark.parametrize(
    "rule, sql",
    [
        ("ban-drop-column", "ALTER TABLE orders DROP COLUMN status;"),
        ("ban-drop-table", "DROP TABLE orders;"),
        ("renaming-column", "ALTER TABLE orders RENAME COLUMN status TO state;"),
        ("renaming-table", "ALTER TABLE orders RENAME TO purchases;"),
    ],
)
def test_destructive_changes_are_allowed_in_contract(rule: str, sql: str) -> None:
    assert rule in rules(sql, phase="expand")
    assert rule not in rules(sql, phase="contract")


def test_a_table_created_in_the_same_revision_is_exempt_from_locking_rules() -> None:
    sql = """
        CREATE TABLE audit (id bigint PRIMARY KEY, order_id bigint, at timestamptz);
        CREATE INDEX ix_audit_order ON audit (order_id);
        ALTER TABLE audit ADD CONSTRAINT fk FOREIGN KEY (order_id) REFERENCES orders (id);
        ALTER TABLE audit ALTER COLUMN order_id SET NOT NULL;
    """
    assert rules(sql) == []


def test_volatile_and_unknown_defaults() -> None:
    assert [f.severity for f in lint_sql("ALTER TABLE t ADD COLUMN r float DEFAULT random();")] == [
        "error"
    ]
    unknown = lint_sql("ALTER TABLE t ADD COLUMN r text DEFAULT my_func();")
    assert [(f.rule, f.severity) for f in unknown] == [("adding-field-with-default", "warning")]
    assert rules("ALTER TABLE t ADD COLUMN n bigserial;") == ["adding-field-with-default"]


def test_not_null_check_validated_in_a_later_revision_counts() -> None:
    findings = lint_revisions(
        [
            RevisionSQL(
                "r1", "ALTER TABLE orders ADD CONSTRAINT ck CHECK (status IS NOT NULL) NOT VALID;"
            ),
            RevisionSQL(
                "r2",
                "ALTER TABLE orders VALIDATE CONSTRAINT ck; ALTER TABLE orders ALTER COLUMN status SET NOT NULL;",
            ),
        ]
    )
    assert findings == []
    wrong_column = "ALTER TABLE orders VALIDATE CONSTRAINT ck; ALTER TABLE orders ALTER COLUMN quantity SET NOT NULL;"
    findings = lint_revisions(
        [
            RevisionSQL(
                "r1", "ALTER TABLE orders ADD CONSTRAINT ck CHECK (status IS NOT NULL) NOT VALID;"
            ),
            RevisionSQL("r2", wrong_column),
        ]
    )
    assert [f.rule for f in findings] == ["set-not-null-without-check"]


def test_finding_names_revision_statement_line_and_recipe() -> None:
    sql = "BEGIN;\n\nALTER TABLE orders\n  ADD COLUMN note text NOT NULL;\nCOMMIT;\n"
    (finding,) = lint_sql(sql, revision="0007_note")
    assert finding.revision == "0007_note"
    assert finding.line == 3
    assert finding.statement.startswith("ALTER TABLE orders")
    assert "orders.note" in finding.message
    assert "backfill" in finding.recipe
    assert finding.blocking


def test_suppression_keeps_the_finding_with_its_reason() -> None:
    (finding,) = lint_sql(
        "DROP INDEX ix;", lint_suppress={"require-concurrent-index-deletion": "table has 12 rows"}
    )
    assert finding.suppressed and finding.suppress_reason == "table has 12 rows"
    assert not finding.blocking


def test_missing_phase_and_unparseable_sql_are_reported() -> None:
    assert rules("SELECT 1;", phase=None) == ["missing-phase"]
    assert rules("ALTER TABLE WHAT;") == ["unparseable-sql"]


def test_alembic_bookkeeping_is_not_linted() -> None:
    sql = "CREATE TABLE alembic_version (version_num VARCHAR(32) NOT NULL);"
    assert rules(sql) == []


def test_example_project_renders_and_lints_clean() -> None:
    report = lint_script(EXAMPLE)
    assert report.not_renderable == []
    assert report.blocking == []
    assert {f.rule for f in report.findings} == {"prefer-bigint-over-int"}
    assert all(f.suppressed and f.revision == "0001_tables" for f in report.findings)


def test_autocommit_block_renders_as_commit_begin() -> None:
    (rendered,) = render_revisions(EXAMPLE, ["0003_orders_product_idx"])
    sql = rendered.sql or ""
    assert (
        sql.index("COMMIT;")
        < sql.index("CREATE INDEX CONCURRENTLY")
        < sql.index("BEGIN;", sql.index("CONCURRENTLY"))
    )


def _write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(text))


def test_revision_needing_a_live_connection_is_not_renderable_and_linting_carries_on(
    tmp_path: Path,
) -> None:
    project = tmp_path / "migrations"
    _write(project / "env.py", (EXAMPLE / "env.py").read_text())
    _write(
        project / "versions" / "a1.py",
        """
        import sqlalchemy as sa
        from alembic import op
        revision = "a1"
        down_revision = None
        phase = "expand"
        def upgrade():
            count = op.get_bind().execute(sa.text("SELECT count(*) FROM orders")).scalar()
            op.execute(f"UPDATE orders SET status = 'n{count}'")
        def downgrade():
            pass
        """,
    )
    _write(
        project / "versions" / "a2.py",
        """
        from alembic import op
        revision = "a2"
        down_revision = "a1"
        phase = "expand"
        def upgrade():
            op.drop_column("orders", "status")
        def downgrade():
            pass
        """,
    )
    report = lint_script(project)
    assert [r.revision for r in report.not_renderable] == ["a1"]
    assert "not renderable offline" in (report.not_renderable[0].error or "")
    assert [(f.revision, f.rule) for f in report.findings] == [("a2", "ban-drop-column")]
