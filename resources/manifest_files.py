"""Manifests on disk: read a file (or every manifest under a folder) into `Product`s.

The parsing itself is pure (`core.manifest_loader.parse_manifest`); this module only reads bytes
and turns file-system errors into the same `ManifestError` with the file named.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

from release_pipelines.core.errors import ManifestError, Problem
from release_pipelines.core.manifest import Manifest
from release_pipelines.core.manifest_loader import parse_manifest
from release_pipelines.core.product import Product, shared_name_problems
from release_pipelines.core.statements import APPROVAL_NAMESPACE
from release_pipelines.resources.signatures import with_signer_keys

MANIFEST_NAMES = ("release.yaml", "release.yml")


def load_manifest(path: str | Path) -> Manifest:
    """Read and validate a manifest file (and the allowed_signers files its approval rules name)."""
    path = Path(path)
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise ManifestError([Problem("", "file not found", str(path))]) from None
    except (IsADirectoryError, PermissionError) as exc:
        raise ManifestError([Problem("", f"cannot read: {exc.strerror}", str(path))]) from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ManifestError([Problem("", f"not UTF-8 text (byte {exc.start})", str(path))]) from None
    return with_signer_keys(parsed_manifest(text, str(path)), path, APPROVAL_NAMESPACE)


@lru_cache(maxsize=256)
def parsed_manifest(text: str, file: str) -> Manifest:
    """`parse_manifest`, once per content (manifests are frozen): a code server, the component and
    the CLI parse the same files again and again. Signer files are read on every load."""
    return parse_manifest(text, file)


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
    problems = shared_name_problems(products)
    if problems:
        raise ManifestError(problems)
    return products
