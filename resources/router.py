"""The weighted router in front of one service: `python -m release_pipelines.resources.router --service S --port P
--state-file F`.

Each request goes to the canary with probability weight/100, else to stable, and is counted per
version. These metric names are a contract with the metrics provider:

    release_router_requests_total{service,version,role,code_class}     counter
    release_router_request_duration_seconds{service,version,role}      histogram

Reserved paths: GET /_router/metrics (Prometheus text), GET /_router/state and POST /_router/route
(JSON `{"stable": {"version", "port"} | null, "canary": ... | null, "weight": 0-100, "release_id": str | null}`).

Correlation: a request served by the canary carries `X-Release-Id: <release_id>` (the release that
deployed the canary) to the canary backend, and the response returns it to the client.
Tenant-scoped canaries: a routing may name `tenants` (with `tenant_header`, default X-Tenant, and
`tenant_cookie`, default `tenant`). While a canary runs, every request of a named tenant goes to the
canary whatever the weight; everyone else is split by weight as before. Each answer is also counted
by cohort ("tenant" for a named tenant's request, else "general") in

    release_router_cohort_requests_total{service,version,role,cohort,code_class}     counter
    release_router_cohort_request_duration_seconds{service,version,role,cohort}      histogram

so the judge can compare the canary's tenant requests with stable's general ones
(`release_pipelines.resources.router_metrics.tenant_cohorts`); the metrics above are unchanged.

A route change swaps one immutable object, so in-flight requests finish on the backend they
chose and none is dropped. At start the routing comes from the platform's state file, so a
restarted router serves what the platform last decided.
"""

from __future__ import annotations

import argparse
import json
import random
import re
import time
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass
from http.cookiejar import CookieJar, DefaultCookiePolicy
from pathlib import Path
from typing import Any

import httpx
import uvicorn
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Histogram,
    generate_latest,
)
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.5, 0.75, 1, 2.5, 5, 10)
HOP_BY_HOP = frozenset(
    {"connection", "keep-alive", "proxy-authenticate", "proxy-authorization", "te", "trailer",
     "transfer-encoding", "upgrade", "host", "content-length", "content-encoding"}
)
METHODS = ["GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS"]


class RouteError(ValueError):
    """A POST /_router/route body that does not describe a valid routing."""


@dataclass(frozen=True)
class Backend:
    version: str
    port: int


TENANT_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$")
HEADER_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9-]{0,62}$")


@dataclass(frozen=True)
class Routing:
    stable: Backend | None
    canary: Backend | None
    weight: int
    release_id: str | None = None
    tenants: frozenset[str] = frozenset()  # lower-case; their requests go to the canary
    tenant_header: str = "X-Tenant"
    tenant_cookie: str = "tenant"

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Routing:
        """Parse and check a routing; extra keys (pids, log paths from the state file) are ignored."""

        def backend(key: str) -> Backend | None:
            value = data.get(key)
            if value is None:
                return None
            if not isinstance(value.get("version"), str) or not isinstance(value.get("port"), int):
                raise RouteError(f"{key} needs a string 'version' and an integer 'port'")
            return Backend(value["version"], value["port"])

        weight = data.get("weight", 0)
        if not isinstance(weight, int) or not 0 <= weight <= 100:
            raise RouteError(f"weight must be an integer from 0 to 100, got {weight!r}")
        release_id = data.get("release_id")
        if release_id is not None and (not isinstance(release_id, str) or len(release_id) > 200
                                       or any(c in release_id for c in "\r\n")):
            raise RouteError("release_id must be a single-line string")
        tenants = data.get("tenants") or []
        if not isinstance(tenants, list) or not all(isinstance(t, str) and TENANT_NAME.match(t) for t in tenants):
            raise RouteError("tenants must be a list of names (letters, digits, . _ -)")
        header, cookie = data.get("tenant_header") or "X-Tenant", data.get("tenant_cookie") or "tenant"
        if not all(isinstance(v, str) and HEADER_NAME.match(v) for v in (header, cookie)):
            raise RouteError("tenant_header and tenant_cookie must be plain names")
        routing = cls(backend("stable"), backend("canary"), weight, release_id or None,
                      frozenset(t.lower() for t in tenants), header, cookie)
        if routing.canary is None and weight:
            raise RouteError("a weight above 0 needs a canary")
        return routing

    def to_json(self) -> dict[str, Any]:
        def as_dict(backend: Backend | None) -> dict[str, Any] | None:
            return None if backend is None else {"version": backend.version, "port": backend.port}

        routing = {"stable": as_dict(self.stable), "canary": as_dict(self.canary), "weight": self.weight}
        if self.tenants:
            routing |= {"tenants": sorted(self.tenants), "tenant_header": self.tenant_header,
                        "tenant_cookie": self.tenant_cookie}
        return routing | ({"release_id": self.release_id} if self.release_id else {})

    def tenant_of(self, headers: Any, cookies: Mapping[str, str]) -> str | None:
        """The request's tenant when it is one of the named tenants (header first, then cookie)."""
        if not self.tenants:
            return None
        for value in (headers.get(self.tenant_header), cookies.get(self.tenant_cookie)):
            if value and value.strip().lower() in self.tenants:
                return value.strip().lower()
        return None

    def choose(self) -> tuple[str, Backend] | None:
        if self.canary is not None and (self.stable is None or random.random() * 100 < self.weight):
            return "canary", self.canary
        return None if self.stable is None else ("stable", self.stable)


def tenant_routing(canary_settings: Any, has_canary: Any) -> dict[str, Any]:
    """The tenant keys of a routing, from a service's manifest `canary` block (only while a canary runs)."""
    tenants = list(getattr(canary_settings, "tenants", None) or [])
    if not tenants or not has_canary:
        return {}
    return {"tenants": tenants, "tenant_header": canary_settings.tenant_header,
            "tenant_cookie": canary_settings.tenant_cookie}


def read_routing(state_file: Path, service: str) -> Routing:
    """The routing the platform last recorded for `service` (lock-free: the file is renamed into place)."""
    try:
        entry = json.loads(state_file.read_text()).get("services", {}).get(service, {})
    except FileNotFoundError:
        entry = {}
    return Routing.from_json({k: entry.get(k) for k in ("stable", "canary", "release_id")} | {"weight": entry.get("weight", 0)})


def create_app(service: str, routing: Routing) -> Starlette:
    """The router as an ASGI app (separate from `main` so tests can drive it in-process)."""
    registry = CollectorRegistry()
    requests_total = Counter(
        "release_router_requests_total", "Requests answered, by backend version and status class",
        ["service", "version", "role", "code_class"], registry=registry,
    )
    duration = Histogram(
        "release_router_request_duration_seconds", "Time to answer, by backend version",
        ["service", "version", "role"], buckets=BUCKETS, registry=registry,
    )
    cohort_requests = Counter(
        "release_router_cohort_requests_total", "Requests answered, by version and cohort (tenant | general)",
        ["service", "version", "role", "cohort", "code_class"], registry=registry,
    )
    cohort_duration = Histogram(
        "release_router_cohort_request_duration_seconds", "Time to answer, by version and cohort",
        ["service", "version", "role", "cohort"], buckets=BUCKETS, registry=registry,
    )
    current = {"routing": routing}
    client: dict[str, httpx.AsyncClient] = {}

    @asynccontextmanager
    async def lifespan(_app: Starlette) -> AsyncIterator[None]:
        limits = httpx.Limits(max_connections=200, max_keepalive_connections=50)
        # A proxy must not keep cookies: one client's Set-Cookie would be replayed for everyone.
        no_cookies = CookieJar(policy=DefaultCookiePolicy(allowed_domains=[]))
        async with httpx.AsyncClient(
            timeout=httpx.Timeout(30.0, connect=2.0), limits=limits, cookies=no_cookies
        ) as c:
            client["http"] = c
            yield

    async def metrics(_request: Request) -> Response:
        return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)

    async def state(_request: Request) -> JSONResponse:
        return JSONResponse(current["routing"].to_json())

    async def route(request: Request) -> JSONResponse:
        try:
            current["routing"] = Routing.from_json(await request.json())
        except (RouteError, ValueError, AttributeError, TypeError) as exc:
            return JSONResponse({"error": str(exc)}, status_code=400)
        return JSONResponse(current["routing"].to_json())

    async def forward(request: Request) -> Response:
        routing = current["routing"]
        tenant = routing.tenant_of(request.headers, request.cookies) if routing.canary is not None else None
        choice = ("canary", routing.canary) if tenant is not None else routing.choose()
        cohort = "tenant" if tenant is not None else "general"
        if choice is None:
            return JSONResponse({"error": f"{service}: no version deployed"}, status_code=503)
        role, backend = choice
        release_id = routing.release_id if role == "canary" else None
        headers = [(k, v) for k, v in request.headers.items()
                   if k.lower() not in HOP_BY_HOP and not (release_id and k.lower() == "x-release-id")]
        if release_id:
            headers.append(("X-Release-Id", release_id))
        path = request.scope.get("raw_path") or request.url.path.encode()
        url = f"http://127.0.0.1:{backend.port}{path.decode('latin-1')}"
        started = time.perf_counter()
        try:
            upstream = await client["http"].request(
                request.method, httpx.URL(url, query=request.url.query.encode()), headers=headers, content=await request.body()
            )
            response = Response(
                upstream.content, status_code=upstream.status_code,
                headers={k: v for k, v in upstream.headers.items() if k.lower() not in HOP_BY_HOP},
            )
        except httpx.HTTPError as exc:
            response = JSONResponse(
                {"error": f"{service} {backend.version} ({role}) unreachable: {type(exc).__name__}"},
                status_code=502,
            )
        duration.labels(service, backend.version, role).observe(time.perf_counter() - started)
        requests_total.labels(service, backend.version, role, f"{response.status_code // 100}xx").inc()
        cohort_duration.labels(service, backend.version, role, cohort).observe(time.perf_counter() - started)
        cohort_requests.labels(service, backend.version, role, cohort, f"{response.status_code // 100}xx").inc()
        response.headers["X-Release-Version"] = backend.version
        response.headers["X-Release-Role"] = role
        if release_id:
            response.headers["X-Release-Id"] = release_id
        return response

    return Starlette(
        routes=[
            Route("/_router/metrics", metrics, methods=["GET"]),
            Route("/_router/state", state, methods=["GET"]),
            Route("/_router/route", route, methods=["POST"]),
            Route("/{path:path}", forward, methods=METHODS),
        ],
        lifespan=lifespan,
    )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--service", required=True)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--state-file", type=Path, required=True)
    args = parser.parse_args(argv)
    app = create_app(args.service, read_routing(args.state_file, args.service))
    uvicorn.run(app, host="127.0.0.1", port=args.port, access_log=False, log_level="warning")


if __name__ == "__main__":
    main()
