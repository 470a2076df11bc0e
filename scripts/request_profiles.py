#!/usr/bin/env python
"""Issue 11 experiment: does a profile made of the person's items nearest the request (P2P's request-conditioned
profile) carry more of the person than the whole profile, with a hypernetwork trained on whole profiles?

    python scripts/request_profiles.py --config hypernet_onnx/configs/v2gpu-res.toml \
        --ckpt runs/v2gpu/res-best.pt --users 60 --k 3 --out runs/s7/request-profiles.json

Per dev example (the run's dev split, its first --users authors), the answer NLL (torch, as training measures
it) under the adapter made from: the whole own profile, the whole next author's profile, the own k items
nearest the request, the next author's k items nearest the same request. "Nearest": an item scores as its best
chunk's cosine to the request (the abstract for a headline, the title for an abstract), as the evaluation's
former retrieval did. Reports per task the person gap (other - own) of both pairings with a paired bootstrap
over authors, and the mean NLLs. Nothing here is trained: the checkpoint is used as it is.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

from app.embed import Embedder  # noqa: E402
from app.profile import profile_vector  # noqa: E402
from hypernet_onnx import data as D  # noqa: E402
from hypernet_onnx.frozen_base import collate, example_losses  # noqa: E402
from hypernet_onnx.model import set_lora  # noqa: E402
from hypernet_onnx.stats import paired_bootstrap  # noqa: E402
from hypernet_onnx.train import TrainConfig, Trainer  # noqa: E402


def nearest_items_vector(user: dict, emb: np.ndarray, q: np.ndarray, k: int, pooling: str) -> np.ndarray:
    owner = np.array([i for i, chunks in enumerate(D.item_chunks(user)) for _ in chunks])
    sims = emb.astype(np.float32) @ q                                    # (n_chunks,)
    best = {i: float(sims[owner == i].max()) for i in set(owner.tolist())}
    top = sorted(best, key=best.get, reverse=True)[:k]
    return profile_vector(emb[np.isin(owner, top)].astype(np.float32), pooling)


@torch.no_grad()
def nll(tr: Trainer, exs: list[D.Example], items, vecs: list[np.ndarray] | None, bs: int) -> np.ndarray:
    out = []
    for i in range(0, len(exs), bs):
        ids, mask, lmask = collate(items[i:i + bs], tr.tok.pad_token_id or 0)
        if vecs is None:                                   # the base model alone
            set_lora(tr.wrappers, None)
        else:
            prof = torch.tensor(np.stack(vecs[i:i + bs]))                              # (B, P)
            set_lora(tr.wrappers, tr.hyper(prof), tr.hyper.scale)
        out.append(example_losses(tr.model, ids, mask, lmask).float())
    return torch.cat(out).numpy()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config", type=Path, required=True)
    ap.add_argument("--ckpt", type=Path, required=True)
    ap.add_argument("--users", type=int, default=60)
    ap.add_argument("--k", type=int, default=3)
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--out", type=Path, required=True)
    a = ap.parse_args()
    cfg = TrainConfig.load(a.config)
    with tempfile.TemporaryDirectory() as tmp:       # never resume from (or write into) the run's own folder
        cfg = replace(cfg, out_dir=tmp, dev_users=a.users, ood_data="", init_from=str(a.ckpt.absolute()),
                      threads=a.threads or cfg.threads)
        tr = Trainer(cfg)
    tr.hyper.eval()
    users = D.load_users(D.DATA_DIR / cfg.dev_data, a.users)
    emb = D.embed_users(D.DATA_DIR / cfg.dev_data, users)
    embedder = Embedder(threads=a.threads)
    nxt = {u["user"]: users[(i + 1) % len(users)] for i, u in enumerate(users)}
    exs, vecs = [], {c: [] for c in ("own", "other", "own_near", "other_near")}
    for u in users:
        for q in u["queries"]:
            for task in D.TASKS:
                qv = embedder.embed([q["text"] if task == "headline" else q["title"]])[0]
                o = nxt[u["user"]]
                exs.append(D.examples([{**u, "queries": [q]}], (task,))[0])
                vecs["own"].append(tr.profiles[u["user"]])
                vecs["other"].append(tr.profiles[o["user"]])
                vecs["own_near"].append(nearest_items_vector(u, emb[u["user"]], qv, a.k, cfg.pooling))
                vecs["other_near"].append(nearest_items_vector(o, emb[o["user"]], qv, a.k, cfg.pooling))
    items = tr.tokens.get(exs, tr._encode)
    per = {c: nll(tr, exs, items, v, a.batch) for c, v in vecs.items()}
    per["base"] = nll(tr, exs, items, None, a.batch)
    rows = [{"user": ex.user, "query": i, "task": ex.task, "method": c, "nll": float(per[c][i])}
            for i, ex in enumerate(exs) for c in per]
    res = {"config": str(a.config), "ckpt": str(a.ckpt), "users": a.users, "k": a.k, "examples": len(exs),
           "mean": {c: {t: float(np.mean([per[c][i] for i, ex in enumerate(exs) if ex.task == t])) for t in D.TASKS}
                    for c in per},
           "gap_whole": {t: paired_bootstrap(rows, "other", "own", t, "nll") for t in D.TASKS},
           "gap_near": {t: paired_bootstrap(rows, "other_near", "own_near", t, "nll") for t in D.TASKS}}
    res["share"] = {pair: {t: res[f"gap_{pair}"][t]["diff"] / (res["mean"]["base"][t] - res["mean"][own][t])
                           for t in D.TASKS} for pair, own in (("whole", "own"), ("near", "own_near"))}
    a.out.parent.mkdir(parents=True, exist_ok=True)
    a.out.write_text(json.dumps(res, indent=2))
    print(json.dumps(res, indent=2))


if __name__ == "__main__":
    main()
