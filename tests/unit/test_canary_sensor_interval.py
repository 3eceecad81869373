"""The canary sensor looks as often as Dagster's sensor daemon allows, whatever the manifest says."""

from __future__ import annotations

from pathlib import Path

from dagster import job, op
from dagster._daemon.sensor import MIN_INTERVAL_LOOP_TIME

from release_pipelines.core.manifest_loader import parse_manifest
from release_pipelines.core.product import Product
from release_pipelines.orchestration.canary_sensor import SENSOR_DAEMON_LOOP_SECONDS, build_canary_sensor

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "shop" / "release.yaml"


@op
def noop() -> None:
    pass


@job
def promote() -> None:
    noop()


@job
def rollback() -> None:
    noop()


def interval_for(text: str) -> int | None:
    return build_canary_sensor(Product(parse_manifest(text, str(EXAMPLE)), EXAMPLE), promote,
                               rollback).minimum_interval_seconds


def test_the_floor_is_the_daemons_loop() -> None:
    assert SENSOR_DAEMON_LOOP_SECONDS == MIN_INTERVAL_LOOP_TIME  # a Dagster upgrade that changes it fails here


def test_a_slow_manifest_interval_no_longer_slows_the_looks_and_a_fast_one_is_kept() -> None:
    text = EXAMPLE.read_text()
    assert "interval_seconds: 5" in text
    assert interval_for(text) == 5
    assert interval_for(text.replace("interval_seconds: 5", "interval_seconds: 60")) == SENSOR_DAEMON_LOOP_SECONDS
    assert interval_for(text.replace("interval_seconds: 5", "interval_seconds: 2")) == 2
