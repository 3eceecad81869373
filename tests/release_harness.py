"""A real, isolated shop for job tests: its own RELEASE_HOME, SQLite ledger and app database,
real service processes; everything it started is stopped at the end."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil
from dagster import DagsterInstance, build_sensor_context
from release_pipelines.resources.manifest_files import load_product

from release_pipelines.core.product import Product
from release_pipelines.orchestration.dagster_resources import LedgerResource, PlatformResource
from release_pipelines.orchestration.definitions import build_definitions

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = ROOT / "examples" / "shop" / "release.yaml"
QUIET = {"loggers": {"console": {"config": {"log_level": "ERROR"}}}}


def release_config(versions: dict[str, str], **extra: Any) -> dict[str, Any]:
    return {"ops": {"preflight": {"config": {"versions": versions, **extra}}}}


def rollback_config(release_id: str = "", reason: str = "test") -> dict[str, Any]:
    return {"ops": {"rollback_start": {"config": {"release_id": release_id, "reason": reason}}}}


def promote_config(release_id: str = "") -> dict[str, Any]:
    return {"ops": {"promote_step": {"config": {"release_id": release_id}}}}


@dataclass
class Shop:
    home: Path
    manifest: Path = EXAMPLE
    instance: DagsterInstance = field(default_factory=DagsterInstance.ephemeral)

    def __post_init__(self) -> None:
        self.product: Product = load_product(self.manifest)
        self.defs = build_definitions(self.manifest)
        self.ledger = LedgerResource().open()
        self.platform = PlatformResource().for_product(self.product)

    def run(self, job: str, run_config: dict[str, Any]):
        job_def = self.defs.resolve_job_def(f"{self.product.name}_{job}")
        return job_def.execute_in_process(run_config={**run_config, **QUIET}, instance=self.instance, raise_on_error=False)

    def failure_message(self, result) -> str:
        return " ".join(
            e.step_failure_data.user_failure_data.description or ""
            for e in result.all_events
            if e.is_step_failure and e.step_failure_data.user_failure_data
        )

    def active(self):
        return self.ledger.active_release(self.product.name)

    def stable(self, service: str) -> str | None:
        return self.platform.status(service).stable_version

    def tick(self, cursor: str | None = None):
        sensor = self.defs.resolve_sensor_def(f"{self.product.name}_canary")
        context = build_sensor_context(instance=self.instance, cursor=cursor, resources=self.defs.resources,
                                       definitions=self.defs)
        return sensor.evaluate_tick(context)

    def stop(self) -> None:
        self.platform.stop_all()


def shop_environment(monkeypatch, tmp_path: Path, manifest: Path = EXAMPLE) -> Shop:
    """Point every embedded default at tmp_path; return the shop wired to it."""
    home = tmp_path / "release_home"
    home.mkdir()
    monkeypatch.setenv("RELEASE_HOME", str(home))
    monkeypatch.setenv("SHOP_DB_URL", f"sqlite:///{home / 'shop.db'}")
    monkeypatch.setenv("RELEASE_ACTOR", "ci-launcher")
    monkeypatch.delenv("RELEASE_LEDGER_URL", raising=False)
    monkeypatch.delenv("RELEASE_PROMETHEUS_URL", raising=False)
    return Shop(home, manifest)


def processes_under(home: Path) -> list[psutil.Process]:
    """Service and router processes whose command line mentions this RELEASE_HOME."""
    found = []
    for proc in psutil.process_iter(["cmdline"]):
        try:
            if any(str(home) in part for part in proc.info["cmdline"] or []):
                found.append(proc)
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
    return found




PATHS = {"catalog": "/products", "orders": "/orders", "frontend": "/"}


def send_load(shop: Shop, service: str, requests: int) -> None:
    """Real requests through the service's router (loopback only)."""
    import httpx

    endpoint = shop.platform.status(service).endpoint
    with httpx.Client(timeout=10) as client:
        for _ in range(requests):
            try:
                client.get(endpoint + PATHS.get(service, "/"))
            except httpx.HTTPError:
                pass
