"""Release windows: slots, freezes, next opening, and the daylight-saving nights of Europe/Berlin.

2026-03-29 (Sunday): 02:00 CET jumps to 03:00 CEST at 01:00 UTC (the 02:00-03:00 hour is skipped).
2026-10-25 (Sunday): 03:00 CEST falls back to 02:00 CET at 01:00 UTC (the 02:00-03:00 hour repeats).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from typing import Any

import pytest

from release_pipelines.core.manifest import AllowedSlot, ApprovalRule, Freeze, Windows
from release_pipelines.core.windows import (
    break_glass_waiting_for,
    launch_window_problem,
    next_opening,
    window_status,
)

BERLIN = "Europe/Berlin"
ALL_DAYS = ["mon", "tue", "wed", "thu", "fri", "sat", "sun"]


def utc(*args: int) -> datetime:
    return datetime(*args, tzinfo=UTC)


def slot(days: list[str], start: str, end: str) -> AllowedSlot:
    return AllowedSlot(days=days, start=time.fromisoformat(start), end=time.fromisoformat(end))


def windows(*slots: AllowedSlot, freezes: list[Freeze] | None = None, zone: str = BERLIN) -> Windows:
    return Windows(timezone=zone, allowed=list(slots), freezes=freezes or [])


OFFICE = windows(slot(["mon", "tue", "wed", "thu", "fri"], "09:00", "17:00"))


def test_inside_and_outside_office_hours_in_local_time() -> None:
    # Tuesday 2026-11-24 09:30 Berlin (CET, UTC+1) is 08:30 UTC
    assert window_status(OFFICE, utc(2026, 11, 24, 8, 30)).open
    is_open, reason = window_status(OFFICE, utc(2026, 11, 24, 7, 59))
    assert not is_open
    assert "outside the release windows" in reason and "08:59 CET" in reason and BERLIN in reason
    assert not window_status(OFFICE, utc(2026, 11, 28, 10)).open  # Saturday
    assert not window_status(OFFICE, utc(2026, 11, 24, 16)).open  # 17:00 local: end is exclusive


def test_no_slots_means_any_time() -> None:
    status = window_status(Windows(), utc(2026, 11, 28, 3))
    assert status.open and "any time" in status.reason


def test_freeze_closes_whole_local_days_with_its_reason() -> None:
    frozen = windows(slot(ALL_DAYS, "00:00", "23:59"),
                     freezes=[Freeze(start=date(2026, 12, 24), end=date(2026, 12, 26), reason="Christmas freeze")])
    # 2026-12-23 23:30 UTC is already 12-24 00:30 in Berlin
    is_open, reason = window_status(frozen, utc(2026, 12, 23, 23, 30))
    assert not is_open and "Christmas freeze" in reason and "2026-12-24..2026-12-26" in reason
    assert window_status(frozen, utc(2026, 12, 23, 22, 59)).open
    # the next opening is local midnight after the freeze: 12-27 00:00 CET = 12-26 23:00 UTC
    assert next_opening(frozen, utc(2026, 12, 24, 10)) == utc(2026, 12, 26, 23)


def test_end_2359_means_until_midnight() -> None:
    all_day = windows(slot(ALL_DAYS, "00:00", "23:59"))
    assert window_status(all_day, utc(2026, 11, 24, 22, 59, 30)).open  # 23:59:30 local


def test_next_opening_over_a_weekend() -> None:
    friday_evening = utc(2026, 11, 27, 17)  # 18:00 CET
    assert next_opening(OFFICE, friday_evening) == utc(2026, 11, 30, 8)  # Monday 09:00 CET
    inside = utc(2026, 11, 24, 10)
    assert next_opening(OFFICE, inside) == inside


def test_next_opening_none_when_every_slot_is_frozen() -> None:
    forever = windows(slot(["mon"], "09:00", "10:00"),
                      freezes=[Freeze(start=date(2026, 1, 1), end=date(2030, 1, 1), reason="moratorium")])
    assert next_opening(forever, utc(2026, 6, 1), horizon_days=60) is None


def test_naive_datetimes_are_refused() -> None:
    with pytest.raises(ValueError, match="no time zone"):
        window_status(OFFICE, datetime(2026, 11, 24, 10))


# -- daylight saving ----------------------------------------------------------------------------

NIGHT_SLOT = windows(slot(["sun"], "02:00", "03:00"))


def test_spring_skipped_hour_slot_never_opens_that_night() -> None:
    # every instant of the change night: the local clock never reads 02:xx
    t = utc(2026, 3, 28, 22)
    while t < utc(2026, 3, 29, 4):
        assert not window_status(NIGHT_SLOT, t).open, t
        t += timedelta(minutes=5)
    # so the next opening is the following Sunday 02:00 CEST = 00:00 UTC
    assert next_opening(NIGHT_SLOT, utc(2026, 3, 28, 12)) == utc(2026, 4, 5, 0)


def test_autumn_repeated_hour_slot_is_open_on_both_passes() -> None:
    assert not window_status(NIGHT_SLOT, utc(2026, 10, 24, 23, 59)).open  # 01:59 CEST
    assert window_status(NIGHT_SLOT, utc(2026, 10, 25, 0, 0)).open  # 02:00 CEST
    assert window_status(NIGHT_SLOT, utc(2026, 10, 25, 0, 59)).open  # 02:59 CEST
    assert window_status(NIGHT_SLOT, utc(2026, 10, 25, 1, 0)).open  # 02:00 CET, second pass
    assert window_status(NIGHT_SLOT, utc(2026, 10, 25, 1, 59)).open  # 02:59 CET
    assert not window_status(NIGHT_SLOT, utc(2026, 10, 25, 2, 0)).open  # 03:00 CET
    assert next_opening(NIGHT_SLOT, utc(2026, 10, 24, 12)) == utc(2026, 10, 25, 0, 0)


def test_window_ending_0130_on_both_change_nights() -> None:
    early = windows(slot(["sun"], "00:00", "01:30"))
    # March: still CET (UTC+1) at 01:30, so the window closes at 00:30 UTC
    assert window_status(early, utc(2026, 3, 29, 0, 29)).open
    assert not window_status(early, utc(2026, 3, 29, 0, 30)).open
    # October: still CEST (UTC+2) at 01:30, so it closes at 23:30 UTC on Saturday
    assert window_status(early, utc(2026, 10, 24, 22, 0)).open
    assert window_status(early, utc(2026, 10, 24, 23, 29)).open
    assert not window_status(early, utc(2026, 10, 24, 23, 30)).open
    assert next_opening(early, utc(2026, 10, 24, 12)) == utc(2026, 10, 24, 22)


def test_window_ending_0230_reopens_for_the_repeated_half_hour() -> None:
    late = windows(slot(["sun"], "00:00", "02:30"))
    assert not window_status(late, utc(2026, 10, 25, 0, 30)).open  # 02:30 CEST: closed
    assert next_opening(late, utc(2026, 10, 25, 0, 45)) == utc(2026, 10, 25, 1, 0)  # 02:00 CET again
    assert not window_status(late, utc(2026, 10, 25, 1, 30)).open


def test_slot_starting_inside_the_skipped_hour_opens_at_the_jump() -> None:
    gap = windows(slot(["sun"], "02:30", "04:00"))
    # 01:00 UTC is when the clock jumps from 02:00 CET to 03:00 CEST: inside 02:30-04:00
    assert not window_status(gap, utc(2026, 3, 29, 0, 59)).open
    assert window_status(gap, utc(2026, 3, 29, 1, 0)).open
    assert next_opening(gap, utc(2026, 3, 28, 12)) == utc(2026, 3, 29, 1, 0)


def test_opening_in_other_zones_and_days() -> None:
    ny = windows(slot(["mon"], "09:00", "10:00"), zone="America/New_York")
    # US DST ends 2026-11-01: Monday 11-02 09:00 EST = 14:00 UTC
    assert next_opening(ny, utc(2026, 10, 31)) == utc(2026, 11, 2, 14)


# -- preflight wording and break-glass -----------------------------------------------------------


def test_launch_refused_outside_window_names_reason_and_next_opening() -> None:
    problem = launch_window_problem(OFFICE, utc(2026, 11, 28, 10))
    assert problem and "launch refused" in problem and "next opening Mon 2026-11-30 09:00 CET" in problem
    assert "break_glass_reason" in problem
    assert launch_window_problem(OFFICE, utc(2026, 11, 24, 10)) is None


def test_break_glass_needs_a_rule_to_be_approvable() -> None:
    at = utc(2026, 11, 28, 10)
    assert launch_window_problem(OFFICE, at, "hotfix for INC-1", has_break_glass_rule=True) is None
    refused = launch_window_problem(OFFICE, at, "hotfix for INC-1", has_break_glass_rule=False)
    assert refused and "no approval rule for phase break_glass" in refused


@dataclass
class _Event:
    kind: str
    payload: dict[str, Any]
    created_at: datetime


@dataclass
class _Approval:
    phase: str
    approver: str


@dataclass
class _Manifest:
    windows: Windows
    approvals: list[ApprovalRule]


@dataclass
class _Release:
    id: str = "shop-1"
    created_by: str = "alice"


def test_break_glass_release_waits_for_an_approval_from_someone_else() -> None:
    manifest = _Manifest(OFFICE, [ApprovalRule(phase="break_glass", group=["alice", "bob", "carol"], signatures="optional")])
    planned = [_Event("state:planned", {"break_glass_reason": "INC-7 hotfix"}, utc(2026, 11, 28, 10))]
    waiting = break_glass_waiting_for(manifest, _Release(), planned, [])
    assert waiting and "INC-7 hotfix" in waiting and "bob, carol" in waiting and "alice cannot approve" in waiting
    assert break_glass_waiting_for(manifest, _Release(), planned, [_Approval("break_glass", "alice")])
    assert break_glass_waiting_for(manifest, _Release(), planned, [_Approval("break_glass", "bob")]) is None
    # a reason given while the window was open anyway: nothing to wait for
    inside = [_Event("state:planned", {"break_glass_reason": "x"}, utc(2026, 11, 24, 10))]
    assert break_glass_waiting_for(manifest, _Release(), inside, []) is None
    assert break_glass_waiting_for(manifest, _Release(), [_Event("state:planned", {}, utc(2026, 11, 28))], []) is None
