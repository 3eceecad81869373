"""Traffic steps: how much of each service's requests the canary gets at release step k.

Each service follows its own `canary.steps` list; step k of the release uses each service's k-th
entry (or its last one, 100, once its list is exhausted). The release is fully promoted when every
service it changes is at 100.
"""

from __future__ import annotations

from collections.abc import Iterable

from release_pipelines.manifest import Manifest
from release_pipelines.steps.context import StepContext


def weights_for_step(manifest: Manifest, services: Iterable[str], step: int) -> dict[str, int]:
    weights = {}
    for name in services:
        steps = manifest.service(name).canary.steps
        weights[name] = steps[min(step, len(steps) - 1)]
    return weights


def step_count(manifest: Manifest, services: Iterable[str]) -> int:
    """How many traffic steps the release takes: the longest list among its services."""
    return max((len(manifest.service(s).canary.steps) for s in services), default=0)


def apply_weights(ctx: StepContext, platform, weights: dict[str, int], step: int) -> None:
    """Set each canary's share, recording the intent first and the result after."""
    ctx.record("traffic:start", step=step, weights=weights)
    for service, weight in weights.items():
        platform.set_weight(service, weight, log=ctx.log)
        ctx.log(f"{service}: canary weight {weight}%")
    ctx.record("traffic:done", step=step, weights=weights)
