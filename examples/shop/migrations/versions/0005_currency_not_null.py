"""Make orders.currency NOT NULL by the safe recipe: VALIDATE the check, SET NOT NULL, drop it.

VALIDATE takes only SHARE UPDATE EXCLUSIVE; with the validated check in place SET NOT NULL
skips its table scan (PG 12+). SQLite has no such locks: it rebuilds the table (batch mode).
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005_currency_not_null"
down_revision = "0004_order_currency"
branch_labels = None
depends_on = None

phase = "expand"

CHECK = "ck_orders_currency_not_null"


def upgrade() -> None:
    if op.get_context().dialect.name == "postgresql":
        op.execute(f"ALTER TABLE orders VALIDATE CONSTRAINT {CHECK}")
        op.alter_column("orders", "currency", nullable=False)
        op.drop_constraint(CHECK, "orders", type_="check")
    else:
        with op.batch_alter_table("orders") as batch:
            batch.alter_column("currency", existing_type=sa.String(3), nullable=False)


def downgrade() -> None:
    if op.get_context().dialect.name == "postgresql":
        op.alter_column("orders", "currency", nullable=True)
        op.execute(
            f"ALTER TABLE orders ADD CONSTRAINT {CHECK} CHECK (currency IS NOT NULL) NOT VALID"
        )
    else:
        with op.batch_alter_table("orders") as batch:
            batch.alter_column("currency", existing_type=sa.String(3), nullable=True)
