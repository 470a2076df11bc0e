"""Retrieval: the person's own passages, or worked examples, for a request.

One code path for everything that retrieves: the app's "Cite my documents", the CLI, ``tailor serve`` (all
through ``Tailor``), and the evaluation's ``rag`` / ``p2p+rag`` rows (hypernet_onnx/evaluate.py puts each
evaluated person's items in a real ``Store`` and calls these same functions), so the model card's rag rows
measure what a person runs (issue 14).

Hybrid, because the two rankings fail differently: MiniLM cosine finds paraphrases but blurs names and rare
terms; BM25 (SQLite FTS5) finds exact terms but no synonyms. Reciprocal-rank fusion needs no score calibration
between them.
"""
from __future__ import annotations

import re
from collections.abc import Callable

import numpy as np

from .store import Store

DEFAULT_K = 4        # passages/examples per answer (Settings.rag_k's default; the evaluation uses it too)
RRF_K = 60           # reciprocal-rank fusion constant (Cormack et al. 2009); flat enough that both rankings count
CANDIDATES = 4       # each ranking contributes CANDIDATES * k candidates to the fusion
EXAMPLE_CHUNKS = 4   # a worked example carries its document's first chunks: a whole abstract, not a novel


def search(store: Store, embedder_id: str, query_vec: np.ndarray, query: str, k: int) -> list[dict]:
    """The k chunks best for ``query``: cosine (``query_vec`` against the stored embeddings of ``embedder_id``)
    and BM25 rankings fused by reciprocal rank. Each hit: chunk_id, path (its document), text, score."""
    if k <= 0:
        return []
    n = CANDIDATES * k
    scored: list[tuple[float, int]] = []
    for ids, vecs in store.iter_embeddings(embedder_id):
        sims = vecs @ query_vec          # (n_chunks,) cosine: both sides are unit vectors
        top = np.argsort(-sims)[:n]
        scored.extend((float(sims[j]), int(ids[j])) for j in top)
    vector_rank = [cid for _, cid in sorted(scored, reverse=True)[:n]]
    keyword_rank = store.keyword_search(query, n)
    fused: dict[int, float] = {}
    for ranking in (vector_rank, keyword_rank):
        for r, cid in enumerate(ranking):
            fused[cid] = fused.get(cid, 0.0) + 1.0 / (RRF_K + r)
    best = sorted(fused, key=lambda c: -fused[c])[:k]
    texts = store.chunk_texts(best)
    return [{"chunk_id": c, "path": texts[c][1], "text": texts[c][0], "score": round(fused[c], 5)}
            for c in best if c in texts]


def passages(store: Store, embedder_id: str, embed: Callable[[list[str]], np.ndarray], query: str,
             k: int) -> list[dict]:
    """``search`` for a request in words (``embed`` turns texts into unit vectors: the app's Embedder)."""
    if k <= 0 or store.profile_stats()["chunks"] == 0:
        return []
    return search(store, embedder_id, embed([query])[0], query, k)


def examples(store: Store, embedder_id: str, embed: Callable[[list[str]], np.ndarray], task: str, query: str,
             k: int) -> tuple[list[dict], list[dict]]:
    """A task request (title -> abstract, abstract -> title) gets the person's k best titled documents as
    earlier turns of the same task (prompts.with_examples). Pasted passages made the small model copy them; as
    examples they raised ROUGE-L over the base model on both tasks (MODEL_CARD.md, the rag rows).
    ``query``: the request's abstract (headline) or title (writing).
    Returns (items, best last so it sits nearest the request; the passage that found each item)."""
    hits = passages(store, embedder_id, embed, query, CANDIDATES * k)
    items = [{**d, "text": without_heading(d["text"], d["title"])}
             for d in store.documents_of_chunks([h["chunk_id"] for h in hits], EXAMPLE_CHUNKS) if d["title"]][:k]
    first_hit: dict[str, dict] = {}
    for h in hits:
        first_hit.setdefault(h["path"], h)
    return items[::-1], [first_hit[d["path"]] for d in items]


def task_query(task: str, title: str, text: str) -> str:
    """What a task request is searched by: the abstract for a headline, the title for an abstract."""
    return text if task == "headline" else title


def without_heading(text: str, title: str) -> str:
    """A document's text without its title heading ("# Title ..."): an example whose abstract starts with the
    answer would teach the model to copy the first line."""
    return re.sub(r"^\s*#*\s*" + re.escape(title) + r"\s*", "", text, count=1)
