"""Our linter is at least as broad as Squawk: both run over the same SQL corpus (hazards written
by hand, plus the offline rendering of real Alembic histories we did not write); every hazard
class Squawk flags must be flagged by us too, or be listed here as not applicable, with why."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import dagster
import optuna
import pytest
from release_pipelines.resources.alembic_config import find_project
from release_pipelines.resources.migration_render import render_revisions

from release_pipelines.core.linter import lint_sql

SQUAWK = shutil.which("squawk") or str(Path(sys.executable).parent / "squawk")
EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "shop" / "migrations"

# Squawk rule -> the rules of ours that cover it, or why it does not apply to our releases.
COVERAGE: dict[str, set[str] | str] = {
    "adding-field-with-default": {"adding-field-with-default", "adding-stored-generated-column"},
    "adding-foreign-key-constraint": {"adding-foreign-key-constraint"},
    "adding-not-nullable-field": {"set-not-null-without-check", "adding-not-nullable-field"},
    "adding-required-field": {"adding-not-nullable-field"},
    "adding-serial-primary-key-field": {"disallowed-unique-constraint"},
    "ban-alter-domain-with-add-constraint": {"ban-alter-domain-with-add-constraint"},
    "ban-alter-identity": {"ban-alter-identity"},
    "ban-char-field": {"ban-char-field"},
    "ban-concurrent-index-creation-in-transaction": {"ban-concurrent-index-creation-in-transaction"},
    "ban-create-domain-with-constraint": {"ban-create-domain-with-constraint"},
    "ban-drop-column": {"ban-drop-column"},
    "ban-drop-constraint": {"ban-drop-constraint"},
    "ban-drop-database": {"ban-drop-database"},
    "ban-drop-domain": {"ban-drop-object-in-expand"},
    "ban-drop-extension": {"ban-drop-object-in-expand"},
    "ban-drop-function": {"ban-drop-object-in-expand"},
    "ban-drop-generated-expression": {"ban-drop-generated-expression"},
    "ban-drop-not-null": {"ban-drop-not-null"},
    "ban-drop-schema": {"ban-drop-object-in-expand"},
    "ban-drop-sequence": {"ban-drop-object-in-expand"},
    "ban-drop-table": {"ban-drop-table"},
    "ban-drop-type": {"ban-drop-object-in-expand"},
    "ban-drop-view": {"ban-drop-object-in-expand"},
    "ban-set-schema": {"renaming-object"},
    "ban-truncate-cascade": {"ban-truncate-cascade"},
    "ban-uncommitted-transaction": {"ban-uncommitted-transaction"},
    "changing-column-type": {"changing-column-type"},
    "constraint-missing-not-valid": {
        "constraint-missing-not-valid",
        "adding-foreign-key-constraint",
        "disallowed-unique-constraint",
    },
    "disallowed-unique-constraint": {"disallowed-unique-constraint"},
    "identifier-too-long": {"identifier-too-long"},
    "prefer-bigint-over-int": {"prefer-bigint-over-int"},
    "prefer-bigint-over-smallint": {"prefer-bigint-over-int"},
    "prefer-identity": {"prefer-identity"},
    "prefer-text-field": {"prefer-text-field"},
    "prefer-timestamp-tz": {"prefer-timestamptz"},
    "renaming-column": {"renaming-column"},
    "renaming-object": {"renaming-object"},
    "renaming-table": {"renaming-table"},
    "require-concurrent-index-creation": {"require-concurrent-index-creation"},
    "require-concurrent-index-deletion": {"require-concurrent-index-deletion"},
    "require-concurrent-partition-detach": {"require-concurrent-partition-detach"},
    "require-concurrent-reindex": {"require-concurrent-reindex"},
    "require-enum-value-ordering": {"require-enum-value-ordering"},
    "transaction-nesting": {"transaction-nesting"},
    "require-lock-timeout": "not applicable, because the runner sets lock_timeout on every "
    "connection the migration opens (migration_session), whatever env.py does",
    "require-statement-timeout": "not applicable, because the runner sets statement_timeout on "
    "every connection (a longer one only for index builds and validations)",
    "require-timeout-settings": "not applicable, for the same reason as the two timeout rules",
    "prefer-robust-stmts": "not applicable, because a revision runs in one transaction and is "
    "retried whole, and INVALID indexes a failed CONCURRENTLY build leaves are dropped before the "
    "retry; IF NOT EXISTS would hide schema drift",
}

HAZARDS = [
    "ALTER TABLE t ADD COLUMN id serial PRIMARY KEY;",
    "ALTER TABLE t ADD PRIMARY KEY (id);",
    "ALTER TABLE t ADD COLUMN x bigint NOT NULL;",
    "ALTER TABLE t ADD COLUMN x text DEFAULT random()::text;",
    "ALTER TABLE t ADD COLUMN x bigint GENERATED ALWAYS AS (a * 2) STORED;",
    "ALTER TABLE t ALTER COLUMN x ADD GENERATED ALWAYS AS IDENTITY;",
    "ALTER TABLE t ALTER COLUMN x DROP NOT NULL;",
    "ALTER TABLE t ALTER COLUMN x SET NOT NULL;",
    "ALTER TABLE t ADD CONSTRAINT c FOREIGN KEY (a) REFERENCES u (id);",
    "ALTER TABLE t ADD CONSTRAINT c CHECK (a > 0);",
    "ALTER TABLE t ADD CONSTRAINT c UNIQUE (a);",
    "REINDEX TABLE t;",
    "ALTER TABLE t DETACH PARTITION p;",
    "ALTER TABLE t RENAME COLUMN a TO b;",
    "ALTER TABLE t RENAME TO u;",
    "ALTER TABLE t DROP COLUMN a;",
    "DROP TABLE t;",
    "ALTER TYPE mood ADD VALUE 'meh';",
    f"CREATE TABLE {'a' * 70} (id bigint);",
    "TRUNCATE t CASCADE;",
    "VACUUM FULL t;",
    "CLUSTER t USING ix;",
    "CREATE INDEX ix ON t (a);",
    "DROP INDEX ix;",
    "BEGIN; CREATE INDEX CONCURRENTLY ix ON t (a); COMMIT;",
    "ALTER TABLE t ALTER COLUMN a TYPE bigint;",
    "CREATE TABLE u (id int, s smallint, n varchar(10), c char(3), ts timestamp, q serial);",
    "CREATE DOMAIN d AS int CHECK (VALUE > 0);",
    "ALTER DOMAIN d ADD CONSTRAINT c CHECK (VALUE > 0);",
    "DROP DATABASE x;",
    "BEGIN; BEGIN; SELECT 1; COMMIT;",
    "BEGIN; SELECT 1;",
    "DROP VIEW v; DROP FUNCTION f(); DROP TYPE ty; DROP SCHEMA s; DROP SEQUENCE sq; DROP EXTENSION e;",
    "DROP DOMAIN d;",
    "ALTER TABLE t DROP CONSTRAINT c;",
    "ALTER TABLE t ALTER COLUMN a DROP EXPRESSION;",
    "ALTER TABLE t SET SCHEMA s;",
    "ALTER INDEX ix RENAME TO iy;",
    "ALTER TABLE t ADD COLUMN k varchar(20);",
]


def corpus() -> dict[str, str]:
    """name -> SQL: the hazards above and every revision of three real histories that renders."""
    sql = {f"hazard_{i:02d}": statement for i, statement in enumerate(HAZARDS)}
    histories = {
        "shop": find_project(EXAMPLE),
        "optuna": find_project(ini=Path(optuna.__file__).parent / "storages/_rdb/alembic.ini"),
        "dagster": find_project(Path(dagster.__file__).parent / "_core/storage/alembic"),
    }
    for name, project in histories.items():
        for rendered in render_revisions(project):
            if rendered.sql:
                sql[f"{name}_{rendered.revision}"] = rendered.sql
    return sql


@pytest.mark.skipif(not Path(SQUAWK).exists(), reason="squawk-cli is in the test extras")
def test_every_hazard_class_squawk_flags_is_ours_too_or_explained(tmp_path: Path) -> None:
    files = {}
    for name, sql in corpus().items():
        path = tmp_path / f"{name}.sql"
        path.write_text(sql)
        files[str(path)] = sql
    done = subprocess.run([SQUAWK, "--reporter", "json", *files], capture_output=True, text=True)
    violations = json.loads(done.stdout)
    assert violations, done.stderr  # squawk ran and found the hand-written hazards
    flagged: dict[str, set[str]] = {}
    for v in violations:
        flagged.setdefault(v["file"], set()).add(v["rule_name"])
    unknown = {rule for rules in flagged.values() for rule in rules} - set(COVERAGE)
    assert not unknown, f"Squawk flags hazard classes we neither cover nor explain: {sorted(unknown)}"
    missed = []
    for path, rules in flagged.items():
        ours = {f.rule for f in lint_sql(files[path])}
        for rule in rules:
            expected = COVERAGE[rule]
            if isinstance(expected, set) and not (expected & ours):
                missed.append(f"{Path(path).name}: squawk {rule}, ours {sorted(ours)}")
    assert not missed, "\n".join(missed)
    covered = {rule for rules in flagged.values() for rule in rules}
    assert len(covered) >= 30  # the corpus exercises most of Squawk's default rules
