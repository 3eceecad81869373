"""What raises the load's p99 while a backfill runs (issue 18, P3): the online-migration
benchmark's load (4 clients x 50 ops/s on `accounts`: 70 % point reads, 20 % updates, 10 %
inserts) on a fresh copy of the table, beside each of these in turn:

  nothing              the baseline, 10 s
  backfill             resources/backfill.py on `accounts`, the load's own table (library defaults)
  backfill, nice 1     the same with nice_ratio 1: paused after each batch for as long as it took
  backfill, a tenth    10 ms batches, each followed by a pause 9 times as long (nice_ratio 9)
  backfill elsewhere   the same backfill on `other`, a copy of the table the load never touches
  backfill, fillfactor 50  on `accounts` rewritten with half of each page free: HOT updates
  cpu hog              one process spinning outside PostgreSQL for 5 s (a busy core, no writes)
  second load          a second copy of the load for 10 s (the application's own traffic doubled)
  plain UPDATE         one `UPDATE accounts SET total = a + b` (the physical limit of the write)

For each: the window's length, p50/p99 of reads, updates and inserts apart, what PostgreSQL
wrote in the window (pg_stat_bgwriter: buffers written by backends and by the checkpointer,
checkpoints), and what the load's sessions were waiting on when active (pg_stat_activity). A row lock on the load's table or a buffer it shares would show in
"backfill" and not in "backfill elsewhere"; a busy core would show in "cpu hog".

    python -m benchmarks.load_p99_sources [--quick] [--rows N] [--runs R]
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable

import psycopg2
from release_pipelines.resources.backfill import backfill
from sqlalchemy import create_engine
from sqlalchemy.engine import make_url

from benchmarks.common import median, percentile, print_header, scratch_database, table
from benchmarks.online_migration import Load, build_template, copy_database, drop_database, dsn, execute

BASELINE_S = 10.0
HOG_S = 5.0
KINDS = ("read", "update", "insert")
BGWRITER = ("SELECT buffers_backend, buffers_checkpoint, checkpoints_req + checkpoints_timed FROM pg_stat_bgwriter")


def _backfill(url: str, table_name: str, **pacing: float) -> None:
    engine = create_engine(url)
    try:
        backfill(engine, table=table_name, set_sql="total = a + b", where_sql="total IS NULL", **pacing)
    finally:
        engine.dispose()


def _second_load(url: str, rows: int) -> None:
    """The load again, beside the measured one: only the first's latencies count; the wait sampler
    sees both (the same application_name)."""
    load = Load(url, rows, seed=100).start()
    time.sleep(BASELINE_S)
    load.stop()


def _hog() -> None:
    spin = f"import time\nend = time.monotonic() + {HOG_S}\nwhile time.monotonic() < end: pass"
    subprocess.run([sys.executable, "-c", spin], check=True)


SCENARIOS: dict[str, tuple[list[str], Callable[[str, int], None]]] = {  # name -> (set-up statements, the work(url, rows))
    "nothing": ([], lambda url, rows: time.sleep(BASELINE_S)),
    "backfill": (["ALTER TABLE accounts ADD COLUMN total bigint"], lambda url, rows: _backfill(url, "accounts")),
    "backfill, nice 1": (["ALTER TABLE accounts ADD COLUMN total bigint"],
                         lambda url, rows: _backfill(url, "accounts", nice_ratio=1.0)),
    "backfill, a tenth": (["ALTER TABLE accounts ADD COLUMN total bigint"],
                          lambda url, rows: _backfill(url, "accounts", target_batch_s=0.01, batch_size=3000, nice_ratio=9.0)),
    "backfill elsewhere": (["CREATE TABLE other (LIKE accounts INCLUDING ALL)", "INSERT INTO other SELECT * FROM accounts",
                            "VACUUM ANALYZE other", "ALTER TABLE other ADD COLUMN total bigint"],
                           lambda url, rows: _backfill(url, "other")),
    "backfill, fillfactor 50": (["ALTER TABLE accounts SET (fillfactor = 50)", "VACUUM FULL accounts",
                                 "ALTER TABLE accounts ADD COLUMN total bigint"], lambda url, rows: _backfill(url, "accounts")),
    "cpu hog": ([], lambda url, rows: _hog()),
    "second load": ([], lambda url, rows: _second_load(url, rows)),
    "plain UPDATE": (["ALTER TABLE accounts ADD COLUMN total bigint"],
                     lambda url, rows: execute(url, "UPDATE accounts SET total = a + b")),
}


def _written(url: str) -> tuple[int, ...]:
    conn = psycopg2.connect(dsn(url))
    try:
        cur = conn.cursor()
        cur.execute(BGWRITER)
        return tuple(cur.fetchone())
    finally:
        conn.close()


class WaitSampler:
    """What the load's sessions are doing when they are active, sampled from pg_stat_activity every
    ~2 ms: a wait event (`IO:WALSync` is a commit waiting for the WAL's fsync) or on a CPU."""

    def __init__(self, url: str):
        self.url, self.seen = url, Counter()
        self.stop_event = threading.Event()
        self.thread = threading.Thread(target=self._sample, daemon=True)

    def __enter__(self) -> WaitSampler:
        self.thread.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self.stop_event.set()
        self.thread.join()

    def _sample(self) -> None:
        conn = psycopg2.connect(dsn(self.url))
        conn.autocommit = True
        cur = conn.cursor()
        while not self.stop_event.is_set():
            cur.execute("SELECT coalesce(wait_event_type || ':' || wait_event, 'CPU') FROM pg_stat_activity"
                        " WHERE application_name = 'bench-load' AND state = 'active'")
            self.seen.update(row[0] for row in cur.fetchall())
            time.sleep(0.002)
        conn.close()


def measure(url: str, rows: int, name: str) -> tuple[dict[str, float], Counter]:
    """One run of a scenario on a fresh copy (`url`): the load's percentiles in the work's window,
    and what its active sessions were doing (samples by wait event)."""
    setup, work = SCENARIOS[name]
    execute(url, *setup, "CHECKPOINT")  # every run starts with no dirty buffers of the set-up
    before = _written(url)
    load = Load(url, rows).start()
    time.sleep(1.0)  # settle
    started = time.perf_counter()
    with WaitSampler(url) as waits:
        work(url, rows)
    ended = time.perf_counter()
    stats = load.stop()
    after = _written(url)
    inside = [(ms, kind) for at, ms, kind in zip(stats.scheduled, stats.latencies_ms, stats.kinds)
              if started <= at <= ended]
    result = {"seconds": ended - started, "errors": float(len(stats.errors)),
              "p99": percentile([ms for ms, _ in inside], 99)}
    for kind in KINDS:
        ms = [m for m, k in inside if k == kind]
        result[f"{kind} p50"], result[f"{kind} p99"] = percentile(ms, 50), percentile(ms, 99)
    result["backend writes MB"], result["checkpoint writes MB"], result["checkpoints"] = (
        (after[0] - before[0]) * 8 / 1024, (after[1] - before[1]) * 8 / 1024, after[2] - before[2])
    return result, waits.seen


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a smoke run (200,000 rows, 1 run): windows under a second, so its ratios are not figures")
    parser.add_argument("--rows", type=int, default=None, help="rows in the table (default 2,000,000)")
    parser.add_argument("--runs", type=int, default=None, help="runs per scenario (default 2)")
    args = parser.parse_args()
    args.rows = args.rows or (200_000 if args.quick else 2_000_000)
    args.runs = args.runs or (1 if args.quick else 2)
    started = time.monotonic()
    print_header("What raises the load's p99 during a backfill",
                 f"{args.rows:,} rows; medians of {args.runs} runs per scenario, scenarios interleaved")
    results: dict[str, list[dict[str, float]]] = {name: [] for name in SCENARIOS}
    waits: dict[str, Counter] = {name: Counter() for name in SCENARIOS}
    with scratch_database("p99src") as template:
        build_template(template, args.rows)
        copy = make_url(template).set(database=f"{make_url(template).database}_c").render_as_string(hide_password=False)
        for _ in range(args.runs):
            for name in SCENARIOS:
                copy_database(copy, template)
                try:
                    result, seen = measure(copy, args.rows, name)
                    results[name].append(result)
                    waits[name].update(seen)
                finally:
                    drop_database(copy)
    columns = ["seconds", "p99", *(f"{k} {q}" for k in KINDS for q in ("p50", "p99")),
               "backend writes MB", "checkpoint writes MB", "checkpoints", "errors"]
    rows = [[name, *(f"{median([r[c] for r in runs]):.2f}" for c in columns)] for name, runs in results.items()]
    print(table(["scenario", "window s", "p99 ms", *(f"{k} {q} ms" for k in KINDS for q in ("p50", "p99")),
                 "backend writes MB", "checkpoint writes MB", "checkpoints", "load errors"], rows))
    print("the load's active sessions, share of samples (all runs):")
    for name, seen in waits.items():
        total = sum(seen.values()) or 1
        print(f"  {name}: " + ", ".join(f"{event} {count / total:.0%}" for event, count in seen.most_common(4)))
    base = median([r["p99"] for r in results["nothing"]])
    print("summary: load p99 / baseline: " + ", ".join(
        f"{name} {median([r['p99'] for r in runs]) / base:.2f}x" for name, runs in results.items() if name != "nothing")
        + f" ({time.monotonic() - started:.0f} s)")


if __name__ == "__main__":
    main()
