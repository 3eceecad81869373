"""Fault-injection helpers: a real shop on a PostgreSQL app database and ledger, a child process
to kill, backend termination (what a server restart does to clients), data fingerprints.

The product is a copy of examples/shop installed at revision 0001 with a few thousand orders,
then given revisions 0002-0006, so a release has real expand work (0002 backfills every order),
gates, canaries and a contract revision. Only the test databases this module created are touched.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sqlalchemy import create_engine, inspect, text
from sqlalchemy.engine import make_url

from tests.conftest import _create_database, _drop_database
from tests.release_harness import ROOT, Shop, processes_under

LATER = ["0002_order_totals.py", "0003_orders_product_idx.py", "0004_order_currency.py",
         "0005_currency_not_null.py", "0006_drop_legacy_code.py"]
FIRST = {"catalog": "1.0.0", "orders": "1.0.0", "frontend": "1.0.0"}
ORDERS = 60_000  # enough keyset batches (1000 rows each) for the backfill to take a visible while
BASE_COLUMNS = {"products": ["id", "sku", "name", "price_cents"],
                "orders": ["id", "product_id", "quantity", "status"]}


def stage_product(target: Path, deadline_seconds: int = 300) -> Path:
    """A copy of the shop with only revision 0001, fast drains and a short bake; returns release.yaml."""
    shutil.copytree(ROOT / "examples" / "shop", target, ignore=shutil.ignore_patterns("__pycache__"))
    later = target.parent / f"{target.name}_later"
    later.mkdir()
    for name in LATER:
        shutil.move(target / "migrations" / "versions" / name, later / name)
    manifest = target / "release.yaml"
    text_ = manifest.read_text()
    text_ = text_.replace('"--flags", "{flags_file}"]', '"--flags", "{flags_file}"]\n        drain_seconds: 0.1')
    text_ = text_.replace("bake_seconds: 10", "bake_seconds: 1")
    text_ = re.sub(r"deadline_seconds: \d+", f"deadline_seconds: {deadline_seconds}", text_)
    manifest.write_text(text_)
    return manifest


def add_later_revisions(product_dir: Path) -> None:
    later = product_dir.parent / f"{product_dir.name}_later"
    for name in LATER:
        shutil.copy(later / name, product_dir / "migrations" / "versions" / name)


def fingerprint(url: str) -> dict[str, tuple[int, str]]:
    """Row count and md5 of the ordered rows of the columns every schema version has."""
    engine = create_engine(url)
    try:
        with engine.connect() as conn:
            out = {}
            for table, columns in BASE_COLUMNS.items():
                rows = conn.execute(text(f"select {', '.join(columns)} from {table} order by id")).all()
                digest = hashlib.md5("\n".join(repr(tuple(r)) for r in rows).encode()).hexdigest()
                out[table] = (len(rows), digest)
            return out
    finally:
        engine.dispose()


def columns(url: str) -> dict[str, list[str]]:
    engine = create_engine(url)
    try:
        insp = inspect(engine)
        return {t: sorted(c["name"] for c in insp.get_columns(t)) for t in BASE_COLUMNS}
    finally:
        engine.dispose()


def revision(url: str) -> str | None:
    engine = create_engine(url)
    try:
        with engine.connect() as conn:
            return conn.execute(text("select version_num from alembic_version")).scalar()
    finally:
        engine.dispose()


def terminate_backends(urls: list[str], admin_url: str, prefix: str | None = None) -> int:
    """pg_terminate_backend every other session on these databases (or those whose
    application_name starts with `prefix`): what a PostgreSQL restart does to its clients."""
    names = [make_url(u).database for u in urls]
    engine = create_engine(admin_url, isolation_level="AUTOCOMMIT")
    try:
        with engine.connect() as conn:
            query = ("select count(pg_terminate_backend(pid)) from pg_stat_activity "
                     "where datname = any(:names) and pid <> pg_backend_pid()")
            params: dict[str, Any] = {"names": names}
            if prefix is not None:
                query += " and application_name like :prefix"
                params["prefix"] = prefix + "%"
            return int(conn.execute(text(query), params).scalar())
    finally:
        engine.dispose()


def wait_for(condition: Callable[[], Any], timeout: float, what: str, alive: Callable[[], bool] = lambda: True,
             poll: float = 0.01) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            found = condition()
        except Exception:  # noqa: BLE001 - a read during a fault may fail; try again
            found = None
        if found:
            return found
        if not alive():
            raise AssertionError(f"the run ended before {what}")
        time.sleep(poll)
    raise AssertionError(f"timed out waiting for {what}")


@dataclass
class PgShop:
    """A staged shop on PostgreSQL (app database and ledger), for one group of fault cells."""

    shop: Shop
    app_url: str
    ledger_url: str
    admin_url: str
    product_dir: Path
    minor: int = 0
    notes: list[str] = field(default_factory=list)

    def next_version(self, suffix: str = "") -> str:
        self.minor += 1
        return f"1.{self.minor}.0{suffix}"

    def event_kinds(self, release_id: str) -> list[str]:
        return [e.kind for e in self.shop.ledger.events(release_id)]

    def has_event(self, kind: str, **match: Any) -> str | None:
        release = self.shop.active()
        if release is None:
            return None
        for e in self.shop.ledger.events(release.id):
            if e.kind == kind and all(e.payload.get(k) == v for k, v in match.items()):
                return release.id
        return None

    def backfill_running(self) -> bool:
        engine = create_engine(self.app_url)
        try:
            with engine.connect() as conn:
                return bool(conn.execute(text(
                    "select count(*) from information_schema.tables where table_name = 'release_backfill_progress'"
                )).scalar()) and bool(conn.execute(text("select count(*) from release_backfill_progress")).scalar())
        finally:
            engine.dispose()

    def child(self, job: str, run_config: dict[str, Any]) -> subprocess.Popen:
        """The job in its own process (so it can be killed -9), on the same env and state."""
        script = (
            "import sys; from pathlib import Path; from tests.release_harness import Shop; "
            f"Shop(Path({str(self.shop.home)!r}), Path({str(self.shop.manifest)!r}))"
            f".run({job!r}, {run_config!r})"
        )
        return subprocess.Popen([sys.executable, "-c", script], cwd=str(ROOT), env=os.environ.copy(),
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def kill_when(self, child: subprocess.Popen, condition: Callable[[], Any], what: str, timeout: float = 90) -> None:
        try:
            wait_for(condition, timeout, what, alive=lambda: child.poll() is None)
            os.kill(child.pid, signal.SIGKILL)
            child.wait(timeout=10)
        finally:
            if child.poll() is None:
                child.kill()
                child.wait(timeout=10)


def build_pg_shop(monkeypatch, tmp_path: Path, admin_url: str, deadline_seconds: int = 300) -> tuple[PgShop, Callable[[], None]]:
    """Create the databases, stage and install the shop at 0001 with ORDERS orders, then add 0002-0006."""
    app_url = _create_database(admin_url, "rp_fault_app")
    ledger_url = _create_database(admin_url, "rp_fault_ledger")
    home = tmp_path / "release_home"
    home.mkdir()
    product_dir = tmp_path / "shop"
    manifest = stage_product(product_dir, deadline_seconds)
    monkeypatch.setenv("RELEASE_HOME", str(home))
    monkeypatch.setenv("SHOP_DB_URL", app_url)
    monkeypatch.setenv("RELEASE_LEDGER_URL", ledger_url)
    monkeypatch.setenv("RELEASE_ACTOR", "ci-launcher")
    monkeypatch.delenv("RELEASE_PROMETHEUS_URL", raising=False)
    monkeypatch.delenv("RELEASE_WEBHOOK_URL", raising=False)
    shop = Shop(home, manifest)

    def cleanup() -> None:
        shop.stop()
        shop.ledger.close()
        leftovers = processes_under(home)
        for proc in leftovers:
            proc.kill()
        for url in (app_url, ledger_url):
            _drop_database(admin_url, url)
        assert not leftovers, f"orphan processes: {[p.pid for p in leftovers]}"

    from tests.release_harness import release_config

    result = shop.run("release", release_config(FIRST))
    assert result.success, shop.failure_message(result)
    engine = create_engine(app_url)
    with engine.begin() as conn:
        conn.execute(text(
            "insert into orders (product_id, quantity, status) "
            f"select 1 + (g % 4), 1 + (g % 7), 'new' from generate_series(1, {ORDERS}) g"))
    engine.dispose()
    add_later_revisions(product_dir)
    return PgShop(shop, app_url, ledger_url, admin_url, product_dir), cleanup
