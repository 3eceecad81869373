"""Feature flags in a file, in the OpenFeature flagd JSON format, plus an OpenFeature provider for it.

    {"flags": {"express-checkout": {"state": "ENABLED", "variants": {"on": true, "off": false},
                                    "defaultVariant": "off"}}}

The release writes with `FlagStore` (locked read-modify-write, atomic rename, so a service never
reads half a file); services read with `FlagFileProvider` through the OpenFeature SDK. We carry
our own provider because `openfeature-provider-flagd` pulls in protobuf 7, which breaks Dagster's
`protobuf<7` pin; a team running a real flagd can point its services at this same file.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from openfeature.evaluation_context import EvaluationContext
from openfeature.exception import ErrorCode
from openfeature.flag_evaluation import FlagResolutionDetails, FlagValueType, Reason
from openfeature.provider import AbstractProvider, Metadata

from release_pipelines.core.errors import ReleaseError
from release_pipelines.core.manifest import Flag
from release_pipelines.resources.platform import StateError, StateFile

BOOLEAN_VARIANTS = {"on": True, "off": False}


class FlagError(ReleaseError):
    """The flag file is unreadable, or a flag it should hold is missing or not a boolean."""


class FlagStore:
    """Boolean release flags in one flagd-format file; other flags and fields in it are kept."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self._file = StateFile(self.path, label="flag")

    def get(self, name: str) -> bool:
        flag = self._read().get("flags", {}).get(name)
        if flag is None:
            raise FlagError(f"flag {name!r} is not in {self.path}; add it to the manifest's flags")
        return _boolean_value(name, flag)

    def all(self) -> dict[str, bool]:
        return {name: _boolean_value(name, flag) for name, flag in self._read().get("flags", {}).items()}

    def set(self, name: str, on: bool) -> None:
        """Switch a flag on or off, creating it as a boolean flag if it is new."""
        with self._update() as flags:
            flag = flags.setdefault(name, {"state": "ENABLED", "variants": dict(BOOLEAN_VARIANTS)})
            flag["variants"] = {**flag.get("variants", {}), **BOOLEAN_VARIANTS}
            flag["state"] = "ENABLED"
            flag["defaultVariant"] = "on" if on else "off"

    def ensure(self, flags: Iterable[Flag]) -> list[str]:
        """Add the manifest's flags that are missing, at their default; never touch existing ones
        (a flag switched by a release stays switched). Returns the names added."""
        added: list[str] = []
        with self._update() as stored:
            for flag in flags:
                if flag.name not in stored:
                    stored[flag.name] = {
                        "state": "ENABLED",
                        "variants": dict(BOOLEAN_VARIANTS),
                        "defaultVariant": "on" if flag.default else "off",
                    }
                    added.append(flag.name)
        return added

    def _read(self) -> dict[str, Any]:
        try:
            return self._file.read()
        except StateError as exc:
            raise FlagError(str(exc)) from None

    @contextmanager
    def _update(self) -> Iterator[dict[str, Any]]:
        """Yield the "flags" mapping for in-place changes, under the file lock."""
        try:
            with self._file.update() as document:
                yield document.setdefault("flags", {})
        except StateError as exc:
            raise FlagError(str(exc)) from None


def _boolean_value(name: str, flag: Mapping[str, Any]) -> bool:
    variant = flag.get("defaultVariant")
    value = flag.get("variants", {}).get(variant)
    if not isinstance(value, bool):
        raise FlagError(f"flag {name!r}: default variant {variant!r} is not a boolean variant")
    return value and flag.get("state") == "ENABLED"


class FlagFileProvider(AbstractProvider):
    """OpenFeature provider for a flagd-format file, re-read whenever the file changes."""

    def __init__(self, path: str | Path):
        super().__init__()
        self.path = Path(path)
        self._stamp: tuple[int, int, int] | None = None
        self._flags: dict[str, Any] = {}
        self._error: str | None = None

    def get_metadata(self) -> Metadata:
        return Metadata(name="flag-file")

    def _current(self) -> dict[str, Any]:
        try:
            stat = self.path.stat()
        except FileNotFoundError:
            self._stamp, self._flags, self._error = None, {}, None
            return self._flags
        stamp = (stat.st_mtime_ns, stat.st_size, stat.st_ino)  # rename gives a new inode
        if stamp != self._stamp:
            try:
                self._flags, self._error = json.loads(self.path.read_text()).get("flags", {}), None
            except (json.JSONDecodeError, AttributeError) as exc:
                self._flags, self._error = {}, f"{self.path}: {exc}"
            self._stamp = stamp
        return self._flags

    def _resolve(self, key: str, default: Any, kind: type | tuple[type, ...]) -> FlagResolutionDetails[Any]:
        flags = self._current()
        if self._error:
            return FlagResolutionDetails(default, ErrorCode.PARSE_ERROR, self._error, Reason.ERROR)
        flag = flags.get(key)
        if flag is None:
            return FlagResolutionDetails(default, ErrorCode.FLAG_NOT_FOUND, f"no flag {key!r}", Reason.ERROR)
        if flag.get("state") == "DISABLED":
            return FlagResolutionDetails(default, reason=Reason.DISABLED)
        variant = flag.get("defaultVariant")
        value = flag.get("variants", {}).get(variant)
        if not isinstance(value, kind) or (kind is not bool and isinstance(value, bool)):
            return FlagResolutionDetails(
                default, ErrorCode.TYPE_MISMATCH, f"{key}: variant {variant!r} is {value!r}", Reason.ERROR
            )
        return FlagResolutionDetails(value, reason=Reason.STATIC, variant=variant)

    def resolve_boolean_details(
        self, flag_key: str, default_value: bool, evaluation_context: EvaluationContext | None = None
    ) -> FlagResolutionDetails[bool]:
        return self._resolve(flag_key, default_value, bool)

    def resolve_string_details(
        self, flag_key: str, default_value: str, evaluation_context: EvaluationContext | None = None
    ) -> FlagResolutionDetails[str]:
        return self._resolve(flag_key, default_value, str)

    def resolve_integer_details(
        self, flag_key: str, default_value: int, evaluation_context: EvaluationContext | None = None
    ) -> FlagResolutionDetails[int]:
        return self._resolve(flag_key, default_value, int)

    def resolve_float_details(
        self, flag_key: str, default_value: float, evaluation_context: EvaluationContext | None = None
    ) -> FlagResolutionDetails[float]:
        return self._resolve(flag_key, default_value, (int, float))

    def resolve_object_details(
        self,
        flag_key: str,
        default_value: Sequence[FlagValueType] | Mapping[str, FlagValueType],
        evaluation_context: EvaluationContext | None = None,
    ) -> FlagResolutionDetails[Sequence[FlagValueType] | Mapping[str, FlagValueType]]:
        return self._resolve(flag_key, default_value, (list, dict))
