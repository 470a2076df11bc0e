"""Profile encoding: a person's chunk embeddings -> the hypernetwork's input.

Shared by training (hypernet_onnx) and the app, so both compute exactly the
same vector. Pooling streams over batches with O(dim) memory, so a profile of
1 chunk and one of 100,000 chunks cost the same memory and linear time.

Poolings:
- ``mean``: the mean embedding (its norm < 1 also says how varied the topics are).
- ``mean_std``: mean concatenated with the per-dimension standard deviation.
"""
from __future__ import annotations

from collections.abc import Iterable

import numpy as np

POOLINGS = {"mean": 1, "mean_std": 2}   # name -> input width in multiples of the embedding dim


def input_dim(pooling: str, emb_dim: int = 384) -> int:
    if pooling not in POOLINGS:
        raise ValueError(f"unknown pooling {pooling!r}; expected one of {sorted(POOLINGS)}")
    return POOLINGS[pooling] * emb_dim


def profile_vector(batches: Iterable[np.ndarray], pooling: str = "mean") -> np.ndarray:
    """Pool embeddings given as one (N, D) array or an iterable of (n_i, D) batches."""
    if isinstance(batches, np.ndarray):
        batches = [batches]
    total = sq = None
    count = 0
    for batch in batches:
        batch = np.asarray(batch, dtype=np.float64)
        if batch.size == 0:
            continue
        s, s2 = batch.sum(0), (batch * batch).sum(0)
        total = s if total is None else total + s
        sq = s2 if sq is None else sq + s2
        count += batch.shape[0]
    if count == 0:
        raise ValueError("the profile is empty: import at least one document first")
    mean = total / count
    if pooling == "mean":
        out = mean
    elif pooling == "mean_std":
        out = np.concatenate([mean, np.sqrt(np.maximum(sq / count - mean * mean, 0.0))])
    else:
        raise ValueError(f"unknown pooling {pooling!r}")
    return out.astype(np.float32)
