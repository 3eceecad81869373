"""Alembic environment for the shop database.

The URL is never stored here: the release runner passes a ready connection (with its lock and
statement timeouts) in ``config.attributes["connection"]``, or a URL in
``config.attributes["url"]``; on the command line use ``alembic -x url=...``.
Each revision runs in its own transaction so a failed one rolls back alone.
"""

from __future__ import annotations

from alembic import context
from sqlalchemy import create_engine
from sqlalchemy.engine import Connection

config = context.config


def _url() -> str:
    url = config.attributes.get("url") or context.get_x_argument(as_dictionary=True).get("url")
    url = url or config.get_main_option("sqlalchemy.url")
    if not url:
        raise SystemExit(
            "no database URL: pass -x url=postgresql+psycopg2://... (or sqlite:///file.db)"
        )
    return url


def _run(connection: Connection) -> None:
    context.configure(connection=connection, transaction_per_migration=True)
    with context.begin_transaction():
        context.run_migrations()


if context.is_offline_mode():
    context.configure(url=_url(), literal_binds=True, transaction_per_migration=True)
    with context.begin_transaction():
        context.run_migrations()
elif config.attributes.get("connection") is not None:
    _run(config.attributes["connection"])
else:
    engine = create_engine(_url())
    with engine.connect() as connection:
        _run(connection)
        connection.commit()
    engine.dispose()
