"""Add orders.currency with a constant default and a NOT VALID check that it is not null.

A constant default is metadata-only (PG 11+) and fills the rows the old release inserts, so the
column can become NOT NULL in 0005 without a table scan under ACCESS EXCLUSIVE.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004_order_currency"
down_revision = "0003_orders_product_idx"
branch_labels = None
depends_on = None

phase = "expand"

CHECK = "ck_orders_currency_not_null"


def upgrade() -> None:
    op.add_column("orders", sa.Column("currency", sa.String(3), server_default="EUR"))
    if op.get_context().dialect.name == "postgresql":
        op.execute(
            f"ALTER TABLE orders ADD CONSTRAINT {CHECK} CHECK (currency IS NOT NULL) NOT VALID"
        )


def downgrade() -> None:
    if op.get_context().dialect.name == "postgresql":
        op.drop_constraint(CHECK, "orders", type_="check")
    op.drop_column("orders", "currency")
