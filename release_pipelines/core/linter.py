"""Lint migration SQL before it runs: statements that would lock a live table for long, and
destructive changes in an expand revision (the old release still runs against it).

Pure: the input is the SQL text of each revision (Alembic's offline rendering, or the statements
captured in a shadow database), parsed with pglast (PostgreSQL's own grammar), and - from a shadow
run - the locks and table rewrites each statement was seen to take (`lint_observed`). Rule names
follow Squawk's catalogue where one exists; Squawk's lock/statement-timeout rules have no
counterpart because the runner sets both timeouts on every connection a migration uses.
A table created in the same revision is exempt from the locking rules: nobody uses it yet.
A revision may accept a finding on purpose with ``lint_suppress = {"rule": "reason"}``; the
finding is then kept, marked suppressed with the reason, and no longer fails the lint.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from pglast import ast, parse_sql
from pglast.enums import (
    AlterTableType,
    ConstrType,
    DropBehavior,
    NullTestType,
    ObjectType,
    TransactionStmtKind,
)
from pglast.parser import ParseError, scan

ERROR, WARNING, INFO = "error", "warning", "info"
BOOKKEEPING_TABLES = {"alembic_version"}
MAX_IDENTIFIER_BYTES = 63


@dataclass(frozen=True)
class Rule:
    name: str
    severity: str
    recipe: str


RULES: dict[str, Rule] = {
    r.name: r
    for r in [
        Rule(
            "require-concurrent-index-creation",
            ERROR,
            "CREATE INDEX CONCURRENTLY inside `with op.get_context().autocommit_block():`",
        ),
        Rule(
            "require-concurrent-index-deletion",
            ERROR,
            "DROP INDEX CONCURRENTLY inside `with op.get_context().autocommit_block():`",
        ),
        Rule(
            "ban-concurrent-index-creation-in-transaction",
            ERROR,
            "CONCURRENTLY cannot run in a transaction block: wrap it in "
            "`with op.get_context().autocommit_block():`",
        ),
        Rule(
            "adding-not-nullable-field",
            ERROR,
            "add the column nullable (or with a constant DEFAULT), backfill, then SET NOT NULL "
            "by the CHECK ... NOT VALID / VALIDATE recipe",
        ),
        Rule(
            "adding-field-with-default",
            ERROR,
            "add the column without the volatile default, set the default for new rows with "
            "ALTER COLUMN SET DEFAULT, backfill existing rows in batches",
        ),
        Rule(
            "adding-foreign-key-constraint",
            ERROR,
            "ADD CONSTRAINT ... FOREIGN KEY ... NOT VALID, then VALIDATE CONSTRAINT in a later "
            "revision (it takes only SHARE UPDATE EXCLUSIVE)",
        ),
        Rule(
            "constraint-missing-not-valid",
            ERROR,
            "ADD CONSTRAINT ... CHECK (...) NOT VALID, then VALIDATE CONSTRAINT in a later revision",
        ),
        Rule(
            "disallowed-unique-constraint",
            ERROR,
            "CREATE UNIQUE INDEX CONCURRENTLY, then ADD CONSTRAINT ... UNIQUE USING INDEX",
        ),
        Rule(
            "changing-column-type",
            ERROR,
            "add a new column of the new type, write both from the new release, backfill in "
            "batches, switch reads, drop the old column in a contract revision",
        ),
        Rule(
            "set-not-null-without-check",
            ERROR,
            "ADD CONSTRAINT c CHECK (col IS NOT NULL) NOT VALID; (next revision) VALIDATE "
            "CONSTRAINT c; SET NOT NULL (no scan on PG 12+); DROP CONSTRAINT c",
        ),
        Rule(
            "ban-drop-column",
            ERROR,
            'the old release may still read it: move the DROP to a phase = "contract" revision',
        ),
        Rule(
            "ban-drop-table",
            ERROR,
            'the old release may still use it: move the DROP to a phase = "contract" revision',
        ),
        Rule(
            "renaming-column",
            ERROR,
            "add the new column, write both, backfill; drop the old one in a contract revision",
        ),
        Rule(
            "renaming-table",
            ERROR,
            "create the new table (or a view with the old name); drop the old one in a contract revision",
        ),
        Rule(
            "prefer-bigint-over-int",
            WARNING,
            "use BIGINT / BIGSERIAL (or IDENTITY bigint): changing an int column later rewrites the table",
        ),
        Rule("prefer-timestamptz", WARNING, "use TIMESTAMP WITH TIME ZONE (timestamptz)"),
        Rule(
            "ban-alter-identity",
            ERROR,
            "add identity only to a column the old release never inserts explicit values into; "
            "otherwise add a new identity column (expand) and switch in a contract revision",
        ),
        Rule(
            "adding-stored-generated-column",
            ERROR,
            "a STORED generated column rewrites the table: add a plain nullable column, fill it "
            "with a trigger and a batched backfill, or compute it in a view",
        ),
        Rule(
            "ban-drop-not-null",
            WARNING,
            "the old release may assume the column is never NULL: drop NOT NULL only once every "
            "running release handles NULL (a contract revision)",
        ),
        Rule(
            "ban-drop-constraint",
            WARNING,
            "the old release may rely on it (ON CONFLICT, cascades): drop it in a contract revision",
        ),
        Rule(
            "ban-drop-generated-expression",
            WARNING,
            "the old release reads it as computed: drop the expression in a contract revision",
        ),
        Rule(
            "ban-drop-object-in-expand",
            ERROR,
            'the old release may still use it: move the DROP to a phase = "contract" revision',
        ),
        Rule(
            "renaming-object",
            ERROR,
            "create the object under its new name beside the old one; drop the old in a contract revision",
        ),
        Rule(
            "require-concurrent-reindex",
            ERROR,
            "REINDEX ... CONCURRENTLY inside `with op.get_context().autocommit_block():`",
        ),
        Rule(
            "require-concurrent-partition-detach",
            ERROR,
            "ALTER TABLE ... DETACH PARTITION ... CONCURRENTLY inside an autocommit block (PG 14+)",
        ),
        Rule(
            "require-enum-value-ordering",
            WARNING,
            "ALTER TYPE ... ADD VALUE 'x' BEFORE/AFTER 'y': say where the value sorts; and do not use "
            "the new value in the same transaction",
        ),
        Rule(
            "identifier-too-long",
            ERROR,
            f"PostgreSQL truncates names to {MAX_IDENTIFIER_BYTES} bytes, so two long names can "
            "collide and the name in the database differs from the code's: shorten it",
        ),
        Rule(
            "ban-truncate-cascade",
            ERROR,
            "TRUNCATE ... CASCADE empties every referencing table too: delete the rows you mean, in batches",
        ),
        Rule(
            "ban-vacuum-full-and-cluster",
            ERROR,
            "VACUUM FULL and CLUSTER rewrite the table under ACCESS EXCLUSIVE: use pg_repack or "
            "pg_squeeze outside the release",
        ),
        Rule(
            "ban-create-domain-with-constraint",
            WARNING,
            "a domain CHECK is validated against every column of that domain whenever it changes: "
            "put the CHECK on the table (NOT VALID, then VALIDATE)",
        ),
        Rule(
            "ban-alter-domain-with-add-constraint",
            ERROR,
            "ALTER DOMAIN ... ADD CONSTRAINT scans every table using the domain under a blocking lock: "
            "add it NOT VALID, then VALIDATE CONSTRAINT",
        ),
        Rule("ban-drop-database", ERROR, "a migration never drops a database: do it by hand"),
        Rule(
            "transaction-nesting",
            ERROR,
            "do not write BEGIN/COMMIT in a revision: Alembic manages the transaction; use "
            "`op.get_context().autocommit_block()` for statements that must run outside one",
        ),
        Rule(
            "ban-uncommitted-transaction",
            ERROR,
            "the revision opens a transaction it never commits: remove the BEGIN",
        ),
        Rule("prefer-identity", WARNING, "use BIGINT GENERATED BY DEFAULT AS IDENTITY instead of serial"),
        Rule(
            "prefer-text-field",
            WARNING,
            "use TEXT (with a CHECK on length if needed): changing a varchar length later takes ACCESS EXCLUSIVE",
        ),
        Rule("ban-char-field", WARNING, "use TEXT or VARCHAR: CHAR(n) pads with spaces"),
        Rule(
            "ban-alter-generated-expression",
            ERROR,
            "SET EXPRESSION recomputes every row under ACCESS EXCLUSIVE and changes what the old "
            "release reads: add a new column with the new expression and switch in a contract revision",
        ),
        Rule(
            "ban-alter-table-rewrite",
            ERROR,
            "SET LOGGED/UNLOGGED, SET ACCESS METHOD and SET TABLESPACE copy the whole table under "
            "ACCESS EXCLUSIVE: do it outside the release (pg_repack), or build a new table and switch",
        ),
        Rule(
            "ban-drop-index",
            WARNING,
            "the old release may rely on it (a unique index behind ON CONFLICT, or its query plans): "
            'drop it in a phase = "contract" revision',
        ),
        Rule(
            "ban-detach-inheritance",
            WARNING,
            "the old release reading through the parent loses the child's rows: detach it in a "
            "contract revision",
        ),
        Rule(
            "ban-replace-view-function",
            WARNING,
            "CREATE OR REPLACE changes what the old release gets from the same name: create it under "
            "a new name (v2) beside the old one and drop the old in a contract revision",
        ),
        Rule(
            "ban-disable-trigger",
            WARNING,
            "a disabled trigger or rule silently stops what the old release relies on (for example "
            "the trigger that keeps old and new columns in sync): do it in a contract revision",
        ),
        Rule(
            "ban-access-change-in-expand",
            WARNING,
            "REVOKE, row level security and policy or view-option changes can deny the old release "
            "what it reads or writes: grant the new access first, restrict it in a contract revision",
        ),
        Rule(
            "ban-database-wide-change",
            WARNING,
            "database, role, system, function-option and extension-version changes apply at once to "
            "every running release and are not undone by rolling the application back: make them "
            "deliberately, outside the release",
        ),
        Rule(
            "ban-alter-sequence-values",
            WARNING,
            "restarting or narrowing a sequence can hand out ids that already exist: leave sequence "
            "values alone in a migration",
        ),
        Rule(
            "observed-table-rewrite",
            ERROR,
            "the shadow database saw this statement rewrite the table under ACCESS EXCLUSIVE: "
            "use the expand/backfill/contract recipe of the matching rule instead",
        ),
        Rule(
            "observed-lock",
            INFO,
            "what the statement locked in the shadow database; lock_timeout bounds how long it may "
            "wait for the lock, not how long it holds it",
        ),
        Rule(
            "shadow-failure",
            ERROR,
            "the revision failed when applied to a copy of the schema: it would fail the release "
            "the same way; fix it (the message names the line)",
        ),
        Rule(
            "shadow-no-statements",
            WARNING,
            "its upgrade() looked at the database and ran nothing in the schema replayed from the "
            "history (tables made outside it, e.g. by metadata.create_all, are not there), so what "
            "it runs on your database was not seen: review it, then accept it with "
            "lint_suppress = {\"shadow-no-statements\": \"reason\"}",
        ),
        Rule(
            "not-linted",
            ERROR,
            "lint it in a shadow database (--shadow auto), or accept it with "
            "lint_suppress = {\"not-linted\": \"reason\"} in the revision (or --allow-unlinted REV)",
        ),
        Rule(
            "missing-phase",
            WARNING,
            'declare `phase = "expand"` or `phase = "contract"` at module level in the revision; '
            "until then it is linted as expand and `upgrade` (expand-head) stops before it",
        ),
        Rule("unparseable-sql", ERROR, "fix the SQL; the linter could not check this revision"),
    ]
}

# Functions whose value differs per row: as an ADD COLUMN default they rewrite the table.
VOLATILE_FUNCTIONS = {
    "random",
    "clock_timestamp",
    "timeofday",
    "gen_random_uuid",
    "uuid_generate_v1",
    "uuid_generate_v1mc",
    "uuid_generate_v4",
    "nextval",
    "txid_current",
    "statement_timestamp",
}
# Stable or immutable: evaluated once and stored as metadata (PG 11+), no rewrite.
NON_VOLATILE_FUNCTIONS = {
    "now",
    "current_timestamp",
    "current_date",
    "transaction_timestamp",
    "lower",
    "upper",
}
SMALL_INTS = {
    "int2",
    "int4",
    "smallint",
    "integer",
    "int",
    "serial",
    "serial4",
    "smallserial",
    "serial2",
}
SERIALS = {"serial", "serial4", "serial2", "smallserial", "serial8", "bigserial"}
# Objects an old release may still use: dropping them belongs in a contract revision.
DROPPED_OBJECTS = {
    ObjectType.OBJECT_VIEW: "VIEW",
    ObjectType.OBJECT_MATVIEW: "MATERIALIZED VIEW",
    ObjectType.OBJECT_FUNCTION: "FUNCTION",
    ObjectType.OBJECT_PROCEDURE: "PROCEDURE",
    ObjectType.OBJECT_TYPE: "TYPE",
    ObjectType.OBJECT_DOMAIN: "DOMAIN",
    ObjectType.OBJECT_SCHEMA: "SCHEMA",
    ObjectType.OBJECT_SEQUENCE: "SEQUENCE",
    ObjectType.OBJECT_EXTENSION: "EXTENSION",
    ObjectType.OBJECT_TRIGGER: "TRIGGER",
    ObjectType.OBJECT_POLICY: "POLICY",
    ObjectType.OBJECT_RULE: "RULE",
}
# ALTER TABLE forms that copy the whole table under ACCESS EXCLUSIVE.
REWRITING_ALTERS = {
    AlterTableType.AT_SetLogged: "SET LOGGED",
    AlterTableType.AT_SetUnLogged: "SET UNLOGGED",
    AlterTableType.AT_SetAccessMethod: "SET ACCESS METHOD",
    AlterTableType.AT_SetTableSpace: "SET TABLESPACE",
}
ROW_SECURITY = {
    AlterTableType.AT_EnableRowSecurity: "ENABLE ROW LEVEL SECURITY",
    AlterTableType.AT_DisableRowSecurity: "DISABLE ROW LEVEL SECURITY",
    AlterTableType.AT_ForceRowSecurity: "FORCE ROW LEVEL SECURITY",
    AlterTableType.AT_NoForceRowSecurity: "NO FORCE ROW LEVEL SECURITY",
}
DISABLING = {
    AlterTableType.AT_DisableTrig,
    AlterTableType.AT_DisableTrigAll,
    AlterTableType.AT_DisableTrigUser,
    AlterTableType.AT_DisableRule,
}
SEQUENCE_VALUE_OPTIONS = {"restart", "start", "increment", "minvalue", "maxvalue", "cycle", "as"}
# Statements whose effect reaches every connection of every release at once.
DATABASE_WIDE = {
    ast.AlterDatabaseStmt: "ALTER DATABASE",
    ast.AlterDatabaseSetStmt: "ALTER DATABASE ... SET",
    ast.AlterSystemStmt: "ALTER SYSTEM",
    ast.AlterRoleStmt: "ALTER ROLE",
    ast.AlterRoleSetStmt: "ALTER ROLE ... SET",
    ast.AlterFunctionStmt: "ALTER FUNCTION/PROCEDURE options",
    ast.AlterExtensionStmt: "ALTER EXTENSION ... UPDATE",
}


@dataclass(frozen=True)
class Finding:
    revision: str
    rule: str
    severity: str
    message: str
    recipe: str
    statement: str
    line: int
    suppressed: bool = False
    suppress_reason: str | None = None

    @property
    def blocking(self) -> bool:
        return self.severity == ERROR and not self.suppressed


@dataclass(frozen=True)
class RevisionSQL:
    """The offline SQL of one revision, with what the revision module declares about itself."""

    revision: str
    sql: str
    phase: str | None = "expand"
    lint_suppress: Mapping[str, str] = field(default_factory=dict)


@dataclass
class _Context:
    """What earlier statements told us: tables made here, not-null CHECKs and their validation."""

    created: set[str] = field(default_factory=set)
    in_transaction: bool = False
    not_null_checks: dict[str, tuple[str, str]] = field(default_factory=dict)
    validated: set[tuple[str, str]] = field(default_factory=set)
    validated_unknown: set[str] = field(default_factory=set)
    opened_by_revision: bool = False


def _type_name(type_name: ast.TypeName | None) -> str:
    if type_name is None or not type_name.names:
        return ""
    return type_name.names[-1].sval.lower()


def _func_name(node: object) -> str | None:
    if isinstance(node, ast.TypeCast):
        return _func_name(node.arg)
    if isinstance(node, ast.FuncCall):
        return node.funcname[-1].sval.lower()
    if isinstance(node, ast.SQLValueFunction):
        return "now"  # CURRENT_TIMESTAMP and friends: stable
    return None


def _not_null_column(expr: object) -> str | None:
    """The column of a `CHECK (col IS NOT NULL)` expression, else None."""
    if (
        isinstance(expr, ast.NullTest)
        and expr.nulltesttype == NullTestType.IS_NOT_NULL
        and isinstance(expr.arg, ast.ColumnRef)
        and isinstance(expr.arg.fields[-1], ast.String)
    ):
        return expr.arg.fields[-1].sval
    return None


class _RevisionLinter:
    def __init__(self, revision: RevisionSQL, context: _Context, assume_in_transaction: bool):
        self.revision = revision
        self.ctx = context
        self.ctx.created = set()
        self.ctx.in_transaction = assume_in_transaction
        self.ctx.opened_by_revision = False
        self.findings: list[Finding] = []
        self.expand = revision.phase != "contract"
        self._statement = ""
        self._line = 1

    def flag(self, rule: str, message: str, severity: str | None = None) -> None:
        spec = RULES[rule]
        reason = self.revision.lint_suppress.get(rule)
        self.findings.append(
            Finding(
                revision=self.revision.revision,
                rule=rule,
                severity=severity or spec.severity,
                message=message,
                recipe=spec.recipe,
                statement=self._statement,
                line=self._line,
                suppressed=reason is not None,
                suppress_reason=reason,
            )
        )

    def run(self) -> list[Finding]:
        sql = self.revision.sql
        if self.revision.phase not in ("expand", "contract"):
            self.flag(
                "missing-phase",
                f"revision {self.revision.revision} declares no phase; linted as expand",
            )
        try:
            statements = parse_sql(sql)
        except ParseError as exc:
            self.flag("unparseable-sql", f"pglast could not parse the SQL: {exc}")
            return self.findings
        raw = sql.encode("utf-8")
        for statement in statements:
            end = statement.stmt_location + statement.stmt_len if statement.stmt_len else len(raw)
            chunk = raw[statement.stmt_location : end].decode("utf-8")
            stripped = chunk.lstrip()
            start = statement.stmt_location + (len(chunk.encode()) - len(stripped.encode()))
            self._line = raw[:start].count(b"\n") + 1
            self._statement = stripped.strip().rstrip(";")
            self.long_identifiers()
            self.check(statement.stmt)
        if self.ctx.in_transaction and self.ctx.opened_by_revision:
            self.flag("ban-uncommitted-transaction", "BEGIN without a matching COMMIT")
        return self.findings

    def long_identifiers(self) -> None:
        """Identifiers longer than 63 bytes (read from the tokens: the parser already truncated them)."""
        raw = self._statement.encode("utf-8")
        try:
            tokens = scan(self._statement)
        except ParseError:
            return
        for token in tokens:
            if token.name != "IDENT":
                continue
            name = raw[token.start : token.end + 1].strip(b'"')
            if len(name) > MAX_IDENTIFIER_BYTES:
                self.flag(
                    "identifier-too-long",
                    f"{name.decode('utf-8', 'replace')[:40]}... is {len(name)} bytes; PostgreSQL keeps "
                    f"the first {MAX_IDENTIFIER_BYTES}",
                )

    def check(self, node: ast.Node) -> None:
        if isinstance(node, ast.TransactionStmt):
            if node.kind in (
                TransactionStmtKind.TRANS_STMT_BEGIN,
                TransactionStmtKind.TRANS_STMT_START,
            ):
                if self.ctx.in_transaction:
                    self.flag("transaction-nesting", "BEGIN inside an open transaction")
                self.ctx.in_transaction = True
                self.ctx.opened_by_revision = True
            elif node.kind in (
                TransactionStmtKind.TRANS_STMT_COMMIT,
                TransactionStmtKind.TRANS_STMT_ROLLBACK,
            ):
                self.ctx.in_transaction = False
                self.ctx.opened_by_revision = False
        elif isinstance(node, ast.CreateStmt):
            table = node.relation.relname
            if table in BOOKKEEPING_TABLES:
                return
            self.ctx.created.add(table)
            for element in node.tableElts or ():
                if isinstance(element, ast.ColumnDef):
                    self.column_types(table, element)
        elif isinstance(node, ast.IndexStmt):
            self.index(node)
        elif isinstance(node, ast.DropStmt):
            self.drop(node)
        elif isinstance(node, ast.RenameStmt):
            self.rename(node)
        elif isinstance(node, ast.AlterTableStmt) and node.objtype == ObjectType.OBJECT_TABLE:
            table = node.relation.relname
            if table not in BOOKKEEPING_TABLES:
                for command in node.cmds or ():
                    self.alter(table, command)
        else:
            self.maintenance(node)

    def maintenance(self, node: ast.Node) -> None:
        """Statements outside tables and indexes: TRUNCATE, VACUUM, CLUSTER, REINDEX, types, domains."""
        if isinstance(node, ast.TruncateStmt) and node.behavior == DropBehavior.DROP_CASCADE:
            tables = ", ".join(r.relname for r in node.relations or ())
            self.flag("ban-truncate-cascade", f"TRUNCATE {tables} CASCADE")
        elif isinstance(node, ast.VacuumStmt) and any(
            o.defname == "full" for o in node.options or ()
        ):
            self.flag("ban-vacuum-full-and-cluster", "VACUUM FULL rewrites the table")
        elif isinstance(node, ast.ClusterStmt):
            self.flag("ban-vacuum-full-and-cluster", "CLUSTER rewrites the table")
        elif isinstance(node, ast.ReindexStmt):
            concurrent = any(p.defname == "concurrently" for p in node.params or ())
            if concurrent and self.ctx.in_transaction:
                self.flag(
                    "ban-concurrent-index-creation-in-transaction",
                    "REINDEX CONCURRENTLY inside a transaction fails",
                )
            elif not concurrent:
                self.flag(
                    "require-concurrent-reindex",
                    "REINDEX without CONCURRENTLY blocks writes (and reads using the index)",
                )
        elif isinstance(node, ast.AlterEnumStmt):
            if node.oldVal is not None and self.expand:
                self.flag(
                    "renaming-object",
                    f"renaming enum value {node.oldVal!r} breaks the old release",
                )
            elif node.oldVal is None and node.newValNeighbor is None:
                self.flag(
                    "require-enum-value-ordering",
                    f"ADD VALUE {node.newVal!r} without BEFORE/AFTER",
                )
        elif isinstance(node, ast.CreateDomainStmt) and any(
            c.contype == ConstrType.CONSTR_CHECK for c in node.constraints or ()
        ):
            self.flag("ban-create-domain-with-constraint", "CREATE DOMAIN with a CHECK")
        elif (
            isinstance(node, ast.AlterDomainStmt)
            and node.subtype == "C"
            and not getattr(node.def_, "skip_validation", False)
        ):
            self.flag("ban-alter-domain-with-add-constraint", "ALTER DOMAIN ... ADD CONSTRAINT")
        elif isinstance(node, ast.DropdbStmt):
            self.flag("ban-drop-database", f"DROP DATABASE {node.dbname}")
        elif type(node) in DATABASE_WIDE or (
            isinstance(node, ast.AlterExtensionContentsStmt) and node.action == -1
        ):
            what = DATABASE_WIDE.get(type(node), "ALTER EXTENSION ... DROP")
            self.flag("ban-database-wide-change", f"{what} changes every running release at once")
        elif isinstance(node, ast.AlterSeqStmt) and any(
            o.defname in SEQUENCE_VALUE_OPTIONS for o in node.options or ()
        ):
            self.flag("ban-alter-sequence-values", f"ALTER SEQUENCE {node.sequence.relname} changes its values")
        elif self.expand:
            self.old_release_access(node)

    def old_release_access(self, node: ast.Node) -> None:
        """Expand only: changes that deny or alter what the still-running old release gets."""
        if isinstance(node, ast.GrantStmt) and not node.is_grant:
            self.flag("ban-access-change-in-expand", "REVOKE in an expand revision")
        elif isinstance(node, (ast.CreatePolicyStmt, ast.AlterPolicyStmt)):
            self.flag(
                "ban-access-change-in-expand", f"policy {node.policy_name} changes in an expand revision"
            )
        elif (
            isinstance(node, ast.AlterTableStmt)
            and node.objtype == ObjectType.OBJECT_VIEW
            and any(
                c.subtype in (AlterTableType.AT_SetRelOptions, AlterTableType.AT_ResetRelOptions)
                for c in node.cmds or ()
            )
        ):
            self.flag(
                "ban-access-change-in-expand",
                f"view {node.relation.relname} options change in an expand revision",
            )
        elif isinstance(node, (ast.ViewStmt, ast.CreateFunctionStmt)) and node.replace:
            self.flag("ban-replace-view-function", "CREATE OR REPLACE in an expand revision")
        elif isinstance(node, ast.AlterObjectSchemaStmt) and self.expand:
            self.flag("renaming-object", f"moving an object to schema {node.newschema} breaks the old release")

    def column_types(self, table: str, column: ast.ColumnDef) -> None:
        name = _type_name(column.typeName)
        if name in SMALL_INTS:
            self.flag(
                "prefer-bigint-over-int",
                f"{table}.{column.colname} is {name.upper()}, which runs out at 2^31",
            )
        if name == "timestamp":
            self.flag(
                "prefer-timestamptz", f"{table}.{column.colname} is TIMESTAMP without time zone"
            )
        if name in SERIALS:
            self.flag("prefer-identity", f"{table}.{column.colname} is {name.upper()}")
        if name == "varchar" and column.typeName.typmods:
            self.flag("prefer-text-field", f"{table}.{column.colname} is VARCHAR(n)")
        if name == "bpchar":
            self.flag("ban-char-field", f"{table}.{column.colname} is CHAR(n)")

    def index(self, node: ast.IndexStmt) -> None:
        table = node.relation.relname
        if node.concurrent and self.ctx.in_transaction:
            self.flag(
                "ban-concurrent-index-creation-in-transaction",
                f"CREATE INDEX CONCURRENTLY {node.idxname or ''} on {table} inside a transaction: "
                "it fails with ActiveSqlTransaction and the revision rolls back",
            )
        elif not node.concurrent and table not in self.ctx.created:
            self.flag(
                "require-concurrent-index-creation",
                f"CREATE INDEX {node.idxname or ''} on {table} without CONCURRENTLY blocks every write "
                "to the table for the whole build",
            )

    def drop(self, node: ast.DropStmt) -> None:
        names = [
            ".".join(part.sval for part in obj)
            for obj in node.objects or ()
            if isinstance(obj, tuple)
        ]
        if node.removeType == ObjectType.OBJECT_INDEX:
            if node.concurrent and self.ctx.in_transaction:
                self.flag(
                    "ban-concurrent-index-creation-in-transaction",
                    f"DROP INDEX CONCURRENTLY {', '.join(names)} inside a transaction fails",
                )
            elif not node.concurrent:
                self.flag(
                    "require-concurrent-index-deletion",
                    f"DROP INDEX {', '.join(names)} without CONCURRENTLY takes ACCESS EXCLUSIVE on its table",
                )
            if self.expand:
                self.flag("ban-drop-index", f"DROP INDEX {', '.join(names)} in an expand revision")
        elif node.removeType == ObjectType.OBJECT_TABLE and self.expand:
            dropped = [n for n in names if n.split(".")[-1] not in self.ctx.created]
            if dropped:
                self.flag(
                    "ban-drop-table", f"DROP TABLE {', '.join(dropped)} in an expand revision"
                )
        elif node.removeType in DROPPED_OBJECTS and self.expand:
            kind = DROPPED_OBJECTS[node.removeType]
            self.flag("ban-drop-object-in-expand", f"DROP {kind} in an expand revision")

    def rename(self, node: ast.RenameStmt) -> None:
        if not self.expand or (node.relation is not None and node.relation.relname in self.ctx.created):
            return
        if node.relation is None or node.renameType not in (
            ObjectType.OBJECT_COLUMN,
            ObjectType.OBJECT_TABLE,
        ):
            self.flag("renaming-object", f"renaming to {node.newname} in an expand revision")
            return
        table = node.relation.relname
        if node.renameType == ObjectType.OBJECT_COLUMN:
            self.flag(
                "renaming-column",
                f"renaming {table}.{node.subname} to {node.newname} in an expand revision breaks the old release",
            )
        elif node.renameType == ObjectType.OBJECT_TABLE:
            self.flag(
                "renaming-table",
                f"renaming {table} to {node.newname} in an expand revision breaks the old release",
            )

    def alter(self, table: str, command: ast.AlterTableCmd) -> None:
        new = table in self.ctx.created
        kind = command.subtype
        if kind == AlterTableType.AT_AddColumn:
            self.column_types(table, command.def_)
            if not new:
                self.add_column(table, command.def_)
        elif kind == AlterTableType.AT_AddConstraint:
            self.add_constraint(table, command.def_, new)
        elif kind == AlterTableType.AT_ValidateConstraint:
            target = self.ctx.not_null_checks.get(command.name)
            if target:
                self.ctx.validated.add(target)
            else:
                self.ctx.validated_unknown.add(
                    table
                )  # defined elsewhere: trust it covers the column
        elif kind == AlterTableType.AT_SetNotNull and not new:
            if (
                table,
                command.name,
            ) not in self.ctx.validated and table not in self.ctx.validated_unknown:
                self.flag(
                    "set-not-null-without-check",
                    f"SET NOT NULL on {table}.{command.name} scans the whole table under ACCESS EXCLUSIVE "
                    "unless a validated CHECK (col IS NOT NULL) exists",
                )
        elif kind == AlterTableType.AT_AlterColumnType and not new:
            self.flag(
                "changing-column-type",
                f"changing the type of {table}.{command.name} rewrites the table under ACCESS EXCLUSIVE "
                "(unless the cast is binary-coercible) and breaks the old release",
            )
        elif kind == AlterTableType.AT_DropColumn and self.expand and not new:
            self.flag(
                "ban-drop-column",
                f"dropping {table}.{command.name} in an expand revision breaks the old release",
            )
        elif new:
            return
        elif kind in (
            AlterTableType.AT_AddIdentity,
            AlterTableType.AT_SetIdentity,
            AlterTableType.AT_DropIdentity,
        ):
            self.flag(
                "ban-alter-identity",
                f"changing the identity of {table}.{command.name}: inserts of the old release may fail",
            )
        elif kind == AlterTableType.AT_DropNotNull and self.expand:
            self.flag("ban-drop-not-null", f"{table}.{command.name} DROP NOT NULL")
        elif (
            kind == AlterTableType.AT_DropConstraint
            and self.expand
            and command.name not in self.ctx.not_null_checks  # the SET NOT NULL recipe's helper
        ):
            self.flag("ban-drop-constraint", f"dropping {command.name} of {table} in an expand revision")
        elif kind == AlterTableType.AT_DropExpression and self.expand:
            self.flag("ban-drop-generated-expression", f"{table}.{command.name} DROP EXPRESSION")
        elif kind == AlterTableType.AT_DetachPartition:
            child = command.def_.name.relname
            if not command.def_.concurrent:
                self.flag(
                    "require-concurrent-partition-detach",
                    f"DETACH PARTITION {child} takes ACCESS EXCLUSIVE on {table}",
                )
            if self.expand:
                self.flag("ban-detach-inheritance", f"{table} DETACH PARTITION {child} in an expand revision")
        elif kind == AlterTableType.AT_DropInherit and self.expand:
            self.flag("ban-detach-inheritance", f"{table} NO INHERIT in an expand revision")
        elif kind == AlterTableType.AT_SetExpression:
            self.flag(
                "ban-alter-generated-expression",
                f"{table}.{command.name} SET EXPRESSION recomputes every row under ACCESS EXCLUSIVE",
            )
        elif kind in REWRITING_ALTERS:
            self.flag(
                "ban-alter-table-rewrite",
                f"{table} {REWRITING_ALTERS[kind]} copies the table under ACCESS EXCLUSIVE",
            )
        elif kind in DISABLING and self.expand:
            self.flag("ban-disable-trigger", f"{table} disables a trigger or rule in an expand revision")
        elif kind in ROW_SECURITY and self.expand:
            self.flag("ban-access-change-in-expand", f"{table} {ROW_SECURITY[kind]} in an expand revision")

    def add_column(self, table: str, column: ast.ColumnDef) -> None:
        constraints = list(column.constraints or ())
        kinds = {c.contype for c in constraints}
        where = f"{table}.{column.colname}"
        default = next((c for c in constraints if c.contype == ConstrType.CONSTR_DEFAULT), None)
        if any(
            c.contype == ConstrType.CONSTR_GENERATED and c.generated_kind != "v" for c in constraints
        ):
            self.flag(
                "adding-stored-generated-column",
                f"{where} is GENERATED ... STORED: computing it rewrites the table under ACCESS EXCLUSIVE",
            )
        if _type_name(column.typeName) in SERIALS:
            self.flag(
                "adding-field-with-default",
                f"{where} is a serial: its nextval() default rewrites the table",
            )
        elif ConstrType.CONSTR_IDENTITY in kinds:
            self.flag(
                "adding-field-with-default",
                f"{where} is an identity column: numbering the existing rows rewrites the table",
            )
        elif default is not None:
            function = _func_name(default.raw_expr)
            if function in VOLATILE_FUNCTIONS:
                self.flag(
                    "adding-field-with-default",
                    f"{where} DEFAULT {function}() is volatile: the table is rewritten under ACCESS EXCLUSIVE",
                )
            elif function is not None and function not in NON_VOLATILE_FUNCTIONS:
                self.flag(
                    "adding-field-with-default",
                    f"{where} DEFAULT {function}(): cannot tell if it is volatile (a volatile default rewrites the table)",
                    severity=WARNING,
                )
        if (
            ConstrType.CONSTR_NOTNULL in kinds or ConstrType.CONSTR_PRIMARY in kinds
        ) and default is None:
            self.flag(
                "adding-not-nullable-field",
                f"{where} is NOT NULL without a default: fails on existing rows or needs a rewrite",
            )
        for constraint in constraints:
            self.add_constraint(table, constraint, new=False, column=column.colname)

    def add_constraint(
        self, table: str, constraint: ast.Constraint, new: bool, column: str | None = None
    ) -> None:
        name = constraint.conname or (f"on {table}.{column}" if column else f"on {table}")
        if constraint.contype == ConstrType.CONSTR_CHECK:
            checked = _not_null_column(constraint.raw_expr)
            if checked and constraint.conname:
                self.ctx.not_null_checks[constraint.conname] = (table, checked)
            if not new and not constraint.skip_validation:
                self.flag(
                    "constraint-missing-not-valid",
                    f"CHECK {name} validates every row under ACCESS EXCLUSIVE",
                )
        elif (
            constraint.contype == ConstrType.CONSTR_FOREIGN
            and not new
            and not constraint.skip_validation
        ):
            self.flag(
                "adding-foreign-key-constraint",
                f"FOREIGN KEY {name} scans {table} while blocking writes to {table} and "
                f"{constraint.pktable.relname if constraint.pktable else 'the referenced table'}",
            )
        elif (
            constraint.contype in (ConstrType.CONSTR_UNIQUE, ConstrType.CONSTR_PRIMARY)
            and not new
            and not constraint.indexname
        ):
            self.flag(
                "disallowed-unique-constraint",
                f"UNIQUE/PRIMARY KEY {name} builds its index under ACCESS EXCLUSIVE",
            )


def lint_revisions(
    revisions: Iterable[RevisionSQL], assume_in_transaction: bool = False
) -> list[Finding]:
    """Lint revisions in order; CHECK constraints defined earlier count when a later one validates."""
    context = _Context()
    findings: list[Finding] = []
    for revision in revisions:
        findings.extend(_RevisionLinter(revision, context, assume_in_transaction).run())
    return findings


def lint_sql(
    sql: str,
    revision: str = "<sql>",
    phase: str | None = "expand",
    lint_suppress: Mapping[str, str] | None = None,
    assume_in_transaction: bool = False,
) -> list[Finding]:
    """Lint one piece of SQL as one revision."""
    return lint_revisions(
        [RevisionSQL(revision, sql, phase, lint_suppress or {})], assume_in_transaction
    )


@dataclass(frozen=True)
class ObservedStatement:
    """One statement as a shadow database saw it run: the locks it took on relations that
    existed before its revision, and the tables whose storage it replaced (a rewrite)."""

    revision: str
    statement: str
    locks: tuple[tuple[str, str], ...] = ()
    rewritten: tuple[str, ...] = ()
    autocommit: bool = False


LOCK_NAMES = {
    "AccessShareLock": "ACCESS SHARE",
    "RowShareLock": "ROW SHARE",
    "RowExclusiveLock": "ROW EXCLUSIVE",
    "ShareUpdateExclusiveLock": "SHARE UPDATE EXCLUSIVE",
    "ShareLock": "SHARE",
    "ShareRowExclusiveLock": "SHARE ROW EXCLUSIVE",
    "ExclusiveLock": "EXCLUSIVE",
    "AccessExclusiveLock": "ACCESS EXCLUSIVE",
}


def _verb(statement: str) -> str:
    words = statement.split()
    return " ".join(words[:3] if words[:1] in (["CREATE"], ["ALTER"], ["DROP"]) else words[:2])


def lint_observed(
    observed: Iterable[ObservedStatement], lint_suppress: Mapping[str, Mapping[str, str]] | None = None
) -> list[Finding]:
    """Facts, not guesses: what each statement locked (info) and which tables it rewrote (error)."""
    findings = []
    for item in observed:
        reasons = (lint_suppress or {}).get(item.revision, {})
        statement = " ".join(item.statement.split())
        held: dict[str, list[str]] = {}
        for relation, mode in item.locks:
            held.setdefault(LOCK_NAMES.get(mode, mode), []).append(relation)
        facts = [f"{mode} on {', '.join(sorted(set(rels)))}" for mode, rels in sorted(held.items())]
        if facts:
            findings.append(_observed_finding(
                item, "observed-lock", f"{_verb(statement)} took {'; '.join(facts)}", reasons
            ))
        if item.rewritten:
            strongest = "ACCESS EXCLUSIVE" if "ACCESS EXCLUSIVE" in held else "its locks"
            tables = ", ".join(item.rewritten)
            findings.append(_observed_finding(
                item,
                "observed-table-rewrite",
                f"{_verb(statement)} took {strongest} and rewrote {len(item.rewritten)} "
                f"table{'s' if len(item.rewritten) > 1 else ''} ({tables})",
                reasons,
            ))
    return findings


def _observed_finding(
    item: ObservedStatement, rule: str, message: str, reasons: Mapping[str, str]
) -> Finding:
    spec = RULES[rule]
    reason = reasons.get(rule)
    return Finding(item.revision, rule, spec.severity, message, spec.recipe,
                   " ".join(item.statement.split())[:300], 0, reason is not None, reason)
