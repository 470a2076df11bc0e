"""What a training run reads besides its config, prepared once and cached under ``runs/cache``.

A run needs each user's profile vector (from the app's embedder) and the token
ids of tens of thousands of examples (rendered with the base model's chat
template and tokenized). Both are slow to compute and the lent GPU machine has
no embedder, so both are kept as one file each under ``runs/cache``
(``data.CACHE_DIR``):
``python -m hypernet_onnx.train --config ... --prepare`` builds them where the
embedder is, and the other machine trains from the files alone. Every entry is
keyed by what it was computed from (embedder graph, pooling and the user's
profile items; tokenizer, chat template, max_len and the example's text), so a
changed input is never served an old value.

:func:`prepare` is the data half of ``Trainer.__init__``: the users of each
data file, the training examples, the evaluation splits, the profile vectors
and the token ids, with both caches read first and topped up.
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Callable, NamedTuple

import numpy as np

from app.prompts import TASKS
from hypernet_onnx import data as D

if TYPE_CHECKING:
    from hypernet_onnx.train import TrainConfig

Encode = Callable[[D.Example], tuple[list[int], int]]      # train.encode with the run's tokenizer and template


class TokenCache:
    """Token ids of examples, computed once and kept in one .npz keyed by Example.key(), so a training run
    (and the GPU machine, which gets the file) does not re-render and re-tokenize tens of thousands of examples.
    Keyed by the tokenizer, chat template and max_len too: another tokenization never reuses the file."""

    def __init__(self, path: Path):
        self.path = Path(path)
        self.items: dict[str, tuple[np.ndarray, int]] = {}
        self.dirty = False
        if self.path.is_file():
            d = np.load(self.path)
            ids, offsets, n_prompt = d["ids"], d["offsets"], d["n_prompt"]
            for j, k in enumerate(d["keys"]):
                self.items[str(k)] = (ids[offsets[j]:offsets[j + 1]], int(n_prompt[j]))

    @staticmethod
    def name(tokenizer_id: str, template: str, max_len: int) -> str:
        h = hashlib.sha256(f"{tokenizer_id}|{template}|{max_len}".encode()).hexdigest()[:12]
        return f"tokens-{h}.npz"

    def get(self, exs: list[Example], encode) -> list[tuple[list[int], int]]:
        out = []
        for ex in exs:
            k = ex.key()
            if k not in self.items:
                ids, n = encode(ex)
                self.items[k] = (np.asarray(ids, dtype=np.int32), n)
                self.dirty = True
            ids, n = self.items[k]
            out.append((ids.tolist(), n))
        return out

    def save(self) -> None:
        if not self.dirty:
            return
        keys = list(self.items)
        lens = [len(self.items[k][0]) for k in keys]
        offsets = np.concatenate([[0], np.cumsum(lens)]).astype(np.int64)
        ids = np.concatenate([self.items[k][0] for k in keys]) if keys else np.zeros(0, np.int32)
        tmp = self.path.with_suffix(".tmp.npz")
        self.path.parent.mkdir(parents=True, exist_ok=True)
        np.savez_compressed(tmp, keys=np.array(keys), offsets=offsets, ids=ids.astype(np.uint32),
                            n_prompt=np.array([self.items[k][1] for k in keys], dtype=np.int32))
        tmp.replace(self.path)
        self.dirty = False


def profile_vectors(c: TrainConfig, paths: dict[str, Path], users: dict[str, list[dict]], save: bool
                    ) -> dict[str, np.ndarray]:
    """Profile vector per key (user, and with ``loo`` user#item), from the app's embeddings of each user's
    chunks. They are kept in one table per embedder graph and pooling, each entry tagged with a hash of the
    user's profile items (a changed record is never served an old vector), so a machine without the embedder
    (the GPU machine) trains from the file alone and runs on other user sets add to the same file."""
    from app.embed import VECTORS_ID
    path = D.CACHE_DIR / f"profiles-{VECTORS_ID}-{c.pooling}.npz"
    table = dict(np.load(path)) if path.is_file() else {}
    out: dict[str, np.ndarray] = {}
    dirty = False
    for k, p in paths.items():
        loo = c.loo and k in ("train", "extra")
        tags = {u["user"]: hashlib.sha256(json.dumps(u["profile"]).encode()).hexdigest()[:10] for u in users[k]}

        def keys(u):     # the user's key and, with loo, one per item (loo_examples skips one-item users)
            n = len(u["profile"]) if loo and len(u["profile"]) > 1 else 0
            return [(key, f"{key}@{tags[u['user']]}") for key in [u["user"]] + [D.loo_key(u["user"], i)
                                                                               for i in range(n)]]
        missing = [u for u in users[k] if any(t not in table for _, t in keys(u))]
        if missing:
            emb = D.embed_users(p, missing)
            new = D.profile_inputs(emb, c.pooling)
            if loo:
                new.update(D.loo_inputs(missing, emb, c.pooling))
            for u in missing:
                for key, tagged in keys(u):
                    if key in new:
                        table[tagged] = new[key]
            dirty = True
        for u in users[k]:
            out.update({key: table[tagged] for key, tagged in keys(u)})
    if dirty and save:
        path.parent.mkdir(parents=True, exist_ok=True)
        np.savez(path.with_suffix(".tmp.npz"), **table)
        path.with_suffix(".tmp.npz").replace(path)
    return out


def rag_twins(paths: dict[str, Path], users: dict[str, list[dict]], loo: list[D.Example], save: bool
              ) -> list[D.Example]:
    """Each leave-one-out example posed after the author's retrieved items (rag_data: the app's retrieval over
    the author's other items), in the order of ``loo``: the p2p+rag prompt the app sends when "Cite my
    documents" is on."""
    from hypernet_onnx import rag_data as R
    chosen: dict[str, dict[str, list[int]]] = {}
    for k in ("train", "extra"):
        if k in users:
            chosen.update(R.retrievals(paths[k], users[k], save=save))
    rag = R.rag_loo_examples(users["train"] + users.get("extra", []), chosen)
    if [(e.profile, e.task) for e in rag] != [(e.profile, e.task) for e in loo]:
        raise AssertionError("rag_loo_examples and loo_examples disagree on the examples' order")
    return rag


@dataclass
class Split:
    """An evaluation set: its examples, their token ids, whose profile stands in as 'shuffled' for each user,
    the profile key each example's shuffled twin is scored under, and the frozen base model's per-example NLL
    (computed once)."""
    examples: list[D.Example]
    items: list[tuple[list[int], int]]
    shuffled: dict[str, str]
    shuffled_profile: dict[str, str]                # own profile key -> the shuffled twin's
    base: np.ndarray | None = None

    def shuffled_key(self, ex: D.Example) -> str:
        return self.shuffled_profile[ex.profile_key]


def make_split(users: list[dict], tokens: TokenCache, encode: Encode) -> Split:
    exs = D.examples(users)
    ids = sorted({e.user for e in exs})
    shuffled = {u: ids[(i + 1) % len(ids)] for i, u in enumerate(ids)}
    return Split(exs, tokens.get(exs, encode), shuffled, dict(shuffled))


def query_indices(exs: list[D.Example], users: list[dict]) -> list[int]:
    """Which of its author's queries each data.examples row (user, query j, task, in that order) poses."""
    js = [(u["user"], j) for u in users for j, _ in enumerate(u["queries"]) for _ in TASKS]
    if [e.user for e in exs] != [u for u, _ in js]:
        raise AssertionError("data.examples and the users' queries disagree on the examples' order")
    return [j for _, j in js]


def keyed_by_query(exs: list[D.Example], users: list[dict]) -> list[D.Example]:
    """data.examples rows with the profile key of their own request."""
    return [replace(e, profile=D.request_key(D.query_key(e.user, j), e.task))
            for e, j in zip(exs, query_indices(exs, users))]


class _Request(NamedTuple):
    """One request profile ``request_profiles`` needs: its key and tag, and where its items come from."""
    key: str
    tag: str
    kind: str            # "loo": from the asker's other items; "query": from all of the owner's items
    asker: dict
    owner: dict
    index: int           # the loo item or the query
    task: str
    fallback: str        # the whole profile's key, for a request that retrieves nothing

    @property
    def cached(self) -> str:
        return f"{self.key}@{self.tag}"


def request_profiles(cfg: TrainConfig, paths: dict[str, Path], users: dict[str, list[dict]],
                     pairs: dict[str, list[tuple[dict, dict]]], whole: dict[str, np.ndarray], save: bool
                     ) -> dict[str, np.ndarray]:
    """``request_profiles``: a profile per request, the vector of the items the app's retrieval picks for it
    (rag_data: the same items "Cite my documents" shows), so the adapter is made for this request from the
    documents nearest it, P2P's per-request profile (issue 11: the person is in the nearest items, MODEL_CARD
    "Where the person is"). For every loo example of the training files (retrieved from the author's other items)
    and every query of ``pairs`` (asker, owner): the asker's request put to the owner's items, the owner being the
    asker or, for a shuffled twin, another author (key suffix ``>owner``). A request that retrieves nothing gets
    the whole profile it was put to, as the app would. Vectors are cached like ``profile_vectors``."""
    from app.embed import VECTORS_ID
    from hypernet_onnx import rag_data as R
    path = D.CACHE_DIR / f"requests-{VECTORS_ID}-{cfg.pooling}-k{R.RAG_K}.npz"
    table = dict(np.load(path)) if path.is_file() else {}

    def tag(*xs) -> str:
        return hashlib.sha256(json.dumps(xs).encode()).hexdigest()[:10]
    out: dict[str, np.ndarray] = {}
    dirty = False
    for k, p in paths.items():
        wanted: list[_Request] = []
        if cfg.loo and k in ("train", "extra"):
            for u in users[k]:
                if len(u["profile"]) > 1:
                    t_ = tag(u["profile"])
                    wanted += [_Request(D.request_key(D.loo_key(u["user"], i), t), t_, "loo", u, u, i, t,
                                        D.loo_key(u["user"], i)) for i in range(len(u["profile"])) for t in TASKS]
        for a, o in pairs.get(k, []):
            t_, twin = tag(a["queries"], o["profile"]), "" if a["user"] == o["user"] else f">{o['user']}"
            wanted += [_Request(D.request_key(D.query_key(a["user"], j), t) + twin, t_, "query", a, o, j, t, o["user"])
                       for j in range(len(a["queries"])) for t in TASKS]
        missing = [w for w in wanted if w.cached not in table]
        if missing:
            askers = list({w.asker["user"]: w.asker for w in missing if w.kind == "loo"}.values())
            chosen = R.retrievals(p, askers, save=save) if askers else {}
            qpairs = list({(w.asker["user"], w.owner["user"]): (w.asker, w.owner) for w in missing
                           if w.kind == "query"}.values())
            asked = R.request_table(p, qpairs, save=save) if qpairs else {}
            emb = D.embed_users(p, list({w.owner["user"]: w.owner for w in missing}.values()))
            for w in missing:
                got = chosen[w.asker["user"]] if w.kind == "loo" else asked[(w.asker["user"], w.owner["user"])]
                idx = got[f"{w.index}/{w.task}"]
                table[w.cached] = (D.items_vector(w.owner, emb[w.owner["user"]], idx, cfg.pooling) if idx
                                   else whole[w.fallback])
            dirty = True
        out.update({w.key: table[w.cached] for w in wanted})
    if dirty and save:
        path.parent.mkdir(parents=True, exist_ok=True)
        np.savez(path.with_suffix(".tmp.npz"), **table)
        path.with_suffix(".tmp.npz").replace(path)
    return out


@dataclass
class RunData:
    """What :func:`prepare` hands the trainer."""
    data_hash: str                                  # of the training file, recorded in every checkpoint
    train_users: list[dict]                         # training authors (train + extra), in file order
    profiles: dict[str, np.ndarray]                 # profile key -> vector (see profile_vectors)
    train: list[D.Example]
    train_ids: list[str]                            # sorted ids of the users with training examples
    tokens: TokenCache
    splits: dict[str, Split]                        # "dev", and "ood" when the config names an ood file
    train_items: list[tuple[list[int], int]]        # token ids of ``train``, in the same order
    teacher_items: list[tuple[list[int], int] | None]   # rag_distill: the teacher's prompt of each example, or None


def prepare(cfg: TrainConfig, data_dir: Path, tokenizer_id: str, template: str, encode: Encode,
            save: bool) -> RunData:
    """Load the run's users, examples and splits and fill both caches (written back only with ``save``: the main
    process, so several processes never write the same file)."""
    paths = {"train": data_dir / cfg.train_data, "dev": data_dir / cfg.dev_data}
    counts = {"train": cfg.train_users, "dev": cfg.dev_users}
    if cfg.extra_data:
        paths["extra"], counts["extra"] = data_dir / cfg.extra_data, cfg.extra_users or None
    if cfg.ood_data:
        paths["ood"], counts["ood"] = data_dir / cfg.ood_data, cfg.ood_users or None
    data_hash = D.file_hash(paths["train"])
    users = {k: D.load_users(p, counts[k]) for k, p in paths.items()}
    train_users = users["train"] + users.get("extra", [])
    profiles = profile_vectors(cfg, paths, users, save)
    loo = D.loo_examples(train_users) if cfg.loo else []
    twins: list[D.Example | None] = [None] * len(loo)
    if cfg.rag_share > 0 or cfg.rag_distill > 0:
        if not cfg.loo:
            raise SystemExit("rag_share and rag_distill need loo: the retrieved items are the author's other items")
        rag = rag_twins(paths, users, loo, save)
        # rag_share: a seeded share of the examples is shown after the retrieved items; rag_distill: the bare
        # rest learn toward their adapter shown them (teacher)
        shown = np.random.default_rng(cfg.seed).random(len(loo)) < cfg.rag_share
        twins = [None if s or cfg.rag_distill <= 0 else r for r, s in zip(rag, shown)]
        loo = [r if s else e for e, r, s in zip(loo, rag, shown)]
    queries = D.examples(train_users)
    tokens = TokenCache(D.CACHE_DIR / TokenCache.name(tokenizer_id, template, cfg.max_len))
    splits = {k: make_split(users[k], tokens, encode) for k in ("dev", "ood") if k in users}
    if cfg.request_profiles:
        if not cfg.loo:
            raise SystemExit("request_profiles needs loo: a training request's items are the author's other items")
        if cfg.contrast > 0:
            raise SystemExit("contrast with request_profiles is not built: the other person's adapter would need "
                             "their items retrieved for this request")
        ids = {k: {u["user"]: u for u in us} for k, us in users.items()}
        pairs = {k: [(u, u) for u in users[k]] for k in ("train", "extra") if k in users}
        pairs.update({k: [(ids[k][u], ids[k][owner]) for u, other in sp.shuffled.items() for owner in (u, other)]
                      for k, sp in splits.items()})
        profiles.update(request_profiles(cfg, paths, users, pairs, profiles, save))
        queries = keyed_by_query(queries, train_users)
        loo = [replace(e, profile=D.request_key(e.profile, e.task)) for e in loo]
        for k, sp in splits.items():
            sp.examples = keyed_by_query(sp.examples, users[k])
            sp.shuffled_profile = {e.profile: f"{e.profile}>{sp.shuffled[e.user]}" for e in sp.examples}
    train = queries + loo
    train_ids = sorted({e.user for e in train})
    if cfg.contrast > 0 and len(train_ids) < 2:
        raise SystemExit("contrast needs at least two training users")
    train_items = tokens.get(train, encode)
    teachers = [None] * len(queries) + [tokens.get([t], encode)[0] if t else None for t in twins]
    if save:
        tokens.save()
    return RunData(data_hash, train_users, profiles, train, train_ids, tokens, splits, train_items, teachers)
