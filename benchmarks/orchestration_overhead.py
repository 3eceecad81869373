"""Orchestration overhead: what Dagster adds per release step, and how long definitions take to load.

A generated product of N no-op services (`platform: command`, every operation runs /bin/true,
services in a dependency tree of fan-out 3) is released from 1.0.0 (pre-seeded as stable) to
1.1.0: preflight, N canary deploys, the first traffic step (N set_weight commands) - N + 2 ops.
The same release is run

  * as a plain Python loop calling the same step functions the ops call (plan_release,
    preflight_problems, Ledger, FlagStore.ensure, apply_deploy, apply_weights),
  * with `execute_in_process` on an in-memory and on a SQLite Dagster instance, next to the
    reference measured in the same run: a bare chain of N + 2 no-op ops on the same instance,
  * with the job's multiprocess executor (`execute_job`, reconstructed from
    `release_pipelines.code_location` as a code server does, max_concurrent 2), with the forkserver
    start method the job defaults to and (full run) with `spawn`, a fresh interpreter per step,

each on a fresh ledger (SQLite file under RELEASE_HOME) and fresh platform state. Dagster's cost
per step = (job time - loop time) / (N + 2), set against the bare chain's time per op (goal <=
1.5x, CPU time: the machine is shared, wall time is distorted by load). Definitions load:
`build_definitions` in fresh interpreters (imports excluded, reported separately) for one product
of 500 services and for 50 products of 10 (goal <= 2 s each).

    python -m benchmarks.orchestration_overhead [--quick]
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

from benchmarks.common import median, print_header, table, verdict, write_command_manifest

PRODUCT = "bench"
GOAL_STEP_RATIO = 1.5  # Dagster's cost per release step <= 1.5x a bare op chain's per op, same instance
GOAL_MP_STEP_MS = 1000.0
GOAL_LOAD_S = 2.0


def _seed_stable(product, version: str = "1.0.0") -> None:
    from release_pipelines.orchestration.dagster_resources import PlatformResource

    platform = PlatformResource().for_product(product)
    with platform.state.update() as doc:
        doc["services"] = {
            s.name: {"stable": version, "canary": None, "weight": 0} for s in product.manifest.services
        }


def _fresh_home(root: Path, label: str) -> Path:
    home = Path(tempfile.mkdtemp(prefix=f"{label}-", dir=root))
    os.environ["RELEASE_HOME"] = str(home)
    os.environ.pop("RELEASE_LEDGER_URL", None)
    return home


def _versions(product) -> dict[str, str]:
    return {s.name: "1.1.0" for s in product.manifest.services}


# ------------------------------------------------------------------ the plain loop


def plain_loop(product) -> None:
    """The release job's steps, in dependency order, without Dagster."""
    from release_pipelines.core.planner import ServiceChange, plan_release
    from release_pipelines.core.states import ReleaseState
    from release_pipelines.core.traffic import weights_for_step
    from release_pipelines.orchestration.dagster_resources import (
        FlagsResource,
        LedgerResource,
        PlatformResource,
    )
    from release_pipelines.steps.context import StepContext
    from release_pipelines.steps.deploy import apply_deploy
    from release_pipelines.steps.preflight import preflight_problems
    from release_pipelines.steps.traffic import apply_weights

    log = lambda _m: None
    # preflight
    book = LedgerResource().open()
    services = PlatformResource().for_product(product)
    current = {s.name: st.stable_version for s in product.manifest.services
               if (st := services.status(s.name)).stable_version}
    plan = plan_release(product.manifest, _versions(product), current, False)
    assert not preflight_problems(product, plan)
    release = book.start_release(product.name, plan.versions(),
                                 {c.service: c.from_version for c in plan.changes if c.from_version}, "bench")
    book.transition(release.id, ReleaseState.PREFLIGHT, "bench",
                    payload={"plan": [[s.label for s in w] for w in plan.waves]})
    FlagsResource().for_product(product).ensure(product.manifest.flags)
    book.transition(release.id, ReleaseState.EXPANDING, "bench")
    # deploys (manifest order is a topological order here: parents come first)
    for spec in product.manifest.services:
        book = LedgerResource().open()
        rel = book.get(release.id)
        ctx = StepContext(product=product, ledger=book, release_id=release.id, actor="bench", log=log)
        change = ServiceChange(spec.name, rel.versions[spec.name], rel.previous.get(spec.name))
        apply_deploy(ctx, PlatformResource().for_product(product), change)
    # start_canary
    rel = book.get(release.id)
    ctx = StepContext(product=product, ledger=book, release_id=release.id, actor="bench", log=log)
    services = PlatformResource().for_product(product)
    canaries = [s for s in rel.versions if services.status(s).canary_version == rel.versions[s]]
    weights = weights_for_step(product.manifest, canaries, 0)
    apply_weights(ctx, services, weights, 0)
    book.transition(release.id, ReleaseState.CANARY, "bench", canary_step=0, payload={"weights": weights})
    assert len(canaries) == len(product.manifest.services)


def _check_canary(expected_services: int) -> None:
    from release_pipelines.orchestration.dagster_resources import LedgerResource

    release = LedgerResource().open().active_release(PRODUCT)
    assert release is not None and release.state.value == "canary", release
    assert len(release.versions) == expected_services


# ------------------------------------------------------------------ Dagster runs

QUIET_LOGS = {"loggers": {"console": {"config": {"log_level": "WARNING"}}}}


def _run_config(product) -> dict:
    return {"ops": {"preflight": {"config": {"versions": _versions(product)}}}} | QUIET_LOGS


def multiprocess(product, instance, start_method: str) -> None:
    """The release job as a code server runs it: reconstructed from `release_pipelines.code_location`
    (RELEASE_MANIFESTS), the job's own executor (multiprocess; forkserver unless run config says)."""
    from dagster import execute_job
    from dagster._core.definitions.reconstruct import ReconstructableRepository

    from benchmarks.common import ROOT

    job = ReconstructableRepository.for_module("release_pipelines.code_location", "defs", str(ROOT)) \
        .get_reconstructable_job(f"{PRODUCT}_release")
    start = {"start_method": {"spawn": {}}} if start_method == "spawn" else {}
    config = _run_config(product) | {"execution": {"config": {"multiprocess": {"max_concurrent": 2, **start}}}}
    with execute_job(job, instance=instance, run_config=config) as result:
        assert result.success, [e.message for e in result.all_events if e.is_failure]


def bare_chain(steps: int):
    """The reference: `steps` ops that do nothing, each after the last, one str passed along."""
    from dagster import In, job, op

    @op
    def first() -> str:
        return "x"

    @op(ins={"value": In(str)})
    def link(value: str) -> str:
        return value

    @job
    def chain():
        value = first()
        for _ in range(steps - 1):
            value = link(value)

    return chain


class Clock:
    """Wall and CPU seconds (this process plus finished children) of a block."""

    def __init__(self) -> None:
        self.wall: list[float] = []
        self.cpu: list[float] = []

    def run(self, fn) -> None:
        import resource

        def cpu() -> float:
            own, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
            return own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime

        wall0, cpu0 = time.perf_counter(), cpu()
        fn()
        self.wall.append(time.perf_counter() - wall0)
        self.cpu.append(cpu() - cpu0)


# ------------------------------------------------------------------ main


def _instance(root: Path, name: str):
    from dagster import DagsterInstance

    home = root / name
    home.mkdir()
    (home / "dagster.yaml").write_text("telemetry:\n  enabled: false\n")
    return DagsterInstance.from_config(str(home))


def measure_release(services: int, runs: int, mp_services: int, mp_methods: list[str],
                    root: Path) -> tuple[dict[str, Clock], dict[str, int]]:
    """Clocks by run kind, and the event-log records one in-memory run writes ("release", "bare")."""
    from dagster import DagsterInstance

    from release_pipelines.orchestration.definitions import build_definitions
    from release_pipelines.resources.manifest_files import load_product

    clocks = {k: Clock() for k in ("loop", "ephemeral", "sqlite", "bare_ephemeral", "bare_sqlite", "loop_mp",
                                   *mp_methods)}
    manifest = write_command_manifest(root / "m_main", PRODUCT, services)
    product = load_product(manifest)
    job = build_definitions(manifest).resolve_job_def(f"{PRODUCT}_release")  # built once, outside timings
    chain = bare_chain(services + 2)
    sqlite = _instance(root, "dagster_sqlite")
    ephemeral = DagsterInstance.ephemeral()

    def release(instance):
        def go():
            assert job.execute_in_process(run_config=_run_config(product), instance=instance).success
        return go

    def bare(instance):
        return lambda: chain.execute_in_process(run_config=QUIET_LOGS, instance=instance)

    _fresh_home(root, "warm")
    _seed_stable(product)
    # warm-up (first-call imports and caches), and the event-log records one run of each writes
    warm = job.execute_in_process(run_config=_run_config(product), instance=ephemeral)
    warm_bare = bare(ephemeral)()
    records = {"release": len(ephemeral.all_logs(warm.run_id)), "bare": len(ephemeral.all_logs(warm_bare.run_id))}
    for _ in range(runs):
        for name, fn in (("loop", lambda: plain_loop(product)), ("ephemeral", release(ephemeral)),
                         ("sqlite", release(sqlite))):
            _fresh_home(root, name)
            _seed_stable(product)
            clocks[name].run(fn)
            _check_canary(services)
        clocks["bare_ephemeral"].run(bare(ephemeral))
        clocks["bare_sqlite"].run(bare(sqlite))
    if mp_methods:
        mp_manifest = write_command_manifest(root / "m_mp", PRODUCT, mp_services)
        mp_product = load_product(mp_manifest)
        os.environ["RELEASE_MANIFESTS"] = str(mp_manifest)
        mp_instance = _instance(root, "dagster_mp")
        _fresh_home(root, "loopmp")
        _seed_stable(mp_product)
        clocks["loop_mp"].run(lambda: plain_loop(mp_product))
        for method in mp_methods:
            _fresh_home(root, method)
            _seed_stable(mp_product)
            clocks[method].run(lambda: multiprocess(mp_product, mp_instance, method))
            _check_canary(mp_services)
        mp_instance.dispose()
    sqlite.dispose()
    return clocks, records


def measure_load(runs: int, root: Path) -> dict[str, Clock]:
    """Fresh interpreters: `build_definitions` alone (timed inside the process, after the imports)
    for one product of 500 services and for 50 products of 10, and the whole
    `import release_pipelines.code_location` of the 500-service manifest (imports included)."""
    import subprocess
    import sys

    from benchmarks.common import ROOT

    shapes = {"500 services": write_command_manifest(root / "m_load", "bigload", 500)}
    for i in range(50):
        write_command_manifest(root / "m_many" / f"p{i:02d}", f"p{i:02d}", 10, prefix=f"p{i:02d}s")
    shapes["50 products x 10 services"] = root / "m_many"
    small = write_command_manifest(root / "m_small", "small", 1)
    clocks = {name: Clock() for name in [*shapes, "whole"]}
    env = {**os.environ, "RELEASE_HOME": str(root / "loadhome")}
    for _ in range(runs):
        clocks["whole"].run(lambda: subprocess.run(
            [sys.executable, "-c", "import release_pipelines.code_location"], cwd=ROOT, check=True,
            env=env | {"RELEASE_MANIFESTS": str(shapes["500 services"])}))
        for name, location in shapes.items():
            code = ("import time\nfrom release_pipelines.orchestration.definitions import build_definitions\n"
                    "s, c = time.perf_counter(), time.process_time()\n"
                    f"build_definitions({str(location)!r})\n"
                    "print(time.perf_counter() - s, time.process_time() - c)")
            out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, check=True, capture_output=True, text=True,
                                 env=env | {"RELEASE_MANIFESTS": str(small)}).stdout
            wall, cpu = map(float, out.strip().splitlines()[-1].split())
            clocks[name].wall.append(wall)
            clocks[name].cpu.append(cpu)
    return clocks


def _print_load(clocks: dict[str, Clock]) -> str:
    shapes = [name for name in clocks if name != "whole"]
    print(table(["definitions load, fresh interpreter", "wall s", "CPU s", f"goal <= {GOAL_LOAD_S:.0f} s"], [
        *([f"build_definitions({name}) alone", f"{median(clocks[name].wall):.2f}", f"{median(clocks[name].cpu):.2f}",
           verdict(median(clocks[name].wall) <= GOAL_LOAD_S)] for name in shapes),
        ["python -c 'import release_pipelines.code_location' (500 services)",
         f"{median(clocks['whole'].wall):.2f}", f"{median(clocks['whole'].cpu):.2f}", ""],
    ]))
    return "load " + ", ".join(f"{name} {median(clocks[name].wall):.2f} s wall / {median(clocks[name].cpu):.2f} s CPU"
                               for name in shapes)


def _restoring_env(fn):
    keys = ("RELEASE_HOME", "RELEASE_LEDGER_URL", "DAGSTER_HOME", "RELEASE_MANIFESTS")
    saved = {k: os.environ.get(k) for k in keys}
    try:
        return fn()
    finally:
        for key, value in saved.items():
            os.environ.pop(key, None) if value is None else os.environ.__setitem__(key, value)


def _print_steps(clocks: dict[str, Clock], records: dict[str, int], services: int, mp_services: int,
                 mp_methods: list[str]) -> str:
    steps, mp_steps = services + 2, mp_services + 2
    loop_w, loop_c = median(clocks["loop"].wall), median(clocks["loop"].cpu)
    rows = [["plain loop (same step functions)", services, f"{loop_w:.2f}", f"{loop_c:.2f}", "", "", ""]]
    ratios = {}
    for name, label in (("ephemeral", "in-memory instance"), ("sqlite", "SQLite instance")):
        w, c = median(clocks[name].wall), median(clocks[name].cpu)
        bw, bc = median(clocks[f"bare_{name}"].wall), median(clocks[f"bare_{name}"].cpu)
        over_w, over_c = (w - loop_w) / steps * 1000, (c - loop_c) / steps * 1000
        ratios[name] = (over_w / (bw / steps * 1000), over_c / (bc / steps * 1000))
        rows.append([f"release job in process, {label}", services, f"{w:.2f}", f"{c:.2f}",
                     f"{over_w:.1f} / {over_c:.1f}", f"{ratios[name][0]:.2f}x / {ratios[name][1]:.2f}x",
                     verdict(ratios[name][1] <= GOAL_STEP_RATIO)])
        rows.append([f"bare op chain ({steps} no-op ops), {label}", "", f"{bw:.2f}", f"{bc:.2f}",
                     f"{bw / steps * 1000:.1f} / {bc / steps * 1000:.1f}", "1.00x", ""])
    per_step = {}
    if mp_methods:
        lw, lc = median(clocks["loop_mp"].wall), median(clocks["loop_mp"].cpu)
        rows.append(["plain loop (same step functions)", mp_services, f"{lw:.2f}", f"{lc:.2f}", "", "", ""])
        for method in mp_methods:
            w, c = median(clocks[method].wall), median(clocks[method].cpu)
            per_step[method] = (w - lw) / mp_steps * 1000
            rows.append([f"release job, multiprocess executor ({method}), SQLite", mp_services, f"{w:.2f}", f"{c:.2f}",
                         f"{per_step[method]:.0f} / {(c - lc) / mp_steps * 1000:.0f}", "",
                         f"<= {GOAL_MP_STEP_MS:.0f} ms: {verdict(per_step[method] <= GOAL_MP_STEP_MS)}"])
    print(table(["run", "services", "wall s", "CPU s", "Dagster ms/step wall / CPU", "vs bare chain wall / CPU",
                 f"goal (CPU <= {GOAL_STEP_RATIO}x)"], rows))
    # what each step writes to the run's event log, and Dagster's CPU per record
    over_c = (median(clocks["ephemeral"].cpu) - loop_c) * 1000
    bare_c = median(clocks["bare_ephemeral"].cpu) * 1000
    print(f"event-log records per step, in-memory instance: release job {records['release'] / steps:.1f}, "
          f"bare chain {records['bare'] / steps:.1f}; Dagster CPU per record {over_c / records['release']:.2f} ms "
          f"vs {bare_c / records['bare']:.2f} ms")
    return (f"in-process overhead vs bare chain (CPU) {ratios['ephemeral'][1]:.2f}x in memory, "
            f"{ratios['sqlite'][1]:.2f}x SQLite" + "".join(f"; multiprocess {m} {v:.0f} ms/step"
                                                           for m, v in per_step.items()))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer runs, smaller releases, forkserver only")
    parser.add_argument("--load-only", action="store_true", help="only the definitions-load measurement")
    args = parser.parse_args()
    services, runs = (30, 3) if args.quick else (100, 3)
    mp_services, mp_methods = 4, (["forkserver"] if args.quick else ["forkserver", "spawn"])
    load_runs = 2 if args.quick else 5
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="bench-orch-") as tmp:
        root = Path(tmp)
        if args.load_only:
            print_header("Definitions load", f"{load_runs} fresh interpreters per shape")
            fragment = _print_load(_restoring_env(lambda: measure_load(load_runs, root)))
            print(f"\nsummary: {fragment} ({time.monotonic() - started:.0f} s)")
            return
        print_header(
            "Orchestration overhead",
            f"release of {services} no-op services (+ preflight + start_canary = {services + 2} ops), medians of "
            f"{runs} runs, against a bare chain of as many no-op ops on the same instance; multiprocess executor: "
            f"{mp_services} services, one run per start method ({', '.join(mp_methods)}), max_concurrent 2; "
            f"definitions load: {load_runs} fresh interpreters per shape",
        )
        clocks, records = _restoring_env(lambda: measure_release(services, runs, mp_services, mp_methods, root))
        load = _restoring_env(lambda: measure_load(load_runs, root))
    steps = _print_steps(clocks, records, services, mp_services, mp_methods)
    print()
    print(f"\nsummary: {steps}; {_print_load(load)} ({time.monotonic() - started:.0f} s)")


if __name__ == "__main__":
    main()
