"""Gate cost: the data gates of a release on a 1 M-row PostgreSQL table, against one hand-written
SQL scan computing the same facts; and what Great Expectations would add to definitions load.

Gates (as steps/gates.py runs them): schema contract and constraint validity (catalog), then ONE
scan for the row count (row conservation) and the five-expectation suite compiled to SQL
(assets/compiled_gates via great_expectations.run_suites; not null x2, unique, between, in set -
the format of examples/shop/expectations/orders.json). For reference in the same run: the same
gates the old way - count_rows plus the whole suite validated by GX.
The hand-written scan: one catalog query for the columns plus one SELECT with count(*),
count(DISTINCT id) and FILTER counts for the four other expectations.

Load: `python -c "import release_pipelines.code_location"` against the same plus
`import great_expectations`, each in fresh interpreters.

    python -m benchmarks.gate_cost [--quick]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from sqlalchemy import create_engine, text

from benchmarks.common import ROOT, median, print_header, scratch_database, table, verdict

STATUSES = ["new", "placed", "paid", "shipped", "cancelled"]
COLUMNS = {"id": "bigint", "product_id": "integer", "quantity": "integer", "status": "varchar", "total_cents": "bigint"}
SUITE = {
    "name": "bench_orders",
    "meta": {"table": "orders", "schema": "public"},
    "expectations": [
        {"type": "expect_column_values_to_not_be_null", "kwargs": {"column": "id"}},
        {"type": "expect_column_values_to_be_unique", "kwargs": {"column": "id"}},
        {"type": "expect_column_values_to_not_be_null", "kwargs": {"column": "product_id"}},
        {"type": "expect_column_values_to_be_between", "kwargs": {"column": "quantity", "min_value": 1, "max_value": 1000}},
        {"type": "expect_column_values_to_be_in_set", "kwargs": {"column": "status", "value_set": STATUSES}},
    ],
}
HAND_SQL = """
SELECT count(*) AS rows,
       count(*) FILTER (WHERE id IS NULL) AS id_null,
       count(*) - count(DISTINCT id) AS id_duplicates,
       count(*) FILTER (WHERE product_id IS NULL) AS product_null,
       count(*) FILTER (WHERE quantity < 1 OR quantity > 1000) AS quantity_out,
       count(*) FILTER (WHERE status NOT IN ('new', 'placed', 'paid', 'shipped', 'cancelled')) AS status_out
FROM orders
"""
HAND_COLUMNS = (
    "SELECT column_name, data_type FROM information_schema.columns"
    " WHERE table_schema = 'public' AND table_name = 'orders'"
)


def build(url: str, rows: int) -> None:
    engine = create_engine(url, isolation_level="AUTOCOMMIT")
    with engine.connect() as conn:
        conn.execute(text(
            "CREATE TABLE orders (id bigserial PRIMARY KEY, product_id integer NOT NULL,"
            " quantity integer NOT NULL, status varchar(20) NOT NULL, total_cents bigint)"))
        conn.execute(text(
            "INSERT INTO orders (product_id, quantity, status, total_cents)"
            " SELECT 1 + g % 500, 1 + g % 20, (ARRAY['new','placed','paid','shipped','cancelled'])[1 + g % 5],"
            f" (1 + g % 20) * 900 FROM generate_series(1, {int(rows)}) AS g"))
        conn.execute(text("VACUUM ANALYZE orders"))
    engine.dispose()


def run_gates(url: str, suite_path: Path, rows_before: int, *, compiled: bool) -> tuple[float, float]:
    """Seconds of (schema contract + constraint validity, row count + suite): compiled to one
    scan, or (compiled=False) count_rows plus the whole suite in GX."""
    from release_pipelines.assets.gates import (
        constraint_validity,
        count_rows,
        row_conservation,
        schema_contract,
    )
    from release_pipelines.assets.great_expectations import _validate, read_suite, run_suites

    from release_pipelines.core.manifest import Table

    spec = Table(name="orders", columns=COLUMNS)
    start = time.perf_counter()
    engine = create_engine(url)
    try:
        results = [
            schema_contract(engine, spec, database="bench"),
            constraint_validity(engine, "public", "orders", database="bench"),
        ]
        middle = time.perf_counter()
        if compiled:
            suites, rows = run_suites(url, "public", "orders", [suite_path], database="bench")
            results += suites
            failed_by_gx = []
        else:
            rows = count_rows(engine, spec)
            suite = read_suite(suite_path)
            failed_by_gx = [o for o in _validate(url, False, "public", "orders", suite, SUITE["expectations"]) if not o.success]
        results.append(row_conservation(rows_before, rows, 0.0, database="bench", table="orders"))
    finally:
        engine.dispose()
    end = time.perf_counter()
    failed = [(r.gate, r.summary) for r in results if not r.passed] + failed_by_gx
    assert not failed, failed
    if compiled:
        assert results[2].evidence["compiled_expectations"] == len(SUITE["expectations"])
    return middle - start, end - middle


def hand_scan(url: str) -> dict:
    engine = create_engine(url)
    try:
        with engine.connect() as conn:
            columns = dict(conn.execute(text(HAND_COLUMNS)).all())
            facts = dict(conn.execute(text(HAND_SQL)).mappings().one())
    finally:
        engine.dispose()
    assert set(COLUMNS) <= set(columns)
    assert not any(v for k, v in facts.items() if k != "rows"), facts
    return facts


def timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def fresh(code: str) -> tuple[float, float]:
    """(wall, CPU) seconds of a fresh `python -c code`."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    subprocess.run([sys.executable, "-c", code], cwd=ROOT, check=True)
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return wall, (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="100 k rows, 3 runs, 2 loads each, no cold first call")
    args = parser.parse_args()
    rows = 100_000 if args.quick else 1_000_000
    runs = 3 if args.quick else 5
    load_runs = 2 if args.quick else 5
    started = time.monotonic()
    print_header("Gate cost", f"orders table of {rows:,} rows; medians of {runs} runs; {load_runs} fresh interpreters per load")
    with tempfile.TemporaryDirectory(prefix="bench-gates-") as tmp, scratch_database("gates") as url:
        suite_path = Path(tmp) / "orders.json"
        suite_path.write_text(json.dumps(SUITE))
        build(url, rows)
        # GX path first: its first call imports great_expectations (kept out of the timings)
        run_gates(url, suite_path, rows, compiled=False)
        gates, hand, scan_only, catalog, by_gx = [], [], [], [], []
        for _ in range(runs):  # interleaved, so that both see the same machine
            hand.append(timed(lambda: hand_scan(url)))
            other, scan = run_gates(url, suite_path, rows, compiled=True)
            gates.append(other + scan)
            catalog.append(other)
            scan_only.append(scan)
            by_gx.append(sum(run_gates(url, suite_path, rows, compiled=False)))
    g, h, s, r, x = median(gates), median(hand), median(scan_only), median(catalog), median(by_gx)
    print(table(["on the table", "seconds", "vs hand SQL"], [
        ["hand-written SQL (catalog + one scan)", f"{h:.3f}", "1.0x"],
        ["all gates, compiled (warm process)", f"{g:.3f}", f"{g / h:.2f}x"],
        ["  of which the one scan (row count + suite)", f"{s:.3f}", f"{s / h:.2f}x"],
        ["  schema contract + constraints (catalog)", f"{r:.3f}", f"{r / h:.2f}x"],
        ["reference: count_rows + the suite in GX", f"{x:.3f}", f"{x / h:.2f}x"],
    ]))
    probe_code = "import sys, release_pipelines.orchestration.definitions; print('great_expectations' in sys.modules)"
    probe = subprocess.run([sys.executable, "-c", probe_code],
                           cwd=ROOT, capture_output=True, text=True, check=True).stdout.strip().splitlines()[-1]
    ge_in_load = probe == "True"
    plain, with_ge = [], []
    for _ in range(load_runs):
        plain.append(fresh("import release_pipelines.code_location"))
        with_ge.append(fresh("import release_pipelines.code_location; import great_expectations"))
    pw, pc = median([w for w, _ in plain]), median([c for _, c in plain])
    gw, gc = median([w for w, _ in with_ge]), median([c for _, c in with_ge])
    print()
    print(table(["fresh interpreter", "wall s", "CPU s"], [
        ["import release_pipelines.code_location", f"{pw:.2f}", f"{pc:.2f}"],
        ["  + import great_expectations", f"{gw:.2f}", f"{gc:.2f}"],
        ["GE would add", f"{gw - pw:+.2f}", f"{gc - pc:+.2f}"],
    ]))
    print(
        f"\nsummary: P4 all gates {g:.2f} s vs {h:.2f} s hand-written scan ({g / h:.2f}x; goal <= 2x: "
        f"{verdict(g / h <= 2)}; the same gates through GX {x / h:.1f}x); "
        f"definitions load imports great_expectations: {'yes' if ge_in_load else 'no'} "
        f"(goal: GE stays out of load: {verdict(not ge_in_load)}), it would add {gw - pw:+.2f} s wall / "
        f"{gc - pc:+.2f} s CPU per load ({time.monotonic() - started:.0f} s)"
    )


if __name__ == "__main__":
    os.environ.setdefault("GX_ANALYTICS_ENABLED", "false")
    main()
