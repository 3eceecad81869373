"""The local platform with real processes and real HTTP: the example shop's service.py behind routers."""

from __future__ import annotations

import asyncio
import importlib.util
import json
import math
import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import psutil
import pytest
from prometheus_client.parser import text_string_to_metric_families
from release_pipelines.resources.local_platform import LocalPlatform
from release_pipelines.resources.platform import DeployError, DeploymentPlatform

from release_pipelines.core.manifest import Deploy, Health, LocalDeploy, Manifest, Service

SHOP_DIR = Path(__file__).resolve().parents[2] / "examples" / "shop"
_spec = importlib.util.spec_from_file_location("shop_loadgen", SHOP_DIR / "loadgen.py")
assert _spec and _spec.loader
loadgen = sys.modules["shop_loadgen"] = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(loadgen)


def _service(name: str, depends_on: list[str] | None = None) -> Service:
    command = ["{python}", "{manifest_dir}/service.py", "--service", "{service}", "--version", "{version}",
               "--port", "{port}", "--flags", "{flags_file}"]
    return Service(
        name=name,
        depends_on=depends_on or [],
        # No injected errors: these tests count every failure as a dropped request.
        deploy=Deploy(local=LocalDeploy(command=command, env={"SHOP_ERROR_RATE": "0"}, drain_seconds=0.3)),
        health=Health(interval_seconds=0.05, retries=200, timeout_seconds=1),
    )


MANIFEST = Manifest(product="shop", services=[_service("catalog"), _service("orders", ["catalog"])])


def _descendants() -> set[int]:
    return {p.pid for p in psutil.Process().children(recursive=True) if p.status() != psutil.STATUS_ZOMBIE}


@pytest.fixture(autouse=True, scope="module")
def no_orphans() -> Iterator[None]:
    """Whatever the tests start, nothing may outlive them."""
    before = _descendants()
    yield
    left = _descendants() - before
    assert not left, f"orphan processes left behind: {[psutil.Process(p).cmdline() for p in left]}"


@pytest.fixture
def platform(tmp_path: Path) -> Iterator[LocalPlatform]:
    local = LocalPlatform(MANIFEST, SHOP_DIR, tmp_path / "state")
    yield local
    local.stop_all()


def _load(url: str, requests: int, concurrency: int = 16) -> loadgen.LoadResult:
    return asyncio.run(loadgen.run_load(url, requests=requests, duration_seconds=60, concurrency=concurrency))


def _wait_until(condition: Callable[[], bool], seconds: float = 5.0) -> None:
    """A signal is delivered asynchronously: poll instead of sleeping a fixed time."""
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.02)


def test_first_install_then_canary_share_is_binomial(platform: LocalPlatform) -> None:
    assert isinstance(platform, DeploymentPlatform)
    first = platform.deploy_canary("catalog", "1.0.0")
    assert (first.stable_version, first.canary_version, first.healthy) == ("1.0.0", None, True)
    platform.deploy_canary("catalog", "1.1.0")
    status = platform.set_weight("catalog", 10)
    assert (status.stable_version, status.canary_version, status.canary_weight) == ("1.0.0", "1.1.0", 10)

    p = 0.10
    result = _load(f"{status.endpoint}/products", 2000)  # fewer when the machine is slow: 60 s at most
    n = result.sent
    assert n >= 500 and result.errors == 0, result
    canary = result.by_version["1.1.0"]
    assert abs(canary - n * p) <= 4.5 * math.sqrt(n * p * (1 - p)), f"canary got {canary} of {n}"

    # The metric names are a contract with the metrics provider.
    text = httpx.get(f"{status.endpoint}/_router/metrics").text
    samples = [s for family in text_string_to_metric_families(text) for s in family.samples]
    counted = {
        s.labels["role"]: s.value for s in samples
        if s.name == "release_router_requests_total" and s.labels["code_class"] == "2xx"
    }
    assert counted == {"canary": canary, "stable": n - canary}
    buckets = {s.labels["le"] for s in samples if s.name == "release_router_request_duration_seconds_bucket"}
    assert {"0.005", "0.3", "10.0", "+Inf"} <= buckets
    assert httpx.get(f"{status.endpoint}/_router/state").json() == {
        "stable": {"version": "1.0.0", "port": platform.list_versions()[0].port},
        "canary": {"version": "1.1.0", "port": platform.list_versions()[1].port},
        "weight": 10,
    }
    answer = httpx.get(f"{status.endpoint}/products")
    assert answer.headers["X-Release-Role"] in {"stable", "canary"} and "X-Release-Version" in answer.headers


def test_weight_changes_and_promote_during_steady_stream_drop_nothing(platform: LocalPlatform) -> None:
    platform.deploy_canary("catalog", "1.0.0")
    endpoint = platform.deploy_canary("catalog", "1.1.0").endpoint
    results = []
    # Bounded by duration: the stream outlasts the route changes and the promotion.
    stream = threading.Thread(
        target=lambda: results.append(asyncio.run(loadgen.run_load(f"{endpoint}/products", 100_000, 4.0, 8)))
    )
    stream.start()
    for weight in (25, 50, 100, 0, 75, 10, 50):
        time.sleep(0.25)
        platform.set_weight("catalog", weight)
    platform.promote("catalog")
    stream.join()
    (result,) = results
    assert result.errors == 0, result
    # both versions served a real share of the stream while routes changed (a count would depend
    # on how fast this machine is at the moment: 248 requests in 4 s under load, thousands when quiet)
    total = sum(result.by_version.values())
    assert total >= 100 and min(result.by_version.values()) >= total / 10, result.by_version
    assert set(result.by_version) == {"1.0.0", "1.1.0"}


def test_a_service_that_never_answers_fails_in_its_window_and_says_which_setting_waits_longer(
    tmp_path: Path,
) -> None:
    silent = Service(
        name="catalog",
        deploy=Deploy(local=LocalDeploy(command=["{python}", "-c", "import time; time.sleep(60)"])),
        health=Health(interval_seconds=0.05, retries=10, timeout_seconds=0.2),
    )
    local = LocalPlatform(Manifest(product="shop", services=[silent]), SHOP_DIR, tmp_path / "state")
    try:
        with pytest.raises(DeployError) as failure:
            local.deploy_canary("catalog", "1.0.0")
    finally:
        local.stop_all()
    message = str(failure.value)
    assert re.search(r"no healthy answer in \d+ s \(11 tries, ", message), message
    assert "ConnectError" in message and "needs a larger health.retries" in message


def test_crashing_canary_fails_health_check_and_abort_restores_stable(platform: LocalPlatform) -> None:
    with pytest.raises(DeployError, match=r"catalog 0\.9-crash failed its health check\. It was stopped; nothing serves"):
        platform.deploy_canary("catalog", "0.9-crash")
    assert platform.status("catalog").stable_version is None

    platform.deploy_canary("catalog", "1.0.0")
    with pytest.raises(DeployError) as failure:
        platform.deploy_canary("catalog", "2.0.0-crash")
    message = str(failure.value)
    assert "catalog 2.0.0-crash" in message and "exited with code 3" in message
    assert "this build crashes at start" in message, "the log tail is part of the message"
    assert not platform.health_check("catalog", "2.0.0-crash").healthy
    with pytest.raises(DeployError, match="not running"):
        platform.set_weight("catalog", 10)

    status = platform.abort("catalog")
    assert (status.stable_version, status.canary_version, status.canary_weight, status.healthy) == (
        "1.0.0", None, 0, True
    )
    result = _load(f"{status.endpoint}/products", 100)
    assert dict(result.by_version) == {"1.0.0": 100} and result.errors == 0
    assert platform.abort("catalog").canary_version is None, "abort is idempotent"


def test_promote_makes_canary_stable_and_stops_old_process(platform: LocalPlatform) -> None:
    platform.deploy_canary("catalog", "1.0.0")
    (old,) = platform.list_versions()
    platform.deploy_canary("catalog", "1.1.0")
    platform.set_weight("catalog", 50)
    status = platform.promote("catalog")
    assert (status.stable_version, status.canary_version, status.canary_weight) == ("1.1.0", None, 0)
    assert not psutil.pid_exists(old.pid), "old stable must stop after draining"
    assert [(v.version, v.role, v.alive) for v in platform.list_versions()] == [("1.1.0", "stable", True)]
    assert dict(_load(f"{status.endpoint}/products", 50).by_version) == {"1.1.0": 50}
    assert platform.promote("catalog").stable_version == "1.1.0", "a second promote is harmless"


def test_state_survives_new_instance_and_dead_process_is_noticed(platform: LocalPlatform, tmp_path: Path) -> None:
    platform.deploy_canary("catalog", "1.0.0")
    platform.deploy_canary("catalog", "1.1.0")
    platform.set_weight("catalog", 30)

    # Another process (a later Dagster run, the CLI) sees and changes the same services.
    script = (
        "import json, sys; from pathlib import Path;"
        "from release_pipelines.resources.local_platform import LocalPlatform;"
        "from tests.integration.test_local_platform import MANIFEST, SHOP_DIR;"
        "p = LocalPlatform(MANIFEST, SHOP_DIR, sys.argv[1]); s = p.set_weight('catalog', 60);"
        "print(json.dumps([s.stable_version, s.canary_version, s.canary_weight, s.healthy]))"
    )
    out = subprocess.run(
        [sys.executable, "-c", script, str(tmp_path / "state")], capture_output=True, text=True, check=True,
        cwd=Path(__file__).resolve().parents[2],
    ).stdout
    assert json.loads(out) == ["1.0.0", "1.1.0", 60, True]
    assert httpx.get(f"{platform.status('catalog').endpoint}/_router/state").json()["weight"] == 60

    other = LocalPlatform(MANIFEST, SHOP_DIR, tmp_path / "state")
    canary = next(v for v in other.list_versions() if v.role == "canary")
    os.kill(canary.pid, signal.SIGKILL)
    _wait_until(lambda: not other.status("catalog").healthy)
    status = other.status("catalog")
    assert not status.healthy and "canary 1.1.0 is not running" in status.detail
    assert [v.alive for v in other.list_versions()] == [True, False]
    assert other.abort("catalog").healthy

    # A dead router comes back on the same port, with the recorded routing.
    endpoint = other.status("catalog").endpoint
    router_pid = json.loads(other.state.path.read_text())["services"]["catalog"]["router"]["pid"]
    os.kill(router_pid, signal.SIGKILL)
    _wait_until(lambda: "router is not running" in other.status("catalog").detail)
    assert other.set_weight("catalog", 0).endpoint == endpoint
    assert dict(_load(f"{endpoint}/products", 20).by_version) == {"1.0.0": 20}


def test_dependencies_reach_each_other_through_routers_and_stop_all_leaves_nothing(
    platform: LocalPlatform,
) -> None:
    platform.deploy_canary("catalog", "1.0.0")
    orders = platform.deploy_canary("orders", "1.0.0").endpoint
    httpx.post(f"{orders}/orders", json={"product_id": 2}).raise_for_status()
    assert httpx.get(f"{orders}/orders").json()["orders"][0]["product_name"] == "Stoneware mug"

    state = json.loads(platform.state.path.read_text())
    pids = [proc["pid"] for entry in state["services"].values() for proc in
            (entry["router"], entry["stable"]) if proc]
    assert len(pids) == 4 and all(psutil.pid_exists(pid) for pid in pids)
    platform.stop_all()
    assert not any(psutil.pid_exists(pid) for pid in pids)
    assert platform.list_versions() == []
