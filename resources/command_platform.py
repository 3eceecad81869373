"""The command platform: each operation runs the manifest's argv template (helm, kubectl,
kubectl-argo-rollouts ...), with no shell.

Every value substituted into a template is checked against a strict pattern before anything runs,
so a version such as `1.2.3; rm -rf /`, `$(id)` or `--set=x` is refused, not executed. What the
platform knows (stable and canary version, weight per service) is kept in a locked state file so
that later runs can fill `{stable_version}` and promote the right version.

The cluster owns readiness: the deploy command is expected to wait for it (e.g. `kubectl rollout
status`), so `health_check` reports what the commands established rather than probing pods.
"""

from __future__ import annotations

import os
import queue
import re
import signal
import subprocess
import threading
import time
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from release_pipelines.core.manifest import NAME_PATTERN, PLACEHOLDER, CommandDeploy, Manifest
from release_pipelines.resources.platform import (
    VERSION_PATTERN,
    DeployError,
    HealthResult,
    Log,
    ServiceStatus,
    StateFile,
    VersionInfo,
    quiet,
)

SAFE_VALUES: Mapping[str, str] = {
    "service": NAME_PATTERN,
    "product": NAME_PATTERN,
    "version": VERSION_PATTERN,
    "stable_version": VERSION_PATTERN,
    "weight": r"^(100|[1-9]?[0-9])$",
    "release_id": r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$",
}
TAIL_LINES = 20


class UnsafeValueError(DeployError):
    """A value for an argv placeholder failed its pattern; nothing was run."""


@dataclass(frozen=True)
class CommandResult:
    argv: list[str]
    exit_code: int
    tail: list[str]


class CommandRunner:
    """Runs one argv without a shell, streaming merged stdout/stderr lines to `log` as they come."""

    def __init__(self, env: Mapping[str, str] | None = None, cwd: str | Path | None = None):
        self.env = dict(env) if env is not None else None
        self.cwd = cwd

    def run(self, argv: list[str], timeout: float, log: Log = quiet) -> CommandResult:
        try:
            child = subprocess.Popen(
                argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                env=self.env, cwd=self.cwd, start_new_session=True, text=True, errors="replace",
            )
        except OSError as exc:
            raise DeployError(f"cannot run {argv[0]!r}: {exc}; is it installed and on PATH?") from None
        lines: queue.Queue[str | None] = queue.Queue()
        threading.Thread(target=_pump, args=(child, lines), daemon=True).start()
        tail: deque[str] = deque(maxlen=TAIL_LINES)
        deadline = time.monotonic() + timeout
        while (remaining := deadline - time.monotonic()) > 0:
            try:
                line = lines.get(timeout=remaining)
            except queue.Empty:
                break
            if line is None:
                return CommandResult(argv, child.wait(), list(tail))
            tail.append(line)
            log(f"{Path(argv[0]).name}: {line}")
        os.killpg(child.pid, signal.SIGKILL)
        child.wait()
        raise DeployError(
            f"`{' '.join(argv)}` did not finish within {timeout:g} s and was killed; last output:\n"
            + "\n".join(tail)
        )


def _pump(child: subprocess.Popen[str], lines: queue.Queue[str | None]) -> None:
    assert child.stdout is not None
    for line in child.stdout:
        lines.put(line.rstrip("\n"))
    lines.put(None)


class CommandPlatform:
    """Deploys by running the manifest's `deploy.command` templates; see the module docstring."""

    def __init__(
        self,
        manifest: Manifest,
        runner: CommandRunner | None = None,
        *,
        state_file: str | Path,
        release_id: str = "",
    ):
        self.manifest = manifest
        self.runner = runner or CommandRunner()
        self.state = StateFile(state_file)
        self.release_id = release_id

    def deploy_canary(self, service: str, version: str, log: Log = quiet, release_id: str | None = None) -> ServiceStatus:
        """`release_id` (optional) fills {release_id} in the templates for this call (correlation)."""
        with self.state.update() as doc:
            entry = _entry(doc, service)
            if version in (entry["stable"], entry["canary"]):
                log(f"{service} {version} is already deployed; nothing to do")
                return _status(service, entry)
            if entry["canary"]:
                raise DeployError(
                    f"{service}: canary {entry['canary']} is deployed; promote or abort it before deploying {version}"
                )
            self._run(service, "deploy", log, version=version, stable_version=entry["stable"],
                      **({"release_id": release_id} if release_id else {}))
            if entry["stable"] is None:
                entry["stable"] = version
                log(f"{service} {version} installed as stable (first install)")
            else:
                entry.update(canary=version, weight=0)
                log(f"{service} {version} deployed as canary next to {entry['stable']}")
            return _status(service, entry)

    def set_weight(self, service: str, weight: int, log: Log = quiet, release_id: str | None = None) -> ServiceStatus:
        with self.state.update() as doc:
            entry = _entry(doc, service)
            if entry["canary"] is None:
                raise DeployError(f"{service} has no canary to send {weight} % to; deploy one first")
            self._run(service, "set_weight", log, version=entry["canary"],
                      stable_version=entry["stable"], weight=str(weight),
                      **({"release_id": release_id} if release_id else {}))
            entry["weight"] = weight
            return _status(service, entry)

    def promote(self, service: str, log: Log = quiet) -> ServiceStatus:
        with self.state.update() as doc:
            entry = _entry(doc, service)
            if entry["canary"] is None:
                log(f"{service}: no canary to promote; stable is {entry['stable']}")
                return _status(service, entry)
            self._run(service, "promote", log, version=entry["canary"], stable_version=entry["stable"])
            entry.update(stable=entry["canary"], canary=None, weight=0)
            return _status(service, entry)

    def abort(self, service: str, log: Log = quiet) -> ServiceStatus:
        with self.state.update() as doc:
            entry = _entry(doc, service)
            if entry["canary"] is None:
                log(f"{service}: no canary to abort")
                return _status(service, entry)
            self._run(service, "abort", log, version=entry["canary"], stable_version=entry["stable"])
            entry.update(canary=None, weight=0)
            return _status(service, entry)

    def health_check(self, service: str, version: str, log: Log = quiet) -> HealthResult:
        entry = self.state.read().get("services", {}).get(service, {})
        deployed = version in (entry.get("stable"), entry.get("canary"))
        detail = "its deploy command succeeded" if deployed else "it was not deployed by this platform"
        return HealthResult(service, version, deployed, f"{service} {version}: {detail}")

    def status(self, service: str) -> ServiceStatus:
        return _status(service, _entry(self.state.read(), service))

    def list_versions(self) -> list[VersionInfo]:
        return [
            VersionInfo(service, entry[role], role, alive=True)
            for service, entry in sorted(self.state.read().get("services", {}).items())
            for role in ("stable", "canary")
            if entry.get(role)
        ]

    def stop_all(self, log: Log = quiet) -> None:
        """Abort every canary; stable workloads belong to the cluster and keep running."""
        for service in self.state.read().get("services", {}):
            self.abort(service, log)

    def command(self, service: str, operation: str, **values: str | None) -> list[str]:
        """The argv `operation` would run, every value checked; raises UnsafeValueError."""
        template: list[str] = getattr(self._commands(service), operation)
        values = {"service": service, "product": self.manifest.product, "release_id": self.release_id} | values
        needed = {name for arg in template for name in PLACEHOLDER.findall(arg)}
        for name in sorted(needed):
            value = values.get(name)
            if not value:
                raise UnsafeValueError(
                    f"{service} {operation}: the template needs {{{name}}} but there is no value for it"
                    + (" (no stable version is known yet)" if name == "stable_version" else "")
                )
            if not re.fullmatch(SAFE_VALUES[name], value):  # `$` alone lets a trailing newline in
                raise UnsafeValueError(
                    f"{service} {operation}: refusing {{{name}}} = {value!r}; it must match "
                    f"{SAFE_VALUES[name]} (no spaces, quotes, shell characters or leading '-'). Nothing was run."
                )
        return [PLACEHOLDER.sub(lambda m: str(values[m.group(1)]), arg) for arg in template]

    def _commands(self, service: str) -> CommandDeploy:
        spec = next((s for s in self.manifest.services if s.name == service), None)
        if spec is None or spec.deploy.command is None:
            raise DeployError(f"{service!r} has no deploy.command block in the manifest")
        return spec.deploy.command

    def _run(self, service: str, operation: str, log: Log, **values: str | None) -> None:
        argv = self.command(service, operation, **values)
        log(f"running: {' '.join(argv)}")
        result = self.runner.run(argv, self._commands(service).timeout_seconds, log)
        if result.exit_code != 0:
            raise DeployError(
                f"{service} {operation} failed: `{' '.join(argv)}` exited with code {result.exit_code}; "
                "last output:\n" + ("\n".join(result.tail) or "(none)")
            )


def _entry(doc: dict, service: str) -> dict:
    entry = doc.setdefault("services", {}).setdefault(service, {})
    for key, default in (("stable", None), ("canary", None), ("weight", 0)):
        entry.setdefault(key, default)
    return entry


def _status(service: str, entry: dict) -> ServiceStatus:
    return ServiceStatus(
        service, entry["stable"], entry["canary"], entry["weight"], healthy=entry["stable"] is not None
    )
