"""Sentence embeddings on the device: all-MiniLM-L6-v2 through onnxruntime.

The graph (exported by hypernet_onnx.export_embedder) already mean-pools and
normalises, so this module only tokenizes and runs it, one text per run. The
int8 graph quantizes its activations with one scale per tensor, so in a batch a
text's vector depended on its batchmates (cosine down to 0.995 between the same
chunk alone and among others): a document imported with others got another
vector than alone, and the evaluation's cached vectors could rank two near-tied
items otherwise than the app's store. Alone, a text's vector is a function of
the text: as fast here as batches of 8 (38-39 chunks/s on 400 dev chunks, 2
cores, no padding to pay), and the int8 graph is what makes it >2x
sentence-transformers (`tailor bench`).
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from .models import EMBEDDER_KEY, EMBEDDER_SHA256, embedder_files

MAX_TOKENS = 256   # sentence-transformers' max_seq_length for this model
DIM = 384
VECTORS_ID = f"{EMBEDDER_SHA256[:12]}-b1"   # what a vector depends on (graph, one text per run): caches' key


def _session(onnx_path: Path, threads: int | None):
    import onnxruntime as ort
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads or min(4, os.cpu_count() or 1)
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    opts.log_severity_level = 3
    return ort.InferenceSession(str(onnx_path), opts, providers=["CPUExecutionProvider"])


class Embedder:
    """Lazily loads the ONNX graph; embed() returns (N, 384) float32, unit norm."""

    id = EMBEDDER_KEY

    def __init__(self, threads: int | None = None, batch_size: int = 1):
        from tokenizers import Tokenizer
        onnx_path, tok_path = embedder_files()
        self.tokenizer = Tokenizer.from_file(str(tok_path))
        self.tokenizer.enable_truncation(MAX_TOKENS)
        self.tokenizer.no_padding()
        self.session = _session(onnx_path, threads)
        self.batch_size = batch_size

    def embed(self, texts: list[str]) -> np.ndarray:
        out = np.zeros((len(texts), DIM), dtype=np.float32)
        if not texts:
            return out
        encodings = self.tokenizer.encode_batch(list(texts))
        order = np.argsort([len(e.ids) for e in encodings], kind="stable")
        for start in range(0, len(order), self.batch_size):
            idx = order[start:start + self.batch_size]
            width = max(len(encodings[i].ids) for i in idx)
            ids = np.zeros((len(idx), width), dtype=np.int64)
            mask = np.zeros_like(ids)
            for row, i in enumerate(idx):
                n = len(encodings[i].ids)
                ids[row, :n] = encodings[i].ids
                mask[row, :n] = 1
            (emb,) = self.session.run(None, {"input_ids": ids, "attention_mask": mask,
                                             "token_type_ids": np.zeros_like(ids)})
            out[idx] = emb
        return out


def embed_chunks(store, embedder: "Embedder", embedder_id: str, progress=None, batch: int = 256) -> int:
    """Embed every stored chunk that has no vector from ``embedder_id`` yet, in batches, so an interrupted run
    resumes where it stopped. The app (Tailor.embed_pending) and the evaluation's per-person stores use it."""
    done = 0
    while todo := store.chunks_without_embedding(embedder_id, batch):
        vecs = embedder.embed([t for _, t in todo])
        store.put_embeddings(embedder_id, [i for i, _ in todo], vecs)
        done += len(todo)
        if progress:
            progress(done, done + len(store.chunks_without_embedding(embedder_id, 1)), "embedding")
    return done
