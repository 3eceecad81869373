"""One service of the example shop, as a small real HTTP server (starlette + uvicorn).

    python service.py --service catalog|orders|frontend --version V --port P --flags FLAGS_FILE

Endpoints: every service answers GET /healthz. catalog: GET /products. orders: GET /orders and
POST /orders, enriched from catalog when CATALOG_URL is set. frontend: GET / (a page summary built
from orders, via ORDERS_URL). The local platform sets the *_URL variables to the routers.

So the demo has something to catch, behaviour depends on the version:
  - a version containing "crash" exits at start (the health check must fail);
  - a version containing "slow" takes 4 s to start;
  - a version containing "bad" answers ~5 % of requests with HTTP 500 and adds ~80 ms latency;
  - a version containing "fat" allocates about twice its start-up memory again at start and keeps
    it (~3x the normal RSS), so a memory metric on the canary must fail;
  - any other version fails ~0.5 % of requests.
SHOP_ERROR_RATE (0-1) and SHOP_EXTRA_LATENCY_MS override both. /healthz never fails on purpose.
Flags (e.g. express-checkout) are read through the OpenFeature SDK from the flagd-format file.
Every response echoes the `X-Release-Id` request header (set by the router on canary requests) as
`X-Backend-Release-Id`, so tests can see the correlation id reached the backend.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import sys
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass

import httpx
import uvicorn
from openfeature import api
from openfeature.client import OpenFeatureClient
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route
from starlette.types import ASGIApp, Receive, Scope, Send

from release_pipelines.resources.flags import FlagFileProvider

PRODUCTS = [
    {"id": 1, "sku": "TEA-001", "name": "Green tea", "price_cents": 450},
    {"id": 2, "sku": "MUG-002", "name": "Stoneware mug", "price_cents": 1200},
    {"id": 3, "sku": "POT-003", "name": "Cast-iron teapot", "price_cents": 4900},
]


@dataclass(frozen=True)
class Behaviour:
    error_rate: float
    extra_latency_ms: float

    @classmethod
    def for_version(cls, version: str) -> Behaviour:
        bad = "bad" in version
        return cls(
            error_rate=float(os.environ.get("SHOP_ERROR_RATE", "0.05" if bad else "0.005")),
            extra_latency_ms=float(os.environ.get("SHOP_EXTRA_LATENCY_MS", "80" if bad else "0")),
        )


class Misbehave:
    """ASGI middleware: this version's errors and latency on every request but the health check."""

    def __init__(self, app: ASGIApp, behaviour: Behaviour):
        self.app = app
        self.behaviour = behaviour

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] == "/healthz":
            return await self.app(scope, receive, send)
        if self.behaviour.extra_latency_ms:
            await asyncio.sleep(self.behaviour.extra_latency_ms * random.uniform(0.5, 1.5) / 1000)
        if random.random() < self.behaviour.error_rate:
            return await JSONResponse({"error": "injected failure"}, status_code=500)(scope, receive, send)
        return await self.app(scope, receive, send)


class EchoReleaseId:
    """ASGI middleware: return the X-Release-Id this backend received as X-Backend-Release-Id."""

    def __init__(self, app: ASGIApp):
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        seen = next((v for k, v in scope.get("headers", []) if k.lower() == b"x-release-id"), None)
        if seen is None:
            return await self.app(scope, receive, send)

        async def send_with_echo(message) -> None:
            if message["type"] == "http.response.start":
                message = {**message, "headers": [*message.get("headers", []), (b"x-backend-release-id", seen)]}
            await send(message)

        return await self.app(scope, receive, send_with_echo)


BALLAST: list[bytearray] = []


def allocate_ballast(factor: float = 2.0) -> int:
    """Hold `factor` x the current resident memory in touched pages (the "fat" demo version)."""
    import resource

    rss_bytes = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # Linux reports KiB
    size = max(int(rss_bytes * factor), 64 * 1024 * 1024)
    BALLAST.append(bytearray(b"\x01") * size)  # written, so resident
    return size


def create_app(service: str, version: str, flags: OpenFeatureClient) -> Starlette:
    orders: list[dict[str, object]] = []
    http: dict[str, httpx.AsyncClient] = {}

    @asynccontextmanager
    async def lifespan(_app: Starlette) -> AsyncIterator[None]:
        async with httpx.AsyncClient(timeout=5.0) as client:
            http["client"] = client
            yield

    async def fetch(env_var: str, path: str) -> object | None:
        """GET a dependency through its router, or None when this service runs alone."""
        base = os.environ.get(env_var)
        if not base:
            return None
        response = await http["client"].get(base + path)
        response.raise_for_status()
        return response.json()

    def base(payload: dict[str, object]) -> dict[str, object]:
        return {"service": service, "version": version, **payload}

    async def healthz(_request: Request) -> JSONResponse:
        return JSONResponse(base({"status": "ok"}))

    async def products(_request: Request) -> JSONResponse:
        return JSONResponse(base({"products": PRODUCTS}))

    async def list_orders(_request: Request) -> JSONResponse:
        catalog = await fetch("CATALOG_URL", "/products")
        names = {p["id"]: p["name"] for p in catalog["products"]} if isinstance(catalog, dict) else {}
        return JSONResponse(base({
            "orders": [{**o, "product_name": names.get(o["product_id"])} for o in orders],
            "express_checkout": flags.get_boolean_value("express-checkout", False),
        }))

    async def create_order(request: Request) -> JSONResponse:
        body = await request.json()
        order = {"id": len(orders) + 1, "product_id": int(body["product_id"]),
                 "quantity": int(body.get("quantity", 1)), "status": "placed"}
        orders.append(order)
        return JSONResponse(base({"order": order}), status_code=201)

    async def home(_request: Request) -> JSONResponse:
        summary = await fetch("ORDERS_URL", "/orders")
        count = len(summary["orders"]) if isinstance(summary, dict) else None
        return JSONResponse(base({
            "title": "Tea shop", "open_orders": count,
            "express_checkout": flags.get_boolean_value("express-checkout", False),
        }))

    routes = [Route("/healthz", healthz)] + {
        "catalog": [Route("/products", products)],
        "orders": [Route("/orders", list_orders, methods=["GET"]), Route("/orders", create_order, methods=["POST"])],
        "frontend": [Route("/", home)],
    }[service]
    app = Starlette(routes=routes, lifespan=lifespan)
    app.add_middleware(Misbehave, behaviour=Behaviour.for_version(version))
    app.add_middleware(EchoReleaseId)
    return app


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="one service of the example shop")
    parser.add_argument("--service", required=True, choices=["catalog", "orders", "frontend"])
    parser.add_argument("--version", required=True)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--flags", required=True, help="flagd-format JSON flag file")
    args = parser.parse_args(argv)
    if "crash" in args.version:
        print(f"{args.service} {args.version}: this build crashes at start (demo)", file=sys.stderr)
        sys.exit(3)
    if "slow" in args.version:
        time.sleep(4)  # a slow start: the health check waits (fault-injection tests kill the run here)
    api.set_provider(FlagFileProvider(args.flags))
    app = create_app(args.service, args.version, api.get_client(args.service))
    if "fat" in args.version:
        allocate_ballast()
    uvicorn.run(app, host="127.0.0.1", port=args.port, access_log=False, log_level="warning")


if __name__ == "__main__":
    main()
