"""A loaded product: its manifest plus where the manifest lives (paths in it are relative)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from release_pipelines.errors import ManifestError, Problem
from release_pipelines.manifest import Manifest
from release_pipelines.manifest_loader import load_manifest

MANIFEST_NAMES = ("release.yaml", "release.yml")


@dataclass(frozen=True)
class Product:
    manifest: Manifest
    path: Path

    @property
    def name(self) -> str:
        return self.manifest.product

    @property
    def directory(self) -> Path:
        return self.path.parent

    def resolve(self, relative: str) -> Path:
        """A path from the manifest, relative to the manifest's folder."""
        return (self.directory / relative).resolve()


def load_product(path: str | Path) -> Product:
    path = Path(path).resolve()
    return Product(load_manifest(path), path)


def find_manifests(location: str | Path) -> list[Path]:
    """A manifest file itself, or every `release.yaml` / `*.release.yaml` under a folder."""
    location = Path(location)
    if location.is_file():
        return [location]
    if not location.is_dir():
        raise ManifestError([Problem("", "no such file or folder (set RELEASE_MANIFESTS)", str(location))])
    found = sorted(
        p for p in location.rglob("*.y*ml") if p.name in MANIFEST_NAMES or p.name.endswith((".release.yaml", ".release.yml"))
    )
    if not found:
        raise ManifestError([Problem("", "no release.yaml found in this folder", str(location))])
    return found


def load_products(location: str | Path) -> list[Product]:
    """Every product under a location; all manifests' problems reported together."""
    products, problems = [], []
    for path in find_manifests(location):
        try:
            products.append(load_product(path))
        except ManifestError as exc:
            problems.extend(exc.problems)
    if problems:
        raise ManifestError(problems)
    names = [p.name for p in products]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise ManifestError([Problem("product", f"product {n!r} is defined twice", None) for n in duplicates])
    problems = _shared_names(products)
    if problems:
        raise ManifestError(problems)
    return products


def _shared_names(products: list[Product]) -> list[Problem]:
    """Services and databases become asset keys (`services/<name>`, `<database>/...`), which must
    be unique in one code location: two products may not declare the same name."""
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
