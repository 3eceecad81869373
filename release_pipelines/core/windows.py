"""Release windows (pure): is a launch allowed at an instant, and when is the next opening.

Windows are wall-clock rules in the manifest's time zone (`windows.timezone`, an IANA name):

- `allowed` slots open on the listed weekdays while the local clock reads `start <= t < end`
  (no slots = any time). `end: "23:59"` means "until midnight".
- `freezes` close whole local days, `start` to `end` inclusive, and their reason is shown.

Daylight-saving changes follow the wall clock: a slot inside the hour skipped in spring
(e.g. 02:00-03:00 on the last Sunday of March in Europe/Berlin) never opens that day; a slot
inside the hour repeated in autumn is open on both passes of that hour (two real hours).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo

from release_pipelines.core.manifest import AllowedSlot, Freeze, Windows

WEEKDAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
END_OF_DAY = time(23, 59)
"""A slot ending at 23:59 runs until midnight (pydantic's time has no 24:00)."""

DEFAULT_HORIZON_DAYS = 400


@dataclass(frozen=True)
class WindowStatus:
    """`open` plus a sentence a person can act on; unpacks as `(open, reason)`."""

    open: bool
    reason: str

    def __iter__(self):
        return iter((self.open, self.reason))


def _aware(at: datetime) -> datetime:
    if at.tzinfo is None or at.utcoffset() is None:
        raise ValueError(f"{at!r} has no time zone; pass an aware datetime (e.g. datetime.now(UTC))")
    return at


def _slot_label(slot: AllowedSlot) -> str:
    end = "24:00" if slot.end >= END_OF_DAY else f"{slot.end:%H:%M}"
    return f"{','.join(slot.days)} {slot.start:%H:%M}-{end}"


def _in_slot(slot: AllowedSlot, local: datetime) -> bool:
    if WEEKDAYS[local.weekday()] not in slot.days:
        return False
    clock = local.time().replace(tzinfo=None)
    return slot.start <= clock and (slot.end >= END_OF_DAY or clock < slot.end)


def _freeze_on(windows: Windows, day: date) -> Freeze | None:
    return next((f for f in windows.freezes if f.start <= day <= f.end), None)


def window_status(windows: Windows, at: datetime) -> WindowStatus:
    """Whether a release may launch at `at` (aware), and why (or why not)."""
    zone = ZoneInfo(windows.timezone)
    local = _aware(at).astimezone(zone)
    stamp = f"{local:%a %Y-%m-%d %H:%M} {local.tzname()} ({windows.timezone})"
    freeze = _freeze_on(windows, local.date())
    if freeze is not None:
        return WindowStatus(
            False, f"release freeze {freeze.start}..{freeze.end}: {freeze.reason} (now {stamp})"
        )
    if not windows.allowed:
        return WindowStatus(True, f"no release windows configured: any time is allowed (now {stamp})")
    for slot in windows.allowed:
        if _in_slot(slot, local):
            return WindowStatus(True, f"inside release window {_slot_label(slot)} (now {stamp})")
    allowed = "; ".join(_slot_label(s) for s in windows.allowed)
    return WindowStatus(False, f"outside the release windows ({allowed}) at {stamp}")


def _first_instant(day: date, clock: time, zone: ZoneInfo) -> datetime:
    """The first real instant at which the local clock on `day` reads `clock` or later.

    Normal times map one to one; a repeated (autumn) time maps to its first pass; a skipped
    (spring) time maps to the moment the clock jumps over it.
    """
    wall = datetime.combine(day, clock)
    first = wall.replace(tzinfo=zone, fold=0).astimezone(UTC)
    if first.astimezone(zone).replace(tzinfo=None) == wall:
        return first
    other = wall.replace(tzinfo=zone, fold=1).astimezone(UTC)
    lo, hi = min(first, other), max(first, other)  # the jump lies between the two readings
    before = lo.astimezone(zone).utcoffset()
    while hi - lo > timedelta(seconds=1):
        mid = lo + (hi - lo) / 2
        if mid.astimezone(zone).utcoffset() == before:
            lo = mid
        else:
            hi = mid
    return hi.replace(microsecond=0) if hi.microsecond else hi


def _offset_changes(day: date, zone: ZoneInfo) -> list[datetime]:
    """Instants on `day` where the zone's UTC offset changes (daylight-saving transitions)."""
    start = datetime.combine(day, time()).replace(tzinfo=zone).astimezone(UTC)
    end = start + timedelta(hours=26)
    if start.astimezone(zone).utcoffset() == end.astimezone(zone).utcoffset():
        return []
    lo, hi = start, end
    before = lo.astimezone(zone).utcoffset()
    while hi - lo > timedelta(seconds=1):
        mid = lo + (hi - lo) / 2
        if mid.astimezone(zone).utcoffset() == before:
            lo = mid
        else:
            hi = mid
    return [hi.replace(microsecond=0)]


def _candidates(windows: Windows, day: date, zone: ZoneInfo) -> list[datetime]:
    """Every instant on a local day at which a closed window can become open."""
    found = [_first_instant(day, time(), zone), *_offset_changes(day, zone)]
    for slot in windows.allowed:
        if WEEKDAYS[day.weekday()] in slot.days:
            found.append(_first_instant(day, slot.start, zone))
            # the second pass of a repeated autumn hour
            found.append(datetime.combine(day, slot.start).replace(tzinfo=zone, fold=1).astimezone(UTC))
    return found


def next_opening(
    windows: Windows, after: datetime, horizon_days: int = DEFAULT_HORIZON_DAYS
) -> datetime | None:
    """The first instant at or after `after` when the window is open (UTC), or None within
    `horizon_days` (e.g. every slot falls in a freeze)."""
    after = _aware(after).astimezone(UTC)
    if window_status(windows, after).open:
        return after
    zone = ZoneInfo(windows.timezone)
    first_day = after.astimezone(zone).date()
    for offset in range(horizon_days + 1):
        day = first_day + timedelta(days=offset)
        for instant in sorted(set(_candidates(windows, day, zone))):
            if instant >= after and window_status(windows, instant).open:
                return instant
    return None


def launch_window_problem(
    windows: Windows, at: datetime, break_glass_reason: str = "", has_break_glass_rule: bool = True
) -> str | None:
    """What preflight says about the window: None when a launch may proceed.

    Outside a window (or in a freeze) the launch is refused unless a break-glass reason is
    given; a break-glass launch is allowed only when the manifest names who must approve it
    (an approval rule for phase `break_glass`), and that approval is required before the first
    promotion (see `break_glass_waiting`).
    """
    status = window_status(windows, at)
    if status.open:
        return None
    if break_glass_reason.strip():
        if has_break_glass_rule:
            return None
        return (
            f"{status.reason}; break-glass launch refused: the manifest has no approval rule for phase "
            "break_glass, so nobody could approve it (add approvals: - {phase: break_glass, group: [...]})"
        )
    opening = next_opening(windows, at)
    when = (
        f"next opening {opening.astimezone(ZoneInfo(windows.timezone)):%a %Y-%m-%d %H:%M %Z}"
        if opening
        else "no opening within a year"
    )
    return (
        f"launch refused: {status.reason}; {when}. Queue it with `release request ... --window next`, "
        "or give break_glass_reason (needs a break_glass approval before the first promotion)"
    )


def break_glass_reason_of(events: list) -> str:
    """The break-glass reason a release was launched with (its `state:planned` event), or ''."""
    for event in events:
        if event.kind == "state:planned":
            return str((event.payload or {}).get("break_glass_reason") or "")
    return ""


def break_glass_waiting_for(manifest, release, events: list, approvals: list) -> str | None:
    """None unless the release was launched with break-glass and still lacks its approval.

    Called before every promotion: a break-glass release may deploy its canaries and take the
    first traffic step, but moves no further until someone in the `break_glass` rule's group
    other than the launcher approves it. `events` and `approvals` are the release's own.
    """
    reason = break_glass_reason_of(events)
    if not reason:
        return None
    planned = next(e for e in events if e.kind == "state:planned")
    if window_status(manifest.windows, planned.created_at).open:
        return None  # launched inside the window after all: the reason is only on record
    rules = [r for r in manifest.approvals if r.phase.value == "break_glass"]
    if not rules:
        return (
            f"release {release.id} was launched with break-glass ({reason}) but the manifest has no "
            "break_glass approval rule; add one and approve, or roll the release back"
        )
    for rule in rules:
        got = sorted(
            {a.approver for a in approvals if a.phase == "break_glass" and a.approver in rule.group
             and a.approver != release.created_by}
        )
        if len(got) < rule.required:
            eligible = [g for g in rule.group if g != release.created_by and g not in got]
            return (
                f"release {release.id} was launched outside its release window with break-glass "
                f"({reason}); it waits for {rule.required - len(got)} more break_glass approval(s) from "
                f"{', '.join(eligible)} (launcher {release.created_by} cannot approve); run: "
                f"release approve {release.id} --phase break_glass --as NAME"
            )
    return None
