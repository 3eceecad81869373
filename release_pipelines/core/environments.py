"""Environments: one release promoted stage by stage (staging -> production), never re-chosen.

A manifest may declare ordered `environments:`; each is the same product with overrides
(database URLs, flag defaults, windows, approvals, and `promote_into` - who must approve entering
it). Without `environments:` nothing here applies: the product is its single implicit environment
('' in the ledger), exactly as before.

How an environment is run: `environment_products` derives one `EnvironmentProduct` per stage. Its
`name` is a `ProductName` such as `shop_production`, which is what every existing builder already
uses, so each stage gets its own jobs (`shop_staging_release`, `shop_production_promote`, ...),
sensors, platform state folder (`RELEASE_HOME/platform/shop_production`: its own processes and
routers) and flag file. The ledger reads the product (`shop`) and the environment (`production`)
from that name (`release_pipelines.resources.ledger.scope`), records the environment on the release
row (migration 0003), and keeps one active release per product AND environment.

Entering a stage (`steps.environments.entry_problems`, called by the release job's preflight) requires a release of
the previous stage with exactly the same versions that COMPLETED with green gates and verdicts,
and, when the stage has `promote_into`, approvals of that previous release (phase
`promote_into:<stage>`) by people in the group other than its launcher and the one entering.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Self

from release_pipelines.core.errors import ReleaseError
from release_pipelines.core.manifest import Environment, Manifest
from release_pipelines.core.product import Product


class ProductName(str):
    """`<product>_<environment>`: names jobs, sensors, state folders; carries both parts for the ledger."""

    base: str
    environment: str

    def __new__(cls, base: str, environment: str) -> Self:
        name = super().__new__(cls, f"{base}_{environment}")
        name.base, name.environment = str(base), str(environment)
        return name

    def __getnewargs__(self) -> tuple[str, str]:  # type: ignore[override]  # pickles as (base, environment)
        return self.base, self.environment


@dataclass(frozen=True)
class EnvironmentProduct(Product):
    """A product as it runs in one environment: the manifest with the environment's overrides."""

    environment: str = ""
    base_name: str = ""

    @property
    def name(self) -> str:
        return ProductName(self.base_name, self.environment)


def approval_phase(environment: str) -> str:
    """The ledger approval phase that lets a release's versions enter `environment`."""
    return f"promote_into:{environment}"


def environment_manifest(manifest: Manifest, env: Environment) -> Manifest:
    """The manifest with one environment's overrides applied (the environment list is kept)."""
    databases = [d.model_copy(update={"url": env.databases[d.name].url}) if d.name in env.databases else d
                 for d in manifest.databases]
    flags = [f.model_copy(update={"default": env.flags[f.name]}) if f.name in env.flags else f for f in manifest.flags]
    update: dict[str, Any] = {"databases": databases, "flags": flags}
    if env.windows is not None:
        update["windows"] = env.windows
    if env.approvals is not None:
        update["approvals"] = env.approvals
    return manifest.model_copy(update=update)


def environment_products(product: Product) -> list[EnvironmentProduct]:
    """One product per declared environment, in promotion order (empty without `environments:`)."""
    manifest = product.manifest
    return [EnvironmentProduct(environment_manifest(manifest, env), product.path, env.name, manifest.product,
                               asset_key_prefix=product.asset_key_prefix, asset_group=product.asset_group)
            for env in manifest.environments]


def environment_product(product: Product, environment: str) -> EnvironmentProduct:
    for candidate in environment_products(product):
        if candidate.environment == environment:
            return candidate
    known = ", ".join(e.name for e in product.manifest.environments) or "none (the manifest declares no environments)"
    raise ReleaseError(f"{product.manifest.product} has no environment {environment!r}; environments: {known}")


def previous_environment(manifest: Manifest, environment: str) -> Environment | None:
    names = [e.name for e in manifest.environments]
    if environment not in names:
        raise ReleaseError(f"{manifest.product} has no environment {environment!r}; environments: {', '.join(names)}")
    index = names.index(environment)
    return manifest.environments[index - 1] if index else None
