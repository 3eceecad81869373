"""Shared helpers for the benchmarks: machine line, medians, tables, scratch databases, manifests.

Every benchmark prints the machine it ran on, a small table of medians over several runs, and a
one-line summary with its goal and `pass` / `MISS`. Nothing here asserts on time.
"""

from __future__ import annotations

import contextlib
import os
import platform
import statistics
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
POSTGRES_URL = os.environ.get(
    "RELEASE_BENCH_POSTGRES_URL", "postgresql+psycopg2://postgres@127.0.0.1:5432/postgres"
)


def machine() -> str:
    load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    return (f"machine: {platform.machine()}, {os.cpu_count()} CPUs, Python {platform.python_version()}; "
            f"load average at start {load} (the machine is shared)")


def median(values: Sequence[float]) -> float:
    return statistics.median(values)


def percentile(values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..100) of a non-empty sequence."""
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    rank = max(1, min(len(ordered), round(q / 100 * len(ordered) + 0.5)))
    return ordered[rank - 1]


def timed(fn: Callable[[], object]) -> float:
    """Seconds one call of `fn` takes (monotonic clock)."""
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def table(headers: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    cells = [[str(h) for h in headers]] + [[str(c) for c in row] for row in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]
    lines = [" | ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths))) for r in cells]
    lines.insert(1, "-+-".join("-" * w for w in widths))
    return "\n".join(lines)


def verdict(ok: bool) -> str:
    return "pass" if ok else "MISS"


def fresh_python(code: str, env: dict[str, str] | None = None) -> float:
    """Wall seconds of `python -c code` in a fresh interpreter (imports included)."""
    start = time.perf_counter()
    subprocess.run([sys.executable, "-c", code], cwd=ROOT, env={**os.environ, **(env or {})}, check=True,
                   stdout=subprocess.DEVNULL)
    return time.perf_counter() - start


def fresh_python_inner(code: str, env: dict[str, str] | None = None) -> tuple[float, float]:
    """(whole process seconds, seconds of `code` itself) in a fresh interpreter."""
    wrapper = (
        "import time as _t; _s = _t.perf_counter()\n" + code + "\nprint(_t.perf_counter() - _s)"
    )
    start = time.perf_counter()
    out = subprocess.run([sys.executable, "-c", wrapper], cwd=ROOT, env={**os.environ, **(env or {})},
                         check=True, capture_output=True, text=True).stdout
    return time.perf_counter() - start, float(out.strip().splitlines()[-1])


# ------------------------------------------------------------------ PostgreSQL scratch databases


@contextlib.contextmanager
def scratch_database(prefix: str) -> Iterator[str]:
    """A new empty PostgreSQL database for one benchmark; dropped afterwards. Yields its URL."""
    from sqlalchemy import create_engine, text
    from sqlalchemy.engine import make_url

    name = f"bench_{prefix}_{uuid.uuid4().hex[:8]}"
    admin = create_engine(POSTGRES_URL, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    url = make_url(POSTGRES_URL).set(database=name).render_as_string(hide_password=False)
    try:
        yield url
    finally:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


# ------------------------------------------------------------------ manifests


def command_service(name: str, depends_on: Sequence[str]) -> str:
    """A `platform: command` service whose every operation runs /bin/true."""
    deps = ", ".join(depends_on)
    return (
        f"  - name: {name}\n"
        f"    depends_on: [{deps}]\n"
        "    deploy:\n"
        "      command:\n"
        '        deploy: ["/bin/true", "{service}", "{version}"]\n'
        '        set_weight: ["/bin/true", "{service}", "{weight}"]\n'
        '        promote: ["/bin/true", "{service}"]\n'
        '        abort: ["/bin/true", "{service}"]\n'
    )


def tree_parents(count: int, fanout: int = 3) -> list[list[int]]:
    """Service i depends on service (i - 1) // fanout: a tree of `count` nodes (depth ~log_3 n)."""
    return [[] if i == 0 else [(i - 1) // fanout] for i in range(count)]


def write_command_manifest(directory: Path, product: str, count: int, shape: str = "tree", prefix: str = "s") -> Path:
    """A manifest of `count` no-op services named `<prefix>000`...: `tree` (fan-out 3) or `chain`
    (each needs the last); products of one code location need different prefixes."""
    directory.mkdir(parents=True, exist_ok=True)
    if shape == "chain":
        parents = [[] if i == 0 else [i - 1] for i in range(count)]
    else:
        parents = tree_parents(count)
    lines = [f"product: {product}\n", "platform: command\n", "services:\n"]
    for i in range(count):
        lines.append(command_service(f"{prefix}{i:03d}", [f"{prefix}{p:03d}" for p in parents[i]]))
    path = directory / "release.yaml"
    path.write_text("".join(lines))
    return path


def print_header(title: str, details: str = "") -> None:
    print(f"{title}\n{machine()}" + (f"\n{details}" if details else ""))
