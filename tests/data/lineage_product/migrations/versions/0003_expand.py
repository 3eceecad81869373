"""Expand: amount int -> amount_cents bigint and email -> email_normalized through new columns
(backfilled, dual-written by the new release), and a new table for exports."""

import sqlalchemy as sa
from alembic import op

from release_pipelines.resources.backfill import backfill

revision = "0003_expand"
down_revision = "0002_total"
phase = "expand"


def upgrade() -> None:
    op.add_column("orders", sa.Column("amount_cents", sa.BigInteger))
    op.add_column("orders", sa.Column("email_normalized", sa.String(200)))
    op.create_table("exports", sa.Column("id", sa.BigInteger, primary_key=True), sa.Column("path", sa.Text))
    with op.get_context().autocommit_block():
        backfill(op.get_bind(), table="orders", set_sql="amount_cents = amount", where_sql="amount_cents IS NULL",
                 job="0003_amount", lineage={"amount_cents": ["amount"]}, lineage_kind="retyped")
        backfill(op.get_bind(), table="orders", set_sql="email_normalized = lower(email)",
                 where_sql="email_normalized IS NULL", job="0003_email",
                 lineage={"email_normalized": ["email"]}, lineage_kind="renamed")


def downgrade() -> None:
    op.drop_table("exports")
    op.drop_column("orders", "email_normalized")
    op.drop_column("orders", "amount_cents")
