"""Prepare what the test suite needs on this machine before pytest starts.

Prints what it finds so a developer sees at once why a Postgres test would fail or skip, and
installs the Debian packages the suite runs (chromium, prometheus) when missing and root.
"""

from __future__ import annotations

import os

from sqlalchemy import create_engine, text

from tests.debian_packages import SUITE_PACKAGES, PackageUnavailable, ensure_package

DEFAULT_URL = "postgresql+psycopg2://postgres@127.0.0.1:5432/postgres"


def main() -> None:
    url = os.environ.get("RELEASE_TEST_POSTGRES_URL", DEFAULT_URL)
    try:
        with create_engine(url).connect() as conn:
            version = conn.execute(text("show server_version")).scalar()
        print(f"PostgreSQL {version} reachable for tests (RELEASE_TEST_POSTGRES_URL={url})")
    except Exception as exc:  # noqa: BLE001 - report any connection failure the same way
        print(
            f"PostgreSQL NOT reachable at {url}: {type(exc).__name__}. "
            "Set RELEASE_TEST_POSTGRES_URL=postgresql+psycopg2://USER@HOST:PORT/DB to point the "
            "tests at a server; Postgres tests will be skipped (or fail when "
            "RELEASE_REQUIRE_POSTGRES=1, as in CI)."
        )
    for package, binary in SUITE_PACKAGES.items():  # before the workers start, not in one of them mid-run
        try:
            print(f"{package}: {ensure_package(binary, package)}")
        except PackageUnavailable as exc:
            print(f"{package} NOT available, its tests will fail: {exc}")


if __name__ == "__main__":
    main()
