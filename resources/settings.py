"""Where the embedded defaults keep their files, all under one folder (RELEASE_HOME).

Defaults suit a laptop demo: everything lives in `./.release`; production sets RELEASE_LEDGER_URL
to PostgreSQL and RELEASE_HOME to a shared volume.
"""

from __future__ import annotations

import getpass
import os
from pathlib import Path

from release_pipelines.core.errors import ManifestError, Problem


def release_home() -> Path:
    return Path(os.environ.get("RELEASE_HOME", ".release")).resolve()


def ledger_url() -> str:
    return os.environ.get("RELEASE_LEDGER_URL") or f"sqlite:///{release_home() / 'ledger.db'}"


def prometheus_url() -> str:
    """RELEASE_PROMETHEUS_URL; empty = read each service's router directly."""
    return os.environ.get("RELEASE_PROMETHEUS_URL", "")


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


def example_manifests() -> Path:
    """The example product of a source checkout (`examples/shop` beside this `resources/` folder);
    an installed wheel has none."""
    return Path(__file__).resolve().parent.parent / "examples" / "shop"


def manifests_location() -> Path:
    """RELEASE_MANIFESTS (a file or a folder), else the example product of a source checkout."""
    configured = os.environ.get("RELEASE_MANIFESTS")
    if configured:
        return Path(configured)
    example = example_manifests()
    if not example.is_dir():
        raise ManifestError([Problem(
            "RELEASE_MANIFESTS", "not set, and there is no example product beside the package: set "
            "RELEASE_MANIFESTS to a release manifest (release.yaml) or a folder of them", None)])
    return example
