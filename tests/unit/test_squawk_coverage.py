"""Our linter is at least as broad as Squawk: both run over the same SQL corpus (hazards written
by hand, plus the offline rendering of real Alembic histories we did not write), Squawk with every
rule it has (its opt-in rules included); every rule of the installed Squawk must be in the table,
fire on the corpus, and be flagged by us too where it fires, or be listed as not applicable, with why."""

from __future__ import annotations

import json
import re
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
    "require-timeout-settings": "not applicable, for the same reason as the two timeout rules "
    "(squawk reports it under their names, see ALIASES)",
    "prefer-robust-stmts": "not applicable, because a revision runs in one transaction and is "
    "retried whole, and INVALID indexes a failed CONCURRENTLY build leaves are dropped before the "
    "retry; IF NOT EXISTS would hide schema drift",
    # Squawk's opt-in rules (off by default; the test turns every one on).
    "ban-add-column": "not applicable, because adding a column is what an expand revision is for; "
    "a release that reads SELECT * into positional structs or INSERTs without a column list is "
    "outside the expand/contract model, and no schema linter can see it",
    "ban-add-composite-attribute": "not applicable, for the same reason as ban-add-column: an "
    "added attribute is an expand step",
    "ban-add-enum-value": "not applicable, because adding a value is the expand step for an enum "
    "(require-enum-value-ordering checks where it sorts); the new release must not write it while "
    "the old one runs, which is application knowledge, not schema",
    "ban-alter-database-options": {"ban-database-wide-change"},
    "ban-alter-extension": {"ban-database-wide-change"},
    "ban-alter-function-options": {"ban-database-wide-change"},
    "ban-alter-generated-expression": {
        "ban-alter-generated-expression",
        "ban-drop-generated-expression",
        "adding-stored-generated-column",
    },
    "ban-alter-policy-condition": {"ban-access-change-in-expand"},
    "ban-alter-policy-roles": {"ban-access-change-in-expand"},
    "ban-alter-role-options": {"ban-database-wide-change"},
    "ban-alter-row-level-security": {"ban-access-change-in-expand"},
    "ban-alter-sequence-values": {"ban-alter-sequence-values", "ban-alter-identity"},
    "ban-alter-system-options": {"ban-database-wide-change"},
    "ban-alter-view-options": {"ban-access-change-in-expand"},
    "ban-create-policy": {"ban-access-change-in-expand"},
    "ban-detach-inheritance": {"ban-detach-inheritance"},
    "ban-disable-trigger": {"ban-disable-trigger", "ban-access-change-in-expand"},
    "ban-drop-index": {"ban-drop-index"},
    "ban-drop-policy": {"ban-drop-object-in-expand"},
    "ban-new-write-restriction": "not applicable, because the locking forms are ours already "
    "(constraint-missing-not-valid, adding-foreign-key-constraint, disallowed-unique-constraint, "
    "set-not-null-without-check) and our recipes add the NOT VALID or CONCURRENTLY form on purpose; "
    "whether the old release writes rows the new constraint rejects is application knowledge",
    "ban-replace-view-function": {"ban-replace-view-function"},
    "ban-replica-identity": "not applicable, because replica identity concerns logical-replication "
    "consumers outside the release, not the old and new application; the statement only changes "
    "the catalog (a brief lock that lock_timeout bounds)",
    "ban-revoke": {"ban-access-change-in-expand"},
    "ban-set-default": "not applicable, because SET DEFAULT is a step of our own recipes "
    "(adding-field-with-default, adding-not-nullable-field): an old release that omits the column "
    "keeps working, it gets the default instead of NULL",
    "prefer-repack": {"ban-vacuum-full-and-cluster"},
    "require-table-schema": "not applicable, because the runner connects with the search_path and "
    "version_table_schema the project's env.py sets, so unqualified names resolve the same in lint, "
    "shadow and release; it is a style rule, not a lock or compatibility hazard",
}

# Rules squawk accepts in --include but reports under other names: with require-timeout-settings
# alone included it reports require-lock-timeout and require-statement-timeout, and with those two
# excluded it reports nothing, so it can never fire under its own name.
ALIASES = {"require-timeout-settings"}

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
    # Squawk's opt-in rules
    "ALTER TYPE address ADD ATTRIBUTE street text;",
    "ALTER TYPE mood ADD VALUE 'happy' AFTER 'sad';",
    "ALTER DATABASE app SET search_path TO public;",
    "ALTER EXTENSION postgis UPDATE TO '3.4.0';",
    "ALTER FUNCTION f() SECURITY DEFINER;",
    "ALTER TABLE t ALTER COLUMN c SET EXPRESSION AS (a * 3);",
    "ALTER POLICY p ON accounts USING (owner_id = 1);",
    "ALTER POLICY p ON accounts TO app_user;",
    "ALTER ROLE app_user NOLOGIN;",
    "ALTER TABLE accounts ENABLE ROW LEVEL SECURITY;",
    "ALTER SEQUENCE ids RESTART WITH 1;",
    "ALTER SYSTEM SET timezone = 'UTC';",
    "ALTER VIEW v SET (security_invoker = true);",
    "CREATE POLICY p ON accounts TO app_user USING (owner_id = 1);",
    "ALTER TABLE parent DETACH PARTITION child CONCURRENTLY;",
    "ALTER TABLE t DISABLE TRIGGER trg;",
    "DROP INDEX CONCURRENTLY IF EXISTS i;",
    "DROP POLICY IF EXISTS p ON t;",
    "ALTER TABLE t ADD CONSTRAINT c CHECK (id > 0) NOT VALID;",
    "CREATE OR REPLACE VIEW v AS SELECT 1 AS id;",
    "ALTER TABLE t REPLICA IDENTITY FULL;",
    "REVOKE SELECT ON t FROM app;",
    "ALTER TABLE t ALTER COLUMN c SET DEFAULT 1;",
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


def squawk_rules() -> set[str]:
    """Every rule the installed squawk has. Its CLI cannot list them, so the names are read from
    the binary (its rule table is one run of concatenated names, so it is split before each known prefix;
    `unused-` is squawk's own unused-ignore notice, which the check then drops) and each candidate is
    kept only if squawk's own `--include` parser accepts it."""
    prefixes = r"(?:adding|ban|changing|constraint|disallowed|identifier|prefer|renaming|require|transaction|unused)-"
    candidates = set()
    for run in re.findall(rb"[a-z][a-z-]{5,}", Path(SQUAWK).resolve().read_bytes()):
        for piece in re.split(f"(?={prefixes})", run.decode()):
            if re.fullmatch(prefixes + r"[a-z-]*[a-z]", piece):
                candidates.add(piece)
    return {
        rule
        for rule in candidates
        if "invalid rule name" not in subprocess.run(
            [SQUAWK, "--include", rule, "--stdin-filepath", "x.sql"],
            check=False,
            input="SELECT 1;",
            capture_output=True,
            text=True,
        ).stderr
    }


@pytest.mark.skipif(not Path(SQUAWK).exists(), reason="squawk-cli is in the test extras")
def test_the_table_names_every_rule_of_the_installed_squawk() -> None:
    installed = squawk_rules()
    assert len(installed) >= 74  # squawk 2.70: 48 default rules and 26 opt-in
    assert not installed - set(COVERAGE), f"squawk rules missing from COVERAGE: {sorted(installed - set(COVERAGE))}"
    assert not set(COVERAGE) - installed, f"COVERAGE names rules squawk does not have: {sorted(set(COVERAGE) - installed)}"


@pytest.mark.skipif(not Path(SQUAWK).exists(), reason="squawk-cli is in the test extras")
def test_every_hazard_class_squawk_flags_is_ours_too_or_explained(tmp_path: Path) -> None:
    files = {}
    for name, sql in corpus().items():
        path = tmp_path / f"{name}.sql"
        path.write_text(sql)
        files[str(path)] = sql
    everything = ["--include", ",".join(sorted(COVERAGE))]
    flagged: dict[str, set[str]] = {}
    # prefer-repack speaks only for PostgreSQL 19 (REPACK); the other rules for the default version.
    for version in ([], ["--pg-version", "19"]):
        done = subprocess.run(
            [SQUAWK, "--reporter", "json", *everything, *version, *files],
            check=False,
            capture_output=True,
            text=True,
        )
        violations = json.loads(done.stdout)
        assert violations, done.stderr  # squawk ran and found the hand-written hazards
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
    fired = {rule for rules in flagged.values() for rule in rules}
    silent = set(COVERAGE) - ALIASES - fired
    assert not silent, f"rules the corpus never exercises: {sorted(silent)}"
