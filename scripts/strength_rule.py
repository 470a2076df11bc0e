"""What does the app's strength rule (app.prompts.request_strength) cost, and could it tell requests apart better?

    python scripts/strength_rule.py nll --data ../shared/data/mlpapers-dev.jsonl.gz --skip 16 --users 10 \
        --out runs/s13/para-16.jsonl
    python scripts/strength_rule.py relevance --data ../shared/data/mlpapers-dev.jsonl.gz --skip 16 --users 30 \
        --out runs/s13/rel-dev.jsonl

``nll``: the gold answer's NLL per token (llama.cpp, the shipped hypernetwork's adapter of each author) for each
query posed as a task in the trained words (which the rule gives the whole strength) and in two other phrasings
(which it gives CHAT_STRENGTH of it), at strengths 0, CHAT_STRENGTH and 1: how much of the adapter's gain a task
request asked in other words keeps.
``relevance``: the highest cosine between a request and the author's own chunks (the app's embedder), for the
task requests in all three phrasings and for the chat-quality prompts (everyday, writing, topics): could the
rule ask "is this about the person's documents?" instead of "is this a task prompt, word for word?".
Both print a summary and write one row per measurement to --out.
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
from collections import defaultdict
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from app.prompts import CHAT_STRENGTH, TASKS, task_messages, task_target  # noqa: E402
from app.quality import load_prompts  # noqa: E402
from hypernet_onnx import data as D  # noqa: E402
from hypernet_onnx.evaluate import NLL_MAX_TARGET, Evaluator  # noqa: E402

# the same two requests in other words; variant 0 is the trained prompt (app.prompts)
OTHER_WORDS = {"headline": ["Suggest a good title for my paper. Here is the abstract:\n\n{text}",
                            "What would you call a paper with this abstract?\n\n{text}"],
               "writing": ["Draft an abstract for my paper \"{title}\".",
                           "I'm writing a paper called \"{title}\". Can you write its abstract?"]}


def requests(q: dict) -> list[tuple[str, int, str]]:
    """(task, variant, request) for one query item: the trained prompt, then OTHER_WORDS."""
    out = []
    for task in TASKS:
        out.append((task, 0, task_messages(task, q["title"], q["text"])[0]["content"]))
        out += [(task, i + 1, t.format(title=q["title"], text=q["text"])) for i, t in enumerate(OTHER_WORDS[task])]
    return out


def measure_nll(ev: Evaluator, u: dict, emb: np.ndarray) -> list[dict]:
    eng, rows = ev.engine, []
    path, _ = ev.p2p_adapter(emb, u["user"])
    for s in (0.0, CHAT_STRENGTH, 1.0):
        eng.set_adapter(path if s else None, s if s else None)
        for qi, q in enumerate(u["queries"]):
            for task, variant, request in requests(q):
                gold = eng.tokenize(task_target(task, q["title"], q["text"]) + "<|im_end|>")[:NLL_MAX_TARGET]
                nll = eng.nll(eng.tokenize(eng.chat_prompt([{"role": "user", "content": request}])), gold)
                rows.append({"user": u["user"], "strength": s, "query": qi, "task": task, "variant": variant,
                             "nll": nll})
    eng.set_adapter(None)
    return rows


def measure_relevance(ev: Evaluator, u: dict, emb: np.ndarray) -> list[dict]:
    chat = [p for p in load_prompts() if p["kind"] in ("everyday", "writing", "topics")]
    asked = [(p["kind"], p["id"], p["content"]) for p in chat] + \
        [(f"task:{task}", str(variant), r) for q in u["queries"] for task, variant, r in requests(q)]
    vecs = ev.embedder.embed([r for _, _, r in asked])
    return [{"user": u["user"], "kind": kind, "id": i, "max_cosine": float((emb @ v).max())}
            for (kind, i, _), v in zip(asked, vecs)]


def summarize(mode: str, rows: list[dict]) -> None:
    if mode == "nll":
        by = defaultdict(list)
        for r in rows:
            by[(r["task"], r["variant"], r["strength"])].append(r["nll"])
        print("task      variant  base   at CHAT_STRENGTH  at 1   share of the gain kept at CHAT_STRENGTH")
        for task in TASKS:
            for v in range(3):
                b, c, f = (float(np.mean(by[(task, v, s)])) for s in (0.0, CHAT_STRENGTH, 1.0))
                print(f"{task:9} {v:7}  {b:.3f}  {c:.3f}            {f:.3f}  {(b - c) / (b - f):.2f}")
    else:
        by = defaultdict(list)
        for r in rows:
            by[r["kind"] + (f" variant {r['id']}" if r["kind"].startswith("task:") else "")].append(r["max_cosine"])
        print("request kind                 n     min    p5   median  p95    max   (max cosine to own chunks)")
        for k, v in sorted(by.items()):
            v = np.array(v)
            print(f"{k:26} {len(v):5}  {v.min():.3f}  {np.percentile(v, 5):.3f}  {np.median(v):.3f}  "
                  f"{np.percentile(v, 95):.3f}  {v.max():.3f}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("mode", choices=["nll", "relevance"])
    ap.add_argument("--data", type=Path, required=True)
    ap.add_argument("--skip", type=int, default=0)
    ap.add_argument("--users", type=int, default=10)
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--out", type=Path, required=True)
    a = ap.parse_args()
    users = D.load_users(a.data, a.skip + a.users)[a.skip:]
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        ev = Evaluator(None, None, 0, Path(tmp), threads=a.threads, generate=False, chat=0)
        for u in users:
            store, emb, _ = ev.profile(u)
            rows += (measure_nll if a.mode == "nll" else measure_relevance)(ev, u, emb)
            store.close()
            print(u["user"], file=sys.stderr, flush=True)
    a.out.parent.mkdir(parents=True, exist_ok=True)
    a.out.write_text("".join(json.dumps(r) + "\n" for r in rows))
    summarize(a.mode, rows)


if __name__ == "__main__":
    main()
