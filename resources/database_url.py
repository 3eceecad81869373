"""The one place database URLs are resolved and normalised.

We use psycopg2 everywhere: SQLAlchemy 2.1 maps a bare ``postgresql://`` URL to psycopg 3, which
is not installed, so every Postgres URL is rewritten to ``postgresql+psycopg2://`` here.
Manifest URLs are environment references (``${VAR}`` or ``${VAR:-default}``), resolved here too.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping

from sqlalchemy.engine import make_url

from release_pipelines.core.errors import ReleaseError

_ENV_REFERENCE = re.compile(r"^\$\{(?P<var>[A-Z_][A-Z0-9_]*)(?::-(?P<default>[^}]*))?\}$")
_POSTGRES_SCHEMES = ("postgres://", "postgresql://", "postgresql+psycopg://", "postgresql+psycopg2://")


def normalize_url(url: str) -> str:
    """Rewrite any PostgreSQL URL to the psycopg2 driver; leave other URLs alone."""
    for scheme in _POSTGRES_SCHEMES:
        if url.startswith(scheme):
            return "postgresql+psycopg2://" + url[len(scheme) :]
    return url


def resolve_url(reference: str, environ: Mapping[str, str] | None = None) -> str:
    """Resolve a manifest URL reference against the environment and normalise it."""
    environ = os.environ if environ is None else environ
    match = _ENV_REFERENCE.match(reference)
    if not match:
        return normalize_url(reference)
    value = environ.get(match.group("var")) or match.group("default")
    if not value:
        raise ReleaseError(
            f"environment variable {match.group('var')} is not set; export it with the database URL"
        )
    return normalize_url(value)


def redact(url: str) -> str:
    """A URL safe to print or record: the password replaced by ***."""
    try:
        return make_url(url).render_as_string(hide_password=True)
    except Exception:  # noqa: BLE001 - not a URL we can parse: print nothing of it
        return "<unparseable database URL>"
