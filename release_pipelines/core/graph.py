"""The dependency graph of a product's services and databases (pure).

Nodes are service and database names (one namespace); an edge A -> B means A depends on B,
so B goes first on rollout and last on rollback.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable, Mapping

from release_pipelines.core.manifest import Manifest

Loc = tuple[str | int, ...]


def dependency_edges(manifest: Manifest) -> dict[str, set[str]]:
    """node -> the nodes it depends on (every database is a node, with no dependencies)."""
    edges: dict[str, set[str]] = {db.name: set() for db in manifest.databases}
    for service in manifest.services:
        edges[service.name] = set(service.depends_on)
    return edges


def find_cycle(edges: Mapping[str, Iterable[str]]) -> list[str] | None:
    """A dependency cycle as a path that starts and ends at the same node, or None."""
    white, grey, black = 0, 1, 2
    colour = {node: white for node in edges}
    for root in sorted(edges):
        if colour[root] != white:
            continue
        stack: list[tuple[str, list[str]]] = [(root, sorted(edges[root]))]
        path = [root]
        colour[root] = grey
        while stack:
            node, pending = stack[-1]
            if not pending:
                colour[node] = black
                stack.pop()
                path.pop()
                continue
            nxt = pending.pop(0)
            if nxt not in colour:
                continue
            if colour[nxt] == grey:
                return path[path.index(nxt) :] + [nxt]
            if colour[nxt] == white:
                colour[nxt] = grey
                path.append(nxt)
                stack.append((nxt, sorted(edges[nxt])))
    return None


def transitive_dependencies(edges: Mapping[str, Iterable[str]], node: str) -> set[str]:
    seen: set[str] = set()
    todo = list(edges.get(node, ()))
    while todo:
        current = todo.pop()
        if current in seen or current not in edges:
            continue
        seen.add(current)
        todo.extend(edges[current])
    return seen


def waves(edges: Mapping[str, Iterable[str]], selected: Iterable[str]) -> list[list[str]]:
    """Group the selected nodes into ordered waves; a node comes after everything it depends on,
    even through nodes that are not selected. Nodes within a wave may run in parallel."""
    chosen = set(selected)
    needs = {n: transitive_dependencies(edges, n) & chosen for n in chosen}
    result: list[list[str]] = []
    placed: set[str] = set()
    while len(placed) < len(chosen):
        ready = sorted(n for n in chosen - placed if needs[n] <= placed)
        if not ready:  # only reachable with a cycle, which validation refuses first
            raise ValueError(f"dependency cycle among {sorted(chosen - placed)}")
        result.append(ready)
        placed.update(ready)
    return result


def _did_you_mean(name: str, known: Iterable[str]) -> str:
    guess = difflib.get_close_matches(name, list(known), n=1)
    return f"; did you mean {guess[0]!r}?" if guess else ""


def reference_problems(manifest: Manifest) -> list[tuple[Loc, str]]:
    """Every broken cross-reference in a manifest: unknown names, duplicates, cycles."""
    problems: list[tuple[Loc, str]] = []
    services = [s.name for s in manifest.services]
    databases = [d.name for d in manifest.databases]
    seen: dict[str, Loc] = {}
    for kind, names in (("services", services), ("databases", databases)):
        for i, name in enumerate(names):
            if name in seen:
                problems.append(((kind, i, "name"), f"{name!r} is already used at {'.'.join(map(str, seen[name]))}"))
            else:
                seen[name] = (kind, i)
    known = set(services) | set(databases)
    for i, service in enumerate(manifest.services):
        for j, dep in enumerate(service.depends_on):
            if dep == service.name:
                problems.append((("services", i, "depends_on", j), f"{dep!r} depends on itself"))
            elif dep not in known:
                problems.append(
                    (
                        ("services", i, "depends_on", j),
                        f"unknown service or database {dep!r}{_did_you_mean(dep, known)}",
                    )
                )
        for field in ("reads", "writes"):
            for j, ref in enumerate(getattr(service, field)):
                db_name, _, table = ref.partition(".")
                if db_name not in databases:
                    problems.append(
                        ((("services", i, field, j)), f"{ref!r}: unknown database {db_name!r}{_did_you_mean(db_name, databases)}; write database.table")
                    )
                    continue
                tables = [t.name for t in manifest.database(db_name).tables]
                if table not in tables:
                    problems.append(
                        ((("services", i, field, j)), f"{ref!r}: database {db_name!r} declares no table {table!r}{_did_you_mean(table, tables)}")
                    )
    for i, flag in enumerate(manifest.flags):
        for j, svc in enumerate(flag.services):
            if svc not in services:
                problems.append((("flags", i, "services", j), f"unknown service {svc!r}{_did_you_mean(svc, services)}"))
    apis: dict[str, str] = {}
    for i, service in enumerate(manifest.services):
        for api in service.contract.provides:
            if api in apis:
                problems.append(((("services", i, "contract", "provides", api)), f"API {api!r} is already provided by {apis[api]!r}"))
            apis[api] = service.name
    for i, service in enumerate(manifest.services):
        for api in service.contract.requires:
            if api not in apis:
                problems.append(((("services", i, "contract", "requires", api)), f"no service provides API {api!r}{_did_you_mean(api, apis)}"))
    if not any(p[1].startswith("unknown service or database") for p in problems):
        cycle = find_cycle(dependency_edges(manifest))
        if cycle:
            index = services.index(cycle[0]) if cycle[0] in services else 0
            problems.append((("services", index, "depends_on"), "dependency cycle: " + " -> ".join(cycle)))
    return problems
