"""Signed approvals and anchored checkpoints.

`approvals` and `release_requests` keep the statement a person signed and its SSH signature
(both NULL when unsigned); `checkpoints` holds deployment-signed snapshots of the event chain's
head; `ledger_info` gives this ledger an id, so a checkpoint of one ledger never vouches for
another. Written out in full so it never changes after it ships.

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-01
"""

from __future__ import annotations

import secrets

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    for table in ("approvals", "release_requests"):
        with op.batch_alter_table(table) as batch:
            batch.add_column(sa.Column("statement", sa.Text, nullable=True))
            batch.add_column(sa.Column("signature", sa.Text, nullable=True))
    op.create_table(
        "checkpoints",
        sa.Column("seq", sa.Integer, primary_key=True, autoincrement=False),
        sa.Column("head", sa.String(64), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("public_key", sa.Text, nullable=False),
        sa.Column("statement", sa.Text, nullable=False),
        sa.Column("signature", sa.Text, nullable=False),
    )
    info = op.create_table(
        "ledger_info",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=False),
        sa.Column("ledger_id", sa.String(64), nullable=False),
    )
    op.bulk_insert(info, [{"id": 1, "ledger_id": f"ledger-{secrets.token_hex(8)}"}])


def downgrade() -> None:
    op.drop_table("ledger_info")
    op.drop_table("checkpoints")
    for table in ("release_requests", "approvals"):
        with op.batch_alter_table(table) as batch:
            batch.drop_column("signature")
            batch.drop_column("statement")
