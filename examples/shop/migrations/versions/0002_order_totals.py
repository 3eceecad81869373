"""Add orders.total_cents (nullable) and backfill it from the product prices.

The old release never writes the column, so it stays nullable; the backfill runs in keyset
batches outside the revision's transaction (autocommit block), so it must be re-runnable:
the column is added IF NOT EXISTS on PostgreSQL and the batches only touch NULL rows.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from release_pipelines.resources.backfill import backfill

revision = "0002_order_totals"
down_revision = "0001_tables"
branch_labels = None
depends_on = None

phase = "expand"


def upgrade() -> None:
    is_pg = op.get_context().dialect.name == "postgresql"
    op.add_column("orders", sa.Column("total_cents", sa.BigInteger), if_not_exists=is_pg)
    if op.get_context().as_sql:
        return  # the backfill needs a live connection; offline SQL shows the schema change only
    with op.get_context().autocommit_block():
        backfill(
            op.get_bind(),
            table="orders",
            set_sql="total_cents = quantity * "
            "(SELECT price_cents FROM products WHERE products.id = orders.product_id)",
            where_sql="total_cents IS NULL",
            job="0002_order_totals",
        )


def downgrade() -> None:
    op.drop_column("orders", "total_cents")
