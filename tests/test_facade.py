"""The CLI and the UI call only the core's public API (issue 14): no store, no SQL, no private core state.

Anki's rule: the UI never touches the database, it calls collection methods. Checked on the source (AST), so a
new `t.store.…` or `sqlite3` in app/cli.py or app/ui/ fails here before it can skip the core's rules (one
trimming rule, one write path, typed outcomes)."""
from __future__ import annotations

import ast
from pathlib import Path

APP = Path(__file__).resolve().parent.parent / "app"
FRONTENDS = [APP / "cli.py", *sorted((APP / "ui").glob("*.py"))]
FORBIDDEN_MODULES = {"sqlite3", "app.store"}
FORBIDDEN_ATTRS = {"store", "_store", "_conn", "execute", "executemany", "executescript"}


def violations(source: str, name: str = "<src>") -> list[str]:
    """Where a front end reaches past the core: imports of the store or sqlite3 (also relative `..store`),
    attributes named like the store or an SQL call, and any private attribute of another object."""
    out = []
    for node in ast.walk(ast.parse(source, name)):
        if isinstance(node, ast.Import):
            out += [f"{name}:{node.lineno} import {a.name}" for a in node.names
                    if a.name in FORBIDDEN_MODULES or a.name.endswith(".store")]
        elif isinstance(node, ast.ImportFrom):
            mod = node.module or ""
            if mod in FORBIDDEN_MODULES or mod == "store" or mod.endswith(".store") or \
                    any(a.name == "store" for a in node.names):
                out.append(f"{name}:{node.lineno} from {'.' * node.level}{mod} import …")
        elif isinstance(node, ast.Attribute) and node.attr in FORBIDDEN_ATTRS:
            out.append(f"{name}:{node.lineno} .{node.attr}")
    return out


def test_the_checker_catches_each_kind_of_leak():
    leaks = {
        "t.store.add_message(1, 'user', 'x')": ".store",
        "import sqlite3": "import sqlite3",
        "from app.store import Store": "from app.store",
        "from ..store import Store": "from ..store",
        "from .. import store": "from ..",
        "conn.execute('DELETE FROM documents')": ".execute",
        "t._store.close()": "._store",
    }
    for src, what in leaks.items():
        found = violations(src)
        assert found and what in found[0], (src, found)
    assert violations("t.chats()\nt.new_chat('x')\nfrom ..core import Tailor") == []


def test_cli_and_ui_use_only_the_core_api():
    assert FRONTENDS and (APP / "ui" / "main.py") in FRONTENDS
    found = [v for f in FRONTENDS for v in violations(f.read_text(encoding="utf-8"), str(f.relative_to(APP)))]
    assert found == [], "front ends reach past the core:\n" + "\n".join(found)


def import_graph(root: Path = APP) -> dict[str, set[str]]:
    """module -> the app modules it imports (at any depth of the file, lazy imports too)."""
    mods = {".".join(p.relative_to(root.parent).with_suffix("").parts): p for p in root.rglob("*.py")}
    graph: dict[str, set[str]] = {}
    for name, path in mods.items():
        pkg = name.split(".")[:-1] if path.name != "__init__.py" else name.split(".")
        deps = set()
        tree = ast.parse(path.read_text(), str(path))
        type_only = {id(n) for block in ast.walk(tree) if isinstance(block, ast.If) and _is_type_checking(block.test)
                     for stmt in block.body for n in ast.walk(stmt)}        # never run: no cycle at import time
        for node in ast.walk(tree):
            if id(node) in type_only:
                continue
            if isinstance(node, ast.ImportFrom):
                base = ".".join(pkg[:len(pkg) - node.level + 1]) if node.level else ""
                target = ".".join(x for x in (base, node.module or "") if x)
                deps.update(t for t in [target] + [f"{target}.{a.name}" for a in node.names] if t in mods)
            elif isinstance(node, ast.Import):
                deps.update(a.name for a in node.names if a.name in mods)
        graph[name] = deps - {name}
    return graph


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or \
        (isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Every import cycle, as found by depth-first search (each reported once per entry point)."""
    found, state = [], {}

    def visit(n: str, stack: list[str]) -> None:
        state[n] = "open"
        for d in sorted(graph.get(n, ())):
            if state.get(d) == "open":
                found.append(stack[stack.index(d):] + [d])
            elif d not in state:
                visit(d, stack + [d])
        state[n] = "done"

    for n in sorted(graph):
        if n not in state:
            visit(n, [n])
    return found


def test_no_import_cycles_in_the_app():
    """Modules import one way (ingest -> store -> embed -> hypernet -> adapter -> engine, the UI over the core);
    a cycle such as the window and the self-test importing each other makes import order matter (issue 14)."""
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == [["a", "b", "c", "a"]]     # the checker finds one
    graph = import_graph()
    assert "app.ui.selftest" in graph["app.ui.launch"] and "app.core" in graph["app.ui.main"]
    assert cycles(graph) == []
