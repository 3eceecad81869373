"""orders with a few rows; invoices_summary for the billing service."""

import sqlalchemy as sa
from alembic import op

revision = "0001_orders"
down_revision = None
phase = "expand"


def upgrade() -> None:
    orders = op.create_table(
        "orders",
        sa.Column("id", sa.BigInteger, primary_key=True),
        sa.Column("quantity", sa.BigInteger, nullable=False),
        sa.Column("unit_cents", sa.BigInteger, nullable=False),
        sa.Column("amount", sa.Integer),
        sa.Column("email", sa.String(200)),
    )
    op.create_table("invoices_summary", sa.Column("id", sa.BigInteger, primary_key=True))
    op.bulk_insert(orders, [{"id": i, "quantity": i, "unit_cents": 100, "amount": 10 * i, "email": f"U{i}@X.ORG"}
                            for i in range(1, 6)])


def downgrade() -> None:
    op.drop_table("invoices_summary")
    op.drop_table("orders")
