"""`tailor bench`: the personalization path's speed on this machine, as JSON.

Runs in a throwaway data dir on the bundled sample profile, so numbers are
comparable between machines and the person's own store is untouched. Nothing
here is asserted by tests: benchmarks report, they do not pass or fail.
"""
from __future__ import annotations

import platform
import tempfile
import time
from pathlib import Path

import numpy as np

from .paths import assets_dir

PROMPT = "Write a short paragraph about what you have been working on lately."


def _pct(xs: list[float], q: float) -> float:
    return round(float(np.percentile(xs, q)), 2)


def run_bench(tailor=None, runs: int = 20) -> dict:
    from .core import Settings, Tailor
    settings = Settings(**{k: getattr(tailor.settings, k) for k in ("model_path", "hypernet_path", "threads",
                                                                   "gpu_layers")}) if tailor else Settings()
    with tempfile.TemporaryDirectory() as tmp:
        t = Tailor(Path(tmp) / "home", settings)
        try:
            return _bench(t, runs)
        finally:
            t.close()


def _bench(t, runs: int) -> dict:
    import os
    out: dict = {"machine": {"cpu_count": os.cpu_count(), "platform": platform.platform(),
                             "processor": platform.processor() or platform.machine()}}
    t.import_paths([assets_dir() / "samples" / "interpreter-performance"])
    t.adapt(load=True)                   # warm: models loaded, profile embedded
    eng = t.engine
    prompt = eng.chat_prompt([{"role": "user", "content": PROMPT}])
    swap = swap_bench(t, prompt, runs)
    out["adapter_swap_ms"] = {k: swap[k] for k in ("p50", "p90", "runs", "stages_p50")} | {"goal_p50": 150}
    out["first_token_after_swap_ms"] = {"p50": swap["first_token_p50"], "goal": 300}
    eng.set_scale(1.0)
    with_adapter = eng.complete(prompt, max_tokens=128)
    eng.set_scale(0.0)
    without = eng.complete(prompt, max_tokens=128)
    eng.set_scale(1.0)
    t0 = time.perf_counter()
    words = t.words()                    # counted from the store: once per set of documents
    words_ms = (time.perf_counter() - t0) * 1000
    with_words = eng.complete(prompt, max_tokens=128, bias=words.processor(1.0)) if words else None
    t0 = time.perf_counter()
    contexts = t.contexts(compute=True) if words else None     # every document's keys: one pass each, then cached
    keys_ms = (time.perf_counter() - t0) * 1000
    with_contexts = (eng.complete(prompt, max_tokens=128, bias=contexts.processor(words.processor(1.0)))
                     if contexts else None)
    out["decode_tokens_per_s"] = {"with_adapter": round(with_adapter.tokens_per_s, 1),
                                  "without": round(without.tokens_per_s, 1),
                                  "ratio": round(with_adapter.tokens_per_s / max(without.tokens_per_s, 1e-9), 3),
                                  "goal_ratio": 0.9,
                                  "with_adapter_and_words": round(with_words.tokens_per_s, 1) if words else None,
                                  "with_adapter_words_and_contexts": round(with_contexts.tokens_per_s, 1)
                                  if contexts else None}
    out["words"] = {"count_ms": round(words_ms, 1), "tokens": len(words) if words else 0}
    out["contexts"] = {"build_ms": round(keys_ms, 1), "keys": len(contexts) if contexts else 0,
                       "documents": len(t.store.titled_documents(1))}
    out["embedding"] = embedding_bench(t)
    return out


def swap_bench(t, prompt: str, runs: int) -> dict:
    """Profile -> hypernet -> GGUF -> live model, ``runs`` times, then the first token after each swap.

    The stage medians come from these same runs (not from the adapters kept on disk, which are only the
    last few), so p50 of the total and of its stages describe one sample."""
    timings, first_tokens = [], []
    for _ in range(runs):
        timings.append(t.adapt(load=True).ms)
        t0 = time.perf_counter()
        next(iter(t.engine.stream(prompt, max_tokens=1)), None)
        first_tokens.append((time.perf_counter() - t0) * 1000)
    totals = [ms["total"] for ms in timings]
    return {"p50": _pct(totals, 50), "p90": _pct(totals, 90), "runs": runs,
            "stages_p50": {k: _pct([ms[k] for ms in timings], 50) for k in ("hypernet", "write", "load")},
            "first_token_p50": _pct(first_tokens, 50), "per_run": timings}


def embedding_bench(t, n_chunks: int = 256, repeats: int = 3) -> dict:
    """ONNX embedder vs the plain sentence-transformers baseline, same chunks, same run.

    Each side gets its best of `repeats` timings (as timeit does), and the baseline its better
    batch size of 8 and 32 (32 is its default), so the speed-up is not won by tuning only our side."""
    from .chunking import chunk_document
    from . import ingest
    chunks = []
    for p in sorted((assets_dir() / "samples").glob("*/*.md")):
        doc = ingest.extract(p)
        chunks += chunk_document(doc.title, doc.text)
    chunks = (chunks * (n_chunks // max(1, len(chunks)) + 1))[:n_chunks]

    def best_rate(fn) -> tuple[float, object]:
        fn(chunks[:16])
        times, out = [], None
        for _ in range(repeats):
            t0 = time.perf_counter()
            out = fn(chunks)
            times.append(time.perf_counter() - t0)
        return len(chunks) / min(times), out

    ours_rate, ours = best_rate(t.embedder.embed)
    res = {"chunks": len(chunks), "onnx_chunks_per_s": round(ours_rate, 1), "goal_speedup": 2.0}
    try:
        from sentence_transformers import SentenceTransformer
        from .models import reference_embedder_dir
        st = SentenceTransformer(str(reference_embedder_dir()), device="cpu")
        rates = {}
        for bs in (8, 32):
            rates[bs], ref = best_rate(lambda c: st.encode(c, batch_size=bs, normalize_embeddings=True,
                                                           convert_to_numpy=True))
        st_rate = max(rates.values())
        cos = (ours * ref).sum(1)
        res.update({"sentence_transformers_chunks_per_s": round(st_rate, 1),
                    "sentence_transformers_by_batch": {str(k): round(v, 1) for k, v in rates.items()},
                    "speedup": round(ours_rate / st_rate, 2), "cosine_min": round(float(cos.min()), 5),
                    "cosine_mean": round(float(cos.mean()), 5)})
    except ImportError:
        res["sentence_transformers_chunks_per_s"] = None   # baseline not installed (e.g. in the bundle)
    return res
