"""R9, the ledger refuses writes mid-release: its disk is full (a SQLite ledger on a 32 MB tmpfs this
test mounts, then fills) or its PostgreSQL database turns read-only. The next step must fail with
one clear message before it acts (traffic untouched), and once writes work again the release rolls
back with the chain intact. Real shop processes; needs root for the mount (as CI runs)."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

from release_pipelines.core.states import ReleaseState
from tests.conftest import _create_database, _drop_database
from tests.release_harness import (
    Shop,
    processes_under,
    promote_config,
    release_config,
    rollback_config,
)
from tests.reliability.faults import terminate_backends

FIRST = {"catalog": "1.0.0", "orders": "1.0.0", "frontend": "1.0.0"}


def disk_full(tmp_path: Path, _admin_url: str | None) -> Iterator[tuple[str, Callable[[], None], Callable[[], None]]]:
    mount = tmp_path / "ledgerfs"
    mount.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=32m", "tmpfs", str(mount)], check=True)
    filler = mount / "filler"

    def fill() -> None:
        try:
            with filler.open("wb") as out:
                while True:
                    out.write(b"\0" * 65536)
                    out.flush()
        except OSError:  # ENOSPC: full
            pass

    try:
        yield f"sqlite:///{mount / 'ledger.db'}", fill, lambda: filler.unlink()
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


def read_only(tmp_path: Path, admin_url: str | None) -> Iterator[tuple[str, Callable[[], None], Callable[[], None]]]:
    url = _create_database(admin_url, "rp_readonly_ledger")
    name = make_url(url).database

    def setting(value: str) -> Callable[[], None]:
        def apply() -> None:
            engine = create_engine(admin_url, isolation_level="AUTOCOMMIT")
            with engine.connect() as conn:
                conn.execute(text(f'ALTER DATABASE "{name}" SET default_transaction_read_only = {value}'))
            engine.dispose()
            terminate_backends([url], admin_url)  # sessions pick the setting up when they reconnect
        return apply

    try:
        yield url, setting("on"), setting("off")
    finally:
        _drop_database(admin_url, url)


@pytest.fixture(params=[disk_full, read_only], ids=["disk-full", "read-only"])
def fault(request, tmp_path: Path):
    admin = request.getfixturevalue("postgres_server_url") if request.param is read_only else None
    if request.param is disk_full and os.geteuid() != 0:
        pytest.fail("mounting the small tmpfs needs root (CI runs as root)")
    yield from request.param(tmp_path, admin)


def test_a_ledger_that_refuses_writes_stops_the_step_before_it_acts(fault, tmp_path: Path,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    ledger_url, break_ledger, repair_ledger = fault
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("RELEASE_HOME", str(home))
    monkeypatch.setenv("SHOP_DB_URL", f"sqlite:///{home / 'shop.db'}")
    monkeypatch.setenv("RELEASE_LEDGER_URL", ledger_url)
    monkeypatch.setenv("RELEASE_ACTOR", "ci-launcher")
    monkeypatch.delenv("RELEASE_PROMETHEUS_URL", raising=False)
    shop = Shop(home)
    try:
        assert shop.run("release", release_config(FIRST)).success
        assert shop.run("release", release_config({"orders": "1.1.0"})).success
        release = shop.active()
        weight_before = shop.platform.status("orders").canary_weight
        events_before = len(shop.ledger.events(release.id))

        break_ledger()
        refused = shop.run("promote", promote_config(release.id))
        assert not refused.success
        message = shop.failure_message(refused)
        assert "cannot write to the release ledger" in message and "stopped before acting" in message, message
        assert shop.platform.status("orders").canary_weight == weight_before, "traffic moved without a ledger record"

        repair_ledger()
        assert len(shop.ledger.events(release.id)) == events_before
        rollback = shop.run("rollback", rollback_config(release.id, "ledger was full"))
        assert rollback.success, shop.failure_message(rollback)
        assert shop.ledger.get(release.id).state is ReleaseState.ROLLED_BACK
        assert shop.stable("orders") == "1.0.0" and shop.ledger.verify().ok
    finally:
        shop.stop()
        shop.ledger.close()
        assert not processes_under(home)
