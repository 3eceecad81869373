"""Gates in one scan agree with Great Expectations: the same suites, run compiled to SQL and run
by GX on the same PostgreSQL table, give the same verdicts and the same evidence - for a
passing suite and for a failing one."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from release_pipelines.assets.compiled_gates import compilable, scan_table
from release_pipelines.assets.great_expectations import _validate, read_suite, run_suite
from sqlalchemy import create_engine, text

os.environ.setdefault("GX_ANALYTICS_ENABLED", "false")

ROWS = """
INSERT INTO orders (id, product_id, quantity, status, code, price) VALUES
 (1, 10, 1, 'new', 'A-1', 5.0), (2, 11, 5, 'paid', 'A-2', 7.5), (3, 12, 7, 'paid', 'B-3', 9.0),
 (4, NULL, 50, 'lost', 'A-4', 11.0), (5, 14, NULL, NULL, 'zz', NULL), (5, 15, 7, 'shipped', 'A-6', 30.0),
 (7, 16, 3, 'new', NULL, 2.5), (8, 17, 2, 'weird', 'A-8', 4.0)
"""
PASSING = [
    {"type": "expect_column_values_to_not_be_null", "kwargs": {"column": "code", "mostly": 0.8}},
    {"type": "expect_column_values_to_be_between", "kwargs": {"column": "quantity", "min_value": 1, "max_value": 50}},
    {"type": "expect_column_values_to_be_in_set", "kwargs": {"column": "status", "value_set": ["new", "paid", "shipped"], "mostly": 0.5}},
    {"type": "expect_column_values_to_match_regex", "kwargs": {"column": "code", "regex": "^[A-Z]-[0-9]$", "mostly": 0.8}},
    {"type": "expect_column_values_to_not_be_in_set", "kwargs": {"column": "status", "value_set": ["deleted"]}},
    {"type": "expect_column_values_to_be_unique", "kwargs": {"column": "product_id"}},
    {"type": "expect_table_row_count_to_be_between", "kwargs": {"min_value": 1, "max_value": 100}},
    {"type": "expect_column_mean_to_be_between", "kwargs": {"column": "price", "min_value": 5, "max_value": 15}},
    {"type": "expect_column_min_to_be_between", "kwargs": {"column": "price", "min_value": 1}},
    {"type": "expect_column_max_to_be_between", "kwargs": {"column": "quantity", "max_value": 50}},
]
FAILING = [
    {"type": "expect_column_values_to_not_be_null", "kwargs": {"column": "product_id"}},
    {"type": "expect_column_values_to_be_unique", "kwargs": {"column": "id"}},
    {"type": "expect_column_values_to_be_between", "kwargs": {"column": "quantity", "min_value": 1, "max_value": 7, "strict_max": True}},
    {"type": "expect_column_values_to_be_in_set", "kwargs": {"column": "status", "value_set": ["new", "paid", "shipped"]}},
    {"type": "expect_column_values_to_match_regex", "kwargs": {"column": "code", "regex": "^A-"}},
    {"type": "expect_table_row_count_to_equal", "kwargs": {"value": 9}},
    {"type": "expect_column_mean_to_be_between", "kwargs": {"column": "price", "min_value": 0, "max_value": 5}},
    {"type": "expect_column_max_to_be_between", "kwargs": {"column": "price", "max_value": 20, "strict_max": True}},
    {"type": "expect_column_values_to_be_null", "kwargs": {"column": "code", "mostly": 0.5}},
    {"type": "expect_column_values_to_not_be_null", "kwargs": {"column": "status", "mostly": 0.8}},
]


@pytest.fixture
def orders(postgres_url: str) -> str:
    engine = create_engine(postgres_url)
    with engine.begin() as conn:
        conn.execute(text(
            "CREATE TABLE orders (id int, product_id int, quantity int, status text, code text,"
            " price numeric(10, 2))"
        ))
        conn.execute(text(ROWS))
    engine.dispose()
    return postgres_url


def write_suite(tmp_path: Path, name: str, expectations: list[dict]) -> Path:
    path = tmp_path / f"{name}.json"
    path.write_text(json.dumps({"name": name, "meta": {"table": "orders"}, "expectations": expectations}))
    return path


def both_ways(url: str, tmp_path: Path, name: str, expectations: list[dict]) -> tuple[dict, dict]:
    """{(type, column): outcome} compiled to SQL and by GX, for the same suite."""
    assert all(compilable(e, is_postgres=True) for e in expectations)
    engine = create_engine(url)
    try:
        scan = scan_table(engine, "public", "orders", {name: expectations})
    finally:
        engine.dispose()
    assert scan.left_for_gx[name] == [] and scan.rows == 8
    suite = read_suite(write_suite(tmp_path, name, expectations))
    by_gx = _validate(url, False, "public", "orders", suite, expectations)

    def keyed(outcomes):
        return {(o.expectation, o.column): o for o in outcomes}

    compiled = keyed(scan.outcomes[name])
    assert len(compiled) == len(expectations)
    return compiled, keyed(by_gx)


def assert_same(compiled: dict, by_gx: dict) -> None:
    assert compiled.keys() == by_gx.keys()
    for key, mine in compiled.items():
        theirs = by_gx[key]
        assert mine.success == theirs.success, (key, mine, theirs)
        if mine.success:
            continue
        assert mine.unexpected_count == theirs.unexpected_count, (key, mine, theirs)
        assert mine.unexpected_percent == pytest.approx(theirs.unexpected_percent), (key, mine, theirs)
        assert mine.observed_value == pytest.approx(theirs.observed_value), (key, mine, theirs)
        assert sorted(map(str, mine.sample)) == sorted(map(str, theirs.sample[:5])), (key, mine, theirs)


@pytest.mark.postgres
def test_a_passing_suite_passes_both_ways(orders: str, tmp_path: Path) -> None:
    compiled, by_gx = both_ways(orders, tmp_path, "passing", PASSING)
    assert all(o.success for o in by_gx.values()), [o for o in by_gx.values() if not o.success]
    assert_same(compiled, by_gx)


@pytest.mark.postgres
def test_a_failing_suite_fails_the_same_expectations_with_the_same_evidence(
    orders: str, tmp_path: Path
) -> None:
    compiled, by_gx = both_ways(orders, tmp_path, "failing", FAILING)
    failed = {key for key, o in by_gx.items() if not o.success}
    assert failed == {
        ("expect_column_values_to_not_be_null", "product_id"),
        ("expect_column_values_to_be_unique", "id"),
        ("expect_column_values_to_be_between", "quantity"),
        ("expect_column_values_to_be_in_set", "status"),
        ("expect_column_values_to_match_regex", "code"),
        ("expect_table_row_count_to_equal", None),
        ("expect_column_mean_to_be_between", "price"),
        ("expect_column_max_to_be_between", "price"),
        ("expect_column_values_to_be_null", "code"),
    }
    assert_same(compiled, by_gx)
    duplicates = compiled[("expect_column_values_to_be_unique", "id")]
    assert duplicates.unexpected_count == 2 and duplicates.sample == [5, 5]


@pytest.mark.postgres
def test_run_suite_compiles_what_it_can_and_leaves_the_rest_to_gx(
    orders: str, tmp_path: Path
) -> None:
    by_gx_only = {"type": "expect_column_value_lengths_to_be_between", "kwargs": {"column": "code", "min_value": 3, "max_value": 3}}
    path = write_suite(tmp_path, "mixed", [*FAILING[:3], by_gx_only])
    result = run_suite(orders, "public", "orders", path, database="shop")
    assert not result.passed
    assert result.evidence["compiled_expectations"] == 3
    assert result.evidence["evaluated_expectations"] == 4
    failing = {(f["expectation"], f["column"], f["unexpected_count"]) for f in result.evidence["failing_expectations"]}
    assert failing == {
        ("expect_column_values_to_not_be_null", "product_id", 1),
        ("expect_column_values_to_be_unique", "id", 2),
        ("expect_column_values_to_be_between", "quantity", 3),
        ("expect_column_value_lengths_to_be_between", "code", 1),  # 'zz', found by GX
    }
    assert "4 expectations" in result.summary


@pytest.mark.postgres
def test_a_missing_column_fails_the_expectation_and_says_so(orders: str, tmp_path: Path) -> None:
    path = write_suite(tmp_path, "missing", [
        {"type": "expect_column_values_to_not_be_null", "kwargs": {"column": "no_such_column"}},
    ])
    result = run_suite(orders, "public", "orders", path, database="shop")
    assert not result.passed
    assert "does not exist" in result.evidence["failing_expectations"][0]["error"]
