"""R8, rewrite: someone with write access to the ledger's PostgreSQL database edits, deletes,
reorders events, or rewrites history and recomputes every hash. `release verify-ledger` must fail
and name the first affected event each time: the hash chain catches the first three, the signed
checkpoints (deployment key; a copy outside the database) catch the rewrite - even when the
attacker also deletes the checkpoints in the database or signs new ones with their own key."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner
from dagster import AssetKey, DagsterInstance
from release_pipelines.resources.checkpoints import CheckpointSettings, write_checkpoint
from release_pipelines.resources.ledger import Ledger
from release_pipelines.resources.ledger_schema import event_hash
from sqlalchemy import create_engine, text

from release_pipelines.cli.main import main
from release_pipelines.core.states import ReleaseState as S
from tests.ssh_keys import make_keys

pytestmark = pytest.mark.postgres


@pytest.fixture
def ledger(postgres_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    keys = make_keys(tmp_path / "keys", "deploy", "attacker")
    monkeypatch.setenv("RELEASE_LEDGER_URL", postgres_url)
    monkeypatch.setenv("RELEASE_CHECKPOINT_KEY", str(keys["deploy"]))
    monkeypatch.setenv("RELEASE_CHECKPOINT_SIGNERS", f"{keys['deploy']}.pub")
    monkeypatch.setenv("RELEASE_CHECKPOINT_FILE", str(tmp_path / "anchors" / "checkpoints.jsonl"))
    book = Ledger(postgres_url)
    for n in range(3):  # three releases, a checkpoint after each (as the records sensor does)
        release = book.start_release("shop", {"orders": f"1.{n}.0"}, {}, "ci-launcher")
        book.transition(release.id, S.PREFLIGHT, "ci-launcher")
        book.add_approval(release.id, "contract", "bob", "looks fine")
        book.transition(release.id, S.ROLLING_BACK, "ci-launcher")
        book.transition(release.id, S.ROLLED_BACK, "ci-launcher")
        write_checkpoint(book, CheckpointSettings.from_env())
    book.record(None, "note", "ops", payload={"after": "the last checkpoint"})
    yield book, keys
    book.close()


def verify() -> tuple[int, str]:
    result = CliRunner().invoke(main, ["verify-ledger"], catch_exceptions=False)
    return result.exit_code, " ".join(result.output.split())


def sql(book: Ledger, statement: str, **params) -> None:
    engine = create_engine(book.url)
    with engine.begin() as conn:
        conn.execute(text(statement), params)
    engine.dispose()


def rewrite_from(book: Ledger, seq: int, change: dict) -> None:
    """What an attacker with the ledger's code and write access does: change an event, then
    recompute every later hash and the chain head so the chain verifies again."""
    rows = [e for e in book.events() if e.seq >= seq]
    prev = next(e.hash for e in book.events() if e.seq == seq - 1) if seq > 1 else "0" * 64
    engine = create_engine(book.url)
    with engine.begin() as conn:
        for event in rows:
            fields = {k: getattr(event, k) for k in ("seq", "release_id", "kind", "actor", "run_id", "created_at", "payload")}
            if event.seq == seq:
                fields.update(change)
            digest = event_hash(prev, **fields)
            conn.execute(text("update events set actor = :actor, payload = cast(:payload as json), prev_hash = :p, "
                              "hash = :h where seq = :seq"),
                         {"actor": fields["actor"], "payload": json.dumps(fields["payload"]),
                          "p": prev, "h": digest, "seq": event.seq})
            prev = digest
        conn.execute(text("update event_chain_head set seq = :s, hash = :h"), {"s": rows[-1].seq, "h": prev})
    engine.dispose()


def approval_event(book: Ledger, n: int) -> int:
    return [e.seq for e in book.events() if e.kind == "approval:contract"][n]


def test_untouched_ledger_verifies_with_its_checkpoints(ledger) -> None:
    code, out = verify()
    assert code == 0 and "3 checkpoint(s) match" in out and "ssh-ed25519 SHA256:" in out, out


def test_edit_is_named(ledger) -> None:
    book, _ = ledger
    seq = approval_event(book, 1)
    sql(book, "update events set actor = 'mallory' where seq = :s", s=seq)
    code, out = verify()
    assert code == 1 and f"event {seq} (approval:contract) was altered" in out, out


def test_delete_is_named(ledger) -> None:
    book, _ = ledger
    seq = approval_event(book, 0)
    sql(book, "delete from events where seq = :s", s=seq)
    code, out = verify()
    assert code == 1 and f"event {seq} is missing" in out, out


def test_reorder_is_named(ledger) -> None:
    book, _ = ledger
    a, b = approval_event(book, 0), approval_event(book, 0) + 1
    sql(book, "update events set seq = -1 where seq = :a", a=a)
    sql(book, "update events set seq = :a where seq = :b", a=a, b=b)
    sql(book, "update events set seq = :b where seq = -1", b=b)
    code, out = verify()
    assert code == 1 and f"event {a}" in out and ("altered" in out or "out of order" in out), out


def test_rewrite_with_recomputed_hashes_is_named_by_the_checkpoints(ledger) -> None:
    book, _ = ledger
    seq = approval_event(book, 1)
    rewrite_from(book, seq, {"actor": "mallory", "payload": {"approver": "mallory", "comment": None, "signed": False}})
    assert book.verify().ok, "the attacker's rewrite passes the chain check alone"
    code, out = verify()
    assert code == 1 and f"event {seq} (approval:contract) differs from checkpoint at event" in out, out
    assert "rewritten from event" in out


def test_rewrite_and_deleted_checkpoints_are_caught_by_the_outside_copy(ledger) -> None:
    book, _ = ledger
    seq = approval_event(book, 0)
    rewrite_from(book, seq, {"actor": "mallory"})
    sql(book, "delete from checkpoints")
    code, out = verify()
    assert code == 1 and "missing from the ledger's checkpoints table (deleted)" in out, out
    assert f"event {seq} (approval:contract) differs from checkpoint" in out


def test_checkpoints_the_attacker_signs_are_not_trusted(ledger, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    book, keys = ledger
    rewrite_from(book, approval_event(book, 2), {"actor": "mallory"})
    sql(book, "delete from checkpoints")
    monkeypatch.setenv("RELEASE_CHECKPOINT_FILE", str(tmp_path / "attackers_copy.jsonl"))
    monkeypatch.setenv("RELEASE_CHECKPOINT_KEY", str(keys["attacker"]))
    write_checkpoint(book, CheckpointSettings.from_env())  # a fresh checkpoint over the rewritten chain
    code, out = verify()
    assert code == 1 and "which is not a trusted checkpoint key" in out, out


def test_release_checkpoint_is_an_asset_observation_of_releases(ledger, tmp_path: Path,
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    """With DAGSTER_HOME set (as for cron on the daemon's machine), `release checkpoint` also writes
    the checkpoint to that instance's event log as an observation of releases/<product>."""
    book, _ = ledger
    home = tmp_path / "dagster_home"
    home.mkdir()
    monkeypatch.setenv("DAGSTER_HOME", str(home))
    result = CliRunner().invoke(main, ["checkpoint"], catch_exceptions=False)
    out = " ".join(result.output.split())
    assert result.exit_code == 0 and "observed on releases/shop" in out, out
    seq, head = book.head()
    with DagsterInstance.get() as instance:
        observed = instance.fetch_observations(AssetKey(["releases", "shop"]), limit=5).records
        [record] = observed
        metadata = record.asset_observation.metadata
        assert metadata["checkpoint_seq"].value == seq and metadata["checkpoint_head"].value == head
        assert "-----BEGIN SSH SIGNATURE-----" in metadata["checkpoint_signature"].value
