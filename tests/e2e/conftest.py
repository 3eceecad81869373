"""Fixtures for the end-to-end tests: fresh PostgreSQL databases (module scope), a Debian
chromium for Playwright, and the artifacts folder (test-artifacts/, gitignored).

Postgres: the server comes from RELEASE_TEST_POSTGRES_URL (see tests/conftest.py); these tests are
skipped without one, except in CI (RELEASE_REQUIRE_POSTGRES=1 / CI=true) where they fail.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.conftest import _create_database, _drop_database
from tests.e2e_support import ROOT

CHROMIUM = Path(os.environ.get("RELEASE_TEST_CHROMIUM", "/usr/bin/chromium"))
CHROMIUM_FLAGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]


@pytest.fixture(scope="module")
def make_database(postgres_server_url: str) -> Iterator[Callable[[str], str]]:
    """Create fresh databases on the test server for this module; all dropped at the end."""
    created: list[str] = []

    def make(prefix: str) -> str:
        url = _create_database(postgres_server_url, prefix)
        created.append(url)
        return url

    try:
        yield make
    finally:
        for url in created:
            _drop_database(postgres_server_url, url)


@pytest.fixture(scope="session")
def artifacts_dir() -> Path:
    path = ROOT / "test-artifacts"
    path.mkdir(exist_ok=True)
    return path


def ensure_chromium() -> Path:
    """Debian's chromium at /usr/bin/chromium; installed with apt-get when missing and root."""
    if CHROMIUM.exists():
        return CHROMIUM
    if os.geteuid() != 0 or not shutil.which("apt-get"):
        pytest.fail(
            f"{CHROMIUM} is missing; install it with `sudo apt-get install -y --no-install-recommends chromium` "
            "(or point RELEASE_TEST_CHROMIUM at a chromium binary)"
        )
    env = os.environ | {"DEBIAN_FRONTEND": "noninteractive"}
    result = subprocess.run(["apt-get", "install", "-y", "--no-install-recommends", "chromium"], check=False,
                            capture_output=True, text=True, env=env, timeout=900)
    if result.returncode != 0:  # the package lists may be stale on a fresh machine
        subprocess.run(["apt-get", "update"], check=False, capture_output=True, text=True, env=env, timeout=600)
        result = subprocess.run(["apt-get", "install", "-y", "--no-install-recommends", "chromium"], check=False,
                                capture_output=True, text=True, env=env, timeout=900)
    if result.returncode != 0 or not CHROMIUM.exists():
        pytest.fail(f"could not install chromium with apt-get:\n{result.stdout[-2000:]}\n{result.stderr[-2000:]}")
    return CHROMIUM


@pytest.fixture(scope="session")
def chromium_path() -> Path:
    return ensure_chromium()
