"""The canary sensor and the run-failure sensor, evaluated against real services and ledger."""

from __future__ import annotations

import pytest
from dagster import DagsterEventType, build_run_status_sensor_context

from tests.release_harness import PATHS, processes_under, release_config, send_load, shop_environment

pytestmark = pytest.mark.slow  # a minute or more in all: the longer time limit (tests/conftest.py)

FIRST = {"catalog": "1.0.0", "orders": "1.0.0", "frontend": "1.0.0"}


@pytest.fixture
def installed(monkeypatch, tmp_path):
    shop = shop_environment(monkeypatch, tmp_path)
    try:
        assert shop.run("release", release_config(FIRST)).success
        yield shop
    finally:
        shop.stop()
        assert not processes_under(shop.home)


def tick_until_decision(shop, service: str, max_ticks: int = 40, requests: int = 250):
    """Tick under load until a run is requested: that tick's result and the cursor it started from."""
    cursor = None
    for _ in range(max_ticks):
        send_load(shop, service, requests)
        before, result = cursor, shop.tick(cursor)
        cursor = result.cursor
        if result.run_requests:
            return result, before
    pytest.fail(f"no decision after {max_ticks} ticks: {result.skip_message}")


def versions_served(shop, service: str, requests: int = 50) -> set[str]:
    """The versions that answered real requests through the service's router."""
    import httpx

    endpoint = shop.platform.status(service).endpoint
    with httpx.Client(timeout=10) as client:
        return {client.get(endpoint + PATHS[service]).headers.get("X-Release-Version", "?") for _ in range(requests)}


def test_bad_canary_is_shed_at_the_verdict_and_rolled_back_with_a_deterministic_run_key(installed, capfd) -> None:
    shop = installed
    assert shop.run("release", release_config({"orders": "1.2.0+bad"})).success
    release = shop.active()
    result, before = tick_until_decision(shop, "orders")
    [request] = result.run_requests
    assert request.job_name == "shop_rollback"
    assert request.run_key == f"{release.id}:0:rollback"
    verdicts = [e for e in shop.ledger.events(release.id) if e.kind == "verdict"]
    assert verdicts[-1].payload["verdict"] == "fail" and "error rate" in verdicts[-1].payload["reason"]
    said = f"{request.run_key}: fail: {verdicts[-1].payload['reason']}"
    assert said in capfd.readouterr().err, "the sensor's log says why it requests the rollback"
    observed = [e for e in result.asset_events if e.asset_key.path == ["services", "orders"]]
    assert observed and observed[-1].metadata["verdict"].value == "fail"
    # safe at the verdict: no rollback run has executed, the bad canary still runs, but gets no traffic
    status = shop.platform.status("orders")
    assert (status.canary_version, status.canary_weight) == ("1.2.0+bad", 0)
    assert shop.active().state.value == "canary" and versions_served(shop, "orders") == {"1.0.0"}
    [shed] = [e for e in shop.ledger.events(release.id) if e.kind == "traffic:shed"]
    assert shed.actor == "canary-sensor" and shed.payload["weights"] == {"orders": 0}
    assert shed.payload["run_key"] == request.run_key and shed.payload["reason"].startswith("canary failed: orders")
    # the daemon died before storing the cursor and its run request: the next tick requests the same run
    [again] = shop.tick(before).run_requests
    assert (again.run_key, again.run_config) == (request.run_key, request.run_config)
    assert len([e for e in shop.ledger.events(release.id) if e.kind in ("verdict", "traffic:shed")]) == 2
    # the rollback run finds the canary at weight 0 and still does all of its work
    assert shop.run("rollback", request.run_config).success
    assert shop.stable("orders") == "1.0.0" and shop.platform.status("orders").canary_version is None
    kinds = [e.kind for e in shop.ledger.events(release.id)]
    assert kinds.index("traffic:shed") < kinds.index("state:rolling_back") < kinds.index("revert:done")
    assert kinds[-1] == "state:rolled_back" and shop.ledger.get(release.id).state.value == "rolled_back"


def test_healthy_canary_is_promoted_and_waiting_is_explained(installed) -> None:
    shop = installed
    assert shop.run("release", release_config({"catalog": "1.1.0"})).success
    release = shop.active()
    first = shop.tick()
    assert not first.run_requests and "step 0" in first.skip_message  # says why it waits
    result, _ = tick_until_decision(shop, "catalog")
    [request] = result.run_requests
    verdicts = [e.payload for e in shop.ledger.events(release.id) if e.kind == "verdict"]
    assert (request.job_name, request.run_key) == ("shop_promote", f"{release.id}:0:promote"), verdicts
    assert request.run_config["ops"]["promote_step"]["config"]["expected_step"] == 0


def test_no_active_release_skips(installed) -> None:
    result = installed.tick()
    assert not result.run_requests and "no active release" in result.skip_message


def test_failed_release_run_requests_the_rollback_job(installed) -> None:
    shop = installed
    failed = shop.run("release", release_config({"orders": "1.1.0+crash"}))
    assert not failed.success
    release = shop.active()
    run = shop.instance.get_run_by_id(failed.run_id)
    failure = next(e for e in failed.all_events if e.event_type == DagsterEventType.RUN_FAILURE)
    sensor = shop.defs.resolve_sensor_def("shop_rollback_on_failure")
    context = build_run_status_sensor_context(
        sensor_name=sensor.name, dagster_event=failure, dagster_instance=shop.instance, dagster_run=run
    ).for_run_failure()
    request = sensor(context)
    assert request.run_key == f"rollback:{failed.run_id}"
    assert request.run_config["ops"]["rollback_start"]["config"]["release_id"] == release.id
    assert shop.run("rollback", request.run_config).success
    assert shop.platform.status("orders").canary_version is None
