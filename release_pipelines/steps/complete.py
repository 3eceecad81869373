"""Complete a promoted release once it has baked, unless contract migrations still wait."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from release_pipelines.core.bake import bake_remaining
from release_pipelines.core.manifest import FlagStep
from release_pipelines.core.states import ReleaseState
from release_pipelines.steps.context import StepContext
from release_pipelines.steps.flags import flags_for, set_flags
from release_pipelines.steps.migrate import contract_pending


def finish_release(ctx: StepContext, book: Any, release: Any, store: Any) -> None:
    """After the bake period: complete, unless contract migrations still wait for their job."""
    product = ctx.product
    left = bake_remaining(product, release, datetime.now(UTC))
    if left > 0:
        ctx.log(f"baking: {left:.0f} s left before the release can complete")
        return
    pending = contract_pending(product, release.versions)
    if pending:
        ctx.log(
            f"baked; contract migrations wait for {product.name}_contract: {', '.join(pending)}"
        )
        return
    set_flags(
        ctx, store, flags_for(product.manifest, set(release.versions), FlagStep.completed), True
    )
    book.transition(release.id, ReleaseState.COMPLETED, ctx.actor, run_id=ctx.run_id)
    ctx.log(f"release {release.id} completed")
