"""The SQLite store on a real file: migrations, transactions, cascades, the single DB thread."""
import sqlite3
import threading

import numpy as np
import pytest

from app.store import MIGRATIONS, Store


@pytest.fixture
def store(tmp_path):
    s = Store(tmp_path / "t.db")
    yield s
    s.close()


def test_migrations_are_recorded_once_and_wal_is_on(tmp_path):
    s = Store(tmp_path / "t.db")
    assert s.schema_version() == [name for name, _ in MIGRATIONS]
    assert s.read(lambda c: c.execute("PRAGMA journal_mode").fetchone()[0]) == "wal"
    s.close()
    s2 = Store(tmp_path / "t.db")           # reopening applies nothing twice
    assert s2.schema_version() == [name for name, _ in MIGRATIONS]
    s2.close()


def test_replacing_a_document_drops_old_chunks_embeddings_and_index(store):
    doc = store.put_document(path="/a.txt", sha256="x", mtime=1, size=3, title="A", status="ok",
                             chunks=["alpha beta", "gamma zebra"])
    ids = [i for i, _ in store.chunks_without_embedding("e")]
    store.put_embeddings("e", ids, np.ones((2, 4), dtype=np.float32))
    assert store.keyword_search("zebra", 5)
    store.put_document(path="/a.txt", sha256="y", mtime=2, size=3, title="A", status="ok", chunks=["delta"])
    assert store.document(doc).n_chunks == 1
    assert store.keyword_search("zebra", 5) == []
    assert sum(len(i) for i, _ in store.iter_embeddings("e")) == 0
    assert len(store.chunks_without_embedding("e")) == 1


def test_delete_cascades_and_fingerprint_tracks_profile(store):
    fp0 = store.profile_fingerprint("e")
    a = store.put_document(path="/a", sha256="1", mtime=1, size=1, title="a", status="ok", chunks=["one two three"])
    fp1 = store.profile_fingerprint("e")
    assert fp1 != fp0
    store.put_embeddings("e", [store.chunks_without_embedding("e")[0][0]], np.ones((1, 4), np.float32))
    store.delete_document(a)
    assert store.profile_fingerprint("e") == fp0
    counts = store.read(lambda c: [c.execute(f"SELECT COUNT(*) FROM {t}").fetchone()[0]
                                   for t in ("chunks", "embeddings")])
    assert counts == [0, 0]


def test_failed_write_rolls_back(store):
    store.put_document(path="/a", sha256="1", mtime=1, size=1, title="a", status="ok", chunks=["x"])

    def bad(c):
        c.execute("DELETE FROM chunks")
        raise RuntimeError("crash mid-transaction")
    with pytest.raises(RuntimeError):
        store.write(bad)
    assert store.read(lambda c: c.execute("SELECT COUNT(*) FROM chunks").fetchone()[0]) == 1


def test_streaming_embeddings_in_batches(store):
    store.put_document(path="/a", sha256="1", mtime=1, size=1, title="a", status="ok",
                       chunks=[f"chunk {i}" for i in range(10)])
    ids = [i for i, _ in store.chunks_without_embedding("e")]
    vecs = np.arange(40, dtype=np.float32).reshape(10, 4)
    store.put_embeddings("e", ids, vecs)
    batches = list(store.iter_embeddings("e", batch=3))
    assert [len(i) for i, _ in batches] == [3, 3, 3, 1]
    assert np.array_equal(np.concatenate([v for _, v in batches]), vecs)


def test_all_access_happens_on_one_thread(store):
    seen = set()
    errors = []

    def work():
        try:
            for _ in range(20):
                store.read(lambda c: seen.add(threading.current_thread().name))
                store.write(lambda c: c.execute("INSERT INTO chats (title, created_at) VALUES ('t', 0)"))
        except Exception as e:     # pragma: no cover - reported below
            errors.append(e)
    threads = [threading.Thread(target=work) for _ in range(4)]
    [t.start() for t in threads]
    [t.join() for t in threads]
    assert not errors
    assert len(seen) == 1 and next(iter(seen)).startswith("tailor-db")
    assert len(store.chats()) == 80


def test_adapters_and_chats(store):
    d = store.put_document(path="/a", sha256="1", mtime=1, size=1, title="a", status="ok", chunks=["x"])
    v1 = store.add_adapter(path="/p1", profile_fingerprint="f", hypernet_id="h", n_documents=1, n_chunks=1,
                           timings={"total": 1.0}, document_ids=[d])
    v2 = store.add_adapter(path="/p2", profile_fingerprint="f", hypernet_id="h", n_documents=1, n_chunks=1,
                           timings={"total": 2.0}, document_ids=[])
    assert (v1, v2) == (1, 2)
    assert [a["version"] for a in store.adapters_using(d)] == [1]
    chat = store.new_chat("hello")
    store.add_message(chat, "user", "hi")
    store.add_message(chat, "assistant", "hey", adapter_version=2, sources=[{"path": "/a"}])
    msgs = store.messages(chat)
    assert [m["role"] for m in msgs] == ["user", "assistant"] and msgs[1]["sources"] == [{"path": "/a"}]
    assert store.integrity() == "ok"
