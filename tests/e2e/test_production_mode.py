"""Production mode end to end: PostgreSQL instance (the project's dagster.yaml), `dagster-webserver`
and `dagster-daemon` as separate processes, releases launched over GraphQL and with the
`release launch|status|rollback` CLI, the daemon's sensors promoting and rolling back.

The tests in this module run in order and share one webserver/daemon pair, one Dagster storage
database and one ledger + shop database (all fresh, dropped at the end):

1. first install (all services 1.0.0) through GraphQL;
2. catalog + orders 1.1.0, and a second release of the same product while it runs: the run queue
   holds it (tag limit release/product = 1) and its preflight then refuses it ("already active");
   the daemon's canary sensor judges live traffic and promotes;
3. orders 1.2.0+bad (~5 % errors): the daemon rolls it back; seconds measured;
4. the CLI against the live webserver; runs and events are in Postgres; SIGTERM stops both servers.

Figures are printed (run with -s to see them) and written to test-artifacts/production-mode.json.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
from sqlalchemy import create_engine, text

from tests.e2e_support import (
    EXAMPLE_MANIFEST,
    ROOT,
    BackgroundLoad,
    DagsterServers,
    kill_processes,
    processes_with_env,
    stop_platform,
    write_instance,
)

pytestmark = [pytest.mark.slow, pytest.mark.postgres]

LOCATION = "release_pipelines"
FIRST = {"catalog": "1.0.0", "orders": "1.0.0", "frontend": "1.0.0"}
GOOD = {"catalog": "1.1.0", "orders": "1.1.0"}
BAD = {"orders": "1.2.0+bad"}
RUN_TIMEOUT = 240.0
PROMOTE_TIMEOUT = 180.0  # how long the good release may take to be promoted before we stop waiting
ROLLBACK_TIMEOUT = 120.0
FINAL_RUN = {"SUCCESS", "FAILURE", "CANCELED"}

FIGURES: dict[str, object] = {}

# The commands as `release launch|status|rollback` will expose them (cli.py registers them).
CLI = """
import click
from release_pipelines.cli.remote import launch_command, rollback_command, status_command
group = click.Group("release", commands={"launch": launch_command, "status": status_command,
                                         "rollback": rollback_command})
group(prog_name="release")
"""


# Runs this test launches execute their steps in one process: on a loaded 2-CPU machine each step
# subprocess costs 5-10 s of imports. The runs the daemon's sensors request (promote, rollback)
# keep the jobs' default multiprocess executor, so that path is exercised too.
IN_PROCESS = {"execution": {"config": {"in_process": {}}}}


def release_config(versions: dict[str, str]) -> dict:
    return {"ops": {"preflight": {"config": {"versions": versions}}}} | IN_PROCESS


class Prod:
    """The running production-mode stack of this module."""

    def __init__(self, servers: DagsterServers, env: dict[str, str], dagster_db: str, release_home: Path):
        from dagster_graphql import DagsterGraphQLClient
        from release_pipelines.resources.ledger import Ledger

        self.servers, self.env, self.dagster_db, self.release_home = servers, env, dagster_db, release_home
        self.client = DagsterGraphQLClient("127.0.0.1", port_number=servers.port)
        self.ledger = Ledger(env["RELEASE_LEDGER_URL"])
        self.load: BackgroundLoad | None = None

    def submit(self, job: str, run_config: dict) -> str:
        return self.client.submit_job_execution(job, repository_location_name=LOCATION, run_config=run_config)

    def status(self, run_id: str) -> str:
        return self.client.get_run_status(run_id).value

    def wait_run(self, run_id: str, timeout: float = RUN_TIMEOUT) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            status = self.status(run_id)
            if status in FINAL_RUN:
                return status
            time.sleep(1.0)
        raise AssertionError(f"run {run_id} still {self.status(run_id)} after {timeout:.0f} s\n"
                             f"{self.servers.log_tail('daemon')}")

    def wait_state(self, release_id: str, states: set[str], timeout: float) -> str:
        deadline = time.monotonic() + timeout
        state = self.ledger.get(release_id).state.value
        while state not in states and time.monotonic() < deadline:
            time.sleep(0.5)
            state = self.ledger.get(release_id).state.value
        return state

    def graphql(self, query: str, variables: dict) -> dict:
        response = httpx.post(f"{self.servers.url}/graphql", json={"query": query, "variables": variables}, timeout=30)
        response.raise_for_status()
        body = response.json()
        assert "errors" not in body, body
        return body["data"]

    def sensor_ticks(self, sensor: str, limit: int = 500) -> list[dict]:
        data = self.graphql(
            """query Ticks($selector: SensorSelector!, $limit: Int) {
                 sensorOrError(sensorSelector: $selector) {
                   __typename
                   ... on Sensor { minIntervalSeconds sensorState { status ticks(limit: $limit) {
                       status timestamp skipReason runIds error { message } } } }
                 } }""",
            {"selector": {"repositoryLocationName": LOCATION, "repositoryName": "__repository__", "sensorName": sensor},
             "limit": limit},
        )["sensorOrError"]
        assert data["__typename"] == "Sensor", data
        FIGURES[f"{sensor}_interval_seconds"] = data["minIntervalSeconds"]
        return data["sensorState"]["ticks"]

    def runs_of(self, job: str) -> list[dict]:
        data = self.graphql(
            """query Runs($filter: RunsFilter) { runsOrError(filter: $filter) { __typename
                 ... on Runs { results { runId status jobName tags { key value } } } } }""",
            {"filter": {"pipelineName": job}},
        )["runsOrError"]
        return data["results"]

    def cli(self, *args: str, timeout: float = 120) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-c", CLI, *args], check=False, capture_output=True, text=True,
                              env=self.env | {"COLUMNS": "200"}, cwd=ROOT, timeout=timeout)


@pytest.fixture(scope="module")
def prod(make_database, tmp_path_factory) -> Prod:
    dagster_db = make_database("rp_e2e_dagster")
    app_db = make_database("rp_e2e_app")  # ledger tables and the shop's tables side by side
    base = tmp_path_factory.mktemp("production")
    dagster_home, release_home = base / "dagster_home", base / "release_home"
    release_home.mkdir()
    write_instance(dagster_home, postgres=True)
    env = os.environ | {
        "DAGSTER_HOME": str(dagster_home),
        "DAGSTER_PG_URL": dagster_db,
        "RELEASE_HOME": str(release_home),
        "RELEASE_LEDGER_URL": app_db,
        "SHOP_DB_URL": app_db,
        "RELEASE_MANIFESTS": str(EXAMPLE_MANIFEST),
        "RELEASE_ACTOR": "e2e-test",
    }
    env.pop("RELEASE_PROMETHEUS_URL", None)
    servers = DagsterServers(env=env, log_dir=base / "logs")
    stack = None
    try:
        started = time.monotonic()
        servers.start()
        FIGURES["servers_ready_seconds"] = round(time.monotonic() - started, 1)
        stack = Prod(servers, env, dagster_db, release_home)
        yield stack
    finally:
        if stack is not None and stack.load is not None:
            stack.load.stop()
        codes = servers.stop()
        FIGURES["server_exit_codes"] = codes
        FIGURES["server_children_alive_15s_after_sigterm"] = servers.leftover_commands
        stop_platform(release_home)
        leftovers = processes_with_env("RELEASE_HOME", str(release_home))
        kill_processes(leftovers)
        FIGURES["leftover_processes"] = len(leftovers)
        out = ROOT / "test-artifacts"
        out.mkdir(exist_ok=True)
        (out / "production-mode.json").write_text(json.dumps(FIGURES, indent=2, default=str))
        print("\nproduction-mode figures:", json.dumps(FIGURES, indent=2, default=str))
        assert codes.get("webserver") is not None and codes.get("daemon") is not None, \
            f"a server did not stop on SIGTERM: {codes}"
        assert not leftovers, f"processes left behind: {[p.pid for p in leftovers]}"


def test_first_install_through_graphql(prod: Prod):
    started = time.monotonic()
    run_id = prod.submit("shop_release", release_config(FIRST))
    assert prod.wait_run(run_id) == "SUCCESS", prod.servers.log_tail("daemon")
    FIGURES["first_install_run_seconds"] = round(time.monotonic() - started, 1)
    assert prod.ledger.stable_versions("shop") == FIRST
    assert prod.ledger.active_release("shop") is None
    runs = {r["runId"]: r for r in prod.runs_of("shop_release")}
    tags = {t["key"]: t["value"] for t in runs[run_id]["tags"]}
    assert tags["release/product"] == "shop"
    prod.load = BackgroundLoad(prod.release_home).start()


def test_second_release_is_queued_then_refused_and_canary_promoted(prod: Prod):
    first = prod.submit("shop_release", release_config(GOOD))
    # the second launch goes in at once: the first (ahead in the queue) may finish within the few
    # seconds the CLI takes, so waiting for it to start first made the overlap a race
    second = prod.cli("launch", str(EXAMPLE_MANIFEST), "--version", "frontend=1.1.0", "--in-process",
                      "--port", str(prod.servers.port), "--workspace", str(ROOT / "workspace.yaml"))
    assert second.returncode == 0, second.stderr
    second_run = second.stdout.strip().splitlines()[-1]
    seen = set()
    while prod.status(first) not in FINAL_RUN:
        seen.add(prod.status(second_run))
        time.sleep(0.5)
    assert prod.status(first) == "SUCCESS", prod.servers.log_tail("daemon")
    FIGURES["second_release_status_while_first_ran"] = sorted(seen)
    assert "QUEUED" in seen, f"the run queue did not hold the second release: {seen}"

    assert prod.wait_run(second_run) == "FAILURE"
    refusals = [e for e in prod.ledger.events() if e.kind == "launch:refused" and e.run_id == second_run]
    assert refusals and "already active" in refusals[0].payload["reason"], refusals
    shown = prod.cli("status", second_run)
    assert shown.returncode == 0 and "refused" in shown.stdout and "already active" in shown.stdout, shown

    release = prod.ledger.active_release("shop")
    assert release is not None and release.versions == GOOD
    FIGURES["good_release_id"] = release.id
    shown = prod.cli("status", release.id)
    assert shown.returncode == 0 and release.id in shown.stdout, shown.stderr

    started = time.monotonic()
    # Promoted through every step = baking (its contract revision then waits for shop_contract) or completed.
    state = prod.wait_state(release.id, {"baking", "completed", "rolled_back", "failed"}, PROMOTE_TIMEOUT)
    FIGURES["good_release_final_state"] = state
    FIGURES["good_release_seconds_canary_to_final"] = round(time.monotonic() - started, 1)
    ticks = prod.sensor_ticks("shop_canary")
    FIGURES["canary_sensor_ticks_so_far"] = len(ticks)
    FIGURES["good_release_last_ticks"] = [f"{t['status']}: {t['skipReason'] or t['runIds']}" for t in ticks[:4]]
    promotes = [r for r in prod.runs_of("shop_promote")
                if {"key": "release/id", "value": release.id} in r["tags"]]
    FIGURES["good_release_promote_runs"] = len(promotes)
    FIGURES["load_requests_by_version"] = {f"{s} {v}": n for (s, v), n in sorted(prod.load.requests.items())}
    FIGURES["load_errors_by_version"] = {f"{s} {v}": n for (s, v), n in sorted(prod.load.errors.items())}
    assert ticks, "the daemon never ticked the canary sensor"
    assert not any(t["error"] for t in ticks), [t["error"] for t in ticks if t["error"]]
    verdicts = [e.payload for e in prod.ledger.events(release.id) if e.kind == "verdict"]
    assert state not in ("rolled_back", "failed"), f"the good release ended {state}: {verdicts}"
    if state in ("baking", "completed"):  # the daemon's sensor judged and promoted every step
        assert promotes and all(r["status"] == "SUCCESS" for r in promotes)
        from release_pipelines.resources.local_platform import LocalPlatform
        from release_pipelines.resources.manifest_files import load_product

        platform = LocalPlatform(load_product(EXAMPLE_MANIFEST).manifest, EXAMPLE_MANIFEST.parent,
                                 prod.release_home / "platform" / "shop")
        assert {s: platform.status(s).stable_version for s in GOOD} == GOOD
    else:  # the judge had not reached PASS within the budget: the sensor must say why it waits
        assert any("step" in (t["skipReason"] or "") for t in ticks), FIGURES["good_release_last_ticks"]
    if state != "completed":  # end it so the bad release can start (after promotion: services only)
        rollback = prod.cli("rollback", release.id, "--reason", "e2e: make room for the bad release",
                            "--port", str(prod.servers.port))
        assert rollback.returncode == 0, rollback.stderr
        assert prod.wait_run(rollback.stdout.strip().splitlines()[-1]) == "SUCCESS"
        assert prod.wait_state(release.id, {"rolled_back"}, 30) == "rolled_back"


def test_bad_canary_is_rolled_back_by_the_daemon(prod: Prod):
    assert prod.load is not None
    stable_before = prod.ledger.stable_versions("shop")
    run_id = prod.submit("shop_release", release_config(BAD))
    assert prod.wait_run(run_id) == "SUCCESS", prod.servers.log_tail("daemon")
    release = prod.ledger.active_release("shop")
    assert release is not None and release.versions == BAD
    key = ("orders", BAD["orders"])
    deadline = time.monotonic() + 30
    while key not in prod.load.first_seen and time.monotonic() < deadline:
        time.sleep(0.1)
    assert key in prod.load.first_seen, "the bad canary never got traffic"
    first_traffic = prod.load.first_seen[key]

    from release_pipelines.resources.local_platform import LocalPlatform
    from release_pipelines.resources.manifest_files import load_product

    platform = LocalPlatform(load_product(EXAMPLE_MANIFEST).manifest, EXAMPLE_MANIFEST.parent,
                             prod.release_home / "platform" / "shop")
    deadline = first_traffic + ROLLBACK_TIMEOUT
    while time.monotonic() < deadline:
        status = platform.status("orders")
        if status.canary_version is None and status.stable_version == stable_before["orders"]:
            break
        time.sleep(0.2)
    all_stable = time.monotonic()
    status = platform.status("orders")
    assert status.canary_version is None and status.stable_version == stable_before["orders"], status
    FIGURES["bad_canary_first_traffic_to_100pct_stable_seconds"] = round(all_stable - first_traffic, 1)
    FIGURES["bad_canary_requests"] = prod.load.requests[key]
    FIGURES["bad_canary_errors"] = prod.load.errors[key]
    assert prod.wait_state(release.id, {"rolled_back"}, 60) == "rolled_back"
    kinds = [e.kind for e in prod.ledger.events(release.id)]
    assert "verdict" in kinds and "state:rolled_back" in kinds, kinds
    verdict = next(e for e in prod.ledger.events(release.id) if e.kind == "verdict")
    assert verdict.payload["verdict"] == "fail" and verdict.actor == "canary-sensor"
    FIGURES["bad_canary_first_traffic_to_fail_verdict_seconds"] = round(
        verdict.created_at.timestamp() - prod.load.first_seen_wall[key], 1)
    FIGURES["bad_canary_verdict"] = verdict.payload.get("reason", "")[:300]
    rollbacks = [r for r in prod.runs_of("shop_rollback") if {"key": "release/id", "value": release.id} in r["tags"]]
    assert rollbacks, "no rollback run for the bad release"
    assert prod.wait_run(rollbacks[0]["runId"]) == "SUCCESS"
    FIGURES["bad_canary_rollback_run_seconds_total"] = round(time.monotonic() - first_traffic, 1)
    requested = {rid for t in prod.sensor_ticks("shop_canary") for rid in t["runIds"]}
    assert rollbacks[0]["runId"] in requested, "the rollback was not requested by the canary sensor"
    follow = prod.cli("status", release.id, "--follow", "--timeout", "20")
    assert follow.returncode == 0 and "rolled_back" in follow.stdout, follow.stderr
    prod.load.stop()
    prod.load = None


def test_cli_errors_are_clear(prod: Prod):
    unreachable = prod.cli("launch", str(EXAMPLE_MANIFEST), "--version", "orders=1.3.0", "--port", "1")
    assert unreachable.returncode == 2
    assert "not reachable" in unreachable.stderr and "dagster-webserver" in unreachable.stderr
    assert "Traceback" not in unreachable.stderr
    unknown = prod.cli("launch", str(EXAMPLE_MANIFEST), "--version", "payments=1.0.0", "--port", str(prod.servers.port))
    assert unknown.returncode == 2 and "payments" in unknown.stderr and "Traceback" not in unknown.stderr
    missing = prod.cli("status", "shop-19700101-nope")
    assert missing.returncode == 2 and "no release" in missing.stderr and "Traceback" not in missing.stderr
    rollback_missing = prod.cli("rollback", "shop-19700101-nope", "--port", str(prod.servers.port))
    assert rollback_missing.returncode == 2 and "Traceback" not in rollback_missing.stderr


def test_runs_and_events_are_in_postgres(prod: Prod):
    engine = create_engine(prod.dagster_db)
    try:
        with engine.connect() as conn:
            runs = dict(conn.execute(text("select pipeline_name, count(*) from runs group by pipeline_name")).all())
            events = conn.execute(text("select count(*) from event_logs")).scalar_one()
            checks = conn.execute(text("select count(*) from asset_check_executions")).scalar_one()
            ticks = conn.execute(text("select count(*) from job_ticks")).scalar_one()
    finally:
        engine.dispose()
    FIGURES["postgres_runs_by_job"] = runs
    FIGURES["postgres_event_log_rows"] = events
    assert runs.get("shop_release", 0) >= 4 and runs.get("shop_rollback", 0) >= 1, runs
    assert events > 100 and checks > 0 and ticks > 0
