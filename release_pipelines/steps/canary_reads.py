"""What the canary sensor reads each tick, for the pure plan (`core.canary_tick.plan_tick`).

Reads only, no decisions, and only what the tick's phase needs: in a canary step the platform
status, resource usage and metrics of the running canaries; during bake those of the promoted
versions (now the stable processes); after bake the pending contract migrations and their
missing approvals. A metrics backend that cannot answer is read as "no evidence" (a wait,
never a pass).
"""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime
from typing import Any

from release_pipelines.core.canary_tick import (
    ServiceRead,
    TickPhase,
    TickReads,
    resource_kinds,
    tick_phase,
    watched_versions,
)
from release_pipelines.core.manifest import ApprovalPhase
from release_pipelines.core.product import Product
from release_pipelines.resources.metrics import MetricsProvider, MetricsUnavailable
from release_pipelines.steps.approval import missing_approvals
from release_pipelines.steps.migrate import contract_pending


def read_tick(product: Product, release: Any, platform: Any, provider: MetricsProvider, book: Any,
              now: datetime) -> TickReads:
    """Everything `plan_tick` needs about `release` (the product's active one, or None) now."""
    phase = tick_phase(product, release, now)
    if phase is TickPhase.baked:
        pending = tuple(contract_pending(product, release.versions))
        waiting = missing_approvals(product.manifest, book, release, ApprovalPhase.contract) if pending else None
        return TickReads(contract_pending=pending, contract_waiting=waiting)
    if phase is TickPhase.idle:
        return TickReads()
    services = {}
    for service in release.versions:
        status = platform.status(service)
        services[service] = ServiceRead(status.stable_version, status.canary_version)
    for service, version in watched_versions(phase, release.versions, services).items():
        read = replace(services[service], usage=_resource_usage(product, platform, service))
        if phase is TickPhase.canary:
            stable, canary = read.stable_version or "", version
        else:  # bake: the promoted version is stable now
            stable, canary = version, ""
        try:
            services[service] = replace(read, snapshot=provider.snapshot(service, stable, canary))
        except MetricsUnavailable as exc:
            services[service] = replace(read, unavailable=str(exc))
    return TickReads(services=services)


def _resource_usage(product: Product, platform: Any, service: str) -> dict[str, tuple[float, float]] | None:
    """The platform's measurement of the service's processes, when it judges memory or CPU and the
    platform can measure (`LocalPlatform.resource_usage`)."""
    measure = getattr(platform, "resource_usage", None)
    if not resource_kinds(product.manifest, service) or measure is None:
        return None
    return measure(service)
