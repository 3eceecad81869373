"""Environments: each release belongs to one environment of its product (staging, production).

Adds `releases.environment` (default '': the single implicit environment of a manifest without
`environments:`) and makes the one-active-release rule per product AND environment, so staging
can run the next release while production runs the previous one. Written out in full so it never
changes after it ships.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-26
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

_ACTIVE = sa.text("state NOT IN ('completed', 'rolled_back')")


def upgrade() -> None:
    with op.batch_alter_table("releases") as batch:
        batch.add_column(sa.Column("environment", sa.String(40), nullable=False, server_default=sa.text("''")))
    op.drop_index("uq_releases_one_active_per_product", table_name="releases")
    op.create_index(
        "uq_releases_one_active_per_product_environment",
        "releases",
        ["product", "environment"],
        unique=True,
        postgresql_where=_ACTIVE,
        sqlite_where=_ACTIVE,
    )
    op.create_index("ix_releases_product_environment_created_at", "releases",
                    ["product", "environment", "created_at"])


def downgrade() -> None:
    op.drop_index("ix_releases_product_environment_created_at", table_name="releases")
    op.drop_index("uq_releases_one_active_per_product_environment", table_name="releases")
    op.create_index(
        "uq_releases_one_active_per_product",
        "releases",
        ["product"],
        unique=True,
        postgresql_where=_ACTIVE,
        sqlite_where=_ACTIVE,
    )
    with op.batch_alter_table("releases") as batch:
        batch.drop_column("environment")
