"""Traffic step: set each canary's share of requests for a release step (the weights per step
are `core.traffic`), recording the intent in the ledger first and the result after."""

from __future__ import annotations

from release_pipelines.steps.context import StepContext
from release_pipelines.steps.deploy import with_release_id


def apply_weights(ctx: StepContext, platform, weights: dict[str, int], step: int) -> None:
    """Set each canary's share, recording the intent first and the result after."""
    ctx.record("traffic:start", step=step, weights=weights)
    for service, weight in weights.items():
        with_release_id(platform.set_weight, ctx)(service, weight, log=ctx.log)
    if weights:  # one line for the step, not one per service: each line is an event in Dagster's log
        ctx.log("canary weight " + ", ".join(f"{service} {weight}%" for service, weight in weights.items()))
    ctx.record("traffic:done", step=step, weights=weights)
