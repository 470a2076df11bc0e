"""Does the hypernetwork's input tell people apart? (issue 11: "a hypothesis, not measured here")

The adapter can only differ between two authors as much as their profile vectors do. This measures, with the
app's own embedder and pooling (``hypernet_onnx.data``, ``app.profile``), how well one half of an author's
documents identifies the other half among all authors of a file, and how well a request (a query item posed as
either task) identifies its author's whole profile, under the input transforms the designs use or could use:

- ``raw``: the mean chunk embedding the shipped file sees;
- ``standardized``: z-scored with training authors' per-dimension mean and std (``HyperConfig.standardize``);
- ``whitened``: PCA-whitened with training authors' covariance (all 384 directions, eps-regularised).

Transforms are fitted on training authors only (``--stats``). Authors need ≥ 4 profile items (two per half).
For scale beside the identification rates: the cosine of an author's two halves, and of their half to the next
author's (the pairing every shuffled comparison uses: next user id in sorted order).

The same questions are then asked of the adapters the shipped hypernetwork (``--hypernet``) makes from the raw
half profiles: each adapter is represented by its delta weights applied to fixed random probe vectors
(``delta_probe``: inner products of these approximate those of the delta weights), and ``person_share`` is the
part of an adapter's squared norm that differs between authors, E||ΔW_u − mean ΔW||² / E||ΔW_u||² (for the input,
the same ratio of the profile vectors).

    HF_HUB_OFFLINE=1 PYTHONPATH=. .venv/bin/python scripts/profile_identity.py \\
        --data ../shared/data/mlpapers-dev.jsonl.gz --stats ../shared/data/mlpapers-train.jsonl.gz \\
        --stats-users 600 --out runs/s18/identity-dev.json
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from app.embed import Embedder
from app.hypernet import Hypernet
from app.profile import profile_vector
from hypernet_onnx import data as D


def halves(user: dict, emb: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Profile vectors of the even- and odd-numbered items (oldest first), pooled over chunks as the app does."""
    n = len(user["profile"])
    return D.items_vector(user, emb, range(0, n, 2), "mean"), D.items_vector(user, emb, range(1, n, 2), "mean")


def fit(vectors: np.ndarray, eps: float = 1e-3) -> dict:
    """Per-transform functions fitted on training authors' whole-profile vectors (N, 384)."""
    mean, std = vectors.mean(0), vectors.std(0) + 1e-6
    cov = np.cov(vectors - mean, rowvar=False)
    w, v = np.linalg.eigh(cov)
    white = v / np.sqrt(w + eps * w.max())                      # (384, 384): x @ white has ~unit covariance
    return {"raw": lambda x: x,
            "standardized": lambda x: (x - mean) / std,
            "whitened": lambda x: (x - mean) @ white}


def delta_probe(net: Hypernet, profiles: np.ndarray, probes: int = 4, seed: int = 0) -> np.ndarray:
    """(N, D): each profile's adapter as scale * B (A X) for every layer and module, X a fixed (in, probes) draw."""
    rng, xs, rows = np.random.default_rng(seed), {}, []
    for p in profiles:
        ad = net.generate(p)
        parts = []
        for (layer, m), (a, b) in sorted(ad.weights.items()):
            x = xs.setdefault(a.shape[1], rng.standard_normal((a.shape[1], probes)) / np.sqrt(a.shape[1]))
            parts.append((ad.scale * (b.astype(np.float64) @ (a.astype(np.float64) @ x))).ravel())
        rows.append(np.concatenate(parts))
    return np.stack(rows)


def person_share(x: np.ndarray) -> float:
    return float(((x - x.mean(0)) ** 2).sum(1).mean() / (x ** 2).sum(1).mean())


def unit(x: np.ndarray) -> np.ndarray:
    return x / np.linalg.norm(x, axis=-1, keepdims=True)


def ranks(queries: np.ndarray, keys: np.ndarray, own: np.ndarray) -> np.ndarray:
    """1-based rank of keys[own[i]] among all keys by cosine to queries[i]."""
    sim = unit(queries) @ unit(keys).T                         # (Q, N)
    return 1 + (sim > sim[np.arange(len(own)), own][:, None]).sum(1)


def summary(r: np.ndarray, n: int) -> dict:
    return {"top1": float((r == 1).mean()), "top5": float((r <= 5).mean()), "mrr": float((1 / r).mean()),
            "median_rank": float(np.median(r)), "chance_top1": 1 / n, "n": int(len(r))}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data", type=Path, required=True)
    ap.add_argument("--stats", type=Path, required=True, help="training authors, for the transforms' statistics")
    ap.add_argument("--stats-users", type=int, default=600)
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--hypernet", type=Path, default=None, help="default: the shipped file")
    a = ap.parse_args()

    train = D.load_users(a.stats, a.stats_users)
    temb = D.embed_users(a.stats, train)
    tf = fit(np.stack([profile_vector(temb[u["user"]].astype(np.float32)) for u in train]))

    users = sorted((u for u in D.load_users(a.data) if len(u["profile"]) >= 4), key=lambda u: u["user"])
    emb = D.embed_users(a.data, users)
    A, B = map(np.stack, zip(*(halves(u, emb[u["user"]]) for u in users)))          # (N, 384) each
    whole = np.stack([profile_vector(emb[u["user"]].astype(np.float32)) for u in users])
    embedder = Embedder()                      # requests one at a time, as the app embeds them
    req, owner = {"headline": [], "writing": []}, []
    for i, u in enumerate(users):
        for q in u["queries"]:
            req["headline"].append(embedder.embed([q["text"]])[0])     # headline task: the request is the text
            req["writing"].append(embedder.embed([q["title"]])[0])     # writing task: the request is the title
            owner.append(i)
    owner = np.array(owner)
    n, nxt = len(users), (np.arange(len(users)) + 1) % len(users)

    out = {"data": str(a.data), "authors": n, "stats_authors": len(train), "transforms": {}}
    for name, f in tf.items():
        ta, tb, tw = f(A), f(B), f(whole)
        ua, ub = unit(ta), unit(tb)
        own_cos, next_cos = (ua * ub).sum(1), (ua * ub[nxt]).sum(1)
        out["transforms"][name] = {
            "half_to_half": summary(ranks(ta, tb, np.arange(n)), n),
            "cos_own_halves": float(own_cos.mean()), "cos_half_to_next_author": float(next_cos.mean()),
            "own_minus_next_cos": float((own_cos - next_cos).mean()),
            # the request is embedded alone, so it gets the same transform as a profile vector (same space)
            **{f"request_{t}_to_profile": summary(ranks(f(np.stack(v)), tw, owner), n) for t, v in req.items()}}
    net = Hypernet(a.hypernet)
    if net.pooling != "mean":
        raise SystemExit(f"{net.path} pools with {net.pooling!r}; this script compares mean profiles")
    da, db = delta_probe(net, A), delta_probe(net, B)
    uda, udb = unit(da), unit(db)
    own_cos, next_cos = (uda * udb).sum(1), (uda * udb[nxt]).sum(1)
    out["adapter"] = {"hypernet": net.id, "half_to_half": summary(ranks(da, db, np.arange(n)), n),
                      "cos_own_halves": float(own_cos.mean()), "cos_half_to_next_author": float(next_cos.mean()),
                      "person_share": person_share(np.concatenate([da, db])),
                      "input_person_share": person_share(np.concatenate([A, B]))}
    a.out.parent.mkdir(parents=True, exist_ok=True)
    a.out.write_text(json.dumps(out, indent=1))
    for name, r in out["transforms"].items():
        h, qh, qw = r["half_to_half"], r["request_headline_to_profile"], r["request_writing_to_profile"]
        print(f"{name:13s} half→half top1 {h['top1']:.3f} mrr {h['mrr']:.3f} | cos own {r['cos_own_halves']:.3f} "
              f"next {r['cos_half_to_next_author']:.3f} | text→profile top1 {qh['top1']:.3f} | "
              f"title→profile top1 {qw['top1']:.3f}  (chance {h['chance_top1']:.4f}, {n} authors)")
    r = out["adapter"]
    print(f"adapter ({r['hypernet']}) half→half top1 {r['half_to_half']['top1']:.3f} mrr {r['half_to_half']['mrr']:.3f}"
          f" | cos own {r['cos_own_halves']:.4f} next {r['cos_half_to_next_author']:.4f} | person share of the "
          f"adapter {r['person_share']:.4f}, of the raw input {r['input_person_share']:.4f}")


if __name__ == "__main__":
    main()
