"""The canary sensor's verdicts in the ledger: one event per decision.

A decision stays true on every tick until its run moves the release, and a daemon killed between
recording a verdict and storing its cursor sees the decision again after the restart: the run key
(release, step, decision) that Dagster uses to launch the run once also keeps the verdict once.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any

from release_pipelines.core.canary_tick import TickPhase, tick_phase
from release_pipelines.core.product import Product


def record_verdict_once(book: Any, release_id: str, run_key: str, verdict: Mapping[str, Any]) -> bool:
    """Record the verdict unless one with this run key is already in the ledger; True if recorded."""
    if any(e.payload.get("run_key") == run_key for e in book.events(release_id, kind="verdict")):
        return False
    book.record(release_id, "verdict", "canary-sensor", payload={**verdict, "run_key": run_key})
    return True


def recorded_failures(product: Product, release: Any, book: Any, now: datetime) -> dict[str, str]:
    """Rollback run key -> reason of each FAIL verdict already in the ledger for `release`; read
    only while the release is judged (a canary step or the bake), the phases a FAIL comes from.
    The canary plan requests those rollbacks again (`TickReads.failed`): a FAIL is final."""
    if tick_phase(product, release, now) not in (TickPhase.canary, TickPhase.bake):
        return {}
    return {e.payload["run_key"]: e.payload.get("reason", "") for e in book.events(release.id, kind="verdict")
            if e.payload.get("verdict") == "fail" and "run_key" in e.payload}
