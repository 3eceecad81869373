"""Alembic environment of the starter database (the release manifest's `migrations`).

The release runner passes an open connection (with its lock and statement timeouts) in
``config.attributes["connection"]``; on the command line pass ``alembic -x url=...``.
Each revision runs in its own transaction, so a failed one rolls back alone.
"""

from alembic import context
from sqlalchemy import create_engine

config = context.config


def run(connection) -> None:
    context.configure(connection=connection, transaction_per_migration=True)
    with context.begin_transaction():
        context.run_migrations()


def url() -> str:
    found = config.attributes.get("url") or context.get_x_argument(as_dictionary=True).get("url")
    if not found:
        raise SystemExit("no database URL: pass -x url=postgresql+psycopg2://... (or sqlite:///file.db)")
    return found


if context.is_offline_mode():
    context.configure(url=url(), literal_binds=True, transaction_per_migration=True)
    with context.begin_transaction():
        context.run_migrations()
elif config.attributes.get("connection") is not None:
    run(config.attributes["connection"])
else:
    engine = create_engine(url())
    with engine.connect() as connection:
        run(connection)
        connection.commit()
    engine.dispose()
