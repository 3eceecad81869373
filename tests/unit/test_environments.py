"""Environments in the manifest and the ledger: overrides, validation, one active release per
product and environment, the entry rule (same versions completed green in the previous stage)."""

from __future__ import annotations

import pytest
from pydantic import ValidationError
from release_pipelines.resources.ledger import Ledger

from release_pipelines.core.environments import ProductName, environment_products
from release_pipelines.core.errors import ReleaseAlreadyActive
from release_pipelines.core.manifest import Manifest, Strategy
from release_pipelines.core.product import Product
from release_pipelines.core.states import ReleaseState as S
from release_pipelines.steps.environments import entry_problems

BASE = {
    "product": "shop",
    "services": [{"name": "orders", "deploy": {"local": {"command": ["x", "{port}"]}},
                  "canary": {"strategy": "blue_green", "tenants": ["acme"]}}],
    "databases": [{"name": "shop_db", "url": "${SHOP_DB_URL}", "migrations": "m"}],
    "flags": [{"name": "express", "services": ["orders"]}],
    "approvals": [{"phase": "contract", "group": ["alice"], "signatures": "optional"}],
}


def manifest(**extra) -> Manifest:
    return Manifest.model_validate(BASE | extra)


def test_manifest_without_environments_is_unchanged() -> None:
    plain = manifest()
    assert plain.environments == [] and environment_products(Product(plain, __import__("pathlib").Path("x"))) == []
    assert plain.service("orders").canary.strategy is Strategy.blue_green
    assert plain.service("orders").canary.tenant_header == "X-Tenant"


def test_overrides_per_environment(tmp_path) -> None:
    m = manifest(environments=[
        {"name": "staging", "databases": {"shop_db": {"url": "${STAGING_DB_URL}"}}},
        {"name": "production", "flags": {"express": True}, "approvals": [],
         "promote_into": {"group": ["bob"], "required": 1, "signatures": "optional"}},
    ])
    staging, production = environment_products(Product(m, tmp_path / "release.yaml"))
    assert (staging.name, staging.name.base, staging.name.environment) == ("shop_staging", "shop", "staging")
    assert staging.manifest.database("shop_db").url == "${STAGING_DB_URL}"
    assert production.manifest.database("shop_db").url == "${SHOP_DB_URL}"
    assert production.manifest.flags[0].default is True and staging.manifest.flags[0].default is False
    assert production.manifest.approvals == [] and staging.manifest.approvals == m.approvals


@pytest.mark.parametrize("environments, message", [
    ([{"name": "a"}, {"name": "a"}], "unique"),
    ([{"name": "a", "databases": {"nope": {"url": "${X}"}}}], "unknown database"),
    ([{"name": "a", "flags": {"nope": True}}], "unknown flag"),
    ([{"name": "a", "promote_into": {"group": ["x"], "signatures": "optional"}}], "first one"),
    ([{"name": "a", "databases": {"shop_db": {"url": "postgresql://u:pw@h/db"}}}], "environment reference"),
])
def test_bad_environments_are_refused(environments, message) -> None:
    with pytest.raises(ValidationError, match=message):
        manifest(environments=environments)


def test_one_active_release_per_product_and_environment(tmp_path) -> None:
    book = Ledger(f"sqlite:///{tmp_path / 'ledger.db'}")
    staging = book.start_release(ProductName("shop", "staging"), {"orders": "2"}, {}, "ann")
    production = book.start_release("shop", {"orders": "1"}, {}, "ann", environment="production")
    plain = book.start_release("shop", {"orders": "1"}, {}, "ann")
    assert (staging.environment, production.environment, plain.environment) == ("staging", "production", "")
    assert staging.id.startswith("shop-staging-")
    with pytest.raises(ReleaseAlreadyActive, match="shop in staging"):
        book.start_release(ProductName("shop", "staging"), {"orders": "3"}, {}, "ann")
    assert book.active_release(ProductName("shop", "staging")).id == staging.id
    assert book.active_release("shop").id == plain.id  # the old API: the implicit environment
    assert len(book.releases("shop")) == 3 and [r.id for r in book.releases("shop", environment="staging")] == [staging.id]
    book.close()


def test_entry_needs_the_same_versions_completed_green_before(tmp_path) -> None:
    m = manifest(environments=[{"name": "staging"},
                               {"name": "production", "promote_into": {"group": ["bob", "ann"], "required": 1, "signatures": "optional"}}])
    _, production = environment_products(Product(m, tmp_path / "release.yaml"))
    book = Ledger(f"sqlite:///{tmp_path / 'ledger.db'}")
    assert "no release of these versions" in entry_problems(production, {"orders": "2"}, book, "ann")[0]
    release = book.start_release(ProductName("shop", "staging"), {"orders": "2"}, {}, "ann")
    assert "is planned, not completed" in entry_problems(production, {"orders": "2"}, book, "ann")[0]
    for state in (S.PREFLIGHT, S.EXPANDING, S.CANARY):
        book.transition(release.id, state, "ann")
    book.record(release.id, "verdict", "sensor", payload={"verdict": "fail", "step": 0})
    for state in (S.PROMOTING, S.COMPLETED):
        book.transition(release.id, state, "ann")
    assert "not green: canary verdict failed" in entry_problems(production, {"orders": "2"}, book, "carl")[0]
    green = book.start_release(ProductName("shop", "staging"), {"orders": "2"}, {}, "ann")
    for state in (S.PREFLIGHT, S.EXPANDING, S.CANARY, S.PROMOTING, S.COMPLETED):
        book.transition(green.id, state, "ann")
    assert "more approval(s) from bob" in entry_problems(production, {"orders": "2"}, book, "carl")[0]
    book.add_approval(green.id, "promote_into:production", "ann")  # the launcher's own approval does not count
    assert entry_problems(production, {"orders": "2"}, book, "carl")
    book.add_approval(green.id, "promote_into:production", "bob")
    assert entry_problems(production, {"orders": "2"}, book, "carl") == []
    assert entry_problems(production, {"orders": "3"}, book, "carl")  # never re-chosen
    book.close()
