"""A decision seen on several ticks (or again after a daemon restart) is one verdict in the ledger."""

from __future__ import annotations

from pathlib import Path

from release_pipelines.resources.ledger import Ledger
from release_pipelines.steps.verdicts import record_verdict_once


def test_a_verdict_is_recorded_once_per_run_key(tmp_path: Path) -> None:
    book = Ledger(f"sqlite:///{tmp_path / 'ledger.db'}")
    release = book.start_release("shop", {"orders": "1.1.0"}, {"orders": "1.0.0"}, "alice")
    verdict = {"step": 0, "verdict": "pass", "reason": "error rate within bounds", "decided_by": "evidence"}
    assert record_verdict_once(book, release.id, f"{release.id}:0:promote", verdict)
    assert not record_verdict_once(book, release.id, f"{release.id}:0:promote", verdict)  # next tick / restart
    assert record_verdict_once(book, release.id, f"{release.id}:1:promote", {**verdict, "step": 1})
    recorded = [e.payload for e in book.events(release.id) if e.kind == "verdict"]
    assert [(v["step"], v["run_key"]) for v in recorded] == [(0, f"{release.id}:0:promote"),
                                                              (1, f"{release.id}:1:promote")]
    assert book.verify().ok
