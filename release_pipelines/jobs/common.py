"""What every release op shares: tags, naming, the step context, and turning errors into Failures."""

from __future__ import annotations

import contextlib
import re
from collections.abc import Iterator

from dagster import AssetKey, AssetMaterialization, Failure, MetadataValue, OpExecutionContext

from release_pipelines import settings
from release_pipelines.errors import ReleaseError
from release_pipelines.product import Product
from release_pipelines.steps.context import StepContext

TAG_PRODUCT = "release/product"
TAG_RELEASE = "release/id"
TAG_KIND = "release/job"
USER_TAG = "dagster/user"  # set by Dagster+ / authenticated webservers when a person launches


def op_name(prefix: str, name: str) -> str:
    """Dagster names allow [A-Za-z0-9_]; manifest names may contain '-'."""
    return f"{prefix}_{re.sub(r'[^A-Za-z0-9_]', '_', name)}"


def actor_of(context: OpExecutionContext) -> str:
    return context.run.tags.get(USER_TAG) or context.run.tags.get("release/actor") or settings.identity()


def step_context(context: OpExecutionContext, product: Product, ledger, release_id: str) -> StepContext:
    return StepContext(
        product=product,
        ledger=ledger,
        release_id=release_id,
        actor=actor_of(context),
        run_id=context.run_id,
        log=context.log.info,
    )


def tag_run(context: OpExecutionContext, product: Product, release_id: str) -> None:
    """Tag the run with product and release so the UI can filter and sensors can find it."""
    context.instance.add_run_tags(context.run_id, {TAG_PRODUCT: product.name, TAG_RELEASE: release_id})


@contextlib.contextmanager
def failing_clearly(ctx: StepContext | None, what: str) -> Iterator[None]:
    """Record a failed step in the ledger and fail the op with the project's own message."""
    try:
        yield
    except ReleaseError as exc:
        if ctx is not None:
            ctx.record("step:failed", step=what, error=str(exc))
        raise Failure(description=f"{what}: {exc}") from None


def service_materialization(product: Product, service: str, status, release_id: str, note: str) -> AssetMaterialization:
    """`services/<name>` with the versions that run and the canary's share of traffic."""
    return AssetMaterialization(
        asset_key=AssetKey(["services", service]),
        description=note,
        metadata={
            "release_id": release_id,
            "product": product.name,
            "stable_version": status.stable_version or "",
            "canary_version": status.canary_version or "",
            "canary_weight": MetadataValue.int(int(status.canary_weight)),
            "note": note,
        },
    )
