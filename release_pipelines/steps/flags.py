"""Flag steps: enablement is decoupled from deployment.

A release turns its flags on only after their services are promoted; a rollback turns them off
first, before any traffic moves back, so old code never sees a flag it does not know.
"""

from __future__ import annotations

from release_pipelines.core.manifest import FlagStep, Manifest
from release_pipelines.steps.context import StepContext


def flags_for(manifest: Manifest, services: set[str], at: FlagStep) -> list[str]:
    return [f.name for f in manifest.flags if f.enable_at == at and set(f.services) & services]


def set_flags(ctx: StepContext, store, names: list[str], on: bool) -> None:
    for name in names:
        ctx.record("flag:start", flag=name, on=on)
        store.set(name, on)
        ctx.log(f"flag {name} {'on' if on else 'off'}")
        ctx.record("flag:done", flag=name, on=on)
