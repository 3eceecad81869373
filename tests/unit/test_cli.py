"""The `release` command: exit codes, messages, no tracebacks."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from release_pipelines.cli.main import main

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = str(ROOT / "examples" / "shop" / "release.yaml")
BROKEN = sorted((ROOT / "examples" / "broken").glob("*.yaml"))


@pytest.fixture
def cli(monkeypatch, tmp_path):
    monkeypatch.setenv("RELEASE_HOME", str(tmp_path))
    monkeypatch.delenv("RELEASE_LEDGER_URL", raising=False)
    runner = CliRunner()
    return lambda *args: runner.invoke(main, list(args))


def test_validate_example(cli) -> None:
    result = cli("validate", EXAMPLE)
    assert result.exit_code == 0, result.output
    assert "product shop" in result.output


@pytest.mark.parametrize("path", BROKEN, ids=lambda p: p.stem)
def test_validate_broken_manifests_exit_2_with_located_problems(cli, path: Path) -> None:
    result = cli("validate", str(path))
    assert result.exit_code == 2
    assert f"{path.name}:" in result.output and "problem" in result.output
    assert "Traceback" not in result.output


def test_plan_prints_waves_and_rollback_order(cli) -> None:
    result = cli("plan", EXAMPLE, "--version", "orders=1.1.0", "--version", "catalog=1.1.0",
                 "--current", "orders=1.0.0", "--current", "catalog=1.0.0")
    assert result.exit_code == 0, result.output
    assert "shop_db" in result.output and "rollback order: orders -> catalog -> shop_db" in result.output


def test_plan_json_reads_current_versions_from_the_ledger(cli) -> None:
    result = cli("plan", EXAMPLE, "--version", "frontend=2.0.0", "--format", "json")
    assert result.exit_code == 0, result.output
    plan = json.loads(result.output)
    assert plan["waves"] == [[{"kind": "deploy", "target": "frontend", "from": None, "to": "2.0.0"}]]


@pytest.mark.parametrize(
    ("args", "fragment"),
    [
        (["--version", "ordrs=1.0"], "did you mean 'orders'"),
        (["--version", "orders"], "expected SERVICE=VERSION"),
        (["--version", "orders=1;rm -rf /"], "is not allowed"),
        (["--version", "catalog=3.0.0", "--current", "catalog=1.0.0"], "incompatible: orders requires catalog-api"),
    ],
)
def test_plan_bad_input_exit_2(cli, args, fragment) -> None:
    result = cli("plan", EXAMPLE, *args)
    assert result.exit_code == 2
    assert fragment in result.output
    assert "Traceback" not in result.output


def test_schema_is_json_schema(cli) -> None:
    result = cli("schema")
    schema = json.loads(result.output)
    assert schema["title"] == "Manifest" and "services" in schema["properties"]


def test_history_and_verify_on_an_empty_ledger(cli) -> None:
    assert "no releases recorded yet" in cli("history").output
    result = cli("verify-ledger")
    assert result.exit_code == 0 and "0 events" in result.output


def test_console_script_installed() -> None:
    result = subprocess.run([str(Path(sys.executable).with_name("release")), "validate", str(BROKEN[0])],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 2
    assert "Traceback" not in result.stderr + result.stdout
