"""The person's contexts: a kNN-LM over their own documents, after their words.

Why: the words (app.words) read what the documents say of a token and of the one or two before it; the person's
contexts read the whole context. Every answer position of the person's titled documents, posed as the two tasks
the adapter was trained on, is a key (the base model's last hidden state there: what llama.cpp returns as a
token's embedding) with the token that follows as its value. At a step of an answer the k keys nearest the
model's hidden state vote for their values, p_knn(v) = sum over those with value v of softmax(-d^2 / T), and the
next token is drawn from lambda p_knn + (1 - lambda) p, p the model's (with the words' bias). The vote is trusted
only where the nearest key is nearer than ``gate`` (squared distance): elsewhere the context is none the
documents hold, and everyday chat keeps the model's own distribution (MODEL_CARD "The person's contexts").
Nothing is trained per person: a document costs one forward pass of the base model, once, whatever adapter
comes later (keys under the base model separate people as well as under the adapter: MODEL_CARD).

(k, T, lambda, gate) were chosen on dev authors by scripts/knn_words.py and ship as ``knn.json`` beside the
hypernetwork they were chosen with; ``vote`` is the one place the mixture is computed, for the app and that
script alike.
"""
from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .log import log
from .prompts import TASKS, task_messages, task_target

KNN_FILE = "knn.json"        # beside the hypernetwork (and its words.npz)
KEYS_VERSION = "1"           # bump when document_keys changes what it computes: cached keys are then rebuilt
MAX_ANSWER = 512             # answer tokens of one document posed as one task
MAX_KEYS = 32768             # keys a person holds (the newest documents first): ~75 MB as float32, ~10 ms a step


@dataclass(frozen=True)
class KnnConfig:
    k: int                   # nearest keys that vote
    T: float                 # the vote's temperature (squared distance)
    lam: float               # the vote's share of the next-token distribution
    gate: float              # trusted only where the nearest key's squared distance is below this
    hypernet_id: str         # the hypernetwork (and words head) the grid point was chosen with

    @classmethod
    def beside(cls, hypernet) -> "KnnConfig | None":
        """The grid point shipped beside ``hypernet`` (app.hypernet.Hypernet) if chosen with that one; None
        otherwise: no kNN (another hypernetwork's adapters and words are not what it was chosen over)."""
        path = Path(hypernet.path).with_name(KNN_FILE)
        if not path.is_file():
            return None
        try:
            z = json.loads(path.read_text())
            cfg = cls(int(z["k"]), float(z["T"]), float(z["lam"]), float(z["gate"]), str(z["hypernet_id"]))
        except (OSError, ValueError, KeyError, TypeError) as exc:
            log.warning("the kNN settings %s cannot be read (%s); answering without them", path, exc)
            return None
        if not (cfg.k > 0 and cfg.T > 0 and 0 <= cfg.lam <= 1 and cfg.gate > 0):
            log.warning("the kNN settings %s are out of range (%s); answering without them", path, cfg)
            return None
        return cfg if cfg.hypernet_id == hypernet.id else None


def vote(d: np.ndarray, T: float) -> np.ndarray:
    """(..., k) softmax(-d / T) over the k nearest keys' squared distances ``d`` (ascending)."""
    w = np.exp(-(d - d[..., :1]) / T)
    return w / w.sum(-1, keepdims=True)


def mixture_lam(d_nearest, cfg: KnnConfig):
    """lambda where the nearest key is nearer than the gate, 0 elsewhere."""
    return cfg.lam * (np.asarray(d_nearest) < cfg.gate)


@dataclass(frozen=True)
class Contexts:
    """One person's keys (N, C) float32 and values (N,) int32, with the grid point they are read with."""
    keys: np.ndarray
    values: np.ndarray
    cfg: KnnConfig

    def __post_init__(self):
        object.__setattr__(self, "_sq", np.einsum("nc,nc->n", self.keys, self.keys))     # (N,) |key|^2

    def __len__(self) -> int:
        return len(self.values)

    def nearest(self, hidden: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(k,) squared distances to the k nearest keys, ascending, and (k,) their values."""
        h = np.asarray(hidden, dtype=np.float32)
        d = self._sq - 2 * (self.keys @ h) + float(h @ h)                 # (N,)
        k = min(self.cfg.k, len(d))
        j = np.argpartition(d, k - 1)[:k] if k < len(d) else np.arange(len(d))
        j = j[np.argsort(d[j], kind="stable")]
        return np.maximum(d[j], 0.0), self.values[j]

    def mix(self, hidden: np.ndarray, logits: np.ndarray) -> np.ndarray:
        """One step's logits (V,) -> log(lambda p_knn + (1 - lambda) p): a log-distribution, which samplers take
        as logits; unchanged where the gate does not trust the vote."""
        d, v = self.nearest(hidden)
        lam = float(mixture_lam(d[0], self.cfg))
        if lam == 0.0:
            return logits
        z = logits.astype(np.float64)
        p = np.exp(z - z.max())
        p /= p.sum()
        p_knn = np.bincount(v, weights=vote(d, self.cfg.T), minlength=len(p))[:len(p)]
        with np.errstate(divide="ignore"):
            return np.log(lam * p_knn + (1 - lam) * p).astype(logits.dtype)

    def processor(self, words=None):
        """The one step function of an answer: the words' bias (``words``: Words.processor, or None), then the
        mixture. Engine.stream and Engine.nll hand it each step's hidden state (``needs_hidden``)."""
        def apply(ids: np.ndarray, logits: np.ndarray, hidden: np.ndarray) -> np.ndarray:
            return self.mix(hidden, words(ids, logits) if words is not None else logits)
        apply.needs_hidden = True
        return apply


def posed(title: str, text: str) -> list[tuple[list[dict], str]]:
    """A titled document as the two tasks: (the request's messages, the answer), as the adapter was trained."""
    return [(task_messages(t, title, text), task_target(t, title, text)) for t in TASKS]


def document_keys(engine, title: str, text: str) -> tuple[np.ndarray, np.ndarray]:
    """(keys (n, C) float16, values (n,) int32) of one document under the engine's current adapter (the caller
    detaches it: keys are the base model's)."""
    keys, values = [], []
    end = engine.tokenize("<|im_end|>")                                 # the answer's end, as trained
    for task, (msgs, answer) in zip(TASKS, posed(title, text)):
        target = engine.tokenize(answer, special=False)[:MAX_ANSWER - len(end)] + end
        words = text.split(" ")
        while True:                          # a long text in the request is cut until prompt and answer fit
            prompt = engine.tokenize(engine.chat_prompt(msgs))
            if len(prompt) + len(target) <= engine.n_ctx or len(words) <= 20:
                break
            words = words[:int(len(words) * 0.85)]
            msgs = task_messages(task, title, " ".join(words))
        hidden, _ = engine.hidden_states(prompt, target)                # (len(target), C)
        keys.append(hidden.astype(np.float16))
        values.append(np.asarray(target, dtype=np.int32))
    return np.concatenate(keys), np.concatenate(values)


def keys_name(model_id: str, title: str, text: str) -> str:
    """A document's keys' cache name: its posed text, the base model and KEYS_VERSION decide them."""
    h = hashlib.sha256(f"{KEYS_VERSION}\0{model_id}\0{title}\0{text}".encode())
    return h.hexdigest()[:24] + ".npz"


def of_documents(cfg: KnnConfig, documents: list[dict], engine, model_id: str, cache: Path, compute: bool = True,
                 progress=None) -> tuple[Contexts | None, bool]:
    """The person's contexts from their titled documents (dicts with title and text, newest first), the newest
    documents up to MAX_KEYS, each document's keys read from ``cache`` or, with ``compute``, computed under the
    engine's current adapter (the caller detaches it) and written there; without ``compute`` a document not
    cached yet is left out. Returns (the contexts, None without keys; whether every document's keys are in)."""
    cache.mkdir(parents=True, exist_ok=True)
    keys, values, n, complete = [], [], 0, True
    for i, d in enumerate(documents):
        if n >= MAX_KEYS:
            break
        path = cache / keys_name(model_id, d["title"], d["text"])
        try:
            with np.load(path) as z:
                k, v = z["keys"], z["values"]
        except (OSError, ValueError, KeyError, EOFError):    # not there yet, or damaged: computed again
            if not compute:
                complete = False
                continue
            k, v = document_keys(engine, d["title"], d["text"])
            tmp = path.with_name(path.stem + ".tmp.npz")
            with os.fdopen(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600), "wb") as f:
                np.savez(f, keys=k, values=v)       # the owner's only, as everything in the data dir
            tmp.replace(path)                         # whole or absent, whatever happens
        keys.append(k[:MAX_KEYS - n])
        values.append(v[:MAX_KEYS - n])
        n += len(keys[-1])
        if progress:
            progress(i + 1, len(documents), d["title"])
    if not keys:
        return None, complete
    return Contexts(np.concatenate(keys).astype(np.float32), np.concatenate(values), cfg), complete


def prune(root: Path, documents: list[dict]) -> int:
    """Delete the cached keys (under ``root``, one folder per base model) of every document not in
    ``documents``: a forgotten document's keys hold its tokens (the values), so nothing of it may stay."""
    gone = 0
    for folder in (root.iterdir() if root.is_dir() else ()):
        if not folder.is_dir():
            continue
        keep = {keys_name(folder.name, d["title"], d["text"]) for d in documents}
        for f in folder.iterdir():
            if f.name not in keep:
                f.unlink(missing_ok=True)
                gone += 1
    return gone
