"""orders.total_cents, backfilled from quantity x unit_cents."""

import sqlalchemy as sa
from alembic import op

from release_pipelines.resources.backfill import backfill

revision = "0002_total"
down_revision = "0001_orders"
phase = "expand"


def upgrade() -> None:
    op.add_column("orders", sa.Column("total_cents", sa.BigInteger))
    with op.get_context().autocommit_block():
        backfill(op.get_bind(), table="orders", set_sql="total_cents = quantity * unit_cents",
                 where_sql="total_cents IS NULL", job="0002_total",
                 lineage={"total_cents": ["quantity", "unit_cents"]})


def downgrade() -> None:
    op.drop_column("orders", "total_cents")
