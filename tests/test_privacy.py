"""Privacy (issue #5, promises 1 and 2): the whole job runs with networking unavailable, nothing in Tailor
can phone home, data at rest is private to its owner, `forget` leaves no trace of a document anywhere in the
data directory, and `wipe` removes everything."""
from __future__ import annotations

import ast
import json
import os
import sqlite3
import stat
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from app.cli import cli
from app.core import Settings, Tailor
from app.offline import OFFLINE_ENV
from tests.conftest import REPO, SAMPLES

NETWORK_MODULES = {"socket", "ssl", "http.client", "http.server", "urllib.request", "urllib3", "requests", "httpx",
                   "aiohttp", "ftplib", "smtplib", "imaplib", "poplib", "telnetlib", "xmlrpc", "huggingface_hub",
                   "websocket", "websockets", "grpc", "PySide6.QtNetwork"}
HTTP_CLIENTS = {"urllib3", "requests", "httpx", "aiohttp", "huggingface_hub", "websocket", "websockets", "grpc"}


def is_network(name: str) -> bool:
    return any(name == m or name.startswith(m + ".") for m in NETWORK_MODULES)
SETUP_ONLY = {"fetch_models.py"}       # `make models` runs it once, before Tailor is used; never the app


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


# --- 1. offline by construction ----------------------------------------------------------------------------

def test_full_path_offline_through_the_core(home, no_network, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "0")                 # a user's environment cannot turn networking on
    monkeypatch.setenv("TRANSFORMERS_OFFLINE", "0")
    t = Tailor(settings=Settings(threads=1))     # one thread: llama.cpp's spinning threads hate a busy CPU
    try:
        for key, value in OFFLINE_ENV.items():
            assert os.environ[key] == value, key
        summary = t.import_paths([SAMPLES / "interpreter-performance"])
        assert summary.imported == 6 and not summary.failed
        adapter = t.adapt()
        assert adapter.version == 1
        answer = t.ask("What is vectorcall?", max_tokens=8, rag=True, k=1)
        assert answer.text and answer.adapter_version == 1 and answer.sources
    finally:
        t.close()


def test_full_path_offline_through_the_cli(home, no_network):
    r = CliRunner().invoke(cli, ["--json", "--threads", "1", "import", str(SAMPLES / "interpreter-performance")],
                           obj={})
    assert r.exit_code == 0, (r.output, r.exception)
    assert json.loads(r.stdout)["adapter"]["version"] == 1
    r = CliRunner().invoke(cli, ["--json", "--threads", "1", "ask", "What is vectorcall?", "--max-tokens", "8"],
                           obj={})
    assert r.exit_code == 0, (r.output, r.exception)
    assert json.loads(r.stdout)["adapter_version"] == 1


def test_no_network_code_in_the_app():
    """No module of the app imports a network library (the model fetcher is a build step, not the app)."""
    offenders = []
    for path in sorted((REPO / "app").rglob("*.py")):
        if path.name in SETUP_ONLY:
            continue
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and not node.level and node.module:
                names = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
            else:
                continue
            offenders += [f"{path.name}: {n}" for n in names if is_network(n)]
    # the two exceptions: the extraction worker imports socket to switch it off, and `tailor serve` (only when
    # the person runs it) *listens* with http.server, on this machine only unless told otherwise; it opens no
    # connection and loads no HTTP client (the next test, and tests/test_serve.py for the loopback default)
    assert offenders == ["sandbox.py: socket", "serve.py: http.server", "serve.py: http.server.BaseHTTPRequestHandler",
                         "serve.py: http.server.ThreadingHTTPServer"], offenders


def test_no_http_client_is_even_loaded():
    """Loading every runtime module and model library pulls in no HTTP client or model-hub code."""
    code = ("import sys\nimport app.cli, app.core, app.embed, app.engine, app.hypernet, app.lora_gguf, "
            "app.ingest, app.sandbox, app.store, app.chunking, app.profile\n"
            "import llama_cpp, onnxruntime, tokenizers, gguf\n"
            f"print(sorted(m for m in sys.modules if m.split('.')[0] in {sorted(HTTP_CLIENTS)!r}))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]", out.stdout


def test_the_extraction_worker_has_no_network():
    code = ("from app.sandbox import _deny_network\n_deny_network()\nimport socket\n"
            "try:\n    socket.create_connection(('127.0.0.1', 9), timeout=1)\nexcept OSError as e:\n    print(e)\n"
            "try:\n    socket.getaddrinfo('example.com', 80)\nexcept OSError as e:\n    print(e)\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, timeout=60)
    assert out.stdout.count("network access is disabled") == 2, (out.stdout, out.stderr)


# --- 2. data at rest -------------------------------------------------------------------------------------

def test_everything_at_rest_is_owner_only(home, embedder, hypernet, spec):
    old = os.umask(0)                     # the most permissive umask: modes must not depend on it
    try:
        t = Tailor(home)
        t._embedder, t._hypernet, t._spec = embedder, hypernet, spec
        t.import_paths([SAMPLES / "packaging"])
        t.adapt()
        t.adapt()
        assert len(t.contexts(compute=True)) > 0                   # the documents' keys (app.knn), cached
        t.settings.rag = True
        t.save_settings()
        files = {p.name: p for p in home.rglob("*")}
        assert {"tailor.db", "tailor.db-wal", "tailor.db-shm", "settings.json", "adapters", "knn"} <= set(files)
        assert mode(home) == 0o700 and mode(home / "adapters") == 0o700
        for p in home.rglob("*"):
            assert mode(p) == (0o700 if p.is_dir() else 0o600), (p, oct(mode(p)))
        assert len(list((home / "adapters").glob("*.gguf"))) == 2
        t.close()
    finally:
        os.umask(old)


def test_loose_modes_are_tightened_on_open(home):
    Tailor(home).close()
    os.chmod(home, 0o755)
    os.chmod(home / "tailor.db", 0o644)
    Tailor(home).close()
    assert mode(home) == 0o700 and mode(home / "tailor.db") == 0o600


def _unique_sentence() -> tuple[str, list[str]]:
    words = ["Quaxlethorpe", "zibberwocky", "marmalunchion", "vorplesnatch"]
    return (f"On Tuesdays {words[0]} the {words[1]} juggles {words[2]} jars beside the {words[3]} fountain.",
            words)


def _grep(home: Path, needles: list[bytes]) -> list[str]:
    hits = []
    for p in home.rglob("*"):
        if p.is_file():
            data = p.read_bytes()
            hits += [f"{p.name}: {n!r}" for n in needles if n in data]
    return hits


def test_forget_leaves_no_trace_anywhere(tmp_path, tailor, home):
    sentence, words = _unique_sentence()
    secret = tmp_path / "diary.md"
    secret.write_text("# Dear diary\n\n" + " ".join([sentence] * 30))
    twin = tmp_path / "copy-of-diary.md"                         # same content, another path: a duplicate
    twin.write_text(secret.read_text())
    summary = tailor.import_paths([SAMPLES / "packaging", secret, twin])
    assert summary.imported == 5 and summary.duplicates == 1
    tailor.adapt()
    tailor.adapt()
    sources = tailor.retrieve(f"{words[0]} {words[1]}", 3)
    assert any(words[0] in s["text"] for s in sources)
    chat = tailor.store.new_chat("about the diary")
    tailor.store.add_message(chat, "user", "Who juggles jars?")
    tailor.store.add_message(chat, "assistant", "Someone does.", 2, sources)
    needles = [sentence.encode(), sentence.encode("utf-16-le")] + [w.encode() for w in words] + \
        [w.lower().encode() for w in words]
    assert _grep(home, [sentence.encode()])                       # it is there before
    contexts = home / "cache" / "knn"
    assert tailor.contexts(compute=True) is not None and len(list(contexts.rglob("*.npz"))) == 5

    before = {a["version"]: a["path"] for a in tailor.store.adapters()}
    result = tailor.forget(str(secret)).as_dict()
    assert sorted(result["adapters_deleted"]) == sorted(before)   # every adapter derived from it
    assert not any(Path(p).exists() for p in before.values())
    assert result["adapter"]["version"] == max(before) + 1          # regenerated from what remains
    assert {d["path"] for d in tailor.docs()} == {str(p) for p in (SAMPLES / "packaging").iterdir()
                                                   if p.suffix == ".md"}

    from app.knn import keys_name
    kept = {keys_name(f.parent.name, d["title"], d["text"]) for f in contexts.rglob("*.npz")
            for d in tailor._titled_documents()}
    assert len(list(contexts.rglob("*.npz"))) == 4 and {f.name for f in contexts.rglob("*.npz")} <= kept  # its keys

    def no_trace():
        assert _grep(home, needles) == []
        con = sqlite3.connect(home / "tailor.db")
        try:
            con.execute("CREATE VIRTUAL TABLE temp.vocab USING fts5vocab(main, 'chunks_fts', 'row')")
            terms = {r[0] for r in con.execute("SELECT term FROM temp.vocab")}
            assert not terms & {w.lower() for w in words}
            assert con.execute("SELECT COUNT(*) FROM chunks WHERE text LIKE ?", (f"%{words[0]}%",)).fetchone()[0] == 0
            assert con.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        finally:
            con.close()

    no_trace()                                       # while the app is still running (WAL and SHM included)
    msgs = tailor.store.messages(chat)
    assert [m["content"] for m in msgs] == ["Who juggles jars?", "Someone does."] and msgs[1]["sources"] == [
        s for s in sources if s["path"] != str(secret)]
    assert tailor.retrieve(f"{words[0]} {words[1]}", 3) and all(
        words[0] not in s["text"] for s in tailor.retrieve(f"{words[0]} {words[1]}", 3))
    tailor.close()
    no_trace()                                       # and after it closed


def test_forget_through_the_cli(tmp_path, home):
    """`tailor forget` of the only document (so no adapter needs regenerating: no models are loaded)."""
    sentence, words = _unique_sentence()
    secret = tmp_path / "letter.txt"
    secret.write_text(" ".join([sentence] * 20))
    runner = CliRunner()
    r = runner.invoke(cli, ["--json", "import", "--no-adapt", str(secret)], obj={})
    assert r.exit_code == 0, r.output
    assert _grep(home, [sentence.encode()])
    r = runner.invoke(cli, ["--json", "forget", str(secret)], obj={})
    assert r.exit_code == 0, r.output
    assert json.loads(r.stdout) == {"forgotten": str(secret), "adapters_deleted": []}
    assert _grep(home, [sentence.encode()] + [w.encode() for w in words]) == []


def test_crash_leftovers_in_the_adapter_dir_are_swept(tailor, home):
    tailor.import_paths([SAMPLES / "packaging"])
    kept = Path(tailor.adapt().path)
    orphan = home / "adapters" / "adapter-v0099-deadbeef.gguf"     # written, never registered (killed)
    half = home / "adapters" / ".adapter-v0100-deadbeef.gguf.123.tmp"
    for p in (orphan, half):
        p.write_bytes(b"GGUF leftovers")
    Tailor(home).close()                                           # young files: another process may own them
    assert orphan.exists() and half.exists()
    old = 1_000_000_000
    for p in (orphan, half):
        os.utime(p, (old, old))
    Tailor(home).close()
    assert not orphan.exists() and not half.exists() and kept.exists()


def test_wipe_removes_everything_after_confirmation(home, tmp_path):
    doc = tmp_path / "note.txt"
    doc.write_text("A private note about my garden and the herons by the canal. " * 10)
    runner = CliRunner()
    assert runner.invoke(cli, ["import", "--no-adapt", str(doc)], obj={}).exit_code == 0
    r = runner.invoke(cli, ["wipe"], input="n\n", obj={})
    assert r.exit_code == 0 and "nothing deleted" in r.output and (home / "tailor.db").exists()
    r = runner.invoke(cli, ["wipe"], input="y\n", obj={})
    assert r.exit_code == 0 and not home.exists(), r.output

    assert runner.invoke(cli, ["import", "--no-adapt", str(doc)], obj={}).exit_code == 0
    r = runner.invoke(cli, ["--json", "wipe", "--yes"], obj={})
    assert r.exit_code == 0 and json.loads(r.stdout) == {"wiped": str(home)} and not home.exists()


def test_wipe_stops_the_reader_and_leaves_nothing(home, tmp_path):
    doc = tmp_path / "note.txt"
    doc.write_text("Notes. " * 50)
    t = Tailor(home, Settings())
    t.import_paths([doc])
    pid = t.extractor.pid
    assert pid
    t.wipe()
    assert not home.exists()
    assert t._extractor.pid is None
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)
