"""Paired statistics shared by training (its dev log) and evaluation (its tables), so a person-signal CI in
a training log and one in the model card are the same computation. numpy only: training machines without
llama.cpp import it too."""
from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from hypernet_onnx.data import Example


def paired_bootstrap(rows, a: str, b: str, task: str, key: str, n: int = 2000, seed: int = 0) -> dict:
    """Mean difference a - b with a 95% CI, resampling users (queries of one user stay together)."""
    va = {(r["user"], r["query"]): r[key] for r in rows if r["method"] == a and r["task"] == task}
    vb = {(r["user"], r["query"]): r[key] for r in rows if r["method"] == b and r["task"] == task}
    users = sorted({u for u, _ in va})
    per_user = np.array([np.mean([va[k] - vb[k] for k in va if k[0] == u]) for u in users])
    rng = np.random.default_rng(seed)
    boots = per_user[rng.integers(0, len(users), (n, len(users)))].mean(1)
    return {"diff": float(per_user.mean()), "lo": float(np.percentile(boots, 2.5)),
            "hi": float(np.percentile(boots, 97.5))}


def person_metric(examples: list[Example], nll: dict[str, np.ndarray]) -> dict:
    """Per task: gap = shuffled - own NLL (positive: the own profile helps) with a 95% CI from a paired
    bootstrap over users, and share = gap / (base - own). The same statistic as evaluate.py's CIs. ``nll`` is
    the training log's per-example NLL (train.Trainer.evaluate): "dev" (own profile), "dev_shuffled", "dev_base"."""
    rows = [{"user": ex.user, "query": i, "task": ex.task, "method": m, "nll": float(nll[key][i])}
            for i, ex in enumerate(examples) for m, key in (("own", "dev"), ("shuffled", "dev_shuffled"))]
    out = {}
    for task in sorted({ex.task for ex in examples}):
        idx = [i for i, ex in enumerate(examples) if ex.task == task]
        own, base = float(nll["dev"][idx].mean()), float(nll["dev_base"][idx].mean())
        ci = paired_bootstrap(rows, "shuffled", "own", task, "nll")
        gain = base - own
        out[task] = {"gap": round(ci["diff"], 4), "lo": round(ci["lo"], 4), "hi": round(ci["hi"], 4),
                     "share": round(ci["diff"] / gain, 4) if gain > 0 else None}
    return out
