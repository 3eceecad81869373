"""Where the embedded defaults keep their files, all under one folder (RELEASE_HOME).

Defaults suit a laptop demo: everything lives in `./.release`; production sets RELEASE_LEDGER_URL
to PostgreSQL and RELEASE_HOME to a shared volume.
"""

from __future__ import annotations

import getpass
import os
from pathlib import Path


def release_home() -> Path:
    return Path(os.environ.get("RELEASE_HOME", ".release")).resolve()


def ledger_url() -> str:
    return os.environ.get("RELEASE_LEDGER_URL") or f"sqlite:///{release_home() / 'ledger.db'}"


def platform_state_dir(product: str) -> Path:
    return release_home() / "platform" / product


def flags_file(product: str) -> Path:
    return release_home() / "flags" / f"{product}.flagd.json"


def identity() -> str:
    """Who is acting when Dagster gives no user: RELEASE_ACTOR, else the OS user."""
    try:
        fallback = getpass.getuser()
    except (KeyError, OSError):
        fallback = "unknown"
    return os.environ.get("RELEASE_ACTOR") or fallback


def default_manifest_path() -> Path:
    """RELEASE_MANIFESTS (a file or a folder), else the example product beside this package."""
    configured = os.environ.get("RELEASE_MANIFESTS")
    if configured:
        return Path(configured)
    return Path(__file__).resolve().parent.parent / "examples" / "shop"
