"""The `<product>_ledger_checkpoint` sensor: signs the ledger's chain head with a real ssh-keygen
deployment key when it moved, keeps the copy outside the database, observes `releases/<product>`
in a real Dagster instance; products sharing one ledger make one checkpoint per head; without a
usable key it says which variable to set; `release verify-ledger` passes afterwards."""

from __future__ import annotations

import dataclasses
import threading
from pathlib import Path
from types import SimpleNamespace

import pytest
from click.testing import CliRunner
from dagster import AssetKey, DagsterInstance, DefaultSensorStatus, build_sensor_context

from release_pipelines.cli.main import main
from release_pipelines.core.states import ReleaseState as S
from release_pipelines.orchestration.checkpoints import build_checkpoint_sensor, checkpoint_tick
from release_pipelines.orchestration.dagster_resources import LedgerResource
from release_pipelines.orchestration.definitions import build_definitions
from release_pipelines.resources.checkpoints import CheckpointSettings, read_copies
from release_pipelines.resources.ledger import Ledger
from release_pipelines.resources.manifest_files import load_products
from release_pipelines.resources.settings import example_manifests
from tests.ssh_keys import make_keys


@pytest.fixture
def env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """A SQLite ledger holding one finished shop release, the deployment key and a copy file."""
    keys = make_keys(tmp_path / "keys", "deploy")
    url = f"sqlite:///{tmp_path / 'ledger.db'}"
    copies = tmp_path / "anchors" / "checkpoints.jsonl"
    monkeypatch.setenv("RELEASE_LEDGER_URL", url)
    monkeypatch.setenv("RELEASE_CHECKPOINT_KEY", str(keys["deploy"]))
    monkeypatch.setenv("RELEASE_CHECKPOINT_SIGNERS", f"{keys['deploy']}.pub")
    monkeypatch.setenv("RELEASE_CHECKPOINT_FILE", str(copies))
    monkeypatch.delenv("RELEASE_CHECKPOINT_WEBHOOK", raising=False)
    book = Ledger(url)
    release = book.start_release("shop", {"orders": "1.0.0"}, {}, "ci-launcher")
    book.transition(release.id, S.PREFLIGHT, "ci-launcher")
    book.transition(release.id, S.ROLLING_BACK, "ci-launcher")
    book.transition(release.id, S.ROLLED_BACK, "ci-launcher")
    [shop] = load_products(example_manifests())
    billing = dataclasses.replace(shop, manifest=shop.manifest.model_copy(update={"product": "billing"}))
    instance = DagsterInstance.ephemeral()
    yield SimpleNamespace(book=book, url=url, keys=keys, copies=copies, shop=shop, billing=billing, instance=instance)
    instance.dispose()
    book.close()


class Sensor:
    """One product's checkpoint sensor as the daemon runs it: its cursor kept between ticks, its
    observations stored in the instance."""

    def __init__(self, env: SimpleNamespace, product) -> None:
        self.env, self.definition, self.cursor = env, build_checkpoint_sensor(product), None

    def tick(self):
        context = build_sensor_context(instance=self.env.instance, cursor=self.cursor,
                                       resources={"release_ledger": LedgerResource(url=self.env.url)})
        result = self.definition.evaluate_tick(context)
        self.cursor = result.cursor
        for event in result.asset_events:
            self.env.instance.report_runless_asset_event(event)
        return result


def observed(env: SimpleNamespace, product: str) -> list[int]:
    """The checkpoint sequence numbers observed on releases/<product>, oldest first."""
    records = env.instance.fetch_observations(AssetKey(["releases", product]), limit=100).records
    return sorted(r.asset_observation.metadata["checkpoint_seq"].value for r in records)


def verify_ledger() -> tuple[int, str]:
    result = CliRunner().invoke(main, ["verify-ledger"], catch_exceptions=False)
    return result.exit_code, " ".join(result.output.split())


def test_first_tick_checkpoints_the_head_then_skips_until_it_moves(env) -> None:
    sensor = Sensor(env, env.shop)
    first = sensor.tick()
    seq, head = env.book.head()
    [checkpoint] = env.book.checkpoints()
    assert (checkpoint.seq, checkpoint.head) == (seq, head)
    [observation] = first.asset_events
    assert observation.asset_key == AssetKey(["releases", "shop"])
    assert observation.metadata["checkpoint_seq"].value == seq and observation.metadata["checkpoint_head"].value == head
    assert "-----BEGIN SSH SIGNATURE-----" in observation.metadata["checkpoint_signature"].value
    assert [c.seq for c in read_copies(env.copies)] == [seq]  # the same copy the CLI writes

    second = sensor.tick()
    assert not second.asset_events and second.skip_message == f"ledger head {seq} already checkpointed"
    assert len(env.book.checkpoints()) == 1

    env.book.record(None, "note", "ops", payload={"after": "the first checkpoint"})
    third = sensor.tick()
    assert [c.seq for c in env.book.checkpoints()] == [seq, seq + 1]
    assert [o.metadata["checkpoint_seq"].value for o in third.asset_events] == [seq + 1]
    assert observed(env, "shop") == [seq, seq + 1]
    assert [c.seq for c in read_copies(env.copies)] == [seq, seq + 1]
    code, out = verify_ledger()
    assert code == 0 and "2 checkpoint(s) match" in out, out


def test_products_sharing_a_ledger_make_one_checkpoint_per_head(env) -> None:
    shop, billing = Sensor(env, env.shop), Sensor(env, env.billing)
    shop.tick()
    billing.tick()  # the head shop's sensor signed: reported on releases/billing, not signed again
    seq, _ = env.book.head()
    assert [c.seq for c in env.book.checkpoints()] == [seq]
    assert observed(env, "shop") == observed(env, "billing") == [seq]
    assert "already checkpointed" in shop.tick().skip_message and "already checkpointed" in billing.tick().skip_message

    env.book.record(None, "note", "ops")
    billing.tick()
    shop.tick()
    assert [c.seq for c in env.book.checkpoints()] == [seq, seq + 1]
    assert observed(env, "shop") == observed(env, "billing") == [seq, seq + 1]
    assert [c.seq for c in read_copies(env.copies)] == [seq, seq + 1]  # one copy per checkpoint too
    code, out = verify_ledger()
    assert code == 0 and "2 checkpoint(s) match" in out, out


def test_sensors_ticking_at_once_store_one_checkpoint(env) -> None:
    """Several processes on one ledger (each its own connection) sign the same head at once: the
    first insert wins, the others return that checkpoint instead of failing or storing a second."""
    books = [Ledger(env.url) for _ in range(4)]
    start = threading.Barrier(len(books))
    results: list = [None] * len(books)

    def tick(n: int) -> None:
        start.wait()
        results[n] = checkpoint_tick(books[n], f"product{n}", CheckpointSettings.from_env(), None)

    threads = [threading.Thread(target=tick, args=(n,)) for n in range(len(books))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    seq, _ = env.book.head()
    assert [c.seq for c in env.book.checkpoints()] == [seq]
    assert {r.asset_events[0].metadata["checkpoint_seq"].value for r, _warnings in results} == {seq}
    for book in books:
        book.close()
    code, out = verify_ledger()
    assert code == 0 and "1 checkpoint(s) match" in out, out


def test_without_a_key_the_sensor_skips_and_names_the_variable(env, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("RELEASE_CHECKPOINT_KEY")
    result = Sensor(env, env.shop).tick()
    assert not result.asset_events and "set RELEASE_CHECKPOINT_KEY" in result.skip_message
    assert env.book.checkpoints() == []


@pytest.mark.parametrize("key", ["missing", "not_a_key"])
def test_a_key_that_cannot_sign_fails_the_tick_naming_the_variable(env, key: str, tmp_path: Path,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / key
    if key == "not_a_key":
        path.write_text("not an SSH key\n")
    monkeypatch.setenv("RELEASE_CHECKPOINT_KEY", str(path))
    with pytest.raises(Exception, match=f"RELEASE_CHECKPOINT_KEY={path}"):
        Sensor(env, env.shop).tick()
    assert env.book.checkpoints() == []


def test_a_copy_that_fails_is_a_warning_and_the_checkpoint_still_counts(env, monkeypatch: pytest.MonkeyPatch) -> None:
    env.copies.mkdir(parents=True)  # a folder where the copy file should be: the append fails
    result, warnings = checkpoint_tick(env.book, "shop", CheckpointSettings.from_env(), None)
    seq, _ = env.book.head()
    assert [o.metadata["checkpoint_seq"].value for o in result.asset_events] == [seq]
    assert warnings == [f"checkpoint {seq} not copied to {env.copies}: Is a directory"]


def test_definitions_hold_one_checkpoint_sensor_per_product_running_only_with_a_key(
        env, monkeypatch: pytest.MonkeyPatch) -> None:
    sensor = build_definitions(example_manifests()).resolve_sensor_def("shop_ledger_checkpoint")
    assert sensor.default_status is DefaultSensorStatus.RUNNING and sensor.minimum_interval_seconds == 3600
    monkeypatch.delenv("RELEASE_CHECKPOINT_KEY")
    monkeypatch.setenv("RELEASE_CHECKPOINT_INTERVAL_SECONDS", "900")
    sensor = build_checkpoint_sensor(env.shop)
    assert sensor.default_status is DefaultSensorStatus.STOPPED and sensor.minimum_interval_seconds == 900

