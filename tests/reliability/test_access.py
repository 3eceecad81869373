"""Access: approvals never come from the launcher (function, CLI, Launchpad job); a break-glass
launch needs a reason, records it with who broke the glass, and waits for someone else's approval
before traffic moves past the first step. Real release jobs on a real process and SQLite ledger."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from click.testing import CliRunner
from dagster import DagsterInstance
from release_pipelines.resources.manifest_files import load_product

from release_pipelines.cli.main import main
from release_pipelines.core.errors import ReleaseError
from release_pipelines.core.states import ReleaseState
from release_pipelines.orchestration.dagster_resources import LedgerResource, PlatformResource
from release_pipelines.orchestration.definitions import build_definitions
from release_pipelines.orchestration.jobs.approval import build_approval_job
from release_pipelines.steps.approval import approve
from tests.release_harness import QUIET, ROOT, processes_under

TODAY = datetime.now(UTC).date()
MANIFEST = """
product: acl
platform: local
services:
  - name: catalog
    deploy:
      local:
        command: ["{{python}}", "{shop}/service.py", "--service", "{{service}}", "--version", "{{version}}",
                  "--port", "{{port}}", "--flags", "{{flags_file}}"]
        env: {{SHOP_ERROR_RATE: "0"}}
        drain_seconds: 0.05
    health: {{interval_seconds: 0.05, retries: 200, timeout_seconds: 1}}
windows:
  timezone: Europe/Berlin
  allowed:
    - {{days: [mon, tue, wed, thu, fri, sat, sun], start: "00:00", end: "23:59"}}
  freezes: {freezes}
approvals:
  - {{phase: promote, required: 1, group: [alice, bob, carol], signatures: optional}}
  - {{phase: break_glass, required: 1, group: [alice, bob, carol], signatures: optional}}
"""
FREEZE = f'[{{start: {TODAY - timedelta(days=1)}, end: {TODAY + timedelta(days=1)}, reason: "incident freeze"}}]'


class Env:
    def __init__(self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
        self.home = tmp_path / "home"
        monkeypatch.setenv("RELEASE_HOME", str(self.home))
        monkeypatch.setenv("RELEASE_LEDGER_URL", f"sqlite:///{tmp_path / 'ledger.db'}")
        monkeypatch.delenv("RELEASE_WEBHOOK_URL", raising=False)
        self.paths = {}
        for name, freezes in (("open", "[]"), ("frozen", FREEZE)):
            path = tmp_path / name / "release.yaml"
            path.parent.mkdir()
            path.write_text(MANIFEST.format(shop=ROOT / "examples" / "shop", freezes=freezes))
            self.paths[name] = path
        self.instance = DagsterInstance.ephemeral()
        self.book = LedgerResource().open()

    def run(self, which: str, job: str, config: dict, user: str):
        defs = build_definitions(self.paths[which])
        return defs.resolve_job_def(f"acl_{job}").execute_in_process(
            run_config={**config, **QUIET}, instance=self.instance, tags={"dagster/user": user}, raise_on_error=False)

    def cli(self, *args: str, actor: str | None = None):
        env = {"RELEASE_ACTOR": actor} if actor else {}
        result = CliRunner().invoke(main, list(args), env=env, catch_exceptions=False)
        return result.exit_code, " ".join(result.output.split())

    def stop(self) -> None:
        PlatformResource().for_product(load_product(self.paths["open"])).stop_all()


@pytest.fixture
def env(tmp_path, monkeypatch):
    env = Env(tmp_path, monkeypatch)
    try:
        yield env
    finally:
        env.stop()
        assert not processes_under(env.home)


def _failure(result) -> str:
    return " ".join(e.step_failure_data.user_failure_data.description or "" for e in result.all_events
                    if e.is_step_failure and e.step_failure_data.user_failure_data)


def release(versions: dict, reason: str = "") -> dict:
    return {"ops": {"preflight": {"config": {"versions": versions, "break_glass_reason": reason}}}}


def test_break_glass_needs_a_reason_is_recorded_and_waits_for_someone_else(env: Env) -> None:
    assert env.run("open", "release", release({"catalog": "1.0.0"}), "alice").success
    # in the freeze: no reason (or only blanks) -> refused before anything is recorded as started
    for blank in ("", "   ", "\t\n"):
        refused = env.run("frozen", "release", release({"catalog": "1.1.0"}, blank), "alice")
        assert not refused.success and "incident freeze" in _failure(refused)
    assert env.book.active_release("acl") is None
    # with a reason: launched, the reason and who broke the glass recorded
    launched = env.run("frozen", "release", release({"catalog": "1.1.0"}, "INC-7: checkout down"), "alice")
    assert launched.success, _failure(launched)
    rel = env.book.active_release("acl")
    assert rel.created_by == "alice" and rel.state is ReleaseState.CANARY
    planned = next(e for e in env.book.events(rel.id) if e.kind == "state:planned")
    assert planned.payload["break_glass_reason"] == "INC-7: checkout down" and planned.actor == "alice"
    # no promotion before a break-glass approval; the launcher's own does not count
    promote = {"ops": {"promote_step": {"config": {"release_id": rel.id}}}}
    waiting = env.run("frozen", "promote", promote, "alice")
    assert not waiting.success and "break-glass" in _failure(waiting) and "INC-7" in _failure(waiting)
    code, out = env.cli("approve", rel.id, "--phase", "break_glass", "--manifest", str(env.paths["frozen"]),
                        actor="alice")
    assert code == 2 and "alice launched release" in out
    with pytest.raises(ReleaseError, match="maker-checker"):
        approve(load_product(env.paths["frozen"]).manifest, env.book, rel.id, "break_glass", "alice")
    assert env.book.approvals(rel.id) == []
    code, out = env.cli("approve", rel.id, "--phase", "break_glass", "--comment", "hotfix reviewed",
                        "--manifest", str(env.paths["frozen"]), actor="bob")
    assert code == 0, out
    [approval] = env.book.approvals(rel.id, "break_glass")
    assert (approval.approver, approval.comment) == ("bob", "hotfix reviewed")
    assert any(e.kind == "approval:break_glass" and e.actor == "bob" for e in env.book.events(rel.id))
    still = env.run("frozen", "promote", promote, "bob")  # the manifest's promote rule still applies
    assert not still.success and "promote approval" in _failure(still)
    approve(load_product(env.paths["frozen"]).manifest, env.book, rel.id, "promote", "carol")
    assert env.run("frozen", "promote", promote, "bob").success
    assert env.book.verify().ok


@pytest.mark.parametrize("phase", ["promote", "break_glass"])
def test_the_launcher_can_never_approve_their_own_release(env: Env, phase: str) -> None:
    assert env.run("open", "release", release({"catalog": "1.0.0"}), "alice").success
    assert env.run("open", "release", release({"catalog": "1.1.0"}), "carol").success
    rel = env.book.active_release("acl")
    assert rel.created_by == "carol"
    manifest = str(env.paths["open"])
    # the CLI: as the launcher (explicitly, or by RELEASE_ACTOR), and the launcher's name padded
    assert env.cli("approve", rel.id, "--phase", phase, "--as", "carol", "--manifest", manifest)[0] == 2
    assert env.cli("approve", rel.id, "--phase", phase, "--manifest", manifest, actor="carol")[0] == 2
    assert env.cli("approve", rel.id, "--phase", phase, "--as", " carol ", "--manifest", manifest)[0] == 2
    # the Launchpad job: signed in as the launcher; or signed in as someone else claiming a name
    job = build_approval_job(load_product(env.paths["open"]))
    config = {"ops": {"approve": {"config": {"release_id": rel.id, "phase": phase}}}}
    for user, approver in (("carol", ""), ("carol", "bob"), ("mallory", "bob")):
        config["ops"]["approve"]["config"]["approver"] = approver
        result = job.execute_in_process(run_config=config, resources={"release_ledger": LedgerResource()},
                                        tags={"dagster/user": user}, instance=env.instance, raise_on_error=False)
        assert not result.success, (user, approver)
    assert env.book.approvals(rel.id) == []
    assert not [e for e in env.book.events(rel.id) if e.kind.startswith("approval:")]
    config["ops"]["approve"]["config"]["approver"] = ""
    ok = job.execute_in_process(run_config=config, resources={"release_ledger": LedgerResource()},
                                tags={"dagster/user": "bob"}, instance=env.instance)
    assert ok.success and [a.approver for a in env.book.approvals(rel.id, phase)] == ["bob"]
