"""Blue-green on the local platform: switch all traffic at once, keep the old version warm.

Works on a `LocalPlatform`'s state (same lock, same router push) and adds one key to a service
entry: `"warm": proc | null` with `proc["warm_until"]` (epoch seconds) - the previous stable
version, still running and healthy, so `switch_back` is a single router swap. `stop_all` stops
warm processes too; `expire_warm` stops them after `keep_warm_seconds` (the canary sensor calls
it each tick; every switch replaces an older standby).

Zero failed requests across a switch: the router swaps one immutable routing object, in-flight
requests finish on the backend they chose, and the version that loses traffic keeps running
(warm) or drains for `drain_seconds` before it is stopped.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

import httpx

from release_pipelines.resources.platform import DeployError, Log, ServiceStatus, quiet


def _strip(proc: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in proc.items() if k != "warm_until"}


def switch_over(platform: Any, service: str, keep_warm_seconds: float, log: Log = quiet) -> ServiceStatus:
    """The new version (running as canary at 0 %) takes 100 % at once and becomes stable; the old
    stable stays running as the warm standby for `keep_warm_seconds` (0: drained and stopped)."""
    platform._spec(service)
    with platform.state.update() as doc:
        entry = platform._entry(doc, service)
        new, old = entry["canary"], entry["stable"]
        if new is None:
            log(f"{service}: nothing to switch to; stable is {old['version'] if old else 'none'}")
            return platform._status(service, doc)
        if not platform._alive(new):
            raise DeployError(f"{service} {new['version']} is not running (see {new['log']}); not switching to it")
        platform._ensure_router(doc, service, log)
        entry["weight"] = 100
        platform._push(service, entry, log)  # every new request now goes to the new version
        stale = entry.get("warm")
        entry.update(stable=new, canary=None, weight=0, release_id=None, warm=None)
        if old is not None and keep_warm_seconds > 0 and platform._alive(old):
            entry["warm"] = old | {"warm_until": time.time() + keep_warm_seconds}
        else:
            platform._retire(entry, old)
        platform._retire(entry, _strip(stale) if stale else None)
        platform._push(service, entry, log)
        warm = entry["warm"]
        log(f"{service}: switched to {new['version']} at once (100 %)"
            + (f"; {warm['version']} stays warm for {keep_warm_seconds:g} s" if warm else ""))
        retiring = bool(entry["retiring"])
    if retiring:
        platform._drain_and_stop(service, log)
    return platform.status(service)


def warm_version(platform: Any, service: str) -> str | None:
    """The warm standby's version when it still runs, else None."""
    warm = platform.state.read().get("services", {}).get(service, {}).get("warm")
    return warm["version"] if warm and platform._alive(warm) else None


def switch_back(platform: Any, service: str, log: Log = quiet) -> ServiceStatus:
    """100 % back to the warm standby at once; the version switched to drains and stops."""
    platform._spec(service)
    with platform.state.update() as doc:
        entry = platform._entry(doc, service)
        warm = entry.get("warm")
        if not warm or not platform._alive(warm):
            raise DeployError(f"{service}: no warm standby is running to switch back to")
        current = entry["stable"]
        platform._ensure_router(doc, service, log)
        entry.update(stable=_strip(warm), warm=None, weight=0, release_id=None)
        if entry["canary"] is not None:  # a canary of a later release: it goes too
            platform._retire(entry, entry["canary"])
            entry["canary"] = None
        platform._retire(entry, current)
        platform._push(service, entry, log)
        log(f"{service}: switched back to {warm['version']} at once (100 %); "
            f"{current['version'] if current else 'nothing'} stops after draining")
    platform._drain_and_stop(service, log)
    return platform.status(service)


def expire_warm(platform: Any, now: float | None = None, log: Log = quiet) -> list[str]:
    """Stop warm standbys whose time is up (or that died); returns the services touched."""
    now = time.time() if now is None else now
    expired: list[str] = []
    if not any(e.get("warm") for e in platform.state.read().get("services", {}).values()):
        return expired  # the common case: no lock taken, nothing written
    with platform.state.update() as doc:
        for service, entry in doc.get("services", {}).items():
            warm = entry.get("warm")
            if warm and (warm.get("warm_until", 0) <= now or not platform._alive(warm)):
                entry["warm"] = None
                entry.setdefault("retiring", []).append(_strip(warm))
                expired.append(service)
    for service in expired:
        log(f"{service}: warm standby expired")
        platform._drain_and_stop(service, log)
    return expired


def smoke_requests(platform: Any, service: str, version: str, paths: Sequence[str], timeout: float,
                   release_id: str) -> list[dict[str, Any]] | None:
    """GET each path from the new version's own port (no user traffic involved); one result per
    path, or None when `version` is not the running canary (no direct address)."""
    canary = platform.state.read().get("services", {}).get(service, {}).get("canary")
    if not canary or canary["version"] != version:
        return None
    results = []
    with httpx.Client(timeout=timeout) as client:
        for path in paths:
            try:
                response = client.get(f"http://127.0.0.1:{canary['port']}{path}", headers={"X-Release-Id": release_id})
                results.append({"path": path, "status": response.status_code, "passed": response.status_code < 400})
            except httpx.HTTPError as exc:
                results.append({"path": path, "status": None, "passed": False, "error": type(exc).__name__})
    return results
