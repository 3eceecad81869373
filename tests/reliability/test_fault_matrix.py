"""Fault matrix: faults injected at each step of a real release; the normal machinery (re-running
the job, the run-failure sensor's rollback, the canary sensor's deadline) must bring the release
to `completed` or `rolled_back` - never stuck - with the application data intact (row counts and
an md5 of the ordered rows) and the ledger chain verified.

One staged shop on PostgreSQL (app database and ledger; see faults.py) serves every cell, in
order: the cells that end rolled back first, then promote -> contract pairs that complete.
Faults:
  kill -9 of the run       the job runs in a child process, killed when the ledger (or the
                           backfill's progress table) shows the step started; a router frozen
                           with SIGSTOP or a held table lock widens the short steps' windows
  PostgreSQL restart       pg_terminate_backend of the run's sessions (application_name
                           'release:...') or of every other session on the test databases
  metrics unreachable      RELEASE_PROMETHEUS_URL on a dead port, or the service's router killed
  service process crash    kill -9 of the canary's pid from the platform state (before deploy:
                           of the running stable's, which leaves the canary no baseline)
The table is printed at the end of the session (conftest.py) and written to
test-artifacts/fault_matrix.md.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

import pytest
from dagster import DagsterEventType, build_run_status_sensor_context
from release_pipelines.resources.migrations import MigrationRunner
from sqlalchemy import create_engine, text

from release_pipelines.core.states import ReleaseState
from tests.release_harness import Shop, promote_config, release_config, rollback_config, send_load
from tests.reliability.conftest import record
from tests.reliability.faults import (
    PgShop,
    build_pg_shop,
    columns,
    fingerprint,
    revision,
    terminate_backends,
    wait_for,
)

pytestmark = [pytest.mark.postgres, pytest.mark.slow]

KILL, PG, METRICS, CRASH = ("kill -9 of the run", "PostgreSQL restart", "metrics backend unreachable",
                            "service process crash")
DEADLINE = 3  # seconds: the staged manifest's canary deadline (on_deadline: rollback)


@pytest.fixture(scope="module")
def pg(postgres_server_url, tmp_path_factory):
    with pytest.MonkeyPatch.context() as monkeypatch:
        env, cleanup = build_pg_shop(monkeypatch, tmp_path_factory.mktemp("faults"), postgres_server_url,
                                     deadline_seconds=DEADLINE)
        try:
            yield env
        finally:
            cleanup()


@pytest.fixture(autouse=True)
def no_release_left_active(pg):
    """A failed cell must not poison the next: roll back whatever it left active (a baking
    release is the promote cell's hand-over to the contract cell that follows it)."""
    yield
    release = pg.shop.active()
    if release is not None and release.state not in (ReleaseState.CONTRACTING, ReleaseState.BAKING):
        pg.shop.run("rollback", rollback_config(release.id, "test cleanup"))


# ------------------------------------------------------------------------------------- helpers


def rollback_from_failure_sensor(shop: Shop, failed) -> object:
    """What the daemon does: evaluate the run-failure sensor on the failed run, execute its request."""
    run = shop.instance.get_run_by_id(failed.run_id)
    failure = next(e for e in failed.all_events if e.event_type == DagsterEventType.RUN_FAILURE)
    sensor = shop.defs.resolve_sensor_def(f"{shop.product.name}_rollback_on_failure")
    context = build_run_status_sensor_context(
        sensor_name=sensor.name, dagster_event=failure, dagster_instance=shop.instance, dagster_run=run
    ).for_run_failure()
    request = sensor(context)
    assert request.run_key == f"rollback:{failed.run_id}"
    return shop.run("rollback", request.run_config)


def during(run: Callable[[], object], condition: Callable[[], object], action: Callable[[], None],
           delay: float = 0.0) -> tuple[object, bool]:
    """Run in process while a watcher fires `action` once `condition` holds; (result, fired)."""
    done, fired = threading.Event(), threading.Event()

    def watch() -> None:
        try:
            wait_for(condition, 120, "the fault point", alive=lambda: not done.is_set())
        except AssertionError:
            return
        time.sleep(delay)
        action()
        fired.set()

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    try:
        result = run()
    finally:
        done.set()
        watcher.join(timeout=30)
    return result, fired.is_set()


def platform_doc(pg: PgShop) -> dict:
    return json.loads(pg.shop.platform.state.path.read_text())


def router_pid(pg: PgShop, service: str) -> int:
    return platform_doc(pg)["services"][service]["router"]["pid"]


def freeze_router(pg: PgShop, service: str) -> Callable[[], None]:
    pid = router_pid(pg, service)
    os.kill(pid, signal.SIGSTOP)
    return lambda: os.kill(pid, signal.SIGCONT)


def kill_canary(pg: PgShop, service: str, version: str) -> int:
    entry = platform_doc(pg)["services"][service]
    proc = next(p for p in [entry.get("canary"), *entry.get("retiring", [])] if p and p["version"] == version)
    os.kill(proc["pid"], signal.SIGKILL)
    return proc["pid"]


def to_canary(pg: PgShop, suffix: str = "") -> tuple[str, str]:
    version = pg.next_version(suffix)
    result = pg.shop.run("release", release_config({"orders": version}))
    assert result.success, pg.shop.failure_message(result)
    return pg.shop.active().id, version


def to_last_step(pg: PgShop) -> str:
    """A release at its last judged step: the next promote makes the canaries stable."""
    release_id, _ = to_canary(pg)
    assert pg.shop.run("promote", promote_config(release_id)).success
    return release_id


def approve_contract(pg: PgShop, release_id: str) -> None:
    from release_pipelines.steps.approval import approve

    approve(pg.shop.product.manifest, pg.shop.ledger, release_id, "contract", "alice", "fault matrix")


class LockedTable:
    """A reader holding ACCESS SHARE on a table: DDL on it waits (lock_timeout + retries)."""

    def __init__(self, url: str, table: str):
        self.engine = create_engine(url)
        self.conn = self.engine.connect()
        self.tx = self.conn.begin()
        self.conn.execute(text(f"lock table {table} in access share mode"))

    def release(self) -> None:
        self.tx.rollback()
        self.conn.close()
        self.engine.dispose()


def dead_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


# ------------------------------------------------------------------------------------- cells


@dataclass(frozen=True)
class Cell:
    fault: str
    step: str
    run: Callable[[PgShop], tuple[str, str]]  # -> (release id, how it was recovered)

    def __str__(self) -> str:
        return f"{self.fault}-{self.step}".replace(" ", "_")


def kill_release_at(condition_of: Callable[[PgShop], Callable[[], object]], suffix: str = "", delay: float = 0.0,
                    freeze: str | None = None):
    def run(pg: PgShop) -> tuple[str, str]:
        child = pg.child("release", release_config({"orders": pg.next_version(suffix)}))
        condition = condition_of(pg)
        thaw = None
        if freeze:
            wait_for(lambda: pg.has_event("deploy:done", service=freeze), 90, "orders deployed",
                     alive=lambda: child.poll() is None)
            thaw = freeze_router(pg, freeze)
        try:
            pg.kill_when(child, lambda: condition() and (time.sleep(delay) or True), "the fault point")
        finally:
            if thaw:
                thaw()
        release = pg.shop.active()
        last = pg.event_kinds(release.id)[-1]
        result = pg.shop.run("rollback", rollback_config(release.id, "run killed"))
        assert result.success, pg.shop.failure_message(result)
        return release.id, f"killed after `{last}`; rollback job"

    return run


def pg_restart_release_at(condition_of: Callable[[PgShop], Callable[[], object]], only_run: bool = False):
    def run(pg: PgShop) -> tuple[str, str]:
        prefix = "release:" if only_run else None
        urls = [pg.app_url] if only_run else [pg.app_url, pg.ledger_url]
        result, fired = during(
            lambda: pg.shop.run("release", release_config({"orders": pg.next_version()})),
            condition_of(pg), lambda: terminate_backends(urls, pg.admin_url, prefix))
        assert fired, "the fault was never injected"
        release = pg.shop.ledger.releases(pg.shop.product.name)[0]
        if result.success:
            assert pg.shop.run("rollback", rollback_config(release.id, "after the fault")).success
            return release.id, "run reconnected, reached canary; rollback job"
        rollback = rollback_from_failure_sensor(pg.shop, result)
        assert rollback.success, pg.shop.failure_message(rollback)
        return release.id, "run failed; failure sensor -> rollback"

    return run


def crash_during_deploy(pg: PgShop) -> tuple[str, str]:
    version = pg.next_version("+slow")
    result, fired = during(
        lambda: pg.shop.run("release", release_config({"orders": version})),
        lambda: pg.has_event("deploy:start", service="orders"),
        lambda: kill_canary(pg, "orders", version), delay=1.0)
    assert fired and not result.success
    assert "orders" in pg.shop.failure_message(result) and version in pg.shop.failure_message(result)
    release = pg.shop.ledger.releases(pg.shop.product.name)[0]
    rollback = rollback_from_failure_sensor(pg.shop, result)
    assert rollback.success, pg.shop.failure_message(rollback)
    return release.id, "deploy failed naming it; failure sensor -> rollback"


def crash_stable_at(condition_of: Callable[[PgShop], Callable[[], object]]):
    """The running stable crashes before the canary starts: the deploy must refuse (no baseline to
    judge against) instead of installing the new version with all traffic; rollback restarts it."""
    def run(pg: PgShop) -> tuple[str, str]:
        def kill_stable() -> None:
            os.kill(platform_doc(pg)["services"]["orders"]["stable"]["pid"], signal.SIGKILL)

        result, fired = during(lambda: pg.shop.run("release", release_config({"orders": pg.next_version()})),
                               condition_of(pg), kill_stable)
        assert fired and not result.success, "the release went on without a running stable"
        assert "is not running" in pg.shop.failure_message(result) and "no baseline" in pg.shop.failure_message(result)
        release = pg.shop.ledger.releases(pg.shop.product.name)[0]
        assert not pg.has_event("deploy:start", service="orders")
        rollback = rollback_from_failure_sensor(pg.shop, result)
        assert rollback.success, pg.shop.failure_message(rollback)
        return release.id, "stable killed; deploy refused (no baseline); failure sensor -> rollback restarts stable"

    return run


def crash_in_traffic_step(pg: PgShop) -> tuple[str, str]:
    release_id, version = to_canary(pg)
    kill_canary(pg, "orders", version)
    status = wait_for(lambda: (s := pg.shop.platform.status("orders")) and not s.healthy and s, 10, "status dead")
    assert f"canary {version} is not running" in status.detail
    cursor = None
    for _ in range(30):
        send_load(pg.shop, "orders", 200)
        tick = pg.shop.tick(cursor)
        cursor = tick.cursor
        if tick.run_requests:
            break
    [request] = tick.run_requests
    assert request.job_name == "shop_rollback"
    assert pg.shop.run("rollback", request.run_config).success
    return release_id, "status: canary not running; judge fails -> rollback"


def crash_before_promote(pg: PgShop) -> tuple[str, str]:
    release_id, version = to_canary(pg)
    kill_canary(pg, "orders", version)
    result = pg.shop.run("promote", promote_config(release_id))
    assert not result.success and "not running" in pg.shop.failure_message(result)
    rollback = rollback_from_failure_sensor(pg.shop, result)
    assert rollback.success, pg.shop.failure_message(rollback)
    return release_id, "promote refused (canary not running); failure sensor -> rollback"


def metrics_until_deadline(pg: PgShop, shop: Shop, release_id: str, names: str) -> str:
    """Ticks skip naming the dead backend, never pass; at the deadline on_deadline (rollback) acts."""
    started = time.monotonic()
    cursor = None
    while time.monotonic() - started < DEADLINE + 20:
        tick = shop.tick(cursor)
        cursor = tick.cursor
        if tick.run_requests:
            break
        assert names in tick.skip_message, tick.skip_message
        time.sleep(1)
    else:
        pytest.fail("no decision at the deadline")
    [request] = tick.run_requests
    assert request.job_name == "shop_rollback", "unreadable metrics must never promote"
    verdict = [e for e in pg.shop.ledger.events(release_id) if e.kind == "verdict"][-1]
    assert verdict.payload["decided_by"] != "evidence" and verdict.payload["verdict"] == "fail"
    assert pg.shop.run("rollback", request.run_config).success
    return f"sensor waited ({names} named), deadline -> rollback"


def prometheus_down(pg: PgShop) -> tuple[str, str]:
    release_id, _ = to_canary(pg)
    port = dead_port()
    with pytest.MonkeyPatch.context() as monkeypatch:
        monkeypatch.setenv("RELEASE_PROMETHEUS_URL", f"http://127.0.0.1:{port}")
        shop = Shop(pg.shop.home, pg.shop.manifest, instance=pg.shop.instance)
    return release_id, metrics_until_deadline(pg, shop, release_id, f"127.0.0.1:{port}")


def router_down(pg: PgShop) -> tuple[str, str]:
    release_id, _ = to_canary(pg)
    assert pg.shop.run("promote", promote_config(release_id)).success  # step 1 is judged before 100 %
    os.kill(router_pid(pg, "orders"), signal.SIGKILL)
    return release_id, metrics_until_deadline(pg, pg.shop, release_id, "router metrics")


def kill_final_promote(pg: PgShop) -> tuple[str, str]:
    release_id = to_last_step(pg)
    thaw = freeze_router(pg, "orders")  # the promotion's router update hangs: a window to kill in
    try:
        child = pg.child("promote", promote_config(release_id))
        pg.kill_when(child, lambda: pg.has_event("promote:start", service="orders") and (time.sleep(0.5) or True),
                     "promote:start")
    finally:
        thaw()
    assert pg.shop.ledger.get(release_id).state is ReleaseState.PROMOTING
    result = pg.shop.run("promote", promote_config(release_id))  # re-execution finishes the promotion
    assert result.success, pg.shop.failure_message(result)
    assert pg.shop.ledger.get(release_id).state is ReleaseState.BAKING
    assert pg.shop.stable("orders") == pg.shop.ledger.get(release_id).versions["orders"]
    return release_id, "killed in `promoting`; re-run promote -> baking"


def pg_restart_final_promote(pg: PgShop) -> tuple[str, str]:
    release_id = to_last_step(pg)
    result, fired = during(lambda: pg.shop.run("promote", promote_config(release_id)),
                           lambda: pg.has_event("promote:start", service="orders"),
                           lambda: terminate_backends([pg.app_url, pg.ledger_url], pg.admin_url))
    assert fired
    how = "run reconnected -> baking"
    if not result.success:
        assert pg.shop.run("promote", promote_config(release_id)).success
        how = "run failed; re-run promote -> baking"
    assert pg.shop.ledger.get(release_id).state is ReleaseState.BAKING
    return release_id, how


def contract_with_fault(inject: str) -> Callable[[PgShop], tuple[str, str]]:
    def run(pg: PgShop) -> tuple[str, str]:
        release = pg.shop.active()
        assert release is not None and release.state is ReleaseState.BAKING, "the promote cell leaves one baking"
        if revision(pg.app_url) == "0006_drop_legacy_code":  # an earlier contract cell ran it: step back
            MigrationRunner(pg.product_dir / "migrations", pg.app_url).downgrade("0005_currency_not_null")
        approve_contract(pg, release.id)
        time.sleep(1.2)  # bake_seconds: 1
        lock = LockedTable(pg.app_url, "products")  # the drop waits: lock_timeout, retries
        try:
            if inject == KILL:
                child = pg.child("contract", {"ops": {"contract_migrations": {"config": {"release_id": release.id}}}})
                pg.kill_when(child, lambda: pg.has_event("migrate:contract:start") and (time.sleep(1.0) or True),
                             "migrate:contract:start")
                first = "killed in `contracting`"
            else:
                result, fired = during(
                    lambda: pg.shop.run("contract", {"ops": {"contract_migrations": {"config": {"release_id": release.id}}}}),
                    lambda: pg.has_event("migrate:contract:start"),
                    lambda: terminate_backends([pg.app_url], pg.admin_url, "release:"), delay=1.0)
                assert fired and not result.success
                rollback = rollback_from_failure_sensor(pg.shop, result)
                assert not rollback.success and "point of no return" in pg.shop.failure_message(rollback)
                first = "contract failed; failure sensor's rollback refused (point of no return)"
        finally:
            lock.release()
        assert pg.shop.ledger.get(release.id).state is ReleaseState.CONTRACTING
        result = pg.shop.run("contract", {"ops": {"contract_migrations": {"config": {"release_id": release.id}}}})
        assert result.success, pg.shop.failure_message(result)
        assert revision(pg.app_url) == "0006_drop_legacy_code"
        return release.id, f"{first}; re-run contract -> completed"

    return run


def event(kind: str, **match):
    return lambda pg: (lambda: pg.has_event(kind, **match))


def release_exists(pg: PgShop):
    return lambda: pg.shop.active()


def backfilling(pg: PgShop):
    return pg.backfill_running


CELLS = [
    Cell(KILL, "preflight", kill_release_at(release_exists)),
    Cell(KILL, "expand migration", kill_release_at(event("migrate:start"))),
    Cell(KILL, "backfill", kill_release_at(backfilling, delay=0.2)),
    Cell(KILL, "gate", kill_release_at(event("gate"))),
    Cell(KILL, "canary deploy", kill_release_at(event("deploy:start", service="orders"), "+slow", delay=1.0)),
    Cell(KILL, "traffic step", kill_release_at(event("traffic:start"), delay=0.5, freeze="orders")),
    Cell(PG, "preflight", pg_restart_release_at(release_exists)),
    Cell(PG, "expand migration", pg_restart_release_at(event("migrate:start"), only_run=True)),
    Cell(PG, "backfill", pg_restart_release_at(backfilling, only_run=True)),
    Cell(PG, "gate", pg_restart_release_at(event("gate"))),
    Cell(PG, "canary deploy", pg_restart_release_at(event("deploy:start", service="orders"))),
    Cell(PG, "traffic step", pg_restart_release_at(event("traffic:start"))),
    Cell(CRASH, "preflight", crash_stable_at(release_exists)),
    Cell(CRASH, "expand migration", crash_stable_at(event("migrate:start"))),
    Cell(CRASH, "backfill", crash_stable_at(backfilling)),
    Cell(CRASH, "gate", crash_stable_at(event("gate"))),
    Cell(CRASH, "canary deploy", crash_during_deploy),
    Cell(CRASH, "traffic step", crash_in_traffic_step),
    Cell(CRASH, "promote", crash_before_promote),
    Cell(METRICS, "traffic step", prometheus_down),
    Cell(METRICS, "promote", router_down),
    Cell(KILL, "promote", kill_final_promote),
    Cell(KILL, "contract", contract_with_fault(KILL)),
    Cell(PG, "promote", pg_restart_final_promote),
    Cell(PG, "contract", contract_with_fault(PG)),
]

NOT_APPLICABLE = {
    (METRICS, step): "n/a: no metrics are read (only the canary sensor reads them, in canary steps)"
    for step in ("preflight", "expand migration", "backfill", "gate", "canary deploy", "contract")
} | {
    (CRASH, "contract"): "n/a: contract touches only the database; the canaries are gone by then",
}


def test_not_applicable_cells_are_recorded() -> None:
    for (fault, step), reason in NOT_APPLICABLE.items():
        record(fault, step, reason)


@pytest.mark.parametrize("cell", CELLS, ids=str)
def test_fault_cell(pg: PgShop, cell: Cell) -> None:
    before_fp, before_rev, before_cols = fingerprint(pg.app_url), revision(pg.app_url), columns(pg.app_url)
    try:
        release_id, how = cell.run(pg)
        release = pg.shop.ledger.get(release_id)
        assert release.state in (ReleaseState.COMPLETED, ReleaseState.ROLLED_BACK, ReleaseState.BAKING), release.state
        assert fingerprint(pg.app_url) == before_fp, "rows or their content changed"
        if release.state is ReleaseState.ROLLED_BACK:
            assert revision(pg.app_url) == before_rev and columns(pg.app_url) == before_cols, \
                "rollback did not restore the previous schema"
            status = pg.shop.platform.status("orders")
            assert status.canary_version is None and status.healthy, status
        assert pg.shop.ledger.verify().ok
    except BaseException as exc:
        record(cell.fault, cell.step, f"FAILED: {str(exc).splitlines()[0][:80] if str(exc) else type(exc).__name__}")
        raise
    record(cell.fault, cell.step, f"{release.state.value} ({how}); data + chain ok")
