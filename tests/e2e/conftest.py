"""Fixtures for the end-to-end tests: fresh PostgreSQL databases (module scope), a Debian
chromium for Playwright, and the artifacts folder (test-artifacts/, gitignored).

Postgres: the server comes from RELEASE_TEST_POSTGRES_URL (see tests/conftest.py); these tests are
skipped without one, except in CI (RELEASE_REQUIRE_POSTGRES=1 / CI=true) where they fail.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.conftest import _create_database, _drop_database
from tests.debian_packages import CHROMIUM, PackageUnavailable, ensure_package
from tests.e2e_support import ROOT

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
    """Debian's chromium at /usr/bin/chromium (RELEASE_TEST_CHROMIUM); installed with apt-get when missing and root."""
    try:
        return ensure_package(str(CHROMIUM), "chromium")
    except PackageUnavailable as exc:
        pytest.fail(f"{exc} (or point RELEASE_TEST_CHROMIUM at a chromium binary)")


@pytest.fixture(scope="session")
def chromium_path() -> Path:
    return ensure_chromium()
