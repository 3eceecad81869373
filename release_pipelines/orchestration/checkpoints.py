"""Ledger checkpoints in the Dagster event log: each one an asset observation of
`releases/<product>` for every product the ledger holds, so the UI shows up to which event a
product's history is anchored (and by which key) next to its release records."""

from __future__ import annotations

from typing import Any

from dagster import AssetKey, AssetObservation, DagsterInstance, MetadataValue

from release_pipelines.resources.ledger_schema import Checkpoint
from release_pipelines.resources.signatures import describe_key


def checkpoint_observations(book: Any, checkpoint: Checkpoint) -> list[AssetObservation]:
    products = sorted({r.product for r in book.releases(limit=10_000)})
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
        for product in products
    ]


def report_checkpoint(instance: DagsterInstance, book: Any, checkpoint: Checkpoint) -> list[str]:
    """Write the observations to `instance`'s event log; returns the asset keys observed."""
    observations = checkpoint_observations(book, checkpoint)
    for observation in observations:
        instance.report_runless_asset_event(observation)
    return [observation.asset_key.to_user_string() for observation in observations]
