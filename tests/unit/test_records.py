"""Release notes rendered from a real (SQLite) ledger trail: every operation, in order."""

from __future__ import annotations

from pathlib import Path

from release_pipelines.resources.ledger import Ledger

from release_pipelines.core.records import duration_text, record_metadata, render_release_notes
from release_pipelines.core.states import ReleaseState as S


def _released(book: Ledger) -> str:
    rid = book.start_release("shop", {"orders": "1.1.0"}, {"orders": "1.0.0"}, "alice", "run-1").id
    book.transition(rid, S.PREFLIGHT, "alice", payload={"plan": [["shop_db"], ["orders"]]})
    book.transition(rid, S.EXPANDING, "alice")
    book.record(rid, "migrate:start", "alice", payload={"database": "shop_db", "from_revision": "0003", "pending": ["0004"]})
    book.record(rid, "migrate:done", "alice", payload={"database": "shop_db", "from_revision": "0003",
                                                       "to_revision": "0004", "revisions": ["0004"], "seconds": 0.42})
    book.record(rid, "gate", "alice", payload={"database": "shop_db", "table": "orders", "gate": "row_conservation",
                                               "passed": True, "summary": "120 rows before, 120 after"})
    book.record(rid, "deploy:done", "alice", payload={"service": "orders", "version": "1.1.0"})
    book.transition(rid, S.CANARY, "alice", canary_step=0, payload={"weights": {"orders": 10}})
    book.record(rid, "verdict", "canary-sensor", payload={"step": 0, "verdict": "pass", "reason": "errors within bounds",
                                                          "decided_by": "judge_errors"})
    book.add_approval(rid, "promote", "bob", "looks good | ship it")
    book.transition(rid, S.PROMOTING, "canary-sensor")
    book.record(rid, "promote:done", "canary-sensor", payload={"service": "orders", "version": "1.1.0"})
    book.transition(rid, S.BAKING, "canary-sensor")
    book.transition(rid, S.COMPLETED, "canary-sensor")
    return rid


def test_release_notes_list_services_migrations_gates_verdicts_approvals_and_states(tmp_path: Path) -> None:
    with Ledger(f"sqlite:///{tmp_path}/ledger.db") as book:
        rid = _released(book)
        release = book.get(rid)
        notes = render_release_notes(release, book.events(rid), book.approvals(rid))
        meta = record_metadata(release, book.events(rid))
    assert notes.startswith(f"# Release {rid}: completed")
    assert "| orders | 1.0.0 | 1.1.0 | promoted to stable |" in notes
    assert "| shop_db | expand | 0003 | 0004 | 0004 | 0.42 |" in notes
    assert "| shop_db | orders | row_conservation | passed | 120 rows before, 120 after |" in notes
    assert "| 0 | pass | judge_errors | errors within bounds |" in notes
    assert "| promote | bob |" in notes and "looks good \\| ship it" in notes  # pipes escaped
    states = [line.split("|")[2].strip() for line in notes.split("## State transitions")[1].splitlines()
              if line.startswith("| ") and not line.startswith("| #")]
    assert states[:5] == ["planned", "preflight", "expanding", "canary (step 0)", "promoting"]
    assert states[-1] == "completed"
    operations = notes.split("## Operations in order")[1]
    kinds = [line.split("**")[1] for line in operations.strip().splitlines()]
    assert kinds[0] == "state:planned" and kinds[-1] == "state:completed" and "approval:promote" in kinds
    assert len(kinds) == meta["operations"] == 14
    assert meta["state"] == "completed" and meta["versions"] == "orders=1.1.0"


def test_break_glass_and_failures_are_called_out(tmp_path: Path) -> None:
    with Ledger(f"sqlite:///{tmp_path}/ledger.db") as book:
        rid = book.start_release("shop", {"orders": "1.2.0"}, {"orders": "1.1.0"}, "alice",
                                 payload={"break_glass_reason": "INC-42 payment outage"}).id
        book.transition(rid, S.PREFLIGHT, "alice")
        book.record(rid, "step:failed", "alice", payload={"step": "deploy orders 1.2.0", "error": "health check failed"})
        book.transition(rid, S.ROLLING_BACK, "alice", payload={"reason": "run failed"})
        book.record(rid, "revert:done", "alice", payload={"service": "orders", "action": "canary stopped"})
        book.transition(rid, S.ROLLED_BACK, "alice")
        notes = render_release_notes(book.get(rid), book.events(rid))
    assert "**Break-glass launch** (outside the release window): INC-42 payment outage" in notes
    assert "**Failed step** deploy orders 1.2.0: health check failed" in notes
    assert "| orders | 1.1.0 | 1.2.0 | rolled back: canary stopped |" in notes
    assert "run failed" in notes


def test_duration_text() -> None:
    assert duration_text(3.25) == "3.2 s"
    assert duration_text(245) == "4m 05s"
    assert duration_text(2 * 3600 + 3 * 60 + 4) == "2h 03m 04s"
    assert duration_text(3 * 86400 + 4 * 3600) == "3d 04h"
