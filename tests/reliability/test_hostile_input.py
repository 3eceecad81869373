"""Hostile input: generated manifests and run configs, and a hand-written corpus of malformed
manifests (tests/reliability/corpus/: bad YAML, wrong types, unicode, deep nesting, SQL in names,
shell metacharacters, a YAML bomb, tabs, BOM, duplicate keys, binary; a > 2 MB file is made here).

The promise: zero tracebacks - only ManifestError / PlanError - and every refusal says where: a
field path, or a line for problems of the file itself. Through `release validate` too: exit code
2, no "Traceback". Each corpus file's first line says a fragment its refusal must contain.
"""

from __future__ import annotations

import copy
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from release_pipelines.resources.manifest_files import load_manifest

from release_pipelines.cli.main import main
from release_pipelines.core.errors import ManifestError, PlanError
from release_pipelines.core.manifest import Manifest
from release_pipelines.core.manifest_loader import parse_manifest
from release_pipelines.core.planner import plan_release
from release_pipelines.orchestration.jobs.release import ReleaseConfig
from tests.release_harness import EXAMPLE

CORPUS = sorted((Path(__file__).parent / "corpus").glob("*.yaml"))
SHOP_TEXT = EXAMPLE.read_text()
SHOP = yaml.safe_load(SHOP_TEXT)
SHOP_MANIFEST = load_manifest(EXAMPLE)
WHOLE_FILE = ("not UTF-8 text", "file is larger than", "not valid YAML: unacceptable character", "file not found")
SAFE_VERSION = re.compile(r"[A-Za-z0-9][A-Za-z0-9._+-]{0,63}")

HOSTILE_TEXT = st.one_of(
    st.text(max_size=40),
    st.sampled_from([
        "orders; drop table x", "'; DROP TABLE orders; --", 'or"ders', "$(touch /tmp/pwned)", "`id`", "a|sh",
        "1.2.3\n", "1.2.3 && rm -rf /", "--help", "-rf", "{python}", "{version}", "${HOME}", "${SHOP_DB_URL}",
        "\ufeffshop", "ｓｈｏｐ", "o\u0000rders", "\u202eorders", "ä" * 70, "a" * 5000, "", " ", "\t", "%s%s%n",
        "../../etc/passwd", "*", "&anchor", "!!python/object:os.system", "null", "~", "yes", "0x1F", "1e999",
    ]),
)
HOSTILE_VALUE = st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(-(2**70), 2**70),
              st.floats(allow_nan=True, allow_infinity=True), HOSTILE_TEXT),
    lambda children: st.one_of(st.lists(children, max_size=3), st.dictionaries(HOSTILE_TEXT, children, max_size=3)),
    max_leaves=8,
)


def _paths(node, prefix=()):
    """Every path into the shop manifest's data (to replace the value there)."""
    yield prefix
    if isinstance(node, dict):
        for key, value in node.items():
            yield from _paths(value, prefix + (key,))
    elif isinstance(node, list):
        for i, value in enumerate(node):
            yield from _paths(value, prefix + (i,))


SHOP_PATHS = [p for p in _paths(SHOP) if p]


def _refused_well(exc: ManifestError) -> None:
    assert exc.problems, "a refusal without problems"
    for problem in exc.problems:
        assert problem.message
        whole_file = problem.message.startswith(WHOLE_FILE)  # the file itself, not one field of it
        assert problem.path or problem.line or whole_file, f"refusal names neither a field nor a line: {problem}"


def _check_text(text: str) -> None:
    try:
        result = parse_manifest(text, "hostile.yaml")
    except ManifestError as exc:
        _refused_well(exc)
    else:
        assert isinstance(result, Manifest)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(st.lists(st.tuples(st.sampled_from(SHOP_PATHS), HOSTILE_VALUE), min_size=1, max_size=3), st.booleans())
def test_mutated_shop_manifests_are_refused_by_field_or_accepted(mutations, add_key) -> None:
    data = copy.deepcopy(SHOP)
    for path, value in mutations:
        target = data
        try:
            for part in path[:-1]:
                target = target[part]
            target[path[-1]] = value
        except (KeyError, IndexError, TypeError):
            continue  # an earlier mutation replaced the parent
    if add_key:
        data["servics"] = mutations[0][1]
    text = yaml.safe_dump(data, allow_unicode=True)
    try:
        parse_manifest(text, "hostile.yaml")
    except ManifestError as exc:
        _refused_well(exc)
        if add_key:
            assert any(p.path == "servics" and "did you mean 'services'" in p.message for p in exc.problems) \
                or any(not p.path for p in exc.problems)
    else:
        assert not add_key, "an unknown top-level key was accepted"


YAML_BITS = st.sampled_from(["product: shop\n", "services:\n", "  - name: a\n", "    deploy: {local: {command: [x]}}\n",
                             "&a ", "*a ", "!!binary ", "!!python/name:os.system ", "<<: *a\n", "\t", "\ufeff",
                             "--- ", "...\n", "? ", ": ", "- ", "[", "]", "{", "}", "'", '"', "#", "|\n", ">\n",
                             "%YAML 1.1\n", "\x00", "\x85", "\u2028"])


@settings(max_examples=1200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.one_of(YAML_BITS, st.text(max_size=10)), max_size=40))
def test_yaml_shaped_noise_never_escapes(parts) -> None:
    _check_text("".join(parts))


@settings(max_examples=3000, deadline=None)
@given(st.dictionaries(st.one_of(st.sampled_from(["catalog", "orders", "frontend"]), HOSTILE_TEXT), HOSTILE_TEXT,
                       max_size=5),
       st.dictionaries(st.sampled_from(["catalog", "orders", "frontend"]), HOSTILE_TEXT, max_size=3),
       st.booleans())
def test_run_config_versions_are_planned_or_refused_by_name(versions, current, allow_downgrade) -> None:
    config = ReleaseConfig(versions=versions, allow_downgrade=allow_downgrade)  # what the Launchpad accepts
    try:
        plan = plan_release(SHOP_MANIFEST, config.versions, current, config.allow_downgrade)
    except PlanError as exc:
        assert exc.problems
        for problem in exc.problems:
            assert (not versions and "at least one" in problem) or "incompatible" in problem or any(
                repr(name) in problem or f"{name}:" in problem or f"{name} " in problem for name in versions
            ), f"refusal names no service: {problem!r} for {versions!r}"
    else:
        assert versions
        for change in plan.changes:
            assert change.service in {"catalog", "orders", "frontend"}
            assert SAFE_VERSION.fullmatch(change.to_version), f"unsafe version accepted: {change.to_version!r}"


@pytest.mark.parametrize("path", CORPUS, ids=lambda p: p.name)
def test_corpus_is_refused_with_the_right_words(path: Path) -> None:
    expect = path.read_bytes().split(b"\n", 1)[0].decode("utf-8", "replace").split("expect:", 1)[-1].strip()
    started = time.monotonic()
    with pytest.raises(ManifestError) as refused:
        load_manifest(path)
    assert time.monotonic() - started < 5, "refusing took too long"
    _refused_well(refused.value)
    assert expect in str(refused.value), str(refused.value)
    result = CliRunner().invoke(main, ["validate", str(path)], catch_exceptions=False)
    output = result.output + (result.stderr if result.stderr_bytes is not None else "")
    assert result.exit_code == 2 and "Traceback" not in output
    squeeze = lambda s: "".join(s.split())  # noqa: E731 - rich wraps long lines
    assert squeeze(expect) in squeeze(output)
    for problem in refused.value.problems:  # the CLI prints each message whole (no markup eaten)
        assert squeeze(problem.message) in squeeze(output), problem.message


def test_huge_manifest_is_refused_without_parsing(tmp_path: Path) -> None:
    path = tmp_path / "huge.yaml"
    path.write_text(SHOP_TEXT + "# " + "x" * 2_100_000 + "\n")
    started = time.monotonic()
    with pytest.raises(ManifestError, match="larger than"):
        load_manifest(path)
    assert time.monotonic() - started < 2


def test_release_validate_binary_exits_2_without_traceback(tmp_path: Path) -> None:
    """The installed command, as a person runs it (the rest of the corpus goes through CliRunner)."""
    huge = tmp_path / "huge.yaml"
    huge.write_text("product: shop\n" + "#" * 2_100_000)
    release = Path(sys.executable).with_name("release")
    for path in [huge, *(p for p in CORPUS if p.stem in ("billion_laughs", "binary", "sql_in_table_name"))]:
        done = subprocess.run([str(release), "validate", str(path)], capture_output=True, text=True, timeout=60)
        assert done.returncode == 2, (path.name, done.stdout, done.stderr)
        assert "Traceback" not in done.stdout + done.stderr and "error:" in done.stderr, path.name
