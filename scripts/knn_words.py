"""Do the person's documents predict their next token by context, beyond what their word counts say? (issue 11)

The words head (app.words) reads what the documents say of a token and of the one or two before it. A kNN-LM
(Khandelwal et al. 2020) reads the whole context instead: every answer position of the person's own items, posed
as the two tasks, is a key (the model's last hidden state there, after the final norm: what llama.cpp returns as a
token's embedding) with the token that follows as its value; at a request's answer position the k keys nearest the
model's hidden state vote for their values, p_knn(v) = sum over those with value v of softmax(-d^2 / T), and the
answer is scored under lambda p_knn + (1 - lambda) p, p the model's (the adapter's, or the adapter's with the
words' bias: --head). Nothing is trained: a new person costs one forward pass over their items.

Scored as vocab_head.py scores: each dev author's first query as both tasks, own adapter + own items' keys against
the next author's adapter + theirs; (k, T, lambda) chosen on the first --select authors by own NLL, reported on the
rest, again without the requests whose paper is, in another version, among the author's items
(data.near_duplicate): copying such a paper is not how the person writes. Per position only the 64 nearest keys'
squared distances and whether each one's value is the target are kept (runs/cache/knn-words), so the grid is
arithmetic.

    HF_HUB_OFFLINE=1 PYTHONPATH=. .venv/bin/python scripts/knn_words.py --users 90 --select 30 \
        --head runs/s24/head-pairs-200.pt --out runs/s26/knn-90.json
"""
from __future__ import annotations

import argparse
import hashlib
import itertools
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent))
from person_guidance import add_arguments, save, setup  # noqa: E402
from vocab_bias import log_background  # noqa: E402
from vocab_ceiling import biased_logprob, keep  # noqa: E402
from vocab_head import Author, VocabHead, entropy  # noqa: E402

from app.knn import vote  # noqa: E402
from app.prompts import TASKS  # noqa: E402
from hypernet_onnx import data as D  # noqa: E402
from hypernet_onnx.frozen_base import collate  # noqa: E402
from hypernet_onnx.model import set_lora  # noqa: E402
from hypernet_onnx.stats import paired_bootstrap  # noqa: E402

TOP = 64                      # neighbours kept per position


@torch.no_grad()
def states(S, item, owner) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(hidden (A, C), log-probs (A, V), targets (A,)) at the answer positions of ``item`` under ``owner``'s adapter
    (a user id, or None: the base model)."""
    set_lora(S.wrappers, None if owner is None else S.hyper(torch.tensor(S.profiles[owner])[None]), S.hyper.scale)
    ids, mask, lm = collate([item], S.tok.pad_token_id or 0)
    h = S.model.get_decoder()(input_ids=ids, attention_mask=mask).last_hidden_state[0, :-1]    # (T-1, C)
    at = lm[0, 1:] > 0                                                   # position t predicts token t+1
    h = h[at].float()
    lp = F.log_softmax(S.model.get_output_embeddings()(h).float(), -1)
    return h, lp, ids[0, 1:][at]


def datastore(S, examples: list, keys_under) -> tuple[torch.Tensor, torch.Tensor]:
    """(keys (N, C), values (N,)): every answer position of the examples given, under ``keys_under``'s adapter (a
    user id, or None: the base model)."""
    got = [states(S, S.enc(x), keys_under) for x in examples]
    return torch.cat([h for h, _, _ in got]), torch.cat([t for _, _, t in got])


def neighbours(h: torch.Tensor, tgt: torch.Tensor, store: tuple) -> tuple[np.ndarray, np.ndarray]:
    """(A, TOP) squared distances to the nearest keys, ascending, and whether each key's value is the target."""
    keys, vals = store
    d = torch.cdist(h, keys).pow(2)                                      # (A, N)
    d, j = d.topk(min(TOP, keys.shape[0]), dim=1, largest=False)
    return d.numpy().astype(np.float32), (vals[j] == tgt[:, None]).numpy()


@torch.no_grad()
def words_lp(head: VocabHead, au: Author, feats, lp: torch.Tensor, tgt: torch.Tensor, tail) -> np.ndarray:
    """(A,) the target's log-prob with the words head's bias added, as vocab_head.py scores it."""
    k = {**keep(lp, tgt, au.support), "h": entropy(lp)}
    return biased_logprob(k, head(*feats, k, au.follows(k, tail))).numpy()


def knn_nll(side: dict, k: int, T: float, lam: float, base: str, c: float = np.inf) -> float:
    """Mean answer NLL of one scored side under lambda p_knn + (1 - lambda) p (p: ``base``, "lp" or "words"), the
    kNN trusted only at positions whose nearest key is nearer than c (squared distance): elsewhere the context is
    none the person's documents hold (everyday chat: MODEL_CARD), and p alone."""
    d, m = side["d"][:, :k], side["m"][:, :k]
    p_knn = (vote(d, T) * m).sum(1)                                      # the app's vote (app.knn)
    lam = lam * (d[:, 0] < c)                                            # (A,)
    p = np.exp(side[base])
    return float(-np.log(lam * p_knn + (1 - lam) * p).mean())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_arguments(ap)
    ap.add_argument("--select", type=int, default=30, help="choose (k, T, lambda) on this many first authors")
    ap.add_argument("--keys", choices=("own", "base"), default="own",
                    help="the keys under the author's own adapter, or under the base model")
    ap.add_argument("--store", choices=("all", "retrieved"), default="all", help="the keys of all the author's "
                    "items posed as both tasks, or of the items retrieved for the request posed as its task")
    ap.add_argument("--head", type=Path, help="a vocab_head.py head (.pt); its head-p2 scored alone and under kNN")
    ap.add_argument("--train-data", type=Path, default=D.DATA_DIR / "mlpapers-train.jsonl.gz")
    ap.add_argument("--bg-users", type=int, default=600)
    ap.add_argument("--no-duplicates", action="store_true", help="choose the grid without the authors whose request "
                    "is a near-duplicate of one of their items: copying is not the person's way of writing")
    ap.add_argument("--chosen", type=Path, help="score with the grid point an earlier run chose (its --out) instead of "
                    "choosing: authors of another source (PEPs)")
    ap.add_argument("--chat", type=int, default=0, help="also the everyday-chat drift of the first N authors")
    ap.add_argument("--out", type=Path, required=True)
    a = ap.parse_args()
    S = setup(a)
    cache = D.CACHE_DIR / "knn-words" / hashlib.sha256(a.hypernet.read_bytes()).hexdigest()[:12]
    cache.mkdir(parents=True, exist_ok=True)
    by = {u["user"]: u for u in S.users}
    head = None
    if a.head:
        vocab = S.model.get_output_embeddings().weight.shape[0]
        log_bg = log_background(S.tok, a.train_data, a.bg_users, vocab)
        kinds = json.loads(a.head.with_suffix(".json").read_text())["kinds"]
        head = VocabHead(kinds["head-p2"])
        head.load_state_dict(torch.load(a.head)["head-p2"])
        authors = {u: Author(S.tok, by[u], vocab) for u in by}
        feats = {u: au.features(log_bg) for u, au in authors.items()}
        ids, n = S.enc(S.slots.examples[0])
        tail = tuple(int(t) for t in ids[n - 2:n])
    stores, rows, t0 = {}, [], time.time()

    def scored(item, owner: str, slot: int | None = None) -> dict:
        """What the grid needs of one answer under ``owner``'s adapter and keys: each position's neighbours (d, m),
        the target's log-prob alone (lp) and with the owner's words (words, with --head). ``slot``: with --store
        retrieved, the request's slot in S.slots (its keys: the owner's items retrieved for it, posed as its task)."""
        under = owner if a.keys == "own" else None
        if a.store == "retrieved" and slot is not None:     # the items retrieved for the request, as its task
            store = datastore(S, [x for x, t in zip(S.slots.train, S.slots.train_slot) if t == slot], under)
        else:                                                # every item of the author, as each task
            if owner not in stores:
                stores[owner] = datastore(S, [D.item_example(owner, task, it) for it in by[owner]["profile"]
                                              for task in TASKS], under)
            store = stores[owner]
        h, lp, tgt = states(S, item, owner)
        d, m = neighbours(h, tgt, store)
        out = {"d": d, "m": m, "lp": lp.gather(1, tgt[:, None])[:, 0].numpy()}
        if head is not None:
            out["words"] = words_lp(head, authors[owner], feats[owner], lp, tgt, tail)
        return out
    for i, ex in enumerate(S.slots.examples):
        f = cache / f"{ex.user[-16:]}-{i}-{ex.task}-{a.keys}{'-retrieved' * (a.store == 'retrieved')}.pt"
        if f.is_file():
            sides = torch.load(f, weights_only=False)
        else:
            sides = {}
            for side, owner in (("own", ex.user), ("other", S.split.shuffled[ex.user])):
                sides[side] = scored(S.enc(ex), owner, getattr(S.slots, side)[i])
            torch.save(sides, f)
        if i == 0:
            d = sides["own"]["d"]
            print(f"squared distances to the 1st / 4th / 16th / 64th nearest key (median over positions): "
                  f"{np.median(d[:, 0]):.0f} / {np.median(d[:, 3]):.0f} / {np.median(d[:, 15]):.0f} / "
                  f"{np.median(d[:, -1]):.0f}", flush=True)
        rows.append((ex, sides))
        if i % 20 == 19:
            print(f"{i + 1}/{len(S.slots.examples)} requests, {time.time() - t0:.0f} s", flush=True)
    chat = chat_sides(S, a, scored, cache) if a.chat else []
    near = frozenset(u["user"] for u in S.users if any(D.near_duplicate(q, u["profile"]) for q in u["queries"][:a.queries]))
    print(report(rows, a, [u["user"] for u in S.users], near, chat))


def chat_sides(S, a, scored, cache: Path) -> list[dict]:
    """Per author of the first --chat and everyday-chat anchor (hypernet_onnx.chat_anchors): the base model's own
    answer under the author's adapter at full strength, with its neighbours among the author's keys, and its NLL
    under the base model: what the kNN adds to the chat drift (issue 11: at most +0.05 nats in all)."""
    from hypernet_onnx import chat_anchors
    anchors = [chat_anchors.encode(S.tok, S.template, x, 4096) for x in chat_anchors.load()]
    f = cache / f"chat-{len(anchors)}-{a.keys}{'-words' * bool(a.head)}.pt"
    done = torch.load(f, weights_only=False) if f.is_file() else {}
    base = [float(F.nll_loss(*S.logp(x, None))) for x in anchors]
    out = []
    for u in [u["user"] for u in S.users[:a.chat]]:
        if u not in done:
            done[u] = [scored(x, u) for x in anchors]
            torch.save(done, f)
        out += [dict(side, user=u, anchor=j, base=base[j]) for j, side in enumerate(done[u])]
    return out


def report(rows, a, users: list[str], near: frozenset, chat: list[dict]) -> str:
    pick, held = set(users[:a.select]) - (near if a.no_duplicates else set()), users[a.select:]
    bases = ["lp"] + (["words"] if "words" in rows[0][1]["own"] else [])
    grid = list(itertools.product((4, 16, 64), (10.0, 30.0, 100.0, 300.0), (0.02, 0.05, 0.1, 0.2, 0.3, 0.5),
                                 (100.0, 200.0, 300.0, 500.0, 700.0, 1000.0, np.inf)))
    best = {b: tuple(g) for b, g in json.loads(a.chosen.read_text())["chosen"].items()} if a.chosen else {}
    for base in [b for b in bases if b not in best]:
        own = lambda k, T, lam, c: np.mean([knn_nll(s["own"], k, T, lam, base, c) for ex, s in rows if ex.user in pick])  # noqa: E731
        best[base] = min(grid, key=lambda g: own(*g))
        print(f"{base}: chosen k, T, lambda, c = {best[base]} (own NLL on the first {a.select} authors "
              f"{own(*best[base]):.4f}; lambda 0: {own(4, 10.0, 0.0, np.inf):.4f})", flush=True)
    out = []
    for base in bases:
        k, T, lam, c = best[base]
        for ex, s in rows:
            r = {"user": ex.user, "query": 0, "task": ex.task}     # one request per author and task (--queries 1)
            out += [dict(r, method=base, nll=knn_nll(s["own"], k, T, 0.0, base)),
                    dict(r, method=f"{base}/other", nll=knn_nll(s["other"], k, T, 0.0, base)),
                    dict(r, method=f"{base}+knn", nll=knn_nll(s["own"], k, T, lam, base, c)),
                    dict(r, method=f"{base}+knn/other", nll=knn_nll(s["other"], k, T, lam, base, c))]
    drift = ""
    if chat:
        drift = f"\neveryday chat drift ({len(chat)} answers, the adapter at full strength; minus the base model's NLL):"
        for base in bases:
            k, T, lam, c = best[base]
            alone, knn = (np.mean([knn_nll(x, k, T, l, base, c) - x["base"] for x in chat]) for l in (0.0, lam))
            drift += f" {base} {alone:+.4f}, {base}+knn {knn:+.4f};"
        med = lambda ds: np.median(np.concatenate([d[:, 0] for d in ds]))              # noqa: E731
        drift += (f" nearest key's squared distance, median over positions: chat {med([c['d'] for c in chat]):.0f}, "
                  f"requests {med([s['own']['d'] for _, s in rows]):.0f}")
    save(a, chosen={b: list(g) for b, g in best.items()}, rows=out)
    f = lambda c: f"{c['diff']:+.3f} [{c['lo']:+.3f}, {c['hi']:+.3f}]"                               # noqa: E731
    lines = ["| method | requests | task | own NLL | own − adapter alone [CI] | other − own [CI] | own − without kNN [CI] "
             "| gap − gap without kNN [CI] |", "|---|---|---|---|---|---|---|---|"]
    for label, keep_users in (("all", set(held)), ("no near-dup", set(held) - near)):
        rs = [r for r in out if r["user"] in keep_users]
        by = {(r["user"], r["task"], r["method"]): r["nll"] for r in rs}
        for m in [b for b in bases] + [f"{b}+knn" for b in bases]:
            for t in TASKS:
                own = np.mean([r["nll"] for r in rs if r["method"] == m and r["task"] == t])
                vs = f(paired_bootstrap(rs, m, "lp", t, "nll")) if m != "lp" else ""
                line = f"| {m} | {label} | {t} | {own:.3f} | {vs} | {f(paired_bootstrap(rs, m + '/other', m, t, 'nll'))} |"
                if m.endswith("+knn"):                       # the kNN's own part: against its base, paired
                    b = m[:-4]
                    gap = lambda x, u: by[(u, t, x + "/other")] - by[(u, t, x)]                        # noqa: E731
                    change = [dict(user=u, query=0, task=t, method=x, nll=v) for u in keep_users
                              for x, v in (("change", gap(m, u) - gap(b, u)), ("zero", 0.0))]
                    line += f" {f(paired_bootstrap(rs, m, b, t, 'nll'))} | {f(paired_bootstrap(change, 'change', 'zero', t, 'nll'))} |"
                else:
                    line += " | |"
                lines.append(line)
    return (f"held-out authors: {len(held)} ({len(set(held) - near)} without near-duplicates)\n" + "\n".join(lines)
            + drift)


if __name__ == "__main__":
    main()
