"""The release manifest: one YAML file describing a product, validated by these pydantic models.

Pure data and validation only (no I/O, no Dagster): `manifest_loader` reads the file and maps
errors back to YAML lines; the planner and the factories read these models.
"""

from __future__ import annotations

import re
from datetime import date, time
from enum import Enum
from itertools import pairwise
from typing import Annotated, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from packaging.specifiers import InvalidSpecifier, SpecifierSet
from packaging.version import InvalidVersion, Version
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

NAME_PATTERN = r"^[a-z][a-z0-9_-]{0,62}$"
SQL_IDENTIFIER_PATTERN = r"^[a-z_][a-z0-9_]{0,62}$"
ENV_REFERENCE = re.compile(r"^\$\{(?P<var>[A-Z_][A-Z0-9_]*)(?::-(?P<default>[^}]*))?\}$")
PLACEHOLDER = re.compile(r"\{([a-z_]+)\}")

Name = Annotated[str, Field(pattern=NAME_PATTERN, description="lower-case name: a-z, 0-9, _ and -")]
SqlIdentifier = Annotated[
    str, Field(pattern=SQL_IDENTIFIER_PATTERN, description="SQL identifier: a-z, 0-9 and _")
]


class Strict(BaseModel):
    """Every manifest model refuses unknown keys (the loader turns them into 'did you mean')."""

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)


# ---------------------------------------------------------------- services


class LocalDeploy(Strict):
    """How the local platform starts one version of a service: an argv, never a shell string."""

    command: list[str] = Field(
        min_length=1,
        description="argv template; placeholders {version}, {port}, {python}, {service}, {flags_file}",
    )
    env: dict[str, str] = Field(default_factory=dict)
    drain_seconds: float = Field(default=1.0, ge=0, le=600)

    @field_validator("command")
    @classmethod
    def _known_placeholders(cls, argv: list[str]) -> list[str]:
        allowed = {"version", "port", "python", "service", "flags_file", "manifest_dir"}
        for arg in argv:
            for name in PLACEHOLDER.findall(arg):
                if name not in allowed:
                    raise ValueError(
                        f"unknown placeholder {{{name}}} in {arg!r}; allowed: "
                        + ", ".join(f"{{{a}}}" for a in sorted(allowed))
                    )
        return argv


class CommandDeploy(Strict):
    """argv templates for teams that deploy with helm, kubectl or kubectl-argo-rollouts."""

    deploy: list[str] = Field(min_length=1, description="start the canary version")
    set_weight: list[str] = Field(min_length=1, description="route {weight} percent to the canary")
    promote: list[str] = Field(min_length=1, description="make the canary the stable version")
    abort: list[str] = Field(min_length=1, description="all traffic to stable, canary removed")
    timeout_seconds: float = Field(default=300, gt=0, le=3600)

    @model_validator(mode="after")
    def _known_placeholders(self) -> CommandDeploy:
        allowed = {"service", "version", "stable_version", "weight", "product", "release_id"}
        for field in ("deploy", "set_weight", "promote", "abort"):
            for arg in getattr(self, field):
                for name in PLACEHOLDER.findall(arg):
                    if name not in allowed:
                        raise ValueError(
                            f"{field}: unknown placeholder {{{name}}}; allowed: "
                            + ", ".join(f"{{{a}}}" for a in sorted(allowed))
                        )
        return self


class Deploy(Strict):
    """Platform-specific deploy blocks; the product's `platform` chooses which one is used."""

    local: LocalDeploy | None = None
    command: CommandDeploy | None = None

    @model_validator(mode="after")
    def _at_least_one(self) -> Deploy:
        if self.local is None and self.command is None:
            raise ValueError("give a `local` or a `command` block")
        return self


class Health(Strict):
    """How a new version proves it is up. The defaults wait about 30 s (120 retries 0.25 s apart),
    as a Kubernetes startup probe does: a service importing its framework on a busy host can take
    several seconds, and a process that exits is noticed at the next try, not at the end."""

    path: str = Field(default="/healthz", pattern=r"^/[A-Za-z0-9_./-]*$")
    timeout_seconds: float = Field(default=2.0, gt=0, le=60)
    retries: int = Field(default=120, ge=0, le=1000)
    interval_seconds: float = Field(default=0.25, gt=0, le=60)


class MetricKind(str, Enum):
    errors = "errors"
    latency = "latency"
    memory = "memory"
    cpu = "cpu"


class Direction(str, Enum):
    """Which change counts as a regression: an error rate may only fail upward."""

    increase = "increase"
    decrease = "decrease"
    either = "either"


class AnalysisMetric(Strict):
    name: Name
    kind: MetricKind
    direction: Direction = Direction.increase
    critical: bool = True
    query: str | None = Field(
        default=None,
        description="PromQL template for the Prometheus provider; {service} {version} {window}",
    )
    tolerance: float | None = Field(
        default=None, gt=1, le=10, description="relative change that counts as a regression (judge default if empty)"
    )
    absolute_margin: float | None = Field(
        default=None, ge=0, le=1, description="errors: rate increase (0.01 = 1 point) too small to matter"
    )


class OnDeadline(str, Enum):
    rollback = "rollback"
    promote = "promote"
    wait = "wait"


def _default_metrics() -> list[AnalysisMetric]:
    return [
        AnalysisMetric(name="error_rate", kind=MetricKind.errors),
        AnalysisMetric(name="latency", kind=MetricKind.latency, critical=False),
    ]


class Analysis(Strict):
    alpha: float = Field(default=0.05, gt=0, lt=0.5, description="false-rollback rate bound")
    interval_seconds: float = Field(default=30, ge=1, le=3600, description="sensor interval")
    min_step_seconds: float = Field(default=0, ge=0, description="wait at least this per step")
    deadline_seconds: float = Field(default=900, gt=0, description="max wait for evidence per step")
    on_deadline: OnDeadline = OnDeadline.rollback
    metrics: list[AnalysisMetric] = Field(default_factory=_default_metrics, min_length=1)


class Strategy(str, Enum):
    """How a new version takes traffic: judged steps, or all at once after smoke tests."""

    canary = "canary"
    blue_green = "blue_green"


class Canary(Strict):
    steps: list[Annotated[int, Field(gt=0, le=100)]] = Field(default_factory=lambda: [10, 50, 100])
    analysis: Analysis = Field(default_factory=Analysis)
    bake_seconds: float = Field(default=0, ge=0, le=7 * 86400)
    # blue-green (release_pipelines/steps/blue_green.py)
    strategy: Strategy = Field(default=Strategy.canary, description="canary (weighted steps) or blue_green (switch at once)")
    smoke_paths: list[Annotated[str, Field(pattern=r"^/[A-Za-z0-9_./?=&-]*$")]] = Field(
        default_factory=lambda: ["/healthz"], description="blue_green: paths requested directly from the new version"
    )
    keep_warm_seconds: float = Field(default=300, ge=0, le=7 * 86400,
                                     description="blue_green: the old version stays running for an instant switch back")
    # tenant-scoped canaries (resources/router.py)
    tenants: list[Annotated[str, Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$")]] = Field(
        default_factory=list, description="tenants whose requests go to the canary at any weight"
    )
    tenant_header: str = Field(default="X-Tenant", pattern=r"^[A-Za-z][A-Za-z0-9-]{0,62}$")
    tenant_cookie: str = Field(default="tenant", pattern=r"^[A-Za-z][A-Za-z0-9_-]{0,62}$")

    @field_validator("steps")
    @classmethod
    def _increasing_to_100(cls, steps: list[int]) -> list[int]:
        if not steps:  # before steps[-1]: an empty list must be a refusal, not an IndexError
            raise ValueError("give the traffic steps, e.g. [10, 50, 100]")
        if any(b <= a for a, b in pairwise(steps)):
            raise ValueError(f"traffic steps must strictly increase, got {steps}")
        if steps[-1] != 100:
            raise ValueError(f"the last traffic step must be 100, got {steps[-1]}")
        if len(steps) < 2:
            raise ValueError("give at least one judged step below 100 before the final 100, e.g. [10, 100]")
        return steps


class ApiContract(Strict):
    """What a service offers and what it needs from others, checked before a release starts."""

    provides: dict[str, str] = Field(
        default_factory=dict,
        description='api name -> version it serves; "{version}" means the service version',
    )
    requires: dict[str, str] = Field(
        default_factory=dict, description="api name -> PEP 440 range, e.g. '>=1.2,<2'"
    )

    @field_validator("provides")
    @classmethod
    def _versions(cls, provides: dict[str, str]) -> dict[str, str]:
        for api, version in provides.items():
            if version != "{version}":
                try:
                    Version(version)
                except InvalidVersion:
                    raise ValueError(f"{api}: {version!r} is not a version (e.g. 1.4.0)") from None
        return provides

    @field_validator("requires")
    @classmethod
    def _ranges(cls, requires: dict[str, str]) -> dict[str, str]:
        for api, spec in requires.items():
            try:
                SpecifierSet(spec)
            except InvalidSpecifier:
                raise ValueError(f"{api}: {spec!r} is not a version range (e.g. '>=1.2,<2')") from None
        return requires


class Slo(Strict):
    """A service's objectives over its last `window_requests` requests; the unspent part is its
    error budget (preflight refuses a release of a service that has spent it)."""

    availability: float = Field(default=0.995, gt=0, lt=1, description="share of requests that must not fail (5xx)")
    latency_ms: float = Field(default=300, gt=0, description="a request slower than this counts against latency_target")
    latency_target: float = Field(default=0.99, gt=0, lt=1, description="share of requests faster than latency_ms")
    window_requests: int = Field(default=10000, ge=1, description="the budget is computed over this many requests")


class ResourceBudget(Strict):
    """What one running version of the service may use; canary and stable run side by side."""

    memory_mb: float | None = Field(default=None, gt=0, description="resident memory per version (MB)")
    cpu_percent: float | None = Field(default=None, gt=0, le=6400, description="CPU per version (100 = one core)")


class Service(Strict):
    name: Name
    depends_on: list[Name] = Field(default_factory=list, description="services or databases")
    deploy: Deploy
    health: Health = Field(default_factory=Health)
    canary: Canary = Field(default_factory=Canary)
    contract: ApiContract = Field(default_factory=ApiContract)
    reads: list[str] = Field(default_factory=list, description="tables as database.table")
    writes: list[str] = Field(default_factory=list, description="tables as database.table")
    slo: Slo | None = Field(default=None, description="availability/latency objectives (error budget)")
    resources: ResourceBudget | None = Field(default=None, description="memory/cpu budget per running version")


# ---------------------------------------------------------------- databases


class RollbackStrategy(str, Enum):
    downgrade = "downgrade"
    roll_forward = "roll-forward"
    snapshot = "snapshot"


class Table(Strict):
    name: SqlIdentifier
    schema_: SqlIdentifier = Field(default="public", alias="schema")
    columns: dict[SqlIdentifier, str] = Field(
        default_factory=dict, description="schema contract: column -> SQL type after the release"
    )


class DatabaseChecks(Strict):
    row_count_tolerance: float = Field(
        default=0.0, ge=0, le=1, description="allowed relative change in rows across a migration"
    )
    expectations: list[str] = Field(
        default_factory=list, description="Great Expectations suite files (JSON), per table"
    )
    blocking: bool = True


class MigrationsSource(Strict):
    """An Alembic project as its users configure it: a folder, an ini file, or both."""

    path: str | None = Field(default=None, description="script location, relative to the manifest")
    ini: str | None = Field(default=None, description="alembic.ini or pyproject.toml, relative to the manifest")
    section: str = Field(default="alembic", description="the ini section (alembic --name)")
    engine: str | None = Field(default=None, description="multidb template: the one database of `databases`")

    @model_validator(mode="after")
    def _somewhere(self) -> MigrationsSource:
        if self.path is None and self.ini is None:
            raise ValueError("give path (the Alembic folder) or ini (alembic.ini / pyproject.toml)")
        return self

    def __str__(self) -> str:
        return self.path or self.ini or ""


class Database(Strict):
    name: Name
    url: str = Field(description="an environment reference: ${VAR} or ${VAR:-default}")
    migrations: str | MigrationsSource = Field(
        description="Alembic script location relative to the manifest, or {path, ini, section, engine}"
    )
    tables: list[Table] = Field(default_factory=list)
    checks: DatabaseChecks = Field(default_factory=DatabaseChecks)
    rollback: RollbackStrategy = RollbackStrategy.downgrade
    lock_timeout_ms: int = Field(
        default=50, ge=1, le=60_000, description="how long a DDL statement may queue for a lock"
    )
    max_lock_wait_s: float = Field(
        default=60, ge=0, le=3600,
        description="how long DDL waits outside the lock queue for conflicting holders to finish",
    )
    cancel_blockers_after_s: float | None = Field(
        default=None, gt=0, le=3600,
        description="opt-in: end blockers idle in transaction after this long (never active ones)",
    )

    @field_validator("url")
    @classmethod
    def _env_reference(cls, url: str) -> str:
        match = ENV_REFERENCE.match(url)
        if not match:
            raise ValueError(
                "must be an environment reference such as ${SHOP_DB_URL} "
                "(or ${SHOP_DB_URL:-sqlite:///shop.db}); never put a URL with a password here"
            )
        default = match.group("default") or ""
        if re.search(r"://[^/@]*:[^/@]*@", default):
            raise ValueError("the default after :- contains a password; move it to the environment")
        return url


# ---------------------------------------------------------------- flags, windows, approvals


class FlagStep(str, Enum):
    promoted = "promoted"
    completed = "completed"


class Flag(Strict):
    name: Annotated[str, Field(pattern=r"^[a-z][a-z0-9_.-]{0,62}$")]
    default: bool = False
    services: list[Name] = Field(min_length=1, description="services that read this flag")
    enable_at: FlagStep = FlagStep.promoted


Weekday = Literal["mon", "tue", "wed", "thu", "fri", "sat", "sun"]


class AllowedSlot(Strict):
    days: list[Weekday] = Field(min_length=1)
    start: time
    end: time

    @field_validator("start", "end", mode="before")
    @classmethod
    def _wall_clock(cls, value: object) -> object:
        """A quoted "HH:MM" in the window's timezone. YAML reads an unquoted 9:00 as the number 540
        (base 60), which pydantic would take as 00:09 UTC: refused, as is an offset of its own."""
        if isinstance(value, time) and value.tzinfo is None:
            return value
        wall = re.fullmatch(r"([01]?[0-9]|2[0-3]):([0-5][0-9])(?::([0-5][0-9]))?", value) if isinstance(value, str) else None
        if wall is None:
            raise ValueError(f'expected a quoted wall-clock time "HH:MM" in the windows\' timezone, e.g. "09:00", '
                             f"got {value!r} (YAML reads an unquoted 9:00 as the number 540)")
        return time(*(int(part or 0) for part in wall.groups()))

    @model_validator(mode="after")
    def _ordered(self) -> AllowedSlot:
        if self.end <= self.start:
            raise ValueError(f"end {self.end} must be after start {self.start}")
        return self


class Freeze(Strict):
    start: date
    end: date
    reason: str = Field(min_length=3)


class Windows(Strict):
    timezone: str = "UTC"
    allowed: list[AllowedSlot] = Field(default_factory=list, description="empty = any time")
    freezes: list[Freeze] = Field(default_factory=list)

    @field_validator("timezone")
    @classmethod
    def _known_zone(cls, zone: str) -> str:
        try:
            ZoneInfo(zone)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"unknown time zone {zone!r} (use an IANA name like Europe/Berlin)") from None
        return zone


class ApprovalPhase(str, Enum):
    launch = "launch"
    promote = "promote"
    contract = "contract"
    break_glass = "break_glass"


class Signatures(str, Enum):
    required = "required"
    optional = "optional"


OPENSSH_PUBLIC_KEY = re.compile(r"^(ssh-ed25519|ssh-rsa) [A-Za-z0-9+/]+={0,2}( .*)?$")


class SignedBy(Strict):
    """Whose SSH signatures count for an approval rule: `signers` is an OpenSSH allowed_signers
    file (relative to the manifest; read when the manifest loads) or {principal: public key(s)}."""

    signers: str | dict[str, str | list[str]] | None = Field(
        default=None, description="allowed_signers file, or {principal: 'ssh-ed25519 AAAA...'}"
    )
    signatures: Signatures = Field(
        default=Signatures.required, description="optional: unsigned approvals count too (a demo)"
    )

    @field_validator("signers")
    @classmethod
    def _public_keys(cls, signers: str | dict[str, str | list[str]] | None) -> str | dict | None:
        if isinstance(signers, dict):
            for principal, keys in signers.items():
                for key in [keys] if isinstance(keys, str) else keys:
                    if not OPENSSH_PUBLIC_KEY.match(key.strip()):
                        raise ValueError(f"signers.{principal}: {key[:30]!r} is not an OpenSSH ed25519 or RSA "
                                         "public key (the one line of id_ed25519.pub)")
        return signers

    @model_validator(mode="after")
    def _signers_when_required(self) -> SignedBy:
        if self.signatures is Signatures.required and not self.signers:
            raise ValueError("signed approvals need signers (an allowed_signers file or {principal: public key}); "
                             "or set signatures: optional to accept unsigned approvals (a demo only)")
        return self

    def signer_keys(self) -> dict[str, list[str]]:
        """principal -> public keys (a signers file is read into this form when the manifest loads)."""
        if not isinstance(self.signers, dict):
            return {}
        return {p: [k.strip() for k in ([keys] if isinstance(keys, str) else keys)] for p, keys in self.signers.items()}


class ApprovalRule(SignedBy):
    phase: ApprovalPhase
    required: int = Field(default=1, ge=1, le=10)
    group: list[str] = Field(min_length=1, description="who may approve")
    above_weight: int | None = Field(
        default=None, ge=0, le=100, description="for promote: only past this traffic percent"
    )


# ---------------------------------------------------------------- the product


class Platform(str, Enum):
    local = "local"
    command = "command"


# ---------------------------------------------------------------- environments (release_pipelines/environments.py)


class DatabaseOverride(Strict):
    url: str = Field(description="an environment reference: ${VAR} or ${VAR:-default}")

    _env_reference = field_validator("url")(Database._env_reference.__func__)


class PromoteInto(SignedBy):
    """Who must approve before a release's versions enter this environment."""

    group: list[str] = Field(min_length=1, description="who may approve promotion into this environment")
    required: int = Field(default=1, ge=1, le=10)


class Environment(Strict):
    """One stage (staging, production): the same release, with these overrides."""

    name: Annotated[str, Field(pattern=r"^[a-z][a-z0-9]{0,30}$", description="lower-case letters and digits")]
    databases: dict[Name, DatabaseOverride] = Field(default_factory=dict, description="database -> url override")
    flags: dict[Annotated[str, Field(pattern=r"^[a-z][a-z0-9_.-]{0,62}$")], bool] = Field(
        default_factory=dict, description="flag -> default value in this environment"
    )
    windows: Windows | None = Field(default=None, description="replaces the product's windows here")
    approvals: list[ApprovalRule] | None = Field(default=None, description="replaces the product's approvals here")
    promote_into: PromoteInto | None = Field(default=None, description="approval needed to enter this environment")


class Manifest(Strict):
    product: Name
    description: str = ""
    platform: Platform = Platform.local
    services: list[Service] = Field(min_length=1)
    databases: list[Database] = Field(default_factory=list)
    flags: list[Flag] = Field(default_factory=list)
    windows: Windows = Field(default_factory=Windows)
    approvals: list[ApprovalRule] = Field(default_factory=list)
    requests: SignedBy | None = Field(
        default=None,
        description="who may queue releases for a window (`release request`): a request signed with a key "
        "that `signers` lists under the requester's name; absent: unsigned requests are queued as before",
    )
    allow_downgrade: bool = False
    environments: list[Environment] = Field(
        default_factory=list, description="ordered stages; empty = one implicit environment (as before)"
    )

    @model_validator(mode="after")
    def _platform_blocks(self) -> Manifest:
        missing = [s.name for s in self.services if getattr(s.deploy, self.platform.value) is None]
        if missing:
            raise ValueError(
                f"platform is {self.platform.value!r} but these services have no "
                f"deploy.{self.platform.value} block: {', '.join(missing)}"
            )
        return self

    @model_validator(mode="after")
    def _environment_references(self) -> Manifest:
        names = [e.name for e in self.environments]
        if len(set(names)) != len(names):
            raise ValueError(f"environment names must be unique, got {names}")
        databases, flags = {d.name for d in self.databases}, {f.name for f in self.flags}
        for env in self.environments:
            for name in env.databases:
                if name not in databases:
                    raise ValueError(f"environment {env.name}: unknown database {name!r}")
            for name in env.flags:
                if name not in flags:
                    raise ValueError(f"environment {env.name}: unknown flag {name!r}")
        if self.environments and self.environments[0].promote_into is not None:
            raise ValueError(f"environment {names[0]} is the first one: nothing is promoted into it")
        return self

    def service(self, name: str) -> Service:
        return next(s for s in self.services if s.name == name)

    def database(self, name: str) -> Database:
        return next(d for d in self.databases if d.name == name)
