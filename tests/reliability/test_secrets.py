"""Secrets: a real release whose app database and ledger URLs carry a password, with a webhook
URL carrying a token; afterwards the password and the token appear nowhere a person or another
system reads: the Dagster event log, the ledger (every table), release notes, the CLI's output
(history, show, migrations status/current, verify-ledger, an unreachable database), service
logs and state under RELEASE_HOME, and the notifier's own error reports."""

from __future__ import annotations

import logging
import shutil
import socket
import uuid
from datetime import UTC, datetime

import pytest
from click.testing import CliRunner
from dagster._serdes import serialize_value
from release_pipelines.resources.notifier import WebhookNotifier
from sqlalchemy import MetaData, create_engine, text
from sqlalchemy.engine import make_url

from release_pipelines.cli.main import main
from release_pipelines.core.records import render_release_notes
from release_pipelines.orchestration.schedules import records_tick
from tests.conftest import _create_database, _drop_database
from tests.release_harness import ROOT, Shop, processes_under, release_config, rollback_config

pytestmark = pytest.mark.postgres

PASSWORD = "S3cret-XYZ"
TOKEN = "T0KEN-b8f2c41e9d"
LATER = ["0003_orders_product_idx.py", "0004_order_currency.py", "0005_currency_not_null.py",
         "0006_drop_legacy_code.py"]


def _dead_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture
def secret_env(postgres_server_url, tmp_path, monkeypatch):
    role = f"rp_secret_{uuid.uuid4().hex[:8]}"
    admin = create_engine(postgres_server_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f"CREATE ROLE {role} LOGIN PASSWORD '{PASSWORD}'"))
    urls = [_create_database(postgres_server_url, "rp_secret") for _ in range(2)]
    with admin.connect() as conn:
        for url in urls:
            conn.execute(text(f'ALTER DATABASE "{make_url(url).database}" OWNER TO {role}'))
    app_url, ledger_url = (
        make_url(u).set(username=role, password=PASSWORD).render_as_string(hide_password=False) for u in urls
    )
    assert PASSWORD in app_url
    product_dir = tmp_path / "shop"
    shutil.copytree(ROOT / "examples" / "shop", product_dir, ignore=shutil.ignore_patterns("__pycache__"))
    later = tmp_path / "later"
    later.mkdir()
    for name in LATER:
        shutil.move(product_dir / "migrations" / "versions" / name, later / name)
    home = tmp_path / "release_home"
    home.mkdir()
    monkeypatch.setenv("RELEASE_HOME", str(home))
    monkeypatch.setenv("SHOP_DB_URL", app_url.replace("postgresql+psycopg2://", "postgresql://"))
    monkeypatch.setenv("RELEASE_LEDGER_URL", ledger_url)
    monkeypatch.setenv("RELEASE_ACTOR", "ci-launcher")
    monkeypatch.setenv("RELEASE_WEBHOOK_URL", f"http://127.0.0.1:{_dead_port()}/hooks/{TOKEN}?token={TOKEN}")
    monkeypatch.delenv("RELEASE_PROMETHEUS_URL", raising=False)
    shop = Shop(home, product_dir / "release.yaml")
    try:
        yield shop, later, app_url
    finally:
        shop.stop()
        shop.ledger.close()
        from release_pipelines.resources.clients import ledger_at

        ledger_at.cache_clear()
        for url in urls:
            _drop_database(postgres_server_url, url)
        with admin.connect() as conn:
            conn.execute(text(f"DROP ROLE IF EXISTS {role}"))
        admin.dispose()
        assert not processes_under(home)


def _cli(*args: str) -> str:
    result = CliRunner().invoke(main, list(args), catch_exceptions=True)
    text_ = result.output + (getattr(result, "stderr", "") if result.stderr_bytes is not None else "")
    assert "Traceback" not in text_, text_
    return text_ + repr(result.exception or "")


def _ledger_dump(url: str) -> str:
    engine = create_engine(url)
    try:
        meta = MetaData()
        meta.reflect(engine)
        with engine.connect() as conn:
            return "\n".join(repr(row) for table in meta.sorted_tables for row in conn.execute(table.select()))
    finally:
        engine.dispose()


def _leaks(text_: str) -> list[str]:
    return [s for s in (PASSWORD, TOKEN) if s in text_]


def test_no_password_or_token_anywhere_after_a_release(secret_env, caplog) -> None:
    shop, later, app_url = secret_env
    notifier = WebhookNotifier.from_env()
    errors: list[str] = []
    notifier.on_error = errors.append
    notifier.retries, notifier.deadline_seconds = 0, 1.0
    cursor: dict = {}
    _, cursor = records_tick(shop.ledger, shop.product, cursor, datetime.now(UTC), notifier)

    first = shop.run("release", release_config({"catalog": "1.0.0", "orders": "1.0.0", "frontend": "1.0.0"}))
    assert first.success, shop.failure_message(first)
    for name in LATER:
        shutil.copy(later / name, shop.product.directory / "migrations" / "versions" / name)
    result = shop.run("release", release_config({"orders": "1.1.0"}))
    assert result.success, shop.failure_message(result)
    release = shop.active()
    with caplog.at_level(logging.DEBUG):
        _, cursor = records_tick(shop.ledger, shop.product, cursor, datetime.now(UTC), notifier)
    assert shop.run("rollback", rollback_config(release.id, "secrets test")).success
    failed = shop.run("release", release_config({"orders": "1.1.0+crash"}))  # a failure path too
    assert not failed.success
    assert shop.run("rollback", rollback_config()).success
    refused = shop.run("release", release_config({"orders": "9.9.9; echo"}))
    assert not refused.success

    found: dict[str, list[str]] = {}
    # the Dagster event log of every run, serialized whole (messages, metadata, failures, config)
    for run in shop.instance.get_runs():
        logs = "\n".join(serialize_value(e) for e in shop.instance.all_logs(run.run_id))
        found[f"dagster run {run.job_name}"] = _leaks(logs + serialize_value(run))
    found["ledger tables"] = _leaks(_ledger_dump(str(shop.ledger.url)))
    found["release notes"] = _leaks("\n".join(
        render_release_notes(r, shop.ledger.events(r.id), shop.ledger.approvals(r.id)) for r in shop.ledger.releases()))
    manifest = str(shop.manifest)
    outputs = {
        "release history": _cli("history"),
        "release show": _cli("show", release.id),
        "release show (unknown id)": _cli("show", "no-such-release"),
        "release verify-ledger": _cli("verify-ledger"),
        "release migrations status": _cli("migrations", "status", "--manifest", manifest, "--database", "shop_db"),
        "release migrations status --url": _cli("migrations", "status", "--script-location",
                                                str(shop.product.directory / "migrations"), "--url", app_url),
        "release migrations status (db down)": _cli(
            "migrations", "status", "--script-location", str(shop.product.directory / "migrations"),
            "--url", app_url.replace(":5432/", f":{_dead_port()}/")),
        "release plan": _cli("plan", manifest, "--version", "orders=2.0.0"),
    }
    found |= {name: _leaks(out) for name, out in outputs.items()}
    assert "current:" in outputs["release migrations status"]
    found["notifier errors + logging"] = _leaks("\n".join(errors) + caplog.text)
    found["files under RELEASE_HOME"] = _leaks("\n".join(
        p.read_text(errors="replace") for p in shop.home.rglob("*") if p.is_file() and p.suffix != ".db"))
    leaks = {where: what for where, what in found.items() if what}
    assert not leaks, f"secrets leaked: {leaks}"
    assert errors, "the dead webhook was reported (without its token)"
