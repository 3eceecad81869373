"""Rollback readiness of a live release: read what `core.readiness.assess` needs and ask it."""

from __future__ import annotations

from typing import Any

from release_pipelines.core.product import Product
from release_pipelines.core.readiness import RollbackReadiness, assess, rollback_durations
from release_pipelines.core.states import ReleaseState
from release_pipelines.resources.alembic_config import project_for
from release_pipelines.resources.migrations import load_revisions


def readiness_for(ledger: Any, product: Product, release: Any) -> RollbackReadiness:
    """Read what `assess` needs: the release's events, revision reversibility, past rollbacks."""
    reversible: dict[str, bool] = {}
    for database in product.manifest.databases:
        try:
            for info in load_revisions(project_for(database, product.directory)):
                reversible[info.revision] = info.reversible
        except Exception:  # noqa: BLE001, S112 - an unreadable history only loses precision
            continue
    past = rollback_durations(
        ledger.events(r.id) for r in ledger.releases(product.name, limit=50)
        if r.id != release.id and r.state is ReleaseState.ROLLED_BACK
    )
    return assess(release.state, release.versions, ledger.events(release.id), product.manifest, reversible, past)
