"""Helpers for the end-to-end tests: a real `dagster-webserver` + `dagster-daemon` pair, load
against the shop's routers, and a census of the processes a test left behind.

Both servers are started directly (never `dagster dev`, which ignores SIGTERM when started from a
script) with their own DAGSTER_HOME, and stopped with SIGTERM; `stop()` reports how each exited.
"""

from __future__ import annotations

import asyncio
import importlib.util
import os
import shutil
import signal
import socket
import subprocess
import sys
import sysconfig
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import psutil

ROOT = Path(__file__).resolve().parent.parent
VENV_BIN = Path(sys.executable).parent
EXAMPLE_MANIFEST = ROOT / "examples" / "shop" / "release.yaml"
SERVER_START_SECONDS = 240.0  # polled: a quiet machine answers in ~15 s; a loaded one (workers, neighbours) in minutes
STOP_SECONDS = 30.0
PATHS = {"catalog": "/products", "orders": "/orders", "frontend": "/"}


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def dagster_bin(name: str) -> str:
    """The console script beside this interpreter (the venv), else from PATH."""
    candidate = VENV_BIN / name
    if candidate.exists():
        return str(candidate)
    found = shutil.which(name)
    if not found:
        raise RuntimeError(f"{name} not found beside {sys.executable} nor on PATH; install dagster-webserver")
    return found


def write_instance(dagster_home: Path, postgres: bool) -> Path:
    """DAGSTER_HOME/dagster.yaml: the project's production file, or SQLite + the same run queue."""
    dagster_home.mkdir(parents=True, exist_ok=True)
    target = dagster_home / "dagster.yaml"
    if postgres:
        shutil.copyfile(ROOT / "dagster.yaml", target)
    else:  # the project's run queue, SQLite storage in DAGSTER_HOME (the embedded default)
        text = (ROOT / "dagster.yaml").read_text()
        start, end = text.index("storage:"), text.index("# Runs wait")
        target.write_text(text[:start] + text[end:])
    return target


@dataclass
class DagsterServers:
    """`dagster-webserver` and `dagster-daemon` on one workspace, DAGSTER_HOME and environment."""

    env: dict[str, str]
    log_dir: Path
    port: int = field(default_factory=free_port)
    workspace: Path = ROOT / "workspace.yaml"
    webserver: subprocess.Popen | None = None
    daemon: subprocess.Popen | None = None
    exit_codes: dict[str, int | None] = field(default_factory=dict)
    leftover_commands: list[str] = field(default_factory=list)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def _start(self, name: str, argv: list[str]) -> subprocess.Popen:
        self.log_dir.mkdir(parents=True, exist_ok=True)
        log = open(self.log_dir / f"{name}.log", "ab")  # noqa: SIM115 - closed with the process
        return subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                env=self.env, cwd=ROOT)

    def start(self, daemon: bool = True) -> DagsterServers:
        if daemon:  # both would create a fresh instance's tables at once ("table snapshots already exists")
            subprocess.run([dagster_bin("dagster"), "instance", "migrate"], env=self.env, cwd=ROOT, check=True,
                           capture_output=True, timeout=SERVER_START_SECONDS)
        self.webserver = self._start("webserver", [
            dagster_bin("dagster-webserver"), "-w", str(self.workspace), "-p", str(self.port), "-h", "127.0.0.1"])
        if daemon:
            self.daemon = self._start("daemon", [dagster_bin("dagster-daemon"), "run", "-w", str(self.workspace)])
        self.wait_ready()
        return self

    def wait_ready(self, timeout: float = SERVER_START_SECONDS) -> float:
        started = time.monotonic()
        deadline = started + timeout
        while time.monotonic() < deadline:
            for name, proc in (("webserver", self.webserver), ("daemon", self.daemon)):
                if proc is not None and proc.poll() is not None:
                    raise RuntimeError(f"{name} exited with {proc.returncode}:\n{self.log_tail(name)}")
            try:
                if httpx.get(f"{self.url}/server_info", timeout=2).is_success:
                    return time.monotonic() - started
            except httpx.HTTPError:
                pass
            time.sleep(0.5)
        raise RuntimeError(f"webserver did not answer /server_info within {timeout:.0f} s:\n{self.log_tail('webserver')}")

    def log_tail(self, name: str, lines: int = 40) -> str:
        path = self.log_dir / f"{name}.log"
        if not path.exists():
            return "(no log)"
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])

    def stop(self) -> dict[str, int | None]:
        """SIGTERM both, wait; SIGKILL (and record None) only if one does not exit in time."""
        procs = {n: p for n, p in (("daemon", self.daemon), ("webserver", self.webserver)) if p is not None}
        descendants = []
        for proc in procs.values():
            try:
                descendants += psutil.Process(proc.pid).children(recursive=True)
            except psutil.NoSuchProcess:
                pass
        for proc in procs.values():
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for name, proc in procs.items():
            try:
                self.exit_codes[name] = proc.wait(timeout=STOP_SECONDS)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=10)
                self.exit_codes[name] = None
        # code servers and run workers they started: give them a moment, then make sure
        _gone, alive = psutil.wait_procs(descendants, timeout=15)
        self.leftover_commands = []
        for proc in alive:
            try:
                self.leftover_commands.append(" ".join(proc.cmdline())[:200])
            except psutil.Error:
                pass
            try:
                proc.kill()
            except psutil.NoSuchProcess:
                pass
        self.exit_codes["leftover_children"] = len(alive)
        return self.exit_codes


def processes_with_env(name: str, value: str) -> list[psutil.Process]:
    """Live processes whose environment has name=value (e.g. this test's RELEASE_HOME)."""
    found = []
    for proc in psutil.process_iter(["pid"]):
        if proc.pid == os.getpid():
            continue
        try:
            if proc.environ().get(name) == value and proc.status() != psutil.STATUS_ZOMBIE:
                found.append(proc)
        except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
            continue
    return found


def kill_processes(procs: list[psutil.Process]) -> None:
    for proc in procs:
        try:
            proc.kill()
        except psutil.NoSuchProcess:
            pass
    psutil.wait_procs(procs, timeout=10)


def stop_platform(release_home: Path, manifest: Path = EXAMPLE_MANIFEST) -> None:
    """Stop every service and router of the product, with the test's RELEASE_HOME."""
    from release_pipelines.orchestration.dagster_resources import PlatformResource
    from release_pipelines.resources.manifest_files import load_product

    saved = os.environ.get("RELEASE_HOME")
    os.environ["RELEASE_HOME"] = str(release_home)
    try:
        PlatformResource().for_product(load_product(manifest)).stop_all()
    finally:
        if saved is None:
            os.environ.pop("RELEASE_HOME", None)
        else:
            os.environ["RELEASE_HOME"] = saved


def _loadgen():
    spec = importlib.util.spec_from_file_location("shop_loadgen_e2e", ROOT / "examples" / "shop" / "loadgen.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)  # type: ignore[union-attr]
    return module


class BackgroundLoad:
    """Steady traffic through every service's router on a thread until stopped, at most `rate`
    requests per second per service: unpaced, the load generator, the routers and the services
    took both cores for the whole of a test and slowed every other test of the suite.

    Endpoints are re-read from the platform state each burst (routers stay, versions behind them
    change). Counts per service and version are kept, plus the time each version was first seen.
    """

    def __init__(self, release_home: Path, manifest: Path = EXAMPLE_MANIFEST, burst: int = 100,
                 concurrency: int = 8, rate: float = 100.0):
        from release_pipelines.resources.local_platform import LocalPlatform
        from release_pipelines.resources.manifest_files import load_product

        self.product = load_product(manifest)
        self.platform = LocalPlatform(self.product.manifest, self.product.directory,
                                      release_home / "platform" / self.product.name)
        self.burst, self.concurrency, self.rate = burst, concurrency, rate
        self.loadgen = _loadgen()
        self.requests: Counter[tuple[str, str]] = Counter()
        self.errors: Counter[tuple[str, str]] = Counter()
        self.first_seen: dict[tuple[str, str], float] = {}  # time.monotonic()
        self.first_seen_wall: dict[tuple[str, str], float] = {}  # time.time()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True, name="e2e-load")

    def start(self) -> BackgroundLoad:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=30)

    def _loop(self) -> None:
        while not self._stop.is_set():
            started, sent = time.monotonic(), 0
            for service in self.product.manifest.services:
                try:
                    endpoint = self.platform.status(service.name).endpoint
                except Exception:  # noqa: BLE001 - state being rewritten: try next burst
                    endpoint = None
                if not endpoint:
                    continue
                try:
                    result = asyncio.run(self.loadgen.run_load(endpoint + PATHS.get(service.name, "/"),
                                                               self.burst, 10.0, self.concurrency))
                except Exception:  # noqa: BLE001, S112 - a router restarting mid-burst: next burst
                    continue
                now = time.monotonic()
                for version, n in result.by_version.items():
                    key = (service.name, version)
                    self.requests[key] += n
                    self.errors[key] += result.errors_by_version.get(version, 0)
                    if key not in self.first_seen:
                        self.first_seen[key], self.first_seen_wall[key] = now, time.time()
                sent += result.sent
            self._stop.wait(max(0.0, self.burst / self.rate - (time.monotonic() - started)) if sent else 0.5)


def skip_dagster_welcome(page) -> None:
    """A fresh Dagster instance greets with a 'Join the Dagster community' dialog that can appear
    seconds after a page loads (later on a loaded machine) and then blocks clicks: Playwright
    dismisses it whenever it shows up before an action."""
    page.add_locator_handler(page.get_by_role("button", name="Skip"), lambda skip: skip.click())


def build_wheel(dest: Path, scratch: Path) -> Path:
    """Our wheel, built from a clean copy of the sources as they are laid out in the repository
    (the links release_pipelines/assets and /resources kept as links; no stale build/ folder)."""
    source = scratch / "source"
    skip = shutil.ignore_patterns("__pycache__", "*.pyc", "*.egg-info")
    source.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, source / name)
    for name in ("release_pipelines", "assets", "resources"):
        shutil.copytree(ROOT / name, source / name, ignore=skip, symlinks=True)
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w",
                    str(dest), str(source)], check=True, capture_output=True, text=True)
    return next(dest.glob("dagster_release_pipelines-*.whl"))


def fresh_venv(venv: Path, *wheels: Path) -> Path:
    """A new virtual environment with `wheels` installed; its python. The dependencies (Dagster, ...)
    come from this environment as a path entry - not a site dir, so this repository's editable
    install stays invisible - and nothing is downloaded."""
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    python = venv / "bin" / "python"
    site = Path(subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                               check=True, capture_output=True, text=True).stdout.strip())
    (site / "project-deps.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    if wheels:
        subprocess.run([str(python), "-m", "pip", "install", "-q", "--no-deps", "--no-index", *map(str, wheels)],
                       check=True, capture_output=True, text=True)
    return python
