"""`release demo`: a full release of the example shop on embedded defaults, twice.

Everything is real: services and routers are OS processes, the ledger and the Dagster instance are
SQLite files under .release/, migrations run with Alembic, gates with Great Expectations. The demo
drives the same canary sensor the daemon would (one tick per load burst) and executes the runs it
requests, so the runs show up in the Dagster UI afterwards (`make ui`).
"""

from __future__ import annotations

import asyncio
import importlib.util
import os
import shutil
import sys
import time
import warnings
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import click
from dagster import BetaWarning, DagsterInstance, build_sensor_context
from rich.console import Console

from release_pipelines.core.bake import bake_remaining
from release_pipelines.orchestration.dagster_resources import LedgerResource, PlatformResource
from release_pipelines.orchestration.definitions import build_definitions
from release_pipelines.resources.manifest_files import load_product
from release_pipelines.steps.migrate import contract_pending

ROOT = Path(__file__).resolve().parents[2]  # the source checkout: the demo runs its example
EXAMPLE = ROOT / "examples" / "shop" / "release.yaml"
DEMO_HOME = ROOT / ".release" / "demo"
DAGSTER_HOME = ROOT / ".release" / "dagster_home"
TICK_REQUESTS = 300
MAX_TICKS = 120
DEMO_PATHS = {"catalog": "/products", "orders": "/orders", "frontend": "/"}


def _prepare_environment() -> None:
    shutil.rmtree(DEMO_HOME, ignore_errors=True)
    DEMO_HOME.mkdir(parents=True)
    DAGSTER_HOME.mkdir(parents=True, exist_ok=True)
    instance_config = DAGSTER_HOME / "dagster.yaml"
    if not instance_config.exists():  # SQLite storage in DAGSTER_HOME, the embedded default
        instance_config.write_text("telemetry:\n  enabled: false\n")
    os.environ.update(
        RELEASE_HOME=str(DEMO_HOME),
        DAGSTER_HOME=str(DAGSTER_HOME),
        SHOP_DB_URL=f"sqlite:///{DEMO_HOME / 'shop.db'}",
        RELEASE_MANIFESTS=str(EXAMPLE),
    )
    os.environ.pop("RELEASE_LEDGER_URL", None)
    os.environ.pop("RELEASE_PROMETHEUS_URL", None)


def _loadgen():
    spec = importlib.util.spec_from_file_location("shop_loadgen", ROOT / "examples" / "shop" / "loadgen.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)  # type: ignore[union-attr]
    return module


class Demo:
    def __init__(self, console: Console):
        self.console = console
        self.product = load_product(EXAMPLE)
        self.defs = build_definitions(EXAMPLE)
        self.instance = DagsterInstance.get()
        self.ledger = LedgerResource().open()
        self.platform = PlatformResource().for_product(self.product)
        self.loadgen = _loadgen()
        self.started = time.monotonic()

    # -- running jobs ---------------------------------------------------------------------
    def run(self, job_name: str, run_config: dict[str, Any], tags: dict[str, str] | None = None) -> bool:
        job = self.defs.resolve_job_def(job_name)
        quiet = {"loggers": {"console": {"config": {"log_level": "WARNING"}}}}
        result = job.execute_in_process(run_config={**run_config, **quiet}, instance=self.instance, tags=tags or {},
                                        raise_on_error=False)
        status = "[green]succeeded[/]" if result.success else "[red]failed[/]"
        self.console.print(f"  run [bold]{job_name}[/] {status} ({result.run_id[:8]})")
        if not result.success:
            for event in result.all_events:
                if event.is_step_failure and event.step_failure_data.user_failure_data:
                    self.console.print(f"    [red]{event.step_failure_data.user_failure_data.description}[/]")
        return result.success

    def release(self, versions: dict[str, str]) -> str | None:
        self.console.rule(f"release {', '.join(f'{s} {v}' for s, v in versions.items())}")
        ok = self.run(f"{self.product.name}_release", {"ops": {"preflight": {"config": {"versions": versions}}}})
        active = self.ledger.active_release(self.product.name)
        if not ok and active is not None:
            self.console.print("  the run failed: rolling back (what the failure sensor does under the daemon)")
            self.run(f"{self.product.name}_rollback", {"ops": {"rollback_start": {"config": {"release_id": active.id, "reason": "release run failed"}}}})
        return active.id if active else None

    # -- the canary loop --------------------------------------------------------------------
    def drive(self, release_id: str) -> str:
        sensor = self.defs.resolve_sensor_def(f"{self.product.name}_canary")
        cursor = None
        self.console.print(f"  timeline of {release_id}: one sensor tick per burst of {TICK_REQUESTS} requests per service")
        for _ in range(MAX_TICKS):
            release = self.ledger.get(release_id)
            if release.state.value in ("completed", "rolled_back", "failed") or self._awaits_contract(release):
                break
            burst = self._load(list(release.versions))
            context = build_sensor_context(instance=self.instance, cursor=cursor, resources=self.defs.resources,
                                           definitions=self.defs)
            result = sensor.evaluate_tick(context)
            cursor = result.cursor
            said = result.skip_message or ", ".join(f"-> {r.job_name}" for r in result.run_requests)
            self.console.print(
                f"  [dim]{time.monotonic() - self.started:6.1f}s[/] [bold]{self._state(release):<9}[/] "
                f"{self._split(release):<44} errors {burst:<40} [cyan]{said[:110]}[/]", highlight=False,
                soft_wrap=True,
            )
            for request in result.run_requests:
                self.run(request.job_name, request.run_config, dict(request.tags))
            if not burst:
                time.sleep(1)  # nothing to load (services down or switching): do not spin
        final = self.ledger.get(release_id)
        self.console.print(f"  release {release_id}: [bold]{final.state.value}[/]")
        return final.state.value

    def _awaits_contract(self, release) -> bool:
        return (release.state.value == "baking" and bake_remaining(self.product, release, datetime.now(UTC)) <= 0
                and bool(contract_pending(self.product, release.versions)))

    def contract(self, release_id: str, approver: str) -> str:
        """Maker-checker, then the point of no return: the contract migrations."""
        self.console.print(f"  baked; contract migrations need an approval: {approver} approves (not the launcher)")
        self.run(f"{self.product.name}_approve", {"ops": {"approve": {"config": {
            "release_id": release_id, "phase": "contract", "approver": approver, "comment": "old columns unused"}}}})
        self.run(f"{self.product.name}_contract", {"ops": {"contract_migrations": {"config": {"release_id": release_id}}}})
        state = self.ledger.get(release_id).state.value
        self.console.print(f"  release {release_id}: [bold]{state}[/]")
        return state

    def _state(self, release) -> str:
        return f"{release.state.value} {release.canary_step}" if release.state.value == "canary" else release.state.value

    def _split(self, release) -> str:
        parts = []
        for service in release.versions:
            status = self.platform.status(service)
            if status.canary_version:
                parts.append(f"{service} {status.stable_version} {100 - status.canary_weight}% / {status.canary_version} {status.canary_weight}%")
            else:
                parts.append(f"{service} {status.stable_version} 100%")
        return "; ".join(parts)

    def _load(self, services: list[str]) -> str:
        """One burst of traffic through each changed service's router; error rate per version."""
        lines = []
        for service in self.product.manifest.services:
            endpoint = self.platform.status(service.name).endpoint
            if not endpoint or service.name not in services:
                continue
            url = endpoint + DEMO_PATHS.get(service.name, "/")
            result = asyncio.run(self.loadgen.run_load(url, TICK_REQUESTS, 20.0, 24))
            rates = " ".join(
                f"{v} {result.errors_by_version[v] / n:.1%}" for v, n in sorted(result.by_version.items()) if n
            )
            lines.append(f"{service.name}: {rates}")
        return "; ".join(lines)

    def stop(self) -> None:
        self.platform.stop_all(log=lambda m: self.console.print(f"  {m}"))


def run_demo(console: Console | None = None) -> int:
    console = console or Console(width=200)
    if not EXAMPLE.is_file():
        console.print(f"[bold red]error:[/] the demo runs the example product of a source checkout; {EXAMPLE} "
                      "is not there (an installed wheel has no examples): clone the repository and run `make demo`")
        return 2
    warnings.filterwarnings("ignore", category=BetaWarning)
    _prepare_environment()
    demo = Demo(console)
    try:
        console.print("[bold]1. first install[/]: every service at 1.0.0, schema migrated, data gates checked")
        demo.release({"catalog": "1.0.0", "orders": "1.0.0", "frontend": "1.0.0"})
        console.print("\n[bold]2. a good release[/]: catalog and orders 1.1.0, judged step by step and promoted")
        good = demo.release({"catalog": "1.1.0", "orders": "1.1.0"})
        good_state = demo.drive(good) if good else "refused"
        if good_state == "baking":
            good_state = demo.contract(good, approver="alice")
        console.print("\n[bold]3. a bad release[/]: orders 1.2.0+bad fails ~5 % of requests and is rolled back")
        bad = demo.release({"orders": "1.2.0+bad"})
        bad_state = demo.drive(bad) if bad else "refused"
    finally:
        console.rule("cleaning up")
        demo.stop()
    console.print(f"\ngood release: [bold]{good_state}[/]   bad release: [bold]{bad_state}[/]")
    console.print(f"ledger: {DEMO_HOME / 'ledger.db'}  (release history / release verify-ledger with RELEASE_HOME={DEMO_HOME})")
    console.print("see the recorded runs, assets and checks in the Dagster UI: [bold]make ui[/] then open http://127.0.0.1:3000")
    return 0 if (good_state, bad_state) == ("completed", "rolled_back") else 1


@click.command("demo")
def demo_command() -> None:
    """A full demo release on embedded defaults: install, a good release, a bad one rolled back."""
    sys.exit(run_demo(Console()))
