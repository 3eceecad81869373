"""The `ReleaseProductComponent`: one product's releases in a `dg` project, from one `defs.yaml`.

    dg scaffold defs release_pipelines.ReleaseProductComponent shop   # writes the two files below

    # src/<package>/defs/shop/defs.yaml
    type: release_pipelines.ReleaseProductComponent
    attributes:
      manifest: release.yaml                       # relative to this defs.yaml's folder
      resources:                                   # optional; empty = the RELEASE_* variables
        ledger_url: "{{ env.RELEASE_LEDGER_URL }}"
        prometheus_url: "{{ env.RELEASE_PROMETHEUS_URL }}"
        home: "{{ env.RELEASE_HOME }}"
      translation:                                 # optional, like dagster-sling's translator
        key_prefix: [acme]                         # acme/services/<svc>, acme/<db>/<schema>/<table>
        group_name: shop_release

`build_defs` gives the definitions `release_pipelines.code_location` gives for the manifest
(`orchestration.definitions.product_definitions`) plus our resources. The translation goes onto the product
(`asset_key_prefix`, `asset_group`), so its `assets.keys.AssetKeys` names the specs, the checks and
every event the ops and sensors emit alike. Products that name the same resource settings share
one set of resource objects, so their Definitions merge.
"""

import re
from dataclasses import dataclass, field, fields, replace
from functools import cache
from pathlib import Path
from typing import Annotated

import dagster as dg

from release_pipelines.components.release_product.scaffolder import ReleaseProductScaffolder
from release_pipelines.core.errors import ReleaseError
from release_pipelines.orchestration.dagster_resources import (
    LedgerResource,
    MetricsResource,
    PlatformResource,
    default_resources,
)
from release_pipelines.orchestration.definitions import product_definitions
from release_pipelines.resources.manifest_files import load_product


def described(description: str) -> dg.Resolver:
    """A field's description in the YAML schema (`dg check yaml`, editors)."""
    return dg.Resolver.default(description=description)


@dataclass(frozen=True)
class ReleaseResourceSettings(dg.Resolvable):
    """Where the release state lives; each value may be a template such as
    `{{ env.RELEASE_LEDGER_URL }}`, and an empty one falls back to the RELEASE_* variable."""

    ledger_url: Annotated[str | None, described(
        "SQLAlchemy URL of the release ledger (PostgreSQL in production); default: "
        "RELEASE_LEDGER_URL, else SQLite under `home`")] = None
    prometheus_url: Annotated[str | None, described(
        "Prometheus base URL the canary judge queries; default: RELEASE_PROMETHEUS_URL, else "
        "each service's router")] = None
    home: Annotated[str | None, described(
        "folder of the local platform's state and the SQLite ledger; default: RELEASE_HOME, else "
        "./.release (flag files stay under RELEASE_HOME: the local platform hands services that path)")] = None


@dataclass(frozen=True)
class ReleaseTranslation(dg.Resolvable):
    """How the product's table and service assets appear in the asset catalog."""

    key_prefix: Annotated[str | list[str] | None, described(
        "asset key prefix of the product's tables and services (e.g. [acme]: acme/services/<name>, "
        "acme/<database>/<schema>/<table>; a string is one part, as in Dagster's key_prefix); default: none")] = None
    group_name: Annotated[str | None, described(
        "asset group of the product's tables and services (default: one group per database, "
        "and `services`)")] = None


@dg.scaffold_with(ReleaseProductScaffolder)
@dataclass
class ReleaseProductComponent(dg.Component, dg.Resolvable):
    """Multi-step releases of one product (services + database migrations) as Dagster jobs.

    The release manifest (`release.yaml`) becomes `<product>_release`, `_promote`, `_rollback`,
    `_contract` and `_data_checks` jobs, the canary and run-failure sensors, table and service
    assets with lineage, and the data-integrity asset checks. `dg scaffold defs
    release_pipelines.ReleaseProductComponent <name>` writes a starter manifest.
    """

    manifest: Annotated[str, described(
        "path of the release manifest (release.yaml), relative to this defs.yaml's folder")]
    resources: Annotated[ReleaseResourceSettings, described(
        "ledger, Prometheus and home folder of the release resources")] = field(default_factory=ReleaseResourceSettings)
    translation: Annotated[ReleaseTranslation, described(
        "asset catalog overrides for the product's table and service assets")] = field(default_factory=ReleaseTranslation)

    def build_defs(self, context: dg.ComponentLoadContext) -> dg.Definitions:
        product = replace(load_product(manifest_path(self.manifest, Path(context.path))),
                          asset_key_prefix=key_prefix(self.translation.key_prefix or [], Path(context.path)),
                          asset_group=self.translation.group_name)
        check_shared_settings(Path(context.defs_module_path), Path(context.path), self.resources)
        return dg.Definitions.merge(product_definitions(product), dg.Definitions(resources=shared_resources(self.resources)))


ReleaseProduct = ReleaseProductComponent  # the name defs.yaml files written before 0.2 use


class ComponentAttributeError(ReleaseError):
    """An attribute in a defs.yaml names something that is not there."""


def manifest_path(manifest: str, base: Path) -> Path:
    """The manifest's absolute path; a missing file is reported against the `manifest` attribute."""
    path = Path(manifest).expanduser()
    path = path if path.is_absolute() else (base / path).resolve()
    if not path.is_file():
        raise ComponentAttributeError(
            f"{base / 'defs.yaml'}: attributes.manifest: no release manifest at {path} "
            "(a relative path starts at the folder of defs.yaml)")
    return path


def key_prefix(parts: str | list[str], base: Path) -> tuple[str, ...]:
    """The prefix as key parts (a string is one part: resolved as a list, `acme` would become
    a/c/m/e); a part that would not survive `a/b/c` key strings is reported."""
    field_name = "attributes.translation.key_prefix"
    named = [(field_name, parts)] if isinstance(parts, str) else [
        (f"{field_name}[{index}]", part) for index, part in enumerate(parts)]
    for name, part in named:
        if not re.fullmatch(r"[A-Za-z0-9_-]+", part):
            raise ComponentAttributeError(
                f"{base / 'defs.yaml'}: {name}: {part!r} is not a key "
                "part (letters, digits, _ and -; write [acme, shop] rather than acme/shop)")
    return tuple(part for _name, part in named)


_SETTINGS_BY_FOLDER: dict[Path, dict[Path, tuple[ReleaseResourceSettings, int]]] = {}
"""Per defs folder (a project), each product folder this process loaded: its resource settings and
its defs.yaml's modification time (an entry whose file changed since is stale)."""


def check_shared_settings(defs_folder: Path, folder: Path, settings: ReleaseResourceSettings) -> None:
    """Products of one code location share one set of release resources (their jobs and sensors
    use the same `release_*` keys). Two products that set them differently would fail the merge
    with Dagster's "different resources with same key", which names neither defs.yaml: name both."""
    products = _SETTINGS_BY_FOLDER.setdefault(defs_folder, {})
    products[folder] = (settings, _modified(folder / "defs.yaml"))
    for other, (theirs, modified) in products.items():
        if other != folder and theirs != settings and _modified(other / "defs.yaml") == modified:
            differ = ", ".join(f.name for f in fields(settings) if getattr(settings, f.name) != getattr(theirs, f.name))
            raise ComponentAttributeError(
                f"{folder / 'defs.yaml'}: attributes.resources: {differ} differ from {other / 'defs.yaml'}; the "
                "products of one code location share one ledger, platform home and metrics source (the release_* "
                "resources): give both the same resources, or put them in separate code locations")


def _modified(path: Path) -> int:
    try:
        return path.stat().st_mtime_ns
    except OSError:
        return -1  # gone: never equal to a recorded time of a file that existed


@cache
def shared_resources(settings: ReleaseResourceSettings = ReleaseResourceSettings()) -> dict[str, dg.ConfigurableResource]:
    """One set of resource objects per settings and process: Definitions.merge accepts a key twice
    only if it is the very same object."""
    resources = default_resources()
    home = Path(settings.home).expanduser().resolve() if settings.home else None
    ledger_url = settings.ledger_url or (f"sqlite:///{home / 'ledger.db'}" if home else "")
    for key, resource in resources.items():
        if isinstance(resource, LedgerResource) and ledger_url:
            resources[key] = LedgerResource(url=ledger_url)
        elif isinstance(resource, PlatformResource) and home:
            resources[key] = PlatformResource(state_root=str(home / "platform"))
        elif isinstance(resource, MetricsResource) and settings.prometheus_url:
            resources[key] = MetricsResource(prometheus_url=settings.prometheus_url)
    return resources
