"""The person's words: a logit bias toward the vocabulary their documents use more than other people do.

Why: the adapter carries the two tasks and the domain, but little of the person (answers under one's own adapter
are only ~0.01 nats likelier than under the next author's). The token counts of a person's own documents carry far
more: one small head, learned once across training authors (scripts/vocab_head.py, MODEL_CARD "An output bias
learned once"), maps what the documents say about each of their tokens (how much more often than in other
people's documents, how often, in how many documents), what the model expects at this step (the token's
log-prob, the step's entropy) and, with a head trained on them, what follows the previous token in the documents
(the person's phrases: ``pair_features``) to a bias on that token's logit. No per-person training: counting is all
a new profile costs.

The features are computed here for training and for the app alike (``features``); the head runs in numpy
(``WordsHead``), tested equal to the torch module it was trained as. The bias is added to each step's logits
through llama.cpp's sampler chain (Engine.stream's ``bias``) and, for the evaluation, to the logits NLL is taken
from (Engine.nll's ``bias``): one function for both.
"""
from __future__ import annotations

import zipfile
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .log import log

WORDS_FILE = "words.npz"     # beside the hypernetwork it was trained with
PMI_CAP = 5.0           # clip(PMI) tops out here (a token used e^5 times as often as in other people's documents)
N_FEATURES = 6
N_PAIR_FEATURES = 2     # what the profile says of (previous token, token): see pair_features


def features(counts: np.ndarray, docs: np.ndarray, n_docs: int, total: float, log_bg: np.ndarray) -> np.ndarray:
    """(S, 6) features of S tokens of a profile, scaled to about unit range: clip(PMI), PMI, log count, background
    log-frequency, the share of documents holding the token, log of the profile's total tokens.
    ``counts`` / ``docs`` / ``log_bg``: (S,) the tokens' counts, documents holding them, background log-frequency;
    ``total``: the profile's token count (all tokens). A token the profile lacks (count 0) gets PMI 0."""
    has = counts > 0
    pmi = np.where(has, np.log(np.maximum(counts, 1e-9) / total) - log_bg, 0.0)
    return np.stack([np.clip(pmi, 0, PMI_CAP), pmi / PMI_CAP, np.log1p(counts) / 3, (log_bg + 10) / 5,
                     docs / n_docs, np.full(len(counts), np.log(total) / 8)], 1)


def pair_features(pair_counts: np.ndarray, prev_count: float) -> np.ndarray:
    """(k, 2) features of k tokens after one context p (the previous token, or the previous tokens of a longer
    n-gram), scaled to about unit range: log count of (p, token) in the profile, and the share of p's
    continuations in the profile that are this token. Why: a person's
    phrases (their method's name, their field's terms) show in what follows what, which a count of single tokens
    cannot tell from another author of the same field."""
    return np.stack([np.log1p(pair_counts) / 3, pair_counts / max(prev_count, 1.0)], 1)


def ngram_codes(ids: np.ndarray, n: int, vocab: int) -> np.ndarray:
    """(len - n + 1,) the n-grams of ``ids`` (int64) as integers t_1 V^(n-1) + … + t_n: sorted, those sharing their
    first n - 1 tokens are one range (Words.follows). V^3 < 2^63 for any vocabulary below 2 million."""
    m = len(ids) - n + 1
    code = np.zeros(max(m, 0), dtype=np.int64)
    for j in range(n):
        code = code * vocab + ids[j:j + m]
    return code


def follows_after(codes: np.ndarray, counts: np.ndarray, at: np.ndarray, before, vocab: int):
    """The tokens that follow the tokens ``before`` in a profile's n-grams (n = len(before) + 1; ``codes`` sorted
    ngram_codes, ``counts`` theirs, ``at`` each one's last token's index in the support): those indices and their
    pair_features. Counts of zero (a left-out document's, in training) are no n-gram."""
    prefix = 0
    for t in before:
        prefix = prefix * vocab + int(t)
    lo, hi = np.searchsorted(codes, [prefix * vocab, (prefix + 1) * vocab])
    c = counts[lo:hi]
    m = c > 0
    return at[lo:hi][m], pair_features(c[m], c[m].sum())


def _gelu(x: np.ndarray) -> np.ndarray:
    """torch's exact (erf) GELU; erf by Abramowitz & Stegun 7.1.26 (error < 1.5e-7), as numpy has no erf."""
    z = np.abs(x) * 0.7071067811865476         # a Python float: an np.float64 here would make it all float64
    t = 1 / (1 + 0.3275911 * z)
    poly = t * (0.254829592 + t * (-0.284496736 + t * (1.421413741 + t * (-1.453152027 + t * 1.061405429))))
    erf = np.sign(x) * (1 - poly * np.exp(-z * z))
    return 0.5 * x * (1 + erf)


@dataclass(frozen=True)
class WordsHead:
    """bias = w clip(PMI) + MLP([features, clip(log-prob, -20) / 10, entropy / 5, follow features]) on the
    profile's tokens; the follow features (pair_features of the n-grams ending in the token, n = 2, 3, …: what the
    documents say follows the previous tokens) only as many orders as the head was trained with."""
    w: float
    w1: np.ndarray            # (F + 2 + 2 orders, H)
    b1: np.ndarray            # (H,)
    w2: np.ndarray            # (H,)
    b2: float
    log_bg: np.ndarray        # (V,) background log unigram (training authors' documents, add-one smoothed)
    max_total: float          # the largest profile (tokens) seen in training: bigger ones are counted at this size
    hypernet_id: str          # the hypernetwork whose adapters' logits it was trained on

    @classmethod
    def beside(cls, hypernet) -> "WordsHead | None":
        """The head shipped beside ``hypernet`` (an app.hypernet.Hypernet), if it was trained with that one's
        adapters; None otherwise (another hypernetwork: its adapters' logits are not what the head learned on)."""
        path = Path(hypernet.path).with_name(WORDS_FILE)
        if not path.is_file():
            return None
        try:
            head = cls.load(path)
        except (OSError, ValueError, KeyError, zipfile.BadZipFile) as exc:    # damaged or cut short
            log.warning("the words head %s cannot be read (%s); answering without it", path, exc)
            return None
        return head if head.hypernet_id == hypernet.id else None

    @classmethod
    def load(cls, path: Path) -> "WordsHead":
        with np.load(path) as z:
            return cls(float(z["w"]), z["w1"], z["b1"], z["w2"], float(z["b2"]), z["log_bg"],
                       float(z["max_total"]), str(z["hypernet_id"]))

    def __post_init__(self):
        extra = self.w1.shape[0] - N_FEATURES - 2
        if extra < 0 or extra % N_PAIR_FEATURES or self.w1.shape[1] != len(self.b1) or len(self.w2) != len(self.b1):
            raise ValueError(f"a words head of shape {self.w1.shape} / {self.b1.shape} / {self.w2.shape} is not one "
                             f"this app runs")

    @property
    def orders(self) -> tuple[int, ...]:
        """The n of the n-grams whose follow features the head reads: () for none, (2,) pairs, (2, 3) and triples."""
        return tuple(range(2, 2 + (self.w1.shape[0] - N_FEATURES - 2) // N_PAIR_FEATURES))

    def save(self, path: Path) -> None:
        np.savez(path, w=self.w, w1=self.w1, b1=self.b1, w2=self.w2, b2=self.b2, log_bg=self.log_bg,
                 max_total=self.max_total, hypernet_id=self.hypernet_id)

    def profile(self, documents: Iterable[list[int]]) -> "Words":
        """The person's words from their documents' token ids (one list per document)."""
        V = len(self.log_bg)
        counts, docs, n = np.zeros(V), np.zeros(V), 0
        grams: dict[int, list[np.ndarray]] = {k: [np.zeros(0, np.int64)] for k in self.orders}
        for ids in documents:
            ids = np.asarray([i for i in ids if 0 <= i < V], dtype=np.int64)
            u, c = np.unique(ids, return_counts=True)
            counts[u] += c
            docs[u] += 1
            n += bool(len(u))
            for k in self.orders:
                grams[k].append(ngram_codes(ids, k, V))              # within a document
        support = np.flatnonzero(counts)
        total = counts.sum()
        scale = min(1.0, self.max_total / max(total, 1.0))   # keep the features in the range trained on; PMI itself
        counts *= scale                                       # is unchanged
        total *= scale
        f = features(counts[support], docs[support], max(n, 1), max(total, 1.0), self.log_bg[support])
        follows = {}
        for k, parts in grams.items():
            codes, c = np.unique(np.concatenate(parts), return_counts=True)
            follows[k] = (codes, c * scale, np.searchsorted(support, codes % V))
        return Words(self, support, f.astype(np.float32), follows)


@dataclass(frozen=True)
class Words:
    """One person's words: the tokens of their documents and what the head needs of each."""
    head: WordsHead
    support: np.ndarray       # (S,) token ids
    f: np.ndarray             # (S, 6) features
    grams: dict               # n: ((B,) the documents' n-grams as ngram_codes, sorted; (B,) their counts;
                              #     (B,) the last token's index in support), for n in head.orders

    def __len__(self) -> int:
        return len(self.support)

    def follows(self, before) -> tuple[np.ndarray, np.ndarray]:
        """The support indices of the tokens that follow the tokens ``before`` in the documents (an n-gram of
        n = len(before) + 1), and their pair_features."""
        return follows_after(*self.grams[len(before) + 1], before, len(self.head.log_bg))

    def processor(self, strength: float = 1.0):
        """A function (token ids so far, logits (V,)) -> logits + strength * bias (a llama-cpp-python
        LogitsProcessor): one step's bias from that step's logits and, with a head that reads them, the tokens
        before it.
        The profile's part of the head is computed once here; a step adds only what depends on it."""
        h = self.head
        fixed = (self.f @ h.w1[:N_FEATURES] + h.b1).astype(np.float32)     # (S, H)
        w_lp, w_h = h.w1[N_FEATURES].astype(np.float32), h.w1[N_FEATURES + 1].astype(np.float32)   # (H,)
        w_follow = {k: h.w1[N_FEATURES + 2 + N_PAIR_FEATURES * j:][:N_PAIR_FEATURES].astype(np.float32)
                    for j, k in enumerate(h.orders)}                             # n: (2, H)
        w2 = h.w2.astype(np.float32)
        pmi = h.w * self.f[:, 0] + h.b2                                         # (S,)

        def apply(ids: np.ndarray, logits: np.ndarray) -> np.ndarray:
            z = logits.astype(np.float32) - logits.max()
            e = np.exp(z)
            total = float(e.sum(dtype=np.float64))
            lp = z - np.float32(np.log(total))                                  # (V,) log-probs
            entropy = -float(e @ lp) / total
            a = fixed + (np.maximum(lp[self.support], -20) / 10)[:, None] * w_lp
            a += np.float32(entropy / 5) * w_h                                  # (S, H)
            for k, w in w_follow.items():
                if len(ids) >= k - 1:
                    at, pf = self.follows(ids[len(ids) - (k - 1):])
                    a[at] += pf.astype(np.float32) @ w                          # (m, H)
            out = logits.copy()
            out[self.support] += (strength * (pmi + _gelu(a) @ w2)).astype(out.dtype)
            return out
        return apply


def of_store(head: WordsHead, store, tokenize: Callable[[str], list[int]]) -> Words | None:
    """The person's words from every document in ``store`` (app.store.Store), each tokenized by ``tokenize`` (the
    base model's tokenizer: Engine.tokenize(text, special=False)); None for an empty profile. What the app
    (Tailor.words) and the evaluation both count."""
    texts = store.document_texts()
    return head.profile(tokenize(t) for t in texts) if texts else None
