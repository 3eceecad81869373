"""Index orders.product_id without blocking writes (CREATE INDEX CONCURRENTLY).

CONCURRENTLY cannot run in a transaction, hence the autocommit block; if it fails it leaves an
INVALID index, which the runner drops before retrying.
"""

from __future__ import annotations

from alembic import op

revision = "0003_orders_product_idx"
down_revision = "0002_order_totals"
branch_labels = None
depends_on = None

phase = "expand"


def upgrade() -> None:
    with op.get_context().autocommit_block():
        op.create_index(
            "ix_orders_product_id", "orders", ["product_id"], postgresql_concurrently=True
        )


def downgrade() -> None:
    with op.get_context().autocommit_block():
        op.drop_index("ix_orders_product_id", "orders", postgresql_concurrently=True)
