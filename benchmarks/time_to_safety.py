"""Time to safety: a bad canary on the local platform, judged by the daemon's canary sensor.

Per run: a temp DAGSTER_HOME (SQLite instance, the project's run queue, telemetry off), a temp
RELEASE_HOME (SQLite ledger) and a SQLite SHOP_DB_URL; `dagster-webserver` + `dagster-daemon`
started as in tests/e2e (tests/e2e_support.py). The shop is installed at 1.0.0, background load
runs through every router, then `orders: 1.2.0+bad` (~5 % errors against ~0.5 %) is released.
Measured from the bad version's first request (seen by the load generator):

- traffic safe ("100 % stable"): 100 % of the requests the orders router receives go to the stable
  version, i.e. the canary's weight is 0. The canary sensor sets it in the tick that records the
  FAIL verdict (`steps.shed`); the time is its `traffic:shed` ledger event, written once the router
  took the new weight, cross-checked by polling LocalPlatform.status every 0.2 s and by the router's
  own counters (the last ~1 s read in which the canary's request count still grew). Requests the
  canary had already accepted still finish; none reach it afterwards.
- rollback run finished: the ledger's state:rolled_back (the canary stopped, the release closed).

While the daemon judges, the orders router's /_router/metrics is read every ~1 s (cumulative
requests and errors per version, with timestamps). Afterwards the same stream is replayed through
the reference rules of benchmarks/reference_judges.py:

- Flagger (interval 60 s, threshold 5 failed checks, max error rate 1 %): one check per 60 s window
  from first traffic; the rollback happens at the end of the 5th failed check. Windows the stream
  does not cover are extrapolated (said so in the output): after our rollback the canary has no
  traffic, and Flagger counts a check with no data as failed, so they fail too.
- Kayenta (Mann-Whitney judge): by default one judgment at the end of the canary analysis lifetime;
  Spinnaker suggests 3 h with >= 50 points per metric. Its time is that lifetime; its verdict is
  computed on the recorded stream (per-read error rates of canary vs stable).

Floor = the sensor's minimum interval (from the manifest) + the measured rollback run (ledger
state:rolling_back -> state:rolled_back). Reported apart: first traffic -> fail verdict (the
evidence), fail verdict -> traffic safe (the reaction) and fail verdict -> rollback run finished.
Goals (issue 17, P1): first traffic -> traffic safe <= 20 s; verdict -> traffic safe <= the floor.

    python -m benchmarks.time_to_safety [--quick]      (median of 3 runs; 1 with --quick)
"""

from __future__ import annotations

import argparse
import os
import tempfile
import threading
import time
from pathlib import Path

import httpx
import numpy as np

from benchmarks.common import median, print_header, table, verdict
from benchmarks.reference_judges import flagger_fails, kayenta_fails

GOAL_SECONDS = 20.0
LOCATION = "release_pipelines"
FIRST = {"catalog": "1.0.0", "orders": "1.0.0", "frontend": "1.0.0"}
BAD = {"orders": "1.2.0+bad"}
IN_PROCESS = {"execution": {"config": {"in_process": {}}}}
FINAL_RUN = {"SUCCESS", "FAILURE", "CANCELED"}
RUN_TIMEOUT = 300.0
ROLLBACK_TIMEOUT = 180.0
FLAGGER_INTERVAL = 60.0
FLAGGER_THRESHOLD = 5
FLAGGER_MAX_ERROR_RATE = 0.01
KAYENTA_LIFETIME = 3 * 3600.0  # Spinnaker's suggested canary analysis lifetime; one judgment at its end
KAYENTA_MIN_POINTS = 50


def release_config(versions: dict[str, str]) -> dict:
    return {"ops": {"preflight": {"config": {"versions": versions}}}} | IN_PROCESS


class MetricsRecorder:
    """Reads the orders router's /_router/metrics every ~1 s: (monotonic t, {version: (req, err)})."""

    def __init__(self, platform, service: str = "orders", period: float = 1.0):
        self.platform, self.service, self.period = platform, service, period
        self.points: list[tuple[float, dict[str, tuple[int, int]]]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True, name="metrics-recorder")

    def start(self) -> MetricsRecorder:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=10)

    def _loop(self) -> None:
        from release_pipelines.resources.router_metrics import parse_router_metrics

        with httpx.Client(timeout=2.0) as client:
            while not self._stop.is_set():
                try:
                    endpoint = self.platform.status(self.service).endpoint
                    if endpoint:
                        parsed = parse_router_metrics(client.get(endpoint + "/_router/metrics").text)
                        self.points.append((time.monotonic(),
                                            {v: (m.requests, m.errors) for v, m in parsed.items()}))
                except Exception:  # noqa: BLE001, S110 - router restarting: next read
                    pass
                self._stop.wait(self.period)


def wait_run(client, run_id: str, timeout: float = RUN_TIMEOUT) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        status = client.get_run_status(run_id).value
        if status in FINAL_RUN:
            return status
        time.sleep(1.0)
    raise RuntimeError(f"run {run_id} not finished after {timeout:.0f} s")


def one_run(index: int) -> dict:
    from dagster_graphql import DagsterGraphQLClient
    from release_pipelines.resources.ledger import Ledger
    from release_pipelines.resources.local_platform import LocalPlatform
    from release_pipelines.resources.manifest_files import load_product

    from tests.e2e_support import (
        EXAMPLE_MANIFEST,
        BackgroundLoad,
        DagsterServers,
        kill_processes,
        processes_with_env,
        stop_platform,
        write_instance,
    )

    base = Path(tempfile.mkdtemp(prefix=f"time_to_safety_{index}_"))
    dagster_home, release_home = base / "dagster_home", base / "release_home"
    release_home.mkdir(parents=True)
    write_instance(dagster_home, postgres=False)  # SQLite storage + the project's run queue, telemetry off
    ledger_url = f"sqlite:///{release_home / 'ledger.db'}"
    env = dict(os.environ) | {
        "DAGSTER_HOME": str(dagster_home),
        "RELEASE_HOME": str(release_home),
        "RELEASE_LEDGER_URL": ledger_url,
        "SHOP_DB_URL": f"sqlite:///{base / 'shop.db'}",
        "RELEASE_MANIFESTS": str(EXAMPLE_MANIFEST),
        "RELEASE_ACTOR": "bench-time-to-safety",
    }
    env.pop("RELEASE_PROMETHEUS_URL", None)
    product = load_product(EXAMPLE_MANIFEST)
    sensor_interval = float(min(s.canary.analysis.interval_seconds for s in product.manifest.services))
    servers = DagsterServers(env=env, log_dir=base / "logs")
    load = recorder = None
    result: dict = {"sensor_interval": sensor_interval, "base": str(base)}
    try:
        servers.start()
        client = DagsterGraphQLClient("127.0.0.1", port_number=servers.port)
        ledger = Ledger(ledger_url)
        run_id = client.submit_job_execution("shop_release", repository_location_name=LOCATION,
                                             run_config=release_config(FIRST))
        if wait_run(client, run_id) != "SUCCESS":
            raise RuntimeError(f"first install failed:\n{servers.log_tail('daemon')}")
        platform = LocalPlatform(product.manifest, product.directory, release_home / "platform" / product.name)
        load = BackgroundLoad(release_home).start()
        recorder = MetricsRecorder(platform).start()
        time.sleep(3.0)  # stable traffic before the canary

        run_id = client.submit_job_execution("shop_release", repository_location_name=LOCATION,
                                             run_config=release_config(BAD))
        key = ("orders", BAD["orders"])
        deadline = time.monotonic() + RUN_TIMEOUT
        while key not in load.first_seen and time.monotonic() < deadline:
            time.sleep(0.1)
        if key not in load.first_seen:
            raise RuntimeError(f"the bad canary never got traffic:\n{servers.log_tail('daemon')}")
        first_traffic, first_wall = load.first_seen[key], load.first_seen_wall[key]
        deadline = first_traffic + ROLLBACK_TIMEOUT
        weight_zero = None  # wall time the poll first saw no traffic to the canary
        while time.monotonic() < deadline:
            status = platform.status("orders")
            if weight_zero is None and (status.canary_weight == 0 or status.canary_version is None):
                weight_zero = time.time()
            if status.canary_version is None and status.stable_version == FIRST["orders"]:
                break
            time.sleep(0.2)
        canary_stopped = time.time()
        status = platform.status("orders")
        if not (status.canary_version is None and status.stable_version == FIRST["orders"]):
            raise RuntimeError(f"orders not back on stable within {ROLLBACK_TIMEOUT:.0f} s: {status}")
        time.sleep(2.0)  # one more read of the metrics after the switch
        recorder.stop()
        release = next(r for r in ledger.releases("shop") if r.versions == BAD)
        deadline = time.monotonic() + 90
        while ledger.get(release.id).state.value != "rolled_back" and time.monotonic() < deadline:
            time.sleep(0.5)
        events = {e.kind: e for e in ledger.events(release.id)}
        if "state:rolling_back" not in events or "state:rolled_back" not in events:
            raise RuntimeError(f"no rollback in the ledger: {sorted(events)}")
        verdict_event, shed_event = events.get("verdict"), events.get("traffic:shed")

        def after(event) -> float | None:  # seconds from first traffic to a ledger event
            return event.created_at.timestamp() - first_wall if event is not None else None

        polled = weight_zero - first_wall if weight_zero is not None else None
        result |= {
            "safe": after(shed_event) if shed_event is not None else polled,
            "safe_from": "traffic:shed event" if shed_event is not None else "platform poll (no shed event)",
            "safe_polled": polled,
            "shed_errors": shed_event.payload.get("errors") if shed_event is not None else None,
            "canary_stopped": canary_stopped - first_wall,
            "rolling_back": after(events["state:rolling_back"]),
            "rolled_back": after(events["state:rolled_back"]),
            "rollback_run": (events["state:rolled_back"].created_at
                             - events["state:rolling_back"].created_at).total_seconds(),
            "verdict_after": after(verdict_event),
            "verdict_actor": verdict_event.actor if verdict_event else None,
            "first_traffic": first_traffic,
            "stream": list(recorder.points),
            "load_requests": load.requests[key],
            "load_errors": load.errors[key],
        }
        wait_run(client, run_id, timeout=60)
        return result
    finally:
        if recorder is not None:
            recorder.stop()
        if load is not None:
            load.stop()
        codes = servers.stop()
        stop_platform(release_home)
        leftovers = processes_with_env("RELEASE_HOME", str(release_home))
        kill_processes(leftovers)
        result["exit_codes"] = codes
        result["leftovers"] = len(leftovers)


# ------------------------------------------------------------------ replays


def series(stream, first_traffic: float, canary: str, stable: str) -> np.ndarray:
    """Rows (t since first traffic, canary req, canary err, stable req, stable err), cumulative."""
    rows = []
    for t, by_version in stream:
        c, s = by_version.get(canary, (0, 0)), by_version.get(stable, (0, 0))
        rows.append((t - first_traffic, c[0], c[1], s[0], s[1]))
    return np.array(rows, dtype=float).reshape(-1, 5)


def last_canary_request(rows: np.ndarray) -> float | None:
    """Seconds from first traffic to the last router read in which the canary's count still grew."""
    grew = np.flatnonzero(np.diff(rows[:, 1]) > 0) + 1 if len(rows) > 1 else np.array([], dtype=int)
    return float(rows[grew[-1], 0]) if len(grew) else None


def flagger_replay(rows: np.ndarray) -> dict:
    """Checks on 60 s windows from first traffic; windows past the stream are extrapolated."""
    covered = float(rows[-1, 0]) if len(rows) else 0.0
    checks, rates, observed = [], [], []
    for i in range(FLAGGER_THRESHOLD):
        lo, hi = i * FLAGGER_INTERVAL, (i + 1) * FLAGGER_INTERVAL
        inside = rows[(rows[:, 0] >= lo) & (rows[:, 0] < hi)] if len(rows) else rows
        before = rows[rows[:, 0] < lo] if len(rows) else rows
        start = before[-1] if len(before) else np.zeros(5)
        if len(inside):
            requests, errors = inside[-1, 1] - start[1], inside[-1, 2] - start[2]
        else:
            requests = errors = 0.0
        # no data = failed check (Flagger); a window the stream covers only in part is judged on what it has
        rate = errors / requests if requests else float("nan")
        checks.append(not requests or rate > FLAGGER_MAX_ERROR_RATE)
        rates.append(rate)
        observed.append(min(1.0, max(0.0, (covered - lo) / FLAGGER_INTERVAL)))
    rolled = flagger_fails(np.array([checks]), FLAGGER_THRESHOLD)[0]
    at = (int(np.argmax(rolled)) + 1) * FLAGGER_INTERVAL if rolled.any() else float("inf")
    return {"seconds": at, "checks": checks, "rates": rates, "covered": covered, "observed": observed,
            "extrapolated": covered < FLAGGER_THRESHOLD * FLAGGER_INTERVAL}


def kayenta_replay(rows: np.ndarray) -> dict:
    """Per-read error rates of both sides (reads where both served requests), one judgment at the end."""
    deltas = np.diff(rows, axis=0)
    keep = (deltas[:, 1] > 0) & (deltas[:, 3] > 0)
    d = deltas[keep]
    points = len(d)
    if points < 2:
        return {"points": points, "verdict": "NoData/fail", "fails": True, "first_fail_look": None}
    canary_rate, stable_rate = d[:, 2] / d[:, 1], d[:, 4] / d[:, 3]
    fails = kayenta_fails(stable_rate[None, :], canary_rate[None, :])[0]
    first = int(np.argmax(fails)) if fails.any() else None
    return {"points": points, "fails": bool(fails[-1]), "verdict": "High/fail" if fails[-1] else "Pass",
            "first_fail_look": first, "first_fail_t": float(rows[1:][keep][first, 0]) if first is not None else None,
            "canary_rate": float(d[:, 2].sum() / d[:, 1].sum()), "stable_rate": float(d[:, 4].sum() / d[:, 3].sum())}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="1 run instead of 3")
    args = parser.parse_args()
    runs = 1 if args.quick else 3
    print_header("Time to safety: bad canary (orders 1.2.0+bad) on the local platform, daemon's canary sensor",
                 f"{runs} run(s); SQLite Dagster instance, ledger and shop database; webserver + daemon processes")
    results = []
    inf = float("inf")
    for i in range(runs):
        r = one_run(i)
        rows = series(r["stream"], r["first_traffic"], BAD["orders"], FIRST["orders"])
        r["floor"] = r["sensor_interval"] + r["rollback_run"]
        verdict_at = r["verdict_after"] if r["verdict_after"] is not None else inf
        r["reaction"] = (r["safe"] if r["safe"] is not None else inf) - verdict_at
        r["to_finished"] = r["rolled_back"] - verdict_at
        r["router_last"] = last_canary_request(rows)
        r["flagger"] = flagger_replay(rows)
        r["kayenta"] = kayenta_replay(rows)
        results.append(r)
        f, k = r["flagger"], r["kayenta"]
        polled = f"{r['safe_polled']:.2f}" if r["safe_polled"] is not None else "never"
        router = f"{r['router_last']:.1f}" if r["router_last"] is not None else "no canary request"
        print(f"run {i + 1}: fail verdict at {verdict_at:.2f} s by {r['verdict_actor']}; traffic safe (canary weight 0) "
              f"at {r['safe']:.2f} s ({r['safe_from']}; poll saw it at {polled} s; router's last read with new canary "
              f"requests {router} s); rollback run {r['rolling_back']:.1f} -> {r['rolled_back']:.1f} s "
              f"({r['rollback_run']:.1f} s), canary stopped by {r['canary_stopped']:.1f} s (all after first traffic)")
        print(f"  canary {r['load_requests']} requests, {r['load_errors']} errors (load generator); "
              f"shed errors {r['shed_errors'] or 'none'}; {len(r['stream'])} metric reads over {f['covered']:.0f} s; "
              f"servers exit {r['exit_codes']}, leftover processes {r['leftovers']}")
        window_text = ", ".join(
            f"#{j + 1} {'fail' if c else 'ok'} ({'no data' if np.isnan(rate) else f'{rate:.1%}'}, "
            f"{obs:.0%} observed)" for j, (c, rate, obs) in enumerate(zip(f["checks"], f["rates"], f["observed"])))
        print(f"  Flagger checks: {window_text}")
        print(f"  Kayenta on the recorded stream: {k['points']} paired points, canary "
              f"{k.get('canary_rate', float('nan')):.2%} vs stable {k.get('stable_rate', float('nan')):.2%} errors, "
              f"verdict {k['verdict']}"
              + (f" (first High at look {k['first_fail_look'] + 1}, {k['first_fail_t']:.0f} s, if judged every read)"
                 if k.get("first_fail_look") is not None else ""))
    ours = median([r["safe"] if r["safe"] is not None else inf for r in results])
    floor = median([r["floor"] for r in results])
    evidence = median([r["verdict_after"] if r["verdict_after"] is not None else inf for r in results])
    reaction, to_finished = median([r["reaction"] for r in results]), median([r["to_finished"] for r in results])
    finished = median([r["rolled_back"] for r in results])
    flagger, kayenta_ok = median([r["flagger"]["seconds"] for r in results]), all(r["kayenta"]["fails"] for r in results)

    def spread(key: str) -> str:
        return f"{min(r[key] for r in results):.1f}-{max(r[key] for r in results):.1f}"

    print()
    print(table(
        ["judge", "seconds", "x floor", "note"],
        [
            ["ours: first traffic -> traffic safe (canary weight 0)", f"{ours:.1f}", f"{ours / floor:.2f}",
             f"goal <= {GOAL_SECONDS:.0f} s; runs {spread('safe')}"],
            ["  of which first traffic -> fail verdict", f"{evidence:.1f}", f"{evidence / floor:.2f}",
             f"the evidence; runs {spread('verdict_after')}"],
            ["  of which fail verdict -> traffic safe", f"{reaction:.2f}", f"{reaction / floor:.2f}",
             f"goal <= floor; runs {spread('reaction')}"],
            ["ours: fail verdict -> rollback run finished", f"{to_finished:.1f}", f"{to_finished / floor:.2f}",
             f"canary stopped, ledger rolled_back; runs {spread('to_finished')}"],
            ["ours: first traffic -> rollback run finished", f"{finished:.1f}", f"{finished / floor:.2f}",
             f"runs {spread('rolled_back')}"],
            ["floor (sensor interval + rollback run)", f"{floor:.1f}", "1.00",
             f"{results[0]['sensor_interval']:.0f} s + {median([r['rollback_run'] for r in results]):.1f} s"],
            ["Flagger (60 s x 5 failed checks, 1 %)", f"{flagger:.0f}", f"{flagger / floor:.1f}",
             "extrapolated past the stream" if any(r["flagger"]["extrapolated"] for r in results) else "replayed"],
            ["Kayenta (one judgment at 3 h lifetime)", f"{KAYENTA_LIFETIME:.0f}", f"{KAYENTA_LIFETIME / floor:.0f}",
             f"verdict on stream: {'High/fail' if kayenta_ok else 'Pass (misses)'}"],
        ],
    ))
    extrapolated = [r for r in results if r["flagger"]["extrapolated"]]
    if extrapolated:
        print(f"note: the recorded stream covers {extrapolated[0]['flagger']['covered']:.0f} s of the canary, "
              f"less than Flagger's {FLAGGER_THRESHOLD} x {FLAGGER_INTERVAL:.0f} s; checks past the stream are "
              "extrapolated as failed (the canary's traffic stops at our verdict; Flagger fails a check with no "
              "data, and the bad version's error rate stays ~5 % > 1 % while it serves).")
    print(f"note: Kayenta's time is its analysis lifetime ({KAYENTA_LIFETIME / 3600:.0f} h, >= {KAYENTA_MIN_POINTS} "
          "points per metric suggested); with its default settings it judges once, at the end. Its verdict above "
          "is computed on the per-read points recorded here (fewer than 50).")
    print(f"summary: first traffic -> traffic safe {ours:.1f} s (goal <= {GOAL_SECONDS:.0f} s) "
          f"{verdict(ours <= GOAL_SECONDS)}: evidence {evidence:.1f} s + reaction {reaction:.2f} s (goal <= floor "
          f"{floor:.1f} s) {verdict(reaction <= floor)}; rollback run finished {to_finished:.1f} s after the verdict; "
          f"Flagger {flagger:.0f} s, Kayenta {KAYENTA_LIFETIME:.0f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
