"""The command platform gets the release id from the deploy and traffic steps: {release_id} in its
templates is the release that runs them (a fake kubectl records the argv)."""

from __future__ import annotations

import os
import stat
from pathlib import Path

from release_pipelines.resources.command_platform import CommandPlatform, CommandRunner

from release_pipelines.core.manifest import CommandDeploy, Deploy, Manifest, Platform, Service
from release_pipelines.core.planner import ServiceChange
from release_pipelines.steps.context import StepContext
from release_pipelines.steps.deploy import apply_deploy
from release_pipelines.steps.traffic import apply_weights
from tests.integration.test_command_platform import FAKE_KUBECTL


class Book:
    def __init__(self) -> None:
        self.events: list[tuple[str, str]] = []

    def record(self, release_id, kind, actor, run_id=None, payload=None) -> None:
        self.events.append((release_id, kind))


def test_deploy_and_weight_commands_carry_the_release_id(tmp_path: Path) -> None:
    kubectl = tmp_path / "kubectl"
    kubectl.write_text(FAKE_KUBECTL)
    kubectl.chmod(kubectl.stat().st_mode | stat.S_IEXEC)
    k = str(kubectl)
    commands = CommandDeploy(
        deploy=[k, "set", "image", "{service}", "app:{version}", "--annotate=release={release_id}"],
        set_weight=[k, "set-weight", "{service}", "{weight}", "--annotate=release={release_id}"],
        promote=[k, "promote", "{service}"],
        abort=[k, "abort", "{service}"],
    )
    manifest = Manifest(product="shop", platform=Platform.command,
                        services=[Service(name="catalog", deploy=Deploy(command=commands))])
    runner = CommandRunner(env=os.environ | {"CALLS": str(tmp_path / "calls.txt")})
    platform = CommandPlatform(manifest, runner, state_file=tmp_path / "state.json")  # no release id given here
    product = type("P", (), {"name": "shop", "manifest": manifest})()

    first = StepContext(product=product, ledger=Book(), release_id="shop-1", actor="t", log=lambda _m: None)
    apply_deploy(first, platform, ServiceChange("catalog", "1.0.0", None))
    ctx = StepContext(product=product, ledger=Book(), release_id="shop-2", actor="t", log=lambda _m: None)
    apply_deploy(ctx, platform, ServiceChange("catalog", "1.1.0", "1.0.0"))
    apply_weights(ctx, platform, {"catalog": 25}, 0)
    calls = (tmp_path / "calls.txt").read_text().splitlines()
    assert calls == [
        "set image catalog app:1.0.0 --annotate=release=shop-1",
        "set image catalog app:1.1.0 --annotate=release=shop-2",
        "set-weight catalog 25 --annotate=release=shop-2",
    ]
