"""Programmatic Alembic environment: Ledger passes an open connection, already locked.

No alembic.ini: the caller sets ``script_location`` and ``config.attributes["connection"]``.
The caller owns the transaction (and the lock that serialises concurrent openers), so Alembic
must not commit it: ``begin_transaction`` is a no-op on a connection already in one.
"""

from __future__ import annotations

from alembic import context

from release_pipelines.resources.ledger_schema import VERSION_TABLE, metadata

context.configure(
    connection=context.config.attributes["connection"],
    target_metadata=metadata,
    version_table=VERSION_TABLE,
    render_as_batch=True,  # SQLite cannot ALTER most things; batch mode rebuilds tables
)
with context.begin_transaction():
    context.run_migrations()
