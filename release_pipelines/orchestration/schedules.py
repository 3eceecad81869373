"""Governance automations per product: the release-window schedule and the release-record sensor.

- `<product>_release_window` (schedule, every 5 minutes, running by default): while the
  product's release window is open and no release of it is active, launches the oldest queued
  release request (`release request ... --window next`) as `<product>_release`, run key = the
  request id, its requester as the launcher (`release/actor`). A request is marked `launched`
  (with the run id) once Dagster has its run. Under the manifest's `requests:` rule each request
  is checked first (`steps.requests.launch_refusal`); one that does not count - unsigned where
  required, a signature that is not its requester's over exactly this request - is marked
  `cancelled` with the note `refused: <why>` and the next one is tried.
- `<product>_release_records` (sensor, every 30 s): when a release reaches a terminal state it
  materializes `releases/<product>` with the Markdown release notes, the data team's summary
  (tables touched with their diffs, column lineage, checks, services affected) and
  `metrics/<product>` with the delivery metrics; it also posts each state change it sees to
  RELEASE_WEBHOOK_URL (if set).
  Nothing here runs inside a release or rollback, so a slow webhook can never hold one up.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

from dagster import (
    AssetKey,
    AssetMaterialization,
    DefaultScheduleStatus,
    DefaultSensorStatus,
    JobDefinition,
    MetadataValue,
    RunRequest,
    RunsFilter,
    ScheduleEvaluationContext,
    SensorEvaluationContext,
    SensorResult,
    SkipReason,
    schedule,
    sensor,
)

from release_pipelines.core.delivery_metrics import delivery_metrics
from release_pipelines.core.lineage import render_data_summary
from release_pipelines.core.product import Product
from release_pipelines.core.records import record_metadata, render_release_notes
from release_pipelines.core.states import TERMINAL_STATES
from release_pipelines.core.windows import next_opening, window_status
from release_pipelines.orchestration.dagster_resources import LedgerResource
from release_pipelines.orchestration.jobs.common import TAG_PRODUCT
from release_pipelines.resources.notifier import WebhookNotifier, state_change_message
from release_pipelines.steps.requests import launch_refusal

TAG_REQUEST = "release/request"
TAG_ACTOR = "release/actor"
SCHEDULER = "release-window-schedule"
RECENT = 25
METRICS_DAYS = 30


def release_records_key(product: str) -> AssetKey:
    return AssetKey(["releases", product])


def metrics_key(product: str) -> AssetKey:
    return AssetKey(["metrics", product])


# -- release window ---------------------------------------------------------------------------


def window_tick(book: Any, instance: Any, product: Product, at: datetime) -> RunRequest | SkipReason:
    """One evaluation of the release-window schedule (plain function, so tests can drive it)."""
    name = product.name
    pending = []
    for request in book.release_requests(name, state="queued"):
        runs = instance.get_runs(filters=RunsFilter(tags={TAG_REQUEST: request.id}), limit=1) if instance else []
        if runs:
            book.mark_request(request.id, "launched", SCHEDULER, run_id=runs[0].run_id,
                              note=f"run {runs[0].run_id} exists")
        else:
            pending.append(request)
    if not pending:
        return SkipReason(f"no queued release requests for {name}")
    status = window_status(product.manifest.windows, at)
    if not status.open:
        opening = next_opening(product.manifest.windows, at)
        when = f"; next opening {opening:%Y-%m-%d %H:%M} UTC" if opening else ""
        return SkipReason(f"{len(pending)} request(s) queued, window closed: {status.reason}{when}")
    active = book.active_release(name)
    if active is not None:
        return SkipReason(f"{len(pending)} request(s) queued; release {active.id} is {active.state.value}")
    refused = []
    for request in pending:
        problem = launch_refusal(product.manifest, book, request)
        if problem:
            book.mark_request(request.id, "cancelled", SCHEDULER, note=f"refused: {problem}")
            refused.append(f"{request.id}: {problem}")
            continue
        return RunRequest(
            run_key=request.id,
            job_name=f"{name}_release",
            run_config={"ops": {"preflight": {"config": {"versions": dict(request.versions)}}}},
            tags={TAG_PRODUCT: name, TAG_REQUEST: request.id, TAG_ACTOR: request.created_by},
        )
    return SkipReason(f"refused and cancelled {len(refused)} request(s): {'; '.join(refused)}")


def build_release_window_schedule(product: Product, release_job: JobDefinition):
    windows = product.manifest.windows

    @schedule(
        name=f"{product.name}_release_window",
        job=release_job,
        cron_schedule="*/5 * * * *",
        execution_timezone=windows.timezone,
        default_status=DefaultScheduleStatus.RUNNING,
        description=f"Launch queued {product.name} release requests while the release window is open "
        f"({windows.timezone}); one at a time, oldest first.",
    )
    def release_window(context: ScheduleEvaluationContext, release_ledger: LedgerResource):
        at = context.scheduled_execution_time or datetime.now(UTC)
        return window_tick(release_ledger.open(), context.instance, product, at)

    return release_window


# -- release records, metrics, notifications ----------------------------------------------------


def product_metrics(book: Any, product: str, now: datetime, days: float = METRICS_DAYS):
    since = now - timedelta(days=days)
    releases = [r for r in book.releases(product=product, limit=1000) if r.created_at >= since]
    return delivery_metrics(product, releases, {r.id: book.events(r.id) for r in releases}, now, days)


def records_tick(book: Any, product: Product, cursor: dict[str, Any], now: datetime,
                 notifier: Any = None) -> tuple[list[AssetMaterialization], dict[str, Any]]:
    """Materializations for newly finished releases, notifications for state changes seen."""
    first_tick = "states" not in cursor
    states: dict[str, str] = dict(cursor.get("states", {}))
    recorded: list[str] = list(cursor.get("recorded", []))
    events: list[AssetMaterialization] = []
    for release in reversed(book.releases(product=product.name, limit=RECENT)):  # oldest first
        state = release.state.value
        if notifier is not None and not first_tick and states.get(release.id) != state:
            notifier.notify(state_change_message(
                release.id, product.name, state, release.updated_by, states.get(release.id),
                {"versions": ", ".join(f"{s}={v}" for s, v in sorted(release.versions.items()))},
            ))
        states[release.id] = state
        if release.state in TERMINAL_STATES and release.id not in recorded:
            trail = book.events(release.id)
            notes = render_release_notes(release, trail, book.approvals(release.id))
            events.append(AssetMaterialization(
                asset_key=release_records_key(product.name),
                description=f"release {release.id} {state}",
                metadata={**record_metadata(release, trail), "notes": MetadataValue.md(notes),
                          "data_summary": MetadataValue.md(render_data_summary(trail))},
            ))
            recorded.append(release.id)
    if events:
        metrics = product_metrics(book, product.name, now)
        events.append(AssetMaterialization(
            asset_key=metrics_key(product.name),
            description=f"delivery metrics of {product.name} over the last {METRICS_DAYS} days",
            metadata={k: (MetadataValue.int(v) if isinstance(v, int) else MetadataValue.float(float(v)))
                      for k, v in metrics.as_metadata().items()},
        ))
    keep = {r for r in list(states)[-4 * RECENT:]}
    return events, {"states": {k: v for k, v in states.items() if k in keep}, "recorded": recorded[-4 * RECENT:]}


def build_records_sensor(product: Product):
    @sensor(
        name=f"{product.name}_release_records",
        minimum_interval_seconds=30,
        default_status=DefaultSensorStatus.RUNNING,
        description=f"Materialize releases/{product.name} (release notes) and metrics/{product.name} when a "
        "release finishes; post state changes to RELEASE_WEBHOOK_URL.",
    )
    def release_records(context: SensorEvaluationContext, release_ledger: LedgerResource):
        cursor = json.loads(context.cursor) if context.cursor else {}
        events, cursor = records_tick(release_ledger.open(), product, cursor, datetime.now(UTC), WebhookNotifier.from_env())
        context.update_cursor(json.dumps(cursor))
        if not events:
            return SkipReason(f"no {product.name} release finished since the last tick")
        return SensorResult(asset_events=events)

    return release_records
