"""Does guidance at decoding make what a person runs carry more of them? (issue 11, torch, no training)

The person sits in the items retrieved for a request (own vs the next author's items in the prompt: 0.30 / 0.17
nats, MODEL_CARD "An adapter per request at its ceiling"), the adapter carries little. Context-aware decoding
(Shi et al. 2023, arXiv 2305.14739) amplifies what a context adds: next-token logits

    (1 + w) * logits(with the context) - w * logits(without it)

Scored here on the shipped hypernetwork (assets/hypernet/hypernet.onnx), per request and side X (own: the
request's author; other: the next author, the dev metric's shuffled twin), answer NLL per token under
    p2p+rag       X's adapter, X's items retrieved for the request shown as worked examples (what a person runs)
    cad-items     p2p+rag guided against X's adapter on the bare request (amplifies the items)
    cad-all       p2p+rag guided against the base model on the bare request (amplifies adapter and items)
    rag-cad       the base model shown X's items, guided against the bare base model (the paper's setting)
    p2p-cfg       X's adapter guided against the base model, both on the bare request (amplifies the adapter)
at each weight w (w = 0: the method unguided). The items are those the app's retrieval picks (ceiling.per_request,
the first --queries of each author, both tasks); prompts as the app renders them, scored in full (max_len 1024).

    HF_HUB_OFFLINE=1 PYTHONPATH=. .venv/bin/python scripts/person_guidance.py --users 30 --weights 0,0.25,0.5,1 \
        --out runs/s20/guidance-30.json
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent))
from shared_plus_person import OnnxHyper  # noqa: E402

from hypernet_onnx import caches as C  # noqa: E402
from hypernet_onnx import ceiling  # noqa: E402
from hypernet_onnx import data as D  # noqa: E402
from hypernet_onnx.frozen_base import collate, encode, load_base, next_token_logits  # noqa: E402
from hypernet_onnx.model import attach_lora, set_lora  # noqa: E402
from hypernet_onnx.stats import paired_bootstrap  # noqa: E402
from hypernet_onnx.train import REPO, TrainConfig  # noqa: E402

FULL_LEN = 1024


def guided_nll(with_ctx: torch.Tensor, without: torch.Tensor, tgt: torch.Tensor, w: float) -> float:
    """Mean NLL per answer token of softmax((1 + w) with_ctx - w without), both (A, V) log-probabilities."""
    mix = (1 + w) * with_ctx - w * without
    return float(F.cross_entropy(mix, tgt))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_arguments(ap)
    ap.add_argument("--weights", default="0,0.25,0.5,1")
    ap.add_argument("--generate", default="", help="tasks to also decode greedily and score by ROUGE-L (own side)")
    ap.add_argument("--out", type=Path, required=True)
    a = ap.parse_args()
    weights = [float(x) for x in a.weights.split(",")]
    s = setup(a)
    model, tok, enc, split, slots, profiles, hyper, wrappers, logp = (
        s.model, s.tok, s.enc, s.split, s.slots, s.profiles, s.hyper, s.wrappers, s.logp)

    rows, t0 = [], time.time()
    for i, ex in enumerate(slots.examples):
        bare = enc(ex)
        base, tgt = logp(bare, None)
        for side, owner in (("own", ex.user), ("other", split.shuffled[ex.user])):
            shown = enc(slots.shown[side][i])
            full, t_full = logp(shown, owner)
            adapter, _ = logp(bare, owner)
            rag, _ = logp(shown, None)
            n = min(len(tgt), len(t_full))
            if not torch.equal(tgt[:n], t_full[:n]):
                raise AssertionError("the request with and without its items predicts other answer tokens")
            for w in weights:
                for method, (x, y) in {"p2p+rag": (full, full), "cad-items": (full, adapter),
                                       "cad-all": (full, base), "rag-cad": (rag, base),
                                       "p2p-cfg": (adapter, base)}.items():
                    if method == "p2p+rag" and w:
                        continue
                    rows.append({"user": ex.user, "query": i, "task": ex.task, "side": side, "w": w,
                                 "method": f"{method}@{w:g}", "nll": guided_nll(x[:n], y[:n], tgt[:n], w)})
        rows.append({"user": ex.user, "query": i, "task": ex.task, "side": "own", "w": 0, "method": "base",
                     "nll": float(F.cross_entropy(base, tgt))})
        if i % 10 == 9:
            print(f"{i + 1}/{len(slots.examples)} requests, {time.time() - t0:.0f} s", flush=True)
    save(a, rows=rows)
    print(report(rows))
    if a.generate:
        gen = generate(model, tok, wrappers, hyper, profiles, slots, enc, weights, a.generate.split(","))
        save(a, rows=rows, generated=gen)
        print(rouge_report(gen))


def save(a, **parts) -> None:
    """The run's results to ``a.out`` as JSON, with the arguments that made them."""
    a.out.parent.mkdir(parents=True, exist_ok=True)
    a.out.write_text(json.dumps({"args": {k: str(v) for k, v in vars(a).items()}, **parts}))


def add_arguments(ap: argparse.ArgumentParser) -> None:
    """The arguments ``setup`` reads."""
    ap.add_argument("--hypernet", type=Path, default=REPO / "assets/hypernet/hypernet.onnx")
    ap.add_argument("--config", type=Path, default=REPO / "hypernet_onnx/configs/small.toml",
                    help="the shipped file's training config (rank, alpha, modules, pooling)")
    ap.add_argument("--data", type=Path, default=D.DATA_DIR / "mlpapers-dev.jsonl.gz")
    ap.add_argument("--users", type=int, default=30)
    ap.add_argument("--skip", type=int, default=0, help="start at this author of the file")
    ap.add_argument("--queries", type=int, default=1, help="the first N queries of each author, each as both tasks")
    ap.add_argument("--threads", type=int, default=2)


def setup(a) -> SimpleNamespace:
    """What the person scripts share: the base model with LoRA slots, the shipped hypernetwork, the dev split of the
    first ``a.users`` authors after ``a.skip`` of ``a.data``, their requests with the items the app's retrieval picks
    (own and the next author's: ceiling.per_request), profile vectors, and ``logp(example, owner)`` ->
    (log-probs (A, V), answer targets (A,)) under owner's adapter (owner: a user id, a profile vector, or None:
    the base model)."""
    torch.set_num_threads(a.threads)
    cfg = dataclasses.replace(TrainConfig.load(a.config), max_len=FULL_LEN)
    model, tok, template, spec = load_base(cfg)
    users = D.load_users(a.data, a.skip + a.users)[a.skip:]
    enc = lambda ex: encode(tok, template, ex, FULL_LEN)                       # noqa: E731
    tokens = C.TokenCache(D.CACHE_DIR / C.TokenCache.name(spec.tokenizer_sha, template, FULL_LEN))
    split = C.make_split(users, tokens, enc)
    slots = ceiling.per_request(users, split, a.data, queries=a.queries)
    profiles = D.profile_inputs(D.embed_users(a.data, users), cfg.pooling)
    hyper = OnnxHyper(a.hypernet, tuple(cfg.modules), cfg.alpha / cfg.rank)
    wrappers = attach_lora(model, tuple(cfg.modules))
    pad = tok.pad_token_id or 0

    @torch.no_grad()
    def logp(item, owner: str | np.ndarray | None):
        vec = profiles[owner] if isinstance(owner, str) else owner
        set_lora(wrappers, None if vec is None else hyper(torch.tensor(vec)[None]), hyper.scale)
        logits, tgt, lm = next_token_logits(model, *collate([item], pad))
        keep = lm[0] > 0
        return F.log_softmax(logits[0][keep].float(), -1), tgt[0][keep]

    return SimpleNamespace(model=model, tok=tok, template=template, users=users, enc=enc, split=split, slots=slots, profiles=profiles,
                           hyper=hyper, wrappers=wrappers, logp=logp)


def greedy_scoring(tok) -> tuple[Callable[[str, str], float], int]:
    """What the greedy scripts score with: ROUGE-L F of (gold, answer) as evaluate.py scores it (rouge-score,
    stemmed), and the end-of-turn token their decoding stops at."""
    from rouge_score import rouge_scorer
    scorer = rouge_scorer.RougeScorer(["rougeL"], use_stemmer=True)
    return (lambda gold, text: scorer.score(gold, text)["rougeL"].fmeasure), tok.convert_tokens_to_ids("<|im_end|>")


@torch.no_grad()
def generate(model, tok, wrappers, hyper, profiles, slots, enc, weights, tasks) -> list[dict]:
    """Greedy answers (evaluate.MAX_TOKENS) to the own side's requests of ``tasks``: p2p+rag, and cad-items /
    cad-all at each w > 0, ROUGE-L against the gold answer as evaluate.py scores it (rouge_score, stemmed)."""
    from hypernet_onnx.evaluate import MAX_TOKENS
    rouge_l, stop = greedy_scoring(tok)
    out = []
    for i, ex in enumerate(slots.examples):
        if ex.task not in tasks:
            continue
        ids, n = enc(slots.shown["own"][i])
        bare_ids, bare_n = enc(ex)
        own = hyper(torch.tensor(profiles[ex.user])[None])
        runs = [("p2p+rag", 0.0)] + [(m, w) for w in weights if w for m in ("cad-items", "cad-all")]
        for method, w in runs:
            neg = own if method == "cad-items" else None
            got = guided_greedy(model, wrappers, hyper.scale, (ids[:n], own), (bare_ids[:bare_n], neg), w,
                                MAX_TOKENS[ex.task], stop)
            text = tok.decode(got, skip_special_tokens=True).strip()
            out.append({"user": ex.user, "query": i, "task": ex.task, "method": f"{method}@{w:g}", "output": text,
                        "rougeL": rouge_l(ex.target, text)})
        print(f"generated {i + 1}/{len(slots.examples)}", flush=True)
    return out


def guided_greedy(model, wrappers, scale, pos, neg, w: float, max_new: int, stop: int,
                  bias: torch.Tensor | Callable[[torch.Tensor], torch.Tensor] | None = None) -> list[int]:
    """Greedy decoding of argmax (1 + w) log p(. | pos) - w log p(. | neg) [+ bias (V,), or bias(those (V,)
    log-probs) for one that depends on the step]; pos and neg are (prompt ids, adapter or None), each with its own
    KV cache, the adapter switched in before each of its forward passes."""
    streams = [pos] + ([neg] if w else [])
    caches, logp = [None] * len(streams), [None] * len(streams)
    feed = [torch.tensor([ids]) for ids, _ in streams]
    out: list[int] = []
    for _ in range(max_new):
        for j, (_, adapter) in enumerate(streams):
            set_lora(wrappers, adapter, scale)
            r = model(input_ids=feed[j], past_key_values=caches[j], use_cache=True)
            caches[j], logp[j] = r.past_key_values, F.log_softmax(r.logits[0, -1].float(), -1)
        mix = logp[0] if not w else (1 + w) * logp[0] - w * logp[1]
        if bias is not None:
            mix = mix + (bias(mix) if callable(bias) else bias)
        t = int(mix.argmax())
        if t == stop:
            break
        out.append(t)
        feed = [torch.tensor([[t]])] * len(streams)
    return out


def rouge_report(gen: list[dict], against: str = "p2p+rag@0") -> str:
    """Per task and method: mean ROUGE-L, and the difference to ``against`` [paired bootstrap over users]."""
    out = ["| task | method | ROUGE-L | − %s [CI] |" % against, "|---|---|---|---|"]
    for task in sorted({r["task"] for r in gen}):
        for m in dict.fromkeys(r["method"] for r in gen):
            mean = np.mean([r["rougeL"] for r in gen if r["method"] == m and r["task"] == task])
            c = paired_bootstrap(gen, m, against, task, "rougeL") if m != against else None
            ci = f"{c['diff']:+.3f} [{c['lo']:+.3f}, {c['hi']:+.3f}]" if c else ""
            out.append(f"| {task} | {m} | {mean:.3f} | {ci} |")
    return "\n".join(out)


def report(rows: list[dict]) -> str:
    """Per task and method@w: own NLL, own - the same method unguided, other - own [paired bootstrap over users]."""
    own = [dict(r, method=r["method"]) for r in rows if r["side"] == "own"]
    other = [dict(r, method=r["method"] + "/other") for r in rows if r["side"] == "other"]
    both = own + other
    methods = list(dict.fromkeys(r["method"] for r in own))
    out = ["| task | method@w | own NLL | own − unguided [CI] | other − own [CI] |", "|---|---|---|---|---|"]
    fmt = lambda c: f"{c['diff']:+.3f} [{c['lo']:+.3f}, {c['hi']:+.3f}]"     # noqa: E731
    for task in sorted({r["task"] for r in rows}):
        for m in methods:
            mean = np.mean([r["nll"] for r in own if r["method"] == m and r["task"] == task])
            if m == "base":
                out.append(f"| {task} | base | {mean:.3f} | | |")
                continue
            plain = m.split("@")[0] + "@0"
            vs = fmt(paired_bootstrap(both, m, plain, task, "nll")) if plain != m else ""
            gap = fmt(paired_bootstrap(both, m + "/other", m, task, "nll"))
            out.append(f"| {task} | {m} | {mean:.3f} | {vs} | {gap} |")
    return "\n".join(out)


if __name__ == "__main__":
    main()
