"""Lint migration SQL before it runs: statements that would lock a live table for long, and
destructive changes in an expand revision (the old release still runs against it).

Pure: the input is the SQL text of each revision (Alembic's offline rendering), parsed with
pglast (PostgreSQL's own grammar). Rule names follow Squawk's catalogue where one exists.
A table created in the same revision is exempt from the locking rules: nobody uses it yet.
A revision may accept a finding on purpose with ``lint_suppress = {"rule": "reason"}``; the
finding is then kept, marked suppressed with the reason, and no longer fails the lint.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from pglast import ast, parse_sql
from pglast.enums import AlterTableType, ConstrType, NullTestType, ObjectType, TransactionStmtKind
from pglast.parser import ParseError

ERROR, WARNING = "error", "warning"
BOOKKEEPING_TABLES = {"alembic_version"}


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
            "missing-phase",
            ERROR,
            'declare `phase = "expand"` or `phase = "contract"` at module level in the revision',
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
            self.check(statement.stmt)
        return self.findings

    def check(self, node: ast.Node) -> None:
        if isinstance(node, ast.TransactionStmt):
            if node.kind in (
                TransactionStmtKind.TRANS_STMT_BEGIN,
                TransactionStmtKind.TRANS_STMT_START,
            ):
                self.ctx.in_transaction = True
            elif node.kind in (
                TransactionStmtKind.TRANS_STMT_COMMIT,
                TransactionStmtKind.TRANS_STMT_ROLLBACK,
            ):
                self.ctx.in_transaction = False
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
        elif node.removeType == ObjectType.OBJECT_TABLE and self.expand:
            dropped = [n for n in names if n.split(".")[-1] not in self.ctx.created]
            if dropped:
                self.flag(
                    "ban-drop-table", f"DROP TABLE {', '.join(dropped)} in an expand revision"
                )

    def rename(self, node: ast.RenameStmt) -> None:
        if not self.expand or node.relation is None or node.relation.relname in self.ctx.created:
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

    def add_column(self, table: str, column: ast.ColumnDef) -> None:
        constraints = list(column.constraints or ())
        kinds = {c.contype for c in constraints}
        where = f"{table}.{column.colname}"
        default = next((c for c in constraints if c.contype == ConstrType.CONSTR_DEFAULT), None)
        if _type_name(column.typeName) in SERIALS:
            self.flag(
                "adding-field-with-default",
                f"{where} is a serial: its nextval() default rewrites the table",
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
