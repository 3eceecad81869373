"""Turn a manifest plus the versions given at launch into an ordered release plan (pure).

A plan holds only what the release changes: the services given new versions and the databases
those services depend on (whose expand migrations must run first). Waves group steps that may
run in parallel; rollback walks the same waves backwards.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Mapping
from dataclasses import dataclass
from enum import Enum

from packaging.specifiers import SpecifierSet
from packaging.version import InvalidVersion, Version

from release_pipelines.core.errors import PlanError
from release_pipelines.core.graph import dependency_edges, waves
from release_pipelines.core.manifest import Manifest

# Versions reach argv templates and process names: refuse anything but a plain version string.
VERSION_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._+-]{0,63}$")


class StepKind(str, Enum):
    migrate = "migrate"
    deploy = "deploy"


@dataclass(frozen=True)
class ServiceChange:
    service: str
    to_version: str
    from_version: str | None = None


@dataclass(frozen=True)
class Step:
    kind: StepKind
    target: str
    wave: int
    change: ServiceChange | None = None

    @property
    def label(self) -> str:
        if self.change is not None:
            return f"deploy {self.target} {self.change.from_version or '-'} -> {self.change.to_version}"
        return f"migrate {self.target} (expand) + gates"


@dataclass(frozen=True)
class ReleasePlan:
    product: str
    changes: tuple[ServiceChange, ...]
    databases: tuple[str, ...]
    waves: tuple[tuple[Step, ...], ...]

    @property
    def steps(self) -> list[Step]:
        return [step for wave in self.waves for step in wave]

    @property
    def rollback_waves(self) -> tuple[tuple[Step, ...], ...]:
        """Reverse dependency order: dependents are undone before what they depend on."""
        return tuple(reversed(self.waves))

    def versions(self) -> dict[str, str]:
        return {c.service: c.to_version for c in self.changes}


def _parse_version(text: str) -> Version | None:
    try:
        return Version(text)
    except InvalidVersion:
        return None


def _api_version(manifest: Manifest, service: str, version: str | None) -> dict[str, str]:
    """The API versions a service serves at a given service version."""
    provides = manifest.service(service).contract.provides
    return {api: (version if v == "{version}" else v) for api, v in provides.items() if version}


def check_versions(
    manifest: Manifest,
    versions: Mapping[str, str],
    current: Mapping[str, str],
    allow_downgrade: bool = False,
) -> list[str]:
    """Every reason the requested versions cannot be released, in words a person can act on."""
    problems: list[str] = []
    names = [s.name for s in manifest.services]
    if not versions:
        problems.append("give at least one service version, e.g. --version " + f"{names[0]}=1.2.3")
    for service, version in versions.items():
        if service not in names:
            guess = difflib.get_close_matches(service, names, n=1)
            hint = f"; did you mean {guess[0]!r}?" if guess else f"; services are: {', '.join(names)}"
            problems.append(f"unknown service {service!r}{hint}")
            continue
        if not VERSION_PATTERN.fullmatch(version):  # fullmatch: `$` would let a trailing newline in
            problems.append(
                f"{service}: version {version!r} is not allowed; use letters, digits and . _ + - only"
            )
            continue
        stable = current.get(service)
        new, old = _parse_version(version), _parse_version(stable) if stable else None
        if stable and version == stable:
            problems.append(f"{service}: {version} is already the stable version")
        elif new and old and new < old and not (allow_downgrade or manifest.allow_downgrade):
            problems.append(
                f"{service}: {version} is lower than the running stable {stable}; "
                "pass --allow-downgrade (or allow_downgrade: true) if that is intended"
            )
    if problems:
        return problems

    # API compatibility: after the release, every consumer's range must accept every provider.
    after = {**current, **versions}
    providers: dict[str, tuple[str, str]] = {}
    for service in manifest.services:
        for api, api_version in _api_version(manifest, service.name, after.get(service.name)).items():
            providers[api] = (service.name, api_version)
    for consumer in manifest.services:
        for api, spec in consumer.contract.requires.items():
            if api not in providers:
                continue
            provider, api_version = providers[api]
            if consumer.name not in versions and provider not in versions:
                continue  # nothing about this pair changes in this release
            parsed = _parse_version(api_version)
            if parsed is None or parsed not in SpecifierSet(spec):
                problems.append(
                    f"incompatible: {consumer.name} requires {api} {spec}, but {provider} "
                    f"{after.get(provider, '?')} would provide {api} {api_version}"
                )
    return problems


def plan_release(
    manifest: Manifest,
    versions: Mapping[str, str],
    current: Mapping[str, str] | None = None,
    allow_downgrade: bool = False,
) -> ReleasePlan:
    """Plan a release of `versions` (service -> new version) given the `current` stable versions."""
    current = dict(current or {})
    problems = check_versions(manifest, versions, current, allow_downgrade)
    if problems:
        raise PlanError(problems)
    edges = dependency_edges(manifest)
    database_names = {d.name for d in manifest.databases}
    needed_databases = {
        dep for service in versions for dep in manifest.service(service).depends_on if dep in database_names
    }
    plan_waves = []
    for index, wave in enumerate(waves(edges, set(versions) | needed_databases)):
        steps = []
        for node in wave:
            if node in database_names:
                steps.append(Step(StepKind.migrate, node, index))
            else:
                change = ServiceChange(node, versions[node], current.get(node))
                steps.append(Step(StepKind.deploy, node, index, change))
        plan_waves.append(tuple(steps))
    changes = tuple(ServiceChange(s, v, current.get(s)) for s, v in sorted(versions.items()))
    return ReleasePlan(manifest.product, changes, tuple(sorted(needed_databases)), tuple(plan_waves))
