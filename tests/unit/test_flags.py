"""FlagStore writes the flagd file format; FlagFileProvider serves it through the OpenFeature SDK."""

from __future__ import annotations

import json
import threading
from pathlib import Path

import pytest
from openfeature import api
from openfeature.exception import ErrorCode
from openfeature.flag_evaluation import Reason
from release_pipelines.resources.flags import FlagError, FlagFileProvider, FlagStore

from release_pipelines.core.manifest import Flag


def _flag(name: str, default: bool = False) -> Flag:
    return Flag(name=name, default=default, services=["orders"])


def test_ensure_writes_flagd_format_and_keeps_switched_flags(tmp_path: Path) -> None:
    store = FlagStore(tmp_path / "flags.json")
    assert store.ensure([_flag("express-checkout"), _flag("dark-mode", default=True)]) == [
        "express-checkout", "dark-mode"
    ]
    assert json.loads((tmp_path / "flags.json").read_text())["flags"]["express-checkout"] == {
        "state": "ENABLED", "variants": {"on": True, "off": False}, "defaultVariant": "off"
    }
    store.set("express-checkout", True)
    assert store.ensure([_flag("express-checkout")]) == []
    assert store.all() == {"express-checkout": True, "dark-mode": True}


def test_set_keeps_unrelated_flags_and_fields(tmp_path: Path) -> None:
    path = tmp_path / "flags.json"
    foreign = {"state": "ENABLED", "variants": {"red": "#f00", "blue": "#00f"}, "defaultVariant": "red",
               "targeting": {"if": [True, "blue"]}}
    path.write_text(json.dumps({"$schema": "https://flagd.dev/schema/v0/flags.json", "flags": {"color": foreign}}))
    FlagStore(path).set("express-checkout", True)
    document = json.loads(path.read_text())
    assert document["flags"]["color"] == foreign
    assert document["$schema"].startswith("https://flagd.dev")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["flags.json", "flags.json.lock"], "no temp files left"


def test_get_unknown_flag_and_broken_file_are_clear_errors(tmp_path: Path) -> None:
    store = FlagStore(tmp_path / "flags.json")
    with pytest.raises(FlagError, match="'nope' is not in"):
        store.get("nope")
    (tmp_path / "flags.json").write_text("{not json")
    with pytest.raises(FlagError, match="not valid JSON"):
        store.set("x", True)


def test_concurrent_writers_lose_no_update(tmp_path: Path) -> None:
    path = tmp_path / "flags.json"
    threads = [threading.Thread(target=FlagStore(path).set, args=(f"flag-{i}", i % 2 == 0)) for i in range(20)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert FlagStore(path).all() == {f"flag-{i}": i % 2 == 0 for i in range(20)}


def test_provider_through_openfeature_sdk_follows_file_changes(tmp_path: Path) -> None:
    path = tmp_path / "flags.json"
    store = FlagStore(path)
    store.ensure([_flag("express-checkout")])
    api.set_provider(FlagFileProvider(path), domain="test-flags")
    client = api.get_client("test-flags")
    assert client.get_boolean_value("express-checkout", True) is False
    store.set("express-checkout", True)
    details = client.get_boolean_details("express-checkout", False)
    assert (details.value, details.variant, details.reason) == (True, "on", Reason.STATIC)

    missing = client.get_boolean_details("unknown-flag", True)
    assert (missing.value, missing.error_code) == (True, ErrorCode.FLAG_NOT_FOUND)
    assert client.get_string_details("express-checkout", "x").error_code == ErrorCode.TYPE_MISMATCH

    document = json.loads(path.read_text())
    document["flags"]["express-checkout"]["state"] = "DISABLED"
    path.write_text(json.dumps(document))
    disabled = client.get_boolean_details("express-checkout", False)
    assert (disabled.value, disabled.reason) == (False, Reason.DISABLED)
    assert store.get("express-checkout") is False
