"""Property test: the loader only ever returns a Manifest or raises ManifestError."""

from __future__ import annotations

import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from release_pipelines.core.errors import ManifestError
from release_pipelines.core.manifest import Manifest
from release_pipelines.core.manifest_loader import parse_manifest

KEYS = ["product", "services", "name", "depends_on", "deploy", "local", "command", "canary", "steps",
        "databases", "url", "migrations", "tables", "flags", "windows", "approvals", "health", "contract",
        "provides", "requires", "timezone", "phase", "group", "platform", "x", "naem"]

scalars = st.one_of(
    st.none(), st.booleans(), st.integers(-10**6, 10**6), st.floats(allow_nan=True),
    st.text(max_size=20), st.sampled_from(["shop", "orders", "${DB}", "{python}", "100", "local", "command"]),
)
documents = st.recursive(
    scalars,
    lambda children: st.one_of(
        st.lists(children, max_size=4),
        st.dictionaries(st.one_of(st.sampled_from(KEYS), st.text(max_size=8)), children, max_size=5),
    ),
    max_leaves=30,
)


def _check(text: str) -> None:
    try:
        result = parse_manifest(text, "fuzz.yaml")
    except ManifestError as exc:
        assert exc.problems and all(p.message for p in exc.problems)
    else:
        assert isinstance(result, Manifest)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(documents)
def test_random_documents_never_escape(document: object) -> None:
    _check(yaml.safe_dump(document))


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=200))
def test_random_text_never_escapes(text: str) -> None:
    _check(text)


@settings(max_examples=200, deadline=None)
@given(st.dictionaries(st.sampled_from(KEYS), documents, max_size=6))
def test_near_manifests_never_escape(document: dict) -> None:
    base = {"product": "shop", "services": [{"name": "a", "deploy": {"local": {"command": ["x"]}}}]}
    base.update(document)
    _check(yaml.safe_dump(base))
