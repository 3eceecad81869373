"""Signed release requests on a real ledger (SQLite, and PostgreSQL once) with real SSH keys
(ssh-keygen, ssh-agent) and the real release-window schedule evaluated against a Dagster instance.

Whoever queues a request becomes the release's launcher, so under `requests:` the requester is
proven: a request signed by its requester is queued and launched with them as `release/actor`; a
forged one - a key outside the signers, another principal's key, a statement edited after
signing, a signature replayed from another request, an unsigned one where signatures are
required - is refused by `release request` (nothing queued) and, when written straight into the
ledger, cancelled by the schedule with `refused: <why>` and never launched."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from types import SimpleNamespace

import pytest
from click.testing import CliRunner
from dagster import DagsterInstance, build_schedule_context

from release_pipelines.cli.main import main
from release_pipelines.core.errors import ManifestError, ReleaseError
from release_pipelines.core.statements import APPROVAL_NAMESPACE, SignedDocument
from release_pipelines.orchestration.dagster_resources import LedgerResource
from release_pipelines.orchestration.definitions import build_definitions
from release_pipelines.orchestration.jobs.release import build_release_job
from release_pipelines.orchestration.schedules import (
    SCHEDULER,
    TAG_ACTOR,
    TAG_REQUEST,
    build_release_window_schedule,
)
from release_pipelines.resources.ledger import Ledger
from release_pipelines.resources.manifest_files import load_product
from release_pipelines.steps.requests import SignedRequest, queue_request, sign_request
from tests.ssh_keys import allowed_signers, make_keys, ssh_agent

ROOT = Path(__file__).resolve().parents[2]
SHOP = ROOT / "examples" / "shop"
MANIFEST = """
product: req
platform: local
services:
  - name: catalog
    deploy:
      local:
        command: ["{{python}}", "{shop}/service.py", "--port", "{{port}}"]
approvals:
  - {{phase: promote, group: [alice, bob, carol], signatures: optional}}
{requests}
"""
REQUIRED = "requests: {signers: allowed_signers}"
OPTIONAL = "requests: {signers: allowed_signers, signatures: optional}"
V1 = {"catalog": "1.1.0"}


def write_manifest(folder: Path, requests: str) -> Path:
    path = folder / "req" / "release.yaml"
    path.write_text(MANIFEST.format(shop=SHOP, requests=requests))
    return path


@pytest.fixture
def env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> SimpleNamespace:
    env = make_env(tmp_path, monkeypatch, f"sqlite:///{tmp_path}/ledger.db")
    yield env
    env.book.close()


def make_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, url: str, requests: str = REQUIRED) -> SimpleNamespace:
    keys = make_keys(tmp_path / "keys", "alice", "bob", "mallory")
    (tmp_path / "req").mkdir()
    allowed_signers(tmp_path / "req" / "allowed_signers", {n: keys[n] for n in ("alice", "bob")},
                    namespaces=APPROVAL_NAMESPACE)
    manifest = write_manifest(tmp_path, requests)
    monkeypatch.setenv("RELEASE_LEDGER_URL", url)
    monkeypatch.setenv("RELEASE_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("RELEASE_MANIFESTS", str(manifest))
    monkeypatch.delenv("SSH_AUTH_SOCK", raising=False)
    book = Ledger(url)
    (tmp_path / "dagster_home").mkdir()
    return SimpleNamespace(book=book, keys=keys, manifest=manifest, url=url, tmp=tmp_path,
                           product=load_product(manifest),
                           instance=DagsterInstance.local_temp(str(tmp_path / "dagster_home")))


def cli(*args: str) -> SimpleNamespace:
    result = CliRunner().invoke(main, list(args), catch_exceptions=False)
    return SimpleNamespace(code=result.exit_code, out=" ".join(result.output.split()))


def tick(env: SimpleNamespace):
    """One evaluation of the product's real release-window schedule against the Dagster instance."""
    product = load_product(env.manifest)  # as the code location reloads it: signers read again
    schedule = build_release_window_schedule(product, build_release_job(product))
    context = build_schedule_context(instance=env.instance, scheduled_execution_time=datetime.now(UTC),
                                     resources={"release_ledger": LedgerResource(url=env.url)})
    return schedule.evaluate_tick(context)


def refusal_note(env: SimpleNamespace, request_id: str) -> str:
    [event] = [e for e in env.book.events() if e.kind == "request:cancelled" and e.payload["request_id"] == request_id]
    assert event.actor == SCHEDULER
    return event.payload["note"]


def signed_by(env: SimpleNamespace, signer: str, requester: str, versions: dict[str, str] = V1) -> SignedRequest:
    return sign_request(env.book, "req", versions, requester, key=env.keys[signer])


def store(env: SimpleNamespace, requester: str, versions: dict[str, str], request_id: str | None = None,
          document: SignedDocument | None = None):
    """Write a request straight into the ledger, past `release request`'s checks."""
    return env.book.request_release("req", versions, requester, request_id=request_id,
                                    statement=document.statement if document else None,
                                    signature=document.signature if document else None)


def test_a_signed_request_is_queued_and_launched_with_its_signer_as_launcher(env: SimpleNamespace) -> None:
    done = cli("request", str(env.manifest), "--version", "catalog=1.1.0", "--as", "alice",
               "--key", str(env.keys["alice"]), "--comment", "weekly release")
    assert done.code == 0, done.out
    assert "by alice (signed)" in done.out
    [request] = env.book.release_requests("req")
    assert f"subject: {request.id}\nphase: launch_request\n" in request.statement
    assert "signed" in cli("requests", "--product", "req").out.split("alice")[1]

    result = tick(env)
    [launch] = result.run_requests
    assert launch.run_key == request.id and launch.job_name == "req_release"
    assert launch.tags[TAG_ACTOR] == "alice" and launch.tags[TAG_REQUEST] == request.id

    job = build_release_job(env.product)  # Dagster makes the run; the next tick sees it
    run = env.instance.create_run_for_job(job, run_config=launch.run_config, tags=launch.tags)
    assert "no queued release requests" in tick(env).skip_message
    launched = env.book.release_request(request.id)
    assert (launched.state, launched.run_id) == ("launched", run.run_id)


def test_the_ssh_agent_signs_by_default_where_signatures_are_required(env: SimpleNamespace) -> None:
    refused = cli("request", str(env.manifest), "--version", "catalog=1.1.0", "--as", "bob")
    assert refused.code == 2 and "no SSH agent" in refused.out and "--key" in refused.out
    assert env.book.release_requests("req") == []
    with ssh_agent(env.keys["bob"]):
        done = cli("request", str(env.manifest), "--version", "catalog=1.1.0", "--as", "bob")
    assert done.code == 0 and "by bob (signed)" in done.out, done.out
    [launch] = tick(env).run_requests
    assert launch.tags[TAG_ACTOR] == "bob"


@pytest.mark.parametrize("signer,why", [
    ("mallory", "which is not alice's (no signer of the requests rule has it)"),  # a key outside the signers
    ("bob", "which is not alice's (it belongs to bob)"),  # another principal's key
], ids=["key-not-in-signers", "key-of-another-principal"])
def test_release_request_refuses_a_key_that_is_not_the_requesters(env: SimpleNamespace, signer: str, why: str) -> None:
    done = cli("request", str(env.manifest), "--version", "catalog=1.1.0", "--as", "alice",
               "--key", str(env.keys[signer]))
    assert done.code == 2 and "request refused" in done.out and why in done.out, done.out
    assert env.book.release_requests("req") == []
    assert not [e for e in env.book.events() if e.kind.startswith("request:")]


def test_an_unsigned_request_is_refused_where_signatures_are_required(env: SimpleNamespace) -> None:
    with pytest.raises(ReleaseError, match="unsigned and the manifest's requests rule requires a signature"):
        queue_request(env.product.manifest, env.book, V1, "alice")
    assert env.book.release_requests("req") == []


def _signed(env: SimpleNamespace, signer: str) -> tuple[str, dict[str, str], SignedDocument]:
    """A request for V1 claiming alice, signed with `signer`'s key."""
    signed = signed_by(env, signer, "alice")
    return signed.id, V1, signed.document


def _key_not_in_signers(env: SimpleNamespace):
    return _signed(env, "mallory")


def _key_of_another_principal(env: SimpleNamespace):
    return _signed(env, "bob")


def _statement_edited(env: SimpleNamespace):
    """alice's signature over 1.1.0, the statement then edited to 6.6.6 (and the row to match)."""
    request_id, _, document = _signed(env, "alice")
    edited = document.statement.replace("catalog=1.1.0", "catalog=6.6.6")
    return request_id, {"catalog": "6.6.6"}, SignedDocument(edited, document.signature)


def _row_edited(env: SimpleNamespace):
    """alice's valid signed statement, the ledger row's versions changed."""
    request_id, _, document = _signed(env, "alice")
    return request_id, {"catalog": "9.9.9"}, document


def _replayed(env: SimpleNamespace):
    """alice's signature over request A, queued again under a new id B."""
    original = signed_by(env, "alice", "alice")
    queue_request(env.product.manifest, env.book, V1, "alice", signed=original)
    env.book.mark_request(original.id, "cancelled", "alice")
    with pytest.raises(ReleaseError, match="already queued"):  # the same id never queues twice
        store(env, "alice", V1, original.id, original.document)
    return f"{original.id}-again", V1, original.document


def _unsigned(env: SimpleNamespace):
    return None, V1, None


@pytest.mark.parametrize("forge,why", [
    (_key_not_in_signers, "which is not alice's (no signer of the requests rule has it)"),
    (_key_of_another_principal, "which is not alice's (it belongs to bob)"),
    (_statement_edited, "alice's signature on request req-"),
    (_row_edited, "names versions catalog=1.1.0, not catalog=9.9.9"),
    (_replayed, "-again (replayed)"),
    (_unsigned, "is unsigned and the manifest's requests rule requires a signature"),
], ids=["key-not-in-signers", "key-of-another-principal", "statement-edited", "row-edited", "replayed", "unsigned"])
def test_the_schedule_cancels_a_forged_request_and_launches_the_next(env: SimpleNamespace, forge, why: str) -> None:
    request_id, versions, document = forge(env)
    forged = store(env, "alice", versions, request_id, document)
    valid = queue_request(env.product.manifest, env.book, {"catalog": "1.2.0"}, "bob",
                          signed=signed_by(env, "bob", "bob", {"catalog": "1.2.0"}))

    [launch] = tick(env).run_requests
    assert launch.run_key == valid.id and launch.tags[TAG_ACTOR] == "bob"
    assert env.book.release_request(forged.id).state == "cancelled"
    note = refusal_note(env, forged.id)
    assert note.startswith("refused: ") and why in note, note
    assert not env.instance.get_runs()


def test_a_key_removed_from_the_signers_stops_a_queued_request(env: SimpleNamespace) -> None:
    request = queue_request(env.product.manifest, env.book, V1, "alice", signed=signed_by(env, "alice", "alice"))
    allowed_signers(env.tmp / "req" / "allowed_signers", {"bob": env.keys["bob"]}, namespaces=APPROVAL_NAMESPACE)
    result = tick(env)
    assert not result.run_requests and "refused and cancelled 1 request(s)" in result.skip_message
    assert "no signer of the requests rule has it" in refusal_note(env, request.id)


def test_optional_signatures_accept_an_unsigned_request_shown_unsigned(tmp_path: Path,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    env = make_env(tmp_path, monkeypatch, f"sqlite:///{tmp_path}/ledger.db", OPTIONAL)
    done = cli("request", str(env.manifest), "--version", "catalog=1.1.0", "--as", "dave")
    assert done.code == 0 and "by dave (unsigned)" in done.out, done.out
    assert "unsigned" in cli("requests", "--product", "req").out
    forged = cli("request", str(env.manifest), "--version", "catalog=1.2.0", "--as", "alice",
                 "--key", str(env.keys["mallory"]))  # a signature given must still be the requester's
    assert forged.code == 2 and "which is not alice's" in forged.out
    [launch] = tick(env).run_requests
    assert launch.tags[TAG_ACTOR] == "dave"


def test_without_a_requests_rule_requests_queue_unsigned_and_a_key_is_refused(tmp_path: Path,
                                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    env = make_env(tmp_path, monkeypatch, f"sqlite:///{tmp_path}/ledger.db", "")
    assert env.product.manifest.requests is None
    signed = cli("request", str(env.manifest), "--version", "catalog=1.1.0", "--as", "alice",
                 "--key", str(env.keys["alice"]))
    assert signed.code == 2 and "has no requests.signers" in signed.out, signed.out
    done = cli("request", str(env.manifest), "--version", "catalog=1.1.0", "--as", "alice")
    assert done.code == 0 and "(unsigned)" in done.out
    [launch] = tick(env).run_requests
    assert launch.tags[TAG_ACTOR] == "alice"


def test_a_missing_signers_file_is_named_when_the_manifest_loads(tmp_path: Path) -> None:
    (tmp_path / "req").mkdir()
    manifest = write_manifest(tmp_path, "requests: {signers: ops/requesters}")
    with pytest.raises(ManifestError, match="requests.signers.*cannot read allowed signers file"):
        load_product(manifest)


def test_on_postgres_a_forged_request_is_cancelled_and_a_signed_one_launched(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, postgres_url: str
) -> None:
    env = make_env(tmp_path, monkeypatch, postgres_url)
    request_id, versions, document = _key_of_another_principal(env)
    forged = store(env, "alice", versions, request_id, document)
    valid = queue_request(env.product.manifest, env.book, V1, "alice", signed=signed_by(env, "alice", "alice"))
    [launch] = tick(env).run_requests
    assert (launch.run_key, launch.tags[TAG_ACTOR]) == (valid.id, "alice")
    assert "it belongs to bob" in refusal_note(env, forged.id)
    env.book.close()


def test_a_request_for_a_product_with_environments_is_launched_by_that_environments_schedule(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    manifest = ROOT / "examples" / "shop_environments" / "release.yaml"
    url = f"sqlite:///{tmp_path}/ledger.db"
    monkeypatch.setenv("RELEASE_LEDGER_URL", url)
    monkeypatch.setenv("RELEASE_HOME", str(tmp_path / "home"))
    unsure = cli("request", str(manifest), "--version", "catalog=1.1.0", "--as", "alice")
    assert unsure.code == 2 and "environments (staging, production)" in unsure.out and "--environment" in unsure.out
    queued = cli("request", str(manifest), "--environment", "staging", "--version", "catalog=1.1.0", "--as", "alice")
    assert queued.code == 0, queued.out
    book = Ledger(url)
    try:
        [request] = book.release_requests(state="queued")
        assert request.product == "shop_staging"
        defs = build_definitions(manifest)
        (tmp_path / "dagster_home").mkdir()
        instance = DagsterInstance.local_temp(str(tmp_path / "dagster_home"))
        context = build_schedule_context(instance=instance, scheduled_execution_time=datetime.now(UTC),
                                         resources={"release_ledger": LedgerResource(url=url)})
        [run] = defs.resolve_schedule_def("shop_staging_release_window").evaluate_tick(context).run_requests
        assert run.job_name == "shop_staging_release" and run.tags[TAG_ACTOR] == "alice"
        assert run.run_config["ops"]["preflight"]["config"]["versions"] == {"catalog": "1.1.0"}
    finally:
        book.close()
