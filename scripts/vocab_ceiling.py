"""How much of the person can a learned output bias over the author's own words carry? (issue 11, torch, CPU)

scripts/vocab_bias.py found a count of the author's words, raised at the output (a PMI logit bias), separating own
from the next author's 3-8x more than the shipped adapter. Is a count the most such a bias can do? Here each
author gets a bias b_u over the tokens of their own documents (their support S_u; every other token untouched),
*trained* on their profile items (each posed as both tasks, on top of the shipped adapter made from their whole
profile) by Adam on answer NLL, from zero or from the PMI bias; each epoch it scores the authors' first query
(both tasks) with own adapter + own bias and with the next author's adapter + the next author's bias. The epoch
is chosen on the first half of the authors (lowest own NLL), reported on the second, as ceiling.py does.

The base model is frozen, so the logits at every answer position are computed once; with the bias restricted to
S_u only the log-partition and the logits on S_u are kept: lse' = log(exp(lse) - sum_S exp(l_s) + sum_S
exp(l_s + b_s)).

    HF_HUB_OFFLINE=1 PYTHONPATH=. .venv/bin/python scripts/vocab_ceiling.py --users 60 --out runs/s21/vocab-ceiling.json
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from person_guidance import add_arguments, setup  # noqa: E402
from vocab_bias import log_background, pmi_bias, token_counts  # noqa: E402

from app.prompts import TASKS  # noqa: E402
from hypernet_onnx import data as D  # noqa: E402
from hypernet_onnx.stats import paired_bootstrap  # noqa: E402


def keep(lp: torch.Tensor, tgt: torch.Tensor, support: torch.Tensor) -> dict:
    """What the loss under any bias on ``support`` needs of one example's (A, V) log-probs: the log-probs on the
    support (A, S), the target's log-prob (A,) and its index in the support (-1 outside it)."""
    pos = {int(t): i for i, t in enumerate(support)}
    return {"s": lp[:, support].clone(), "t": lp.gather(1, tgt[:, None])[:, 0].clone(),
            "ti": torch.tensor([pos.get(int(t), -1) for t in tgt])}


def biased_nll(k: dict, b: torch.Tensor) -> torch.Tensor:
    """Mean NLL per answer token with the bias b added to the logits on the support: one bias for every position
    (S,), or one per position (A, S)."""
    return -biased_logprob(k, b).mean()


def biased_logprob(k: dict, b: torch.Tensor) -> torch.Tensor:
    """(A,) each answer token's log-prob with the bias b added to the logits on the support (see biased_nll)."""
    s = k["s"]                                                             # (A, S) log-probs, lse already 0
    b = b.expand_as(s)                                                     # (A, S)
    outside = torch.log1p(-s.exp().sum(1).clamp(max=1 - 1e-6))           # (A,) log mass off the support
    lse = torch.logaddexp(outside, torch.logsumexp(s + b, 1))             # (A,)
    on = b.gather(1, k["ti"].clamp(min=0)[:, None])[:, 0]                 # (A,) the target's bias, if on S
    return k["t"] + torch.where(k["ti"] >= 0, on, torch.zeros(())) - lse


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_arguments(ap)
    ap.add_argument("--bg-data", type=Path, default=D.DATA_DIR / "mlpapers-train.jsonl.gz")
    ap.add_argument("--bg-users", type=int, default=600)
    ap.add_argument("--pmi", type=float, default=0.3, help="the PMI bias's weight (the start of --init pmi)")
    ap.add_argument("--init", default="zero,pmi")
    ap.add_argument("--lr", default="0.002,0.01", help="Adam learning rates, one run each")
    ap.add_argument("--epochs", type=int, default=20)
    ap.add_argument("--out", type=Path, required=True)
    a = ap.parse_args()
    S = setup(a)
    vocab = S.model.get_output_embeddings().weight.shape[0]
    by = {u["user"]: u for u in S.users}
    log_bg = log_background(S.tok, a.bg_data, a.bg_users, vocab)
    counts = {uid: token_counts(S.tok, [u], vocab) for uid, u in by.items()}
    support = {uid: torch.tensor(np.flatnonzero(c)) for uid, c in counts.items()}
    pmi = {uid: torch.tensor(a.pmi * pmi_bias(c, log_bg)[c > 0], dtype=torch.float32) for uid, c in counts.items()}

    t0 = time.time()
    train = {uid: [keep(*S.logp(S.enc(D.item_example(uid, task, it)), uid), support[uid])
                   for it in u["profile"] for task in TASKS] for uid, u in by.items()}
    print(f"training examples kept, {time.time() - t0:.0f} s", flush=True)
    scored = []                                       # (example, own kept, other uid, other kept)
    for i, ex in enumerate(S.slots.examples):
        other = S.split.shuffled[ex.user]
        bare = S.enc(ex)
        scored.append((ex, i, keep(*S.logp(bare, ex.user), support[ex.user]),
                       other, keep(*S.logp(bare, other), support[other])))
    print(f"scored examples kept, {time.time() - t0:.0f} s", flush=True)

    rec = {"args": {k: str(v) for k, v in vars(a).items()}, "runs": {}}
    for init, lr in [(i, float(x)) for i in a.init.split(",") for x in a.lr.split(",")]:
        bias = {uid: (pmi[uid].clone() if init == "pmi" else torch.zeros(len(support[uid]))).requires_grad_()
                for uid in by}
        opt = {uid: torch.optim.Adam([b], lr=lr) for uid, b in bias.items()}
        epochs = []
        for epoch in range(a.epochs + 1):
            if epoch:
                for uid in by:
                    for k in train[uid]:
                        loss = biased_nll(k, bias[uid])
                        opt[uid].zero_grad()
                        loss.backward()
                        opt[uid].step()
            with torch.no_grad():
                rows = []
                for ex, i, own, other, oth in scored:
                    for method, k, b in (("none", own, torch.zeros(len(support[ex.user]))), ("own", own, bias[ex.user]),
                                         ("other", oth, bias[other]), ("other-none", oth, torch.zeros(len(support[other])))):
                        rows.append({"user": ex.user, "query": i, "task": ex.task, "method": method,
                                     "nll": float(biased_nll(k, b))})
            epochs.append(rows)
            own = np.mean([r["nll"] for r in rows if r["method"] == "own"])
            print(f"{init}@{lr:g} epoch {epoch}: own {own:.4f}", flush=True)
        rec["runs"][f"{init}@{lr:g}"] = epochs
    a.out.parent.mkdir(parents=True, exist_ok=True)
    a.out.write_text(json.dumps(rec))
    print(report(rec))


def report(rec: dict) -> str:
    """Per init: the epoch with the lowest own NLL on the first half of the authors; on the second half, per task:
    own NLL, own − no bias (the adapter alone), other − own, and the adapter alone's other − own."""
    f = lambda c: f"{c['diff']:+.3f} [{c['lo']:+.3f}, {c['hi']:+.3f}]"                               # noqa: E731
    lines = ["| init@lr | epoch | task | own NLL | own − adapter alone [CI] | other − own [CI] | adapter alone: other − own |",
             "|---|---|---|---|---|---|---|"]
    for init, epochs in rec["runs"].items():
        users = list(dict.fromkeys(r["user"] for r in epochs[0]))
        pick, held = set(users[:len(users) // 2]), set(users[len(users) // 2:])
        best = min(range(len(epochs)), key=lambda e: np.mean([r["nll"] for r in epochs[e]
                                                               if r["method"] == "own" and r["user"] in pick]))
        for e in sorted({0, best}):
            rows = [r for r in epochs[e] if r["user"] in held]
            for t in sorted({r["task"] for r in rows}):
                own = np.mean([r["nll"] for r in rows if r["method"] == "own" and r["task"] == t])
                lines.append(f"| {init} | {e}{' (chosen)' if e == best else ''} | {t} | {own:.3f} "
                             f"| {f(paired_bootstrap(rows, 'own', 'none', t, 'nll'))} "
                             f"| {f(paired_bootstrap(rows, 'other', 'own', t, 'nll'))} "
                             f"| {f(paired_bootstrap(rows, 'other-none', 'none', t, 'nll'))} |")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
