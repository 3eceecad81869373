"""Signed approvals on a real SQLite ledger with real SSH keys (ssh-keygen, ssh-agent): a valid
signature counts; a forged one - a key outside the group, the launcher's own key, a statement for
another release, one replayed from an older release, a row written straight into the database -
is refused or ignored with the reason named. Interop: `ssh-keygen -Y verify` accepts what we sign."""

from __future__ import annotations

import sqlite3
import subprocess
from dataclasses import replace
from pathlib import Path
from types import SimpleNamespace

import pytest
from click.testing import CliRunner
from dagster import DagsterInstance
from release_pipelines.resources.ledger import Ledger
from release_pipelines.resources.manifest_files import load_product
from release_pipelines.resources.signatures import sign

from release_pipelines.cli.main import main
from release_pipelines.core.errors import ManifestError, ReleaseError
from release_pipelines.core.manifest import ApprovalPhase
from release_pipelines.core.statements import APPROVAL_NAMESPACE, SignedDocument
from release_pipelines.core.states import ReleaseState as S
from release_pipelines.orchestration.dagster_resources import LedgerResource
from release_pipelines.orchestration.jobs.approval import build_approval_job
from release_pipelines.steps.approval import (
    approve,
    approve_signed,
    missing_approvals,
    sign_approval,
    statement_for,
)
from tests.ssh_keys import allowed_signers, make_keys, public, ssh_agent

SHOP = Path(__file__).resolve().parents[2] / "examples" / "shop"
MANIFEST = """
product: sig
platform: local
services:
  - name: catalog
    deploy:
      local:
        command: ["{{python}}", "{shop}/service.py", "--port", "{{port}}"]
approvals:
  - {{phase: promote, group: [alice, bob, carol], signers: allowed_signers}}
  - {{phase: contract, group: [alice, bob], signers: {{alice: "{alice}", bob: "{bob}"}}}}
"""


@pytest.fixture
def env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> SimpleNamespace:
    keys = make_keys(tmp_path / "keys", "alice", "bob", "carol", "mallory")
    folder = tmp_path / "sig"
    folder.mkdir()
    allowed_signers(folder / "allowed_signers", {n: keys[n] for n in ("alice", "bob", "carol")},
                    namespaces=APPROVAL_NAMESPACE)
    manifest = folder / "release.yaml"
    manifest.write_text(MANIFEST.format(shop=SHOP, alice=public(keys["alice"]), bob=public(keys["bob"])))
    url = f"sqlite:///{tmp_path}/ledger.db"
    monkeypatch.setenv("RELEASE_LEDGER_URL", url)
    monkeypatch.setenv("RELEASE_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("RELEASE_MANIFESTS", str(manifest))
    monkeypatch.delenv("SSH_AUTH_SOCK", raising=False)
    book = Ledger(url)
    yield SimpleNamespace(book=book, keys=keys, product=load_product(manifest), manifest=manifest, url=url, tmp=tmp_path)
    book.close()


def canary_release(book: Ledger, launcher: str = "carol", version: str = "1.1.0") -> object:
    release = book.start_release("sig", {"catalog": version}, {"catalog": "1.0.0"}, launcher)
    book.transition(release.id, S.PREFLIGHT, launcher)
    return book.transition(release.id, S.CANARY, launcher, canary_step=0)


def cli(*args: str) -> SimpleNamespace:
    result = CliRunner().invoke(main, list(args), catch_exceptions=False)
    return SimpleNamespace(code=result.exit_code, out=" ".join(result.output.split()), raw=result.output)


def waiting(env: SimpleNamespace, release, phase: str = "promote") -> str | None:
    return missing_approvals(env.product.manifest, env.book, env.book.get(release.id), ApprovalPhase(phase))


def test_a_valid_signature_counts_and_is_shown_signed(env: SimpleNamespace) -> None:
    release = canary_release(env.book)
    assert "waits for 1 more promote approval" in waiting(env, release)
    done = cli("approve", release.id, "--phase", "promote", "--as", "bob", "--key", str(env.keys["bob"]),
               "--comment", "canary looks fine")
    assert done.code == 0, done.out
    assert "by bob (signed)" in done.out and "every required approval is in" in done.out
    [approval] = env.book.approvals(release.id)
    assert approval.signed and "subject: " + release.id in approval.statement
    event = next(e for e in env.book.events(release.id) if e.kind == "approval:promote")
    assert event.payload["signature"] == approval.signature  # the chain's hash covers the signature
    assert waiting(env, release) is None


def test_unsigned_approval_is_refused_where_signatures_are_required(env: SimpleNamespace) -> None:
    release = canary_release(env.book)
    with pytest.raises(ReleaseError, match="needs a signed approval.*--key"):
        approve(env.product.manifest, env.book, release.id, "promote", "bob")
    refused = cli("approve", release.id, "--phase", "promote", "--as", "bob")  # no --key, no agent
    assert refused.code == 2 and "no SSH agent" in refused.out and "--key" in refused.out
    assert env.book.approvals(release.id) == []


@pytest.mark.parametrize("signer,claimed,why", [
    ("mallory", "bob", "signed with key SHA256:"),  # a key outside the rule's signers
    ("carol", "bob", "signed with the key of carol, who launched release"),  # the launcher's own key
    ("alice", "bob", "which is not bob's (it belongs to alice)"),  # a member's key, another's name
])
def test_forged_signatures_are_refused_naming_why(env: SimpleNamespace, signer: str, claimed: str, why: str) -> None:
    release = canary_release(env.book)
    forged = sign_approval(env.book, release, "promote", claimed, key=env.keys[signer])
    with pytest.raises(ReleaseError, match="approval refused") as refused:
        approve(env.product.manifest, env.book, release.id, "promote", claimed, signed=forged)
    assert why in str(refused.value)
    assert env.book.approvals(release.id) == []


def test_the_launcher_cannot_approve_even_with_a_valid_signature(env: SimpleNamespace) -> None:
    release = canary_release(env.book)
    own = sign_approval(env.book, release, "promote", "carol", key=env.keys["carol"])
    with pytest.raises(ReleaseError, match="carol launched release .* cannot approve it \\(maker-checker\\)"):
        approve(env.product.manifest, env.book, release.id, "promote", "carol", signed=own)


def test_a_statement_for_another_release_or_an_older_one_is_refused(env: SimpleNamespace) -> None:
    older = canary_release(env.book, version="1.1.0")
    old_signature = sign_approval(env.book, older, "promote", "bob", key=env.keys["bob"])
    approve(env.product.manifest, env.book, older.id, "promote", "bob", signed=old_signature)
    env.book.transition(older.id, S.ROLLING_BACK, "carol")
    env.book.transition(older.id, S.ROLLED_BACK, "carol")
    newer = canary_release(env.book, version="1.1.0")  # the same versions again
    with pytest.raises(ReleaseError, match=f"signature is for release {older.id}, not {newer.id} \\(replayed\\)"):
        approve(env.product.manifest, env.book, newer.id, "promote", "bob", signed=old_signature)
    with pytest.raises(ReleaseError, match="release_id is .* but the signed statement is for"):
        approve_signed(env.product.manifest, env.book, old_signature, release_id=newer.id)
    # copied into the database by someone with write access: recorded, but it does not count
    with sqlite3.connect(env.url.removeprefix("sqlite:///")) as db:
        db.execute("insert into approvals (release_id, phase, approver, comment, created_at, statement, signature) "
                   "select ?, phase, approver, comment, created_at, statement, signature from approvals where release_id = ?",
                   (newer.id, older.id))
    assert "not counted: bob's signature is for release " + older.id in waiting(env, newer)


def test_rows_written_straight_into_the_ledger_do_not_count(env: SimpleNamespace) -> None:
    release = canary_release(env.book)
    env.book.add_approval(release.id, "promote", "bob", "inserted without a signature")
    assert "not counted: bob's approval is unsigned" in waiting(env, release)
    signed = SignedDocument.parse(sign_approval(env.book, release, "promote", "alice", key=env.keys["alice"]))
    edited = signed.statement.replace("catalog=1.1.0", "catalog=9.9.9")
    env.book.add_approval(release.id, "promote", "alice", None, edited, signed.signature)
    message = waiting(env, release)
    assert "alice's signature does not verify" in message
    # signed properly, but over a ledger head this ledger never had (made up, or another ledger's)
    made_up = replace(statement_for(env.book, release, "contract", "bob"), head_seq=10_000, head_hash="f" * 64).text()
    with pytest.raises(ReleaseError, match="names ledger head 10000, which is not in this ledger's chain after release"):
        approve(env.product.manifest, env.book, release.id, "contract", "bob",
                signed=SignedDocument(made_up, sign(made_up, APPROVAL_NAMESPACE, env.keys["bob"])).text())


def test_sign_only_prints_a_document_the_job_or_the_library_records_once(env: SimpleNamespace) -> None:
    release = canary_release(env.book)
    printed = cli("approve", release.id, "--phase", "contract", "--as", "alice", "--key", str(env.keys["alice"]),
                  "--sign-only")
    assert printed.code == 0 and printed.raw.startswith("release-approval v1\n")
    assert "-----BEGIN SSH SIGNATURE-----" in printed.raw and env.book.approvals(release.id) == []
    recorded = approve_signed(env.product.manifest, env.book, "\r\n" + printed.raw.replace("\n", "\r\n"))  # pasted
    assert (recorded.approver, recorded.phase, recorded.signed) == ("alice", "contract", True)
    with pytest.raises(ReleaseError, match="already approved"):
        approve_signed(env.product.manifest, env.book, printed.raw)


def test_the_ssh_agent_signs_by_default(env: SimpleNamespace) -> None:
    release = canary_release(env.book)
    with ssh_agent(env.keys["alice"]):
        done = cli("approve", release.id, "--phase", "contract", "--as", "alice")
    assert done.code == 0 and "(signed)" in done.out, done.out
    assert env.book.approvals(release.id, "contract")[0].signed


def test_ssh_keygen_verifies_what_we_sign(env: SimpleNamespace) -> None:
    """Git-style semantics: the same statement, signature, namespace and allowed_signers file that
    OpenSSH's own verifier accepts (and refuses under another principal)."""
    release = canary_release(env.book)
    document = SignedDocument.parse(sign_approval(env.book, release, "promote", "bob", key=env.keys["bob"]))
    signature = env.tmp / "approval.sig"
    signature.write_text(document.signature)

    def verify(principal: str) -> int:
        return subprocess.run(["ssh-keygen", "-Y", "verify", "-f", str(env.manifest.parent / "allowed_signers"),
                               "-I", principal, "-n", APPROVAL_NAMESPACE, "-s", str(signature)],
                              input=document.statement.encode(), capture_output=True, check=False).returncode

    assert verify("bob") == 0 and verify("alice") != 0


def test_bad_signers_are_manifest_errors_naming_the_field(env: SimpleNamespace) -> None:
    text = env.manifest.read_text()
    env.manifest.write_text(text.replace("signers: allowed_signers", "signers: missing_signers"))
    with pytest.raises(ManifestError, match=r"approvals\[0\].signers: cannot read allowed signers file"):
        load_product(env.manifest)
    (env.manifest.parent / "missing_signers").write_text("bob ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIO26Q8cU5ghMUQ17\n")
    with pytest.raises(ManifestError, match="missing_signers: line 1: .* is not a valid OpenSSH public key"):
        load_product(env.manifest)
    (env.manifest.parent / "missing_signers").write_text(f"* {public(env.keys['bob'])}\n")
    with pytest.raises(ManifestError, match="principal pattern '\\*'; name each approver"):
        load_product(env.manifest)
    env.manifest.write_text(text.replace(", signers: allowed_signers", ""))
    with pytest.raises(ManifestError, match="signatures: optional"):
        load_product(env.manifest)


def test_the_dagster_approval_job_records_a_pasted_signed_approval(env: SimpleNamespace) -> None:
    """The Launchpad path: `--sign-only` output pasted into `signed_approval`; a document signed by a
    key outside the group, or claimed for another approver, fails the run with the reason."""
    release = canary_release(env.book)
    job = build_approval_job(env.product)

    def run(signed: str, **config: str):
        return job.execute_in_process(
            run_config={"ops": {"approve": {"config": {"signed_approval": signed, **config}}}},
            resources={"release_ledger": LedgerResource()}, instance=DagsterInstance.ephemeral(),
            tags={"dagster/user": "someone-else"}, raise_on_error=False)

    def failure(result) -> str:
        return " ".join(e.step_failure_data.user_failure_data.description or ""
                        for e in result.all_events if e.is_step_failure and e.step_failure_data.user_failure_data)

    forged = sign_approval(env.book, release, "contract", "alice", key=env.keys["mallory"])
    refused = run(forged)
    assert not refused.success and "which is not alice's" in failure(refused), failure(refused)
    printed = cli("approve", release.id, "--phase", "contract", "--as", "alice", "--key", str(env.keys["alice"]),
                  "--sign-only").raw
    claimed = run(printed, approver="bob")
    assert not claimed.success and "approver is bob but the signed statement is for alice" in failure(claimed)
    assert env.book.approvals(release.id) == []
    done = run(printed.replace("\n", "\r\n"), release_id=release.id)
    assert done.success, failure(done)
    [approval] = env.book.approvals(release.id)
    assert (approval.approver, approval.phase, approval.signed) == ("alice", "contract", True)
    assert done.dagster_run.tags["release/id"] == release.id
