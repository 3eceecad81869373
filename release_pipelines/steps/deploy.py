"""Deploy step: start a service's new version as a canary; compensate by restoring the old one."""

from __future__ import annotations

import inspect

from release_pipelines.core.errors import ReleaseError
from release_pipelines.core.planner import ServiceChange
from release_pipelines.steps.context import StepContext


def stable_running(platform, service: str) -> bool:
    return any(v.service == service and v.role == "stable" and v.alive for v in platform.list_versions())


def apply_deploy(ctx: StepContext, platform, change: ServiceChange):
    """Start the canary at 0 % traffic and wait for it to be healthy (first install: as stable)."""
    if change.from_version and not stable_running(platform, change.service):
        # The platform would take this for a first install: the new version with all the traffic, unjudged.
        raise ReleaseError(
            f"{change.service}: stable {change.from_version} is not running, so canary {change.to_version} would have "
            "no baseline to be judged against; roll back (which starts the stable again) and release again"
        )
    ctx.record("deploy:start", service=change.service, version=change.to_version, from_version=change.from_version)
    status = with_release_id(platform.deploy_canary, ctx)(change.service, change.to_version, log=ctx.log)
    first_install = status.canary_version is None and status.stable_version == change.to_version
    ctx.record(
        "deploy:done",
        service=change.service,
        version=change.to_version,
        first_install=first_install,
        stable_version=status.stable_version,
    )
    return status


def with_release_id(method, ctx: StepContext):
    """Pass the release id (the correlation id) to platforms that take it; older ones do not."""
    try:
        takes_it = "release_id" in inspect.signature(method).parameters
    except (TypeError, ValueError):
        takes_it = False
    if not takes_it:
        return method
    return lambda *args, **kwargs: method(*args, release_id=ctx.release_id, **kwargs)


def apply_promote(ctx: StepContext, platform, service: str, version: str):
    """The canary becomes stable; the old stable drains and stops."""
    ctx.record("promote:start", service=service, version=version)
    status = platform.promote(service, log=ctx.log)
    ctx.record("promote:done", service=service, version=version, stable_version=status.stable_version)
    return status


def compensate_deploy(ctx: StepContext, platform, service: str, new_version: str, previous: str | None):
    """Put the service back on `previous`, whatever state the release left it in. Idempotent."""
    status = platform.status(service)
    ctx.record(
        "revert:start",
        service=service,
        stable_version=status.stable_version,
        canary_version=status.canary_version,
        restore=previous,
    )
    if status.canary_version is not None:
        status = platform.abort(service, log=ctx.log)
        action = f"canary {status.canary_version or new_version} stopped, 100% on stable"
    elif previous is not None and status.stable_version == previous and not stable_running(platform, service):
        status = platform.deploy_canary(service, previous, log=ctx.log)  # a dead stable: start it again
        action = f"stable {previous} was not running: started again"
    elif status.stable_version == new_version and previous is not None:
        # Already promoted: bring the previous version back through the same safe path.
        platform.deploy_canary(service, previous, log=ctx.log)
        platform.set_weight(service, 100, log=ctx.log)
        status = platform.promote(service, log=ctx.log)
        action = f"{previous} redeployed and promoted over {new_version}"
    elif status.stable_version == new_version:
        action = f"first install of {new_version}: no earlier version to restore, left running"
    else:
        action = f"nothing to undo: {status.stable_version or 'nothing'} is stable"
    ctx.log(f"{service}: {action}")
    ctx.record("revert:done", service=service, stable_version=status.stable_version, action=action)
    return status
