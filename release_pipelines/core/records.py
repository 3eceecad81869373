"""The release record (pure): what a release really did, as Markdown release notes.

Built only from the ledger's events and approvals for one release, in the order they were
written, so the notes are as trustworthy as the hash-chained trail they come from. Used by
`release show ID` and attached to the `releases/<product>` asset materialization.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import datetime
from typing import Any

TERMINAL = ("completed", "rolled_back")


def duration_text(seconds: float) -> str:
    """12.3 s, 4m 05s, 2h 03m 04s, 3d 04h."""
    if seconds < 60:
        return f"{seconds:.1f} s"
    total = round(seconds)
    days, rest = divmod(total, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    if days:
        return f"{days}d {hours:02d}h"
    if hours:
        return f"{hours}h {minutes:02d}m {secs:02d}s"
    return f"{minutes}m {secs:02d}s"


def _cell(value: Any) -> str:
    text = "" if value is None else str(value)
    return text.replace("|", "\\|").replace("\n", " ").strip() or "-"


def _table(headers: Sequence[str], rows: Iterable[Sequence[Any]]) -> list[str]:
    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    lines += ["| " + " | ".join(_cell(c) for c in row) + " |" for row in rows]
    return lines


def _when(at: datetime) -> str:
    return f"{at:%Y-%m-%d %H:%M:%S} UTC"


def _since(start: datetime, at: datetime) -> str:
    return "+" + duration_text(max(0.0, (at - start).total_seconds()))


def _summary(kind: str, payload: dict[str, Any]) -> str:
    """One line per event for the full sequence."""
    p = payload
    if kind.startswith("state:"):
        extra = []
        if "canary_step" in p:
            extra.append(f"step {p['canary_step']}")
        if p.get("weights"):
            extra.append(", ".join(f"{s} {w}%" for s, w in sorted(p["weights"].items())))
        if p.get("reason"):
            extra.append(str(p["reason"]))
        return f"{p.get('from', 'new')} -> {kind[6:]}" + (f" ({'; '.join(extra)})" if extra else "")
    if kind in ("deploy:start", "deploy:done"):
        return f"{p.get('service')} {p.get('from_version') or ''}{' -> ' if 'from_version' in p else ''}{p.get('version')}"
    if kind.startswith("promote:"):
        return f"{p.get('service')} {p.get('version')} stable"
    if kind.startswith("traffic:"):
        return f"step {p.get('step')}: " + ", ".join(f"{s} {w}%" for s, w in sorted((p.get("weights") or {}).items()))
    if kind.startswith("flag:"):
        return f"{p.get('flag')} {'on' if p.get('on') else 'off'}"
    if kind == "migrate:start":
        return f"{p.get('database')} from {p.get('from_revision')}, pending {', '.join(p.get('pending') or []) or 'none'}"
    if kind == "migrate:done":
        return f"{p.get('database')} {p.get('from_revision')} -> {p.get('to_revision')} ({p.get('seconds', '?')} s)"
    if kind == "gate":
        return f"{p.get('gate')} on {p.get('database')}.{p.get('table')}: {'passed' if p.get('passed') else 'FAILED'}"
    if kind == "verdict":
        return f"step {p.get('step')}: {p.get('verdict')} - {p.get('reason')}"
    if kind.startswith("approval:"):
        return f"{p.get('approver')}" + (f": {p['comment']}" if p.get("comment") else "")
    if kind.startswith("revert:"):
        return ", ".join(f"{k}={v}" for k, v in sorted(p.items()) if v is not None)
    if kind == "step:failed":
        return f"{p.get('step')}: {p.get('error')}"
    keys = ", ".join(f"{k}={v}" for k, v in sorted(p.items()) if not isinstance(v, (dict, list)))
    return keys[:200]


def render_release_notes(release: Any, events: Sequence[Any], approvals: Sequence[Any] = ()) -> str:
    """Markdown release notes for one release from its ledger events (oldest first)."""
    events = sorted(events, key=lambda e: e.seq)
    state = getattr(release.state, "value", release.state)
    start = events[0].created_at if events else release.created_at
    end = events[-1].created_at if events else release.updated_at
    planned = next((e for e in events if e.kind == "state:planned"), None)
    break_glass = (planned.payload or {}).get("break_glass_reason") if planned else None

    lines = [f"# Release {release.id}: {state}", ""]
    lines.append(
        f"Product **{release.product}**, launched by **{release.created_by}** at {_when(release.created_at)}; "
        f"{'took' if state in TERMINAL else 'running for'} {duration_text((end - start).total_seconds())} "
        f"over {len(events)} recorded operations."
    )
    if break_glass:
        lines += ["", f"> **Break-glass launch** (outside the release window): {break_glass}"]
    failures = [e for e in events if e.kind == "step:failed"]
    for failure in failures:
        lines += ["", f"> **Failed step** {failure.payload.get('step')}: {failure.payload.get('error')}"]

    # services
    promoted = {e.payload.get("service") for e in events if e.kind == "promote:done"}
    reverted = {e.payload.get("service"): e.payload.get("action") for e in events if e.kind == "revert:done"}
    deployed = {e.payload.get("service") for e in events if e.kind == "deploy:done"}
    rows = []
    for service, to_version in sorted(release.versions.items()):
        if service in reverted:
            result = f"rolled back: {reverted[service]}"
        elif service in promoted:
            result = "promoted to stable"
        elif service in deployed:
            result = "deployed as canary"
        else:
            result = "not deployed"
        rows.append((service, release.previous.get(service) or "(new)", to_version, result))
    lines += ["", "## Services", "", *_table(("service", "from", "to", "result"), rows)]

    # migrations
    rows = [
        (e.payload.get("database"), "expand", e.payload.get("from_revision"), e.payload.get("to_revision"),
         ", ".join(e.payload.get("revisions") or []) or "none pending", e.payload.get("seconds"))
        for e in events if e.kind == "migrate:done"
    ]
    rows += [
        (e.payload.get("database"), "downgrade", None, e.payload.get("revision"), "rollback", None)
        for e in events if e.kind == "revert:migrate:done"
    ]
    rows += [(e.payload.get("database"), "kept", None, None, e.payload.get("reason"), None)
             for e in events if e.kind == "revert:schema-kept"]
    if rows:
        lines += ["", "## Migrations", "",
                  *_table(("database", "direction", "from", "to", "revisions", "seconds"), rows)]

    # gates
    rows = [
        (e.payload.get("database"), e.payload.get("table"), e.payload.get("gate"),
         "passed" if e.payload.get("passed") else "**FAILED**", e.payload.get("summary"))
        for e in events if e.kind == "gate"
    ]
    if rows:
        lines += ["", "## Data gates", "", *_table(("database", "table", "gate", "result", "summary"), rows)]

    # verdicts
    rows = [
        (e.payload.get("step"), e.payload.get("verdict"), e.payload.get("decided_by"),
         e.payload.get("reason"), _when(e.created_at))
        for e in events if e.kind == "verdict"
    ]
    if rows:
        lines += ["", "## Canary verdicts", "", *_table(("step", "verdict", "decided by", "reason", "at"), rows)]

    # approvals
    rows = [(a.phase, a.approver, _when(a.created_at), a.comment) for a in approvals]
    if not rows:
        rows = [(e.kind.split(":", 1)[1], e.payload.get("approver"), _when(e.created_at), e.payload.get("comment"))
                for e in events if e.kind.startswith("approval:")]
    if rows:
        lines += ["", "## Approvals", "", *_table(("phase", "approver", "at", "comment"), rows)]

    # state transitions with time spent in the state they left
    transitions = [e for e in events if e.kind.startswith("state:")]
    rows = []
    for index, event in enumerate(transitions):
        following = transitions[index + 1].created_at if index + 1 < len(transitions) else None
        held = duration_text((following - event.created_at).total_seconds()) if following else (
            "final" if event.kind[6:] in TERMINAL else "current")
        label = event.kind[6:]
        if event.payload.get("canary_step") is not None:
            label += f" (step {event.payload['canary_step']})"
        rows.append((index + 1, label, _when(event.created_at), _since(start, event.created_at), held,
                     event.actor, event.payload.get("reason")))
    lines += ["", "## State transitions", "",
              *_table(("#", "state", "at", "since launch", "time in state", "by", "note"), rows)]

    # everything, in order
    lines += ["", "## Operations in order", ""]
    for event in events:
        lines.append(
            f"{event.seq}. `{_since(start, event.created_at)}` **{event.kind}** by {event.actor}: "
            f"{_summary(event.kind, event.payload or {})}".rstrip(": ")
        )
    return "\n".join(lines) + "\n"


def record_metadata(release: Any, events: Sequence[Any]) -> dict[str, Any]:
    """Plain values for the asset materialization beside the Markdown."""
    events = sorted(events, key=lambda e: e.seq)
    seconds = (events[-1].created_at - events[0].created_at).total_seconds() if events else 0.0
    return {
        "release_id": release.id,
        "state": getattr(release.state, "value", release.state),
        "launched_by": release.created_by,
        "versions": ", ".join(f"{s}={v}" for s, v in sorted(release.versions.items())),
        "duration_seconds": round(seconds, 3),
        "operations": len(events),
        "last_event_seq": events[-1].seq if events else 0,
    }

