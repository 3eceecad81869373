"""Environments (staging -> production), blue-green switch and switch-back, tenant-scoped canaries:
real releases on real processes behind real routers, an isolated RELEASE_HOME."""

from __future__ import annotations

import threading
import time
from collections import Counter
from pathlib import Path
from typing import Self

import httpx
import pytest
from click.testing import CliRunner

from release_pipelines.core.environments import environment_products
from release_pipelines.core.states import ReleaseState
from release_pipelines.orchestration.dagster_resources import PlatformResource
from tests.release_harness import (
    ROOT,
    processes_under,
    promote_config,
    release_config,
    rollback_config,
    shop_environment,
)

SERVICE = ROOT / "examples" / "shop" / "service.py"


def _service_block(canary: str, drain: float = 0.3) -> str:
    return f"""services:
  - name: catalog
    deploy:
      local:
        command: ["{{python}}", "{SERVICE}", "--service", "catalog", "--version", "{{version}}",
                  "--port", "{{port}}", "--flags", "{{flags_file}}"]
        env: {{SHOP_ERROR_RATE: "0"}}
        drain_seconds: {drain}
    health: {{path: /healthz, interval_seconds: 0.1}}
    canary: {canary}
"""


STAGES = """product: stages
""" + _service_block("{steps: [50, 100]}") + """
flags:
  - {name: new-listing, services: [catalog], default: false}
environments:
  - name: staging
  - name: production
    flags: {new-listing: true}
    promote_into: {group: [alice, bob], required: 1, signatures: optional}
"""

BLUE_GREEN = """product: bluegreen
""" + _service_block("{strategy: blue_green, smoke_paths: [/healthz, /products], keep_warm_seconds: 120, bake_seconds: 120}",
                     drain=0.5)

TENANTS = """product: tenants
""" + _service_block("{steps: [25, 100], tenants: [acme, globex], tenant_header: X-Tenant}")


def _shop(monkeypatch, tmp_path: Path, text: str):
    manifest = tmp_path / "release.yaml"
    manifest.write_text(text)
    return shop_environment(monkeypatch, tmp_path, manifest)


def _stop(shop) -> None:
    shop.stop()
    for stage in environment_products(shop.product):
        PlatformResource().for_product(stage).stop_all()
    leftovers = processes_under(shop.home)
    assert not leftovers, f"orphan processes: {[p.pid for p in leftovers]}"


@pytest.fixture
def make_shop(monkeypatch, tmp_path):
    made = []

    def make(text: str):
        shop = _shop(monkeypatch, tmp_path, text)
        made.append(shop)
        return shop

    yield make
    for shop in made:
        _stop(shop)


# ---------------------------------------------------------------- environments


def test_release_goes_staging_then_production_only_after_staging_completed_and_approval(make_shop, monkeypatch) -> None:
    shop = make_shop(STAGES)
    import click

    from release_pipelines.cli.environments import environment_commands

    main = click.Group(commands={c.name: c for c in environment_commands})

    staging, production = environment_products(shop.product)
    assert {j.name for j in shop.defs.resolve_all_job_defs()} >= {"stages_staging_release", "stages_production_release",
                                                                    "stages_production_rollback"}
    v1 = {"catalog": "1.0.0"}

    refused = shop.run("production_release", release_config(v1))
    assert not refused.success
    assert "production is entered only after staging completed the same versions" in shop.failure_message(refused)
    assert shop.ledger.releases("stages") == []

    assert shop.run("staging_release", release_config(v1)).success
    first = shop.ledger.active_release(staging.name) or shop.ledger.releases("stages", environment="staging")[0]
    assert (first.environment, first.state) == ("staging", ReleaseState.COMPLETED)

    refused = shop.run("production_release", release_config(v1))
    assert not refused.success and "needs 1 more approval(s) from alice, bob" in shop.failure_message(refused)

    runner = CliRunner()
    env = {"RELEASE_MANIFESTS": str(shop.manifest)}
    denied = runner.invoke(main, ["approve-env", first.id, "--to", "production", "--as", "ci-launcher"], env=env)
    assert denied.exit_code == 2 and "cannot approve" in " ".join(denied.output.split())
    ok = runner.invoke(main, ["approve-env", first.id, "--to", "production", "--as", "bob"], env=env)
    assert ok.exit_code == 0, ok.output
    plan = runner.invoke(main, ["promote-env", first.id, "--to", "production"], env=env)
    assert plan.exit_code == 0 and '"versions": {"catalog": "1.0.0"}' in plan.output, plan.output

    result = shop.run("production_release", release_config(v1))
    assert result.success, shop.failure_message(result)
    prod_release = shop.ledger.releases("stages", environment="production")[0]
    assert (prod_release.environment, prod_release.state, prod_release.versions) == ("production", ReleaseState.COMPLETED, v1)
    # each environment has its own processes, routers and flags
    staging_platform, production_platform = (PlatformResource().for_product(p) for p in (staging, production))
    assert staging_platform.status("catalog").endpoint != production_platform.status("catalog").endpoint
    from release_pipelines.orchestration.dagster_resources import FlagsResource

    assert FlagsResource().for_product(production).get("new-listing") is True
    assert FlagsResource().for_product(staging).get("new-listing") is False

    # the next release: staging still in canary -> production refused; once staging completes it may enter
    v2 = {"catalog": "1.1.0"}
    assert shop.run("staging_release", release_config(v2)).success
    second = shop.ledger.active_release(staging.name)
    assert second.environment == "staging" and second.state is ReleaseState.CANARY
    refused = shop.run("production_release", release_config(v2))
    assert not refused.success and f"release {second.id} in staging is canary, not completed" in shop.failure_message(refused)
    blocked = runner.invoke(main, ["promote-env", second.id, "--to", "production"], env=env)
    assert blocked.exit_code == 2 and "not completed" in " ".join(blocked.output.split())
    assert shop.run("staging_promote", promote_config()).success
    assert shop.ledger.get(second.id).state is ReleaseState.COMPLETED
    shop.ledger.add_approval(second.id, "promote_into:production", "alice")
    result = shop.run("production_release", release_config(v2))
    assert result.success, shop.failure_message(result)
    assert shop.ledger.active_release(production.name).versions == v2  # in canary in production, one per env
    assert production_platform.status("catalog").canary_version == "1.1.0"
    shown = runner.invoke(main, ["environments", "stages"], env=env)
    assert shown.exit_code == 0 and "staging" in shown.output and "production" in shown.output
    assert shop.ledger.verify().ok


# ---------------------------------------------------------------- blue-green


class Load:
    """Steady loopback load through the router: every answer's status and serving version."""

    def __init__(self, endpoint: str):
        self.endpoint, self.stop = endpoint, threading.Event()
        self.codes: Counter[int] = Counter()
        self.versions: Counter[str] = Counter()
        self.errors: list[str] = []
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        with httpx.Client(timeout=10) as client:
            while not self.stop.is_set():
                try:
                    response = client.get(self.endpoint + "/products")
                    self.codes[response.status_code] += 1
                    self.versions[response.headers.get("X-Release-Version", "?")] += 1
                except httpx.HTTPError as exc:
                    self.errors.append(type(exc).__name__)

    def __enter__(self) -> Self:
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop.set()
        self.thread.join(timeout=15)

    @property
    def failed(self) -> int:
        return len(self.errors) + sum(n for code, n in self.codes.items() if code >= 500)


def test_blue_green_switch_and_switch_back_under_load_fail_no_request(make_shop) -> None:
    shop = make_shop(BLUE_GREEN)
    assert shop.run("release", release_config({"catalog": "1.0.0"})).success
    endpoint = shop.platform.status("catalog").endpoint
    with Load(endpoint) as load:
        result = shop.run("release", release_config({"catalog": "1.1.0"}))
        assert result.success, shop.failure_message(result)
        release = shop.active()
        assert release.state is ReleaseState.BAKING  # switched at once; bakes while 1.0.0 stays warm
        status = shop.platform.status("catalog")
        assert (status.stable_version, status.canary_version) == ("1.1.0", None)
        from release_pipelines.resources.blue_green_local import warm_version

        assert warm_version(shop.platform, "catalog") == "1.0.0"
        kinds = [e.kind for e in shop.ledger.events(release.id)]
        assert kinds.index("bluegreen:gates") < kinds.index("bluegreen:switch:start")
        gates = next(e for e in shop.ledger.events(release.id) if e.kind == "bluegreen:gates")
        assert [r["path"] for r in gates.payload["smoke"]] == ["/healthz", "/products"] and gates.payload["passed"]
        switched_at = sum(load.versions.values())
        while sum(load.versions.values()) < switched_at + 50:
            time.sleep(0.01)
        rollback = shop.run("rollback", rollback_config(reason="test: switch back"))
        assert rollback.success, shop.failure_message(rollback)
        after = sum(load.versions.values())
        while sum(load.versions.values()) < after + 50:
            time.sleep(0.01)
    assert load.failed == 0, (load.codes, load.errors[:5])
    assert load.versions["1.0.0"] > 0 and load.versions["1.1.0"] >= 50
    assert shop.ledger.get(release.id).state is ReleaseState.ROLLED_BACK
    status = shop.platform.status("catalog")
    assert (status.stable_version, status.canary_version) == ("1.0.0", None)
    assert {v.version for v in shop.platform.list_versions() if v.alive} == {"1.0.0"}
    done = [e for e in shop.ledger.events(release.id) if e.kind == "revert:done"]
    assert done and "switched back" in done[-1].payload["action"]


def test_blue_green_failing_smoke_moves_no_traffic(make_shop) -> None:
    shop = make_shop(BLUE_GREEN.replace("smoke_paths: [/healthz, /products]", "smoke_paths: [/healthz, /nope]"))
    assert shop.run("release", release_config({"catalog": "1.0.0"})).success
    result = shop.run("release", release_config({"catalog": "1.1.0"}))
    assert not result.success
    assert "blue-green gates failed, no traffic was moved" in shop.failure_message(result) and "/nope" in shop.failure_message(result)
    status = shop.platform.status("catalog")
    assert (status.stable_version, status.canary_version, status.canary_weight) == ("1.0.0", "1.1.0", 0)
    assert shop.run("rollback", rollback_config()).success
    assert shop.platform.status("catalog").canary_version is None


# ---------------------------------------------------------------- tenant-scoped canaries


def test_named_tenants_reach_the_canary_at_weight_0_and_nobody_else(make_shop) -> None:
    shop = make_shop(TENANTS)
    assert shop.run("release", release_config({"catalog": "1.0.0"})).success
    assert shop.run("release", release_config({"catalog": "1.1.0"})).success
    shop.platform.set_weight("catalog", 0)  # only named tenants may reach the canary now
    endpoint = shop.platform.status("catalog").endpoint
    served: dict[str, Counter[str]] = {t: Counter() for t in ("acme", "globex", "initech", "none")}
    with httpx.Client(timeout=10) as client:
        for i in range(500):
            tenant = ("acme", "globex", "initech", "none")[i % 4]
            if tenant == "none":
                response = client.get(endpoint + "/products")
            elif tenant == "globex":  # by cookie
                response = client.get(endpoint + "/products", headers={"Cookie": "tenant=globex"})
            else:
                response = client.get(endpoint + "/products", headers={"X-Tenant": tenant})
            assert response.status_code == 200
            served[tenant][response.headers["X-Release-Version"]] += 1
    assert served["acme"] == Counter({"1.1.0": 125}) and served["globex"] == Counter({"1.1.0": 125})
    assert served["initech"] == Counter({"1.0.0": 125}) and served["none"] == Counter({"1.0.0": 125})

    from release_pipelines.resources.router_metrics import RouterMetricsProvider, tenant_cohorts

    provider = RouterMetricsProvider(lambda s: endpoint, cohorts=tenant_cohorts(shop.product.manifest))
    snap = provider.snapshot("catalog", "1.0.0", "1.1.0")
    assert snap.canary.requests == 250 and snap.stable.requests == 250  # canary tenants vs stable general
    # the judge reads the same cohorts through the sensor's metrics resource
    tick = shop.tick()
    assert tick.skip_message is None or "no evidence" not in tick.skip_message
