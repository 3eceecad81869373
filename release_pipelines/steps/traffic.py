"""Traffic steps: how much of each service's requests the canary gets at release step k.

Each service follows its own `canary.steps` list. The steps below 100 are judged (a canary with
all traffic has no baseline to compare against); the final 100 is the promotion itself. Release
step k uses each service's k-th judged weight, holding its last one once its list is exhausted.
"""

from __future__ import annotations

from collections.abc import Iterable

from release_pipelines.core.manifest import Manifest
from release_pipelines.steps.context import StepContext
from release_pipelines.steps.deploy import _with_release_id


def judged_steps(manifest: Manifest, service: str) -> list[int]:
    return manifest.service(service).canary.steps[:-1]


def weights_for_step(manifest: Manifest, services: Iterable[str], step: int) -> dict[str, int]:
    weights = {}
    for name in services:
        steps = judged_steps(manifest, name)
        weights[name] = steps[min(step, len(steps) - 1)]
    return weights


def step_count(manifest: Manifest, services: Iterable[str]) -> int:
    """How many judged traffic steps the release takes: the longest list among its services."""
    return max((len(judged_steps(manifest, s)) for s in services), default=0)


def apply_weights(ctx: StepContext, platform, weights: dict[str, int], step: int) -> None:
    """Set each canary's share, recording the intent first and the result after."""
    ctx.record("traffic:start", step=step, weights=weights)
    for service, weight in weights.items():
        _with_release_id(platform.set_weight, ctx)(service, weight, log=ctx.log)
        ctx.log(f"{service}: canary weight {weight}%")
    ctx.record("traffic:done", step=step, weights=weights)
