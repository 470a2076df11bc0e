"""Can the output bias be learned once, across authors, rather than counted (PMI) or trained per author? (issue 11)

A count of the author's words raised at the output (scripts/vocab_bias.py, PMI weight 0.3) separates own from
the next author's 0.04 / 0.06 nats; the same bias trained per author on their items (scripts/vocab_ceiling.py)
0.08 / 0.08. Per-author training is what Tailor must not do. This trains one small function, shared by all
authors, that maps what an author's documents say about each of their tokens to a logit bias: an output part of
the hypernetwork, its input the profile's token statistics instead of its embedding.

    token v of the author's support S (the tokens of their documents), counts c over the profile:
        features  clip(PMI), PMI, log(1 + c_v), log q_bg(v), share of items holding v, log total tokens
        bias      w clip(PMI) + MLP(features)                  w starts at 0.3 (the PMI bias), the MLP at 0
    --positional 1 adds two features of the position: the model's log-prob of v there and its entropy, so the
    bias can act where the model is unsure (one bias per position, (A, S)); --positional 2 also two of the
    previous token p: log(1 + c_pv) and c_pv / c_p·, the profile's count of the pair (p, v) and its share of what
    follows p there (app.words.pair_features): the person's phrases, not only their words; --positional 3 the
    same two of the two previous tokens (triples). A kind with the suffix n (2n) also reads, per token, its
    count in the items the app's retrieval picks for the request and the share of them holding it
    (near_features): which of the person's words this request is about.

Trained on --train-users authors of the training file after the --bg-users the background is counted on
(never dev): each of their first --items profile items posed as both tasks, the adapter and the counts made from
the rest of the profile (leave-one-out: a target's own words are never in its counts), answer NLL per token,
Adam. The base model is frozen, so logits are computed once (cached under --cache) and only the support's kept
(vocab_ceiling.keep). Scored each epoch on dev authors' first query as vocab_ceiling scores: own adapter + own
bias vs the next author's adapter + their bias; the epoch is chosen on the first half of the authors (own NLL),
reported on the second (and again without the authors whose request is, in another version, among their items:
data.near_duplicate; --no-duplicates also trains and chooses without such items and requests). --load scores a saved head on other authors (PEPs), after retrieved items (--rag) or
 on everyday chat (--chat), or decoding greedily (--generate), without training; with --export it also writes
--export-head as the app runs it (app.words.WordsHead, assets/hypernet/words.npz; the features are
app.words.features and pair_features here and there).

    HF_HUB_OFFLINE=1 PYTHONPATH=. .venv/bin/python scripts/vocab_head.py --users 60 --out runs/s22/head-60.json
"""
from __future__ import annotations

import argparse
import hashlib
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent))
from person_guidance import add_arguments, greedy_scoring, guided_greedy, rouge_report, save, setup  # noqa: E402
from vocab_bias import log_background  # noqa: E402
from vocab_ceiling import biased_nll, keep  # noqa: E402

from app.prompts import TASKS  # noqa: E402
from app.words import N_FEATURES, N_PAIR_FEATURES, features, follows_after, ngram_codes  # noqa: E402

ORDERS = (2, 3)      # the n-grams whose counts Author.follows reads: pairs, triples
N_NEAR_FEATURES = 2  # near_features: a kind with the suffix n reads them


def near_features(counts: np.ndarray, docs: np.ndarray, n_docs: int) -> np.ndarray:
    """(S, 2) features of S tokens of a profile in the items retrieved for one request: their log count there and
    the share of those items holding them. Why: counted over all documents, the words pull an answer toward the
    person's other topics too (ROUGE-1 of abstracts, MODEL_CARD "The person's phrases"); the items nearest the
    request say which of their words this request is about. Measured here only (session 25: within noise of
    the head without them), so the app does not count them."""
    return np.stack([np.log1p(counts) / 3, docs / max(n_docs, 1)], 1)
from hypernet_onnx import caches as C  # noqa: E402
from hypernet_onnx import data as D  # noqa: E402
from hypernet_onnx import rag_data as R  # noqa: E402
from hypernet_onnx.stats import paired_bootstrap  # noqa: E402


class Author:
    """An author's token statistics, per item, so that a leave-one-out profile's are a subtraction."""

    def __init__(self, tok, user: dict, vocab: int):
        self.items, grams = [], {n: [] for n in ORDERS}             # per item: (unique ids, their counts)
        for it in user["profile"]:
            texts = [np.asarray(tok(text, add_special_tokens=False)["input_ids"], dtype=np.int64)
                     for text in (it.get("title", ""), it.get("text", ""))]
            ids = np.concatenate(texts)                              # one document, as the app counts one
            self.items.append(np.unique(ids, return_counts=True))
            for n in ORDERS:
                grams[n].append(np.unique(ngram_codes(ids, n, vocab), return_counts=True))
        self.vocab = vocab
        self.support = torch.tensor(np.unique(np.concatenate([u for u, _ in self.items])))
        self.grams = {}      # n: ((B,) the profile's n-grams as codes, sorted; per item (their index, count); (B,) total;
        #                        (B,) each one's last token's index in the support)
        for n, per_item in grams.items():
            codes = np.unique(np.concatenate([c for c, _ in per_item]))
            items = [(np.searchsorted(codes, c), k) for c, k in per_item]
            total = np.zeros(len(codes))
            for i, k in items:
                total[i] += k
            self.grams[n] = (codes, items, total, np.searchsorted(self.support.numpy(), codes % vocab))

    def stats(self, leave_out: int | None = None) -> tuple[np.ndarray, np.ndarray, int]:
        """(V,) counts, (V,) number of items holding each token, number of items; without item ``leave_out``."""
        c, d = np.zeros(self.vocab), np.zeros(self.vocab)
        for i, (ids, n) in enumerate(self.items):
            if i != leave_out:
                c[ids] += n
                d[ids] += 1
        return c, d, len(self.items) - (leave_out is not None)

    def features(self, log_bg: np.ndarray, leave_out: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """(S, F) features of the support's tokens (scaled to about unit range) and (S,) whether the profile holds
        each (a token only in the left-out item gets no bias)."""
        c, d, n = self.stats(leave_out)
        s = self.support.numpy()
        cs, bg = c[s], log_bg[s]
        return torch.tensor(features(cs, d[s], n, c.sum(), bg), dtype=torch.float32), torch.tensor(cs > 0)

    def near(self, idx: list[int]) -> torch.Tensor:
        """(S, 2) near_features of the support's tokens in the items ``idx`` (the ones the app's
        retrieval picks for a request from this author's documents; never a leave-one-out target, which retrieval
        does not hold)."""
        c, d = np.zeros(self.vocab), np.zeros(self.vocab)
        for i in idx:
            ids, n = self.items[i]
            c[ids] += n
            d[ids] += 1
        s = self.support.numpy()
        return torch.tensor(near_features(c[s], d[s], len(idx)), dtype=torch.float32)

    def follows(self, k: dict, tail: tuple[int, ...], leave_out: int | None = None) -> list[tuple]:
        """What the profile says of each of one example's positions after the tokens before it (k: its kept
        log-probs under this author's support), per n of ORDERS, sparse: (N, 2) [position, support index] and
        (N, 2) app.words.pair_features of the n-gram (previous n - 1 tokens, token); without item ``leave_out``.
        Before the first position come the prompt's last tokens (``tail``); then the answer's, known where they
        are in the support (an n-gram with a token outside it is not in the profile)."""
        sup, V = self.support.numpy(), self.vocab
        ti = k["ti"].numpy()
        seq = np.concatenate([tail, np.where(ti >= 0, sup[np.maximum(ti, 0)], -1)])    # (len(tail) + A,)
        out = []
        for n in ORDERS:
            codes, items, counts, last = self.grams[n]
            counts = counts.copy()
            if leave_out is not None:
                i, c = items[leave_out]
                counts[i] -= c
            at, f = [], []
            for a in range(len(ti)):
                first = len(tail) + a - (n - 1)
                before = seq[max(first, 0):len(tail) + a]
                if first < 0 or (before < 0).any():              # not that many tokens before it known
                    continue
                j, pf = follows_after(codes, counts, last, before, V)
                if len(j):
                    at.append(np.stack([np.full(len(j), a), j], 1))
                    f.append(pf)
            out.append((torch.tensor(np.concatenate(at)), torch.tensor(np.concatenate(f), dtype=torch.float32))
                       if at else (torch.zeros((0, 2), dtype=torch.long), torch.zeros((0, N_PAIR_FEATURES))))
        return out


class VocabHead(nn.Module):
    """bias = w clip(PMI) + MLP(features) on the tokens the profile holds, 0 elsewhere; at the start the PMI bias.
    kind 0: one bias per token; 1: per token and position (the model's log-prob and entropy there); 2: also what
    the profile says of (previous token, token); 3: and of (the two previous tokens, token) (Author.follows)."""

    def __init__(self, kind: int | str, hidden: int = 32, pmi: float = 0.3):
        super().__init__()
        self.near = isinstance(kind, str) and kind.endswith("n")                # "2n": kind 2 and near features
        kind = int(kind.rstrip("n")) if isinstance(kind, str) else int(kind)
        self.positional, self.orders = kind >= 1, max(kind - 1, 0)       # orders: how many of ORDERS it reads
        if self.near and not self.positional:
            raise ValueError("near features need a head per position (kind >= 1)")
        self.w = nn.Parameter(torch.tensor(pmi))
        n_in = N_FEATURES + 2 * self.positional + N_PAIR_FEATURES * self.orders + N_NEAR_FEATURES * self.near
        self.mlp = nn.Sequential(nn.Linear(n_in, hidden), nn.GELU(), nn.Linear(hidden, 1))
        nn.init.zeros_(self.mlp[-1].weight)
        nn.init.zeros_(self.mlp[-1].bias)

    def forward(self, f: torch.Tensor, has: torch.Tensor, k: dict, follows: list | None = None,
                near: torch.Tensor | None = None) -> torch.Tensor:
        """(S,) bias, or (A, S) per position (k: the example's kept log-probs and entropies; follows:
        Author.follows; near: Author.near of the items retrieved for the request)."""
        if not self.positional:
            b = self.w * f[:, 0] + self.mlp(f)[:, 0]                             # (S,)
        else:
            A, S = k["s"].shape
            x = [f.expand(A, S, N_FEATURES), (k["s"].clamp(min=-20) / 10)[..., None],
                 (k["h"] / 5)[:, None, None].expand(A, S, 1)]
            for at, pf in (follows[:self.orders] if self.orders else []):
                dense = torch.zeros(A, S, N_PAIR_FEATURES)
                dense[at[:, 0], at[:, 1]] = pf
                x.append(dense)
            if self.near:
                x.append(near.expand(A, S, N_NEAR_FEATURES))
            b = self.w * f[:, 0] + self.mlp(torch.cat(x, -1))[..., 0]           # (A, S)
        return b * has


def entropy(lp: torch.Tensor) -> torch.Tensor:
    """(...,) entropy of (..., V) log-probs: head-p1's feature of a position, in training and in decoding alike."""
    return -(lp.exp() * lp).sum(-1)


def kept(S, item, owner, support: torch.Tensor) -> dict:
    """vocab_ceiling.keep of ``item`` under ``owner``'s adapter, with each position's entropy (A,)."""
    lp, tgt = S.logp(item, owner)
    return {**keep(lp, tgt, support), "h": entropy(lp)}


def train_examples(S, a, log_bg, vocab, tail: tuple[int, ...], near: bool) -> list[tuple]:
    """(kept, features, has, follows) of the training authors' leave-one-out items (the kept log-probs computed
    once per author and cached)."""
    users = [u for u in D.load_users(a.train_data, a.bg_users + a.train_users)[a.bg_users:] if len(u["profile"]) > 1]
    loo = D.loo_inputs(users, D.embed_users(a.train_data, users), "mean")
    # "i/task" -> the other items the app retrieves for item i: retrieval (minutes uncached) only for a near head
    chosen = R.retrievals(a.train_data, users) if near else None
    out, t0 = [], time.time()
    for j, u in enumerate(users):
        au = Author(S.tok, u, vocab)
        f = a.cache / f"{u['user'][-16:]}-{a.items}.pt"
        if f.is_file():
            ks = torch.load(f)
        else:
            ks = [(i, kept(S, S.enc(D.item_example(u["user"], task, it)), loo[D.loo_key(u["user"], i)], au.support))
                  for i, it in enumerate(u["profile"][:a.items]) for task in TASKS]
            torch.save(ks, f)
        profile = u["profile"]
        copies = {i for i, it in enumerate(profile[:a.items])      # another version of the item is in the profile
                  if a.no_duplicates and D.near_duplicate(it, profile[:i] + profile[i + 1:])}
        tasks = [t for _ in profile[:a.items] for t in TASKS]       # ks's order: each item as each task
        out += [(k, *au.features(log_bg, i), au.follows(k, tail, i),
                 au.near(chosen[u["user"]][f"{i}/{t}"]) if near else None)
                for (i, k), t in zip(ks, tasks) if i not in copies]
        if j % 10 == 9:
            print(f"{j + 1}/{len(users)} training authors, {time.time() - t0:.0f} s", flush=True)
    return out


def scored_examples(S, a, authors: dict[str, Author], feats: dict, tail: tuple[int, ...]) -> list[tuple]:
    """Per request of the scored authors: (example, own kept, own features, own follows, other kept, other
    features, other follows); with
    --rag each side's request after the items the app's retrieval picks from that side's author (p2p+rag)."""
    f = a.cache / f"scored-{a.data.name.split('.')[0]}-{a.skip}-{a.users}-{a.queries}{'-rag' * a.rag}.pt"
    if f.is_file():
        ks = torch.load(f)
    else:
        ks = []
        for i, ex in enumerate(S.slots.examples):
            other = S.split.shuffled[ex.user]
            prompt = {side: S.enc(S.slots.shown[side][i] if a.rag else ex) for side in ("own", "other")}
            ks.append((kept(S, prompt["own"], ex.user, authors[ex.user].support),
                       kept(S, prompt["other"], other, authors[other].support)))
        torch.save(ks, f)
    by = {u["user"]: u for u in S.users}
    asked = R.request_table(a.data, [(u, o) for u in S.users for o in (u, by[S.split.shuffled[u["user"]]])])
    js = [j for ex, j in zip(S.split.examples, C.query_indices(S.split.examples, S.users))
          if ex.task in TASKS and j < a.queries]                     # the query each of slots.examples poses
    out = []
    for ex, j, (own, oth) in zip(S.slots.examples, js, ks):
        other = S.split.shuffled[ex.user]
        near = {o: authors[o].near(asked[(ex.user, o)][f"{j}/{ex.task}"]) for o in (ex.user, other)}
        out.append((ex, own, feats[ex.user], authors[ex.user].follows(own, tail), near[ex.user],
                    oth, feats[other], authors[other].follows(oth, tail), near[other]))
    return out


@torch.no_grad()
def chat_drift(S, heads: dict[str, VocabHead], authors: dict[str, Author], feats: dict, n_users: int,
               tail: tuple[int, ...]) -> list[dict]:
    """Per author and everyday-chat anchor (hypernet_onnx.chat_anchors): NLL of the base model's own answer under
    p2p (the author's adapter at full strength), plain and with each head's bias, minus the base model's NLL."""
    from hypernet_onnx import chat_anchors
    if any(h.near for h in heads.values()):
        raise SystemExit("--chat: a head with near features needs the person's documents retrieved for each chat "
                         "anchor, not written here")
    anchors = [chat_anchors.encode(S.tok, S.template, x, 4096) for x in chat_anchors.load()]
    base = [float(torch.nn.functional.nll_loss(*S.logp(x, None))) for x in anchors]
    rows = []
    for uid in list(authors)[:n_users]:
        fu, hu = feats[uid]
        for j, x in enumerate(anchors):
            k = kept(S, x, uid, authors[uid].support)
            pu = authors[uid].follows(k, tail)
            heads_b = [(f"p2p|{n}", h(fu, hu, k, pu)) for n, h in heads.items()]
            for name, b in [("p2p", torch.zeros(()))] + heads_b:
                rows.append({"user": uid, "anchor": j, "method": name, "drift": float(biased_nll(k, b) - base[j])})
    return rows


@torch.no_grad()
def generate(S, heads: dict[str, VocabHead], authors: dict[str, Author], feats: dict, tasks: list[str]) -> list[dict]:
    """Greedy answers (evaluate.MAX_TOKENS) to the own side's requests of ``tasks`` under the author's adapter
    (p2p), plain and with each head's bias computed from each step's log-probs; ROUGE-L as evaluate.py scores it."""
    from hypernet_onnx.evaluate import MAX_TOKENS
    if any(h.orders for h in heads.values()):
        raise SystemExit("--generate: greedy decoding with pair features is not written here; score them with "
                         "the app's engine (hypernet_onnx.evaluate) once exported")
    rouge_l, stop = greedy_scoring(S.tok)
    out = []
    for i, ex in enumerate(S.slots.examples):
        if ex.task not in tasks:
            continue
        own = S.hyper(torch.tensor(S.profiles[ex.user])[None])
        sup, (f, has) = authors[ex.user].support, feats[ex.user]
        ids, n = S.enc(ex)
        for name, h in [("p2p", None), *heads.items()]:
            def bias(lp: torch.Tensor, h=h) -> torch.Tensor:                  # (V,) -> (V,)
                b = torch.zeros_like(lp)
                b[sup] = h(f, has, {"s": lp[None, sup], "h": entropy(lp)[None]}).reshape(-1)
                return b
            got = guided_greedy(S.model, S.wrappers, S.hyper.scale, (ids[:n], own), (None, None), 0.0,
                                MAX_TOKENS[ex.task], stop, bias=bias if h is not None else None)
            text = S.tok.decode(got, skip_special_tokens=True).strip()
            out.append({"user": ex.user, "query": i, "task": ex.task, "method": name, "output": text,
                        "rougeL": rouge_l(ex.target, text)})
        print(f"generated {i + 1}/{len(S.slots.examples)}", flush=True)
    return out


@torch.no_grad()
def score(heads: dict[str, VocabHead], scored: list[tuple]) -> list[dict]:
    rows = []
    for i, (ex, own, (fo, ho), po, no, oth, (fx, hx), px, nx) in enumerate(scored):
        r = {"user": ex.user, "query": i, "task": ex.task}
        rows += [dict(r, method="none", nll=float(biased_nll(own, torch.zeros(()))))]
        rows += [dict(r, method="other-none", nll=float(biased_nll(oth, torch.zeros(()))))]
        for name, h in heads.items():
            rows += [dict(r, method=name, nll=float(biased_nll(own, h(fo, ho, own, po, no)))),
                     dict(r, method=f"{name}/other", nll=float(biased_nll(oth, h(fx, hx, oth, px, nx))))]
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_arguments(ap)
    ap.add_argument("--train-data", type=Path, default=D.DATA_DIR / "mlpapers-train.jsonl.gz")
    ap.add_argument("--bg-users", type=int, default=600)
    ap.add_argument("--train-users", type=int, default=100)
    ap.add_argument("--items", type=int, default=6, help="leave-one-out targets per training author")
    ap.add_argument("--positional", default="0,1", help="heads to train: 0 per token, 1 per token and position, "
                    "2 also per (previous token, token), 3 and per (two previous tokens, token); a suffix n "
                    "(2n) adds the near features: the counts in the items retrieved for the request")
    ap.add_argument("--lr", type=float, default=3e-3)
    ap.add_argument("--batch", type=int, default=8, help="examples per Adam step")
    ap.add_argument("--epochs", type=int, default=8)
    ap.add_argument("--cache", type=Path, default=D.CACHE_DIR / "vocab-head")
    ap.add_argument("--rag", action="store_true", help="score p2p+rag: each side's request after its author's "
                    "retrieved items (what a person runs on task requests)")
    ap.add_argument("--chat", type=int, default=0, help="with --load: also the chat drift of the first N authors")
    ap.add_argument("--generate", default="", help="with --load: also greedy answers to these tasks, ROUGE-L")
    ap.add_argument("--load", type=Path, help="score this saved head (a --out's .pt) instead of training")
    ap.add_argument("--export", type=Path, help="with --load: also write --export-head as the app runs it (a .npz: "
                    "app.words.WordsHead), counted against --train-users after --bg-users")
    ap.add_argument("--export-head", default="head-p1", help="with --export: which of the saved heads (head-p1, "
                    "or head-p2: with pair features)")
    ap.add_argument("--no-duplicates", action="store_true", help="train without items another version of which "
                    "is in the author's profile (data.near_duplicate), and choose epochs without such requests: "
                    "copying is not the person's way of writing")
    ap.add_argument("--out", type=Path, required=True)
    a = ap.parse_args()
    torch.manual_seed(0)
    S = setup(a)
    a.cache = a.cache / hashlib.sha256(a.hypernet.read_bytes()).hexdigest()[:12]     # logits of this file's adapters
    a.cache.mkdir(parents=True, exist_ok=True)
    vocab = S.model.get_output_embeddings().weight.shape[0]
    log_bg = log_background(S.tok, a.train_data, a.bg_users, vocab)
    authors = {u["user"]: Author(S.tok, u, vocab) for u in S.users}
    feats = {uid: au.features(log_bg) for uid, au in authors.items()}
    ids, n = S.enc(S.slots.examples[0])
    tail = tuple(int(t) for t in ids[n - 2:n])    # the prompt's last tokens: the chat template's, every request's
    scored = scored_examples(S, a, authors, feats, tail)
    near = frozenset(u["user"] for u in S.users if any(D.near_duplicate(q, u["profile"]) for q in u["queries"][:a.queries]))
    print(f"{len(scored)} scored requests", flush=True)
    pmi = VocabHead(0)                        # w = 0.3, MLP 0: the PMI bias of vocab_bias.py
    if a.load:
        heads = {name: VocabHead(p) for name, p in json.loads(a.load.with_suffix(".json").read_text())["kinds"].items()}
        for name, sd in torch.load(a.load).items():
            heads[name].load_state_dict(sd)
        if a.export:
            export(heads[a.export_head], S.tok, log_bg, a)
        heads = {"pmi": pmi, **heads}
        rows = score(heads, scored)
        drift = chat_drift(S, heads, authors, feats, a.chat, tail) if a.chat else []
        save(a, epochs=[rows], drift=drift)
        print(report([rows], chosen=None) + "\n\nWithout the authors whose request is a near-duplicate:\n" +
              report([rows], chosen=None, leave=near))
        if drift:
            from vocab_bias import drift_report
            print(drift_report(drift))
        if a.generate:
            gen = generate(S, heads, authors, feats, a.generate.split(","))
            save(a, epochs=[rows], drift=drift, generated=gen)
            print(rouge_report(gen, against="p2p"))
        return

    kinds = {f"head-p{p}": p for p in a.positional.split(",")}
    train = train_examples(S, a, log_bg, vocab, tail, near=any(p.endswith("n") for p in kinds.values()))
    print(f"{len(train)} training examples", flush=True)
    heads = {name: VocabHead(p) for name, p in kinds.items()}
    opts = {name: torch.optim.Adam(h.parameters(), lr=a.lr) for name, h in heads.items()}
    epochs, best, t0 = [], {}, time.time()
    for epoch in range(a.epochs + 1):
        if epoch:
            order = torch.randperm(len(train)).tolist()
            for name, h in heads.items():
                for s in range(0, len(order), a.batch):
                    opts[name].zero_grad()
                    batch = [train[j] for j in order[s:s + a.batch]]
                    loss = sum(biased_nll(k, h(f, has, k, fol, nf)) for k, f, has, fol, nf in batch) / len(batch)
                    loss.backward()
                    opts[name].step()
        rows = score({"pmi": pmi, **heads}, scored)
        epochs.append(rows)
        msg = " ".join(f"{n} {np.mean([r['nll'] for r in rows if r['method'] == n]):.4f}" for n in ["none", "pmi", *heads])
        print(f"epoch {epoch} ({time.time() - t0:.0f} s): own {msg}; w " +
              " ".join(f"{h.w.item():.3f}" for h in heads.values()), flush=True)
        pick = pick_users(rows, near if a.no_duplicates else frozenset())
        for name, h in heads.items():
            own = np.mean([r["nll"] for r in rows if r["method"] == name and r["user"] in pick])
            if name not in best or own < best[name][0]:
                best[name] = (own, epoch, {k: v.clone() for k, v in h.state_dict().items()})
    a.out.parent.mkdir(parents=True, exist_ok=True)
    torch.save({name: sd for name, (_, _, sd) in best.items()}, a.out.with_suffix(".pt"))
    save(a, kinds=kinds, chosen={n: e for n, (_, e, _) in best.items()}, epochs=epochs)
    chosen = {n: e for n, (_, e, _) in best.items()}
    print(report(epochs, chosen) + "\n\nWithout the authors whose request is a near-duplicate:\n" +
          report(epochs, chosen, leave=near))


def export(head: VocabHead, tok, log_bg: np.ndarray, a) -> None:
    """The head as the app runs it (app.words.WordsHead, numpy): its weights, the background it counts PMI
    against, the largest training profile (tokens; the app counts bigger ones at that size) and the
    hypernetwork whose adapters it was trained with (the app uses it with that one only)."""
    from app.hypernet import Hypernet
    users = D.load_users(a.train_data, a.bg_users + a.train_users)[a.bg_users:]
    max_total = max(Author(tok, u, len(log_bg)).stats()[0].sum() for u in users)
    words_head(head, log_bg, max_total, Hypernet(a.hypernet).id).save(a.export)
    print(f"wrote {a.export} (largest training profile {max_total:.0f} tokens)")


def words_head(head: VocabHead, log_bg: np.ndarray, max_total: float, hypernet_id: str):
    """``head`` (per position) as app.words.WordsHead: the same function in numpy."""
    from app.words import WordsHead
    assert head.positional, "the app runs a head per position (head-p1, head-p2)"
    assert not head.near, "the app does not count the documents retrieved for a request (yet)"
    sd = {k: v.detach().double().numpy() for k, v in head.state_dict().items()}
    return WordsHead(w=float(sd["w"]), w1=sd["mlp.0.weight"].T, b1=sd["mlp.0.bias"], w2=sd["mlp.2.weight"][0],
                     b2=float(sd["mlp.2.bias"][0]), log_bg=log_bg.astype(np.float32), max_total=float(max_total),
                     hypernet_id=hypernet_id)


def pick_users(rows: list[dict], leave: frozenset = frozenset()) -> set[str]:
    """The first half of the scored authors: where epochs are chosen (the second half reports); less ``leave``."""
    users = list(dict.fromkeys(r["user"] for r in rows))
    return set(users[:len(users) // 2]) - leave


def report(epochs: list[list[dict]], chosen: dict[str, int] | None, leave: frozenset = frozenset()) -> str:
    """Per head at its chosen epoch (and pmi, none at epoch 0), on the second half of the authors (all of them for
    a --load run: chosen None, one epoch), per task: own NLL, own − adapter alone, other − own [paired bootstrap
    over authors]."""
    f = lambda c: f"{c['diff']:+.3f} [{c['lo']:+.3f}, {c['hi']:+.3f}]"                               # noqa: E731
    lines = ["| method | epoch | task | own NLL | own − adapter alone [CI] | other − own [CI] |", "|---|---|---|---|---|---|"]
    rows0 = epochs[0]
    held = set(r["user"] for r in rows0) - (pick_users(rows0) if chosen is not None else set()) - leave
    methods = [m for m in dict.fromkeys(r["method"] for r in rows0) if "/" not in m and m != "other-none"]
    for m in methods:
        e = (chosen or {}).get(m, 0)
        rows = [r for r in epochs[e] if r["user"] in held]
        other = "other-none" if m == "none" else f"{m}/other"
        for t in sorted({r["task"] for r in rows}):
            own = np.mean([r["nll"] for r in rows if r["method"] == m and r["task"] == t])
            vs = f(paired_bootstrap(rows, m, "none", t, "nll")) if m != "none" else ""
            lines.append(f"| {m} | {e} | {t} | {own:.3f} | {vs} | {f(paired_bootstrap(rows, other, m, t, 'nll'))} |")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
