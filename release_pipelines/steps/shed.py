"""Traffic off a failing canary at the verdict, before the rollback run starts.

On a canary FAIL the sensor sets each canary's weight to 0 in the tick that decided (as Argo
Rollouts and Flagger do on abort): safety no longer waits for the run queue and a run worker's
start. The rollback run does the rest (flags off, canaries stopped in reverse dependency order,
migrations); a canary at weight 0 is still a canary to it, so the run is unchanged.

Tenant-scoped canaries (`canary.tenants`): the router sends a named tenant's requests to the
canary at any weight, so weight 0 sheds only the general share; those tenants keep the canary
until the rollback run stops it, and the `traffic:shed` event says so (`tenants_still_routed`).

The FAIL verdict in the ledger is the durable record of the decision: `steps.verdicts.recorded_failures` hands it
to the next tick's plan, which requests the rollback again (Dagster launches a run key once), so a
daemon killed between the shed and the run request still rolls back.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from release_pipelines.steps.context import StepContext
from release_pipelines.steps.deploy import with_release_id

SENSOR_ACTOR = "canary-sensor"


@dataclass(frozen=True)
class ShedResult:
    shed: tuple[str, ...] = ()  # weight set to 0 by this call
    already: tuple[str, ...] = ()  # at 0 before it (an earlier tick, or the ledger-driven retry)
    errors: Mapping[str, str] = field(default_factory=dict)  # service -> why the platform refused
    tenants_still_routed: Mapping[str, list[str]] = field(default_factory=dict)  # weight 0 does not move them


def shed_canaries(ctx: StepContext, platform: Any, services: tuple[str, ...], run_key: str,
                  reason: str) -> ShedResult:
    """Canary weight 0 on each of `services`; idempotent (a weight already at 0 is left alone).

    A platform error on one service does not stop the others: it is logged and recorded, and the
    rollback run (requested whatever happens here) stops that canary. One `traffic:shed` event
    records what changed (none when every weight was already 0).
    """
    shed, already, errors = [], [], {}
    tenants = {s: list(t) for s in services if (t := ctx.product.manifest.service(s).canary.tenants)}
    for service in services:
        try:
            if platform.status(service).canary_weight == 0:
                already.append(service)
                continue
            with_release_id(platform.set_weight, ctx)(service, 0, log=ctx.log)
            shed.append(service)
            ctx.log(f"{service}: canary weight 0 at the verdict ({run_key})")
        except Exception as exc:  # noqa: BLE001 - any platform failure: the rollback run still goes
            errors[service] = f"{type(exc).__name__}: {exc}"
            ctx.log(f"{service}: could not set the canary weight to 0 ({errors[service]}); the rollback run will stop it")
    if shed or errors:
        ctx.record("traffic:shed", run_key=run_key, weights=dict.fromkeys(shed, 0), already_zero=already,
                   errors=errors, tenants_still_routed=tenants, reason=reason[:900])
    for service, names in tenants.items():
        ctx.log(f"{service}: tenants {', '.join(names)} still reach the canary until the rollback run stops it")
    return ShedResult(tuple(shed), tuple(already), errors, tenants)
