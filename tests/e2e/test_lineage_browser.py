"""A changed table's page in the Dagster UI, in a real headless browser (Debian chromium through
Playwright): does it answer "which release changed this column and what reads it"?

tests/lineage_release.py runs a release of tests/data/lineage_product through the real jobs into a
SQLite instance in a temp DAGSTER_HOME over PostgreSQL; a real dagster-webserver then serves that
instance and the product's definitions. Screenshots: test-artifacts/lineage-*.png.
"""

from __future__ import annotations

import os

import pytest

from tests.e2e.conftest import CHROMIUM_FLAGS
from tests.e2e_support import (
    DagsterServers,
    kill_processes,
    processes_with_env,
    skip_dagster_welcome,
)
from tests.lineage_release import instance_at, run_lineage_release, stage_product
from tests.release_harness import Shop

pytestmark = [pytest.mark.slow, pytest.mark.postgres]
UI_TIMEOUT_MS = 60_000


def test_a_changed_tables_page_says_which_release_changed_it_and_what_reads_it(
        tmp_path, monkeypatch, make_database, chromium_path, artifacts_dir):
    from playwright.sync_api import expect, sync_playwright

    folder, home, dagster_home = tmp_path / "ledgerly", tmp_path / "release_home", tmp_path / "dagster_home"
    manifest = stage_product(folder)
    home.mkdir()
    env = {"RELEASE_HOME": str(home), "LINEAGE_DB_URL": make_database("lineage_ui"),
           "RELEASE_ACTOR": "data-team-browser", "DAGSTER_HOME": str(dagster_home), "HOME": str(tmp_path),
           "RELEASE_MANIFESTS": str(manifest)}
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    for name in ("RELEASE_LEDGER_URL", "RELEASE_PROMETHEUS_URL", "OPENLINEAGE_URL", "OPENLINEAGE_CONFIG"):
        monkeypatch.delenv(name, raising=False)
    shop = Shop(home, manifest, instance_at(dagster_home))
    try:
        ran = run_lineage_release(shop, folder)
    finally:
        shop.stop()

    servers = DagsterServers(env=dict(os.environ), log_dir=tmp_path / "logs")
    try:
        servers.start(daemon=False)
        with sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path=str(chromium_path), headless=True, args=CHROMIUM_FLAGS)
            try:
                page = browser.new_context(viewport={"width": 1600, "height": 2000}).new_page()
                page.set_default_timeout(UI_TIMEOUT_MS)
                skip_dagster_welcome(page)
                # the table's page: its columns now, the release that last changed it, what it did, who reads it
                _open(page, f"{servers.url}/assets/app_db/public/orders", "email_normalized")
                for text in (ran.release, "orders.email: column dropped", "0004_contract", "read by billing",
                             "services/reports",
                             # the column list: which release and revision last changed each column, from what
                             f"column added (bigint) (release {ran.release}, revision 0002_total); "
                             "from quantity, unit_cents",
                             f"created with the table (release {ran.first_release}, revision 0001_orders)"):
                    expect(page.get_by_text(text).first).to_be_visible(timeout=UI_TIMEOUT_MS)
                page.screenshot(path=str(artifacts_dir / "lineage-orders.png"), full_page=True)

                # a table the release created and then dropped: still there, marked dropped
                _open(page, f"{servers.url}/assets/app_db/public/exports?view=events", "dropped by revision")
                page.screenshot(path=str(artifacts_dir / "lineage-exports-dropped.png"), full_page=True)

                # the release record: the data team's summary
                _open(page, f"{servers.url}/assets/releases/ledgerly", "data_summary")
                row = page.locator("tr", has_text="data_summary")
                row.get_by_text("Show Markdown").first.click()
                expect(page.get_by_text("What this release did to the data").first).to_be_visible()
                expect(page.get_by_text("Readers to tell: billing.").first).to_be_visible()
                page.screenshot(path=str(artifacts_dir / "lineage-release-record.png"), full_page=True)
            finally:
                browser.close()
    finally:
        codes = servers.stop()
        leftovers = processes_with_env("RELEASE_HOME", str(home))
        kill_processes(leftovers)
        assert codes["webserver"] is not None, codes
        assert not leftovers, [p.pid for p in leftovers]


def _open(page, url: str, text: str) -> None:
    """Go to `url` and wait until `text` shows."""
    from playwright.sync_api import expect

    page.goto(url)
    expect(page.get_by_text(text).first).to_be_visible(timeout=UI_TIMEOUT_MS)
