"""The canary sensor's verdicts in the ledger: one event per decision.

A decision stays true on every tick until its run moves the release, and a daemon killed between
recording a verdict and storing its cursor sees the decision again after the restart: the run key
(release, step, decision) that Dagster uses to launch the run once also keeps the verdict once.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any


def record_verdict_once(book: Any, release_id: str, run_key: str, verdict: Mapping[str, Any]) -> bool:
    """Record the verdict unless one with this run key is already in the ledger; True if recorded."""
    if any(e.kind == "verdict" and e.payload.get("run_key") == run_key for e in book.events(release_id)):
        return False
    book.record(release_id, "verdict", "canary-sensor", payload={**verdict, "run_key": run_key})
    return True
