"""The Dagster UI in a real headless browser (Debian chromium through Playwright for Python).

A webserver and daemon run on a SQLite instance with the project's run queue. The test does what
a release engineer does: find `shop_release`, open the Launchpad, type the run config of a first
install, launch, watch the run succeed, then open the asset catalog and find the table assets with
their lineage and data-integrity checks. Screenshots go to test-artifacts/browser-*.png.

Chromium: /usr/bin/chromium (RELEASE_TEST_CHROMIUM); installed with apt-get when missing and we
are root, else the test fails saying how to install it. No `playwright install`, no downloads.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from tests.e2e.conftest import CHROMIUM_FLAGS
from tests.e2e_support import (
    EXAMPLE_MANIFEST,
    DagsterServers,
    kill_processes,
    processes_with_env,
    skip_dagster_welcome,
    stop_platform,
    write_instance,
)

pytestmark = pytest.mark.slow

RUN_CONFIG = """ops:
  preflight:
    config:
      versions:
        catalog: 1.0.0
        orders: 1.0.0
        frontend: 1.0.0
execution:
  config:
    in_process: {}
"""
# in_process: every step in the run's process; each step subprocess costs 5-10 s on a loaded
# 2-CPU machine. The production-mode test covers the default multiprocess executor.
UI_TIMEOUT_MS = 60_000
RUN_TIMEOUT_S = 300


@pytest.fixture(scope="module")
def ui(tmp_path_factory):
    base = tmp_path_factory.mktemp("browser")
    dagster_home, release_home = base / "dagster_home", base / "release_home"
    release_home.mkdir()
    write_instance(dagster_home, postgres=False)
    env = {k: v for k, v in os.environ.items() if k not in ("RELEASE_LEDGER_URL", "RELEASE_PROMETHEUS_URL")}
    env |= {
        "DAGSTER_HOME": str(dagster_home),
        "RELEASE_HOME": str(release_home),
        "SHOP_DB_URL": f"sqlite:///{release_home / 'shop.db'}",
        "RELEASE_MANIFESTS": str(EXAMPLE_MANIFEST),
        "RELEASE_ACTOR": "e2e-browser",
    }
    servers = DagsterServers(env=env, log_dir=base / "logs")
    try:
        servers.start()
        yield servers, release_home
    finally:
        codes = servers.stop()
        stop_platform(release_home)
        leftovers = processes_with_env("RELEASE_HOME", str(release_home))
        kill_processes(leftovers)
        assert codes["webserver"] is not None and codes["daemon"] is not None, codes
        assert not leftovers, [p.pid for p in leftovers]


@pytest.fixture
def page(chromium_path: Path):
    from playwright.sync_api import expect, sync_playwright

    expect.set_options(timeout=UI_TIMEOUT_MS)  # expect's own 5 s default: the catalog can still be "Refreshing data…"
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=str(chromium_path), headless=True, args=CHROMIUM_FLAGS)
        try:
            context = browser.new_context(viewport={"width": 1600, "height": 1000})
            context.set_default_timeout(UI_TIMEOUT_MS)
            page = context.new_page()
            skip_dagster_welcome(page)
            yield page
        finally:
            browser.close()


def shot(page, artifacts_dir: Path, name: str) -> Path:
    path = artifacts_dir / f"browser-{name}.png"
    page.screenshot(path=str(path), full_page=False)
    return path


def test_launch_a_release_from_the_launchpad_and_find_the_table_assets(ui, page, artifacts_dir):
    from playwright.sync_api import expect

    servers, _release_home = ui
    base = servers.url

    # 1. the jobs list: shop_release is there; open it
    page.goto(f"{base}/jobs")
    page.locator('a[href="/locations/release_pipelines/jobs/shop_release"]').first.click()
    expect(page).to_have_url(f"{base}/locations/release_pipelines/jobs/shop_release", timeout=UI_TIMEOUT_MS)
    expect(page.get_by_text("preflight").first).to_be_visible()
    shot(page, artifacts_dir, "1-job")

    # 2. the Launchpad: replace the scaffolded config with the first install's versions
    page.locator('a[href$="/jobs/shop_release/playground"]').first.click()
    editor = page.locator(".CodeMirror").first
    expect(editor).to_be_visible()
    editor.click()
    page.keyboard.press("Control+A")
    page.keyboard.press("Delete")
    page.keyboard.insert_text(RUN_CONFIG)
    typed = page.evaluate("document.querySelector('.CodeMirror').CodeMirror.getValue()")
    assert "catalog: 1.0.0" in typed and "in_process" in typed, typed
    page.wait_for_timeout(1500)  # the Launchpad validates the config against the job
    shot(page, artifacts_dir, "2-launchpad")
    launch = page.get_by_role("button", name="Launch Run")
    expect(launch).to_be_enabled()
    launch.click()

    # 3. the run page: wait for the run to succeed
    page.wait_for_url(f"{base}/runs/**", timeout=UI_TIMEOUT_MS)
    run_id = page.url.rstrip("/").split("/runs/")[1].split("?")[0]
    deadline = time.monotonic() + RUN_TIMEOUT_S
    status = ""
    while time.monotonic() < deadline:
        status = _run_status(servers, run_id)
        if status in ("SUCCESS", "FAILURE", "CANCELED"):
            break
        time.sleep(2)
    assert status == "SUCCESS", f"run {run_id} {status}:\n{servers.log_tail('daemon')}"
    page.reload()
    expect(page.get_by_text("Success").first).to_be_visible()
    expect(page.get_by_text("start_canary").first).to_be_visible()
    shot(page, artifacts_dir, "3-run-succeeded")

    # 4. the asset catalog: the shop database's tables
    page.goto(f"{base}/assets")
    expect(page.get_by_role("link", name="shop_db / public / products").first).to_be_visible()
    expect(page.get_by_role("link", name="shop_db / public / orders").first).to_be_visible()
    expect(page.get_by_role("link", name="services / orders").first).to_be_visible()
    shot(page, artifacts_dir, "4-catalog")
    page.get_by_role("link", name="shop_db / public / orders").first.click()
    expect(page).to_have_url(f"{base}/assets/shop_db/public/orders", timeout=UI_TIMEOUT_MS)

    # 5. one table: lineage (services that read and write it) and its checks
    page.goto(f"{base}/assets/shop_db/public/orders?view=lineage")
    expect(page.get_by_text("services", exact=True).first).to_be_visible()  # the group of the writer
    expect(page.get_by_text("shop_db", exact=True).first).to_be_visible()
    expect(page.get_by_text("3 / 3 Passed").first).to_be_visible()  # the checks the release's gate ran
    page.wait_for_timeout(2000)  # let the graph finish loading
    shot(page, artifacts_dir, "5-lineage")
    page.goto(f"{base}/assets/shop_db/public/orders?view=checks")
    for check in ("schema_contract", "constraint_validity", "expectations_orders"):
        expect(page.get_by_text(check, exact=True).first).to_be_visible()
    expect(page.get_by_text("Succeeded").first).to_be_visible()
    page.wait_for_timeout(1000)
    shot(page, artifacts_dir, "6-checks")


def _run_status(servers: DagsterServers, run_id: str) -> str:
    from dagster_graphql import DagsterGraphQLClient

    return DagsterGraphQLClient("127.0.0.1", port_number=servers.port).get_run_status(run_id).value
