"""`dg scaffold defs release_pipelines.ReleaseProductComponent <name>`: a `defs.yaml`, a starter
`release.yaml` (one service, one database, commented) and an empty Alembic project for it.

The product is named after the target folder (`defs/shop` -> product `shop`); the starter
manifest validates as written, so `dg check defs` passes right after scaffolding.
"""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import dagster as dg

STARTER = Path(__file__).parent / "starter"


def product_name(folder: Path) -> str:
    """A manifest name (a-z, 0-9, _ and -, starting with a letter) from the folder's name."""
    name = re.sub(r"[^a-z0-9_-]", "_", folder.name.lower()).lstrip("_-0123456789")
    return name[:40] or "product"


def starter_manifest(product: str) -> str:
    env_prefix = product.upper().replace("-", "_")
    text = (STARTER / "release.yaml").read_text()
    return text.replace("<PRODUCT>", env_prefix).replace("<product>", product)


class ReleaseProductScaffolder(dg.Scaffolder):
    """Writes defs.yaml, release.yaml and migrations/ (env.py, script.py.mako, versions/)."""

    def scaffold(self, request: dg.ScaffoldRequest) -> None:
        target = request.target_path
        dg.scaffold_component(request, {"manifest": "release.yaml"})
        (target / "release.yaml").write_text(starter_manifest(product_name(target)))
        versions = target / "migrations" / "versions"
        versions.mkdir(parents=True, exist_ok=True)
        (versions / ".keep").write_text("")
        for name in ("env.py", "script.py.mako"):
            shutil.copyfile(STARTER / name, target / "migrations" / name)
