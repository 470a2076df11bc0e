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
