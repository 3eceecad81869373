"""Release, promote and rollback jobs on real processes, a real SQLite ledger and app database."""

from __future__ import annotations

import pytest
from click.testing import CliRunner

from release_pipelines.cli.main import main
from release_pipelines.core.states import ReleaseState
from tests.release_harness import (
    EXAMPLE,
    processes_under,
    promote_config,
    release_config,
    rollback_config,
    shop_environment,
)

pytestmark = pytest.mark.slow  # a minute or more in all: the longer time limit (tests/conftest.py)

FIRST = {"catalog": "1.0.0", "orders": "1.0.0", "frontend": "1.0.0"}


@pytest.fixture
def shop(monkeypatch, tmp_path):
    shop = shop_environment(monkeypatch, tmp_path)
    try:
        yield shop
    finally:
        shop.stop()
        leftovers = processes_under(shop.home)
        assert not leftovers, f"orphan processes: {[p.pid for p in leftovers]}"


@pytest.fixture
def installed(shop):
    result = shop.run("release", release_config(FIRST))
    assert result.success, shop.failure_message(result)
    return shop


def kinds(shop, release_id: str) -> list[str]:
    return [e.kind for e in shop.ledger.events(release_id)]


def test_first_install_runs_migrations_and_completes(installed) -> None:
    release = installed.ledger.releases(installed.product.name)[0]
    assert release.state is ReleaseState.COMPLETED
    assert {s: installed.stable(s) for s in FIRST} == FIRST
    events = kinds(installed, release.id)
    assert events.index("migrate:done") < events.index("deploy:start")
    assert "gate" in events


def test_release_promote_step_by_step_then_rollback_restores_stable(installed) -> None:
    shop = installed
    result = shop.run("release", release_config({"catalog": "1.1.0", "orders": "1.1.0"}))
    assert result.success, shop.failure_message(result)
    release = shop.active()
    assert release.state is ReleaseState.CANARY and release.canary_step == 0
    assert shop.platform.status("catalog").canary_weight == 25
    # services/<name> materialized with version and weight
    materialized = result.asset_materializations_for_node("start_canary")
    assert {m.asset_key.path[-1] for m in materialized} == {"catalog", "orders"}

    assert shop.run("promote", promote_config()).success
    assert shop.active().canary_step == 1
    assert shop.platform.status("orders").canary_weight == 50

    rollback = shop.run("rollback", rollback_config(reason="test: operator"))
    assert rollback.success, shop.failure_message(rollback)
    assert shop.ledger.get(release.id).state is ReleaseState.ROLLED_BACK
    for service in ("catalog", "orders"):
        status = shop.platform.status(service)
        assert (status.stable_version, status.canary_version) == ("1.0.0", None)
    events = kinds(shop, release.id)
    assert events.index("state:rolling_back") < events.index("revert:start")
    # the first install applied every expand revision, so this release had none to run or undo
    # (downgrade on rollback is tested in test_release_migrations.py)
    started = next(e for e in shop.ledger.events(release.id) if e.kind == "migrate:start")
    assert started.payload["pending"] == []
    assert not any(e.kind == "revert:migrate:done" for e in shop.ledger.events(release.id))

    again = shop.run("rollback", rollback_config(release.id))  # idempotent
    assert again.success
    assert shop.ledger.get(release.id).state is ReleaseState.ROLLED_BACK
    assert shop.ledger.verify().ok


def test_promotion_to_100_makes_canaries_stable_and_turns_flags_on(installed) -> None:
    shop = installed
    assert shop.run("release", release_config({"orders": "1.1.0", "frontend": "1.1.0"})).success
    for _ in range(2):
        assert shop.run("promote", promote_config()).success
    release = shop.ledger.releases(shop.product.name)[0]
    assert release.state in (ReleaseState.BAKING, ReleaseState.COMPLETED)
    assert shop.stable("orders") == "1.1.0" and shop.stable("frontend") == "1.1.0"
    assert shop.platform.status("orders").canary_version is None
    from release_pipelines.orchestration.dagster_resources import FlagsResource

    assert FlagsResource().for_product(shop.product).get("express-checkout") is True


def test_crashing_canary_fails_the_release_naming_it_and_rollback_restores_stable(installed) -> None:
    shop = installed
    result = shop.run("release", release_config({"orders": "1.1.0+crash"}))
    assert not result.success
    message = shop.failure_message(result)
    assert "orders" in message and "1.1.0+crash" in message
    release = shop.active()
    assert "step:failed" in kinds(shop, release.id)
    assert shop.run("rollback", rollback_config(release.id)).success
    status = shop.platform.status("orders")
    assert (status.stable_version, status.canary_version, status.canary_weight) == ("1.0.0", None, 0)
    assert shop.ledger.get(release.id).state is ReleaseState.ROLLED_BACK


def test_second_release_while_one_is_active_is_refused_and_recorded(installed) -> None:
    shop = installed
    assert shop.run("release", release_config({"catalog": "1.1.0"})).success
    second = shop.run("release", release_config({"orders": "1.1.0"}))
    assert not second.success
    assert "already active" in shop.failure_message(second)
    refused = [e for e in shop.ledger.events() if e.kind == "launch:refused"]
    assert refused and "already active" in refused[-1].payload["reason"]


def test_bad_input_is_refused_before_anything_runs(installed) -> None:
    shop = installed
    before = len(shop.ledger.releases())
    result = shop.run("release", release_config({"ordrs": "1.1.0", "orders": "1.2.3; rm -rf /"}))
    assert not result.success
    message = shop.failure_message(result)
    assert "unknown service 'ordrs'; did you mean 'orders'?" in message
    assert "not allowed" in message
    assert len(shop.ledger.releases()) == before


def test_rollback_with_no_active_release_does_nothing(shop) -> None:
    assert shop.run("rollback", rollback_config()).success


def test_kill_9_of_the_release_run_then_rollback_restores_stable(installed) -> None:
    """The release run process dies mid-deploy (kill -9); the ledger shows how far it got and the
    rollback job brings every service back to stable, leaving no orphan process."""
    import os
    import signal
    import subprocess
    import sys
    import time

    shop = installed
    script = (
        "from tests.release_harness import Shop, release_config; from pathlib import Path; "
        f"Shop(Path({str(shop.home)!r})).run('release', release_config({{'catalog': '1.1.0', 'orders': '1.1.0+slow'}}))"
    )
    child = subprocess.Popen([sys.executable, "-c", script], cwd=os.getcwd(), env=os.environ.copy())
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            release = shop.active()
            if release and any(e.kind == "deploy:start" and e.payload["service"] == "orders"
                               for e in shop.ledger.events(release.id)):
                break
            assert child.poll() is None, "the release run ended before it reached the orders deploy"
            time.sleep(0.05)
        else:
            pytest.fail("the release never reached the orders deploy")
        time.sleep(1)  # inside the slow canary's start-up
        os.kill(child.pid, signal.SIGKILL)
        child.wait(timeout=10)
    finally:
        if child.poll() is None:
            child.kill()
    release = shop.active()
    events = kinds(shop, release.id)
    assert events[-1] == "deploy:start" and release.state is ReleaseState.EXPANDING  # an exact record
    result = shop.run("rollback", rollback_config(release.id, "run killed"))
    assert result.success, shop.failure_message(result)
    assert shop.ledger.get(release.id).state is ReleaseState.ROLLED_BACK
    for service in ("catalog", "orders"):
        status = shop.platform.status(service)
        assert (status.stable_version, status.canary_version) == ("1.0.0", None)
    running = {v.version for v in shop.platform.list_versions() if v.alive}
    assert running == {"1.0.0"}
    assert shop.ledger.verify().ok


def test_release_stop_refuses_an_active_release_then_stops_every_process(installed) -> None:
    shop = installed
    assert shop.run("release", release_config({"catalog": "1.1.0"})).success
    active = shop.active()
    refused = CliRunner().invoke(main, ["stop", "shop", "--manifest", str(EXAMPLE)])
    assert refused.exit_code == 2, refused.output
    assert f"shop has an active release {active.id} (canary)" in " ".join(refused.output.split())
    assert processes_under(shop.home)
    assert shop.run("rollback", rollback_config(active.id)).success
    stopped = CliRunner().invoke(main, ["stop", "shop", "--manifest", str(EXAMPLE)])
    assert stopped.exit_code == 0, stopped.output
    assert "shop: stopped" in stopped.output
    assert not processes_under(shop.home)
