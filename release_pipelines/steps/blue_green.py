"""Blue-green step: services with `canary.strategy: blue_green` switch at once, after gates.

The deploy step already started the new version at full size beside the old one with 0 % traffic
(exactly like a canary). `apply` then, for every blue-green service of the release:
  1. gates: a health check and the manifest's `canary.smoke_paths`, requested directly from the new
     version's own port (no user traffic involved); any failure stops the release with no traffic
     moved (the rollback removes the idle new version);
  2. switch: 100 % to the new version at once, which becomes stable, while the old version stays
     running ('warm') for `canary.keep_warm_seconds`.
`compensate` (rollback) switches back to the warm version in one router swap when it still runs,
else falls back to the ordinary deploy compensation (abort an unswitched version, or redeploy).

Platforms without these operations (the command platform) get weight 100 + promote and the
ordinary compensation; no smoke requests are sent because they expose no per-version address.
"""

from __future__ import annotations

from typing import Any

from release_pipelines.core.errors import ReleaseError
from release_pipelines.core.graph import dependency_edges, waves
from release_pipelines.core.manifest import FlagStep, Manifest, Strategy
from release_pipelines.core.states import ReleaseState
from release_pipelines.resources.blue_green_local import (
    expire_warm,
    smoke_requests,
    switch_back,
    switch_over,
    warm_version,
)
from release_pipelines.resources.local_platform import LocalPlatform
from release_pipelines.steps.complete import finish_release
from release_pipelines.steps.context import StepContext
from release_pipelines.steps.deploy import apply_promote, compensate_deploy
from release_pipelines.steps.flags import flags_for, set_flags


def is_blue_green(manifest: Manifest, service: str) -> bool:
    return manifest.service(service).canary.strategy is Strategy.blue_green


def _local(platform: Any) -> bool:
    return isinstance(platform, LocalPlatform)


def smoke(ctx: StepContext, platform: Any, service: str, version: str) -> list[dict[str, Any]]:
    """GET each smoke path from the new version directly; one result per path."""
    spec = ctx.product.manifest.service(service)
    results = smoke_requests(platform, service, version, spec.canary.smoke_paths, spec.health.timeout_seconds,
                             ctx.release_id) if _local(platform) else None
    if results is None:
        ctx.log(f"{service} {version}: no direct address on this platform; smoke requests skipped")
        return []
    return results


def _ordered(manifest: Manifest, services: list[str]) -> list[str]:
    order = [n for wave in waves(dependency_edges(manifest), [s.name for s in manifest.services]) for n in wave]
    return [s for s in order if s in services]


def apply(ctx: StepContext, platform: Any, release: Any) -> list[str]:
    """Gate every blue-green service of the release, then switch them (dependency order).
    Returns the services switched; idempotent (a switched service is no longer a canary)."""
    manifest = ctx.product.manifest
    pending = [s for s in _ordered(manifest, list(release.versions)) if is_blue_green(manifest, s)
               and platform.status(s).canary_version == release.versions[s]]
    failures = []
    for service in pending:
        version = release.versions[service]
        health = platform.health_check(service, version, log=ctx.log)
        results = smoke(ctx, platform, service, version)
        passed = health.healthy and all(r["passed"] for r in results)
        ctx.record("bluegreen:gates", service=service, version=version, healthy=health.healthy,
                   health=health.detail, smoke=results, passed=passed)
        ctx.log(f"{service} {version}: blue-green gates {'passed' if passed else 'FAILED'} "
                f"(health {'ok' if health.healthy else 'failed'}; smoke "
                + (", ".join(f"{r['path']} {r['status']}" for r in results) or "none") + ")")
        if not passed:
            bad = [f"{r['path']} -> {r.get('status') or r.get('error')}" for r in results if not r["passed"]]
            failures.append(f"{service} {version}: " + "; ".join(
                ([] if health.healthy else [f"health: {health.detail}"]) + bad))
    if failures:
        raise ReleaseError("blue-green gates failed, no traffic was moved: " + " | ".join(failures))
    for service in pending:
        version = release.versions[service]
        keep = manifest.service(service).canary.keep_warm_seconds
        ctx.record("bluegreen:switch:start", service=service, version=version, keep_warm_seconds=keep)
        if _local(platform):
            status = switch_over(platform, service, keep, log=ctx.log)
            warm = warm_version(platform, service)
        else:
            platform.set_weight(service, 100, log=ctx.log)
            status = apply_promote(ctx, platform, service, version)
            warm = None
        ctx.record("bluegreen:switch:done", service=service, version=version, stable_version=status.stable_version,
                   warm_version=warm)
    return pending


def compensate(ctx: StepContext, platform: Any, service: str, new_version: str, previous: str | None):
    """Back to `previous`: one router swap to the warm standby when it runs, else as a canary."""
    if _local(platform):
        status = platform.status(service)
        if previous and status.stable_version == new_version and warm_version(platform, service) == previous:
            ctx.record("revert:start", service=service, stable_version=status.stable_version,
                       canary_version=status.canary_version, restore=previous, switch_back=True)
            status = switch_back(platform, service, log=ctx.log)
            action = f"switched back to warm {previous} at once; {new_version} stopped"
            ctx.log(f"{service}: {action}")
            ctx.record("revert:done", service=service, stable_version=status.stable_version, action=action)
            return status
    return compensate_deploy(ctx, platform, service, new_version, previous)


def expire_standbys(platform: Any, log=print) -> list[str]:
    """Stop warm standbys past `keep_warm_seconds` (local platform only; never raises)."""
    if not _local(platform):
        return []
    try:
        return expire_warm(platform, log=log)
    except Exception as exc:  # noqa: BLE001 - housekeeping must never break a sensor tick
        log(f"warm standby expiry skipped: {type(exc).__name__}: {exc}")
        return []



def finish_switched(ctx: StepContext, book: Any, store: Any, release: Any) -> None:
    """A release whose every change was switched blue-green is promoted: what the promote job
    does at 100 % (promoted flags on, bake, then complete unless contract migrations wait). While
    it bakes, a rollback is one switch back to the warm version."""
    set_flags(ctx, store, flags_for(ctx.product.manifest, set(release.versions), FlagStep.promoted), True)
    baking = book.transition(release.id, ReleaseState.BAKING, ctx.actor, run_id=ctx.run_id,
                             payload={"reason": "blue-green: switched at once after health and smoke gates"})
    finish_release(ctx, book, baking, store)
