"""steps.shed: the canary sensor takes the traffic off a failing canary at the verdict - weight 0
on each service, idempotent, one ledger event, and a platform error never stops the others."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path

import pytest
from release_pipelines.resources.ledger import Ledger
from release_pipelines.resources.manifest_files import load_product
from release_pipelines.resources.platform import DeployError, ServiceStatus

from release_pipelines.core.states import ReleaseState
from release_pipelines.steps.context import StepContext
from release_pipelines.steps.shed import SENSOR_ACTOR, shed_canaries
from release_pipelines.steps.verdicts import record_verdict_once, recorded_failures

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "shop" / "release.yaml"


class Weights:
    """Only what the shed uses: status and set_weight (release_id taken, as the local platform does)."""

    def __init__(self, weights: dict[str, int], refuse: set[str] = frozenset()):
        self.weights, self.refuse, self.calls = dict(weights), refuse, []

    def status(self, service: str) -> ServiceStatus:
        return ServiceStatus(service, "1.0.0", "1.1.0", self.weights[service], True)

    def set_weight(self, service: str, weight: int, log=print, release_id: str | None = None) -> ServiceStatus:
        self.calls.append((service, weight, release_id))
        if service in self.refuse:
            raise DeployError(f"{service} canary 1.1.0 is not running; abort it")
        self.weights[service] = weight
        return self.status(service)


@pytest.fixture
def setting(tmp_path: Path):
    book = Ledger(f"sqlite:///{tmp_path / 'ledger.db'}")
    release = book.start_release("shop", {"orders": "1.1.0", "catalog": "1.1.0"}, {"orders": "1.0.0"}, "alice")
    return book, release, StepContext(load_product(EXAMPLE), book, release.id, SENSOR_ACTOR, log=lambda _m: None)


def test_weights_go_to_zero_once_and_the_ledger_says_what_who_and_why(setting) -> None:
    book, release, ctx = setting
    platform = Weights({"orders": 25, "catalog": 0})
    result = shed_canaries(ctx, platform, ("catalog", "orders"), f"{release.id}:0:rollback", "canary failed: orders")
    assert (result.shed, result.already, result.errors) == (("orders",), ("catalog",), {})
    assert platform.calls == [("orders", 0, release.id)]
    [event] = [e for e in book.events(release.id) if e.kind == "traffic:shed"]
    assert event.actor == SENSOR_ACTOR and event.payload == {
        "run_key": f"{release.id}:0:rollback", "weights": {"orders": 0}, "already_zero": ["catalog"], "errors": {},
        "tenants_still_routed": {}, "reason": "canary failed: orders"}
    again = shed_canaries(ctx, platform, ("catalog", "orders"), f"{release.id}:0:rollback", "canary failed: orders")
    assert again.shed == () and again.already == ("catalog", "orders") and len(platform.calls) == 1
    assert len([e for e in book.events(release.id) if e.kind == "traffic:shed"]) == 1  # nothing changed: no event


def test_a_platform_error_is_recorded_and_the_other_services_are_still_shed(setting) -> None:
    book, release, ctx = setting
    platform = Weights({"orders": 25, "catalog": 25}, refuse={"catalog"})
    result = shed_canaries(ctx, platform, ("catalog", "orders"), f"{release.id}:0:rollback", "canary failed")
    assert result.shed == ("orders",) and "not running" in result.errors["catalog"]
    [event] = [e for e in book.events(release.id) if e.kind == "traffic:shed"]
    assert event.payload["errors"] == {"catalog": "DeployError: catalog canary 1.1.0 is not running; abort it"}


def test_recorded_failures_are_the_fail_verdicts_of_a_judged_release(setting) -> None:
    book, release, _ = setting
    product, now = load_product(EXAMPLE), datetime.now(UTC)
    fail = {"step": 0, "verdict": "fail", "reason": "orders: error rate", "decided_by": "evidence"}
    record_verdict_once(book, release.id, f"{release.id}:0:promote", {**fail, "verdict": "pass"})
    record_verdict_once(book, release.id, f"{release.id}:1:rollback", {**fail, "step": 1})
    in_canary = replace(release, state=ReleaseState.CANARY, canary_step=1)
    assert recorded_failures(product, in_canary, book, now) == {f"{release.id}:1:rollback": "orders: error rate"}
    assert recorded_failures(product, replace(release, state=ReleaseState.ROLLING_BACK), book, now) == {}
    assert recorded_failures(product, None, book, now) == {}


def test_tenant_scoped_canaries_are_said_to_keep_their_tenants(setting) -> None:
    # the router sends a named tenant to the canary at any weight: the ledger must not claim them safe
    book, release, ctx = setting
    manifest = ctx.product.manifest
    orders = manifest.service("orders")
    scoped = orders.model_copy(update={"canary": orders.canary.model_copy(update={"tenants": ["acme"]})})
    product = replace(ctx.product, manifest=manifest.model_copy(
        update={"services": [scoped if s.name == "orders" else s for s in manifest.services]}))
    result = shed_canaries(replace(ctx, product=product), Weights({"orders": 25}), ("orders",), "k", "canary failed")
    assert result.shed == ("orders",) and result.tenants_still_routed == {"orders": ["acme"]}
    [event] = [e for e in book.events(release.id) if e.kind == "traffic:shed"]
    assert event.payload["tenants_still_routed"] == {"orders": ["acme"]}
