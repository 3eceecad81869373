"""`release judge`: the canary judge on two files, offline; prints the verdict as JSON.

File formats (one observation per line, arrival order; `#` starts a comment):
- errors: `requests errors` per time interval; line i of both files is the same interval.
- latency: one latency in ms per line. A blank line ends a look. Without blank lines each file
  is cut into `--looks` equal consecutive parts, matched by position, which assumes both sides
  were recorded over the same period at a steady rate.
- memory / cpu: one sample per line.

Exit 0 whatever the verdict; 2 with `file:line: problem` on bad input, never a traceback.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import click
import numpy as np

from release_pipelines.cli.common import EXIT_BAD_INPUT
from release_pipelines.core.judge import MetricVerdict, judge_resource
from release_pipelines.core.judge_errors import Bucket, judge_errors
from release_pipelines.core.judge_latency import LatencyLook, judge_latency
from release_pipelines.core.manifest import Direction, MetricKind


class BadInput(Exception):
    """A problem in an input file, already phrased as `file:line: message`."""


def _lines(path: Path) -> list[tuple[int, str]]:
    """(line number, text without comment) for every line, blank ones included."""
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise BadInput(f"{path}: not UTF-8 text ({exc.reason} at byte {exc.start})") from None
    except OSError as exc:
        raise BadInput(f"{path}: cannot read ({exc.strerror})") from None
    return [(n, line.split("#", 1)[0].strip()) for n, line in enumerate(text.splitlines(), 1)]


def _number(path: Path, line: int, text: str, what: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise BadInput(f"{path}:{line}: expected {what}, got {text!r}") from None
    if not np.isfinite(value) or value < 0:
        raise BadInput(f"{path}:{line}: expected {what} >= 0, got {text!r}")
    return value


def read_buckets(path: Path) -> list[Bucket]:
    """Error buckets: `requests errors`, two integers with errors <= requests."""
    buckets = []
    for line, text in _lines(path):
        if not text:
            continue
        fields = text.split()
        if len(fields) != 2 or not all(f.isdigit() for f in fields):
            raise BadInput(f"{path}:{line}: expected two integers `requests errors`, got {text!r}")
        requests, errors = int(fields[0]), int(fields[1])
        if errors > requests:
            raise BadInput(f"{path}:{line}: {errors} errors out of {requests} requests")
        buckets.append(Bucket(requests, errors))
    return buckets


def read_looks(path: Path) -> list[list[float]]:
    """Latency samples grouped into looks by blank lines (one group if there are none)."""
    looks: list[list[float]] = [[]]
    for line, text in _lines(path):
        if not text:
            if looks[-1]:
                looks.append([])
            continue
        looks[-1].append(_number(path, line, text, "a latency in ms"))
    return [look for look in looks if look]


def read_samples(path: Path) -> list[float]:
    return [_number(path, line, text, "a sample") for line, text in _lines(path) if text]


def _split(samples: list[float], parts: int) -> list[list[float]]:
    return [list(chunk) for chunk in np.array_split(np.asarray(samples, float), parts)]


def judge_files(baseline: Path, canary: Path, *, kind: MetricKind, direction: Direction,
                alpha: float, looks: int, tolerance: float | None = None) -> MetricVerdict:
    """Read both files and judge them; raises BadInput naming the file and line.

    `tolerance` (None: the judge's default for the kind) is the relative change that matters."""
    options = {} if tolerance is None else {"tolerance": tolerance}
    if kind is MetricKind.errors:
        base, can = read_buckets(baseline), read_buckets(canary)
        if len(base) != len(can):
            raise BadInput(f"{baseline} has {len(base)} intervals but {canary} has {len(can)}: "
                           "line i of both files must be the same time interval")
        return judge_errors(base, can, direction=direction, alpha=alpha, **options)
    if kind is MetricKind.latency:
        base_looks, can_looks = read_looks(baseline), read_looks(canary)
        if len(base_looks) == len(can_looks) == 1:
            base_looks, can_looks = _split(base_looks[0], looks), _split(can_looks[0], looks)
        elif len(base_looks) != len(can_looks):
            raise BadInput(f"{baseline} has {len(base_looks)} looks but {canary} has "
                           f"{len(can_looks)} (looks are separated by blank lines)")
        return judge_latency([LatencyLook(b, c) for b, c in zip(base_looks, can_looks)],
                             direction=direction, alpha=alpha, **options)
    return judge_resource(read_samples(baseline), read_samples(canary), name=kind.value,
                          kind=kind, direction=direction, alpha=alpha, **options)


@click.command("judge")
@click.option("--baseline", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              required=True, help="baseline observations, one per line")
@click.option("--canary", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              required=True, help="canary observations, one per line")
@click.option("--kind", type=click.Choice([k.value for k in MetricKind]), required=True)
@click.option("--direction", type=click.Choice([d.value for d in Direction]),
              default=Direction.increase.value, show_default=True,
              help="which change is a regression")
@click.option("--alpha", type=click.FloatRange(0, 0.5, min_open=True, max_open=True),
              default=0.05, show_default=True, help="false-fail rate bound")
@click.option("--looks", type=click.IntRange(1, 10_000), default=10, show_default=True,
              help="latency files without blank lines: parts to cut each file into")
@click.option("--tolerance", type=click.FloatRange(1, 10, min_open=True), default=None,
              help="relative change that matters (latency: 1.1 = 10 % slower); judge default if unset")
def judge_command(baseline: Path, canary: Path, kind: str, direction: str, alpha: float,
                  looks: int, tolerance: float | None) -> None:
    """Judge a canary against its baseline from two files; prints the verdict as JSON."""
    try:
        verdict = judge_files(baseline, canary, kind=MetricKind(kind), direction=Direction(direction),
                              alpha=alpha, looks=looks, tolerance=tolerance)
    except BadInput as exc:
        click.echo(f"error: {exc}", err=True)
        sys.exit(EXIT_BAD_INPUT)
    result = verdict.to_dict()
    click.echo(json.dumps({"verdict": result.pop("verdict"), **result}, indent=2))
