"""Online migration on PostgreSQL: what a backfill + CREATE INDEX CONCURRENTLY + the safe NOT NULL
recipe, run by MigrationRunner, costs a steady read/write load.

A table `accounts` of N rows (generate_series; 2 M, or 100 k with --quick) is copied from a
template database for every run. A load of LOAD_THREADS threads, each on its own connection at a
fixed rate (open loop: latency is measured from each request's scheduled start, so a stall
counts in full), does 70 % point reads, 20 % point updates and 10 % inserts. A monitor polls
pg_stat_activity every 20 ms for sessions waiting on a lock (wait_event_type = 'Lock').

The migration is a generated Alembic project (every revision `phase = "expand"`):
  0001 ADD COLUMN total bigint; SET DEFAULT 0 (rows inserted from now on)
  0002 backfill(total = a + b WHERE total IS NULL) in block-range batches (resources/backfill.py)
  0003 CREATE INDEX CONCURRENTLY ix_accounts_total
  0004 ADD CONSTRAINT CHECK (total IS NOT NULL) NOT VALID (its own transaction)
  0005 VALIDATE CONSTRAINT; SET NOT NULL (no scan thanks to the check); DROP the check
The CHECK comes after the backfill, not before: a NOT VALID check still applies to every new row
version, so the old release's UPDATEs of rows not yet backfilled would fail (CheckViolation).
run by release_pipelines.resources.migrations.MigrationRunner with its defaults (lock_timeout
50 ms, waiting outside the lock queue, retries with backoff); the backfill with its defaults
(one statement per batch, batches sized by time from 1000 rows).

Baseline: the same load for BASELINE_S seconds with no migration; the load's p99 is also
reported for the requests started while the backfill (0002) ran. The physical limit for the
backfill: one plain `UPDATE accounts SET total = a + b` on a fresh copy, no load.

Lock queue (R7): an 8 s transaction holds ACCESS SHARE on the table while a reader loop reads
it and `ALTER TABLE accounts ADD COLUMN` is applied - by the runner with default settings, and
by plain Alembic (`command.upgrade`, no lock_timeout) for reference. Reported: the reader's
longest stall and when the DDL finished after the transaction ended.

    python -m benchmarks.online_migration [--quick] [--rows N] [--batch-size B]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import psycopg2
from release_pipelines.resources.backfill import BackfillResult, backfill, progress_reporter
from sqlalchemy import create_engine
from sqlalchemy.engine import make_url

from benchmarks.common import (
    ROOT,
    median,
    percentile,
    print_header,
    scratch_database,
    table,
    verdict,
)

LOAD_THREADS = 4
OPS_PER_THREAD = 50  # per second: 200 ops/s in all
LOCK_TIMEOUT_MS = 50  # the runner's default
POLL_S = 0.02
HOLD_S = 8.0  # the long transaction of the lock-queue scenario

REVISIONS = {
    "0001_add_total.py": '''
from alembic import op
revision = "0001_add_total"
down_revision = None
branch_labels = None
depends_on = None
phase = "expand"


def upgrade() -> None:
    op.execute("ALTER TABLE accounts ADD COLUMN total bigint")
    op.execute("ALTER TABLE accounts ALTER COLUMN total SET DEFAULT 0")


def downgrade() -> None:
    op.execute("ALTER TABLE accounts DROP COLUMN total")
''',
    "0002_backfill_total.py": '''
import json
import os

from alembic import op

from release_pipelines.resources.backfill import backfill

revision = "0002_backfill_total"
down_revision = "0001_add_total"
branch_labels = None
depends_on = None
phase = "expand"


def upgrade() -> None:
    with op.get_context().autocommit_block():
        result = backfill(op.get_bind(), table="accounts", set_sql="total = a + b", where_sql="total IS NULL",
                          job="0002_backfill_total", batch_size=int(os.environ.get("BENCH_BACKFILL_BATCH", "1000")),
                          target_batch_s=float(os.environ.get("BENCH_BACKFILL_TARGET_S", "0.1")),
                          nice_ratio=float(os.environ.get("BENCH_BACKFILL_NICE", "0")))
    if os.environ.get("BENCH_BACKFILL_LOG"):  # where the time went, for the benchmark's report
        with open(os.environ["BENCH_BACKFILL_LOG"], "a") as log:
            log.write(json.dumps({"phases_s": result.phases_s, "batch_sizes": result.batch_sizes}) + "\\n")


def downgrade() -> None:
    pass
''',
    "0003_index_total.py": '''
from alembic import op

revision = "0003_index_total"
down_revision = "0002_backfill_total"
branch_labels = None
depends_on = None
phase = "expand"


def upgrade() -> None:
    with op.get_context().autocommit_block():
        op.create_index("ix_accounts_total", "accounts", ["total"], postgresql_concurrently=True)


def downgrade() -> None:
    with op.get_context().autocommit_block():
        op.drop_index("ix_accounts_total", "accounts", postgresql_concurrently=True)
''',
    "0004_total_check.py": '''
from alembic import op

revision = "0004_total_check"
down_revision = "0003_index_total"
branch_labels = None
depends_on = None
phase = "expand"


def upgrade() -> None:
    op.execute("ALTER TABLE accounts ADD CONSTRAINT ck_accounts_total_not_null CHECK (total IS NOT NULL) NOT VALID")


def downgrade() -> None:
    op.drop_constraint("ck_accounts_total_not_null", "accounts", type_="check")
''',
    "0005_total_not_null.py": '''
from alembic import op

revision = "0005_total_not_null"
down_revision = "0004_total_check"
branch_labels = None
depends_on = None
phase = "expand"


def upgrade() -> None:
    op.execute("ALTER TABLE accounts VALIDATE CONSTRAINT ck_accounts_total_not_null")
    op.alter_column("accounts", "total", nullable=False)
    op.drop_constraint("ck_accounts_total_not_null", "accounts", type_="check")


def downgrade() -> None:
    op.alter_column("accounts", "total", nullable=True)
''',
}


def write_project(directory: Path) -> Path:
    shop = ROOT / "examples" / "shop" / "migrations"
    (directory / "versions").mkdir(parents=True)
    shutil.copy(shop / "env.py", directory / "env.py")
    shutil.copy(shop / "script.py.mako", directory / "script.py.mako")
    for name, body in REVISIONS.items():
        (directory / "versions" / name).write_text(body.lstrip())
    return directory


def dsn(url: str) -> str:
    u = make_url(url)
    return f"host={u.host} port={u.port or 5432} user={u.username} dbname={u.database}"


def execute(url: str, *statements: str) -> None:
    """Run statements on a fresh autocommit connection, then close it."""
    conn = psycopg2.connect(dsn(url))
    conn.autocommit = True
    try:
        for statement in statements:
            conn.cursor().execute(statement)
    finally:
        conn.close()


def build_template(url: str, rows: int) -> None:
    execute(url, "CREATE TABLE accounts (id bigserial PRIMARY KEY, a integer NOT NULL, b integer NOT NULL,"
                    " note text NOT NULL)",
            "INSERT INTO accounts (a, b, note) SELECT g % 1000, g % 7, md5(g::text)"
            f" FROM generate_series(1, {int(rows)}) AS g",
            "VACUUM ANALYZE accounts")


def copy_database(url: str, template_url: str) -> None:
    admin = psycopg2.connect(dsn(template_url).replace(f"dbname={make_url(template_url).database}", "dbname=postgres"))
    admin.autocommit = True
    admin.cursor().execute(f'CREATE DATABASE "{make_url(url).database}" TEMPLATE "{make_url(template_url).database}"')
    admin.close()


def drop_database(url: str) -> None:
    admin = psycopg2.connect(dsn(url).replace(f"dbname={make_url(url).database}", "dbname=postgres"))
    admin.autocommit = True
    admin.cursor().execute(f'DROP DATABASE IF EXISTS "{make_url(url).database}" WITH (FORCE)')
    admin.close()


# ------------------------------------------------------------------ load and lock monitor


@dataclass
class LoadStats:
    latencies_ms: list[float] = field(default_factory=list)
    scheduled: list[float] = field(default_factory=list)  # perf_counter of each request's start
    kinds: list[str] = field(default_factory=list)  # "read", "update" or "insert", per request
    errors: list[str] = field(default_factory=list)
    ops: int = 0


class Load:
    """LOAD_THREADS open-loop clients at OPS_PER_THREAD each; stop() returns the stats."""

    def __init__(self, url: str, rows: int, seed: int = 1):
        self.url, self.rows = url, rows
        self.stop_event = threading.Event()
        self.stats = [LoadStats() for _ in range(LOAD_THREADS)]
        self.threads = [threading.Thread(target=self._client, args=(i, seed + i), daemon=True) for i in range(LOAD_THREADS)]

    def start(self) -> Load:
        for t in self.threads:
            t.start()
        return self

    def stop(self) -> LoadStats:
        self.stop_event.set()
        for t in self.threads:
            t.join()
        merged = LoadStats()
        for s in self.stats:
            merged.latencies_ms += s.latencies_ms
            merged.scheduled += s.scheduled
            merged.kinds += s.kinds
            merged.errors += s.errors
            merged.ops += s.ops
        return merged

    def _client(self, index: int, seed: int) -> None:
        rng = random.Random(seed)
        stats = self.stats[index]
        conn = psycopg2.connect(dsn(self.url), application_name="bench-load")
        conn.autocommit = True
        cur = conn.cursor()
        interval = 1.0 / OPS_PER_THREAD
        next_at = time.perf_counter() + rng.random() * interval
        while not self.stop_event.is_set():
            now = time.perf_counter()
            if now < next_at:
                time.sleep(next_at - now)
            scheduled = next_at
            next_at += interval
            roll, key = rng.random(), rng.randint(1, self.rows)
            kind = "read" if roll < 0.7 else "update" if roll < 0.9 else "insert"
            try:
                if kind == "read":
                    cur.execute("SELECT id, a, b, note FROM accounts WHERE id = %s", (key,))
                    cur.fetchall()
                elif kind == "update":
                    cur.execute("UPDATE accounts SET a = a + 1 WHERE id = %s", (key,))
                else:
                    cur.execute("INSERT INTO accounts (a, b, note) VALUES (%s, %s, 'load')", (key % 1000, key % 7))
            except psycopg2.Error as exc:
                stats.errors.append(f"{type(exc).__name__}: {str(exc).splitlines()[0]}")
                if conn.closed:
                    conn = psycopg2.connect(dsn(self.url), application_name="bench-load")
                    conn.autocommit = True
                    cur = conn.cursor()
            stats.latencies_ms.append((time.perf_counter() - scheduled) * 1000)
            stats.scheduled.append(scheduled)
            stats.kinds.append(kind)
            stats.ops += 1
        conn.close()


class LockMonitor:
    """Longest lock wait seen per kind of session (load vs migration), polling pg_stat_activity."""

    def __init__(self, url: str):
        self.url = url
        self.stop_event = threading.Event()
        self.longest: dict[str, float] = {"load": 0.0, "migration": 0.0}
        self.worst_query: dict[str, str] = {"load": "", "migration": ""}
        self.thread = threading.Thread(target=self._poll, daemon=True)

    def start(self) -> LockMonitor:
        self.thread.start()
        return self

    def stop(self) -> dict[str, float]:
        self.stop_event.set()
        self.thread.join()
        return self.longest

    def _poll(self) -> None:
        conn = psycopg2.connect(dsn(self.url), application_name="bench-monitor")
        conn.autocommit = True
        cur = conn.cursor()
        while not self.stop_event.is_set():
            cur.execute(
                "SELECT application_name, extract(epoch FROM clock_timestamp() - query_start) * 1000, wait_event, query"
                " FROM pg_stat_activity WHERE wait_event_type = 'Lock' AND datname = current_database()"
            )
            for app, waited_ms, wait_event, query in cur.fetchall():
                kind = "load" if app == "bench-load" else "migration"
                if kind == "migration" and wait_event == "virtualxid":
                    continue  # CONCURRENTLY waiting for older snapshots: blocks nobody
                if waited_ms and waited_ms > self.longest[kind]:
                    self.longest[kind] = float(waited_ms)
                    self.worst_query[kind] = f"{wait_event}: {' '.join(query.split())[:80]}"
            time.sleep(POLL_S)
        conn.close()


# ------------------------------------------------------------------ one run of each kind


@dataclass
class RunResult:
    p50_ms: float
    p99_ms: float
    max_ms: float
    ops: int
    errors: list[str]
    lock_wait_ms: dict[str, float]
    worst_wait: dict[str, str]
    seconds: float
    backfill_s: float = 0.0
    backfill_p99_ms: float = 0.0  # of the load's requests started while the backfill ran
    revisions: list[tuple[str, float, int]] = field(default_factory=list)


def loaded_run(url: str, rows: int, seconds: float | None, project: Path | None, seed: int) -> RunResult:
    """The load alone for `seconds`, or the load while MigrationRunner applies `project`."""
    from release_pipelines.resources.migrations import MigrationRunner

    monitor = LockMonitor(url).start()
    load = Load(url, rows, seed).start()
    batch_ends: list[float] = []
    time.sleep(1.0)  # settle
    started = time.perf_counter()
    results = []
    if project is None:
        time.sleep(seconds or 0)
    else:
        runner = MigrationRunner(project, url, application_name="bench-migration")
        token = progress_reporter.set(lambda job, done, total: batch_ends.append(time.perf_counter()))
        try:
            results = runner.upgrade()
        finally:
            progress_reporter.reset(token)
        assert [r.revision for r in results] == [p.removesuffix(".py") for p in REVISIONS], results
    elapsed = time.perf_counter() - started
    time.sleep(0.5)
    stats = load.stop()
    waits = monitor.stop()
    lat = stats.latencies_ms
    backfill_s = next((r.duration_s for r in results if "backfill" in r.revision), 0.0)
    during = [ms for at, ms in zip(stats.scheduled, lat)
              if batch_ends and batch_ends[-1] - backfill_s <= at <= batch_ends[-1]]
    return RunResult(percentile(lat, 50), percentile(lat, 99), max(lat), stats.ops, stats.errors, waits,
                     monitor.worst_query, elapsed, backfill_s, percentile(during, 99) if during else 0.0,
                     [(r.revision, r.duration_s, r.attempts) for r in results])


def plain_update_seconds(url: str) -> float:
    execute(url, "ALTER TABLE accounts ADD COLUMN total bigint", "CHECKPOINT")  # both start with no dirty buffers
    conn = psycopg2.connect(dsn(url))
    cur = conn.cursor()
    started = time.perf_counter()
    cur.execute("UPDATE accounts SET total = a + b")
    conn.commit()
    elapsed = time.perf_counter() - started
    conn.close()
    return elapsed


def backfill_alone(url: str, batch_size: int, target_batch_s: float) -> BackfillResult:
    execute(url, "ALTER TABLE accounts ADD COLUMN total bigint", "CHECKPOINT")
    engine = create_engine(url)
    try:
        return backfill(engine, table="accounts", set_sql="total = a + b", where_sql="total IS NULL",
                        batch_size=batch_size, target_batch_s=target_batch_s)
    finally:
        engine.dispose()


# ------------------------------------------------------------------ lock queue (R7)

ADD_COLUMN = '''
from alembic import op
revision = "0001_add_flag"
down_revision = None
branch_labels = None
depends_on = None
phase = "expand"


def upgrade() -> None:
    op.execute("ALTER TABLE accounts ADD COLUMN flag boolean")


def downgrade() -> None:
    op.execute("ALTER TABLE accounts DROP COLUMN flag")
'''


@dataclass
class QueueResult:
    longest_stall_ms: float
    reads: int
    ddl_after_release_s: float  # DDL finished this long after the long transaction ended


def lock_queue_run(url: str, rows: int, project: Path, how: str) -> QueueResult:
    """An 8 s transaction holds ACCESS SHARE; a reader reads; ADD COLUMN is applied by `how`
    ("runner": MigrationRunner with defaults, "alembic": plain command.upgrade, no timeouts)."""
    from alembic import command
    from alembic.config import Config
    from release_pipelines.resources.migrations import MigrationRunner

    stop, latencies = threading.Event(), []

    def read() -> None:
        conn = psycopg2.connect(dsn(url), application_name="bench-reader")
        conn.autocommit = True
        cur, rng = conn.cursor(), random.Random(3)
        while not stop.is_set():
            started = time.perf_counter()
            cur.execute("SELECT a, b FROM accounts WHERE id = %s", (rng.randint(1, rows),))
            cur.fetchall()
            latencies.append((time.perf_counter() - started) * 1000)
            time.sleep(0.01)
        conn.close()

    holder = psycopg2.connect(dsn(url), application_name="bench-long-report")
    holder.cursor().execute("SELECT count(*) FROM accounts WHERE id < 10")  # ACCESS SHARE, kept
    released: list[float] = []

    def release() -> None:
        holder.rollback()
        released.append(time.perf_counter())

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    timer = threading.Timer(HOLD_S, release)
    timer.start()
    time.sleep(1.0)
    if how == "runner":
        MigrationRunner(project, url, application_name="bench-migration").upgrade("head")
    else:
        engine = create_engine(url)
        with engine.connect() as conn:
            cfg = Config()
            cfg.set_main_option("script_location", str(project))
            cfg.attributes["connection"] = conn
            command.upgrade(cfg, "head")
        engine.dispose()
    done = time.perf_counter()
    timer.join()
    time.sleep(0.3)
    stop.set()
    reader.join()
    holder.close()
    return QueueResult(max(latencies), len(latencies), done - released[0])


def lock_queue_scenario(template: str, rows: int, tmp: Path) -> dict[str, QueueResult]:
    project = tmp / "queue"
    (project / "versions").mkdir(parents=True)
    shop = ROOT / "examples" / "shop" / "migrations"
    shutil.copy(shop / "env.py", project / "env.py")
    shutil.copy(shop / "script.py.mako", project / "script.py.mako")
    (project / "versions" / "0001_add_flag.py").write_text(ADD_COLUMN.lstrip())
    base = make_url(template)
    results = {}
    for how in ("runner", "alembic"):
        copy = base.set(database=f"{base.database}_q{how}").render_as_string(hide_password=False)
        copy_database(copy, template)
        try:
            results[how] = lock_queue_run(copy, rows, project, how)
        finally:
            drop_database(copy)
    return results


# ------------------------------------------------------------------ main


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="100 k rows, 2 runs")
    parser.add_argument("--rows", type=int, default=None)
    parser.add_argument("--runs", type=int, default=None)
    parser.add_argument("--batch-size", type=int, default=1000,
                        help="backfill's first batch (keys); later ones are sized by time (library default 1000)")
    parser.add_argument("--target-batch-s", type=float, default=0.1,
                        help="backfill's target batch duration (library default 0.1 s)")
    parser.add_argument("--nice-ratio", type=float, default=0.0,
                        help="backfill pauses this times each batch's duration after it, under load only (default 0)")
    args = parser.parse_args()
    rows = args.rows or (100_000 if args.quick else 2_000_000)
    runs = args.runs or (2 if args.quick else 3)
    baseline_s = 6.0 if args.quick else 20.0
    os.environ["BENCH_BACKFILL_BATCH"] = str(args.batch_size)
    os.environ["BENCH_BACKFILL_TARGET_S"] = str(args.target_batch_s)
    os.environ["BENCH_BACKFILL_NICE"] = str(args.nice_ratio)
    started = time.monotonic()
    print_header(
        "Online migration on PostgreSQL",
        f"{rows:,} rows; load {LOAD_THREADS} x {OPS_PER_THREAD} ops/s (70 % reads, 20 % updates, 10 % inserts); "
        f"backfill first batch {args.batch_size} rows, then sized by time (target "
        f"{args.target_batch_s:g} s, nice_ratio {args.nice_ratio:g} under load); runner defaults (lock_timeout "
        f"{LOCK_TIMEOUT_MS} ms); medians of {runs} runs",
    )
    base_runs: list[RunResult] = []
    mig_runs: list[RunResult] = []
    plain_s: list[float] = []
    alone: list[BackfillResult] = []
    with tempfile.TemporaryDirectory(prefix="bench-migr-") as tmp, scratch_database("tpl") as template:
        project = write_project(Path(tmp) / "migrations")
        backfill_log = Path(tmp) / "backfill.jsonl"  # each migration's backfill result
        backfill_log.touch()
        os.environ["BENCH_BACKFILL_LOG"] = str(backfill_log)
        t0 = time.perf_counter()
        build_template(template, rows)
        build_s = time.perf_counter() - t0
        base = make_url(template)
        for i in range(runs):
            copy = base.set(database=f"{base.database}_r{i}").render_as_string(hide_password=False)
            kinds = ["baseline", "migration", "plain", "alone"]
            for kind in kinds:
                copy_database(copy, template)
                try:
                    if kind == "baseline":
                        base_runs.append(loaded_run(copy, rows, baseline_s, None, seed=i))
                    elif kind == "migration":
                        mig_runs.append(loaded_run(copy, rows, None, project, seed=i))
                    elif kind == "plain":
                        plain_s.append(plain_update_seconds(copy))
                    else:
                        alone.append(backfill_alone(copy, args.batch_size, args.target_batch_s))
                finally:
                    drop_database(copy)
        queue = lock_queue_scenario(template, rows, Path(tmp))
        loaded = [json.loads(line) for line in backfill_log.read_text().splitlines()]
    alone_s = [r.duration_s for r in alone]
    b = {k: median([getattr(r, k) for r in base_runs]) for k in ("p50_ms", "p99_ms", "max_ms")}
    m = {k: median([getattr(r, k) for r in mig_runs]) for k in ("p50_ms", "p99_ms", "max_ms", "seconds", "backfill_s", "backfill_p99_ms")}
    b_err, m_err = sum(len(r.errors) for r in base_runs), sum(len(r.errors) for r in mig_runs)
    load_wait = max(r.lock_wait_ms["load"] for r in mig_runs)
    mig_wait = max(r.lock_wait_ms["migration"] for r in mig_runs)
    base_wait = max(r.lock_wait_ms["load"] for r in base_runs)
    rows_plain, rows_fill, rows_alone = rows / median(plain_s), rows / m["backfill_s"], rows / median(alone_s)
    print(f"table built in {build_s:.1f} s (generate_series + VACUUM ANALYZE)\n")
    print(table(
        ["load", "ops", "p50 ms", "p99 ms", "max ms", "errors", "longest load lock wait ms"],
        [["baseline (no migration)", sum(r.ops for r in base_runs), f"{b['p50_ms']:.1f}", f"{b['p99_ms']:.1f}",
          f"{b['max_ms']:.0f}", b_err, f"{base_wait:.0f}"],
         ["during the migration", sum(r.ops for r in mig_runs), f"{m['p50_ms']:.1f}", f"{m['p99_ms']:.1f}",
          f"{m['max_ms']:.0f}", m_err, f"{load_wait:.0f}"],
         ["ratio", "", f"{m['p50_ms'] / b['p50_ms']:.2f}x", f"{m['p99_ms'] / b['p99_ms']:.2f}x",
          f"{m['max_ms'] / b['max_ms']:.2f}x", "", ""],
         ["while the backfill ran (0002 only)", "", "", f"{m['backfill_p99_ms']:.1f}", "", "", ""],
         ["ratio (0002 only)", "", "", f"{m['backfill_p99_ms'] / b['p99_ms']:.2f}x", "", "", ""]],
    ))
    print()
    per_rev = {}
    for r in mig_runs:
        for name, seconds, attempts in r.revisions:
            per_rev.setdefault(name, []).append((seconds, attempts))
    print(table(["revision (under load)", "seconds", "attempts (max)"],
                [[n, f"{median([s for s, _ in v]):.2f}", max(a for _, a in v)] for n, v in per_rev.items()]))
    print()
    print(table(
        ["fill `total` on every row", "seconds", "rows/s", "vs plain UPDATE"],
        [["plain UPDATE (one statement, no load)", f"{median(plain_s):.2f}", f"{rows_plain:,.0f}", "1.00x"],
         ["backfill(), no load", f"{median(alone_s):.2f}", f"{rows_alone:,.0f}",
          f"{rows_alone / rows_plain:.2f}x"],
         ["backfill(), under load (inside the migration)", f"{m['backfill_s']:.2f}", f"{rows_fill:,.0f}",
          f"{rows_fill / rows_plain:.2f}x"]],
    ))
    print()
    for label, runs_phases, runs_sizes in (
        ("alone", [r.phases_s for r in alone], [r.batch_sizes for r in alone]),
        ("under load", [r["phases_s"] for r in loaded], [r["batch_sizes"] for r in loaded]),
    ):
        phases = {name: median([dict(p)[name] for p in runs_phases]) for name, _ in runs_phases[0]}
        sizes = sorted(size for s in runs_sizes for size in s)
        print(f"backfill() {label}, where the time goes (medians): "
              + ", ".join(f"{name} {seconds:.2f} s" for name, seconds in phases.items())
              + f"; {median([len(s) for s in runs_sizes]):.0f} batches of median {sizes[len(sizes) // 2]:,} rows")
    worst = max(mig_runs, key=lambda r: r.lock_wait_ms["load"])
    print(f"\nlongest lock wait of a migration statement: {mig_wait:.0f} ms"
          + (f" ({max(mig_runs, key=lambda r: r.lock_wait_ms['migration']).worst_wait['migration']})" if mig_wait else ""))
    if load_wait:
        print(f"longest lock wait of a load statement: {load_wait:.0f} ms ({worst.worst_wait['load']})")
    if m_err:
        print("load errors: " + "; ".join(sorted({e for r in mig_runs for e in r.errors})[:5]))
    print()
    print(table(
        [f"ADD COLUMN behind a {HOLD_S:g} s transaction", "reads", "reader's longest stall ms",
         "DDL done after the transaction ended s"],
        [[label, q.reads, f"{q.longest_stall_ms:.0f}", f"{q.ddl_after_release_s:.2f}"]
         for label, q in (("runner, default settings", queue["runner"]),
                          ("plain Alembic (no lock_timeout)", queue["alembic"]))],
    ))
    p99_ok = m["p99_ms"] <= 1.5 * b["p99_ms"]
    err_ok = m_err == 0
    fill_ok = rows_alone / rows_plain >= 0.9 and rows_fill / rows_plain >= 0.9
    stall_ok = queue["runner"].longest_stall_ms <= 100
    print(
        f"\nsummary: P3 backfill {rows_alone / rows_plain:.2f}x plain UPDATE alone, {rows_fill / rows_plain:.2f}x "
        f"under load (goal >= 0.9x: {verdict(fill_ok)}), load p99 {m['p99_ms'] / b['p99_ms']:.2f}x baseline "
        f"(goal <= 1.5x: {verdict(p99_ok)}; {m['backfill_p99_ms'] / b['p99_ms']:.2f}x while the backfill ran), {m_err} load errors (goal 0: {verdict(err_ok)}); "
        f"R7 reader stall {queue['runner'].longest_stall_ms:.0f} ms with the runner (goal <= 100 ms: "
        f"{verdict(stall_ok)}), {queue['alembic'].longest_stall_ms:.0f} ms with plain Alembic; "
        f"longest lock wait of a DDL statement {mig_wait:.0f} ms"
        f" -> {verdict(p99_ok and err_ok and fill_ok and stall_ok)} ({time.monotonic() - started:.0f} s)"
    )


if __name__ == "__main__":
    main()
