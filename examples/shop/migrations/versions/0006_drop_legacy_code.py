"""Drop products.legacy_code, which no running release reads any more.

Contract phase: run only after the old release is gone. The downgrade restores the column's
schema, not its data: restore values from a snapshot if they matter.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0006_drop_legacy_code"
down_revision = "0005_currency_not_null"
branch_labels = None
depends_on = None

phase = "contract"


def upgrade() -> None:
    op.drop_column("products", "legacy_code")


def downgrade() -> None:
    op.add_column("products", sa.Column("legacy_code", sa.String(32)))
