"""Traffic steps: how much of each service's requests the canary gets at release step k.

Each service follows its own `canary.steps` list. The steps below 100 are judged (a canary with
all traffic has no baseline to compare against); the final 100 is the promotion itself. Release
step k uses each service's k-th judged weight, holding its last one once its list is exhausted.
Setting the weights is `steps.traffic.apply_weights`.
"""

from __future__ import annotations

from collections.abc import Iterable

from release_pipelines.core.manifest import Manifest


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
