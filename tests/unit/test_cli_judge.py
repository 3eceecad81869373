"""`release judge` on small files: JSON verdicts, exit 0 on any verdict, clear bad-input errors."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from release_pipelines.cli.judge import judge_command


def run(tmp_path: Path, baseline: str, canary: str, *args: str):
    (tmp_path / "baseline.txt").write_text(baseline)
    (tmp_path / "canary.txt").write_text(canary)
    return CliRunner().invoke(judge_command, [
        "--baseline", str(tmp_path / "baseline.txt"), "--canary", str(tmp_path / "canary.txt"),
        *args,
    ])


def buckets(requests: int, errors: int, count: int) -> str:
    return "# requests errors\n" + f"{requests} {errors}\n" * count


def test_error_regression_prints_a_fail_verdict_with_evidence(tmp_path):
    result = run(tmp_path, buckets(200, 1, 30), buckets(200, 10, 30), "--kind", "errors")
    assert result.exit_code == 0, result.output
    data = json.loads(result.output)
    assert data["verdict"] == "fail"
    assert data["effect"] == pytest.approx(10.0)
    assert data["baseline_n"] == data["canary_n"] == 6000
    assert data["e_value"] > 20 and "regression" in data["reason"]


@pytest.mark.parametrize(
    ("direction", "expected"), [("increase", "pass"), ("decrease", "fail"), ("either", "fail")]
)
def test_direction_option(tmp_path, direction, expected):
    result = run(tmp_path, buckets(1000, 40, 60), buckets(1000, 10, 60), "--kind", "errors",
                 "--direction", direction)
    assert result.exit_code == 0, result.output
    assert json.loads(result.output)["verdict"] == expected


def test_too_little_data_is_inconclusive_and_exits_0(tmp_path):
    result = run(tmp_path, buckets(10, 0, 2), buckets(10, 0, 2), "--kind", "errors",
                 "--alpha", "0.01")
    assert result.exit_code == 0
    data = json.loads(result.output)
    assert data["verdict"] == "inconclusive" and data["alpha"] == 0.01


def test_latency_files_without_looks_are_cut_into_parts(tmp_path):
    rng = np.random.default_rng(7)
    base = "\n".join(f"{x:.1f}" for x in rng.lognormal(np.log(100), 0.5, 3000))
    slow = "\n".join(f"{x:.1f}" for x in 2 * rng.lognormal(np.log(100), 0.5, 3000))
    result = run(tmp_path, base, slow, "--kind", "latency")
    assert result.exit_code == 0, result.output
    data = json.loads(result.output)
    assert data["verdict"] == "fail" and "p95" in data["reason"]
    assert data["details"]["quantile_ratio"] == pytest.approx(2.0, rel=0.2)


def test_latency_looks_separated_by_blank_lines(tmp_path):
    look = "\n".join(["100", "120", "90", "300", "110"] * 10)
    result = run(tmp_path, f"{look}\n\n{look}\n", f"{look}\n\n{look}\n", "--kind", "latency")
    assert result.exit_code == 0, result.output
    data = json.loads(result.output)
    assert data["canary_n"] == data["baseline_n"] == 100  # every sample is judged: no warm-up look
    assert data["verdict"] == "pass"  # the same values on both sides: not 1.1x slower


def test_latency_tolerance_option(tmp_path):
    rng = np.random.default_rng(8)
    base = "\n".join(f"{x:.1f}" for x in rng.lognormal(np.log(100), 0.5, 3000))
    slower = "\n".join(f"{x:.1f}" for x in 1.15 * rng.lognormal(np.log(100), 0.5, 3000))
    strict = json.loads(run(tmp_path, base, slower, "--kind", "latency", "--tolerance", "1.05").output)
    loose = json.loads(run(tmp_path, base, slower, "--kind", "latency", "--tolerance", "1.3").output)
    assert (strict["verdict"], loose["verdict"]) == ("fail", "pass")
    assert "beyond 1.05x" in strict["reason"] and loose["details"]["tolerance"] == 1.3


def test_memory_twice_as_high_fails(tmp_path):
    result = run(tmp_path, "100\n102\n99\n", "200\n204\n198\n", "--kind", "memory")
    assert result.exit_code == 0, result.output
    assert json.loads(result.output)["verdict"] == "fail"


@pytest.mark.parametrize(
    ("kind", "baseline", "canary", "message"),
    [
        ("errors", "100 1\n100 oops\n", "100 1\n100 1\n", "baseline.txt:2: expected two integers"),
        ("errors", "100 1\n", "100 1 7\n", "canary.txt:1: expected two integers"),
        ("errors", "100 1\n", "5 9\n", "canary.txt:1: 9 errors out of 5 requests"),
        ("errors", "100 1\n100 1\n", "100 1\n", "has 2 intervals but"),
        ("latency", "12.5\n-3\n", "10\n", "baseline.txt:2: expected a latency in ms >= 0"),
        ("latency", "12.5\nnan\n", "10\n", "baseline.txt:2: expected a latency in ms >= 0"),
        ("latency", "1\n\n2\n", "1\n", "has 2 looks but"),
        ("cpu", "0.5\n", "fast\n", "canary.txt:1: expected a sample"),
    ],
)
def test_malformed_files_name_file_and_line_and_exit_2(tmp_path, kind, baseline, canary, message):
    result = run(tmp_path, baseline, canary, "--kind", kind)
    assert result.exit_code == 2
    assert message in result.output
    assert "Traceback" not in result.output


def test_binary_file_is_a_clear_error(tmp_path):
    (tmp_path / "baseline.txt").write_bytes(b"\xff\xfe\x00garbage")
    (tmp_path / "canary.txt").write_text("1 0\n")
    result = CliRunner().invoke(judge_command, [
        "--baseline", str(tmp_path / "baseline.txt"), "--canary", str(tmp_path / "canary.txt"),
        "--kind", "errors",
    ])
    assert result.exit_code == 2
    assert "baseline.txt: not UTF-8 text" in result.output


def test_missing_file_and_bad_alpha_are_usage_errors(tmp_path):
    (tmp_path / "c.txt").write_text("1 0\n")
    missing = CliRunner().invoke(judge_command, [
        "--baseline", str(tmp_path / "nope.txt"), "--canary", str(tmp_path / "c.txt"),
        "--kind", "errors"])
    assert missing.exit_code == 2 and "nope.txt" in missing.output
    bad_alpha = CliRunner().invoke(judge_command, [
        "--baseline", str(tmp_path / "c.txt"), "--canary", str(tmp_path / "c.txt"),
        "--kind", "errors", "--alpha", "0.7"])
    assert bad_alpha.exit_code == 2
