"""A Dagster user's path with the real `dg` CLI and our real wheel: a project `create-dagster`
makes from nothing (named nothing like ours), our wheel installed into its own virtual environment,
the component listed, scaffolded, checked and loaded, a release launched to its first canary step
and rolled back; beside the user's own assets, resources and jobs; bad input named by file and field.

The commands are the ones README.md ("Add releases to your Dagster project") shows, in its order:
the wheel built with `pip wheel --no-deps`, `create-dagster project`, then `dg` and `release`. The
fresh venv takes its dependencies (Dagster, dg, ...) from this project's environment through a path
entry, as tests/e2e/test_wheel.py does, instead of downloading them; `dg`, `dagster` and `release`
are the console scripts pip writes.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.e2e_support import build_wheel, fresh_venv

pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("dg_project")]  # one project for the module

PRODUCT_TYPE = "release_pipelines.ReleaseProductComponent"


@dataclass
class DgProject:
    root: Path
    env: dict[str, str]

    @property
    def defs(self) -> Path:
        return self.root / "src" / "acme_data" / "defs"

    def run(self, *args: str, ok: bool = True) -> subprocess.CompletedProcess[str]:
        started = time.monotonic()
        result = subprocess.run(args, cwd=self.root, env=self.env, capture_output=True, text=True,
                                timeout=900, check=False)
        print(f"{' '.join(args)[:80]}: {time.monotonic() - started:.1f} s")  # where the minutes go
        if ok:
            assert result.returncode == 0, f"{' '.join(args)}\n{result.stdout[-4000:]}\n{result.stderr[-4000:]}"
        return result

    def python(self, code: str) -> str:
        return self.run(str(self.root / ".venv" / "bin" / "python"), "-c", textwrap.dedent(code)).stdout


def console_script(venv: Path, name: str) -> None:
    """The launcher pip writes for an installed distribution's console script, for this venv."""
    body = (Path(sys.executable).parent / name).read_text().split("\n", 1)[1]
    script = venv / "bin" / name
    script.write_text(f"#!{venv / 'bin' / 'python'}\n{body}")
    script.chmod(0o755)


@pytest.fixture(scope="module")
def acme(tmp_path_factory: pytest.TempPathFactory) -> DgProject:
    """`create-dagster project acme_data`, a fresh venv, our wheel and the project installed."""
    base = tmp_path_factory.mktemp("dg")
    wheel = build_wheel(base / "wheels", base)
    home = base / "home"
    home.mkdir()
    env = {"PATH": f"{base / 'acme_data' / '.venv' / 'bin'}:/usr/bin:/bin", "HOME": str(home),
           "DAGSTER_DG_UPDATE_CHECK_ENABLED": "0", "DAGSTER_HOME": str(home / "dagster"),
           "RELEASE_HOME": str(home / "release"), "COLUMNS": "200", "NO_COLOR": "1"}
    (home / "dagster").mkdir()
    (home / "dagster" / "dagster.yaml").write_text("telemetry:\n  enabled: false\n")
    subprocess.run([str(Path(sys.executable).parent / "create-dagster"), "project", "acme_data", "--no-uv-sync"],
                   cwd=base, env=env, check=True, capture_output=True, text=True, timeout=300)
    root = base / "acme_data"
    venv = root / ".venv"
    python = fresh_venv(venv, wheel)
    # the user's package, as an editable install would add it
    site = Path(subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                               check=True, capture_output=True, text=True).stdout.strip())
    (site / "acme_data.pth").write_text(str(root / "src") + "\n")
    for name in ("dg", "dagster"):
        console_script(venv, name)
    return DgProject(root, env | {"VIRTUAL_ENV": str(venv)})


def launch(project: DgProject, job: str, config: dict) -> None:
    """`dg launch`: runs the job in this process (rollback always does; the release job is told to,
    else its default executor would start one process per op)."""
    if job.endswith("_release"):
        config = {"execution": {"config": {"in_process": {}}}, **config}
    project.run("dg", "launch", "--job", job, "--config-json", json.dumps(config))


def release_state(project: DgProject, manifest: Path) -> dict:
    return json.loads(project.python(f"""
        import json
        from release_pipelines.resources.clients import ledger_at, platform_for
        from release_pipelines.resources.manifest_files import load_product
        product = load_product({str(manifest)!r})
        release = ledger_at().releases(product.name, limit=1)[0]
        status = platform_for(product).status(product.manifest.services[0].name)
        print(json.dumps({{"state": release.state.value, "step": release.canary_step,
                          "stable": status.stable_version, "canary": status.canary_version,
                          "weight": status.canary_weight}}))
    """))


def point_at_alembic_project(product_dir: Path) -> None:
    """What the README asks of the user: a revision in the Alembic project the manifest names, and
    its table declared (so it becomes an asset with checks)."""
    (product_dir / "migrations" / "versions" / "0001_items.py").write_text(textwrap.dedent('''\
        """Create items."""
        import sqlalchemy as sa
        from alembic import op

        revision = "0001_items"
        down_revision = None
        branch_labels = None
        depends_on = None
        phase = "expand"


        def upgrade() -> None:
            op.create_table("items", sa.Column("id", sa.BigInteger, primary_key=True),
                            sa.Column("name", sa.Text, nullable=False))


        def downgrade() -> None:
            op.drop_table("items")
    '''))
    manifest = product_dir / "release.yaml"
    text = manifest.read_text()
    starter_tables = "    tables: []\n"
    assert starter_tables in text
    manifest.write_text(text.replace(starter_tables, "    tables:\n      - name: items\n"
                                                     "        columns: {id: bigint, name: text}\n"))


def test_from_an_empty_project_to_a_canary_and_back(acme: DgProject) -> None:
    listed = json.loads(acme.run("dg", "list", "components", "--json").stdout)
    ours = next(c for c in listed["items"] if c["key"] == PRODUCT_TYPE)
    assert ours["summary"].startswith("Multi-step releases of one product")

    started = time.monotonic()
    acme.run("dg", "scaffold", "defs", PRODUCT_TYPE, "shop")
    shop = acme.defs / "shop"
    assert "manifest: release.yaml" in (shop / "defs.yaml").read_text()
    assert "All component YAML validated successfully" in acme.run("dg", "check", "yaml").stdout
    checked = acme.run("dg", "check", "defs")
    loaded_after = time.monotonic() - started
    assert "All definitions loaded successfully" in checked.stdout + checked.stderr
    print(f"\n`dg scaffold defs` -> loaded code location (`dg check defs` passed): {loaded_after:.1f} s")

    point_at_alembic_project(shop)
    listed_defs = json.loads(acme.run("dg", "list", "defs", "--json").stdout)
    jobs = {j["name"] for j in listed_defs["jobs"]}
    sensors = {s["name"] for s in listed_defs["sensors"]}
    assets = {a["asset_key"] for a in listed_defs["assets"]}
    checks = {(c["asset_key"], c["name"]) for c in listed_defs["asset_checks"]}
    assert {"shop_release", "shop_promote", "shop_rollback", "shop_contract", "shop_data_checks"} <= jobs
    assert {"shop_canary", "shop_rollback_on_failure"} <= sensors
    assert {"shop_db/public/items", "services/shop_web"} <= assets
    assert ("shop_db/public/items", "schema_contract") in checks

    manifest = shop / "release.yaml"
    try:
        launch(acme, "shop_release", {"ops": {"preflight": {"config": {"versions": {"shop_web": "1.0.0"}}}}})
        assert release_state(acme, manifest) == {"state": "completed", "step": 0, "stable": "1.0.0",
                                                 "canary": None, "weight": 0}  # a first install has no canary
        launch(acme, "shop_release", {"ops": {"preflight": {"config": {"versions": {"shop_web": "1.1.0"}}}}})
        assert release_state(acme, manifest) == {"state": "canary", "step": 0, "stable": "1.0.0",
                                                 "canary": "1.1.0", "weight": 10}
        launch(acme, "shop_rollback", {"ops": {"rollback_start": {"config": {"reason": "trying it out"}}}})
        assert release_state(acme, manifest) == {"state": "rolled_back", "step": 0, "stable": "1.0.0",
                                                 "canary": None, "weight": 0}
        history = acme.run("release", "history", "--product", "shop").stdout
        assert "rolled_back" in history and "shop_web=1.1.0" in history
    finally:
        acme.python(f"""
            from release_pipelines.resources.clients import platform_for
            from release_pipelines.resources.manifest_files import load_product
            platform_for(load_product({str(manifest)!r})).stop_all()
        """)


def test_beside_the_users_own_assets_resources_and_jobs(acme: DgProject) -> None:
    """A second product and the team's own definitions, including a resource called `ledger`."""
    own = acme.defs / "team"
    own.mkdir()
    (own / "definitions.py").write_text(textwrap.dedent("""\
        import dagster as dg


        class TeamLedger(dg.ConfigurableResource):
            path: str = "team-ledger.csv"


        @dg.asset
        def daily_orders(ledger: TeamLedger) -> int:
            return 42


        nightly = dg.define_asset_job("nightly_orders", selection=[daily_orders])
        defs = dg.Definitions(assets=[daily_orders], jobs=[nightly], resources={"ledger": TeamLedger()})
    """))
    try:
        acme.run("dg", "scaffold", "defs", PRODUCT_TYPE, "billing")
        acme.run("dg", "check", "defs")
        listed = json.loads(acme.run("dg", "list", "defs", "--json").stdout)
        jobs = {j["name"] for j in listed["jobs"]}
        assert {"nightly_orders", "billing_release", "billing_rollback"} <= jobs
        assert {"daily_orders", "services/billing_web"} <= {a["asset_key"] for a in listed["assets"]}
        assert {"billing_canary"} <= {s["name"] for s in listed["sensors"]}
        resources = {r["name"] for r in listed["resources"]}
        assert "ledger" in resources and len(resources) >= 5  # the team's `ledger` and ours
    finally:
        shutil.rmtree(own)
        shutil.rmtree(acme.defs / "billing", ignore_errors=True)


@pytest.mark.parametrize(("attributes", "command", "expected"), [
    ("  manifest: release.yaml\n  manifests: other.yaml\n", "yaml",
     (":4 - release_pipelines.ReleaseProductComponent attributes.manifests Additional properties are not "
      "allowed ('manifests' was unexpected)")),
    # `check defs` first checks the YAML (which dg 1.13.27 does for one defs.yaml per type), then loads:
    # either reports the field once, with the file
    ("  manifest: release.yaml\n  manifests: other.yaml\n", "defs", "attributes.manifests"),
    ("  manifest: nowhere/release.yaml\n", "defs",
     "defs.yaml: attributes.manifest: no release manifest at {folder}/nowhere/release.yaml"),
])
def test_bad_input_names_the_file_and_the_field(acme: DgProject, attributes: str, command: str, expected: str) -> None:
    folder = acme.defs / "broken"
    folder.mkdir()
    (folder / "defs.yaml").write_text(f"type: {PRODUCT_TYPE}\nattributes:\n{attributes}")
    # `check yaml` is given the folder: dg 1.13.27 validates one defs.yaml per component type
    paths = [str(folder)] if command == "yaml" else []
    try:
        result = acme.run("dg", "check", command, *paths, ok=False)
    finally:
        shutil.rmtree(folder)
    output = result.stdout + result.stderr
    assert result.returncode != 0
    assert str(folder / "defs.yaml") in output
    assert expected.format(folder=folder) in output
    assert output.count(expected.format(folder=folder)) == 1
    assert "Traceback (most recent call last)" not in output


def test_the_project_venv_is_not_this_repository(acme: DgProject) -> None:
    """The dg commands above ran our wheel, not this checkout's editable install."""
    location = acme.python("import release_pipelines; print(release_pipelines.__file__)").strip()
    assert location.startswith(str(acme.root / ".venv")), location
    assert os.environ.get("VIRTUAL_ENV") != acme.env["VIRTUAL_ENV"]
