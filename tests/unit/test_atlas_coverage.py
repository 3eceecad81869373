"""Our linter covers Atlas's PostgreSQL checks that apply to expand/contract releases. Atlas is not
installable here, so the table is written from its documentation (atlasgo.io/lint/analyzers, the
"Checks" table: PG1xx, PG3xx, BC, CD, DS, MF); PG306-PG311 are not in the stored copy of that page
and carry the titles other tools give them. Each mapped code has a small example our linter must
flag with the mapped rule, so the mapping is tested, not only written."""

from __future__ import annotations

import pytest

from release_pipelines.core.linter import ERROR, RULES, lint_sql

# code -> (Atlas's one-line description, our rule or "not applicable, because ...", example SQL)
ATLAS: dict[str, tuple[str, str, str]] = {
    "PG101": ("Missing CONCURRENTLY in index creation", "require-concurrent-index-creation",
              "CREATE INDEX ix ON orders (status);"),
    "PG102": ("Missing CONCURRENTLY in index deletion", "require-concurrent-index-deletion",
              "DROP INDEX ix;"),
    "PG103": ("Concurrent index change inside a transaction (missing atlas:txmode none)",
              "ban-concurrent-index-creation-in-transaction",
              "BEGIN; CREATE INDEX CONCURRENTLY ix ON orders (status); COMMIT;"),
    "PG104": ("PRIMARY KEY creation takes ACCESS EXCLUSIVE", "disallowed-unique-constraint",
              "ALTER TABLE orders ADD PRIMARY KEY (id);"),
    "PG105": ("UNIQUE constraint creation takes ACCESS EXCLUSIVE", "disallowed-unique-constraint",
              "ALTER TABLE orders ADD CONSTRAINT u UNIQUE (status);"),
    "PG110": ("Creating a table with non-optimal data alignment",
              "not applicable, because column order only costs padding bytes; it neither locks "
              "nor breaks a running release", "CREATE TABLE t (flag boolean, id bigint);"),
    "PG301": ("Column type change that requires a table and index rewrite", "changing-column-type",
              "ALTER TABLE orders ALTER COLUMN quantity TYPE bigint;"),
    "PG302": ("Adding a column with a volatile DEFAULT requires a table rewrite",
              "adding-field-with-default",
              "ALTER TABLE orders ADD COLUMN token uuid DEFAULT gen_random_uuid();"),
    "PG303": ("Modifying a nullable column to NOT NULL requires a full table scan",
              "set-not-null-without-check", "ALTER TABLE orders ALTER COLUMN status SET NOT NULL;"),
    "PG304": ("PRIMARY KEY on nullable columns sets them NOT NULL with a full table scan",
              "disallowed-unique-constraint", "ALTER TABLE orders ADD CONSTRAINT pk PRIMARY KEY (code);"),
    "PG305": ("Adding a CHECK constraint that requires a full table scan",
              "constraint-missing-not-valid",
              "ALTER TABLE orders ADD CONSTRAINT ck CHECK (quantity > 0);"),
    "PG306": ("Foreign key without NOT VALID", "adding-foreign-key-constraint",
              "ALTER TABLE orders ADD CONSTRAINT fk FOREIGN KEY (product_id) REFERENCES products (id);"),
    "PG307": ("Changing a table to LOGGED or UNLOGGED rewrites it", "ban-alter-table-rewrite",
              "ALTER TABLE orders SET UNLOGGED;"),
    "PG308": ("Creating a trigger on an existing table blocks writes",
              "not applicable, because CREATE TRIGGER only changes the catalog: its SHARE ROW "
              "EXCLUSIVE lock lasts an instant and the runner's lock_timeout bounds the wait; a "
              "trigger is how an expand revision keeps old and new columns in sync",
              "CREATE TRIGGER sync BEFORE INSERT ON orders FOR EACH ROW EXECUTE FUNCTION sync();"),
    "PG309": ("Adding a STORED generated column rewrites the table", "adding-stored-generated-column",
              "ALTER TABLE orders ADD COLUMN total bigint GENERATED ALWAYS AS (quantity * 2) STORED;"),
    "PG310": ("Adding an identity column rewrites the table", "adding-field-with-default",
              "ALTER TABLE orders ADD COLUMN n bigint GENERATED ALWAYS AS IDENTITY;"),
    "PG311": ("Changing the access method rewrites the table", "ban-alter-table-rewrite",
              "ALTER TABLE orders SET ACCESS METHOD heap2;"),
    "BC101": ("Renaming a table", "renaming-table", "ALTER TABLE orders RENAME TO purchases;"),
    "BC102": ("Renaming a column", "renaming-column", "ALTER TABLE orders RENAME COLUMN status TO state;"),
    "CD101": ("Foreign-key constraint was dropped", "ban-drop-constraint",
              "ALTER TABLE orders DROP CONSTRAINT orders_product_id_fkey;"),
    "DS101": ("Schema was dropped", "ban-drop-object-in-expand", "DROP SCHEMA archive;"),
    "DS102": ("Table was dropped", "ban-drop-table", "DROP TABLE orders;"),
    "DS103": ("Non-virtual column was dropped", "ban-drop-column", "ALTER TABLE orders DROP COLUMN status;"),
    "MF101": ("Add unique index to existing column (fails on duplicates)",
              "require-concurrent-index-creation", "CREATE UNIQUE INDEX ux ON orders (code);"),
    "MF102": ("Modifying a non-unique index to unique",
              "not applicable, because Atlas reports it only for declarative diffs; a revision "
              "expresses it as DROP INDEX and CREATE UNIQUE INDEX, which PG102/MF101 cover",
              "DROP INDEX CONCURRENTLY ux; CREATE UNIQUE INDEX CONCURRENTLY ux ON orders (code);"),
    "MF103": ("Adding a non-nullable column to an existing table", "adding-not-nullable-field",
              "ALTER TABLE orders ADD COLUMN note text NOT NULL;"),
    "MF104": ("Modifying a nullable column to non-nullable", "set-not-null-without-check",
              "ALTER TABLE orders ALTER COLUMN note SET NOT NULL;"),
}


@pytest.mark.parametrize("code", sorted(ATLAS))
def test_atlas_check_maps_to_a_rule_of_ours_that_flags_its_example(code: str) -> None:
    _, ours, sql = ATLAS[code]
    found = {f.rule for f in lint_sql(sql, phase="expand")}
    if ours.startswith("not applicable, because "):
        assert not {r for r in found if RULES[r].severity == ERROR}, found
    else:
        assert ours in RULES and ours in found, f"{code}: {ours} not in {sorted(found)}"


def test_every_pg3xx_code_is_in_the_table() -> None:
    assert {c for c in ATLAS if c.startswith("PG3")} == {f"PG3{n:02d}" for n in range(1, 12)}
