"""R9, the clock jumps: the machine's clock is moved across the end of a release window between two
steps of a release (frozen and moved in this process with time-machine, never the machine's). The
window is judged at the time the ledger recorded the launch, not at the jumped clock: a release
launched inside the window still promotes after a jump past its end, and one launched with
break-glass after the end still waits for its approval when the clock jumps back inside."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import time_machine
from dagster import DagsterInstance
from release_pipelines.resources.manifest_files import load_product

from release_pipelines.core.states import ReleaseState
from release_pipelines.orchestration.dagster_resources import LedgerResource, PlatformResource
from release_pipelines.orchestration.definitions import build_definitions
from release_pipelines.steps.approval import approve
from tests.release_harness import QUIET, ROOT, processes_under

MANIFEST = """
product: clock
platform: local
services:
  - name: catalog
    deploy:
      local:
        command: ["{python}", "%s/service.py", "--service", "{service}", "--version", "{version}",
                  "--port", "{port}", "--flags", "{flags_file}"]
        env: {SHOP_ERROR_RATE: "0"}
        drain_seconds: 0.05
    health: {interval_seconds: 0.05, retries: 200, timeout_seconds: 1}
windows:
  timezone: UTC
  allowed:
    - {days: [mon, tue, wed, thu, fri, sat, sun], start: "09:00", end: "17:00"}
approvals:
  - {phase: break_glass, required: 1, group: [alice, bob], signatures: optional}
""" % (ROOT / "examples" / "shop")
DAY = datetime(2026, 11, 30, tzinfo=UTC)
INSIDE, OUTSIDE = DAY + timedelta(hours=16, minutes=50), DAY + timedelta(hours=17, minutes=10)


class Env:
    def __init__(self, tmp_path: Path):
        self.manifest = tmp_path / "clock" / "release.yaml"
        self.manifest.parent.mkdir()
        self.manifest.write_text(MANIFEST)
        self.defs = build_definitions(self.manifest)
        self.instance = DagsterInstance.ephemeral()
        self.book = LedgerResource().open()

    def run(self, job: str, config: dict, user: str = "alice"):
        return self.defs.resolve_job_def(f"clock_{job}").execute_in_process(
            run_config={**config, **QUIET}, instance=self.instance, tags={"dagster/user": user}, raise_on_error=False)

    def failure(self, result) -> str:
        return " ".join(e.step_failure_data.user_failure_data.description or "" for e in result.all_events
                        if e.is_step_failure and e.step_failure_data.user_failure_data)

    def launched_at(self, release_id: str) -> datetime:
        return next(e.created_at for e in self.book.events(release_id) if e.kind == "state:planned")


@pytest.fixture
def env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    home = tmp_path / "home"
    monkeypatch.setenv("RELEASE_HOME", str(home))
    monkeypatch.setenv("RELEASE_LEDGER_URL", f"sqlite:///{tmp_path / 'ledger.db'}")
    monkeypatch.delenv("RELEASE_WEBHOOK_URL", raising=False)
    monkeypatch.delenv("RELEASE_PROMETHEUS_URL", raising=False)
    env = Env(tmp_path)
    try:
        yield env
    finally:
        PlatformResource().for_product(load_product(env.manifest)).stop_all()
        env.book.close()
        assert not processes_under(home)


def release(versions: dict, reason: str = "") -> dict:
    return {"ops": {"preflight": {"config": {"versions": versions, "break_glass_reason": reason}}}}


def promote(release_id: str) -> dict:
    return {"ops": {"promote_step": {"config": {"release_id": release_id}}}}


def test_a_jump_past_the_window_end_does_not_stop_a_release_launched_inside(env: Env) -> None:
    with time_machine.travel(INSIDE, tick=True) as clock:
        assert env.run("release", release({"catalog": "1.0.0"})).success
        launched = env.run("release", release({"catalog": "1.1.0"}))
        assert launched.success, env.failure(launched)
        rel = env.book.active_release("clock")
        clock.move_to(OUTSIDE)  # the clock jumps past 17:00 between launch and promotion
        assert datetime.now(UTC) >= OUTSIDE
        step = env.run("promote", promote(rel.id), user="bob")
        assert step.success, env.failure(step)
        assert env.launched_at(rel.id).replace(tzinfo=UTC) < DAY + timedelta(hours=17)
        assert env.book.verify().ok


def test_a_jump_back_into_the_window_does_not_excuse_a_break_glass_launch(env: Env) -> None:
    with time_machine.travel(INSIDE, tick=True) as clock:
        assert env.run("release", release({"catalog": "1.0.0"})).success
        clock.move_to(OUTSIDE)
        refused = env.run("release", release({"catalog": "1.1.0"}))
        assert not refused.success and "window" in env.failure(refused)
        launched = env.run("release", release({"catalog": "1.1.0"}, "INC-9: outage"))
        assert launched.success, env.failure(launched)
        rel = env.book.active_release("clock")
        clock.move_to(INSIDE + timedelta(minutes=5))  # the clock jumps back inside the window
        waiting = env.run("promote", promote(rel.id), user="alice")
        assert not waiting.success and "break-glass" in env.failure(waiting), env.failure(waiting)
        approve(load_product(env.manifest).manifest, env.book, rel.id, "break_glass", "bob")
        step = env.run("promote", promote(rel.id), user="bob")
        assert step.success, env.failure(step)
        assert env.book.get(rel.id).state in (ReleaseState.CANARY, ReleaseState.PROMOTING, ReleaseState.BAKING,
                                              ReleaseState.COMPLETED)
        assert env.book.verify().ok
