"""The release state machine: which state may follow which, and nothing else.

Pure rules (no database, no Dagster) so the ledger, the CLI and the unit tests share one table.
"""

from __future__ import annotations

from collections.abc import Mapping
from enum import StrEnum

from release_pipelines.core.errors import IllegalTransition


class ReleaseState(StrEnum):
    """Where a release is; the value is what the ledger stores."""

    PLANNED = "planned"
    PREFLIGHT = "preflight"
    EXPANDING = "expanding"
    CANARY = "canary"
    PROMOTING = "promoting"
    BAKING = "baking"
    CONTRACTING = "contracting"
    COMPLETED = "completed"
    ROLLING_BACK = "rolling_back"
    ROLLED_BACK = "rolled_back"
    FAILED = "failed"


S = ReleaseState

TERMINAL_STATES: frozenset[ReleaseState] = frozenset({S.COMPLETED, S.ROLLED_BACK})
"""Nothing follows these; a new release of the product may start."""

ACTIVE_STATES: frozenset[ReleaseState] = frozenset(S) - TERMINAL_STATES
"""States that block a new release of the same product; `failed` blocks until rolled back."""

POINT_OF_NO_RETURN = S.CONTRACTING
"""Contract migrations drop what the old version needs: from here on, only forward."""

_ROLLBACK_SOURCES = frozenset(
    {S.PLANNED, S.PREFLIGHT, S.EXPANDING, S.CANARY, S.PROMOTING, S.BAKING, S.FAILED, S.ROLLING_BACK}
)
"""Every state before the point of no return, `failed`, and `rolling_back` itself (re-entrant)."""

_FORWARD: Mapping[ReleaseState, frozenset[ReleaseState]] = {
    S.PLANNED: frozenset({S.PREFLIGHT}),
    S.PREFLIGHT: frozenset({S.EXPANDING, S.CANARY}),
    S.EXPANDING: frozenset({S.CANARY}),
    S.CANARY: frozenset({S.CANARY, S.PROMOTING}),
    S.PROMOTING: frozenset({S.CANARY, S.BAKING, S.COMPLETED}),
    S.BAKING: frozenset({S.CONTRACTING, S.COMPLETED}),
    S.CONTRACTING: frozenset({S.COMPLETED}),
    S.ROLLING_BACK: frozenset({S.ROLLED_BACK}),
    S.FAILED: frozenset(),
    S.COMPLETED: frozenset(),
    S.ROLLED_BACK: frozenset(),
}


def _allowed(state: ReleaseState) -> frozenset[ReleaseState]:
    targets = set(_FORWARD[state])
    if state in _ROLLBACK_SOURCES:
        targets.add(S.ROLLING_BACK)
    if state not in TERMINAL_STATES:
        targets.add(S.FAILED)  # anything still moving can stop and ask for a person
    return frozenset(targets)


TRANSITIONS: Mapping[ReleaseState, frozenset[ReleaseState]] = {s: _allowed(s) for s in S}
"""The complete table: state -> states it may move to."""


def check_transition(
    current: ReleaseState | str, target: ReleaseState | str, *, release_id: str | None = None
) -> None:
    """Raise IllegalTransition, naming the current state and what it allows, unless legal."""
    current, target = ReleaseState(current), ReleaseState(target)
    allowed = TRANSITIONS[current]
    if target in allowed:
        return
    if allowed:
        options = ", ".join(sorted(s.value for s in allowed))
        hint = f"from {current} it may only move to: {options}"
    else:
        hint = f"{current} is final; start a new release instead"
    subject = f"release {release_id}" if release_id else "release"
    raise IllegalTransition(f"{subject} is {current}; it cannot move to {target} ({hint})")


def can_roll_back(state: ReleaseState | str) -> bool:
    """True while a rollback is still possible (before contracting, or already rolling back)."""
    return S.ROLLING_BACK in TRANSITIONS[ReleaseState(state)]


def is_active(state: ReleaseState | str) -> bool:
    """True if a release in this state blocks another release of the same product."""
    return ReleaseState(state) in ACTIVE_STATES
