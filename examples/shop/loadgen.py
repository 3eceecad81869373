"""Send a bounded burst of requests to a service's router and count answers per version.

    python loadgen.py http://127.0.0.1:PORT/products --requests 500 --duration 30 --concurrency 8

Stops at whichever comes first, the request count or the duration. Only loopback URLs are
accepted: this is a demo tool, not a way to load someone else's server. The version comes from
the router's X-Release-Version header; a transport failure counts as an error of version "?".
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
from collections import Counter
from dataclasses import asdict, dataclass, field
from urllib.parse import urlsplit

import httpx

LOOPBACK = {"127.0.0.1", "localhost", "::1"}
MAX_REQUESTS = 1_000_000
MAX_DURATION_SECONDS = 3600.0


@dataclass
class LoadResult:
    sent: int = 0
    errors: int = 0
    by_version: Counter[str] = field(default_factory=Counter)
    errors_by_version: Counter[str] = field(default_factory=Counter)
    seconds: float = 0.0


async def run_load(
    url: str, requests: int = 1000, duration_seconds: float = 60.0, concurrency: int = 8
) -> LoadResult:
    """Send up to `requests` GETs to `url` within `duration_seconds`; 5xx and failures are errors."""
    host = urlsplit(url).hostname
    if host not in LOOPBACK:
        raise ValueError(f"loadgen only targets loopback addresses, not {host!r}")
    if not 0 < requests <= MAX_REQUESTS or not 0 < duration_seconds <= MAX_DURATION_SECONDS:
        raise ValueError(f"requests must be 1-{MAX_REQUESTS} and duration 0-{MAX_DURATION_SECONDS:g} s")
    result = LoadResult()
    started = time.monotonic()
    deadline = started + duration_seconds

    async def worker(client: httpx.AsyncClient) -> None:
        while result.sent < requests and time.monotonic() < deadline:
            result.sent += 1
            try:
                response = await client.get(url)
                version = response.headers.get("X-Release-Version", "?")
                failed = response.status_code >= 500
            except httpx.HTTPError:
                version, failed = "?", True
            result.by_version[version] += 1
            if failed:
                result.errors += 1
                result.errors_by_version[version] += 1

    limits = httpx.Limits(max_connections=concurrency)
    async with httpx.AsyncClient(timeout=10.0, limits=limits) as client:
        await asyncio.gather(*(worker(client) for _ in range(concurrency)))
    result.seconds = time.monotonic() - started
    return result


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="bounded load against a loopback router URL")
    parser.add_argument("url")
    parser.add_argument("--requests", type=int, default=1000)
    parser.add_argument("--duration", type=float, default=60.0, help="seconds, at most")
    parser.add_argument("--concurrency", type=int, default=8)
    args = parser.parse_args(argv)
    result = asyncio.run(run_load(args.url, args.requests, args.duration, args.concurrency))
    print(json.dumps(asdict(result), indent=2))


if __name__ == "__main__":
    main()
