"""A Dagster Component: add a product to a `dg` project with one `defs.yaml`.

    # <project>/src/<package>/defs/shop/defs.yaml
    type: release_pipelines.components.release_product.component.ReleaseProduct
    attributes:
      manifest: ../../../../release/shop.yaml   # relative to this defs.yaml's folder

`build_defs` gives the same jobs, sensors, assets and checks as `release_pipelines.definitions`
(`product_definitions`) plus the project's resources (ledger, platform, flags, metrics; they read
RELEASE_HOME / RELEASE_LEDGER_URL / RELEASE_PROMETHEUS_URL like the plain code location). Several
products in one project share one set of resource objects, so their Definitions merge cleanly.
See examples/dg_project/.
"""


from dataclasses import dataclass
from functools import cache
from pathlib import Path

import dagster as dg

from release_pipelines.orchestration.dagster_resources import default_resources
from release_pipelines.orchestration.definitions import product_definitions
from release_pipelines.resources.manifest_files import load_product


@cache
def shared_resources() -> dict[str, dg.ConfigurableResource]:
    """One set of resource objects per process: Definitions.merge accepts a key twice only if
    it is the very same object."""
    return default_resources()


def resolve_manifest(manifest: str, base: Path) -> Path:
    path = Path(manifest).expanduser()
    return path if path.is_absolute() else (base / path).resolve()


@dataclass
class ReleaseProduct(dg.Component, dg.Resolvable):
    """A product's release manifest as Dagster definitions: `<product>_release`, `_promote`,
    `_rollback`, `_data_checks` jobs, the canary and run-failure sensors, table/service assets
    with lineage and the data-integrity asset checks."""

    manifest: str
    """Path of the release manifest (release.yaml); relative paths start at the defs.yaml folder."""

    def build_defs(self, context: dg.ComponentLoadContext) -> dg.Definitions:

        product = load_product(resolve_manifest(self.manifest, Path(context.path)))
        return dg.Definitions.merge(product_definitions(product), dg.Definitions(resources=shared_resources()))
