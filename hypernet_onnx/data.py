"""Training/evaluation data: users from ../shared/data, their profile embeddings, and examples.

Profile embeddings are computed with the app's own chunker and ONNX embedder
(the vectors users get at run time) and cached per block of users under
``runs/cache`` so an interrupted job resumes where it stopped.
"""
from __future__ import annotations

import argparse
import gzip
import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from app.chunking import chunk_document
from app.models import sha256_file
from app.profile import profile_vector
from app.prompts import TASKS, task_messages, task_target, with_examples

DATA_DIR = Path(__file__).resolve().parent.parent.parent / "shared" / "data"
CACHE_DIR = Path(__file__).resolve().parent.parent / "runs" / "cache"
BLOCK = 100


def load_users(path: Path, limit: int | None = None) -> list[dict]:
    users = []
    with gzip.open(path, "rt", encoding="utf-8") as f:
        for line in f:
            users.append(json.loads(line))
            if limit is not None and len(users) >= limit:
                break
    return users


NEAR_DUPLICATE = 0.5     # share of a request's word pairs found in one profile item: another version of it


def near_duplicate(query: dict, profile: list[dict]) -> bool:
    """Whether the request's paper is, in another version, among the person's own items: half or more of its word
    pairs in one of them. Anything that reads the person's documents (their words, retrieved examples) can copy
    from it, which says nothing of how the person writes; the person comparisons are also reported without such
    requests. The shares fall in two groups: on mlpapers-dev 576 of 600 queries below 0.4, 24 from 0.5 to 1.0;
    on the PEPs 39 of 42 below 0.4, 3 above 0.8."""
    def pairs(it: dict) -> set:
        w = f"{it.get('title', '')} {it.get('text', '')}".split()
        return set(zip(w, w[1:]))
    q = pairs(query)
    return bool(q) and max((len(q & pairs(it)) / len(q) for it in profile), default=0.0) >= NEAR_DUPLICATE


def file_hash(path: Path) -> str:
    return sha256_file(path)[:16]


def item_chunks(user: dict) -> list[list[str]]:
    """The chunks of each profile item, in profile order (retrieval needs to know which item a chunk is from)."""
    return [chunk_document(item.get("title", ""), item.get("text", "")) for item in user["profile"]]


def profile_chunks(user: dict) -> list[str]:
    return [c for chunks in item_chunks(user) for c in chunks]


def _cached_block(cache: Path, own: Path, users: list[str]) -> dict[str, np.ndarray] | None:
    """The users' vectors from the first cached block file holding all of them (``own``, their block's file,
    first), or None."""
    files = [g for g in cache.glob("block-*.npz") if not g.name.endswith(".tmp.npz")]
    for g in sorted(files, key=lambda g: g != own):
        data = np.load(g)
        if all(u in data.files for u in users):
            return {u: data[u] for u in users}
    return None


def embed_users(path: Path, users: list[dict], embedder=None, progress: bool = True) -> dict[str, np.ndarray]:
    """user id -> (n_chunks, 384) float16 embeddings, computed once and cached by block.

    The cache is keyed by the embedder graph's hash too, so training always sees the embeddings the app
    computes (a new graph, e.g. the int8 one, starts a new cache instead of reusing another graph's). A block's
    file is named by its users, so two runs over different users of one file (training authors 0-999, a head's
    600-799) keep each other's blocks instead of overwriting them; a block another file holds whole (one of
    another run's blocks, or an older position-named block-00006.npz) is read from there."""
    from tqdm import tqdm
    from app.embed import VECTORS_ID    # the only graph the app (app.models.embedder_files) accepts, run as it runs
    out: dict[str, np.ndarray] = {}
    cache = CACHE_DIR / f"{Path(path).name.split('.')[0]}-{VECTORS_ID}"
    cache.mkdir(parents=True, exist_ok=True)
    blocks = range(0, len(users), BLOCK)
    for start in tqdm(blocks, desc=f"embedding {Path(path).name}", disable=not progress):
        block = users[start:start + BLOCK]
        key = hashlib.sha256(json.dumps([u["user"] for u in block]).encode()).hexdigest()[:12]
        f = cache / f"block-{key}.npz"
        hit = _cached_block(cache, f, [u["user"] for u in block])
        if hit is not None:
            out.update(hit)
            continue
        if embedder is None:
            from app.embed import Embedder
            embedder = Embedder()
        emb = {u["user"]: embedder.embed(profile_chunks(u)).astype(np.float16) for u in block}
        np.savez(f.with_suffix(".tmp.npz"), **emb)
        f.with_suffix(".tmp.npz").replace(f)
        out.update(emb)
    return out


@dataclass
class Example:
    user: str
    task: str
    messages: list[dict]
    target: str
    profile: str = ""     # key of the profile vector to condition on; "" = the user's whole profile

    @property
    def profile_key(self) -> str:
        return self.profile or self.user

    def key(self) -> str:
        """Identity of the text (for the token cache): task, prompt and answer."""
        return hashlib.sha256(json.dumps([self.task, self.messages, self.target]).encode()).hexdigest()[:24]


def item_example(user: str, task: str, item: dict, profile: str = "", shown: list[dict] | None = None) -> Example:
    """One item posed as ``task`` (the app's prompts), after the worked examples ``shown`` where given
    (prompts.with_examples, as the app prompts a task request with retrieval on): every trainer and scorer poses
    items through here, so they all pose them alike."""
    msgs = task_messages(task, item["title"], item["text"])
    if shown is not None:
        msgs = with_examples(task, msgs, shown)
    return Example(user, task, msgs, task_target(task, item["title"], item["text"]), profile)


def examples(users: list[dict], tasks=TASKS) -> list[Example]:
    """Each query item posed as each task."""
    return [item_example(u["user"], t, q) for u in users for q in u["queries"] for t in tasks]


def loo_key(user: str, item: int) -> str:
    return f"{user}#loo{item}"


def loo_examples(users: list[dict], tasks=TASKS) -> list[Example]:
    """Leave-one-out: every profile item posed as each task, conditioned on the profile without that item
    (``loo_key``). 4-5x the examples of the queries alone, and the target is never inside its own profile."""
    return [item_example(u["user"], t, it, loo_key(u["user"], i))
            for u in users if len(u["profile"]) > 1 for i, it in enumerate(u["profile"]) for t in tasks]


def profile_inputs(emb: dict[str, np.ndarray], pooling: str) -> dict[str, np.ndarray]:
    return {uid: profile_vector(e.astype(np.float32), pooling) for uid, e in emb.items()}


def loo_inputs(users: list[dict], emb: dict[str, np.ndarray], pooling: str) -> dict[str, np.ndarray]:
    """loo_key -> the profile vector of the user's chunks minus those of that item (same pooling as the app)."""
    out = {}
    for u in users:
        counts = [len(c) for c in item_chunks(u)]
        e = emb[u["user"]].astype(np.float32)
        if len(e) != sum(counts):
            raise ValueError(f"{u['user']}: {len(e)} cached chunk embeddings, {sum(counts)} chunks now")
        ends = np.cumsum(counts)
        for i, end in enumerate(ends):
            rest = np.concatenate([e[:end - counts[i]], e[end:]])
            if len(rest):
                out[loo_key(u["user"], i)] = profile_vector(rest, pooling)
    return out


def items_vector(user: dict, emb: np.ndarray, items: list[int], pooling: str) -> np.ndarray:
    """The profile vector of some of the user's items (their chunks, pooled as the app pools a profile)."""
    counts = [len(c) for c in item_chunks(user)]
    if len(emb) != sum(counts):
        raise ValueError(f"{user['user']}: {len(emb)} cached chunk embeddings, {sum(counts)} chunks now")
    ends, keep = np.cumsum(counts), set(items)
    rows = [emb[end - n:end] for i, (n, end) in enumerate(zip(counts, ends)) if i in keep]
    return profile_vector(np.concatenate(rows).astype(np.float32), pooling)


def query_key(user: str, j: int) -> str:
    """A query example's own key under ``request_profiles`` (a user may have two queries, each its own request)."""
    return f"{user}#q{j}"


def request_key(profile: str, task: str) -> str:
    """The key of the profile made of the items retrieved for one request (``request_profiles``): the example's
    ``query_key`` or loo key and its task; a shuffled twin appends ``>other user``."""
    return f"{profile}/{task}"


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description="precompute profile embeddings for a data file")
    ap.add_argument("--data", type=Path, required=True)
    ap.add_argument("--users", type=int, default=None)
    a = ap.parse_args()
    us = load_users(a.data, a.users)
    print(len(embed_users(a.data, us)), "users embedded")
