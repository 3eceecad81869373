"""Orchestration overhead: what Dagster adds per release step, and how long definitions take to load.

A generated product of N no-op services (`platform: command`, every operation runs /bin/true,
services in a dependency tree of fan-out 3) is released from 1.0.0 (pre-seeded as stable) to
1.1.0: preflight, N canary deploys, the first traffic step (N set_weight commands) - N + 2 ops.
The same release is run

  * as a plain Python loop calling the same step functions the ops call (plan_release,
    preflight_problems, Ledger, FlagStore.ensure, apply_deploy, apply_weights),
  * with `execute_in_process` (in-process executor) on a SQLite Dagster instance,
  * with the multiprocess executor (`execute_job`, a reconstructable job, max_concurrent 2),

each on a fresh ledger (SQLite file under RELEASE_HOME) and fresh platform state. Overhead per step
= (Dagster time - loop time) / (N + 2). Definitions load: `build_definitions(<500-service
manifest>)` in a fresh interpreter (imports excluded, reported separately).

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
GOAL_STEP_MS = 20.0
GOAL_LOAD_S = 2.0
MP_ENV = "RELEASE_BENCH_MP_MANIFEST"


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


def multiprocess_release_job():
    """Reconstructable entry point: each step's child process loads the code location the way a
    code server does (`release_pipelines.code_location` builds every manifest of RELEASE_MANIFESTS)."""
    from dagster import multiprocess_executor

    from release_pipelines.orchestration.definitions import build_definitions

    name = f"{PRODUCT}_release"
    defs = build_definitions(os.environ["RELEASE_MANIFESTS"])
    return defs.resolve_job_def(name).with_executor_def(multiprocess_executor)


def multiprocess(product, instance) -> None:
    from dagster import execute_job, reconstructable

    config = _run_config(product) | {"execution": {"config": {"max_concurrent": 2}}}
    with execute_job(reconstructable(multiprocess_release_job), instance=instance, run_config=config) as result:
        assert result.success, [e.message for e in result.all_events if e.is_failure]


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


def measure_release(services: int, runs: int, mp_services: int, mp_runs: int, root: Path) -> dict[str, Clock]:
    from dagster import DagsterInstance
    from release_pipelines.resources.manifest_files import load_product

    from release_pipelines.orchestration.definitions import build_definitions

    clocks = {k: Clock() for k in ("loop", "ephemeral", "sqlite", "loop_mp", "multiprocess")}
    manifest = write_command_manifest(root / "m_main", PRODUCT, services)
    product = load_product(manifest)
    job = build_definitions(manifest).resolve_job_def(f"{PRODUCT}_release")  # built once, outside timings
    sqlite = _instance(root, "dagster_sqlite")
    ephemeral = DagsterInstance.ephemeral()

    def release(instance):
        def go():
            assert job.execute_in_process(run_config=_run_config(product), instance=instance).success
        return go

    _fresh_home(root, "warm")
    _seed_stable(product)
    release(ephemeral)()  # warm-up: first-call imports and caches
    for _ in range(runs):
        for name, fn in (("loop", lambda: plain_loop(product)), ("ephemeral", release(ephemeral)),
                         ("sqlite", release(sqlite))):
            _fresh_home(root, name)
            _seed_stable(product)
            clocks[name].run(fn)
            _check_canary(services)
    if mp_runs:
        mp_manifest = write_command_manifest(root / "m_mp", PRODUCT, mp_services)
        mp_product = load_product(mp_manifest)
        os.environ["RELEASE_MANIFESTS"] = str(mp_manifest)
        mp_instance = _instance(root, "dagster_mp")
        for _ in range(mp_runs):
            _fresh_home(root, "loopmp")
            _seed_stable(mp_product)
            clocks["loop_mp"].run(lambda: plain_loop(mp_product))
            _fresh_home(root, "mp")
            _seed_stable(mp_product)
            clocks["multiprocess"].run(lambda: multiprocess(mp_product, mp_instance))
            _check_canary(mp_services)
        mp_instance.dispose()
    sqlite.dispose()
    return clocks


def measure_load(services: int, runs: int, root: Path) -> tuple[Clock, Clock]:
    """Fresh interpreters: whole process (imports + build of the 500-service manifest, wall and
    CPU) and the build_definitions call alone (timed inside the process, after the imports)."""
    import subprocess
    import sys

    from benchmarks.common import ROOT

    manifest = write_command_manifest(root / "m_load", "bigload", services)
    small = write_command_manifest(root / "m_small", "small", 1)
    whole, build = Clock(), Clock()
    env = {**os.environ, "RELEASE_HOME": str(root / "loadhome")}
    for _ in range(runs):
        whole.run(lambda: subprocess.run(
            [sys.executable, "-c", "import release_pipelines.code_location"], cwd=ROOT, check=True,
            env=env | {"RELEASE_MANIFESTS": str(manifest)}))
        code = ("import time\nfrom release_pipelines.orchestration.definitions import build_definitions\n"
                "s, c = time.perf_counter(), time.process_time()\n"
                f"build_definitions({str(manifest)!r})\n"
                "print(time.perf_counter() - s, time.process_time() - c)")
        out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, check=True, capture_output=True, text=True,
                             env=env | {"RELEASE_MANIFESTS": str(small)}).stdout
        wall, cpu = map(float, out.strip().splitlines()[-1].split())
        build.wall.append(wall)
        build.cpu.append(cpu)
    return whole, build


def _print_load(whole: Clock, build: Clock, services: int) -> str:
    print(table(["definitions load, fresh interpreter", "wall s", "CPU s"], [
        [f"build_definitions({services} services) alone", f"{median(build.wall):.2f}", f"{median(build.cpu):.2f}"],
        [f"python -c 'import release_pipelines.code_location' ({services} services)",
         f"{median(whole.wall):.2f}", f"{median(whole.cpu):.2f}"],
    ]))
    ok = median(build.wall) <= GOAL_LOAD_S
    return (f"build_definitions({services} services) {median(build.wall):.2f} s wall, {median(build.cpu):.2f} s CPU "
            f"(goal <= {GOAL_LOAD_S:.0f} s: {verdict(ok)}), whole fresh load {median(whole.wall):.2f} s")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer runs, smaller releases")
    parser.add_argument("--load-only", action="store_true", help="only the definitions-load measurement")
    args = parser.parse_args()
    services, runs = (30, 3) if args.quick else (100, 3)
    mp_services, mp_runs = (0, 0) if args.quick else (4, 2)  # each step is a fresh process: seconds each
    load_services, load_runs = 500, (2 if args.quick else 5)
    started = time.monotonic()
    if args.load_only:
        print_header("Definitions load", f"{load_services} services, {load_runs} fresh interpreters")
        with tempfile.TemporaryDirectory(prefix="bench-orch-") as tmp:
            whole, build = measure_load(load_services, load_runs, Path(tmp))
        fragment = _print_load(whole, build, load_services)
        print(f"\nsummary: {fragment} ({time.monotonic() - started:.0f} s)")
        return
    print_header(
        "Orchestration overhead",
        f"release of {services} no-op services (+ preflight + start_canary = {services + 2} ops), medians of "
        f"{runs} runs; "
        + (f"multiprocess executor: {mp_services} services, {mp_runs} runs, max_concurrent 2; " if mp_runs
           else "multiprocess executor: skipped (--quick); ")
        + f"definitions load: {load_services} services, {load_runs} fresh interpreters",
    )
    keys = ("RELEASE_HOME", "RELEASE_LEDGER_URL", "DAGSTER_HOME", "RELEASE_MANIFESTS")
    saved = {k: os.environ.get(k) for k in keys}
    with tempfile.TemporaryDirectory(prefix="bench-orch-") as tmp:
        root = Path(tmp)
        try:
            clocks = measure_release(services, runs, mp_services, mp_runs, root)
            whole, build = measure_load(load_services, load_runs, root)
        finally:
            for key, value in saved.items():
                os.environ.pop(key, None) if value is None else os.environ.__setitem__(key, value)
    steps, mp_steps = services + 2, mp_services + 2
    loop_w, loop_c = median(clocks["loop"].wall), median(clocks["loop"].cpu)
    rows = [["plain loop (same step functions)", services, f"{loop_w:.2f}", f"{loop_c:.2f}",
             f"{loop_w / steps * 1000:.1f}", "", "", "1.0x"]]
    overhead = {}
    for name, label in (("ephemeral", "in process, in-memory instance"),
                        ("sqlite", "in process, SQLite instance")):
        w, c = median(clocks[name].wall), median(clocks[name].cpu)
        overhead[name] = (w - loop_w) / steps * 1000
        rows.append([label, services, f"{w:.2f}", f"{c:.2f}", f"{w / steps * 1000:.1f}",
                     f"{overhead[name]:.1f}", f"{(c - loop_c) / steps * 1000:.1f}", f"{w / loop_w:.1f}x"])
    if mp_runs:
        lw, lc = median(clocks["loop_mp"].wall), median(clocks["loop_mp"].cpu)
        w, c = median(clocks["multiprocess"].wall), median(clocks["multiprocess"].cpu)
        overhead["multiprocess"] = (w - lw) / mp_steps * 1000
        rows.append(["plain loop (same step functions)", mp_services, f"{lw:.2f}", f"{lc:.2f}",
                     f"{lw / mp_steps * 1000:.1f}", "", "", "1.0x"])
        rows.append(["multiprocess executor, SQLite", mp_services, f"{w:.2f}", f"{c:.2f}",
                     f"{w / mp_steps * 1000:.1f}", f"{overhead['multiprocess']:.0f}",
                     f"{(c - lc) / mp_steps * 1000:.0f}", f"{w / lw:.1f}x"])
    print(table(["release", "services", "wall s", "CPU s", "ms/step", "overhead ms/step (wall)",
                 "overhead ms/step (CPU)", "vs loop"], rows))
    print()
    fragment = _print_load(whole, build, load_services)
    step_ok = overhead["ephemeral"] <= GOAL_STEP_MS
    print(
        f"\nsummary: in-process overhead {overhead['ephemeral']:.1f} ms/step with an in-memory instance, "
        f"{overhead['sqlite']:.1f} with SQLite (goal <= {GOAL_STEP_MS:.0f}: {verdict(step_ok)})"
        + (f", multiprocess {overhead['multiprocess']:.0f} ms/step" if mp_runs else "")
        + f"; {fragment}"
        f" ({time.monotonic() - started:.0f} s)"
    )


if __name__ == "__main__":
    main()
