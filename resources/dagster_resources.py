"""Thin Dagster resources over the plain-Python clients in this folder.

Each resource only knows where its outside system is; the clients do the work. Empty settings fall
back to the embedded defaults under RELEASE_HOME (see release_pipelines.settings).
"""

from __future__ import annotations

import os
from functools import cache
from pathlib import Path

from dagster import ConfigurableResource
from pydantic import Field

from release_pipelines import settings
from release_pipelines.manifest import Platform
from release_pipelines.product import Product


@cache
def _ledger(url: str):
    from resources.ledger import Ledger

    return Ledger(url)


class LedgerResource(ConfigurableResource):
    """The release ledger: state, events, approvals (SQLite by default, PostgreSQL for real)."""

    url: str = Field(default="", description="SQLAlchemy URL; empty = RELEASE_LEDGER_URL or the SQLite default")

    def open(self):
        return _ledger(self.url or settings.ledger_url())


class PlatformResource(ConfigurableResource):
    """Where services run: the manifest's `platform` picks local processes or commands."""

    state_root: str = Field(default="", description="folder for local platform state; empty = RELEASE_HOME/platform")

    def for_product(self, product: Product):
        state_dir = Path(self.state_root) / product.name if self.state_root else settings.platform_state_dir(product.name)
        if product.manifest.platform is Platform.command:
            from resources.command_platform import CommandPlatform

            return CommandPlatform(product.manifest, state_file=state_dir / "commands.json")
        from resources.local_platform import LocalPlatform

        return LocalPlatform(product.manifest, product.directory, state_dir, flags_file=settings.flags_file(product.name))


class FlagsResource(ConfigurableResource):
    """Feature flags in OpenFeature flagd JSON files, one per product."""

    root: str = Field(default="", description="folder of flag files; empty = RELEASE_HOME/flags")

    def for_product(self, product: Product):
        from resources.flags import FlagStore

        path = Path(self.root) / f"{product.name}.flagd.json" if self.root else settings.flags_file(product.name)
        return FlagStore(path)




class MetricsResource(ConfigurableResource):
    """Canary metrics: Prometheus when a URL is set, else each service's router directly."""

    prometheus_url: str = Field(default="", description="e.g. http://127.0.0.1:9090; empty = read the routers")

    def provider(self, platform):
        if self.prometheus_url:
            from resources.prometheus_metrics import PrometheusMetricsProvider

            return PrometheusMetricsProvider(self.prometheus_url)
        from resources.router_metrics import RouterMetricsProvider, tenant_cohorts

        return RouterMetricsProvider(lambda service: platform.status(service).endpoint,
                                     cohorts=tenant_cohorts(getattr(platform, "manifest", None)))


def default_resources() -> dict[str, ConfigurableResource]:
    return {
        "ledger": LedgerResource(),
        "platform": PlatformResource(),
        "flags": FlagsResource(),
        "metrics": MetricsResource(prometheus_url=os.environ.get("RELEASE_PROMETHEUS_URL", "")),
    }
