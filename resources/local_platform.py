"""The embedded platform: each service version is a local OS process behind a weighted router.

State (`<state_dir>/platform.json`) records every process with its pid, port and start time, so
each Dagster run, the CLI and the canary sensor manage the same processes, and a recycled pid is
not mistaken for our process. Liveness is always observed (psutil), never assumed.

Layout of one service entry:
    {"router": proc, "stable": proc | null, "canary": proc | null, "weight": 0-100, "retiring": [proc],
     "release_id": str | null}   (the release that deployed the canary; the router tags its requests)
    proc = {"version", "port", "pid", "started", "log"}

Services get `<DEPENDENCY>_URL` environment variables pointing at their dependencies' routers,
so `orders` reaches `catalog` through catalog's canary split.
"""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import time
from collections import deque
from pathlib import Path
from typing import Any

import httpx
import psutil

from release_pipelines.core.manifest import PLACEHOLDER, LocalDeploy, Manifest, Service
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
from release_pipelines.resources.router import Routing, tenant_routing

Proc = dict[str, Any]
STOP_GRACE_SECONDS = 5.0
ROUTER_START_SECONDS = 15.0


class LocalPlatform:
    """Processes behind routers on 127.0.0.1; see the module docstring for the state layout."""

    def __init__(
        self,
        manifest: Manifest,
        manifest_dir: str | Path,
        state_dir: str | Path,
        flags_file: str | Path | None = None,
    ):
        self.manifest = manifest
        self.manifest_dir = Path(manifest_dir).resolve()
        self.state_dir = Path(state_dir).resolve()
        self.flags_file = Path(flags_file) if flags_file else self.state_dir / "flags.json"
        self.state = StateFile(self.state_dir / "platform.json")
        self._children: dict[int, subprocess.Popen[bytes]] = {}

    # ------------------------------------------------------------ operations

    def deploy_canary(self, service: str, version: str, log: Log = quiet, release_id: str | None = None) -> ServiceStatus:
        spec = self._spec(service)
        if not re.fullmatch(VERSION_PATTERN, version):
            raise DeployError(f"{service}: {version!r} is not a valid version (letters, digits, . _ + -)")
        failure: DeployError | None = None
        with self.state.update() as doc:
            entry = self._entry(doc, service)
            self._ensure_router(doc, service, log)
            stable, canary = entry["stable"], entry["canary"]
            if stable and stable["version"] == version and self._alive(stable):
                log(f"{service} {version} is already the stable version; nothing to deploy")
                return self._status(service, doc)
            if canary and self._alive(canary):
                if canary["version"] == version:
                    log(f"{service} {version} already runs as canary; nothing to deploy")
                    return self._status(service, doc)
                raise DeployError(
                    f"{service}: canary {canary['version']} still runs; promote or abort it before "
                    f"deploying {version}"
                )
            first_install = not (stable and self._alive(stable))
            if first_install and stable:
                log(f"{service}: stable {stable['version']} is not running; installing {version} as stable")
            record = self._start_version(doc, spec, version, log)
            # Recorded before the health check: a run killed while probing leaves a process that
            # the next abort or stop_all still finds and stops, instead of an orphan.
            entry["retiring"].append(record)
            self.state.save(doc)
            health = self._probe(spec, record, log)
            entry["retiring"].remove(record)
            if first_install:
                if health.healthy:
                    self._stop([stable] if stable else [])
                    entry.update(stable=record, canary=None, weight=0)
                    log(f"{service} {version} installed as stable (first install) with 100 % traffic")
                else:
                    self._stop([record])
            else:
                entry.update(canary=record, weight=0, release_id=release_id)
                log(f"{service} {version} runs as canary next to {stable['version']} with 0 % traffic")
            if not health.healthy:
                advice = (
                    "It was stopped; nothing serves this service yet." if first_install
                    else "It gets no traffic; abort (or run the rollback job) to remove it."
                )
                failure = DeployError(
                    f"{service} {version} failed its health check. {advice} "
                    f"Fix the version and deploy again.\n{health.detail}"
                )
            else:
                self._push(service, entry, log)
            status = self._status(service, doc)
        if failure:
            raise failure
        return status

    def set_weight(self, service: str, weight: int, log: Log = quiet, release_id: str | None = None) -> ServiceStatus:
        self._spec(service)
        if not isinstance(weight, int) or not 0 <= weight <= 100:
            raise DeployError(f"{service}: canary weight must be an integer from 0 to 100, got {weight!r}")
        with self.state.update() as doc:
            entry = self._entry(doc, service)
            canary = entry["canary"]
            if canary is None and weight:
                raise DeployError(f"{service} has no canary to send {weight} % to; deploy one first")
            if canary is not None and not self._alive(canary):
                raise DeployError(
                    f"{service} canary {canary['version']} is not running (see {canary['log']}); abort it"
                )
            entry["weight"] = weight
            if release_id and canary is not None:
                entry["release_id"] = release_id
            self._ensure_router(doc, service, log)
            self._push(service, entry, log)
            log(f"{service}: {weight} % of traffic to canary {canary['version'] if canary else '-'}")
            return self._status(service, doc)

    def promote(self, service: str, log: Log = quiet) -> ServiceStatus:
        with self.state.update() as doc:
            entry = self._entry(doc, service)
            canary, old = entry["canary"], entry["stable"]
            if canary is None:
                log(f"{service}: no canary to promote; stable is {old['version'] if old else 'none'}")
                return self._status(service, doc)
            if not self._alive(canary):
                raise DeployError(
                    f"{service} canary {canary['version']} is not running (see {canary['log']}); "
                    "abort instead of promoting"
                )
            entry.update(stable=canary, canary=None, weight=0, release_id=None)
            self._retire(entry, old)
            self._ensure_router(doc, service, log)
            self._push(service, entry, log)
            log(f"{service} {canary['version']} is now stable with 100 % traffic")
        self._drain_and_stop(service, log)
        return self.status(service)

    def abort(self, service: str, log: Log = quiet) -> ServiceStatus:
        with self.state.update() as doc:
            entry = self._entry(doc, service)
            canary = entry["canary"]
            if canary is None:
                log(f"{service}: no canary to abort; all traffic already goes to stable")
                if not entry["retiring"]:
                    return self._status(service, doc)
            else:
                entry.update(canary=None, weight=0, release_id=None)
                self._retire(entry, canary)
                self._ensure_router(doc, service, log)
                self._push(service, entry, log)
                log(f"{service}: all traffic back to stable; canary {canary['version']} stops")
        self._drain_and_stop(service, log)
        return self.status(service)

    def health_check(self, service: str, version: str, log: Log = quiet) -> HealthResult:
        entry = self.state.read().get("services", {}).get(service, {})
        record = next((p for p in (entry.get("stable"), entry.get("canary")) if p and p["version"] == version), None)
        if record is None:
            return HealthResult(service, version, False, f"{service} {version} is not deployed")
        return self._probe(self._spec(service), record, log)

    def status(self, service: str) -> ServiceStatus:
        return self._status(service, self.state.read())

    def list_versions(self) -> list[VersionInfo]:
        versions = []
        for service, entry in sorted(self.state.read().get("services", {}).items()):
            for role in ("stable", "canary"):
                if proc := entry.get(role):
                    versions.append(
                        VersionInfo(service, proc["version"], role, self._alive(proc), proc["pid"], proc["port"])
                    )
        return versions

    def resource_usage(self, service: str) -> dict[str, tuple[float, float]]:
        """role -> (resident memory MB, CPU percent) of the service's live stable and canary processes.

        Memory is the RSS of the process and its children (the process group we started); CPU is
        the average since start (CPU seconds / wall seconds * 100, 100 = one core), so one call
        needs no sampling interval.
        """
        entry = self.state.read().get("services", {}).get(service, {})
        usage: dict[str, tuple[float, float]] = {}
        for role in ("stable", "canary"):
            proc = entry.get(role)
            if not proc or not self._alive(proc):
                continue
            try:
                process = psutil.Process(proc["pid"])
                family = [process, *process.children(recursive=True)]
                rss = cpu_seconds = 0.0
                for member in family:
                    try:
                        rss += member.memory_info().rss
                        times = member.cpu_times()
                        cpu_seconds += times.user + times.system
                    except (psutil.NoSuchProcess, psutil.AccessDenied):
                        continue
                wall = max(time.time() - process.create_time(), 1e-3)
            except (psutil.NoSuchProcess, psutil.AccessDenied):
                continue
            usage[role] = (rss / (1024 * 1024), 100.0 * cpu_seconds / wall)
        return usage

    def stop_all(self, log: Log = quiet) -> None:
        """Stop every router and version this state knows, and forget them."""
        with self.state.update() as doc:
            procs = [
                proc
                for entry in doc.get("services", {}).values()
                for proc in (entry.get("router"), entry.get("stable"), entry.get("canary"), entry.get("warm"),  # warm: blue-green standby
                             *entry.get("retiring", []))
                if proc
            ]
            self._stop(procs)
            doc["services"] = {}
            log(f"stopped {len(procs)} processes")

    def endpoint(self, service: str, log: Log = quiet) -> str:
        """The router URL clients use for `service` (starts the router if none runs)."""
        self._spec(service)
        with self.state.update() as doc:
            self._entry(doc, service)
            return f"http://127.0.0.1:{self._ensure_router(doc, service, log)}"

    # ------------------------------------------------------------ state helpers

    def _spec(self, service: str) -> Service:
        try:
            spec = self.manifest.service(service)
        except StopIteration:
            known = ", ".join(s.name for s in self.manifest.services)
            raise DeployError(f"unknown service {service!r} (the manifest has: {known})") from None
        if spec.deploy.local is None:
            raise DeployError(f"{service} has no deploy.local block in the manifest")
        return spec

    def _local(self, service: str) -> LocalDeploy:
        return self._spec(service).deploy.local  # type: ignore[return-value]  # _spec checked it

    @staticmethod
    def _entry(doc: dict[str, Any], service: str) -> dict[str, Any]:
        entry = doc.setdefault("services", {}).setdefault(service, {})
        for key, default in (("router", None), ("stable", None), ("canary", None), ("weight", 0), ("retiring", [])):
            entry.setdefault(key, default)
        return entry

    def _status(self, service: str, doc: dict[str, Any]) -> ServiceStatus:
        entry = doc.get("services", {}).get(service)
        if not entry:
            return ServiceStatus(service, None, None, 0, False, detail="not deployed")
        router, stable, canary = entry.get("router"), entry.get("stable"), entry.get("canary")
        problems = [
            f"{role} {proc.get('version', '')}".rstrip() + " is not running"
            for role, proc in (("router", router), ("stable", stable), ("canary", canary))
            if proc and not self._alive(proc)
        ]
        if stable is None:
            problems.append("no stable version")
        return ServiceStatus(
            service=service,
            stable_version=stable and stable["version"],
            canary_version=canary and canary["version"],
            canary_weight=entry.get("weight", 0),
            healthy=not problems,
            endpoint=router and f"http://127.0.0.1:{router['port']}",
            detail="; ".join(problems),
        )

    @staticmethod
    def _retire(entry: dict[str, Any], proc: Proc | None) -> None:
        if proc:
            entry["retiring"].append(proc)

    def _drain_and_stop(self, service: str, log: Log) -> None:
        """Let in-flight requests on retired versions finish, then stop them (outside the lock)."""
        drain = self._local(service).drain_seconds
        time.sleep(drain)
        with self.state.update() as doc:
            entry = self._entry(doc, service)
            for proc in entry["retiring"]:
                log(f"{service} {proc['version']} stopped after {drain:g} s drain")
            self._stop(entry["retiring"])
            entry["retiring"] = []

    # ------------------------------------------------------------ processes

    def _start_version(self, doc: dict[str, Any], spec: Service, version: str, log: Log) -> Proc:
        local = self._local(spec.name)
        port = _free_port()
        values = {
            "version": version, "port": str(port), "python": sys.executable, "service": spec.name,
            "flags_file": str(self.flags_file), "manifest_dir": str(self.manifest_dir),
        }
        argv = [PLACEHOLDER.sub(lambda m: values[m.group(1)], arg) for arg in local.command]
        env = dict(local.env)
        for dependency in spec.depends_on:
            if any(s.name == dependency for s in self.manifest.services):
                self._entry(doc, dependency)
                router_port = self._ensure_router(doc, dependency, log)
                env[f"{dependency.upper().replace('-', '_')}_URL"] = f"http://127.0.0.1:{router_port}"
        log(f"starting {spec.name} {version} on port {port}")
        return self._spawn(argv, env, f"{spec.name}-{version}-{port}.log") | {"version": version, "port": port}

    def _ensure_router(self, doc: dict[str, Any], service: str, log: Log) -> int:
        """Start the service's router unless it runs; it keeps its port across restarts."""
        entry = doc["services"][service]
        router = entry["router"]
        if router and self._alive(router):
            return router["port"]
        port = router["port"] if router else _free_port()
        argv = [
            sys.executable, "-m", "release_pipelines.resources.router", "--service", service, "--port", str(port),
            "--state-file", str(self.state.path),
        ]
        proc = self._spawn(argv, {}, f"{service}-router.log") | {"port": port}
        deadline = time.monotonic() + ROUTER_START_SECONDS
        while True:
            try:
                httpx.get(f"http://127.0.0.1:{port}/_router/state", timeout=1.0).raise_for_status()
                break
            except httpx.HTTPError:
                if not self._alive(proc) or time.monotonic() > deadline:
                    self._stop([proc])
                    raise DeployError(
                        f"the router for {service} did not start on port {port}: {self._why_dead(proc)}"
                    ) from None
                time.sleep(0.05)
        entry["router"] = proc
        log(f"router for {service} listens on http://127.0.0.1:{port}")
        self._push(service, entry, log)
        return port

    def _push(self, service: str, entry: dict[str, Any], log: Log) -> None:
        """Tell the router the routing recorded in `entry` (one atomic swap on its side)."""
        routing = Routing.from_json({"stable": entry["stable"], "canary": entry["canary"], "weight": entry["weight"],
                                     "release_id": entry.get("release_id") if entry["canary"] else None,
                                     **tenant_routing(self.manifest.service(service).canary, entry["canary"])})
        url = f"http://127.0.0.1:{entry['router']['port']}/_router/route"
        try:
            httpx.post(url, json=routing.to_json(), timeout=5.0).raise_for_status()
        except httpx.HTTPError as exc:
            raise DeployError(f"could not update the router for {service} at {url}: {exc}") from None

    def _spawn(self, argv: list[str], extra_env: dict[str, str], log_name: str) -> Proc:
        log_path = self.state_dir / "logs" / log_name
        log_path.parent.mkdir(parents=True, exist_ok=True)
        env = os.environ | extra_env | {"PYTHONUNBUFFERED": "1"}
        with open(log_path, "ab") as out:
            try:
                child = subprocess.Popen(
                    argv, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT, env=env,
                    start_new_session=True, cwd=self.manifest_dir,
                )
            except OSError as exc:
                raise DeployError(f"cannot start {argv[0]!r}: {exc}; check the manifest's command") from None
        self._children[child.pid] = child
        try:
            started = psutil.Process(child.pid).create_time()
        except psutil.NoSuchProcess:
            started = 0.0
        return {"pid": child.pid, "started": started, "log": str(log_path)}

    def _alive(self, proc: Proc) -> bool:
        """Running, and the same process we started (a reused pid has another start time)."""
        child = self._children.get(proc["pid"])
        if child is not None and child.poll() is not None:
            return False
        try:
            process = psutil.Process(proc["pid"])
            return (
                abs(process.create_time() - proc["started"]) < 0.05
                and process.status() != psutil.STATUS_ZOMBIE
            )
        except psutil.NoSuchProcess:
            return False

    def _why_dead(self, proc: Proc) -> str:
        child = self._children.get(proc["pid"])
        code = child.poll() if child is not None else None
        exit_text = f"exited with code {code}" if code is not None else "is not running"
        return f"{exit_text}; last lines of {proc['log']}:\n{_tail(proc['log'])}"

    def _probe(self, spec: Service, proc: Proc, log: Log) -> HealthResult:
        """GET the health path until it answers 2xx, the process dies, or retries run out."""
        health = spec.health
        url = f"http://127.0.0.1:{proc['port']}{health.path}"
        last = "no answer yet"
        started = time.monotonic()
        for _attempt in range(health.retries + 1):
            if not self._alive(proc):
                return HealthResult(spec.name, proc["version"], False, self._why_dead(proc))
            try:
                response = httpx.get(url, timeout=health.timeout_seconds)
                if response.is_success:
                    log(f"{spec.name} {proc['version']} is healthy ({url})")
                    return HealthResult(spec.name, proc["version"], True, f"{url} answered {response.status_code}")
                last = f"{url} answered {response.status_code}"
            except httpx.HTTPError as exc:
                last = f"{url}: {type(exc).__name__}"
            time.sleep(health.interval_seconds)
        return HealthResult(
            spec.name, proc["version"], False,
            f"no healthy answer in {time.monotonic() - started:.0f} s ({health.retries + 1} tries, "
            f"{last}); log: {proc['log']}; a service that starts slowly needs a larger health.retries",
        )

    def _stop(self, procs: list[Proc]) -> None:
        """SIGTERM each live process group, wait, then SIGKILL what is left; reap our children."""
        live = [p for p in procs if self._alive(p)]
        for proc in live:
            _signal_group(proc["pid"], signal.SIGTERM)
        deadline = time.monotonic() + STOP_GRACE_SECONDS
        while any(self._alive(p) for p in live) and time.monotonic() < deadline:
            time.sleep(0.02)
        for proc in live:
            if self._alive(proc):
                _signal_group(proc["pid"], signal.SIGKILL)
        for proc in procs:
            child = self._children.pop(proc["pid"], None)
            if child is not None:
                child.wait(timeout=STOP_GRACE_SECONDS)


def _signal_group(pid: int, sig: signal.Signals) -> None:
    """Signal the process group the child leads (start_new_session), so its children go too."""
    try:
        os.killpg(pid, sig)
    except ProcessLookupError:
        pass


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _tail(path: str, lines: int = 15) -> str:
    try:
        with open(path, errors="replace") as handle:
            return "".join(deque(handle, maxlen=lines)).rstrip() or "(empty)"
    except FileNotFoundError:
        return "(no log file)"
