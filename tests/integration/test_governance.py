"""Governance end to end on a real SQLite ledger (and real processes for the rehearsal):
approvals (CLI and job), windows and freezes in preflight and the release job, break-glass,
the request queue and its schedule, release records and metrics, and tamper detection."""

from __future__ import annotations

import sqlite3
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from types import SimpleNamespace

import psutil
import pytest
from click.testing import CliRunner
from dagster import AssetKey, DagsterInstance, RunRequest, SkipReason
from release_pipelines.resources.ledger import Ledger
from release_pipelines.resources.manifest_files import load_product

from release_pipelines.cli.governance import governance_commands
from release_pipelines.cli.main import main
from release_pipelines.core.errors import ReleaseError
from release_pipelines.core.planner import plan_release
from release_pipelines.core.states import ReleaseState as S
from release_pipelines.core.windows import break_glass_waiting_for
from release_pipelines.orchestration.dagster_resources import (
    FlagsResource,
    LedgerResource,
    PlatformResource,
)
from release_pipelines.orchestration.jobs.approval import build_approval_job
from release_pipelines.orchestration.jobs.rehearsal import build_rehearsal_job, previous_version
from release_pipelines.orchestration.jobs.release import build_release_job
from release_pipelines.orchestration.schedules import (
    TAG_ACTOR,
    TAG_REQUEST,
    records_tick,
    window_tick,
)
from release_pipelines.steps.approval import approve
from release_pipelines.steps.preflight import preflight_problems

SHOP_DIR = Path(__file__).resolve().parents[2] / "examples" / "shop"
TODAY = datetime.now(UTC).date()

MANIFEST = """
product: gov
platform: local
services:
  - name: catalog
    deploy:
      local:
        command: ["{{python}}", "{shop}/service.py", "--service", "{{service}}", "--version", "{{version}}",
                  "--port", "{{port}}", "--flags", "{{flags_file}}"]
        env: {{SHOP_ERROR_RATE: "0"}}
        drain_seconds: 0.1
    health: {{interval_seconds: 0.05, retries: 200, timeout_seconds: 1}}
windows:
  timezone: Europe/Berlin
  allowed:
    - {{days: [mon, tue, wed, thu, fri, sat, sun], start: "00:00", end: "23:59"}}
  freezes: {freezes}
approvals:
  - {{phase: promote, group: [alice, bob, carol], signatures: optional}}
  - {{phase: break_glass, group: [bob, carol], signatures: optional}}
"""

FREEZE = f'[{{start: {TODAY - timedelta(days=1)}, end: {TODAY + timedelta(days=1)}, reason: "Black Friday freeze: peak traffic"}}]'


def _manifest(tmp_path: Path, frozen: bool = False) -> Path:
    path = tmp_path / "gov" / "release.yaml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(MANIFEST.format(shop=SHOP_DIR, freezes=FREEZE if frozen else "[]"))
    return path


@pytest.fixture
def env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> SimpleNamespace:
    url = f"sqlite:///{tmp_path}/ledger.db"
    monkeypatch.setenv("RELEASE_LEDGER_URL", url)
    monkeypatch.setenv("RELEASE_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("RELEASE_MANIFESTS", str(_manifest(tmp_path)))
    monkeypatch.delenv("RELEASE_WEBHOOK_URL", raising=False)
    book = Ledger(url)
    yield SimpleNamespace(url=url, book=book, path=tmp_path, product=load_product(_manifest(tmp_path)))
    book.close()


def _cli(*args: str) -> SimpleNamespace:
    """Run `release ARGS`; output with rich's line wrapping undone."""
    for command in governance_commands:
        main.add_command(command)
    result = CliRunner().invoke(main, list(args), catch_exceptions=False)
    return SimpleNamespace(exit_code=result.exit_code, output=" ".join(result.output.split()), raw=result.output)


def _resources(env: SimpleNamespace) -> dict:
    return {
        "release_ledger": LedgerResource(url=env.url),
        "release_platform": PlatformResource(state_root=str(env.path / "platform")),
        "release_flags": FlagsResource(root=str(env.path / "flags")),
    }


def _failure(result) -> str:
    """The description of the run's failed step."""
    [event] = [e for e in result.all_events if e.event_type_value == "STEP_FAILURE"]
    return event.step_failure_data.user_failure_data.description


def _canary_release(book: Ledger, actor: str = "alice", **payload) -> str:
    rid = book.start_release("gov", {"catalog": "1.1.0"}, {"catalog": "1.0.0"}, actor, payload=payload or None).id
    book.transition(rid, S.PREFLIGHT, actor)
    book.transition(rid, S.CANARY, actor, canary_step=0)
    return rid


# -- approvals ----------------------------------------------------------------------------------


def test_cli_refuses_the_launcher_and_outsiders_and_records_nothing(env: SimpleNamespace) -> None:
    rid = _canary_release(env.book)
    own = _cli("approve", rid, "--phase", "promote", "--as", "alice")
    assert own.exit_code == 2
    assert "alice launched release" in own.output and "maker-checker" in own.output and "bob, carol" in own.output
    outsider = _cli("approve", rid, "--phase", "promote", "--as", "mallory")
    assert outsider.exit_code == 2 and "mallory may not approve phase promote" in outsider.output
    no_rule = _cli("approve", rid, "--phase", "contract", "--as", "bob")
    assert no_rule.exit_code == 2 and "no approval rule for phase contract" in no_rule.output
    assert env.book.approvals(rid) == []
    assert not [e for e in env.book.events(rid) if e.kind.startswith("approval:")]

    ok = _cli("approve", rid, "--phase", "promote", "--as", "bob", "--comment", "canary looks fine")
    assert ok.exit_code == 0, ok.output
    assert "approved promote" in ok.output and "every required approval is in" in ok.output
    [approval] = env.book.approvals(rid)
    assert (approval.approver, approval.phase, approval.comment) == ("bob", "promote", "canary looks fine")
    twice = _cli("approve", rid, "--phase", "promote", "--as", "bob")
    assert twice.exit_code == 2 and "already approved" in twice.output


def test_approval_job_uses_the_signed_in_user_and_refuses_the_launcher(env: SimpleNamespace) -> None:
    rid = _canary_release(env.book)
    job = build_approval_job(env.product)
    instance = DagsterInstance.ephemeral()
    config = {"ops": {"approve": {"config": {"release_id": rid, "phase": "promote"}}}}
    refused = job.execute_in_process(run_config=config, resources={"release_ledger": LedgerResource(url=env.url)},
                                     tags={"dagster/user": "alice"}, instance=instance, raise_on_error=False)
    assert not refused.success
    assert "alice launched release" in _failure(refused)
    impostor = {"ops": {"approve": {"config": {"release_id": rid, "phase": "promote", "approver": "bob"}}}}
    refused = job.execute_in_process(run_config=impostor, resources={"release_ledger": LedgerResource(url=env.url)},
                                     tags={"dagster/user": "mallory"}, instance=instance, raise_on_error=False)
    assert not refused.success
    assert env.book.approvals(rid) == []

    done = job.execute_in_process(run_config=config, resources={"release_ledger": LedgerResource(url=env.url)},
                                  tags={"dagster/user": "carol"}, instance=instance)
    assert done.success
    assert [a.approver for a in env.book.approvals(rid, "promote")] == ["carol"]


def test_approvals_are_refused_after_the_release_finished(env: SimpleNamespace) -> None:
    rid = _canary_release(env.book)
    env.book.transition(rid, S.ROLLING_BACK, "alice")
    env.book.transition(rid, S.ROLLED_BACK, "alice")
    with pytest.raises(ReleaseError, match="already rolled_back"):
        approve(env.product.manifest, env.book, rid, "promote", "bob")


# -- windows, freezes, break-glass ----------------------------------------------------------------


def test_freeze_refuses_a_launch_with_its_reason(env: SimpleNamespace) -> None:
    product = load_product(_manifest(env.path, frozen=True))
    plan = plan_release(product.manifest, {"catalog": "1.1.0"}, {"catalog": "1.0.0"})
    [problem] = preflight_problems(product, plan)
    assert "Black Friday freeze: peak traffic" in problem and "launch refused" in problem
    assert preflight_problems(product, plan, break_glass_reason="INC-9: payments down") == []
    open_product = load_product(_manifest(env.path / "open"))
    assert preflight_problems(open_product, plan) == []


def test_release_job_in_a_freeze_fails_in_preflight_and_records_the_refusal(env: SimpleNamespace) -> None:
    product = load_product(_manifest(env.path, frozen=True))
    job = build_release_job(product)
    result = job.execute_in_process(
        run_config={"ops": {"preflight": {"config": {"versions": {"catalog": "1.1.0"}}}}},
        resources=_resources(env), instance=DagsterInstance.ephemeral(), raise_on_error=False,
    )
    assert not result.success
    assert "Black Friday freeze: peak traffic" in _failure(result)
    assert env.book.releases("gov") == []  # nothing started
    [refusal] = [e for e in env.book.events() if e.kind == "launch:refused"]
    assert "Black Friday freeze" in refusal.payload["reason"]


def test_break_glass_release_records_the_reason_and_waits_for_its_approval(env: SimpleNamespace) -> None:
    product = load_product(_manifest(env.path, frozen=True))
    rid = _canary_release(env.book, break_glass_reason="INC-9: payments down")
    release = env.book.get(rid)
    waiting = break_glass_waiting_for(product.manifest, release, env.book.events(rid), env.book.approvals(rid))
    assert waiting and "INC-9: payments down" in waiting and "bob, carol" in waiting
    with pytest.raises(ReleaseError, match="alice launched release"):
        approve(product.manifest, env.book, rid, "break_glass", "alice")
    approve(product.manifest, env.book, rid, "break_glass", "bob", "hotfix reviewed")
    assert break_glass_waiting_for(product.manifest, release, env.book.events(rid), env.book.approvals(rid)) is None


# -- the request queue and its schedule ------------------------------------------------------------


class _Instance:
    def __init__(self) -> None:
        self.runs: dict[str, str] = {}

    def get_runs(self, filters, limit=None):
        request = filters.tags[TAG_REQUEST]
        return [SimpleNamespace(run_id=self.runs[request])] if request in self.runs else []


def test_request_waits_for_the_window_then_launches_once(env: SimpleNamespace) -> None:
    frozen = load_product(_manifest(env.path, frozen=True))
    out = _cli("request", str(_manifest(env.path, frozen=True)), "--version", "catalog=1.1.0", "--as", "dave")
    assert out.exit_code == 0, out.output
    assert "queued" in out.output and "Black Friday freeze" in out.output and "next opening" in out.output
    [request] = env.book.release_requests("gov")
    assert (request.state, request.versions, request.created_by) == ("queued", {"catalog": "1.1.0"}, "dave")

    instance = _Instance()
    now = datetime.now(UTC)
    skipped = window_tick(env.book, instance, frozen, now)
    assert isinstance(skipped, SkipReason) and "Black Friday freeze" in skipped.skip_message

    open_product = load_product(_manifest(env.path / "open"))
    launch = window_tick(env.book, instance, open_product, now)
    assert isinstance(launch, RunRequest) and launch.run_key == request.id
    assert launch.job_name == "gov_release"
    assert launch.run_config == {"ops": {"preflight": {"config": {"versions": {"catalog": "1.1.0"}}}}}
    assert launch.tags[TAG_ACTOR] == "dave" and launch.tags[TAG_REQUEST] == request.id

    instance.runs[request.id] = "run-123"  # Dagster launched it
    done = window_tick(env.book, instance, open_product, now)
    assert isinstance(done, SkipReason) and "no queued" in done.skip_message
    launched = env.book.release_request(request.id)
    assert (launched.state, launched.run_id) == ("launched", "run-123")
    kinds = [e.kind for e in env.book.events() if e.kind.startswith("request:")]
    assert kinds == ["request:queued", "request:launched"]


def test_one_release_at_a_time_and_cancel(env: SimpleNamespace) -> None:
    rid = _canary_release(env.book)
    first = env.book.request_release("gov", {"catalog": "1.2.0"}, "dave")
    tick = window_tick(env.book, _Instance(), env.product, datetime.now(UTC))
    assert isinstance(tick, SkipReason) and rid in tick.skip_message
    out = _cli("cancel-request", first.id, "--as", "dave")
    assert out.exit_code == 0 and env.book.release_request(first.id).state == "cancelled"
    listing = _cli("requests", "--product", "gov")
    assert "cancelled" in listing.output


# -- release records, metrics -----------------------------------------------------------------------


def test_finished_release_materializes_its_record_and_metrics_once(env: SimpleNamespace) -> None:
    rid = _canary_release(env.book)
    events, cursor = records_tick(env.book, env.product, {}, datetime.now(UTC))
    assert events == []
    env.book.transition(rid, S.PROMOTING, "canary-sensor")
    env.book.transition(rid, S.COMPLETED, "canary-sensor")
    events, cursor = records_tick(env.book, env.product, cursor, datetime.now(UTC))
    record, metrics = events
    assert record.asset_key == AssetKey(["releases", "gov"]) and metrics.asset_key == AssetKey(["metrics", "gov"])
    assert record.metadata["release_id"].value == rid
    assert f"# Release {rid}: completed" in record.metadata["notes"].value
    assert metrics.metadata["completed"].value == 1 and metrics.metadata["change_failure_rate"].value == 0.0
    again, _ = records_tick(env.book, env.product, cursor, datetime.now(UTC))
    assert again == []


def test_show_prints_the_release_notes(env: SimpleNamespace) -> None:
    rid = _canary_release(env.book)
    out = _cli("show", rid, "--raw")
    assert out.exit_code == 0 and f"# Release {rid}: canary" in out.output and "## State transitions" in out.output
    unknown = _cli("show", "gov-nope")
    assert unknown.exit_code == 2 and "no release 'gov-nope'" in unknown.output


# -- audit: tampering is detected and named by the CLI ---------------------------------------------------


@pytest.mark.parametrize("column,value", [("payload", '{"evil": true}'), ("actor", "mallory"),
                                          ("kind", "state:completed"), ("created_at", "2020-01-01 00:00:00.000000")])
def test_tampering_with_any_event_is_named_by_verify_ledger(
    env: SimpleNamespace, monkeypatch: pytest.MonkeyPatch, column: str, value: str
) -> None:
    rid = _canary_release(env.book)
    env.book.add_approval(rid, "promote", "bob")
    env.book.record(rid, "verdict", "canary-sensor", payload={"verdict": "pass"})
    total = len(env.book.events())
    assert _cli("verify-ledger").exit_code == 0
    for seq in range(1, total + 1):
        copy = env.path / f"tampered-{column}-{seq}.db"
        with sqlite3.connect(env.path / "ledger.db") as source, sqlite3.connect(copy) as target:
            source.backup(target)  # includes what is still in the WAL
            target.execute(f"UPDATE events SET {column} = ? WHERE seq = ?", (value, seq))
        monkeypatch.setenv("RELEASE_LEDGER_URL", f"sqlite:///{copy}")
        out = _cli("verify-ledger")
        assert out.exit_code == 1, (seq, out.output)
        assert "ledger chain broken" in out.output and f"event {seq} " in out.output, out.output


def test_deleted_event_is_named_by_verify_ledger(env: SimpleNamespace, monkeypatch: pytest.MonkeyPatch) -> None:
    _canary_release(env.book)
    copy = env.path / "deleted.db"
    with sqlite3.connect(env.path / "ledger.db") as source, sqlite3.connect(copy) as target:
        source.backup(target)
        target.execute("DELETE FROM events WHERE seq = 2")
    monkeypatch.setenv("RELEASE_LEDGER_URL", f"sqlite:///{copy}")
    out = _cli("verify-ledger")
    assert out.exit_code == 1 and "event 2 is missing" in out.output


# -- rollback rehearsal (real processes) -----------------------------------------------------------------


def test_rehearsal_starts_the_previous_version_at_zero_percent_and_aborts_it(env: SimpleNamespace) -> None:
    platform = PlatformResource(state_root=str(env.path / "platform")).for_product(env.product)
    before = {p.pid for p in psutil.Process().children(recursive=True)}
    try:
        platform.deploy_canary("catalog", "1.1.0")  # first install: stable
        rid = env.book.start_release("gov", {"catalog": "1.1.0"}, {"catalog": "1.0.0"}, "alice").id
        for state in (S.PREFLIGHT, S.CANARY, S.PROMOTING, S.COMPLETED):
            env.book.transition(rid, state, "alice", canary_step=0 if state is S.CANARY else None)
        assert previous_version(env.book, "gov", "catalog", "1.1.0") == "1.0.0"

        job = build_rehearsal_job(env.product)
        result = job.execute_in_process(
            run_config={"ops": {"rehearse_rollback": {"config": {"service": "catalog"}}}},
            resources=_resources(env), instance=DagsterInstance.ephemeral(), tags={"release/actor": "ops"},
        )
        assert result.success
        status = platform.status("catalog")
        assert (status.stable_version, status.canary_version) == ("1.1.0", None)
        [event] = [e for e in env.book.events() if e.kind == "rehearsal"]
        assert event.actor == "ops" and event.release_id is None
        assert event.payload["ok"] and event.payload["healthy"] and event.payload["version"] == "1.0.0"
        assert event.payload["duration_seconds"] >= event.payload["deploy_seconds"] > 0

        # refused while a release is active, and recorded nowhere
        _canary_release(env.book)
        refused = job.execute_in_process(
            run_config={"ops": {"rehearse_rollback": {"config": {"service": "catalog"}}}},
            resources=_resources(env), instance=DagsterInstance.ephemeral(), raise_on_error=False,
        )
        assert not refused.success
        assert len([e for e in env.book.events() if e.kind == "rehearsal"]) == 1
    finally:
        platform.stop_all()
    left = {p.pid for p in psutil.Process().children(recursive=True) if p.status() != psutil.STATUS_ZOMBIE} - before
    assert not left


def test_freeze_dates_are_real_dates() -> None:
    assert isinstance(TODAY, date)
