"""Contract: the old columns and the exports table go (the old release no longer runs)."""

import sqlalchemy as sa
from alembic import op

revision = "0004_contract"
down_revision = "0003_expand"
phase = "contract"


def upgrade() -> None:
    op.drop_column("orders", "amount")
    op.drop_column("orders", "email")
    op.drop_table("exports")


def downgrade() -> None:
    op.create_table("exports", sa.Column("id", sa.BigInteger, primary_key=True), sa.Column("path", sa.Text))
    op.add_column("orders", sa.Column("email", sa.String(200)))
    op.add_column("orders", sa.Column("amount", sa.Integer))
