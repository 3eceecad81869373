"""The deployment platform protocol: what a release needs from wherever services run.

Plain Python, no Dagster: the ops pass `context.log.info` as `log`, tests pass `print` or a list's
`append`. Implementations: `local_platform.LocalPlatform` (processes behind a weighted router)
and `command_platform.CommandPlatform` (helm / kubectl / argo-rollouts argv templates).

Every operation is idempotent, because Dagster may retry an op or a run may be restarted half-way:
deploying the version that already runs, aborting with no canary, or promoting twice is harmless.
Platform state lives in a locked JSON file (`StateFile`), never only in one process's memory.
"""

from __future__ import annotations

import fcntl
import json
import os
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

from release_pipelines.core.errors import ReleaseError
from release_pipelines.core.planner import VERSION_PATTERN as PLANNER_VERSION_PATTERN

Log = Callable[[str], None]

# Versions end up in argv, file names and URLs: letters, digits, ".", "_", "+", "-", and never a
# leading "-" (that would read as an option to helm or kubectl).
VERSION_PATTERN = PLANNER_VERSION_PATTERN.pattern  # one rule for versions, from the planner


def quiet(_message: str) -> None:
    """The default `log`: say nothing."""


class DeployError(ReleaseError):
    """A platform operation failed; the message names service, version and what to do next."""


class StateError(ReleaseError):
    """A shared state file cannot be read."""


@dataclass(frozen=True)
class ServiceStatus:
    """Where one service stands: which versions run and how traffic is split between them."""

    service: str
    stable_version: str | None
    canary_version: str | None
    canary_weight: int
    healthy: bool
    endpoint: str | None = None
    detail: str = ""


@dataclass(frozen=True)
class VersionInfo:
    """One running (or recorded but dead) version of a service."""

    service: str
    version: str
    role: str  # "stable" or "canary"
    alive: bool
    pid: int | None = None
    port: int | None = None


@dataclass(frozen=True)
class HealthResult:
    service: str
    version: str
    healthy: bool
    detail: str


@runtime_checkable
class DeploymentPlatform(Protocol):
    """Canary deployments of one product's services."""

    def deploy_canary(self, service: str, version: str, log: Log = quiet, release_id: str | None = None) -> ServiceStatus:
        """Start `version` next to stable at 0 % traffic; with no stable yet, install it as stable
        with 100 % traffic (first install). Raises DeployError if it does not become healthy.
        `release_id` (optional) is the correlation id: requests the canary serves carry it."""
        ...

    def set_weight(self, service: str, weight: int, log: Log = quiet, release_id: str | None = None) -> ServiceStatus:
        """Send `weight` percent (0-100) of requests to the canary (`release_id`: see deploy_canary)."""
        ...

    def promote(self, service: str, log: Log = quiet) -> ServiceStatus:
        """The canary becomes stable with all traffic; the old stable stops after draining."""
        ...

    def abort(self, service: str, log: Log = quiet) -> ServiceStatus:
        """All traffic to stable and the canary stopped; harmless when there is no canary."""
        ...

    def health_check(self, service: str, version: str, log: Log = quiet) -> HealthResult:
        ...

    def status(self, service: str) -> ServiceStatus:
        ...

    def list_versions(self) -> list[VersionInfo]:
        ...

    def stop_all(self, log: Log = quiet) -> None:
        ...


class StateFile:
    """A JSON document shared by every process that manages the same product.

    Writers hold an exclusive `fcntl` lock on a side file for the whole read-modify-write, so two
    Dagster runs cannot interleave; the document is replaced by rename, so lock-free readers
    (status pages, the router at start-up) always see a whole document.
    """

    def __init__(self, path: str | Path, label: str = "platform state"):
        self.path = Path(path)
        self.label = label
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock_path = self.path.with_name(self.path.name + ".lock")

    def read(self) -> dict[str, Any]:
        try:
            return json.loads(self.path.read_text())
        except FileNotFoundError:
            return {}
        except json.JSONDecodeError as exc:
            raise StateError(
                f"{self.label} file {self.path} is not valid JSON ({exc}); fix it, or delete it to start afresh"
            ) from None

    @contextmanager
    def update(self) -> Iterator[dict[str, Any]]:
        """Lock, yield the document for in-place changes, write it back atomically on success."""
        with open(self._lock_path, "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                document = self.read()
                yield document
                self._write(document)
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)

    def save(self, document: dict[str, Any]) -> None:
        """Write the document now, inside an `update()` that is not finished yet (a checkpoint)."""
        self._write(document)

    def _write(self, document: dict[str, Any]) -> None:
        fd, tmp = tempfile.mkstemp(dir=self.path.parent, prefix=self.path.name + ".")
        try:
            with os.fdopen(fd, "w") as handle:
                json.dump(document, handle, indent=2, sort_keys=True)
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(tmp, self.path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
