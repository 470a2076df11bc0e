"""Few-shot training examples: the app's retrieval run over each training author's other items.

p2p+rag (the person's adapter, and their own nearest items shown as earlier turns of the task) has the best NLL of
every method on both data sets, yet the hypernetwork never saw an example in its prompt (MODEL_CARD.md, "Against
the targets"). This gives training that prompt: for every leave-one-out example, the items the app's retrieval
(app/retrieval.py, the function Tailor calls) picks from a real Store that holds the author's *other* items, as
``prompts.with_examples`` lays them out.

Retrieval is the slow part (a store per author, one embedding per request), and the GPU machine has no embedder,
so the chosen items are cached by index (``runs/cache/rag-*.json``) and the prompts are rebuilt from the data file
alone: ``stored_item`` is an item as the store hands it to retrieval (a test holds the two equal).
"""
from __future__ import annotations

import hashlib
import json
import tempfile
from pathlib import Path
from typing import Callable

import numpy as np

from app import retrieval
from app.chunking import chunk_document
from app.embed import embed_chunks
from app.models import EMBEDDER_KEY
from app.prompts import TASKS
from app.store import Store
from hypernet_onnx import data as D

RAG_K = retrieval.DEFAULT_K          # the app's default: training sees the prompt a person's request gets


def person_store(user: dict, embedder, path: Path, leave_out: int | None = None) -> Store:
    """A person's profile items held as the app holds imported documents: one document per item (its title, the
    app's chunker), embedded by the app's embedder, in a real SQLite store with the app's keyword index, so
    retrieval and profile vectors run the app's code. ``leave_out``: an item the store never holds (a store of
    its own for each leave-one-out example, ~10 ms: exactly the store of a person who never imported it)."""
    store = Store(path)
    for i, item in enumerate(user["profile"]):
        chunks = chunk_document(item.get("title", ""), item.get("text", ""))
        if chunks and i != leave_out:
            store.put_document(path=f"item-{i}", sha256=None, mtime=None, size=None,
                               title=item.get("title") or None, status="ok", chunks=chunks)
    embed_chunks(store, embedder, EMBEDDER_KEY)
    return store


class CachedEmbedder:
    """The app's embedder behind a table of vectors already computed (data.embed_users' chunk vectors), so a
    store per leave-one-out example costs no embedding; texts not in the table are embedded and kept. Requests
    are embedded one at a time, as the app embeds them: the int8 graph quantizes activations per batch, so a
    request embedded among others gets a slightly different vector, enough to swap near-tied items."""

    def __init__(self, embedder, table: dict[str, np.ndarray]):
        self.embedder, self.table = embedder, table

    def embed(self, texts: list[str]) -> np.ndarray:
        new = list(dict.fromkeys(t for t in texts if t not in self.table))
        if new:
            self.table.update(zip(new, self.embedder.embed(new)))
        return np.stack([np.asarray(self.table[t], np.float32) for t in texts])


def stored_item(item: dict) -> dict:
    """An item as retrieval.examples returns it from the store: its title, and the text of its first chunks
    without the title heading."""
    title = item.get("title", "")
    text = " ".join(chunk_document(title, item.get("text", ""))[:retrieval.EXAMPLE_CHUNKS])
    return {"title": title, "text": retrieval.without_heading(text, title)}


def loo_retrievals(user: dict, emb: np.ndarray, embedder, workdir: Path, k: int = RAG_K) -> dict[str, list[int]]:
    """``"i/task"`` -> the indices of the items the app retrieves when item i is posed as ``task`` to a store
    holding the author's other items (best last, as with_examples shows them). ``emb``: the author's chunk
    vectors in data.profile_chunks order."""
    table = dict(zip(D.profile_chunks(user), emb))
    cached = CachedEmbedder(embedder, table)
    items = user["profile"]
    out = {}
    for i, it in enumerate(items):
        store = person_store(user, cached, workdir / f"loo-{i}.db", leave_out=i)
        try:
            out.update({f"{i}/{t}": idx for t, idx in _retrieved(store, cached, it, k).items()})
        finally:
            _drop(store, workdir / f"loo-{i}.db")
    return out


def _retrieved(store: Store, cached: CachedEmbedder, item: dict, k: int) -> dict[str, list[int]]:
    """task -> the indices of the items the app retrieves from ``store`` when ``item`` is posed as that task."""
    out = {}
    for t in TASKS:
        got, _ = retrieval.examples(store, EMBEDDER_KEY, cached.embed, t,
                                    retrieval.task_query(t, item["title"], item["text"]), k)
        out[t] = [int(g["path"].removeprefix("item-")) for g in got]
    return out


def _drop(store: Store, path: Path) -> None:
    store.close()
    for f in path.parent.glob(f"{path.name}*"):
        f.unlink()


def retrievals(path: Path, users: list[dict], k: int = RAG_K, save: bool = True) -> dict[str, dict[str, list[int]]]:
    """user id -> loo_retrievals, cached in one file per data file, embedder graph and k; each user's entry is
    tagged with a hash of their profile items, so a changed record is retrieved again."""
    many = [u for u in users if len(u["profile"]) > 1]
    tags = {u["user"]: f"{u['user']}@{_hash(u['profile'])}" for u in many}
    table = _cached_table("rag", path, k, save, f"retrieving {Path(path).name}", {
        tags[u["user"]]: (u, lambda emb, embedder, tmp, u=u: loo_retrievals(u, emb, embedder, tmp, k)) for u in many})
    return {u["user"]: table[tags[u["user"]]] for u in many}


def _hash(x) -> str:
    return hashlib.sha256(json.dumps(x).encode()).hexdigest()[:10]


def _cached_table(kind: str, path: Path, k: int, save: bool, desc: str, jobs: dict[str, tuple[dict, Callable]]
                  ) -> dict:
    """tag -> result of ``jobs[tag] = (owner, job)``, kept in one JSON file per kind, data file, embedder graph and
    k; a missing tag runs ``job(owner's chunk vectors, embedder, workdir)``, and the file is written every 50 jobs
    (resumable: a block at a time)."""
    from app.embed import VECTORS_ID
    cache = D.CACHE_DIR / f"{kind}-{Path(path).name.split('.')[0]}-{VECTORS_ID}-k{k}.json"
    table = json.loads(cache.read_text()) if cache.is_file() else {}
    missing = [t for t in jobs if t not in table]
    if missing:
        from tqdm import tqdm
        from app.embed import Embedder
        emb = D.embed_users(path, list({jobs[t][0]["user"]: jobs[t][0] for t in missing}.values()))
        embedder = Embedder()
        with tempfile.TemporaryDirectory() as tmp:
            for n, t in enumerate(tqdm(missing, desc=desc)):
                owner, job = jobs[t]
                table[t] = job(emb[owner["user"]], embedder, Path(tmp))
                if save and (n % 50 == 49 or n == len(missing) - 1):
                    cache.parent.mkdir(parents=True, exist_ok=True)
                    cache.with_suffix(".tmp").write_text(json.dumps(table))
                    cache.with_suffix(".tmp").replace(cache)
    return table


def request_retrievals(asker: dict, owner: dict, owner_emb: np.ndarray, embedder, workdir: Path, k: int = RAG_K
                       ) -> dict[str, list[int]]:
    """``"j/task"`` -> the indices of ``owner``'s items the app retrieves when ``asker``'s query j is posed as
    ``task`` to a store holding all of ``owner``'s items: the person's own request (owner = asker), or its shuffled
    twin (the same request put to another author's documents). ``owner_emb``: the owner's chunk vectors."""
    cached = CachedEmbedder(embedder, dict(zip(D.profile_chunks(owner), owner_emb)))
    store = person_store(owner, cached, workdir / "request.db")
    try:
        return {f"{j}/{t}": idx for j, q in enumerate(asker["queries"])
                for t, idx in _retrieved(store, cached, q, k).items()}
    finally:
        _drop(store, workdir / "request.db")


def request_table(path: Path, pairs: list[tuple[dict, dict]], k: int = RAG_K, save: bool = True
                  ) -> dict[tuple[str, str], dict[str, list[int]]]:
    """(asker id, owner id) -> request_retrievals, both authors from the data file ``path``; cached like
    ``retrievals``, each entry tagged with a hash of the asker's queries and the owner's items."""
    tags = {(a["user"], o["user"]): f"{a['user']}>{o['user']}@{_hash([a['queries'], o['profile']])}" for a, o in pairs}
    table = _cached_table("ragq", path, k, save, f"retrieving requests of {Path(path).name}", {
        tags[(a["user"], o["user"])]: (o, lambda emb, embedder, tmp, a=a, o=o:
                                       request_retrievals(a, o, emb, embedder, tmp, k)) for a, o in pairs})
    return {key: table[t] for key, t in tags.items()}


def rag_loo_examples(users: list[dict], chosen: dict[str, dict[str, list[int]]], tasks=TASKS) -> list[D.Example]:
    """data.loo_examples with each request preceded by the author's retrieved items (``retrievals``), as the app
    prompts a task request when "Cite my documents" is on."""
    out = []
    for u in users:
        if u["user"] not in chosen:
            continue
        for i, it in enumerate(u["profile"]):
            for t in tasks:
                shown = [stored_item(u["profile"][j]) for j in chosen[u["user"]][f"{i}/{t}"]]
                out.append(D.item_example(u["user"], t, it, D.loo_key(u["user"], i), shown))
    return out
