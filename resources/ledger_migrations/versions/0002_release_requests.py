"""Release requests: releases queued for the next release window.

A request is `queued` until the product's release-window schedule launches it (`launched`, with
the run key = the request id) or a person cancels it (`cancelled`). No foreign key to `releases`:
a request exists before its release does. Written out in full so it never changes after it ships.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-26
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "release_requests",
        sa.Column("id", sa.String(200), primary_key=True),
        sa.Column("product", sa.String(120), nullable=False),
        sa.Column("versions", sa.JSON, nullable=False),
        sa.Column("state", sa.String(32), nullable=False),
        sa.Column("window", sa.String(32), nullable=False),
        sa.Column("comment", sa.Text, nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("created_by", sa.String(200), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_by", sa.String(200), nullable=False),
        sa.Column("run_id", sa.String(200), nullable=True),
    )
    op.create_index(
        "ix_release_requests_product_state", "release_requests", ["product", "state", "created_at"]
    )


def downgrade() -> None:
    op.drop_index("ix_release_requests_product_state", table_name="release_requests")
    op.drop_table("release_requests")
