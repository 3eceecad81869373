"""Injection: identifiers from manifests are validated before they reach SQL and quoted when they
do; command templates never reach a shell - unsafe values are refused before anything runs, and
literal template text with shell metacharacters arrives in argv byte for byte."""

from __future__ import annotations

import json
import os
import stat
import sys
from pathlib import Path

import pytest
from release_pipelines.assets.gates import count_rows, schema_contract
from release_pipelines.resources.command_platform import (
    CommandPlatform,
    CommandRunner,
    UnsafeValueError,
)
from release_pipelines.resources.manifest_files import load_manifest
from sqlalchemy import create_engine, text

from release_pipelines.core.errors import ManifestError
from release_pipelines.core.manifest import (
    CommandDeploy,
    Deploy,
    Manifest,
    Platform,
    Service,
    Table,
)

HOSTILE_TABLES = ["orders; drop table x", 'or"ders', "orders--", "orders/*", "Orders", "1orders", "orders x",
                  "orders'", "pg_catalog.pg_class", "ордеры", ""]

RECORDER = f"""#!{sys.executable}
import json, os, sys
with open(os.environ["ARGV_LOG"], "a") as out:
    out.write(json.dumps(sys.argv[1:]) + "\\n")
"""


def _manifest_yaml(table: str) -> str:
    return f"""
product: shop
services:
  - name: orders
    depends_on: [shop_db]
    deploy: {{local: {{command: ["{{python}}", "-c", "pass"]}}}}
databases:
  - name: shop_db
    url: ${{SHOP_DB_URL}}
    migrations: migrations
    tables:
      - name: {json.dumps(table)}
        columns: {{id: integer}}
"""


@pytest.mark.parametrize("table", HOSTILE_TABLES)
def test_hostile_table_names_are_refused_by_the_manifest(tmp_path: Path, table: str) -> None:
    path = tmp_path / "release.yaml"
    path.write_text(_manifest_yaml(table), encoding="utf-8")
    with pytest.raises(ManifestError) as refused:
        load_manifest(path)
    assert "databases[0].tables[0].name" in str(refused.value)


@pytest.mark.parametrize("column", ["id; drop table x", 'a"b', "a b"])
def test_hostile_column_names_are_refused(tmp_path: Path, column: str) -> None:
    path = tmp_path / "release.yaml"
    path.write_text(_manifest_yaml("orders").replace("{id: integer}", "{" + json.dumps(column) + ": integer}"))
    with pytest.raises(ManifestError) as refused:
        load_manifest(path)
    assert "databases[0].tables[0].columns" in str(refused.value)


def test_gates_quote_identifiers(tmp_path: Path) -> None:
    """A legal identifier that is also an SQL keyword works only because the gates quote it."""
    engine = create_engine(f"sqlite:///{tmp_path / 'db.sqlite'}")
    with engine.begin() as conn:
        conn.execute(text('create table "order" ("select" integer, "from" varchar)'))
        conn.execute(text('insert into "order" values (1, \'a\'), (2, \'b\')'))
    statements: list[str] = []
    from sqlalchemy import event

    event.listen(engine, "before_cursor_execute", lambda *a: statements.append(a[2]))
    table = Table.model_validate({"name": "order", "columns": {"select": "integer", "from": "varchar"}})
    assert count_rows(engine, table) == 2
    assert schema_contract(engine, table, database="db").passed
    assert any('"order"' in s for s in statements), statements


def _recorder(tmp_path: Path) -> Path:
    script = tmp_path / "recorder"
    script.write_text(RECORDER)
    script.chmod(script.stat().st_mode | stat.S_IEXEC)
    return script


LITERAL = "--note=$(touch {mark}); `touch {mark}` | sh && echo pwned > {mark} ; rm -rf ~ * ?"


def _command_platform(tmp_path: Path, literal: str) -> CommandPlatform:
    recorder = str(_recorder(tmp_path))
    commands = CommandDeploy(
        deploy=[recorder, "deploy", "{service}", "{version}", literal],
        set_weight=[recorder, "weight", "{service}", "{weight}"],
        promote=[recorder, "promote", "{service}"],
        abort=[recorder, "abort", "{service}"],
        timeout_seconds=20,
    )
    manifest = Manifest(product="shop", platform=Platform.command,
                        services=[Service(name="orders", deploy=Deploy(command=commands))])
    runner = CommandRunner(env=os.environ | {"ARGV_LOG": str(tmp_path / "argv.log")})
    return CommandPlatform(manifest, runner, state_file=tmp_path / "state.json", release_id="rel-1")


@pytest.mark.parametrize("version", ["$(touch {mark})", "1.0.0;touch {mark}", "1.0.0`touch {mark}`",
                                     "1.0.0 && touch {mark}", "1.0.0|touch {mark}", "1.0.0\ntouch {mark}",
                                     "1.0.0>{mark}", "1.0.0\n", "1.0.0\n--set=x"])
def test_unsafe_version_is_refused_before_anything_runs(tmp_path: Path, version: str) -> None:
    mark = tmp_path / "pwned"
    platform = _command_platform(tmp_path, "plain")
    with pytest.raises(UnsafeValueError):
        platform.deploy_canary("orders", version.format(mark=mark))
    assert not (tmp_path / "argv.log").exists(), "a command ran"
    assert not mark.exists()


@pytest.mark.parametrize("version", ["1.0.0\n", "1.0.0\n--help"])
def test_local_platform_refuses_a_version_with_a_newline(tmp_path: Path, version: str) -> None:
    from release_pipelines.resources.local_platform import LocalPlatform
    from release_pipelines.resources.platform import DeployError

    manifest = Manifest.model_validate({"product": "shop", "services": [
        {"name": "orders", "deploy": {"local": {"command": [str(_recorder(tmp_path)), "{version}"]}}}]})
    with pytest.raises(DeployError, match="not a valid version"):
        LocalPlatform(manifest, tmp_path, tmp_path / "state").deploy_canary("orders", version)
    assert not (tmp_path / "argv.log").exists()


def test_template_metacharacters_reach_argv_literally(tmp_path: Path) -> None:
    mark = tmp_path / "pwned"
    literal = LITERAL.format(mark=mark)
    platform = _command_platform(tmp_path, literal)
    platform.deploy_canary("orders", "1.0.0")
    [argv] = [json.loads(line) for line in (tmp_path / "argv.log").read_text().splitlines()]
    assert argv == ["deploy", "orders", "1.0.0", literal]
    assert not mark.exists() and not (Path.home() / "pwned").exists()


def test_local_platform_argv_is_literal_too(tmp_path: Path) -> None:
    """The local platform's argv template: the same literal text, no shell."""
    from release_pipelines.resources.local_platform import LocalPlatform

    mark = tmp_path / "pwned"
    literal = LITERAL.format(mark=mark)
    recorder = _recorder(tmp_path)
    manifest = Manifest.model_validate({
        "product": "shop",
        "services": [{
            "name": "orders",
            "deploy": {"local": {"command": [str(recorder), "{service}", "{version}", literal],
                                 "env": {"ARGV_LOG": str(tmp_path / "argv.log")}, "drain_seconds": 0}},
            "health": {"retries": 0, "interval_seconds": 0.05, "timeout_seconds": 0.2},
        }],
    })
    platform = LocalPlatform(manifest, tmp_path, tmp_path / "state")
    try:
        with pytest.raises(Exception):  # the recorder exits at once: its health check fails
            platform.deploy_canary("orders", "1.0.0")
    finally:
        platform.stop_all()
    [argv] = [json.loads(line) for line in (tmp_path / "argv.log").read_text().splitlines()]
    assert argv == ["orders", "1.0.0", literal]
    assert not mark.exists()
