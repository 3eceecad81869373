"""Thin Dagster resources over the plain-Python clients of `release_pipelines.resources`.

Each resource only knows where its outside system is (`resources.clients` builds the client);
empty settings fall back to the embedded defaults under RELEASE_HOME (`resources.settings`).
"""

from __future__ import annotations

from dagster import ConfigurableResource
from pydantic import Field

from release_pipelines.core.product import Product
from release_pipelines.resources import clients, settings
from release_pipelines.resources.flags import FlagStore
from release_pipelines.resources.ledger import Ledger
from release_pipelines.resources.metrics import MetricsProvider
from release_pipelines.resources.platform import DeploymentPlatform


class LedgerResource(ConfigurableResource):
    """The release ledger: state, events, approvals (SQLite by default, PostgreSQL for real)."""

    url: str = Field(default="", description="SQLAlchemy URL; empty = RELEASE_LEDGER_URL or the SQLite default")

    def open(self) -> Ledger:
        return clients.ledger_at(self.url or settings.ledger_url())


class PlatformResource(ConfigurableResource):
    """Where services run: the manifest's `platform` picks local processes or commands."""

    state_root: str = Field(default="", description="folder for local platform state; empty = RELEASE_HOME/platform")

    def for_product(self, product: Product) -> DeploymentPlatform:
        return clients.platform_for(product, self.state_root)


class FlagsResource(ConfigurableResource):
    """Feature flags in OpenFeature flagd JSON files, one per product."""

    root: str = Field(default="", description="folder of flag files; empty = RELEASE_HOME/flags")

    def for_product(self, product: Product) -> FlagStore:
        return clients.flag_store_for(product, self.root)


class MetricsResource(ConfigurableResource):
    """Canary metrics: Prometheus when a URL is set, else each service's router directly."""

    prometheus_url: str = Field(default="", description="e.g. http://127.0.0.1:9090; empty = read the routers")

    def provider(self, platform: DeploymentPlatform) -> MetricsProvider:
        return clients.metrics_provider(platform, self.prometheus_url)


def default_resources() -> dict[str, ConfigurableResource]:
    """Our resources under `release_*` keys, so they never collide with a project's own `ledger`
    or `metrics` when the definitions are merged into it."""
    return {
        "release_ledger": LedgerResource(),
        "release_platform": PlatformResource(),
        "release_flags": FlagsResource(),
        "release_metrics": MetricsResource(prometheus_url=settings.prometheus_url()),
    }
