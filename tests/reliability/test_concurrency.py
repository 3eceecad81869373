"""Concurrency: 20 simultaneous launches of one product against one PostgreSQL ledger give exactly
one release and 19 clear refusals; two products release in parallel without touching each other.

Two migration runners on one database never both apply: that promise is proven where the runner
lives, tests/integration/test_migrations_pg.py::test_two_runners_never_both_apply (not repeated).
"""

from __future__ import annotations

import shutil
import threading
from pathlib import Path

import pytest
from dagster import DagsterInstance
from release_pipelines.resources import settings

from release_pipelines.core.states import ReleaseState
from release_pipelines.orchestration.dagster_resources import LedgerResource, PlatformResource
from tests.release_harness import EXAMPLE, QUIET, Shop, processes_under, release_config

pytestmark = pytest.mark.postgres

SLOW_FIRST = {"catalog": "1.0.0+slow", "orders": "1.0.0", "frontend": "1.0.0"}  # the winner stays active a while
FIRST = {"catalog": "1.0.0", "orders": "1.0.0", "frontend": "1.0.0"}


@pytest.fixture
def env(postgres_url, tmp_path, monkeypatch):
    home = tmp_path / "release_home"
    home.mkdir()
    monkeypatch.setenv("RELEASE_HOME", str(home))
    monkeypatch.setenv("RELEASE_LEDGER_URL", postgres_url)
    monkeypatch.setenv("SHOP_DB_URL", f"sqlite:///{home / 'shop.db'}")
    monkeypatch.setenv("SHOP2_DB_URL", f"sqlite:///{home / 'shop2.db'}")
    monkeypatch.setenv("RELEASE_ACTOR", "ci-launcher")
    monkeypatch.delenv("RELEASE_PROMETHEUS_URL", raising=False)
    shops: list[Shop] = []
    yield home, shops
    for shop in shops:
        shop.stop()
    LedgerResource().open().close()
    from release_pipelines.resources.clients import ledger_at

    ledger_at.cache_clear()
    assert not processes_under(home)


def _failure(result) -> str:
    return " ".join(e.step_failure_data.user_failure_data.description or "" for e in result.all_events
                    if e.is_step_failure and e.step_failure_data.user_failure_data)


def test_twenty_simultaneous_launches_give_one_release_and_19_refusals(env) -> None:
    home, shops = env
    shop = Shop(home)
    shops.append(shop)
    job = shop.defs.resolve_job_def("shop_release")
    results: list[object] = [None] * 20
    start = threading.Barrier(20)
    instances = [DagsterInstance.ephemeral() for _ in range(20)]  # made here: their set-up is not thread-safe

    def launch(i: int) -> None:
        start.wait()
        results[i] = job.execute_in_process(run_config={**release_config(SLOW_FIRST), **QUIET},
                                            instance=instances[i], raise_on_error=False)

    threads = [threading.Thread(target=launch, args=(i,)) for i in range(20)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(300)
    assert all(r is not None for r in results)
    won = [r for r in results if r.success]
    refused = [r for r in results if not r.success]
    assert len(won) == 1 and len(refused) == 19, [_failure(r)[:120] for r in refused]
    for r in refused:
        assert "already active" in _failure(r), _failure(r)
    [release] = shop.ledger.releases("shop")
    assert release.state is ReleaseState.COMPLETED and release.versions == SLOW_FIRST
    refusals = [e for e in shop.ledger.events() if e.kind == "launch:refused"]
    assert len(refusals) == 19 and all(release.id in e.payload["reason"] for e in refusals)
    assert shop.ledger.verify().ok
    running = {(v.service, v.version) for v in shop.platform.list_versions() if v.alive}
    assert running == set(SLOW_FIRST.items()), "one set of processes, not twenty"


def _second_product(tmp: Path) -> Path:
    """A copy of the shop named shop2, on its own database variable."""
    target = tmp / "shop2"
    shutil.copytree(EXAMPLE.parent, target, ignore=shutil.ignore_patterns("__pycache__"))
    manifest = target / "release.yaml"
    text = manifest.read_text().replace("product: shop\n", "product: shop2\n")
    text = text.replace("${SHOP_DB_URL:-sqlite:///.release/shop.db}", "${SHOP2_DB_URL}")
    manifest.write_text(text)
    return manifest


def test_two_products_release_in_parallel_without_interfering(env, tmp_path) -> None:
    home, shops = env
    shop, shop2 = Shop(home), Shop(home, _second_product(tmp_path))
    shops += [shop, shop2]
    assert shop2.product.name == "shop2"
    assert settings.platform_state_dir("shop") != settings.platform_state_dir("shop2")
    assert shop.platform.state.path != shop2.platform.state.path
    results: dict[str, object] = {}

    def run(s: Shop, versions: dict) -> None:
        results[s.product.name] = s.run("release", release_config(versions))

    threads = [threading.Thread(target=run, args=(shop, FIRST)),
               threading.Thread(target=run, args=(shop2, SLOW_FIRST))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(300)
    assert results["shop"].success, _failure(results["shop"])
    assert results["shop2"].success, _failure(results["shop2"])
    # the second product's next release while the first has one active: neither blocks the other
    active = shop.run("release", release_config({"orders": "1.1.0"}))
    assert active.success and shop.active() is not None
    assert shop2.run("release", release_config({"catalog": "1.1.0"})).success
    assert shop2.active().product == "shop2" and shop.active().product == "shop"
    assert shop.active().id != shop2.active().id
    one = {(v.pid, v.port) for v in shop.platform.list_versions()}
    two = {(v.pid, v.port) for v in shop2.platform.list_versions()}
    assert one and two and not {p for p, _ in one} & {p for p, _ in two}
    assert not {port for _, port in one} & {port for _, port in two}
    assert shop.stable("catalog") == "1.0.0" and shop2.stable("catalog") == "1.0.0+slow"
    assert (home / "shop.db").exists() and (home / "shop2.db").exists()
    # a rollback of one leaves the other's canary alone
    assert shop.run("rollback", {"ops": {"rollback_start": {"config": {"release_id": "", "reason": "t"}}}}).success
    assert shop2.platform.status("catalog").canary_version == "1.1.0"
    assert shop2.active().state is ReleaseState.CANARY
    assert PlatformResource().for_product(shop2.product).status("catalog").canary_weight > 0
    assert shop.ledger.verify().ok
