"""A loaded product: its manifest plus where the manifest lives (paths in it are relative).

Reading manifests from disk is `release_pipelines.resources.manifest_files`.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from release_pipelines.core.errors import Problem
from release_pipelines.core.manifest import Manifest


@dataclass(frozen=True)
class Product:
    """`asset_key_prefix` and `asset_group` place its tables and services in the asset catalog
    (`assets.keys.AssetKeys`; set by the component's `translation`, empty by default)."""

    manifest: Manifest
    path: Path
    asset_key_prefix: tuple[str, ...] = field(default=(), kw_only=True)
    asset_group: str | None = field(default=None, kw_only=True)

    @property
    def name(self) -> str:
        return self.manifest.product

    @property
    def directory(self) -> Path:
        return self.path.parent

    def resolve(self, relative: str) -> Path:
        """A path from the manifest, relative to the manifest's folder."""
        return Path(os.path.normpath(self.directory / relative))


def shared_name_problems(products: list[Product]) -> list[Problem]:
    """Products of one code location need unique names, and so do their services and databases:
    they become asset keys (`services/<name>`, `<database>/...`)."""
    names = [p.name for p in products]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        return [Problem("product", f"product {n!r} is defined twice", None) for n in duplicates]
    owner: dict[str, str] = {}
    problems = []
    for product in products:
        for kind, names in (("services", [s.name for s in product.manifest.services]),
                            ("databases", [d.name for d in product.manifest.databases])):
            for name in names:
                if name in owner and owner[name] != product.name:
                    problems.append(Problem(
                        kind, f"{name!r} is declared by products {owner[name]!r} and {product.name!r}; service "
                        "and database names must be unique across the products of one code location",
                        str(product.path)))
                owner.setdefault(name, product.name)
    return problems
