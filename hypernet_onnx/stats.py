"""Paired statistics shared by training (its dev log) and evaluation (its tables), so a person-signal CI in
a training log and one in the model card are the same computation. numpy only: training machines without
llama.cpp import it too."""
from __future__ import annotations

import numpy as np


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
