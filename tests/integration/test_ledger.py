"""The ledger on real databases: every behaviour on SQLite and PostgreSQL, concurrency on both."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from datetime import UTC
from pathlib import Path
from typing import TypeVar

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from release_pipelines.resources.ledger import DEFAULT_URL, ENV_VAR, Ledger
from release_pipelines.resources.ledger_schema import (
    GENESIS_HASH,
    VERSION_TABLE,
    event_hash,
    metadata,
)
from sqlalchemy import create_engine, text
from sqlalchemy.exc import IntegrityError

from release_pipelines.core.errors import (
    IllegalTransition,
    LedgerError,
    ReleaseAlreadyActive,
    ReleaseError,
)
from release_pipelines.core.states import ReleaseState
from tests.conftest import _create_database, _drop_database

T = TypeVar("T")
S = ReleaseState
VERSIONS = {"api": "2.0.0", "web": "1.4.0"}
PREVIOUS = {"api": "1.9.0", "web": "1.3.2"}


BACKENDS = ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)]


@pytest.fixture(scope="module")
def shared_postgres(postgres_server_url: str) -> Iterator[str]:
    """One migrated Postgres database for the module, emptied before each test (CREATE DATABASE
    is the slow part of a Postgres test; tests of opening and migrating use `fresh_url`)."""
    url = _create_database(postgres_server_url, "rp_ledger")
    Ledger(url).close()
    yield url
    _drop_database(postgres_server_url, url)


@pytest.fixture(params=BACKENDS)
def url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """The same test runs against a SQLite file and an empty, migrated PostgreSQL database."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path}/ledger/ledger.db"  # parent folder does not exist yet
    url = request.getfixturevalue("shared_postgres")
    _sql(url, "TRUNCATE approvals, events, releases")
    _sql(url, "UPDATE event_chain_head SET seq = 0, hash = :h", h=GENESIS_HASH)
    return url


@pytest.fixture(params=BACKENDS)
def fresh_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A database no ledger has touched yet."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path}/ledger/ledger.db"
    return request.getfixturevalue("postgres_url")


@pytest.fixture
def ledger(url: str) -> Iterator[Ledger]:
    with Ledger(url) as opened:
        yield opened


def _sql(url: str, statement: str, **params: object) -> None:
    """Raw SQL behind the ledger's back, as an intruder or a careless admin would."""
    engine = create_engine(url.replace("postgresql://", "postgresql+psycopg2://"))
    try:
        with engine.begin() as conn:
            conn.execute(text(statement), params)
    finally:
        engine.dispose()


def _in_threads(count: int, work: Callable[[int], T]) -> list[T | BaseException]:
    """Run work(i) in `count` threads released together; return each result or exception."""
    barrier = threading.Barrier(count)
    results: list[T | BaseException] = [RuntimeError("did not run")] * count

    def run(i: int) -> None:
        barrier.wait()
        try:
            results[i] = work(i)
        except BaseException as exc:  # noqa: BLE001 - collected and asserted on by the test
            results[i] = exc

    threads = [threading.Thread(target=run, args=(i,)) for i in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    return results


def _start(ledger: Ledger, product: str = "shop") -> str:
    return ledger.start_release(product, VERSIONS, PREVIOUS, actor="alice", run_id="run-1").id


# -- releases and transitions -------------------------------------------------------------------


def test_start_release_is_planned_with_an_event(ledger: Ledger) -> None:
    release = ledger.start_release(
        "shop", VERSIONS, PREVIOUS, "alice", "run-1", {"ticket": "REL-7"}
    )
    assert release.id.startswith("shop-") and len(release.id.split("-")[-1]) == 4
    assert release.state is S.PLANNED and release.versions == VERSIONS
    assert release.created_at.tzinfo is UTC
    assert ledger.get(release.id) == release
    [event] = ledger.events(release.id)
    assert (event.seq, event.kind, event.actor, event.run_id) == (
        1,
        "state:planned",
        "alice",
        "run-1",
    )
    assert event.payload == {"ticket": "REL-7", "versions": VERSIONS, "previous": PREVIOUS}
    assert event.created_at.tzinfo is UTC


def test_happy_path_through_canary_steps_then_a_new_release(ledger: Ledger) -> None:
    rid = _start(ledger)
    ledger.transition(rid, S.PREFLIGHT, "bot")
    ledger.transition(rid, S.EXPANDING, "bot")
    assert ledger.transition(rid, S.CANARY, "bot", canary_step=1).canary_step == 1
    assert ledger.transition(rid, "canary", "bot", run_id="run-2", canary_step=2).canary_step == 2
    for target in (S.PROMOTING, S.BAKING, S.CONTRACTING, S.COMPLETED):
        release = ledger.transition(rid, target, "bot")
    assert release == ledger.get(rid)
    assert (release.state, release.canary_step, release.run_id) == (S.COMPLETED, 2, "run-2")
    kinds = [e.kind for e in ledger.events(rid)]
    assert kinds[-3:] == ["state:baking", "state:contracting", "state:completed"]
    assert ledger.events(rid)[4].payload == {"from": "canary", "canary_step": 2}
    assert ledger.active_release("shop") is None
    assert _start(ledger) != rid  # a completed release no longer blocks the product


def test_illegal_transition_names_current_state_and_changes_nothing(ledger: Ledger) -> None:
    rid = _start(ledger)
    ledger.transition(rid, S.PREFLIGHT, "bot")
    with pytest.raises(
        IllegalTransition, match=f"release {rid} is preflight; it cannot move to baking"
    ):
        ledger.transition(rid, S.BAKING, "bot")
    assert ledger.get(rid).state is S.PREFLIGHT
    assert len(ledger.events()) == 2
    with pytest.raises(ReleaseError, match="canary_step only applies"):
        ledger.transition(rid, S.EXPANDING, "bot", canary_step=1)


def test_rollback_is_reentrant_and_frees_the_product(ledger: Ledger) -> None:
    rid = _start(ledger)
    ledger.transition(rid, S.FAILED, "bot", payload={"reason": "gate timed out"})
    with pytest.raises(
        ReleaseAlreadyActive, match=f"release {rid} of shop is already active \\(state failed\\)"
    ):
        _start(ledger)
    ledger.transition(rid, S.ROLLING_BACK, "carol")
    ledger.transition(rid, S.ROLLING_BACK, "carol")
    ledger.transition(rid, S.ROLLED_BACK, "carol")
    with pytest.raises(IllegalTransition, match="rolled_back is final"):
        ledger.transition(rid, S.PROMOTING, "bot")
    _start(ledger)


def test_second_active_release_refused_with_a_clear_message(ledger: Ledger) -> None:
    rid = _start(ledger)
    other = _start(ledger, "billing")  # other products are independent
    with pytest.raises(ReleaseAlreadyActive) as info:
        _start(ledger)
    assert str(info.value) == (
        f"release {rid} of shop is already active (state planned); wait for it or roll it back"
    )
    assert {r.id for r in ledger.releases()} == {rid, other}


def test_the_database_itself_refuses_a_second_active_release(ledger: Ledger, url: str) -> None:
    _start(ledger)
    insert = (
        "INSERT INTO releases (id, product, state, versions, previous, created_at, updated_at,"
        " created_by, updated_by) VALUES (:id, 'shop', :state, '{}', '{}', :now, :now, 'x', 'x')"
    )
    now = "2026-11-26 10:00:00"
    _sql(url, insert, id="shop-done", state="completed", now=now)  # terminal rows do not count
    with pytest.raises(IntegrityError):
        _sql(url, insert, id="shop-sneaky", state="canary", now=now)


# -- events, approvals, queries -----------------------------------------------------------------


def test_record_and_queries(ledger: Ledger) -> None:
    first = _start(ledger, "shop")
    ledger.transition(first, S.FAILED, "bot")
    ledger.transition(first, S.ROLLING_BACK, "bot")
    ledger.transition(first, S.ROLLED_BACK, "bot")
    second = _start(ledger, "shop")
    billing = _start(ledger, "billing")
    event = ledger.record(second, "gate:error-rate", "judge", "run-9", {"value": 0.01, "ok": True})
    ledger.record(None, "ledger:note", "ops", payload={"text": "maintenance window"})
    assert (event.seq, event.release_id, event.payload["ok"]) == (7, second, True)
    assert ledger.events(second)[-1] == event
    assert [e.seq for e in ledger.events()] == list(range(1, 9))
    assert [r.id for r in ledger.releases("shop")] == [second, first]
    assert [r.id for r in ledger.releases(limit=1)] == [billing]
    assert ledger.active_release("shop").id == second
    with pytest.raises(ReleaseError, match="reserved"):
        ledger.record(second, "state:completed", "bot")
    with pytest.raises(ReleaseError, match="must be JSON data"):
        ledger.record(second, "gate", "bot", payload={"when": object()})


def test_stable_versions_replay_finished_releases(ledger: Ledger) -> None:
    assert ledger.stable_versions("shop") == {}
    done = ledger.start_release("shop", {"api": "2.0.0"}, {"api": "1.9.0", "web": "1.3.2"}, "a").id
    for target in (S.PREFLIGHT, S.CANARY, S.PROMOTING, S.COMPLETED):
        ledger.transition(done, target, "bot")
    undone = ledger.start_release("shop", {"web": "1.4.0"}, {"web": "1.3.2"}, "a").id
    assert ledger.stable_versions("shop") == {"api": "2.0.0", "web": "1.3.2"}  # active: not yet
    ledger.transition(undone, S.ROLLING_BACK, "bot")
    ledger.transition(undone, S.ROLLED_BACK, "bot")
    assert ledger.stable_versions("shop") == {"api": "2.0.0", "web": "1.3.2"}


def test_unknown_release_error_lists_recent_ones(ledger: Ledger) -> None:
    with pytest.raises(ReleaseError, match="no release 'nope'.*the ledger has no releases yet"):
        ledger.get("nope")
    rid = _start(ledger)
    for attempt in (
        lambda: ledger.get("nope"),
        lambda: ledger.transition("nope", S.PREFLIGHT, "bot"),
        lambda: ledger.record("nope", "gate", "bot"),
    ):
        with pytest.raises(ReleaseError, match=f"recent releases: {rid}"):
            attempt()


def test_approvals(ledger: Ledger) -> None:
    rid = _start(ledger)
    ledger.add_approval(rid, "promote", "carol", "dashboards look fine")
    ledger.add_approval(rid, "promote", "dave")
    ledger.add_approval(rid, "contract", "carol")
    with pytest.raises(ReleaseError, match="carol has already approved phase promote"):
        ledger.add_approval(rid, "promote", "carol")
    assert [a.approver for a in ledger.approvals(rid, "promote")] == ["carol", "dave"]
    assert len(ledger.approvals(rid)) == 3
    assert ledger.approvals(rid)[0].created_at.tzinfo is UTC
    assert [e.kind for e in ledger.events(rid)][1:] == ["approval:promote"] * 2 + [
        "approval:contract"
    ]
    with pytest.raises(ReleaseError, match="no release"):
        ledger.add_approval("nope", "promote", "carol")


# -- hash chain ---------------------------------------------------------------------------------


def _five_events(ledger: Ledger) -> str:
    rid = _start(ledger)
    for kind in ("step:1", "step:2", "step:3", "step:4"):
        ledger.record(rid, kind, "bot", payload={"n": kind})
    return rid


TAMPERING = {
    "payload edited": (
        'UPDATE events SET payload = \'{"n": "forged"}\' WHERE seq = 3',
        "event 3 (step:2) was altered",
    ),
    "middle event deleted": (
        "DELETE FROM events WHERE seq = 3",
        "event 3 is missing (seq jumps from 2 to 4)",
    ),
    "last event deleted": ("DELETE FROM events WHERE seq = 5", "events 5..5 are missing"),
    "hash overwritten": (
        "UPDATE events SET hash = (SELECT hash FROM events WHERE seq = 2) WHERE seq = 3",
        "event 3 (step:2) was altered",
    ),
    "prev_hash overwritten": (
        "UPDATE events SET prev_hash = (SELECT prev_hash FROM events WHERE seq = 2) WHERE seq = 4",
        "event 4 (step:3) was altered",
    ),
}


def test_verify_passes_on_an_intact_chain(ledger: Ledger) -> None:
    assert ledger.verify().ok and ledger.verify().checked == 0
    _five_events(ledger)
    assert (ledger.verify().ok, ledger.verify().checked, ledger.verify().first_problem) == (
        True,
        5,
        None,
    )


@pytest.mark.parametrize(("statement", "problem"), TAMPERING.values(), ids=TAMPERING.keys())
def test_verify_names_the_first_broken_link(
    ledger: Ledger, url: str, statement: str, problem: str
) -> None:
    _five_events(ledger)
    _sql(url, statement)
    report = ledger.verify()
    assert not report.ok
    assert problem in report.first_problem


def test_verify_names_a_self_consistent_event_that_does_not_link(ledger: Ledger, url: str) -> None:
    """A forger who re-hashes event 3 onto event 1 (cutting 2 out) leaves a valid own hash."""
    _five_events(ledger)
    first, _, third = ledger.events()[:3]
    forged = event_hash(
        first.hash,
        seq=third.seq,
        release_id=third.release_id,
        kind=third.kind,
        actor=third.actor,
        run_id=third.run_id,
        created_at=third.created_at,
        payload=third.payload,
    )
    _sql(url, "UPDATE events SET prev_hash = :p, hash = :h WHERE seq = 3", p=first.hash, h=forged)
    report = ledger.verify()
    assert report.first_problem.startswith("event 3 is out of order: it does not link to event 2")
    assert report.checked == 2


# -- opening, migrations, concurrency -----------------------------------------------------------


def test_reopening_keeps_data_and_schema(fresh_url: str) -> None:
    with Ledger(fresh_url) as first:
        rid = _start(first)
    with Ledger(fresh_url) as again:
        assert again.get(rid).state is S.PLANNED and again.verify().ok
        engine = create_engine(again.url)
        with engine.connect() as conn:
            assert conn.execute(
                text(f"SELECT version_num FROM {VERSION_TABLE}")
            ).scalars().all() == ["0004"]
            assert (
                compare_metadata(
                    MigrationContext.configure(conn, opts={"version_table": VERSION_TABLE}),
                    metadata,
                )
                == []
            )
        engine.dispose()


def test_concurrent_appends_never_fork_the_chain(ledger: Ledger, url: str) -> None:
    rid = _start(ledger)

    def append(i: int) -> int:
        with Ledger(url) as own:  # a separate engine: separate connections, like separate processes
            return own.record(rid, "step", f"worker-{i}").seq

    results = _in_threads(8, append)
    assert sorted(results) == list(range(2, 10))
    assert ledger.verify().ok


@pytest.mark.postgres
def test_twenty_concurrent_openers_of_a_new_database(postgres_url: str) -> None:
    def open_and_count(_: int) -> int:
        with Ledger(postgres_url) as own:
            return len(own.events())

    assert _in_threads(20, open_and_count) == [0] * 20


@pytest.mark.postgres
def test_twenty_concurrent_starts_exactly_one_wins(postgres_url: str) -> None:
    Ledger(postgres_url).close()
    ledgers = [Ledger(postgres_url) for _ in range(20)]
    try:
        results = _in_threads(20, lambda i: _start(ledgers[i]))
    finally:
        for own in ledgers:
            own.close()
    winners = [r for r in results if isinstance(r, str)]
    losers = [r for r in results if isinstance(r, ReleaseAlreadyActive)]
    assert len(winners) == 1 and len(losers) == 19, results
    assert all(f"release {winners[0]} of shop is already active" in str(e) for e in losers)


def test_from_env_defaults_to_a_sqlite_file_under_dot_release(monkeypatch, tmp_path) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv(ENV_VAR, raising=False)
    with Ledger.from_env() as ledger:
        assert ledger.url == DEFAULT_URL
    assert (tmp_path / ".release" / "ledger.db").is_file()
    monkeypatch.setenv(ENV_VAR, f"sqlite:///{tmp_path}/other.db")
    with Ledger.from_env() as ledger:
        assert ledger.url.endswith("other.db")


@pytest.mark.parametrize(
    ("bad_url", "reason"),
    [
        ("postgresql://ops:s3cret@127.0.0.1:1/ledger", "Connection refused"),
        ("not a url at all s3cret", "not a database URL"),
        ("nosuchdb://ops:s3cret@host/ledger", "unknown database driver"),
    ],
)
def test_open_failures_become_ledger_errors_without_secrets(bad_url: str, reason: str) -> None:
    with pytest.raises(LedgerError) as info:
        Ledger(bad_url)
    message = str(info.value)
    assert "s3cret" not in message
    assert reason in message and ENV_VAR in message
    assert message.startswith("cannot open the release ledger at ")
