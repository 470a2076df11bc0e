"""Does the adapter make everyday chat worse? The guard of issue 11 (item 4), next to the task metrics.

    python -m hypernet_onnx.chat_anchors           # regenerate assets/prompts/chat-anchors.jsonl after a base-model change
    python -m hypernet_onnx.chat_anchors --train   # and the training set of the fix (hypernet_onnx/chat-train.jsonl)

The anchors are the base model's own greedy answers (llama.cpp, the shipped GGUF, the app's plain chat prompt:
one user turn, no retrieval) to the everyday and writing prompts of the chat-quality set (app.quality.PROMPTS).
The base model finds its own answers likely; an adapter that leaves everyday chat alone keeps them so, one that
pulls every answer toward abstracts and headlines makes them less likely. The NLL of these answers under an
adapter minus under none is the drift; issue 11 allows at most +0.05 nats at the app's default strength. It
costs no decoding, so the evaluation measures it for every adapter it makes.

The fix is trained on other prompts (``TRAIN_PROMPTS``: everyday requests written for this, none of them an
anchor's): training's ``chat_kl`` keeps the adapter's next-token distribution on the base model's answers to
them close to the base model's own, and the anchors stay a held-out measurement.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

from app.models import DEFAULT_BASE
from app.paths import assets_dir
from app.prompts import request_strength
from app.quality import load_prompts

ANCHORS = "prompts/chat-anchors.jsonl"       # under assets/
KINDS = ("everyday", "writing")              # the chat-quality prompts that are not the profile's topics or tasks
TRAIN_PROMPTS = Path(__file__).with_name("chat-train-prompts.txt")     # one prompt per line
TRAIN = Path(__file__).with_name("chat-train.jsonl")                    # their base answers (``--train``)
MAX_TOKENS = 128
LIMIT = 0.05                                 # issue 11: the most an adapter may raise the anchors' NLL


def messages(prompt: str) -> list[dict]:
    """The app's prompt for a first chat turn without retrieval (Tailor._prepare with rag off, no history)."""
    return [{"role": "user", "content": prompt}]


def anchor_prompts() -> list[dict]:
    return [{"id": p["id"], "kind": p["kind"], "prompt": p["content"]} for p in load_prompts() if p["kind"] in KINDS]


def train_prompts() -> list[dict]:
    lines = [s.strip() for s in TRAIN_PROMPTS.read_text(encoding="utf-8").splitlines() if s.strip()]
    return [{"id": f"train-{i:03d}", "kind": "train", "prompt": s} for i, s in enumerate(lines, 1)]


def build(engine, prompts: list[dict]) -> list[dict]:
    """The base model's greedy answers to ``prompts``; ``engine`` must have no adapter."""
    from app.engine import GREEDY
    if engine.adapter_path is not None:
        raise ValueError("the anchors are the base model's answers: detach the adapter first")
    rows = []
    for p in prompts:
        g = engine.complete(engine.chat_prompt(messages(p["prompt"])), max_tokens=MAX_TOKENS, sampling=GREEDY)
        rows.append({**p, "base_sha256": DEFAULT_BASE.sha256,
                     "answer": g.text, "ended": g.n_tokens < MAX_TOKENS})   # False: cut at MAX_TOKENS
    return rows


def load(path: Path | None = None) -> list[dict]:
    path = path or assets_dir() / ANCHORS
    rows = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    stale = {r["base_sha256"] for r in rows} - {DEFAULT_BASE.sha256}
    if stale:
        raise ValueError(f"{path} holds another base model's answers ({sorted(stale)[0][:12]}...): regenerate "
                         "them with `python -m hypernet_onnx.chat_anchors`")
    return rows


def chat_nll(engine, anchors: list[dict], app_strength: bool = True, words=None, contexts=None) -> list[float]:
    """Per anchor, the mean NLL per token of the base model's answer under the engine's current adapter (with
    its end-of-turn token where the base model ended the answer, as the evaluation's task NLLs count it; not
    after an answer cut at MAX_TOKENS). ``app_strength``: at the strength the app gives that request
    (prompts.request_strength of the engine's strength: what a person's chat gets); False: at the engine's
    strength itself (the adapter's own drift, what training has to fix)."""
    strength = engine.scale      # ``words`` (app.words.Words): the person's words at the strength applied, then
    #                              ``contexts`` (app.knn.Contexts, with words only) as Tailor._prepare applies them
    out = []
    try:
        for a in anchors:
            if app_strength and engine.adapter_path is not None:
                engine.set_scale(request_strength(a["prompt"], strength))
            bias = words.processor(engine.scale) if words is not None and engine.adapter_path is not None else None
            bias = contexts.processor(bias) if contexts is not None and bias is not None else bias
            out.append(engine.nll(engine.tokenize(engine.chat_prompt(messages(a["prompt"]))),
                                  engine.tokenize(a["answer"] + ("<|im_end|>" if a["ended"] else "")), bias))
    finally:
        if engine.adapter_path is not None and engine.scale != strength:
            engine.set_scale(strength)
    return out


def encode(tok, template: str, anchor: dict, max_len: int) -> tuple[list[int], int]:
    """An anchor for the torch side (training's dev log), as frozen_base.encode encodes a task example: token ids
    of the prompt chat_nll scores and the answer, and the prompt length."""
    from app.prompts import render_chat
    prompt = tok(render_chat(template, messages(anchor["prompt"])), add_special_tokens=False)["input_ids"]
    target = tok(anchor["answer"] + ("<|im_end|>" if anchor["ended"] else ""), add_special_tokens=False)["input_ids"]
    return (prompt + target)[:max_len], len(prompt)


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--train", action="store_true", help=f"answer {TRAIN_PROMPTS.name} instead (-> {TRAIN.name})")
    ap.add_argument("--out", type=Path, default=None, help=f"default: assets/{ANCHORS} ({TRAIN} with --train)")
    ap.add_argument("--threads", type=int, default=None)
    a = ap.parse_args(argv)
    from app.engine import Engine
    from app.models import default_base_model_path
    engine = Engine(default_base_model_path(), n_threads=a.threads)
    rows = build(engine, train_prompts() if a.train else anchor_prompts())
    out = a.out or (TRAIN if a.train else assets_dir() / ANCHORS)
    out.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    print(f"{len(rows)} answers -> {out}")


if __name__ == "__main__":
    main()
