"""Create products and orders, seed a few products.

products.legacy_code is the column the contract revision 0006 removes.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001_tables"
down_revision = None
branch_labels = None
depends_on = None

phase = "expand"
lint_suppress = {
    "prefer-bigint-over-int": "the manifest's schema contract fixes these columns as integer; "
    "the shop stays far below 2^31 rows",
}


def upgrade() -> None:
    products = op.create_table(
        "products",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("sku", sa.String(64), nullable=False, unique=True),
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("price_cents", sa.Integer, nullable=False),
        sa.Column("legacy_code", sa.String(32)),
    )
    op.create_table(
        "orders",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("product_id", sa.Integer, sa.ForeignKey("products.id"), nullable=False),
        sa.Column("quantity", sa.Integer, nullable=False),
        sa.Column("status", sa.String(20), nullable=False, server_default="new"),
    )
    op.bulk_insert(
        products,
        [
            {"id": 1, "sku": "MUG-01", "name": "Mug", "price_cents": 900, "legacy_code": "M1"},
            {"id": 2, "sku": "TEE-01", "name": "T-shirt", "price_cents": 1900, "legacy_code": "T1"},
            {"id": 3, "sku": "CAP-01", "name": "Cap", "price_cents": 1500, "legacy_code": "C1"},
            {
                "id": 4,
                "sku": "BAG-01",
                "name": "Tote bag",
                "price_cents": 1200,
                "legacy_code": None,
            },
        ],
    )


def downgrade() -> None:
    op.drop_table("orders")
    op.drop_table("products")
