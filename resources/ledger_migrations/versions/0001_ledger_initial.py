"""Initial ledger schema: releases, hash-chained events, chain head, approvals.

Written out in full (not imported from ledger_schema) so this revision never changes after it ships.

Revision ID: 0001
Revises:
Create Date: 2026-11-26
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

_ACTIVE = sa.text("state NOT IN ('completed', 'rolled_back')")


def upgrade() -> None:
    op.create_table(
        "releases",
        sa.Column("id", sa.String(200), primary_key=True),
        sa.Column("product", sa.String(120), nullable=False),
        sa.Column("state", sa.String(32), nullable=False),
        sa.Column("versions", sa.JSON, nullable=False),
        sa.Column("previous", sa.JSON, nullable=False),
        sa.Column("canary_step", sa.Integer, nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("created_by", sa.String(200), nullable=False),
        sa.Column("updated_by", sa.String(200), nullable=False),
        sa.Column("run_id", sa.String(200), nullable=True),
    )
    op.create_index(
        "uq_releases_one_active_per_product",
        "releases",
        ["product"],
        unique=True,
        postgresql_where=_ACTIVE,
        sqlite_where=_ACTIVE,
    )
    op.create_index("ix_releases_product_created_at", "releases", ["product", "created_at"])
    op.create_table(
        "events",
        sa.Column("seq", sa.Integer, primary_key=True, autoincrement=False),
        sa.Column("release_id", sa.String(200), sa.ForeignKey("releases.id"), nullable=True),
        sa.Column("kind", sa.String(200), nullable=False),
        sa.Column("actor", sa.String(200), nullable=False),
        sa.Column("run_id", sa.String(200), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("payload", sa.JSON, nullable=False),
        sa.Column("prev_hash", sa.String(64), nullable=False),
        sa.Column("hash", sa.String(64), nullable=False),
    )
    op.create_index("ix_events_release_id", "events", ["release_id"])
    head = op.create_table(
        "event_chain_head",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=False),
        sa.Column("seq", sa.Integer, nullable=False),
        sa.Column("hash", sa.String(64), nullable=False),
    )
    op.bulk_insert(head, [{"id": 1, "seq": 0, "hash": "0" * 64}])
    op.create_table(
        "approvals",
        sa.Column("release_id", sa.String(200), sa.ForeignKey("releases.id"), nullable=False),
        sa.Column("phase", sa.String(120), nullable=False),
        sa.Column("approver", sa.String(200), nullable=False),
        sa.Column("comment", sa.Text, nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.UniqueConstraint(
            "release_id", "phase", "approver", name="uq_approvals_release_phase_approver"
        ),
    )


def downgrade() -> None:
    op.drop_table("approvals")
    op.drop_table("event_chain_head")
    op.drop_index("ix_events_release_id", table_name="events")
    op.drop_table("events")
    op.drop_index("ix_releases_product_created_at", table_name="releases")
    op.drop_index("uq_releases_one_active_per_product", table_name="releases")
    op.drop_table("releases")
