"""The direction of imports (STYLE.md): the domain knows nothing of HTTP, SQL or the network;
services, jobs, the web layer and the CLI reach the database only through agent.storage."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

AGENT = Path(__file__).resolve().parent.parent / "agent"


def imported_modules(path: Path) -> set[str]:
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
            found.update(f"{node.module}.{alias.name}" for alias in node.names)
    return found


def modules_of(*parts: str) -> list[Path]:
    out: list[Path] = []
    for part in parts:
        target = AGENT / part
        out.extend(sorted(target.rglob("*.py")) if target.is_dir() else [target])
    return out


@pytest.mark.parametrize("path", modules_of("domain"), ids=lambda p: p.name)
def test_the_domain_imports_the_standard_library_and_itself_only(path):
    banned = ("flask", "sqlalchemy", "requests", "werkzeug", "alembic", "psycopg")
    outside = {m for m in imported_modules(path) if m.split(".")[0] in banned}
    outside |= {
        m
        for m in imported_modules(path)
        if m.startswith("agent.") and not m.startswith("agent.domain")
    }
    assert not outside, f"{path.name} imports {sorted(outside)}"


@pytest.mark.parametrize(
    "path",
    modules_of("services", "jobs", "web", "cli.py", "cli_reductions.py", "cli_support.py"),
    ids=lambda p: str(p.relative_to(AGENT)),
)
def test_only_storage_builds_sql(path):
    """sqlalchemy exceptions may be caught (a database outage is a 503); queries live in
    agent.storage. The web layer may name the Engine type for /readyz."""
    allowed = {"sqlalchemy.exc", "sqlalchemy.Engine"}
    bad = {
        m
        for m in imported_modules(path)
        if (m == "sqlalchemy" or m.startswith("sqlalchemy."))
        and not any(m == a or m.startswith(a + ".") for a in allowed)
    }
    bad |= {m for m in imported_modules(path) if m.startswith("agent.storage.tables")}
    if path.parent.name == "web" and path.name == "health.py":
        bad.discard("sqlalchemy")  # `from sqlalchemy import Engine` (a type, for /readyz)
    assert not bad, f"{path.relative_to(AGENT)} imports {sorted(bad)}"


def module_name(path: Path) -> str:
    parts = path.relative_to(AGENT.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def import_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One cycle of ``graph`` (module -> modules it imports) as a path, None when it has none."""
    done: set[str] = set()
    for root in sorted(graph):
        if root in done:
            continue
        path: list[str] = []
        on_path: set[str] = set()
        stack: list[tuple[str, list[str]]] = [(root, sorted(graph[root]))]
        path.append(root)
        on_path.add(root)
        while stack:
            node, todo = stack[-1]
            if not todo:
                stack.pop()
                path.pop()
                on_path.discard(node)
                done.add(node)
                continue
            nxt = todo.pop()
            if nxt in on_path:
                return path[path.index(nxt) :] + [nxt]
            if nxt not in done:
                stack.append((nxt, sorted(graph[nxt])))
                path.append(nxt)
                on_path.add(nxt)
    return None


def test_the_import_cycle_finder_finds_a_cycle():
    assert import_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert import_cycle({"a": {"b"}, "b": set(), "c": {"a", "b"}}) is None


def test_no_module_of_the_agent_imports_itself_through_others():
    """Imports inside functions count: a deferred import hides a cycle, it does not remove
    it. (agent.config and agent.services.policy were one, the [license] check and the policy
    builder; agent.web.ratelimit and agent.web.scim another, the SCIM error response.)"""
    paths = modules_of(".")
    names = {module_name(p) for p in paths}
    graph = {
        module_name(p): {m for m in imported_modules(p) if m in names} - {module_name(p)}
        for p in paths
    }
    cycle = import_cycle(graph)
    assert cycle is None, "import cycle: " + " -> ".join(cycle or [])
