"""Where a product's tables and services sit in the asset catalog: one key mapping for all.

Specs, asset checks, the ops' materializations and observations and the canary sensor's
observations all build their keys here, so a key prefix (the component's `translation`) moves
every event with the definitions instead of splitting the catalog in two. The default mapping
gives `services/<service>` and `<database>/<schema>/<table>`.
"""

from __future__ import annotations

from dataclasses import dataclass

from dagster import AssetKey

from release_pipelines.core.product import Product


@dataclass(frozen=True)
class AssetKeys:
    """A key prefix and a group for the product's table and service assets (None: the default
    groups, one per database and `services`)."""

    prefix: tuple[str, ...] = ()
    group: str | None = None

    @classmethod
    def of(cls, product: Product) -> AssetKeys:
        return cls(tuple(product.asset_key_prefix), product.asset_group)

    def service(self, service: str) -> AssetKey:
        return AssetKey([*self.prefix, "services", service])

    def table(self, database: str, schema: str, table: str) -> AssetKey:
        return AssetKey([*self.prefix, database, schema, table])

    def group_or(self, default: str) -> str:
        return self.group or default


DEFAULT_KEYS = AssetKeys()
