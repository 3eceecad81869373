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
    return products
