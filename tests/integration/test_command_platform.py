"""The command platform against a fake `kubectl`: a real script that records its argv."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest
from release_pipelines.resources.command_platform import (
    CommandPlatform,
    CommandRunner,
    UnsafeValueError,
)
from release_pipelines.resources.platform import DeployError, DeploymentPlatform

from release_pipelines.core.manifest import CommandDeploy, Deploy, Manifest, Platform, Service

FAKE_KUBECTL = """#!/bin/sh
# Records each call; FAIL_ON=<word> makes a call containing that word fail; SLEEP_ON likewise hangs.
echo "$*" >> "$CALLS"
echo "kubectl: $*"
case " $* " in *" $FAIL_ON "*) echo "error: rollout $2 not found" >&2; exit 7;; esac
case " $* " in *" $SLEEP_ON "*) sleep 30;; esac
exit 0
"""


def _manifest(kubectl: Path, timeout: float = 10) -> Manifest:
    k = str(kubectl)
    commands = CommandDeploy(
        deploy=[k, "argo", "rollouts", "set", "image", "{service}", "app=registry.example/{product}/{service}:{version}"],
        set_weight=[k, "argo", "rollouts", "set-weight", "{service}", "{weight}", "--canary={version}"],
        promote=[k, "argo", "rollouts", "promote", "{service}", "--from={stable_version}", "--to={version}"],
        abort=[k, "argo", "rollouts", "abort", "{service}", "--release={release_id}"],
        timeout_seconds=timeout,
    )
    return Manifest(
        product="shop", platform=Platform.command,
        services=[Service(name="catalog", deploy=Deploy(command=commands))],
    )


@pytest.fixture
def kubectl(tmp_path: Path) -> Path:
    script = tmp_path / "kubectl"
    script.write_text(FAKE_KUBECTL)
    script.chmod(script.stat().st_mode | stat.S_IEXEC)
    return script


def _platform(tmp_path: Path, kubectl: Path, timeout: float = 10, **env: str) -> CommandPlatform:
    runner = CommandRunner(env=os.environ | {"CALLS": str(tmp_path / "calls.txt")} | env)
    return CommandPlatform(
        _manifest(kubectl, timeout), runner, state_file=tmp_path / "state.json", release_id="rel-42"
    )


def _calls(tmp_path: Path) -> list[str]:
    path = tmp_path / "calls.txt"
    return path.read_text().splitlines() if path.exists() else []


def test_lifecycle_runs_templates_and_streams_output(tmp_path: Path, kubectl: Path) -> None:
    platform = _platform(tmp_path, kubectl)
    assert isinstance(platform, DeploymentPlatform)
    lines: list[str] = []
    assert platform.deploy_canary("catalog", "1.0.0", lines.append).stable_version == "1.0.0"
    status = platform.deploy_canary("catalog", "1.1.0+build.7", lines.append)
    assert (status.stable_version, status.canary_version) == ("1.0.0", "1.1.0+build.7")
    assert platform.deploy_canary("catalog", "1.1.0+build.7").canary_version == "1.1.0+build.7", "idempotent"
    assert platform.set_weight("catalog", 25, lines.append).canary_weight == 25

    # A later run (another process) knows the stable version to put into {stable_version}.
    later = _platform(tmp_path, kubectl)
    assert later.promote("catalog", lines.append).stable_version == "1.1.0+build.7"
    assert later.abort("catalog").canary_version is None, "abort without a canary runs nothing"
    assert later.health_check("catalog", "1.1.0+build.7").healthy
    assert [(v.version, v.role) for v in later.list_versions()] == [("1.1.0+build.7", "stable")]

    assert _calls(tmp_path) == [
        "argo rollouts set image catalog app=registry.example/shop/catalog:1.0.0",
        "argo rollouts set image catalog app=registry.example/shop/catalog:1.1.0+build.7",
        "argo rollouts set-weight catalog 25 --canary=1.1.0+build.7",
        "argo rollouts promote catalog --from=1.0.0 --to=1.1.0+build.7",
    ]
    assert "kubectl: kubectl: argo rollouts set-weight catalog 25 --canary=1.1.0+build.7" in lines
    assert any(line.startswith("running: ") for line in lines)


@pytest.mark.parametrize(
    "version",
    ["1.2.3; rm -rf /", "1.2 3", "$(id)", "1.2.3`id`", "'1.2.3'", '"1"', "--set=evil", "1.2.3|sh", "", "a" * 200],
)
def test_unsafe_values_are_refused_before_anything_runs(tmp_path: Path, kubectl: Path, version: str) -> None:
    with pytest.raises(UnsafeValueError, match="Nothing was run|no value"):
        _platform(tmp_path, kubectl).deploy_canary("catalog", version)
    assert _calls(tmp_path) == []


def test_weight_out_of_range_and_missing_stable_version_are_refused(tmp_path: Path, kubectl: Path) -> None:
    platform = _platform(tmp_path, kubectl)
    platform.deploy_canary("catalog", "1.0.0")
    platform.deploy_canary("catalog", "1.1.0")
    with pytest.raises(UnsafeValueError, match=r"\{weight\} = '150'"):
        platform.set_weight("catalog", 150)
    with pytest.raises(UnsafeValueError, match=r"needs \{stable_version\}.*no stable version"):
        platform.command("catalog", "promote", version="1.1.0", stable_version=None)
    assert platform.status("catalog").canary_weight == 0


def test_failing_command_names_command_exit_code_and_output(tmp_path: Path, kubectl: Path) -> None:
    platform = _platform(tmp_path, kubectl, FAIL_ON="set-weight")
    platform.deploy_canary("catalog", "1.0.0")
    platform.deploy_canary("catalog", "1.1.0")
    with pytest.raises(DeployError) as failure:
        platform.set_weight("catalog", 50)
    message = str(failure.value)
    assert "catalog set_weight failed" in message and "exited with code 7" in message
    assert "set-weight catalog 50" in message and "error: rollout rollouts not found" in message
    assert platform.status("catalog").canary_weight == 0, "a failed command changes no recorded state"


def test_hanging_command_is_killed_at_timeout(tmp_path: Path, kubectl: Path) -> None:
    platform = _platform(tmp_path, kubectl, timeout=0.5, SLEEP_ON="set")
    with pytest.raises(DeployError, match=r"did not finish within 0.5 s and was killed"):
        platform.deploy_canary("catalog", "1.0.0")
    assert platform.status("catalog").stable_version is None
