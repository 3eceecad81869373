"""One place that turns settings into clients: the ledger, a product's platform, its flag store and
its metrics provider. The Dagster resources (`orchestration.dagster_resources`) and the CLI both
build their clients here, so they always agree on where things are."""

from __future__ import annotations

from functools import cache
from pathlib import Path

from release_pipelines.core.manifest import Platform as PlatformKind
from release_pipelines.core.product import Product
from release_pipelines.resources import settings
from release_pipelines.resources.command_platform import CommandPlatform
from release_pipelines.resources.flags import FlagStore
from release_pipelines.resources.ledger import Ledger
from release_pipelines.resources.local_platform import LocalPlatform
from release_pipelines.resources.metrics import MetricsProvider
from release_pipelines.resources.platform import DeploymentPlatform
from release_pipelines.resources.prometheus_metrics import PrometheusMetricsProvider
from release_pipelines.resources.router_metrics import RouterMetricsProvider, tenant_cohorts


@cache
def ledger_at(url: str = "") -> Ledger:
    """The ledger at `url`, else RELEASE_LEDGER_URL or the SQLite default; one per URL and process."""
    return Ledger(url or settings.ledger_url())


def platform_for(product: Product, state_root: str = "") -> DeploymentPlatform:
    """Where the product's services run: the manifest's `platform` picks local processes or commands."""
    state_dir = Path(state_root) / product.name if state_root else settings.platform_state_dir(product.name)
    if product.manifest.platform is PlatformKind.command:
        return CommandPlatform(product.manifest, state_file=state_dir / "commands.json")
    return LocalPlatform(product.manifest, product.directory, state_dir, flags_file=settings.flags_file(product.name))


def flag_store_for(product: Product, root: str = "") -> FlagStore:
    """The product's flagd JSON file (under RELEASE_HOME/flags unless `root` is given)."""
    return FlagStore(Path(root) / f"{product.name}.flagd.json" if root else settings.flags_file(product.name))


def metrics_provider(platform: DeploymentPlatform, prometheus_url: str = "") -> MetricsProvider:
    """Prometheus when a URL is set, else each service's router directly."""
    if prometheus_url:
        return PrometheusMetricsProvider(prometheus_url)
    return RouterMetricsProvider(lambda service: platform.status(service).endpoint,
                                 cohorts=tenant_cohorts(getattr(platform, "manifest", None)))
