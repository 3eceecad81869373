"""Real processes for integration tests: a throwaway Prometheus, routers and shop backends.

    with PrometheusServer.start(["127.0.0.1:8001"], metrics_path="/_router/metrics") as prom:
        prom.wait_for_data('release_router_requests_total')
        ... PrometheusMetricsProvider(prom.url) ...

`ensure_prometheus()` installs the Debian `prometheus` package when the binary is missing and we
are root (`tests/debian_packages.py`); otherwise it raises with the package to install.
Our own server scrapes the given targets every second, keeps its TSDB in a temporary directory
and is stopped (SIGTERM, then SIGKILL) and cleaned up on exit. The first scraped sample is only
queryable after ~6 s (targets are picked up in 5 s batches), so wait with `wait_for_data`
instead of trusting /-/ready.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import Self

import httpx

from tests.debian_packages import PackageUnavailable, ensure_package

PACKAGE = "prometheus"


class PrometheusUnavailable(RuntimeError):
    """Prometheus cannot be installed or started here; the message says what to do."""


# ---------------------------------------------------------------------------- processes


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def spawn(argv: Sequence[str], *, log: Path, env: Mapping[str, str] | None = None,
          cwd: str | Path | None = None) -> subprocess.Popen:
    """Start a process in its own session (so stopping it reaches its children), output to `log`."""
    with open(log, "ab") as out:
        return subprocess.Popen(
            list(argv), stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            env={**os.environ, **(env or {})}, cwd=cwd, start_new_session=True,
        )


def stop(proc: subprocess.Popen | None, timeout: float = 10.0) -> None:
    """SIGTERM the process group, wait, then SIGKILL; always reaps, never raises if gone."""
    if proc is None or proc.poll() is not None:
        return
    for sig, wait in ((signal.SIGTERM, timeout), (signal.SIGKILL, 5.0)):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            break
        try:
            proc.wait(wait)
            return
        except subprocess.TimeoutExpired:
            continue
    proc.wait(5.0)


def wait_until(condition: Callable[[], object], *, timeout: float, what: str,
               proc: subprocess.Popen | None = None, log: Path | None = None,
               interval: float = 0.1) -> object:
    """Poll until `condition()` is truthy; fail early (with the log tail) if `proc` died."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"{what}: process exited with {proc.returncode}{_tail(log)}")
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what}: not within {timeout:g} s{_tail(log)}")
        time.sleep(interval)


def http_ok(url: str) -> bool:
    try:
        return httpx.get(url, timeout=0.5).status_code == 200
    except httpx.HTTPError:
        return False


def _tail(log: Path | None, lines: int = 15) -> str:
    if log is None or not log.exists():
        return ""
    return "\n--- " + str(log) + " ---\n" + "\n".join(log.read_text(errors="replace").splitlines()[-lines:])


# ---------------------------------------------------------------------------- router + shop

REPO = Path(__file__).resolve().parents[1]
SHOP_SERVICE = REPO / "examples" / "shop" / "service.py"


class Processes:
    """Processes started by one fixture; `stop_all()` in a finally stops every one of them."""

    def __init__(self, workdir: Path):
        self.workdir = workdir
        self.procs: list[subprocess.Popen] = []

    def shop_backend(self, version: str, *, error_rate: float, service: str = "catalog") -> int:
        """examples/shop/service.py on a free port, failing `error_rate` of requests with 500."""
        flags = self.workdir / "flags.json"
        if not flags.exists():
            flags.write_text('{"flags": {}}')
        port = free_port()
        log = self.workdir / f"{service}-{version}.log"
        proc = spawn([sys.executable, str(SHOP_SERVICE), "--service", service, "--version", version,
                      "--port", str(port), "--flags", str(flags)], log=log, cwd=REPO,
                     env={"SHOP_ERROR_RATE": str(error_rate), "SHOP_EXTRA_LATENCY_MS": "0"})
        self.procs.append(proc)
        wait_until(lambda: http_ok(f"http://127.0.0.1:{port}/healthz"), timeout=15,
                   what=f"{service} {version}", proc=proc, log=log)
        return port

    def router(self, service: str, *, stable: tuple[str, int] | None, canary: tuple[str, int] | None,
               weight: int) -> tuple[int, subprocess.Popen]:
        """`python -m release_pipelines.resources.router` reading its routing from a platform-style state file."""

        def backend(b: tuple[str, int] | None) -> dict | None:
            return None if b is None else {"version": b[0], "port": b[1]}

        state = self.workdir / f"{service}-platform.json"
        state.write_text(json.dumps({"services": {service: {
            "stable": backend(stable), "canary": backend(canary), "weight": weight}}}))
        port = free_port()
        log = self.workdir / f"{service}-router.log"
        proc = spawn([sys.executable, "-m", "release_pipelines.resources.router", "--service", service, "--port", str(port),
                      "--state-file", str(state)], log=log, cwd=REPO)
        self.procs.append(proc)
        wait_until(lambda: http_ok(f"http://127.0.0.1:{port}/_router/state"), timeout=15,
                   what=f"router for {service}", proc=proc, log=log)
        return port, proc

    def stop_all(self) -> None:
        errors = []
        for proc in reversed(self.procs):
            try:
                stop(proc)
            except Exception as exc:  # noqa: BLE001 - keep stopping the others
                errors.append(exc)
        self.procs.clear()
        if errors:
            raise errors[0]


# ---------------------------------------------------------------------------- install


def ensure_prometheus() -> str:
    """Path of the `prometheus` binary, installing the Debian package as root if it is missing."""
    try:
        return str(ensure_package(PACKAGE, PACKAGE))
    except PackageUnavailable as exc:
        raise PrometheusUnavailable(str(exc)) from None


# ---------------------------------------------------------------------------- server


def scrape_config(targets: Sequence[str], *, metrics_path: str, scrape_interval: str, job: str) -> str:
    """A minimal prometheus.yml (JSON is valid YAML, so no quoting surprises)."""

    return json.dumps({
        "global": {"scrape_interval": scrape_interval, "evaluation_interval": scrape_interval},
        "scrape_configs": [{
            "job_name": job,
            "metrics_path": metrics_path,
            "scrape_interval": scrape_interval,
            "scrape_timeout": scrape_interval,
            "static_configs": [{"targets": list(targets)}],
        }],
    }, indent=2)


class PrometheusServer:
    """One real Prometheus on 127.0.0.1 with a temporary TSDB; use as a context manager."""

    def __init__(self, proc: subprocess.Popen, port: int, workdir: Path):
        self.proc = proc
        self.port = port
        self.workdir = workdir
        self.url = f"http://127.0.0.1:{port}"
        self.log = workdir / "prometheus.log"

    @classmethod
    def start(cls, targets: Sequence[str], *, metrics_path: str = "/metrics",
              scrape_interval: str = "1s", job: str = "targets", attempts: int = 3) -> PrometheusServer:
        binary = ensure_prometheus()
        workdir = Path(tempfile.mkdtemp(prefix="prometheus-test-"))
        config = workdir / "prometheus.yml"
        config.write_text(scrape_config(targets, metrics_path=metrics_path,
                                        scrape_interval=scrape_interval, job=job))
        last_error: Exception | None = None
        for _ in range(attempts):  # another process may grab the free port before we bind it
            port = free_port()
            log = workdir / "prometheus.log"
            log.unlink(missing_ok=True)
            proc = spawn([
                binary, f"--config.file={config}", f"--web.listen-address=127.0.0.1:{port}",
                f"--storage.tsdb.path={workdir / 'data'}", "--log.level=warn",
            ], log=log)
            server = cls(proc, port, workdir)
            ready = f"{server.url}/-/ready"
            try:
                wait_until(lambda url=ready: http_ok(url), timeout=15,
                           what=f"Prometheus on {server.url}", proc=proc, log=log)
                return server
            except (RuntimeError, TimeoutError) as exc:
                stop(proc)
                last_error = exc
                if "address already in use" not in log.read_text(errors="replace"):
                    break
        shutil.rmtree(workdir, ignore_errors=True)
        raise PrometheusUnavailable(f"Prometheus did not start: {last_error}")

    def query(self, promql: str) -> list[dict]:
        response = httpx.get(f"{self.url}/api/v1/query", params={"query": promql}, timeout=5)
        response.raise_for_status()
        return response.json()["data"]["result"]

    def wait_for_data(self, promql: str = "up == 1", timeout: float = 30.0) -> list[dict]:
        """Poll until `promql` returns at least one series (the first scrape lands after ~6 s)."""
        return wait_until(lambda: self.query(promql), timeout=timeout, what=f"data for {promql!r}",
                          proc=self.proc, log=self.log, interval=0.2)  # type: ignore[return-value]

    def stop(self) -> None:
        try:
            stop(self.proc)
        finally:
            shutil.rmtree(self.workdir, ignore_errors=True)

    def __enter__(self) -> Self:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()
