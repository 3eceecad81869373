"""The bake: how long a promoted release still waits before it may complete."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from release_pipelines.core.product import Product


def bake_remaining(product: Product, release: Any, now: datetime) -> float:
    """Seconds of bake left after promotion (the longest bake of the services it changed)."""
    bake = max(
        (product.manifest.service(s).canary.bake_seconds for s in release.versions), default=0
    )
    return max(0.0, bake - (now - release.updated_at).total_seconds())
