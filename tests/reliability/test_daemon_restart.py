"""R9, the Dagster daemon SIGKILLed during a canary step and started again: a real
`dagster-webserver` and `dagster-daemon` on a PostgreSQL instance judge a canary under load; the
daemon is killed right after its canary sensor recorded a decision (the step's run request may or
may not have reached the queue). After the restart the sensor's cursor carries on: the release is
promoted through every step (no decision lost), each step decided once, and no promote run is
started twice for a step (a repeated run key is dropped by Dagster; a stale one would fail its
expected_step check)."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import psutil
import pytest
from release_pipelines.resources.ledger import Ledger

from tests.conftest import _create_database, _drop_database
from tests.e2e_support import (
    EXAMPLE_MANIFEST,
    BackgroundLoad,
    DagsterServers,
    dagster_bin,
    kill_processes,
    processes_with_env,
    stop_platform,
    write_instance,
)

pytestmark = [pytest.mark.slow, pytest.mark.postgres]

FIRST = {"catalog": "1.0.0", "orders": "1.0.0", "frontend": "1.0.0"}
GOOD = {"catalog": "1.1.0", "orders": "1.1.0"}
IN_PROCESS = {"execution": {"config": {"in_process": {}}}}
FINAL_RUN = {"SUCCESS", "FAILURE", "CANCELED"}


def wait(condition, timeout: float, what: str, servers: DagsterServers, poll: float = 0.5):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = condition()
        if found:
            return found
        time.sleep(poll)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}\n{servers.log_tail('daemon')}")


def test_daemon_sigkill_during_a_canary_step(postgres_server_url: str, tmp_path: Path) -> None:
    from dagster_graphql import DagsterGraphQLClient  # lazy: only this test talks GraphQL

    dagster_db = _create_database(postgres_server_url, "rp_r9_dagster")
    app_db = _create_database(postgres_server_url, "rp_r9_app")
    dagster_home, release_home = tmp_path / "dagster_home", tmp_path / "release_home"
    release_home.mkdir()
    write_instance(dagster_home, postgres=True)
    env = os.environ | {"DAGSTER_HOME": str(dagster_home), "DAGSTER_PG_URL": dagster_db,
                        "RELEASE_HOME": str(release_home), "RELEASE_LEDGER_URL": app_db, "SHOP_DB_URL": app_db,
                        "RELEASE_MANIFESTS": str(EXAMPLE_MANIFEST), "RELEASE_ACTOR": "r9-test"}
    env.pop("RELEASE_PROMETHEUS_URL", None)
    servers = DagsterServers(env=env, log_dir=tmp_path / "logs")
    load = None
    orphans: list[psutil.Process] = []
    ledger = Ledger(app_db)
    try:
        servers.start()
        client = DagsterGraphQLClient("127.0.0.1", port_number=servers.port)

        def run(versions: dict[str, str]) -> str:
            run_id = client.submit_job_execution(
                "shop_release", repository_location_name="release_pipelines",
                run_config={"ops": {"preflight": {"config": {"versions": versions}}}} | IN_PROCESS)
            status = wait(lambda: (s := client.get_run_status(run_id).value) in FINAL_RUN and s, 300,
                          f"run {run_id}", servers)
            if status != "SUCCESS":
                print(f"\nrun {run_id} {status}:", client._execute(  # the client has no query for a run's failure
                    """query($id: ID!) { runOrError(runId: $id) { ... on Run { eventConnection { events {
                         __typename ... on MessageEvent { message } ... on ErrorEvent { error { message } } } } } } }""",
                    {"id": run_id})["runOrError"]["eventConnection"]["events"][-6:])
            return status

        def last_events() -> list[str]:
            return [f"{e.kind} {str(e.payload)[:300]}" for e in ledger.events()[-4:]]

        assert run(FIRST) == "SUCCESS", last_events()
        load = BackgroundLoad(release_home).start()
        assert run(GOOD) == "SUCCESS", last_events()
        release = ledger.active_release("shop")
        assert release is not None and release.state.value == "canary"

        def verdicts() -> list[dict]:
            return [e.payload for e in ledger.events(release.id) if e.kind == "verdict"]

        wait(verdicts, 240, "the canary sensor's first decision", servers, poll=0.05)
        orphans = psutil.Process(servers.daemon.pid).children(recursive=True)
        servers.daemon.send_signal(signal.SIGKILL)
        servers.daemon.wait(timeout=30)
        killed_after = [v["step"] for v in verdicts()]
        servers.daemon = servers._start("daemon", [dagster_bin("dagster-daemon"), "run", "-w", str(servers.workspace)])

        state = wait(lambda: (s := ledger.get(release.id).state.value) in {"baking", "completed", "rolled_back",
                                                                          "failed"} and s,
                     420, "the release promoted after the restart", servers)
        decided = [v["step"] for v in verdicts()]

        def promote_runs() -> list[dict]:
            return [r for r in client._execute(  # the client has no runs query
                """query { runsOrError(filter: {pipelineName: "shop_promote"}) { ... on Runs {
                     results { runId status tags { key value } } } } }""")["runsOrError"]["results"]
                    if {"key": "release/id", "value": release.id} in r["tags"]]

        runs = wait(lambda: (rs := promote_runs()) and all(r["status"] in FINAL_RUN for r in rs) and rs, 120,
                    "the promote runs to finish", servers)
        run_keys = [next((t["value"] for t in r["tags"] if t["key"] == "dagster/run_key"), r["runId"]) for r in runs]
        print(f"\nR9 daemon restart: killed after decisions {killed_after}; decisions {decided}; "
              f"promote runs {[(k, r['status']) for k, r in zip(run_keys, runs, strict=True)]}; final {state}")
        assert state in ("baking", "completed"), f"release ended {state}\n{servers.log_tail('daemon')}"
        assert len(run_keys) == len(set(run_keys)), f"a promote run was started twice: {run_keys}"
        assert all(r["status"] == "SUCCESS" for r in runs), runs
        steps = [k for k in run_keys if k.endswith(":promote")]
        assert sorted(set(decided)) == list(range(len(steps))), (decided, run_keys)  # every step decided
        assert ledger.verify().ok
        assert len(decided) == len(set(decided)), f"a step's decision was recorded twice: {decided}"
    finally:
        if load is not None:
            load.stop()
        servers.stop()
        kill_processes([p for p in orphans if p.is_running()])
        stop_platform(release_home)
        kill_processes(processes_with_env("RELEASE_HOME", str(release_home)))
        ledger.close()
        for url in (app_db, dagster_db):
            _drop_database(postgres_server_url, url)
