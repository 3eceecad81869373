"""The release state machine, checked against the rules as the design brief states them."""

from __future__ import annotations

import itertools

import pytest

from release_pipelines.core.errors import IllegalTransition
from release_pipelines.core.states import (
    ACTIVE_STATES,
    POINT_OF_NO_RETURN,
    TERMINAL_STATES,
    TRANSITIONS,
    ReleaseState,
    can_roll_back,
    check_transition,
    is_active,
)

S = ReleaseState

# Written out independently of states.py, so a slip in its table shows up here.
EXPECTED: dict[ReleaseState, set[ReleaseState]] = {
    S.PLANNED: {S.PREFLIGHT, S.ROLLING_BACK, S.FAILED},
    S.PREFLIGHT: {S.EXPANDING, S.CANARY, S.ROLLING_BACK, S.FAILED},
    S.EXPANDING: {S.CANARY, S.ROLLING_BACK, S.FAILED},
    S.CANARY: {S.CANARY, S.PROMOTING, S.ROLLING_BACK, S.FAILED},
    S.PROMOTING: {S.CANARY, S.BAKING, S.COMPLETED, S.ROLLING_BACK, S.FAILED},
    S.BAKING: {S.CONTRACTING, S.COMPLETED, S.ROLLING_BACK, S.FAILED},
    S.CONTRACTING: {S.COMPLETED, S.FAILED},
    S.COMPLETED: set(),
    S.ROLLING_BACK: {S.ROLLING_BACK, S.ROLLED_BACK, S.FAILED},
    S.ROLLED_BACK: set(),
    S.FAILED: {S.ROLLING_BACK, S.FAILED},
}
ALLOWED = [(s, t) for s, targets in EXPECTED.items() for t in sorted(targets)]
REFUSED = [(s, t) for s, t in itertools.product(S, S) if t not in EXPECTED[s]]


def test_table_matches_the_brief() -> None:
    assert {s: set(t) for s, t in TRANSITIONS.items()} == EXPECTED


@pytest.mark.parametrize(("current", "target"), ALLOWED, ids=lambda s: s.value)
def test_allowed_transition_passes(current: ReleaseState, target: ReleaseState) -> None:
    check_transition(current, target)


@pytest.mark.parametrize(("current", "target"), REFUSED, ids=lambda s: s.value)
def test_refused_transition_names_current_target_and_options(
    current: ReleaseState, target: ReleaseState
) -> None:
    with pytest.raises(IllegalTransition) as info:
        check_transition(current, target, release_id="shop-20261126T103000-3f9a")
    message = str(info.value)
    assert f"release shop-20261126T103000-3f9a is {current}" in message
    assert f"cannot move to {target}" in message
    for option in EXPECTED[current]:
        assert option.value in message


def test_no_promote_after_rollback_and_message_says_final() -> None:
    with pytest.raises(IllegalTransition, match="rolled_back is final"):
        check_transition("rolled_back", "promoting")


def test_strings_are_accepted() -> None:
    check_transition("canary", "promoting")


def test_terminal_and_active_states() -> None:
    assert TERMINAL_STATES == {S.COMPLETED, S.ROLLED_BACK}
    assert ACTIVE_STATES == set(S) - TERMINAL_STATES
    assert S.FAILED in ACTIVE_STATES  # a failed release blocks the product until rolled back
    assert is_active("failed") and not is_active("completed")


@pytest.mark.parametrize("state", list(S), ids=lambda s: s.value)
def test_can_roll_back_only_before_point_of_no_return(state: ReleaseState) -> None:
    order = [S.PLANNED, S.PREFLIGHT, S.EXPANDING, S.CANARY, S.PROMOTING, S.BAKING]
    expected = state in order or state in {S.FAILED, S.ROLLING_BACK}
    assert can_roll_back(state) is expected
    assert POINT_OF_NO_RETURN is S.CONTRACTING and not can_roll_back(POINT_OF_NO_RETURN)
