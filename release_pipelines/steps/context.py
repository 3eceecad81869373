"""What every step gets: the release it works for, the ledger, who acts, and a log."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from release_pipelines.core.product import Product


@dataclass(frozen=True)
class StepContext:
    product: Product
    ledger: Any  # release_pipelines.resources.ledger.Ledger; typed loosely to keep this module import-light
    release_id: str
    actor: str
    run_id: str | None = None
    log: Callable[[str], None] = print

    def record(self, kind: str, **payload: Any) -> None:
        """Append an event to the release's audit trail (before and after each action)."""
        self.ledger.record(self.release_id, kind, self.actor, run_id=self.run_id, payload=payload)
