"""Run every benchmark, one after the other, each in its own interpreter.

    python -m benchmarks.run_all [--quick]      (`make bench` runs it without --quick)

Each benchmark prints its machine line, a table of medians and a one-line summary with its goal
and pass / MISS; this prints the summaries again at the end. Nothing here asserts on time.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time

from benchmarks.common import ROOT, machine

BENCHMARKS = ("orchestration_overhead", "online_migration", "load_p99_sources", "gate_cost", "sensor_tick",
              "judge_quality", "time_to_safety")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="every benchmark in its --quick mode")
    parser.add_argument("--only", nargs="*", choices=BENCHMARKS, help="run only these")
    args = parser.parse_args()
    print(machine())
    summaries: list[str] = []
    failed: list[str] = []
    started = time.monotonic()
    for name in args.only or BENCHMARKS:
        command = [sys.executable, "-m", f"benchmarks.{name}"] + (["--quick"] if args.quick else [])
        print(f"\n$ {' '.join(['python', *command[1:]])}", flush=True)
        process = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.PIPE, text=True)
        summary = ""
        assert process.stdout is not None
        for line in process.stdout:
            print(line, end="", flush=True)
            if line.startswith("summary:") or (line.strip() and not summary.startswith("summary:")):
                summary = line.strip()
        if process.wait() != 0:
            failed.append(name)
            summary = f"exited with code {process.returncode}"
        summaries.append(f"{name}: {summary or '(no summary line)'}")
    print(f"\n== summaries ({time.monotonic() - started:.0f} s)")
    print("\n".join(summaries))
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
