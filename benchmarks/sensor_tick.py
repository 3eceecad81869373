"""Sensor tick cost: one tick of the canary sensor per active release, with 1,000 releases in canary.

A product has at most one active release, so the benchmark generates N products (one manifest
each, one service, `platform: local`), records a release of each in the ledger (SQLite under
RELEASE_HOME) and moves it planned -> preflight -> expanding -> canary step 0 with
release_pipelines.resources.ledger.Ledger. The local platform state of each product records a router, a stable
and a canary process; their pid is this benchmark's own process, so the platform's psutil
liveness checks run for real and pass. The router's endpoint is a real HTTP server in a child
process serving router-format Prometheus text at /_router/metrics; every scrape advances the
counters (stable ~200, canary ~20 requests, 0.5 % errors, latency histogram), so each tick adds
one point to every series and the judge re-runs on the whole series.

Each tick evaluates all N sensors (`defs.resolve_sensor_def("<product>_canary")`,
`build_sensor_context(...)`, `sensor.evaluate_tick(ctx)`), carrying each sensor's cursor over
as the daemon does. Reported: ms per release and seconds per tick of all N for the first tick and
for later ticks (longer series in the cursor), against the goal of 1,000 releases judged in one
tick within 10 s, and a breakdown for one release of the steady state (the reads, the pure plan).

    python -m benchmarks.sensor_tick [--quick] [--releases N]   (N = 1000; --quick: 3 ticks, else 10)
"""

from __future__ import annotations

import argparse
import os
import random
import subprocess
import sys
import tempfile
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from benchmarks.common import ROOT, median, percentile, print_header, table, verdict

GOAL_MS = 10.0  # per release: 1,000 releases in one tick within 10 s
BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)
MANIFEST = """\
product: {product}
platform: local
services:
  - name: {product}-svc
    deploy:
      local:
        command: ["{{python}}", "-c", "pass", "{{port}}"]
    canary:
      steps: [10, 50, 100]
      analysis: {{interval_seconds: 5, deadline_seconds: 300}}
"""


def service_of(product: str) -> str:
    """Service names must be unique across the products of one code location."""
    return f"{product}-svc"


# ------------------------------------------------------------------ the metrics server (child process)


class _Counters:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.rng = random.Random(7)
        self.state: dict[str, dict] = {}

    def scrape(self, service: str) -> str:
        with self.lock:
            lines = []
            for version, role, n in (("1.0.0", "stable", 200), ("1.1.0", "canary", 20)):
                s = self.state.setdefault(f"{service}/{version}", {"ok": 0, "err": 0, "b": [0] * (len(BUCKETS) + 1)})
                for _ in range(n):
                    if self.rng.random() < 0.005:
                        s["err"] += 1
                    else:
                        s["ok"] += 1
                    latency = self.rng.lognormvariate(-2.3, 0.5)  # median ~100 ms
                    index = next((i for i, le in enumerate(BUCKETS) if latency <= le), len(BUCKETS))
                    s["b"][index] += 1
                labels = f'role="{role}",service="{service}",version="{version}"'
                lines.append(f'release_router_requests_total{{code_class="2xx",{labels}}} {s["ok"]}.0')
                lines.append(f'release_router_requests_total{{code_class="5xx",{labels}}} {s["err"]}.0')
                cumulative = 0
                for le, count in zip([*map(str, BUCKETS), "+Inf"], s["b"]):
                    cumulative += count
                    lines.append(f'release_router_request_duration_seconds_bucket{{le="{le}",{labels}}} {cumulative}.0')
                lines.append(f"release_router_request_duration_seconds_count{{{labels}}} {cumulative}.0")
            header = ("# TYPE release_router_requests_total counter\n"
                      "# TYPE release_router_request_duration_seconds histogram\n")
            return header + "\n".join(lines) + "\n"


def serve(port_file: str, count: int) -> None:
    """`count` routers' /_router/metrics, one HTTP server (port) each, all in this process."""
    counters = _Counters()

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            body = counters.scrape(f"svc@{self.server.server_address[1]}").replace("svc@", "").encode()
            self.send_response(200)
            self.send_header("Content-Type", "text/plain; version=0.0.4")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *_args) -> None:
            pass

    servers = [ThreadingHTTPServer(("127.0.0.1", 0), Handler) for _ in range(count)]
    for server in servers[1:]:
        threading.Thread(target=server.serve_forever, daemon=True).start()
    Path(port_file).write_text(" ".join(str(server.server_address[1]) for server in servers))
    servers[0].serve_forever()


# ------------------------------------------------------------------ the fixture


def prepare(root: Path, products: int, ports: list[int]) -> list[str]:
    """Manifests, platform state and canary releases of `products` products."""
    import psutil
    from release_pipelines.resources import settings
    from release_pipelines.resources.ledger import Ledger
    from release_pipelines.resources.platform import StateFile

    from release_pipelines.core.states import ReleaseState

    names = [f"p{i:03d}" for i in range(products)]
    me = {"pid": os.getpid(), "started": psutil.Process().create_time(), "log": ""}
    ledger = Ledger(settings.ledger_url())
    for name, port in zip(names, ports):
        folder = root / "manifests" / name
        folder.mkdir(parents=True)
        (folder / "release.yaml").write_text(MANIFEST.format(product=name))
        with StateFile(settings.platform_state_dir(name) / "platform.json").update() as doc:
            doc["services"] = {service_of(name): {
                "router": {"version": "router", "port": port, **me},
                "stable": {"version": "1.0.0", "port": port, **me},
                "canary": {"version": "1.1.0", "port": port, **me},
                "weight": 10, "retiring": [],
            }}
        release = ledger.start_release(name, {service_of(name): "1.1.0"}, {service_of(name): "1.0.0"}, "bench")
        ledger.transition(release.id, ReleaseState.PREFLIGHT, "bench")
        ledger.transition(release.id, ReleaseState.EXPANDING, "bench")
        ledger.transition(release.id, ReleaseState.CANARY, "bench", canary_step=0)
    ledger.close()
    return names


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="3 ticks instead of 10")
    parser.add_argument("--releases", type=int, default=1000, help="active releases (one product each)")
    parser.add_argument("--serve", help=argparse.SUPPRESS)
    parser.add_argument("--routers", type=int, default=100, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        serve(args.serve, args.routers)
        return
    products, ticks = args.releases, (3 if args.quick else 10)
    started = time.monotonic()
    print_header("Sensor tick cost", f"{products} products, each with one release in canary step 0; "
                                     f"{ticks} ticks of all {products} canary sensors")
    saved = {k: os.environ.get(k) for k in ("RELEASE_HOME", "RELEASE_LEDGER_URL", "RELEASE_MANIFESTS",
                                            "RELEASE_PROMETHEUS_URL", "DAGSTER_HOME")}
    with tempfile.TemporaryDirectory(prefix="bench-sensor-") as tmp:
        root = Path(tmp)
        os.environ["RELEASE_HOME"] = str(root / "home")
        for key in ("RELEASE_LEDGER_URL", "RELEASE_PROMETHEUS_URL"):
            os.environ.pop(key, None)
        os.environ["DAGSTER_HOME"] = str(root / "dagster")
        (root / "dagster").mkdir()
        (root / "dagster" / "dagster.yaml").write_text("telemetry:\n  enabled: false\n")
        port_file = root / "port"
        server = subprocess.Popen([sys.executable, "-m", "benchmarks.sensor_tick", "--serve", str(port_file),
                                   "--routers", str(products)], cwd=ROOT)
        try:
            deadline = time.monotonic() + 60
            while not (port_file.exists() and port_file.read_text()):
                if time.monotonic() > deadline or server.poll() is not None:
                    raise SystemExit("metrics server did not start")
                time.sleep(0.05)
            ports = [int(p) for p in port_file.read_text().split()]
            per_tick, breakdown, outcome, build_s = run_ticks(root, products, ticks, ports)
        finally:
            server.terminate()
            server.wait()
            for key, value in saved.items():
                os.environ.pop(key, None) if value is None else os.environ.__setitem__(key, value)
    per_tick, per_tick_cpu = per_tick
    first, rest = per_tick[0], per_tick[1:]
    steady, steady_cpu = median(rest), median(per_tick_cpu[1:])
    rows = [["first tick (empty cursors)", f"{first:.1f}", f"{per_tick_cpu[0]:.1f}"],
            [f"ticks 2-{ticks}: median", f"{steady:.1f}", f"{steady_cpu:.1f}"],
            [f"ticks 2-{ticks}: p90", f"{percentile(rest, 90):.1f}", ""],
            [f"tick {ticks} (series of {ticks} points)", f"{per_tick[-1]:.1f}", f"{per_tick_cpu[-1]:.1f}"]]
    print(table(["tick of all sensors", "ms per release (wall)", "ms per release (CPU)"], rows))
    print()
    print(table(["one release, steady state", "ms"], [[k, f"{v:.2f}"] for k, v in breakdown.items()]))
    print(f"\nsensor results on the last tick: {outcome}")
    worst = max(first, steady)
    print(f"\nsummary: {steady:.1f} ms per release per tick ({steady_cpu:.1f} CPU), {steady * products / 1000:.1f} s per tick of {products} "
          f"(first tick {first:.1f} ms; goal <= {GOAL_MS:.0f} ms: {verdict(worst <= GOAL_MS)}; code location of "
          f"{products} products built in {build_s:.0f} s) ({time.monotonic() - started:.0f} s)")


def run_ticks(root: Path, products: int, ticks: int, ports: list[int]):
    from collections import Counter

    from dagster import DagsterInstance, build_sensor_context

    from release_pipelines.orchestration.definitions import build_definitions

    names = prepare(root, products, ports)
    build_start = time.perf_counter()
    defs = build_definitions(root / "manifests")
    build_s = time.perf_counter() - build_start
    instance = DagsterInstance.get()
    sensors = {n: defs.resolve_sensor_def(f"{n}_canary") for n in names}
    cursors: dict[str, str | None] = dict.fromkeys(names)
    per_tick: list[float] = []
    per_tick_cpu: list[float] = []  # this process only (the routers' server is another)
    outcome: Counter = Counter()
    for _tick in range(ticks):
        outcome.clear()
        start, cpu = time.perf_counter(), time.process_time()
        for name in names:
            ctx = build_sensor_context(instance=instance, cursor=cursors[name], resources=defs.resources,
                                       definitions=defs)
            result = sensors[name].evaluate_tick(ctx)
            cursors[name] = result.cursor
            outcome["run requested" if result.run_requests else "skipped"] += 1
        per_tick.append((time.perf_counter() - start) / len(names) * 1000)
        per_tick_cpu.append((time.process_time() - cpu) / len(names) * 1000)
    breakdown = _breakdown(defs, names[0], cursors[names[0]], instance)
    instance.dispose()
    return (per_tick, per_tick_cpu), breakdown, dict(outcome), build_s


def _breakdown(defs, name: str, cursor, instance) -> dict[str, float]:
    """Where one release's tick goes: ledger read, the reads (`steps.canary_reads.read_tick`: platform
    status, router scrape over the pooled client), the pure plan (`core.canary_tick.plan_tick`)."""
    from datetime import UTC, datetime

    from dagster import build_sensor_context

    from release_pipelines.core.canary_tick import plan_tick
    from release_pipelines.orchestration.dagster_resources import (
        LedgerResource,
        MetricsResource,
        PlatformResource,
    )
    from release_pipelines.resources.manifest_files import load_product
    from release_pipelines.steps.canary_reads import read_tick

    product = load_product(Path(os.environ["RELEASE_HOME"]).parent / "manifests" / name / "release.yaml")
    book = LedgerResource().open()
    platform = PlatformResource().for_product(product)
    provider = MetricsResource().provider(platform)
    reps = 20
    out: dict[str, float] = {}

    def clock(label, fn):
        start = time.perf_counter()
        for _ in range(reps):
            value = fn()
        out[label] = (time.perf_counter() - start) / reps * 1000
        return value

    release = clock("ledger: active release", lambda: book.active_release(name))
    clock("platform: status (state file + psutil)", lambda: platform.status(service_of(name)))
    clock("metrics: HTTP scrape + parse (pooled httpx.Client)",
          lambda: provider.snapshot(service_of(name), "1.0.0", "1.1.0"))
    now = datetime.now(UTC)
    reads = clock("read_tick (status, usage, scrape)", lambda: read_tick(product, release, platform, provider, book, now))
    clock("plan_tick (cursor, judge) - pure", lambda: plan_tick(product, release, cursor, reads, now))
    sensor = defs.resolve_sensor_def(f"{name}_canary")
    clock("whole evaluate_tick", lambda: sensor.evaluate_tick(build_sensor_context(
        instance=instance, cursor=cursor, resources=defs.resources, definitions=defs)))
    return out


if __name__ == "__main__":
    main()
