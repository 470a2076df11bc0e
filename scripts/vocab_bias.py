"""Is the person lexical? A per-author vocabulary cache on the output, against the adapter (issue 11, torch, no training)

Weights made from an author's items carry ~0.05 nats of the person, the same items in the prompt 0.30 / 0.17
(MODEL_CARD "An adapter per request at its ceiling"). Every adapter tried so far adapts attention/MLP projections;
none acts on the output vocabulary, where copying an author's own words (method names, datasets, jargon) would
show. This measures how much of the person a bare unigram model of the author's documents carries at the output,
with nothing trained: the cache language model (Kuhn & De Mori 1990), per author X

    q_X      = unigram distribution of the tokens of X's whole profile (titles and abstracts, the tokenizer's ids)
    mix@l    p'(v) = (1 - l) p(v) + l q_X(v)                        (interpolation: never sharpens the model)
    pmi@b    logits'(v) = logits(v) + b clip(log q_X(v) / q_bg(v), 0, 5) for v in X's documents, else + 0
             (q_bg: the unigram of --bg-users training authors' profiles, add-one smoothed)

on top of base (the bare request), p2p (X's adapter, the shipped file) and p2p+rag (X's adapter and X's items the
app's retrieval picks, shown as worked examples: what a person runs). Own side: X = the request's author; other:
the next author (the dev metric's shuffled twin: adapter, items and cache all the next author's). Answer NLL per
token, first --users mlpapers-dev authors' first --queries, both tasks; paired bootstrap 95% CIs over authors.

    HF_HUB_OFFLINE=1 PYTHONPATH=. .venv/bin/python scripts/vocab_bias.py --users 30 --out runs/s21/vocab-30.json
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent))
from person_guidance import add_arguments, greedy_scoring, guided_greedy, rouge_report, save, setup  # noqa: E402

from app.words import PMI_CAP  # noqa: E402
from hypernet_onnx import data as D  # noqa: E402
from hypernet_onnx.stats import paired_bootstrap  # noqa: E402


def token_counts(tok, users: list[dict], vocab: int) -> np.ndarray:
    """(vocab,) token counts over the titles and abstracts of the users' profile items."""
    counts = np.zeros(vocab, np.float64)
    for u in users:
        for it in u["profile"]:
            for text in (it.get("title", ""), it.get("text", "")):
                ids = tok(text, add_special_tokens=False)["input_ids"]
                np.add.at(counts, ids, 1)
    return counts


def log_background(tok, path: Path, n_users: int, vocab: int) -> np.ndarray:
    """(V,) log unigram of the first ``n_users`` authors' profiles in ``path``, add-one smoothed: q_bg."""
    bg = token_counts(tok, D.load_users(path, n_users), vocab) + 1.0
    return np.log(bg / bg.sum())


def pmi_bias(counts: np.ndarray, log_bg: np.ndarray) -> np.ndarray:
    """(V,) clip(log q(v) / q_bg(v), 0, PMI_CAP) for the tokens the author used (q: their unigram), 0 elsewhere:
    only the author's over-used words are raised, none is lowered."""
    q = counts / counts.sum()
    return np.where(counts > 0, np.clip(np.log(np.maximum(q, 1e-30)) - log_bg, 0, PMI_CAP), 0.0)


def cached(logp: torch.Tensor, q: torch.Tensor, pmi: torch.Tensor, kind: str, x: float) -> torch.Tensor:
    """(A, V) log-probabilities under the cache: ``mix`` interpolates with q, ``pmi`` adds x * pmi to the logits."""
    if kind == "mix":
        return torch.logaddexp(logp + np.log1p(-x), torch.log(q.clamp_min(1e-30)) + np.log(x))
    return F.log_softmax(logp + x * pmi, -1)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_arguments(ap)
    ap.add_argument("--bg-data", type=Path, default=D.DATA_DIR / "mlpapers-train.jsonl.gz")
    ap.add_argument("--bg-users", type=int, default=600)
    ap.add_argument("--mix", default="0.02,0.05,0.1,0.2")
    ap.add_argument("--pmi", default="0.25,0.5,1")
    ap.add_argument("--generate", default="", help="tasks to also decode greedily (own side: p2p, p2p+rag, each "
                    "with every pmi weight) and score by ROUGE-L")
    ap.add_argument("--chat", type=int, default=0, help="also the chat drift (hypernet_onnx.chat_anchors: NLL of the "
                    "base model's own answers to everyday prompts) of the first N authors' bias, adapter at full strength")
    ap.add_argument("--chat-only", action="store_true", help="only the chat drift")
    ap.add_argument("--out", type=Path, required=True)
    a = ap.parse_args()
    pmi_weights = [float(x) for x in a.pmi.split(",") if x]
    variants = [("mix", float(x)) for x in a.mix.split(",") if x] + [("pmi", x) for x in pmi_weights]
    S = setup(a)
    tok, enc, split, slots, logp = S.tok, S.enc, S.split, S.slots, S.logp
    vocab = S.model.get_output_embeddings().weight.shape[0]
    by = {u["user"]: u for u in S.users}

    log_bg = log_background(tok, a.bg_data, a.bg_users, vocab)

    def cache_of(uid: str) -> tuple[torch.Tensor, torch.Tensor]:
        c = token_counts(tok, [by[uid]], vocab)
        return torch.tensor(c / c.sum(), dtype=torch.float32), torch.tensor(pmi_bias(c, log_bg), dtype=torch.float32)

    caches = {uid: cache_of(uid) for uid in by}

    if a.chat:
        drift = chat_drift(S, caches, pmi_weights, a.chat)
        a.out.parent.mkdir(parents=True, exist_ok=True)
        a.out.with_suffix(".chat.json").write_text(json.dumps(drift))
        print(drift_report(drift))
        if a.chat_only:
            return

    rows, t0 = [], time.time()
    for i, ex in enumerate(slots.examples):
        bare = enc(ex)
        base, tgt = logp(bare, None)
        for side, owner in (("own", ex.user), ("other", split.shuffled[ex.user])):
            q, pmi = caches[owner]
            full, t_full = logp(enc(slots.shown[side][i]), owner)
            n = min(len(tgt), len(t_full))
            if not torch.equal(tgt[:n], t_full[:n]):
                raise AssertionError("the request with and without its items predicts other answer tokens")
            outs = {"base": base, "p2p": logp(bare, owner)[0], "p2p+rag": full}
            for method, lp in outs.items():
                lp, t = lp[:n], tgt[:n]
                for kind, x in [("none", 0.0)] + variants:
                    if method == "base" and kind == "none" and side == "other":
                        continue
                    got = lp if kind == "none" else cached(lp, q, pmi, kind, x)
                    name = method if kind == "none" else f"{method}|{kind}@{x:g}"
                    rows.append({"user": ex.user, "query": i, "task": ex.task, "side": side, "method": name,
                                 "nll": float(F.nll_loss(got, t))})
        if i % 10 == 9:
            print(f"{i + 1}/{len(slots.examples)} requests, {time.time() - t0:.0f} s", flush=True)
    save(a, rows=rows)
    print(report(rows))
    if a.generate:
        gen = generate(S, caches, pmi_weights, a.generate.split(","))
        save(a, rows=rows, generated=gen)
        print(rouge_report(gen, against="p2p"))


@torch.no_grad()
def generate(S, caches, weights: list[float], tasks: list[str]) -> list[dict]:
    """Greedy answers to the own side's requests of ``tasks`` (evaluate.MAX_TOKENS), p2p and p2p+rag, each plain and
    with the author's pmi bias at every weight; ROUGE-L against the gold answer as evaluate.py scores it."""
    from hypernet_onnx.evaluate import MAX_TOKENS
    rouge_l, stop = greedy_scoring(S.tok)
    out = []
    for i, ex in enumerate(S.slots.examples):
        if ex.task not in tasks:
            continue
        own = S.hyper(torch.tensor(S.profiles[ex.user])[None])
        pmi = caches[ex.user][1]
        for method, item in (("p2p", ex), ("p2p+rag", S.slots.shown["own"][i])):
            ids, n = S.enc(item)
            for x in [0.0] + weights:
                got = guided_greedy(S.model, S.wrappers, S.hyper.scale, (ids[:n], own), (None, None), 0.0,
                                    MAX_TOKENS[ex.task], stop, bias=x * pmi if x else None)
                text = S.tok.decode(got, skip_special_tokens=True).strip()
                out.append({"user": ex.user, "query": i, "task": ex.task, "output": text,
                            "method": method if not x else f"{method}|pmi@{x:g}",
                            "rougeL": rouge_l(ex.target, text)})
        print(f"generated {i + 1}/{len(S.slots.examples)}", flush=True)
    return out


@torch.no_grad()
def chat_drift(S, caches, weights: list[float], n_users: int) -> list[dict]:
    """Per author and anchor: NLL of the base model's answer under base and p2p (full strength), each plain and with
    the author's pmi bias at every weight; the drift is a method's NLL minus the base model's."""
    from hypernet_onnx import chat_anchors
    anchors = [chat_anchors.encode(S.tok, S.template, x, 4096) for x in chat_anchors.load()]
    base = [S.logp(x, None) for x in anchors]
    rows = []
    for uid in [u["user"] for u in S.users][:n_users]:
        pmi = caches[uid][1]
        for j, x in enumerate(anchors):
            b, t = base[j]
            plain = {"base": b, "p2p": S.logp(x, uid)[0]}
            ref = float(F.nll_loss(b, t))
            for method, lp in plain.items():
                for w in [0.0] + weights:
                    if method == "base" and not w:
                        continue
                    got = lp if not w else F.log_softmax(lp + w * pmi, -1)
                    rows.append({"user": uid, "anchor": j, "method": method if not w else f"{method}|pmi@{w:g}",
                                 "drift": float(F.nll_loss(got, t)) - ref})
    return rows


def drift_report(rows: list[dict]) -> str:
    """Mean chat drift per method, with a 95% bootstrap CI over authors."""
    rng = np.random.default_rng(0)
    out = ["| method | chat drift [CI over authors] |", "|---|---|"]
    for m in dict.fromkeys(r["method"] for r in rows):
        per = np.array([np.mean([r["drift"] for r in rows if r["method"] == m and r["user"] == u])
                        for u in dict.fromkeys(r["user"] for r in rows)])
        boots = per[rng.integers(0, len(per), (2000, len(per)))].mean(1)
        out.append(f"| {m} | {per.mean():+.3f} [{np.percentile(boots, 2.5):+.3f}, {np.percentile(boots, 97.5):+.3f}] |")
    return "\n".join(out)


def report(rows: list[dict]) -> str:
    """Per task and method: own NLL, own − the method without the cache, other − own [paired bootstrap over users]."""
    own = [r for r in rows if r["side"] == "own"]
    both = own + [dict(r, method=r["method"] + "/other") for r in rows if r["side"] == "other"]
    fmt = lambda c: f"{c['diff']:+.3f} [{c['lo']:+.3f}, {c['hi']:+.3f}]"     # noqa: E731
    out = ["| task | method | own NLL | own − no cache [CI] | other − own [CI] |", "|---|---|---|---|---|"]
    for task in sorted({r["task"] for r in rows}):
        for m in dict.fromkeys(r["method"] for r in own):
            mean = np.mean([r["nll"] for r in own if r["method"] == m and r["task"] == task])
            plain = m.split("|")[0]
            vs = fmt(paired_bootstrap(both, m, plain, task, "nll")) if plain != m else ""
            gap = fmt(paired_bootstrap(both, m + "/other", m, task, "nll")) if m != "base" else ""
            out.append(f"| {task} | {m} | {mean:.3f} | {vs} | {gap} |")
    return "\n".join(out)


if __name__ == "__main__":
    main()
