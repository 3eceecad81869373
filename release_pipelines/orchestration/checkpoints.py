"""Ledger checkpoints in Dagster: the `<product>_ledger_checkpoint` sensor signs the chain head
periodically (instead of cron running `release checkpoint`), and each checkpoint is an asset
observation of `releases/<product>`, so the UI shows up to which event a product's history is
anchored (and by which key) next to its release records.

Products sharing one ledger share its checkpoints: the first sensor to see a moved head writes one
(`write_checkpoint`, as the CLI does; `seq` is the table's key, so never two of one head) and each
product's sensor reports it once on its own `releases/<product>` (its cursor: the last seq reported).
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from typing import Any

from dagster import (
    AssetKey,
    AssetObservation,
    DagsterInstance,
    DefaultSensorStatus,
    MetadataValue,
    SensorEvaluationContext,
    SensorResult,
    SkipReason,
    sensor,
)

from release_pipelines.core.errors import ReleaseError
from release_pipelines.core.product import Product
from release_pipelines.orchestration.dagster_resources import LedgerResource
from release_pipelines.resources.checkpoints import KEY_VAR, CheckpointSettings, write_checkpoint
from release_pipelines.resources.ledger_schema import Checkpoint
from release_pipelines.resources.signatures import SignatureError, describe_key

CHECKPOINT_INTERVAL_SECONDS = 3600
INTERVAL_VAR = "RELEASE_CHECKPOINT_INTERVAL_SECONDS"


def checkpoint_observations(book: Any, checkpoint: Checkpoint,
                            products: Iterable[str] | None = None) -> list[AssetObservation]:
    """One observation of `releases/<product>` per product: `products`, or (None) every product
    the ledger holds."""
    names = sorted(set(products) if products is not None else {r.product for r in book.releases(limit=10_000)})
    return [
        AssetObservation(
            asset_key=AssetKey(["releases", product]),
            description=f"ledger checkpoint at event {checkpoint.seq}, signed by {describe_key(checkpoint.public_key)}",
            metadata={
                "checkpoint_seq": MetadataValue.int(checkpoint.seq),
                "checkpoint_head": checkpoint.head,
                "checkpoint_at": checkpoint.created_at.isoformat(),
                "checkpoint_key": describe_key(checkpoint.public_key),
                "checkpoint_signature": MetadataValue.md(f"```\n{checkpoint.statement}{checkpoint.signature}```"),
            },
        )
        for product in names
    ]


def report_checkpoint(instance: DagsterInstance, book: Any, checkpoint: Checkpoint) -> list[str]:
    """Write the observations to `instance`'s event log; returns the asset keys observed."""
    observations = checkpoint_observations(book, checkpoint)
    for observation in observations:
        instance.report_runless_asset_event(observation)
    return [observation.asset_key.to_user_string() for observation in observations]


def checkpoint_tick(book: Any, product: str, settings: CheckpointSettings,
                    reported: int | None) -> tuple[SensorResult | SkipReason, list[str]]:
    """One tick of the checkpoint sensor (plain function, so tests can drive it): sign the head if
    it moved since the ledger's last checkpoint, and observe `releases/<product>` for a checkpoint
    other than `reported` (the last one this product's sensor reported, None: none yet); returns
    the result and warnings about copies that failed."""
    if settings.key is None:
        return SkipReason(f"no checkpoint key: set {KEY_VAR} to the deployment's SSH key (see docs/production.md)"), []
    if not settings.key.is_file():
        raise ReleaseError(f"{KEY_VAR}={settings.key}: no such key file; point it at the deployment's SSH key")
    try:
        checkpoint, warnings = write_checkpoint(book, settings)
    except SignatureError as exc:
        raise ReleaseError(f"{KEY_VAR}={settings.key}: cannot sign the ledger checkpoint ({exc})") from None
    if checkpoint.seq == reported:
        return SkipReason(f"ledger head {checkpoint.seq} already checkpointed"), warnings
    return SensorResult(asset_events=checkpoint_observations(book, checkpoint, [product]),
                        cursor=str(checkpoint.seq)), warnings


def checkpoint_interval() -> int:
    """Seconds between ticks: RELEASE_CHECKPOINT_INTERVAL_SECONDS when the definitions load, else an hour."""
    configured = os.environ.get(INTERVAL_VAR, "").strip()
    if not configured:
        return CHECKPOINT_INTERVAL_SECONDS
    if not configured.isdigit() or int(configured) < 1:
        raise ReleaseError(f"{INTERVAL_VAR}={configured!r}: give a whole number of seconds (e.g. 900)")
    return int(configured)


def build_checkpoint_sensor(product: Product):
    @sensor(
        name=f"{product.name}_ledger_checkpoint",
        minimum_interval_seconds=checkpoint_interval(),
        default_status=DefaultSensorStatus.RUNNING if os.environ.get(KEY_VAR, "").strip() else DefaultSensorStatus.STOPPED,
        description=f"Sign the ledger's chain head with the deployment key ({KEY_VAR}) when it moved, keep copies "
        f"(RELEASE_CHECKPOINT_FILE, RELEASE_CHECKPOINT_WEBHOOK) and observe releases/{product.name}.",
    )
    def ledger_checkpoint(context: SensorEvaluationContext, release_ledger: LedgerResource):
        reported = int(context.cursor) if context.cursor else None
        result, warnings = checkpoint_tick(release_ledger.open(), product.name, CheckpointSettings.from_env(), reported)
        for warning in warnings:
            context.log.warning(warning)
        return result

    return ledger_checkpoint
