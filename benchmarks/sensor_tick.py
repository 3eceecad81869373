"""Sensor tick cost: one tick of the canary sensor per active release, with 1,000 releases in canary.

A product has at most one active release, so the benchmark generates N products (one manifest
each, one service, `platform: local`), records a release of each in the ledger (SQLite under
RELEASE_HOME) and moves it planned -> preflight -> expanding -> canary step 0 with
release_pipelines.resources.ledger.Ledger. The local platform state of each product records a router, a stable
and a canary process; their pid is this benchmark's own process, so the platform's psutil
liveness checks run for real and pass. The router's endpoint is a real HTTP server (keep-alive)
in a child process serving /_router/metrics (and taking POST /_router/route, as the sensor sheds a
canary it judges FAIL) from a prometheus_client registry with the router's
own metrics (`resources.router`: both families and their cohort twins, same labels and buckets);
every scrape first adds a tick's traffic (stable ~200, canary ~20 requests, 0.5 % errors,
latency ~lognormal), so each tick adds one point to every series and the judge re-runs on the
whole series. The breakdown refuses to report when the scrape gives no evidence (before this
check, a hand-written exposition that prometheus_client's parser read as foreign families made
every tick "no evidence": the judge never ran).

Each tick evaluates all N sensors (`defs.resolve_sensor_def("<product>_canary")`,
`build_sensor_context(...)`, `sensor.evaluate_tick(ctx)`), carrying each sensor's cursor over
as the daemon does, with the resources the sensor asks for (what Dagster's code server builds per
evaluation). Reported: ms per release and seconds per tick of all N for the first tick and for
later ticks (longer series in the cursor), against the goal of 1,000 releases judged in one tick
within 10 s; one more tick split into the ledger read, `read_tick`, `plan_tick` and the rest
(Dagster's evaluation around them); one release's reads repeated (GET and parse apart) and the
pure plan's cost once the cursor holds 10, 60 and 120 points. `--profile TOP` adds a cProfile of
one more tick of all N. `--ab` compares the scrape's parsers in one run: after the first tick,
ticks alternate prometheus_client's general parser (A, the code before "Issue 19, P5 again") and
the strict one (B) in ABBA order, so a load that drifts or a series that grows favours neither;
the summary is then B's. `--shards K` splits the products over K processes, one code location
each (how a deployment spreads sensors over cores: a code server is one process), ticked
together: the wall time per tick is until the last shard is done, the CPU is all shards'.

    python -m benchmarks.sensor_tick [--quick] [--releases N] [--profile TOP] [--ab] [--shards K]   (N = 1000; --quick: 3 ticks, else 10)
"""

from __future__ import annotations

import argparse
import math
import os
import random
import subprocess
import sys
import tempfile
import threading
import time
from collections import defaultdict
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from benchmarks.common import ROOT, median, percentile, print_header, table, verdict
from release_pipelines.core.metrics import VersionMetrics
from release_pipelines.resources import router_metrics
from release_pipelines.resources.metrics import MetricsUnavailable, checked
from release_pipelines.resources.router import BUCKETS

GOAL_MS = 10.0  # per release: 1,000 releases in one tick within 10 s
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


class _Router:
    """One router's metrics as `resources.router.create_app` keeps them (same names, labels and
    buckets, prometheus_client's own exposition). A tick's traffic (stable ~200, canary ~20
    requests, 0.5 % errors, latency ~lognormal with a ~100 ms median) is recorded at the start and
    after each scrape is answered: a real router counts requests as they come, not while a scrape
    waits."""

    def __init__(self, service: str, rng: random.Random) -> None:
        self.service, self.rng, self.registry = service, rng, CollectorRegistry()
        self.requests = Counter("release_router_requests_total", "Requests answered, by backend version and status class",
                                ["service", "version", "role", "code_class"], registry=self.registry)
        self.duration = Histogram("release_router_request_duration_seconds", "Time to answer, by backend version",
                                  ["service", "version", "role"], buckets=BUCKETS, registry=self.registry)
        self.cohort_requests = Counter(
            "release_router_cohort_requests_total", "Requests answered, by version and cohort (tenant | general)",
            ["service", "version", "role", "cohort", "code_class"], registry=self.registry)
        self.cohort_duration = Histogram(
            "release_router_cohort_request_duration_seconds", "Time to answer, by version and cohort",
            ["service", "version", "role", "cohort"], buckets=BUCKETS, registry=self.registry)
        self.add_traffic()

    def add_traffic(self) -> None:
        for version, role, n in (("1.0.0", "stable", 200), ("1.1.0", "canary", 20)):
            for _ in range(n):
                code_class = "5xx" if self.rng.random() < 0.005 else "2xx"
                latency = self.rng.lognormvariate(-2.3, 0.5)
                self.requests.labels(self.service, version, role, code_class).inc()
                self.duration.labels(self.service, version, role).observe(latency)
                self.cohort_requests.labels(self.service, version, role, "general", code_class).inc()
                self.cohort_duration.labels(self.service, version, role, "general").observe(latency)


def serve(port_file: str, count: int) -> None:
    """`count` routers' /_router/metrics, one HTTP server (port) each, all in this process."""
    rng, lock = random.Random(7), threading.Lock()

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"  # keep-alive, as uvicorn serves the real router
        disable_nagle_algorithm = True  # as asyncio's sockets (uvicorn): headers and body are two
        # writes, and Nagle against the client's delayed ACK stalled each keep-alive GET ~40 ms

        def do_GET(self) -> None:
            with lock:
                body = generate_latest(self.server.router.registry)
            self._reply(body, "text/plain; version=0.0.4; charset=utf-8")
            with lock:
                self.server.router.add_traffic()

        def do_POST(self) -> None:  # /_router/route: the sensor sheds a canary it judged FAIL (weight 0)
            self._reply(self.rfile.read(int(self.headers.get("Content-Length") or 0)), "application/json")

        def _reply(self, body: bytes, content_type: str) -> None:
            self.send_response(200)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
            self.wfile.flush()

        def log_message(self, *_args) -> None:
            pass

    servers = [ThreadingHTTPServer(("127.0.0.1", 0), Handler) for _ in range(count)]
    for server in servers:
        server.router = _Router(f"svc@{server.server_address[1]}", rng)
    for server in servers[1:]:
        threading.Thread(target=server.serve_forever, daemon=True).start()
    Path(port_file).write_text(" ".join(str(server.server_address[1]) for server in servers))
    servers[0].serve_forever()


# ------------------------------------------------------------------ the fixture


def prepare(root: Path, products: int, ports: list[int], shards: int = 1) -> list[str]:
    """Manifests, platform state and canary releases of `products` products."""
    import psutil

    from release_pipelines.core.states import ReleaseState
    from release_pipelines.resources import settings
    from release_pipelines.resources.ledger import Ledger
    from release_pipelines.resources.platform import StateFile

    names = [f"p{i:03d}" for i in range(products)]
    me = {"pid": os.getpid(), "started": psutil.Process().create_time(), "log": ""}
    ledger = Ledger(settings.ledger_url())
    for index, (name, port) in enumerate(zip(names, ports)):
        folder = root / "manifests" / f"shard{index % shards}" / name
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
    parser.add_argument("--profile", type=int, default=0, metavar="TOP",
                        help="after the ticks, cProfile one more and print the TOP functions")
    parser.add_argument("--ab", action="store_true",
                        help="after the first tick, alternate the scrape's parser in ABBA order: A = prometheus_client's "
                             "(before issue 19 P5 again), B = router_metrics' strict one (ticks: 1 + 4, or 1 + 8 without --quick)")
    parser.add_argument("--shards", type=int, default=1,
                        help="split the products over this many processes, ticked together (default 1: "
                             "one process, with the split, the breakdown and --profile)")
    parser.add_argument("--serve", help=argparse.SUPPRESS)
    parser.add_argument("--routers", type=int, default=100, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        serve(args.serve, args.routers)
        return
    products, ticks = args.releases, (3 if args.quick else 10)
    if args.ab:
        ticks = 5 if args.quick else 9
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
            if args.shards > 1:
                per_tick, outcome, build_s = run_sharded(root, products, ticks, ports, args.shards)
                breakdown = None
            else:
                per_tick, breakdown, outcome, build_s = run_ticks(root, products, ticks, ports, args.profile, args.ab)
        finally:
            server.terminate()
            server.wait()
            for key, value in saved.items():
                os.environ.pop(key, None) if value is None else os.environ.__setitem__(key, value)
    per_tick, per_tick_cpu = per_tick
    split, breakdown, by_parser = breakdown or ({}, {}, None)
    first, rest = per_tick[0], per_tick[1:]
    steady, steady_cpu = median(rest), median(per_tick_cpu[1:])
    if by_parser:  # the summary is the strict parser's
        steady, steady_cpu = (median([w for w, _ in by_parser["B"]]), median([c for _, c in by_parser["B"]]))
    rows = [["first tick (empty cursors)", f"{first:.1f}", f"{per_tick_cpu[0]:.1f}"],
            [f"ticks 2-{ticks}: median", f"{steady:.1f}", f"{steady_cpu:.1f}"],
            [f"ticks 2-{ticks}: p90", f"{percentile(rest, 90):.1f}", ""],
            [f"tick {ticks} (series of {ticks} points)", f"{per_tick[-1]:.1f}", f"{per_tick_cpu[-1]:.1f}"]]
    print(table(["tick of all sensors", "ms per release (wall)", "ms per release (CPU)"], rows))
    if split:
        print()
        print(table([f"tick {ticks + 1} of all sensors, split", "ms per release (wall)", "ms per release (CPU)"],
                    [[k, f"{w:.2f}", f"{c:.2f}"] for k, (w, c) in split.items()]))
        print()
        print(table(["one release's reads (20 repeats each)", "ms wall", "ms CPU"],
                    [[k, f"{w:.2f}", f"{c:.2f}"] for k, (w, c) in breakdown.items()]))
    if by_parser:
        print()
        print(table(["ticks 2-" + str(ticks) + ", ABBA", "ticks", "median ms per release (wall)", "(CPU)"],
                    [[label, len(by_parser[key]), f"{median([w for w, _ in by_parser[key]]):.1f}",
                      f"{median([c for _, c in by_parser[key]]):.1f}"]
                     for key, label in (("A", "A: prometheus_client's parser"), ("B", "B: strict parser"))]))
    print(f"\nsensor results on the last tick: {outcome}")
    worst = max(first, steady)
    shards = f" over {args.shards} processes" if args.shards > 1 else ""
    print(f"\nsummary: {steady:.1f} ms per release per tick ({steady_cpu:.1f} CPU){shards}, {steady * products / 1000:.1f} s per tick of {products} "
          f"(first tick {first:.1f} ms; goal <= {GOAL_MS:.0f} ms: {verdict(worst <= GOAL_MS)}; code location of "
          f"{products} products built in {build_s:.0f} s) ({time.monotonic() - started:.0f} s)")


def sensor_ticker(location: Path):
    """(product names, tick): `tick()` evaluates every canary sensor of the products under
    `location` once, each with the cursor its last evaluation stored (as the daemon does)."""
    from collections import Counter

    from dagster import DagsterInstance, build_sensor_context

    from release_pipelines.orchestration.definitions import build_definitions

    defs = build_definitions(location)
    names = sorted(job.name.removesuffix("_canary") for job in defs.sensors if job.name.endswith("_canary"))
    instance = DagsterInstance.get()
    sensors = {n: defs.resolve_sensor_def(f"{n}_canary") for n in names}
    resources = {n: required_resources(defs, sensor) for n, sensor in sensors.items()}
    cursors: dict[str, str | None] = dict.fromkeys(names)
    outcome: Counter = Counter()

    def tick() -> Counter:
        outcome.clear()
        for name in names:
            ctx = build_sensor_context(instance=instance, cursor=cursors[name], resources=resources[name],
                                       definitions=defs)
            result = sensors[name].evaluate_tick(ctx)
            cursors[name] = result.cursor
            outcome["run requested" if result.run_requests else "skipped"] += 1
        return outcome

    return names, tick, instance


def run_ticks(root: Path, products: int, ticks: int, ports: list[int], profile_top: int = 0, ab: bool = False):
    names = prepare(root, products, ports)
    build_start = time.perf_counter()
    _names, tick, instance = sensor_ticker(root / "manifests")
    build_s = time.perf_counter() - build_start
    outcome: dict = {}

    per_tick: list[float] = []
    per_tick_cpu: list[float] = []  # this process only (the routers' server is another)
    by_parser: dict[str, list[tuple[float, float]]] = {"A": [], "B": []}
    for number in range(ticks):
        parser = "ABBA"[(number - 1) % 4] if ab and number else "B"
        router_metrics.parse_router_metrics = PARSERS[parser]
        start, cpu = time.perf_counter(), time.process_time()
        try:
            outcome = dict(tick())
        finally:
            router_metrics.parse_router_metrics = PARSERS["B"]
        per_tick.append((time.perf_counter() - start) / len(names) * 1000)
        per_tick_cpu.append((time.process_time() - cpu) / len(names) * 1000)
        if ab and number:
            by_parser[parser].append((per_tick[-1], per_tick_cpu[-1]))
    last_outcome = outcome
    split = _split(tick, len(names))
    breakdown = _breakdown(names[0])
    if profile_top:
        _profile(tick, len(names), profile_top)
    instance.dispose()
    return (per_tick, per_tick_cpu), (split, breakdown, by_parser if ab else None), last_outcome, build_s


def _shard(location: str, ticks: int, barrier, results) -> None:
    """One shard (a code location of its own, as a code server is): build its sensors, then run
    each tick between two barriers so every shard's tick starts together and the lead times all."""
    _names, tick, instance = sensor_ticker(Path(location))
    cpu_per_tick, outcome = [], {}
    for _ in range(ticks):
        barrier.wait()
        cpu = time.process_time()
        outcome = dict(tick())
        cpu_per_tick.append(time.process_time() - cpu)
        barrier.wait()
    results.put((cpu_per_tick, outcome))
    instance.dispose()


def run_sharded(root: Path, products: int, ticks: int, ports: list[int], shards: int):
    """The products split over `shards` processes (one code location each, the daemon evaluating
    them in parallel with `sensors: use_threads`): per tick, the wall time until every shard is done."""
    import multiprocessing

    from dagster import DagsterInstance

    prepare(root, products, ports, shards)
    DagsterInstance.get().dispose()  # its storage created once, not by every shard at the same moment
    spawn = multiprocessing.get_context("spawn")
    barrier, results = spawn.Barrier(shards + 1, timeout=600), spawn.Queue()  # a shard that dies breaks it
    build_start = time.perf_counter()
    workers = [spawn.Process(target=_shard, args=(str(root / "manifests" / f"shard{i}"), ticks, barrier, results))
               for i in range(shards)]
    for worker in workers:
        worker.start()
    per_tick = []
    for number in range(ticks):
        barrier.wait()
        if number == 0:
            build_s = time.perf_counter() - build_start
        start = time.perf_counter()
        barrier.wait()
        per_tick.append((time.perf_counter() - start) / products * 1000)
    shard_results = [results.get(timeout=600) for _ in workers]
    for worker in workers:
        worker.join()
    per_tick_cpu = [sum(cpu[t] for cpu, _ in shard_results) / products * 1000 for t in range(ticks)]
    outcome: dict[str, int] = defaultdict(int)
    for _cpu, shard_outcome in shard_results:
        for key, count in shard_outcome.items():
            outcome[key] += count
    return (per_tick, per_tick_cpu), dict(outcome), build_s


def parse_with_prometheus_client(text: str, cohort: str | None = None,
                                 source: str = "router metrics") -> dict[str, VersionMetrics]:
    """The scrape's parse before issue 19 P5 again (prometheus_client's general parser builds every
    family and sample), kept here only as the A of `--ab`."""

    try:
        families = list(text_string_to_metric_families(text))
    except (ValueError, TypeError, KeyError, IndexError) as exc:
        raise MetricsUnavailable(f"{source}: the body is not Prometheus text format ({exc})") from None
    requests: dict[str, float] = defaultdict(float)
    errors: dict[str, float] = defaultdict(float)
    buckets: dict[str, dict[float, float]] = defaultdict(dict)
    names = ((router_metrics.REQUESTS, router_metrics.DURATION) if cohort is None
             else (router_metrics.COHORT_REQUESTS, router_metrics.COHORT_DURATION))
    for family in families:
        if family.name not in names:
            continue
        for sample in family.samples:
            version = sample.labels.get("version")
            if version is None or (cohort is not None and sample.labels.get("cohort") != cohort):
                continue
            if not math.isfinite(sample.value):
                raise MetricsUnavailable(f"{source}: {sample.name}{{version={version!r}}} is {sample.value}, not a count")
            if family.name == names[0] and sample.name.endswith("_total"):
                requests[version] += sample.value
                if sample.labels.get("code_class") == "5xx":
                    errors[version] += sample.value
            elif family.name == names[1] and sample.name.endswith("_bucket"):
                le = float(sample.labels.get("le", "nan"))
                if math.isnan(le):
                    raise MetricsUnavailable(f"{source}: {sample.name}{{version={version!r}}} has no numeric le")
                buckets[version][le] = buckets[version].get(le, 0) + sample.value
    return {
        v: checked(VersionMetrics(v, int(requests[v]), int(errors[v]),
                                  tuple(sorted((le, int(c)) for le, c in buckets[v].items()))), source)
        for v in requests
    }


PARSERS = {"A": parse_with_prometheus_client, "B": router_metrics.parse_router_metrics}


def required_resources(defs, sensor) -> dict:
    """The resources the sensor asks for: what Dagster's code server builds for each evaluation
    (`dagster._grpc.impl.get_external_sensor_execution`), not every resource of the definitions."""
    return {k: v for k, v in defs.resources.items() if k in sensor.required_resource_keys}


def _split(tick, count: int) -> dict[str, tuple[float, float]]:
    """One more tick of all sensors, split (ms per release, wall and CPU): the ledger read, the
    reads (`steps.canary_reads.read_tick`), the pure plan (`core.canary_tick.plan_tick`) timed
    where the sensor calls them, and the rest (Dagster's context, resources and SensorResult,
    expire_standbys, acting on the plan)."""
    from release_pipelines.orchestration import canary_sensor
    from release_pipelines.resources.ledger import Ledger

    spent: dict[str, list[float]] = {}

    def timed(label: str, fn):
        def call(*args, **kwargs):
            start, cpu = time.perf_counter(), time.process_time()
            try:
                return fn(*args, **kwargs)
            finally:
                wall_cpu = spent.setdefault(label, [0.0, 0.0])
                wall_cpu[0] += time.perf_counter() - start
                wall_cpu[1] += time.process_time() - cpu
        return call

    patches = [(Ledger, "active_release", "ledger: active release"),
               (canary_sensor, "read_tick", "read_tick (status, usage, scrape)"),
               (canary_sensor, "plan_tick", "plan_tick (cursor, judge) - pure")]
    originals = [getattr(owner, attribute) for owner, attribute, _label in patches]
    for (owner, attribute, label), original in zip(patches, originals):
        setattr(owner, attribute, timed(label, original))
    start, cpu = time.perf_counter(), time.process_time()
    try:
        tick()
    finally:
        wall, cpu = time.perf_counter() - start, time.process_time() - cpu
        for (owner, attribute, _label), original in zip(patches, originals):
            setattr(owner, attribute, original)
    out = {label: (w / count * 1000, c / count * 1000) for label, (w, c) in spent.items()}
    out["rest: Dagster's evaluation, expire_standbys, acting"] = (
        (wall - sum(w for w, _ in spent.values())) / count * 1000, (cpu - sum(c for _, c in spent.values())) / count * 1000)
    out["whole tick"] = (wall / count * 1000, cpu / count * 1000)
    return out


def _breakdown(name: str) -> dict[str, tuple[float, float]]:
    """The reads of one release, each repeated 20 times, (wall ms, CPU ms): ledger, platform
    status, the router scrape split into the GET over the pooled client and the parse; and the
    pure plan's CPU once its cursor holds longer series."""
    from datetime import UTC, datetime

    from release_pipelines.orchestration.dagster_resources import (
        LedgerResource,
        MetricsResource,
        PlatformResource,
    )
    from release_pipelines.resources.manifest_files import load_product
    from release_pipelines.resources.router_metrics import client_for, parse_router_metrics
    from release_pipelines.steps.canary_reads import read_tick

    product = load_product(next((Path(os.environ["RELEASE_HOME"]).parent / "manifests").glob(f"*/{name}/release.yaml")))
    book = LedgerResource().open()
    platform = PlatformResource().for_product(product)
    provider = MetricsResource().provider(platform)
    service = service_of(name)
    base = platform.status(service).endpoint
    url = f"{base}/_router/metrics"
    reps = 20
    out: dict[str, tuple[float, float]] = {}

    def clock(label, fn):
        start, cpu = time.perf_counter(), time.process_time()
        for _ in range(reps):
            value = fn()
        out[label] = ((time.perf_counter() - start) / reps * 1000, (time.process_time() - cpu) / reps * 1000)
        return value

    release = clock("ledger: active release", lambda: book.active_release(name))
    clock("platform: status (state file + psutil)", lambda: platform.status(service))
    body = clock("metrics: HTTP GET only (the router's kept-alive client)", lambda: client_for(base).get(url).text)
    clock("metrics: parse only (router_metrics.parse_router_metrics)", lambda: parse_router_metrics(body))
    snapshot = clock("metrics: snapshot (status for the URL, GET, parse)",
                     lambda: provider.snapshot(service, "1.0.0", "1.1.0"))
    if snapshot.stable is None or snapshot.canary is None:
        raise SystemExit(f"the routers' scrape gave no evidence ({snapshot}): the benchmark would time no judging")
    clock("read_tick (status, usage, scrape)", lambda: read_tick(product, release, platform, provider, book,
                                                                 datetime.now(UTC)))
    for points, plan_ms in _plan_by_series_length(product, release, platform, provider, book).items():
        out[f"plan_tick, series of {points} points - pure (CPU, once)"] = (plan_ms, plan_ms)
    return out


SERIES_POINTS = (10, 60, 120)  # 60: one canary step of the manifest (deadline 300 s, interval 5 s)


def _plan_by_series_length(product, release, platform, provider, book) -> dict[int, float]:
    """CPU ms of `plan_tick` once the cursor holds a series of each of SERIES_POINTS points (real
    reads of the router, one per point): the judge re-runs on the whole series every tick."""
    from datetime import UTC, datetime

    from release_pipelines.core.canary_tick import plan_tick
    from release_pipelines.steps.canary_reads import read_tick

    cursor, out = None, {}
    for point in range(1, max(SERIES_POINTS) + 1):
        now = datetime.now(UTC)
        reads = read_tick(product, release, platform, provider, book, now)
        cpu = time.process_time()
        plan = plan_tick(product, release, cursor, reads, now)
        if point in SERIES_POINTS:
            out[point] = (time.process_time() - cpu) * 1000
        cursor = plan.cursor if plan.cursor is not None else cursor
    return out


def _profile(tick, count: int, top: int) -> None:
    """cProfile of one more tick of all sensors (cursors carried over): the functions that cost."""
    import cProfile
    import pstats

    profile = cProfile.Profile()
    profile.enable()
    tick()
    profile.disable()
    stats = pstats.Stats(profile).strip_dirs()
    print(f"\ncProfile of one tick of {count} sensors (cumulative, then own time):")
    stats.sort_stats("cumulative").print_stats(top)
    stats.sort_stats("tottime").print_stats(top)


if __name__ == "__main__":
    main()
