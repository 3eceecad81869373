"""How the jobs are built for a fast load and cheap steps (issue 19): one op definition per kind of
per-service step, invoked once per service so the graph still shows the waves; the release job's
multiprocess steps fork from a forkserver that preloaded the code location."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from dagster import Definitions

from release_pipelines.orchestration.definitions import build_definitions
from release_pipelines.orchestration.jobs.release import PRELOAD_MODULES, release_executor

ROOT = Path(__file__).resolve().parents[2]


def _upstream(graph, node: str) -> set[str]:
    return {o.node_name for o in graph.dependency_structure.all_upstream_outputs_from_node(node)}


def test_per_service_steps_share_one_definition_and_keep_the_waves() -> None:
    defs = build_definitions(ROOT / "examples" / "shop")
    Definitions.validate_loadable(defs)
    release = defs.resolve_job_def("shop_release").graph
    deploys = {release.node_named(f"deploy_{s}").definition for s in ("catalog", "orders", "frontend")}
    assert [d.name for d in deploys] == ["shop__deploy"]
    assert {"deploy_catalog", "gate_shop_db", "preflight"} <= _upstream(release, "deploy_orders")
    assert {"deploy_catalog", "deploy_orders", "deploy_frontend", "gate_shop_db"} <= _upstream(release, "start_canary")
    rollback = defs.resolve_job_def("shop_rollback").graph
    assert rollback.node_named("revert_orders").definition is rollback.node_named("revert_catalog").definition
    assert rollback.node_named("revert_shop_db").definition.name == "shop__revert_shop_db"
    # reverse order: catalog is reverted after orders (which depends on it), the database last
    assert "revert_orders" in _upstream(rollback, "revert_catalog")
    assert "revert_catalog" in _upstream(rollback, "revert_shop_db")


def test_release_executor_defaults_to_forkserver_and_run_config_still_chooses() -> None:
    schema = release_executor.config_schema

    def resolved(config: dict) -> dict:
        from dagster._config import process_config

        processed = process_config(schema.as_field().config_type, config)
        assert processed.success, processed.errors
        result = schema.resolve_config({"config": processed.value})  # as Dagster passes executor config
        assert result.success, result.errors
        return result.value["config"]

    forkserver = {"forkserver": {"preload_modules": PRELOAD_MODULES}}
    chosen = resolved({"multiprocess": {"max_concurrent": 2}})["multiprocess"]
    assert chosen["start_method"] == forkserver and chosen["max_concurrent"] == 2
    spawn = resolved({"multiprocess": {"start_method": {"spawn": {}}}})
    assert spawn["multiprocess"]["start_method"] == {"spawn": {}}
    assert "in_process" in resolved({"in_process": {}})


SERVICE = """\
  - name: {name}
    depends_on: [{deps}]
    deploy:
      command:
        deploy: ["/bin/true", "{{service}}", "{{version}}"]
        set_weight: ["/bin/true", "{{service}}", "{{weight}}"]
        promote: ["/bin/true", "{{service}}"]
        abort: ["/bin/true", "{{service}}"]
"""

RUN = """\
import sys
from dagster import DagsterInstance, execute_job
from dagster._core.definitions.reconstruct import ReconstructableRepository

from release_pipelines.orchestration.dagster_resources import LedgerResource

job = ReconstructableRepository.for_module("release_pipelines.code_location", "defs", sys.argv[1]) \\
    .get_reconstructable_job("forked_release")
config = {"ops": {"preflight": {"config": {"versions": {"fk-api": "1.0.0", "fk-web": "1.0.0"}}}},
          "execution": {"config": {"multiprocess": {"max_concurrent": 2}}}}
with DagsterInstance.get() as instance, execute_job(job, instance=instance, run_config=config) as result:
    assert result.success, [e.message for e in result.all_events if e.is_failure]
    steps = {e.step_key for e in result.all_events if e.event_type_value == "STEP_SUCCESS"}
    release_id = instance.get_run_by_id(result.run_id).tags["release/id"]
print(sorted(steps), LedgerResource().open().get(release_id).state.value)
"""


@pytest.mark.slow  # a fresh interpreter runs the job: about a minute
def test_release_job_runs_its_steps_from_the_forkserver(tmp_path) -> None:
    """A real multiprocess run of the release job, reconstructed from the code location module as a
    run worker does (in a fresh interpreter, so no forkserver of another test is reused)."""
    manifest = tmp_path / "release.yaml"
    manifest.write_text("product: forked\nplatform: command\nservices:\n"
                        + SERVICE.format(name="fk-api", deps="") + SERVICE.format(name="fk-web", deps="fk-api"))
    (tmp_path / "dagster").mkdir()
    (tmp_path / "dagster" / "dagster.yaml").write_text("telemetry:\n  enabled: false\n")
    env = {**os.environ, "RELEASE_MANIFESTS": str(manifest), "RELEASE_HOME": str(tmp_path / "home"),
           "DAGSTER_HOME": str(tmp_path / "dagster")}
    env.pop("RELEASE_LEDGER_URL", None)
    result = subprocess.run([sys.executable, "-c", RUN, str(ROOT)], check=False, capture_output=True, text=True, env=env,
                            cwd=ROOT, timeout=600)
    assert result.returncode == 0, result.stdout + result.stderr
    # first installs only: the release completes at the first traffic step
    assert "['deploy_fk_api', 'deploy_fk_web', 'preflight', 'start_canary'] completed" in result.stdout
