"""Entering an environment, read from the ledger: the previous stage completed the same versions
green, and the entry approvals are in (`core.environments` has the rules of the stages)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from release_pipelines.core.environments import approval_phase, previous_environment
from release_pipelines.core.manifest import Environment
from release_pipelines.core.product import Product
from release_pipelines.core.states import ReleaseState
from release_pipelines.steps.approval import entry_approvers


def not_green(book: Any, release_id: str) -> list[str]:
    """Why a completed release does not count as green: a failed gate or a failing verdict."""
    reasons = []
    for event in book.events(release_id):
        if event.kind == "gate" and not event.payload.get("passed", True):
            reasons.append(f"gate {event.payload.get('gate')} on {event.payload.get('table')} failed")
        elif event.kind == "verdict" and event.payload.get("verdict") == "fail":
            reasons.append(f"canary verdict failed at step {event.payload.get('step')}")
    return reasons


def qualifying_release(book: Any, product: str, environment: str, versions: Mapping[str, str]) -> tuple[Any, str | None]:
    """The newest completed, green release of `versions` in `environment`, or (None, why not)."""
    wanted = dict(versions)
    same = [r for r in book.releases(product, limit=1000, environment=environment) if r.versions == wanted]
    shown = ", ".join(f"{s}={v}" for s, v in sorted(wanted.items()))
    if not same:
        return None, f"{environment} has no release of these versions ({shown}); release them to {environment} first"
    reasons: list[str] = []
    for release in same:  # newest first
        if release.state is not ReleaseState.COMPLETED:
            reasons.append(f"release {release.id} in {environment} is {release.state.value}, not completed")
            continue
        red = not_green(book, release.id)
        if red:
            reasons.append(f"release {release.id} in {environment} completed but is not green: {'; '.join(red)}")
            continue
        return release, None
    return None, "; ".join(reasons[:3])


def missing_entry_approvals(env: Environment, book: Any, previous_release: Any, actor: str) -> str | None:
    rule = env.promote_into
    if rule is None:
        return None
    excluded = {previous_release.created_by, actor}
    got = [name.split(" ")[0] for name in
           entry_approvers(rule, rule.group, book, previous_release, approval_phase(env.name), excluded)]
    if len(got) >= rule.required:
        return None
    eligible = [g for g in rule.group if g not in excluded and g not in got]
    return (f"entering {env.name} needs {rule.required - len(got)} more approval(s) from {', '.join(eligible) or 'nobody eligible'} "
            f"(not the launcher {previous_release.created_by} nor {actor}; have: {', '.join(got) or 'none'}); "
            f"run: release approve-env {previous_release.id} --to {env.name} --as NAME")


def entry_problems(product: Product, versions: Mapping[str, str], book: Any, actor: str) -> list[str]:
    """Preflight for an environment's release: the previous environment completed these exact
    versions (gates and verdicts green) and the entry approvals are in. [] for the first stage
    and for products without environments."""
    environment = getattr(product, "environment", "")
    if not environment:
        return []
    manifest = product.manifest
    previous = previous_environment(manifest, environment)
    if previous is None:
        return []
    base = manifest.product
    release, why = qualifying_release(book, base, previous.name, versions)
    if release is None:
        return [f"{environment} is entered only after {previous.name} completed the same versions: {why}"]
    env = next(e for e in manifest.environments if e.name == environment)
    waiting = missing_entry_approvals(env, book, release, actor)
    return [waiting] if waiting else []


def where_versions_ran(book: Any, product: str, environments: list[str]) -> dict[str, Any]:
    """environment -> the newest completed release there (None if none): which versions ran where."""
    found: dict[str, Any] = {}
    for environment in environments:
        completed = [r for r in book.releases(product, limit=200, environment=environment)
                     if r.state is ReleaseState.COMPLETED]
        found[environment] = completed[0] if completed else None
    return found
