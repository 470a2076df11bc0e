"""The SQLite store: one file, WAL, named append-only migrations.

All access goes through one single-worker executor (as in Anki), so the GUI's
workers and the CLI share one connection and writes never interleave; every
write is one transaction, so a crash leaves either the old or the new state.
"""
from __future__ import annotations

import json
import os
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import numpy as np

T = TypeVar("T")

MIGRATIONS: list[tuple[str, str]] = [
    ("m001_initial", """
        CREATE TABLE documents (
            id INTEGER PRIMARY KEY,
            path TEXT NOT NULL UNIQUE,
            sha256 TEXT,
            mtime REAL,
            size INTEGER,
            title TEXT,
            status TEXT NOT NULL,            -- ok | failed | duplicate
            error TEXT,
            duplicate_of INTEGER REFERENCES documents(id) ON DELETE SET NULL,
            n_chunks INTEGER NOT NULL DEFAULT 0,
            added_at REAL NOT NULL,
            updated_at REAL NOT NULL
        );
        CREATE INDEX documents_sha ON documents(sha256);
        CREATE TABLE chunks (
            id INTEGER PRIMARY KEY,
            document_id INTEGER NOT NULL REFERENCES documents(id) ON DELETE CASCADE,
            idx INTEGER NOT NULL,
            text TEXT NOT NULL
        );
        CREATE INDEX chunks_doc ON chunks(document_id);
        CREATE VIRTUAL TABLE chunks_fts USING fts5(text, content='chunks', content_rowid='id');
        CREATE TRIGGER chunks_ai AFTER INSERT ON chunks BEGIN
            INSERT INTO chunks_fts(rowid, text) VALUES (new.id, new.text);
        END;
        CREATE TRIGGER chunks_ad AFTER DELETE ON chunks BEGIN
            INSERT INTO chunks_fts(chunks_fts, rowid, text) VALUES ('delete', old.id, old.text);
        END;
        CREATE TABLE embeddings (
            chunk_id INTEGER NOT NULL REFERENCES chunks(id) ON DELETE CASCADE,
            embedder TEXT NOT NULL,
            vector BLOB NOT NULL,
            PRIMARY KEY (chunk_id, embedder)
        );
        CREATE TABLE adapters (
            id INTEGER PRIMARY KEY,
            version INTEGER NOT NULL UNIQUE,
            path TEXT NOT NULL,
            profile_fingerprint TEXT NOT NULL,
            hypernet_id TEXT NOT NULL,
            n_documents INTEGER NOT NULL,
            n_chunks INTEGER NOT NULL,
            timings TEXT NOT NULL,
            created_at REAL NOT NULL
        );
        CREATE TABLE adapter_documents (      -- which documents an adapter was derived from (forget deletes those)
            adapter_id INTEGER NOT NULL REFERENCES adapters(id) ON DELETE CASCADE,
            document_id INTEGER NOT NULL,
            PRIMARY KEY (adapter_id, document_id)
        );
        CREATE TABLE chats (
            id INTEGER PRIMARY KEY,
            title TEXT NOT NULL,
            created_at REAL NOT NULL
        );
        CREATE TABLE messages (
            id INTEGER PRIMARY KEY,
            chat_id INTEGER NOT NULL REFERENCES chats(id) ON DELETE CASCADE,
            role TEXT NOT NULL,
            content TEXT NOT NULL,
            adapter_version INTEGER,
            sources TEXT,
            created_at REAL NOT NULL
        );
    """),
    ("m002_meta", """
        CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);  -- e.g. the last adapter version ever issued
    """),
]


@dataclass
class Document:
    id: int
    path: str
    sha256: str | None
    mtime: float | None
    size: int | None
    title: str | None
    status: str
    error: str | None
    n_chunks: int
    duplicate_of: int | None = None

    def as_dict(self) -> dict:
        return dict(self.__dict__)


class Store:
    def __init__(self, path: Path):
        self.path = Path(path)
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="tailor-db")
        self._conn: sqlite3.Connection | None = None
        self.run(self._open)

    # --- the one door to the database ---------------------------------------
    def run(self, fn: Callable[..., T], *args: Any) -> T:
        """Run ``fn(*args)`` on the database thread and wait for it."""
        if threading.current_thread().name.startswith("tailor-db"):
            return fn(*args)
        return self._executor.submit(fn, *args).result()

    def _open(self) -> None:
        new = not self.path.exists()
        conn = sqlite3.connect(self.path, isolation_level=None)
        if new or self.path.stat().st_mode & 0o077:
            os.chmod(self.path, 0o600)     # the WAL and shared-memory files take the database's mode
        conn.row_factory = sqlite3.Row
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=NORMAL")
        conn.execute("PRAGMA foreign_keys=ON")
        conn.execute("PRAGMA secure_delete=ON")   # forgotten text is overwritten, not left in free pages
        conn.execute("CREATE TABLE IF NOT EXISTS _migrations (name TEXT PRIMARY KEY, applied_at REAL NOT NULL)")
        done = {r[0] for r in conn.execute("SELECT name FROM _migrations")}
        for name, sql in MIGRATIONS:
            if name in done:
                continue
            conn.execute("BEGIN IMMEDIATE")
            try:
                for stmt in _split_sql(sql):
                    conn.execute(stmt)
                conn.execute("INSERT INTO _migrations VALUES (?, ?)", (name, time.time()))
                conn.execute("COMMIT")
            except BaseException:
                conn.execute("ROLLBACK")
                raise
        self._conn = conn

    def _tx(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        conn = self._conn
        conn.execute("BEGIN IMMEDIATE")
        try:
            out = fn(conn)
            conn.execute("COMMIT")
            return out
        except BaseException:
            conn.execute("ROLLBACK")
            raise

    def write(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        """One transaction on the database thread: the single write path."""
        return self.run(self._tx, fn)

    def read(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        return self.run(lambda: fn(self._conn))

    def close(self) -> None:
        if self._conn is not None:
            self.run(self._conn.close)
            self._conn = None
        self._executor.shutdown(wait=True)

    def schema_version(self) -> list[str]:
        return self.read(lambda c: [r[0] for r in c.execute("SELECT name FROM _migrations ORDER BY name")])

    # --- documents ------------------------------------------------------------
    def documents(self) -> list[Document]:
        rows = self.read(lambda c: c.execute(
            "SELECT id, path, sha256, mtime, size, title, status, error, n_chunks, duplicate_of "
            "FROM documents ORDER BY path").fetchall())
        return [Document(**dict(r)) for r in rows]

    def document_by_path(self, path: str) -> Document | None:
        r = self.read(lambda c: c.execute(
            "SELECT id, path, sha256, mtime, size, title, status, error, n_chunks, duplicate_of "
            "FROM documents WHERE path = ?", (path,)).fetchone())
        return Document(**dict(r)) if r else None

    def document(self, doc_id: int) -> Document | None:
        r = self.read(lambda c: c.execute(
            "SELECT id, path, sha256, mtime, size, title, status, error, n_chunks, duplicate_of "
            "FROM documents WHERE id = ?", (doc_id,)).fetchone())
        return Document(**dict(r)) if r else None

    def find_by_sha(self, sha: str, exclude_path: str) -> Document | None:
        r = self.read(lambda c: c.execute(
            "SELECT id, path, sha256, mtime, size, title, status, error, n_chunks, duplicate_of FROM documents "
            "WHERE sha256 = ? AND status = 'ok' AND path != ? LIMIT 1", (sha, exclude_path)).fetchone())
        return Document(**dict(r)) if r else None

    def put_document(self, *, path: str, sha256: str | None, mtime: float | None, size: int | None,
                     title: str | None, status: str, error: str | None = None, chunks: list[str] = (),
                     duplicate_of: int | None = None) -> int:
        """Insert or replace a document and its chunks in one transaction (old chunks and embeddings go)."""
        def tx(c: sqlite3.Connection) -> int:
            now = time.time()
            row = c.execute("SELECT id FROM documents WHERE path = ?", (path,)).fetchone()
            if row:
                doc_id = row[0]
                c.execute("DELETE FROM chunks WHERE document_id = ?", (doc_id,))
                c.execute("UPDATE documents SET sha256=?, mtime=?, size=?, title=?, status=?, error=?, n_chunks=?, "
                          "duplicate_of=?, updated_at=? WHERE id=?",
                          (sha256, mtime, size, title, status, error, len(chunks), duplicate_of, now, doc_id))
            else:
                doc_id = c.execute(
                    "INSERT INTO documents (path, sha256, mtime, size, title, status, error, n_chunks, duplicate_of, "
                    "added_at, updated_at) VALUES (?,?,?,?,?,?,?,?,?,?,?)",
                    (path, sha256, mtime, size, title, status, error, len(chunks), duplicate_of, now, now)).lastrowid
            c.executemany("INSERT INTO chunks (document_id, idx, text) VALUES (?,?,?)",
                          [(doc_id, i, t) for i, t in enumerate(chunks)])
            return doc_id
        return self.write(tx)

    def delete_document(self, doc_id: int) -> None:
        self.write(lambda c: c.execute("DELETE FROM documents WHERE id = ?", (doc_id,)))

    # --- chunks & embeddings -----------------------------------------------------
    def chunks_without_embedding(self, embedder: str, limit: int = 512) -> list[tuple[int, str]]:
        return self.read(lambda c: [tuple(r) for r in c.execute(
            "SELECT ch.id, ch.text FROM chunks ch JOIN documents d ON d.id = ch.document_id "
            "LEFT JOIN embeddings e ON e.chunk_id = ch.id AND e.embedder = ? "
            "WHERE e.chunk_id IS NULL AND d.status = 'ok' ORDER BY ch.id LIMIT ?", (embedder, limit))])

    def put_embeddings(self, embedder: str, ids: list[int], vectors: np.ndarray) -> None:
        vectors = np.asarray(vectors, dtype=np.float32)
        self.write(lambda c: c.executemany(
            "INSERT OR REPLACE INTO embeddings (chunk_id, embedder, vector) VALUES (?,?,?)",
            [(i, embedder, v.tobytes()) for i, v in zip(ids, vectors)]))

    def drop_other_embeddings(self, embedder: str) -> int:
        """Delete vectors made by any other embedder (an older graph): they are never read again."""
        return self.write(lambda c: c.execute("DELETE FROM embeddings WHERE embedder != ?", (embedder,)).rowcount)

    def iter_embeddings(self, embedder: str, batch: int = 4096) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """(chunk ids (n,), vectors (n, D)) in batches, for streaming pooling with bounded memory."""
        last = -1
        while True:
            rows = self.read(lambda c: c.execute(
                "SELECT e.chunk_id, e.vector FROM embeddings e JOIN chunks ch ON ch.id = e.chunk_id "
                "JOIN documents d ON d.id = ch.document_id WHERE e.embedder = ? AND d.status = 'ok' "
                "AND e.chunk_id > ? ORDER BY e.chunk_id LIMIT ?", (embedder, last, batch)).fetchall())
            if not rows:
                return
            ids = np.array([r[0] for r in rows], dtype=np.int64)
            yield ids, np.stack([np.frombuffer(r[1], dtype=np.float32) for r in rows])
            last = int(ids[-1])

    def profile_stats(self) -> dict:
        def q(c):
            docs = c.execute("SELECT COUNT(*), COALESCE(SUM(n_chunks),0) FROM documents WHERE status='ok'").fetchone()
            failed = c.execute("SELECT COUNT(*) FROM documents WHERE status='failed'").fetchone()[0]
            return {"documents": docs[0], "chunks": docs[1], "failed": failed}
        return self.read(q)

    def profile_fingerprint(self, embedder: str) -> str:
        """Changes whenever the set of embedded chunks changes (ids are never reused after deletes? they can be:
        so the hash covers the document hashes too)."""
        import hashlib
        def q(c):
            h = hashlib.sha256(embedder.encode())
            for r in c.execute("SELECT sha256, n_chunks FROM documents WHERE status='ok' ORDER BY sha256, path"):
                h.update(f"{r[0]}:{r[1]};".encode())
            return h.hexdigest()[:16]
        return self.read(q)

    def ok_document_ids(self) -> list[int]:
        return self.read(lambda c: [r[0] for r in c.execute("SELECT id FROM documents WHERE status='ok'")])

    def chunk_texts(self, ids: list[int]) -> dict[int, tuple[str, str]]:
        """chunk id -> (text, document path)."""
        if not ids:
            return {}
        marks = ",".join("?" * len(ids))
        return self.read(lambda c: {r[0]: (r[1], r[2]) for r in c.execute(
            f"SELECT ch.id, ch.text, d.path FROM chunks ch JOIN documents d ON d.id = ch.document_id "
            f"WHERE ch.id IN ({marks})", ids)})

    def document_texts(self) -> list[str]:
        """The text of every imported document (its chunks in order, as the profile holds it)."""
        return self.read(lambda c: [r[0] for r in c.execute(
            "SELECT group_concat(text, ' ') FROM (SELECT ch.document_id, ch.text FROM chunks ch "
            "JOIN documents d ON d.id = ch.document_id WHERE d.status = 'ok' ORDER BY ch.document_id, ch.idx) "
            "GROUP BY document_id ORDER BY document_id")])

    def documents_of_chunks(self, ids: list[int], max_chunks: int) -> list[dict]:
        """The documents the given chunks belong to, each once, in the order of their first chunk in ``ids``,
        with title and the text of their first ``max_chunks`` chunks: few-shot examples need whole items
        (a title with its text), not the passage that matched."""
        if not ids:
            return []
        marks = ",".join("?" * len(ids))

        def q(c: sqlite3.Connection) -> list[dict]:
            owner = dict(c.execute(f"SELECT id, document_id FROM chunks WHERE id IN ({marks})", ids).fetchall())
            out = []
            for d in dict.fromkeys(owner[i] for i in ids if i in owner):
                title, path = c.execute("SELECT title, path FROM documents WHERE id = ?", (d,)).fetchone()
                text = " ".join(r[0] for r in c.execute(
                    "SELECT text FROM chunks WHERE document_id = ? ORDER BY idx LIMIT ?", (d, max_chunks)))
                out.append({"document_id": d, "path": path, "title": title or "", "text": text})
            return out
        return self.read(q)

    def titled_documents(self, max_chunks: int) -> list[dict]:
        """Every imported document with a title, newest first, as documents_of_chunks gives them (title and the
        text of its first ``max_chunks`` chunks): the person's items as whole (title, text) pairs (app.knn)."""
        def q(c: sqlite3.Connection) -> list[dict]:
            docs = c.execute("SELECT id, path, title FROM documents WHERE status = 'ok' AND COALESCE(title, '') != '' "
                             "ORDER BY updated_at DESC, id DESC").fetchall()
            return [{"document_id": d, "path": path, "title": title,
                     "text": " ".join(r[0] for r in c.execute(
                         "SELECT text FROM chunks WHERE document_id = ? ORDER BY idx LIMIT ?", (d, max_chunks)))}
                    for d, path, title in docs]
        return self.read(q)

    def keyword_search(self, query: str, k: int) -> list[int]:
        terms = [t for t in "".join(ch if ch.isalnum() else " " for ch in query.lower()).split() if len(t) > 2]
        if not terms:
            return []
        match = " OR ".join(f'"{t}"' for t in terms[:32])
        return self.read(lambda c: [r[0] for r in c.execute(
            "SELECT f.rowid FROM chunks_fts f JOIN chunks ch ON ch.id = f.rowid JOIN documents d "
            "ON d.id = ch.document_id WHERE chunks_fts MATCH ? AND d.status='ok' ORDER BY bm25(chunks_fts) LIMIT ?",
            (match, k))])

    # --- adapters ----------------------------------------------------------------
    def add_adapter(self, *, path: str, profile_fingerprint: str, hypernet_id: str, n_documents: int,
                    n_chunks: int, timings: dict, document_ids: list[int]) -> int:
        def tx(c):
            # versions are never reused, even after forget deleted the newest ones
            last = c.execute("SELECT value FROM meta WHERE key = 'adapter_version'").fetchone()
            version = max(int(last[0]) if last else 0,
                          c.execute("SELECT COALESCE(MAX(version), 0) FROM adapters").fetchone()[0]) + 1
            c.execute("INSERT OR REPLACE INTO meta VALUES ('adapter_version', ?)", (str(version),))
            aid = c.execute("INSERT INTO adapters (version, path, profile_fingerprint, hypernet_id, n_documents, "
                            "n_chunks, timings, created_at) VALUES (?,?,?,?,?,?,?,?)",
                            (version, path, profile_fingerprint, hypernet_id, n_documents, n_chunks,
                             json.dumps(timings), time.time())).lastrowid
            c.executemany("INSERT INTO adapter_documents VALUES (?, ?)", [(aid, d) for d in document_ids])
            return version
        return self.write(tx)

    def adapters(self) -> list[dict]:
        rows = self.read(lambda c: c.execute(
            "SELECT version, path, profile_fingerprint, hypernet_id, n_documents, n_chunks, timings, created_at "
            "FROM adapters ORDER BY version DESC").fetchall())
        return [dict(r) | {"timings": json.loads(r["timings"])} for r in rows]

    def delete_adapter(self, version: int) -> None:
        self.write(lambda c: c.execute("DELETE FROM adapters WHERE version = ?", (version,)))

    def adapters_using(self, doc_id: int) -> list[dict]:
        versions = self.read(lambda c: {r[0] for r in c.execute(
            "SELECT a.version FROM adapters a JOIN adapter_documents ad ON ad.adapter_id = a.id "
            "WHERE ad.document_id = ?", (doc_id,))})
        return [a for a in self.adapters() if a["version"] in versions]

    # --- chats -------------------------------------------------------------------
    def new_chat(self, title: str) -> int:
        return self.write(lambda c: c.execute("INSERT INTO chats (title, created_at) VALUES (?, ?)",
                                              (title, time.time())).lastrowid)

    def chats(self) -> list[dict]:
        return self.read(lambda c: [dict(r) for r in c.execute(
            "SELECT id, title, created_at FROM chats ORDER BY id DESC")])

    def delete_chat(self, chat_id: int) -> None:
        self.write(lambda c: c.execute("DELETE FROM chats WHERE id = ?", (chat_id,)))

    def add_message(self, chat_id: int, role: str, content: str, adapter_version: int | None = None,
                    sources: list | None = None) -> int:
        return self.write(lambda c: c.execute(
            "INSERT INTO messages (chat_id, role, content, adapter_version, sources, created_at) VALUES (?,?,?,?,?,?)",
            (chat_id, role, content, adapter_version, json.dumps(sources) if sources is not None else None,
             time.time())).lastrowid)

    def delete_last_answer(self, chat_id: int) -> None:
        def tx(c):
            row = c.execute("SELECT id, role FROM messages WHERE chat_id = ? ORDER BY id DESC LIMIT 1",
                            (chat_id,)).fetchone()
            if row is not None and row["role"] == "assistant":
                c.execute("DELETE FROM messages WHERE id = ?", (row["id"],))
        self.write(tx)

    def messages(self, chat_id: int) -> list[dict]:
        rows = self.read(lambda c: c.execute(
            "SELECT id, role, content, adapter_version, sources, created_at FROM messages WHERE chat_id = ? "
            "ORDER BY id", (chat_id,)).fetchall())
        return [dict(r) | {"sources": json.loads(r["sources"]) if r["sources"] else []} for r in rows]

    def scrub_sources(self, paths: set[str]) -> int:
        """Drop retrieved passages of these documents from saved chat messages (``forget``); returns how many
        messages changed. The messages themselves are the person's chats and stay."""
        def tx(c):
            changed = 0
            for mid, raw in c.execute("SELECT id, sources FROM messages WHERE sources IS NOT NULL").fetchall():
                try:
                    sources = json.loads(raw)
                except ValueError:
                    sources = None
                if not isinstance(sources, list):
                    continue
                kept = [s for s in sources if not (isinstance(s, dict) and s.get("path") in paths)]
                if len(kept) != len(sources):
                    c.execute("UPDATE messages SET sources = ? WHERE id = ?", (json.dumps(kept), mid))
                    changed += 1
            return changed
        return self.write(tx)

    def vacuum(self) -> None:
        def vac():
            # FTS5 records deletions as tombstones beside the old entries; 'optimize' merges the index into
            # one segment without them, so a forgotten document's words leave the index too
            self._conn.execute("INSERT INTO chunks_fts(chunks_fts) VALUES('optimize')")
            self._conn.execute("VACUUM")
            self._conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchall()   # the old pages leave the WAL too
        self.run(vac)

    def integrity(self) -> str:
        return self.read(lambda c: c.execute("PRAGMA integrity_check").fetchone()[0])


def _split_sql(script: str) -> list[str]:
    """Split a migration into statements, keeping trigger bodies (which contain ';') whole."""
    out, buf = [], []
    for line in script.strip().splitlines():
        buf.append(line)
        joined = "\n".join(buf).strip()
        if sqlite3.complete_statement(joined):
            out.append(joined)
            buf = []
    if "\n".join(buf).strip():
        out.append("\n".join(buf))
    return out
