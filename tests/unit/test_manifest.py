"""The manifest loader: valid example loads; every broken input gets a located, named problem."""

from __future__ import annotations

from datetime import time
from pathlib import Path

import pytest
from release_pipelines.resources.manifest_files import load_manifest

from release_pipelines.core.errors import ManifestError
from release_pipelines.core.manifest import Health
from release_pipelines.core.manifest_loader import parse_manifest

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "examples" / "shop" / "release.yaml"
BROKEN = ROOT / "examples" / "broken"

MINIMAL = """
product: shop
services:
  - name: orders
    deploy: {local: {command: ["{python}", "service.py"]}}
"""


def problems_of(text: str) -> list[str]:
    with pytest.raises(ManifestError) as info:
        parse_manifest(text, "m.yaml")
    return [str(p) for p in info.value.problems]


def test_example_manifest_loads() -> None:
    manifest = load_manifest(EXAMPLE)
    assert manifest.product == "shop"
    assert {s.name for s in manifest.services} == {"catalog", "orders", "frontend"}
    assert manifest.database("shop_db").tables[0].schema_ == "public"


def test_minimal_manifest_gets_defaults() -> None:
    manifest = parse_manifest(MINIMAL)
    service = manifest.service("orders")
    assert service.canary.steps == [10, 50, 100]
    assert service.health.path == "/healthz"
    assert [m.kind.value for m in service.canary.analysis.metrics] == ["errors", "latency"]


@pytest.mark.parametrize(
    ("file", "expected"),
    [
        ("unknown_key.yaml", ["unknown_key.yaml:4: services[0].depnds_on: unknown key 'depnds_on'; did you mean 'depends_on'?"]),
        ("cycle.yaml", ["dependency cycle: catalog -> orders -> frontend -> catalog"]),
        ("unknown_dependency.yaml", ["services[0].depends_on[0]: unknown service or database 'catalogue'; did you mean 'catalog'?"]),
        ("literal_password.yaml", ["literal_password.yaml:8: databases[0].url: must be an environment reference"]),
        ("bad_yaml.yaml", ["bad_yaml.yaml:5: not valid YAML"]),
        (
            "bad_types.yaml",
            [
                "bad_types.yaml:1: product:",
                "services[0].deploy.local.command: Input should be a valid list",
                "services[0].health.timeout_seconds: Input should be greater than 0",
                "traffic steps must strictly increase",
                "windows.timezone: unknown time zone 'Mars/Olympus'",
            ],
        ),
    ],
)
def test_broken_manifests_name_file_line_and_field(file: str, expected: list[str]) -> None:
    with pytest.raises(ManifestError) as info:
        load_manifest(BROKEN / file)
    text = str(info.value)
    for fragment in expected:
        assert fragment in text
    assert len(info.value.problems) == len(expected)


def test_all_problems_reported_at_once() -> None:
    problems = problems_of(
        """
product: shop
services:
  - name: orders
    depends_on: [nope]
    deploy: {local: {command: ["{python}", "{bogus}"]}}
    canary: {steps: [10, 50]}
flags:
  - {name: f1, services: [ordrs]}
"""
    )
    assert len(problems) == 2  # model errors come first; references are checked on a valid model
    assert any("unknown placeholder {bogus}" in p for p in problems)
    assert any("the last traffic step must be 100" in p for p in problems)


def test_reference_problems_all_reported() -> None:
    problems = problems_of(
        """
product: shop
services:
  - name: orders
    depends_on: [nope]
    deploy: {local: {command: ["{python}", "x"]}}
    reads: [shop_db.orders]
    contract: {requires: {catalog-api: ">=1"}}
flags:
  - {name: f1, services: [ordrs]}
"""
    )
    joined = "\n".join(problems)
    assert "unknown service or database 'nope'" in joined
    assert "unknown database 'shop_db'" in joined
    assert "no service provides API 'catalog-api'" in joined
    assert "unknown service 'ordrs'; did you mean 'orders'?" in joined


@pytest.mark.parametrize(
    ("snippet", "fragment"),
    [
        ("product: shop\nservices: []\n", "services: List should have at least 1 item"),
        ("- a\n- b\n", "expected a mapping with `product:`"),
        ("", "the file is empty"),
        ("product: shop\nproduct: other\nservices: []\n", "product: key given twice"),
        (MINIMAL + "platform: command\n", "no deploy.command block: orders"),
        (MINIMAL + "databases:\n  - {name: db, url: '${DB:-postgresql://u:pw@h/db}', migrations: m}\n", "contains a password"),
        (MINIMAL + "approvals:\n  - {phase: launch, group: []}\n", "approvals[0].group"),
        (MINIMAL + "windows:\n  allowed:\n    - {days: [mon], start: '10:00', end: '09:00'}\n", "must be after start"),
    ],
)
def test_field_errors(snippet: str, fragment: str) -> None:
    assert any(fragment in p for p in problems_of(snippet))


def test_missing_file_is_a_manifest_error(tmp_path: Path) -> None:
    with pytest.raises(ManifestError, match="file not found"):
        load_manifest(tmp_path / "nope.yaml")


def test_binary_file_is_a_manifest_error(tmp_path: Path) -> None:
    path = tmp_path / "x.yaml"
    path.write_bytes(b"\xff\xfe\x00garbage")
    with pytest.raises(ManifestError, match="not UTF-8"):
        load_manifest(path)


@pytest.mark.parametrize("slot, shown", [
    ("start: 9:00, end: 17:30", "got 540"),  # YAML 1.1 reads an unquoted 9:00 as 9 * 60
    ('start: 0, end: "23:59"', "got 0"),
    ('start: "09:00+02:00", end: "17:30"', "got '09:00+02:00'"),
])
def test_a_window_time_that_is_not_a_quoted_wall_clock_time_is_refused_by_field(slot: str, shown: str) -> None:
    """pydantic would take a number as seconds after midnight UTC: an unquoted 9:00 opened the window at 00:09."""
    text = MINIMAL + f"windows:\n  timezone: Europe/Berlin\n  allowed:\n    - {{days: [mon], {slot}}}\n"
    [problem] = [p for p in problems_of(text) if "windows.allowed[0].start" in p]
    assert shown in problem and '"09:00"' in problem and "m.yaml:9" in problem
    quoted = parse_manifest(text.replace(slot, 'start: "9:00", end: "17:30:15"'), "m.yaml")
    assert (quoted.windows.allowed[0].start, quoted.windows.allowed[0].end) == (time(9, 0), time(17, 30, 15))


def test_the_default_health_window_lets_a_slow_start_through() -> None:
    health = Health()
    assert health.retries * health.interval_seconds >= 30, "a service on a busy host may take seconds to start"
