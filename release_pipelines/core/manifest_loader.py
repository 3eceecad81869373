"""Read a manifest file and turn every problem into a `Problem` with file, line and field path.

The loader returns a `Manifest` or raises `ManifestError`; nothing else escapes it (a property
test feeds it random documents to hold it to that).
"""

from __future__ import annotations

import difflib
import types
import typing
from typing import Any

import yaml
from pydantic import BaseModel, ValidationError

from release_pipelines.core.errors import ManifestError, Problem
from release_pipelines.core.graph import reference_problems
from release_pipelines.core.manifest import Manifest

MAX_MANIFEST_BYTES = 2_000_000
MAX_DEPTH = 40
MAX_NODES = 200_000  # once aliases are expanded; a YAML bomb (billion laughs) has billions

Loc = tuple[str | int, ...]


def _line_index(node: yaml.Node, path: Loc = (), index: dict[Loc, int] | None = None, depth: int = 0) -> dict[Loc, int]:
    """Map each field path to the 1-based line where its value (or key) starts."""
    index = {} if index is None else index
    index.setdefault(path, node.start_mark.line + 1)
    if depth > MAX_DEPTH:
        return index
    if isinstance(node, yaml.MappingNode):
        for key_node, value_node in node.value:
            key = key_node.value if isinstance(key_node, yaml.ScalarNode) else str(key_node.value)
            index[path + (key,)] = key_node.start_mark.line + 1
            _line_index(value_node, path + (key,), index, depth + 1)
    elif isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            index[path + (i,)] = item.start_mark.line + 1
            _line_index(item, path + (i,), index, depth + 1)
    return index


def _duplicate_keys(node: yaml.Node, path: Loc = (), depth: int = 0) -> list[tuple[Loc, int]]:
    found: list[tuple[Loc, int]] = []
    if depth > MAX_DEPTH:
        return found
    if isinstance(node, yaml.MappingNode):
        seen: set[str] = set()
        for key_node, value_node in node.value:
            key = str(key_node.value)
            if key in seen:
                found.append((path + (key,), key_node.start_mark.line + 1))
            seen.add(key)
            found += _duplicate_keys(value_node, path + (key,), depth + 1)
    elif isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            found += _duplicate_keys(item, path + (i,), depth + 1)
    return found


def _expanded_nodes(node: yaml.Node, limit: int) -> int:
    """How many nodes the document has with every alias expanded, counting each shared node once
    (so this is cheap even for a YAML bomb); past `limit` - or for an alias inside itself - it
    returns limit + 1. Everything that walks paths (depth, duplicates, lines) must come after."""
    sizes: dict[int, int] = {}
    open_: set[int] = set()

    def size(current: yaml.Node) -> int:
        key = id(current)
        if key in sizes:
            return sizes[key]
        if key in open_:
            return limit + 1  # an alias refers to a node that contains it
        open_.add(key)
        total = 1
        children = (
            [v for pair in current.value for v in pair] if isinstance(current, yaml.MappingNode)
            else current.value if isinstance(current, yaml.SequenceNode) else []
        )
        for child in children:
            total += size(child)
            if total > limit:
                break
        open_.discard(key)
        sizes[key] = min(total, limit + 1)
        return sizes[key]

    return size(node)


def _depth(node: yaml.Node, limit: int) -> int:
    stack = [(node, 1)]
    deepest = 0
    while stack:
        current, d = stack.pop()
        deepest = max(deepest, d)
        if deepest > limit:
            return deepest
        if isinstance(current, yaml.MappingNode):
            stack.extend((v, d + 1) for _, v in current.value)
        elif isinstance(current, yaml.SequenceNode):
            stack.extend((v, d + 1) for v in current.value)
    return deepest


def format_path(loc: Loc) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def _unwrap(annotation: Any) -> list[Any]:
    """The concrete types inside Optional/Union/Annotated/list/dict annotations."""
    origin = typing.get_origin(annotation)
    if origin is typing.Annotated:
        return _unwrap(typing.get_args(annotation)[0])
    if origin in (typing.Union, types.UnionType):
        return [t for arg in typing.get_args(annotation) for t in _unwrap(arg)]
    return [annotation]


def _model_at(loc: Loc) -> type[BaseModel] | None:
    """Walk the model tree along a path to find which model a key was given to."""
    current: Any = Manifest
    for part in loc:
        candidates = _unwrap(current)
        nxt = None
        for cand in candidates:
            origin = typing.get_origin(cand)
            if isinstance(part, int) and origin is list:
                nxt = typing.get_args(cand)[0]
            elif isinstance(cand, type) and issubclass(cand, BaseModel) and isinstance(part, str):
                field = next(
                    (f for n, f in cand.model_fields.items() if part in (n, f.alias)), None
                )
                if field is not None:
                    nxt = field.annotation
            if nxt is not None:
                break
        if nxt is None:
            return None
        current = nxt
    for cand in _unwrap(current):
        if isinstance(cand, type) and issubclass(cand, BaseModel):
            return cand
    return None


def _field_names(model: type[BaseModel]) -> list[str]:
    return [f.alias or n for n, f in model.model_fields.items()]


def _explain(error: dict[str, Any]) -> str:
    kind = error["type"]
    loc: Loc = tuple(error["loc"])
    if kind == "extra_forbidden":
        model = _model_at(loc[:-1])
        known = _field_names(model) if model else []
        guess = difflib.get_close_matches(str(loc[-1]), known, n=1)
        hint = f"; did you mean {guess[0]!r}?" if guess else ""
        allowed = f" (allowed: {', '.join(known)})" if known and not guess else ""
        return f"unknown key {loc[-1]!r}{hint}{allowed}"
    if kind == "missing":
        return "is required but missing"
    message = error["msg"]
    message = message.removeprefix("Value error, ")
    if kind == "string_pattern_mismatch":
        message = f"{error['input']!r} does not match {error['ctx']['pattern']}"
    return message


def _problems_from_validation(exc: ValidationError, file: str | None, lines: dict[Loc, int]) -> list[Problem]:
    problems = []
    for error in exc.errors():
        loc: Loc = tuple(p for p in error["loc"] if not (isinstance(p, str) and "[" in p))
        line = None
        for cut in range(len(loc), -1, -1):
            if loc[:cut] in lines:
                line = lines[loc[:cut]]
                break
        problems.append(Problem(path=format_path(loc), message=_explain(error), file=file, line=line))
    return problems


# libyaml's SafeLoader when PyYAML was built with it: pure-Python parsing was half of loading a
# 500-service manifest's definitions
SAFE_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


def parse_manifest(text: str, file: str | None = None) -> Manifest:
    """Validate manifest text; raise ManifestError listing every problem found."""
    if len(text.encode("utf-8", "surrogatepass")) > MAX_MANIFEST_BYTES:
        raise ManifestError([Problem("", f"file is larger than {MAX_MANIFEST_BYTES} bytes", file)])
    try:
        node = yaml.compose(text, Loader=SAFE_LOADER)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = mark.line + 1 if mark is not None else None
        reason = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise ManifestError([Problem("", f"not valid YAML: {reason}", file, line)]) from None
    except (RecursionError, ValueError, UnicodeError) as exc:
        raise ManifestError([Problem("", f"not valid YAML: {type(exc).__name__}", file)]) from None
    if node is None:
        raise ManifestError([Problem("", "the file is empty; expected a mapping with `product:`", file, 1)])
    try:
        expanded = _expanded_nodes(node, MAX_NODES)
    except RecursionError:
        expanded = MAX_NODES + 1
    if expanded > MAX_NODES:
        raise ManifestError([Problem(
            "", f"more than {MAX_NODES} values once aliases are expanded (a YAML bomb?), or an alias "
            "inside itself; write the manifest out without such anchors", file, 1)])
    if _depth(node, MAX_DEPTH) > MAX_DEPTH:
        raise ManifestError([Problem("", f"nested deeper than {MAX_DEPTH} levels", file, 1)])
    duplicates = _duplicate_keys(node)
    if duplicates:
        raise ManifestError(
            [Problem(format_path(loc), "key given twice", file, line) for loc, line in duplicates]
        )
    try:
        data = yaml.load(text, Loader=SAFE_LOADER)
    except yaml.MarkedYAMLError as exc:  # e.g. a !!python/... tag: say which and where
        mark = exc.problem_mark
        reason = " ".join(str(exc.problem or type(exc).__name__).split())
        raise ManifestError([Problem("", f"not valid YAML: {reason}", file, mark.line + 1 if mark else None)]) from None
    except (yaml.YAMLError, RecursionError, ValueError, TypeError) as exc:
        raise ManifestError([Problem("", f"not valid YAML: {type(exc).__name__}", file)]) from None
    if not isinstance(data, dict):
        line = node.start_mark.line + 1
        raise ManifestError(
            [Problem("", f"expected a mapping with `product:` at the top, got {type(data).__name__}", file, line)]
        )
    lines = _line_index(node)
    try:
        manifest = Manifest.model_validate(data)
    except ValidationError as exc:
        problems = _problems_from_validation(exc, file, lines)
        raise ManifestError(sorted(problems, key=lambda p: p.line or 0)) from None
    except (RecursionError, TypeError, ValueError) as exc:  # pathological input pydantic rejects oddly
        raise ManifestError([Problem("", f"cannot validate: {type(exc).__name__}", file)]) from None


    problems = [
        Problem(format_path(loc), message, file, _nearest_line(lines, loc))
        for loc, message in reference_problems(manifest)
    ]
    if problems:
        raise ManifestError(problems)
    return manifest


def _nearest_line(lines: dict[Loc, int], loc: Loc) -> int | None:
    for cut in range(len(loc), -1, -1):
        if loc[:cut] in lines:
            return lines[loc[:cut]]
    return None
