"""Rollback readiness: could this release be rolled back right now, how well, and how long would it take?

Pure: works on the release, its ledger events, the manifest and what is known about the revisions
(`revision -> reversible`); `steps.readiness.readiness_for` reads them.

- READY: every applied step can be undone by the rollback job.
- DEGRADED: a rollback still runs, but not everything comes back: an irreversible migration was
  applied, or the database's strategy is `snapshot` (a restore from the snapshot is needed), or
  `roll-forward` kept a schema change that cannot be undone in place.
- IMPOSSIBLE: past the point of no return (contract migrations ran), or nothing left to roll back
  (the release is already rolled back or completed).

The estimate is the median of the product's past rollbacks (`state:rolling_back` ->
`state:rolled_back`), or, with no history, a sum of defaults per step the rollback would take.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from enum import Enum
from statistics import median
from typing import Any

from release_pipelines.core.manifest import Manifest, RollbackStrategy
from release_pipelines.core.states import ReleaseState, can_roll_back

DEFAULT_SERVICE_SECONDS = 5.0  # abort a canary (drain added from the manifest)
DEFAULT_PROMOTED_SERVICE_SECONDS = 15.0  # redeploy the previous version and promote it back
DEFAULT_MIGRATION_SECONDS = 10.0  # per revision to downgrade, when the upgrade's duration is unknown
DEFAULT_FLAGS_SECONDS = 1.0


class Readiness(str, Enum):
    ready = "READY"
    degraded = "DEGRADED"
    impossible = "IMPOSSIBLE"


@dataclass(frozen=True)
class RollbackReadiness:
    level: Readiness
    estimated_seconds: float | None
    reasons: tuple[str, ...] = ()
    estimate_from: str = "defaults"  # "history (N rollbacks)" or "defaults"
    details: dict[str, Any] = field(default_factory=dict)

    def summary(self) -> str:
        eta = f"~{self.estimated_seconds:.0f} s ({self.estimate_from})" if self.estimated_seconds is not None else "n/a"
        why = "; ".join(self.reasons) if self.reasons else "every step is reversible"
        return f"{self.level.value}: rollback {eta}; {why}"

    def to_dict(self) -> dict[str, Any]:
        return {
            "level": self.level.value,
            "estimated_seconds": self.estimated_seconds,
            "estimate_from": self.estimate_from,
            "reasons": list(self.reasons),
        }


def _kind(event: Any) -> str:
    return event.kind if hasattr(event, "kind") else event["kind"]


def _payload(event: Any) -> Mapping[str, Any]:
    return (event.payload if hasattr(event, "payload") else event.get("payload")) or {}


def _at(event: Any):
    return event.created_at if hasattr(event, "created_at") else event["created_at"]


def rollback_durations(histories: Iterable[Sequence[Any]]) -> list[float]:
    """Seconds from `state:rolling_back` to `state:rolled_back` in each release's events that has both."""
    durations = []
    for events in histories:
        start = next((_at(e) for e in events if _kind(e) == "state:rolling_back"), None)
        end = next((_at(e) for e in reversed(list(events)) if _kind(e) == "state:rolled_back"), None)
        if start is not None and end is not None and end >= start:
            durations.append((end - start).total_seconds())
    return durations


def assess(
    state: ReleaseState | str,
    versions: Mapping[str, str],
    events: Sequence[Any],
    manifest: Manifest,
    reversible: Mapping[str, bool] | None = None,
    past_rollbacks: Sequence[float] = (),
) -> RollbackReadiness:
    """Readiness of one release; `reversible` maps revision -> can be downgraded (unknown = yes)."""
    state = ReleaseState(state)
    reversible = reversible or {}
    kinds = [_kind(e) for e in events]
    if "state:contracting" in kinds or state is ReleaseState.CONTRACTING:
        return RollbackReadiness(Readiness.impossible, None, (
            "past the point of no return: contract migrations ran; fix forward with a new release",))
    if state is ReleaseState.ROLLED_BACK:
        return RollbackReadiness(Readiness.impossible, None, ("already rolled back: nothing left to undo",))
    if not can_roll_back(state):
        return RollbackReadiness(Readiness.impossible, None, (f"release is {state.value}: it can no longer be rolled back",))

    reasons: list[str] = []
    degraded = False
    estimate = DEFAULT_FLAGS_SECONDS
    applied: dict[str, list[str]] = {}
    upgrade_seconds: dict[str, float] = {}
    for event in events:
        payload = _payload(event)
        if _kind(event) == "migrate:done" and payload.get("revisions"):
            database = payload.get("database", "")
            applied.setdefault(database, []).extend(payload["revisions"])
            upgrade_seconds[database] = upgrade_seconds.get(database, 0.0) + float(payload.get("seconds") or 0)
    for database_name, revisions in applied.items():
        try:
            database = manifest.database(database_name)
        except StopIteration:
            continue
        irreversible = [r for r in revisions if not reversible.get(r, True)]
        if database.rollback is RollbackStrategy.snapshot:
            degraded = True
            reasons.append(f"{database_name}: {len(revisions)} revision(s) applied and its rollback strategy is "
                           "snapshot: a restore from the snapshot is needed")
        elif irreversible:
            degraded = True
            reasons.append(f"{database_name}: irreversible migration applied ({', '.join(irreversible)}): "
                           + ("the schema stays as it is (roll-forward)" if database.rollback is RollbackStrategy.roll_forward
                              else "it cannot be downgraded"))
        elif database.rollback is RollbackStrategy.roll_forward:
            reasons.append(f"{database_name}: schema kept on rollback (roll-forward); expand revisions are compatible")
        if database.rollback is RollbackStrategy.downgrade:
            estimate += max(upgrade_seconds.get(database_name, 0.0) * 1.5, DEFAULT_MIGRATION_SECONDS * len(revisions))

    promoted = {_payload(e).get("service") for e in events if _kind(e) == "promote:done"}
    for service in versions:
        try:
            drain = manifest.service(service).deploy.local.drain_seconds if manifest.service(service).deploy.local else 0.0
        except StopIteration:
            continue
        estimate += drain + (DEFAULT_PROMOTED_SERVICE_SECONDS if service in promoted else DEFAULT_SERVICE_SECONDS)

    source = "defaults"
    if past_rollbacks:
        estimate = float(median(past_rollbacks))
        source = f"history ({len(past_rollbacks)} rollback{'s' if len(past_rollbacks) != 1 else ''})"
    level = Readiness.degraded if degraded else Readiness.ready
    return RollbackReadiness(level, round(estimate, 1), tuple(reasons), source,
                             {"applied": applied, "promoted": sorted(p for p in promoted if p)})
