"""Is an answer a degenerate loop? One definition, used by the chat-quality measurement (issue 13).

A person reads a loop as broken; the 135M model under greedy decoding loops
("X. X. X." or a sentence over and over). Two signals, either one flags:

- a **repeated n-gram**: some word 6-gram occurs >= 3 times. A sentence of 6+
  words said three times always does, a shorter unit said four times too
  ("improve the speed" x4). Not a 4-gram (the issue's first idea): a normal
  abstract says "the problem of learning from" three times (tests/test_quality.py);
- **low distinct-2**: distinct word bigrams / all bigrams < 0.5 over an answer of
  >= 20 bigrams (short loops of 1-3 words that no 4-gram catches, e.g. "very
  very very ...", "the the the").

Words are lowercased runs of letters (digits dropped), so punctuation, spacing
and list numbering ("1. ... 2. ...") do not hide a repeated sentence.
"""
from __future__ import annotations

import json
import re
from collections import Counter
from dataclasses import asdict, dataclass, replace
from pathlib import Path

from .prompts import ANSWER_TOKENS

NGRAM = 6
MAX_REPEATS = 2           # a 6-gram may occur twice; the third time is a loop
MIN_DISTINCT2 = 0.5
MIN_BIGRAMS = 20          # distinct-2 says little about a short answer

_WORD = re.compile(r"[^\W\d_]+", re.UNICODE)


@dataclass(frozen=True)
class LoopCheck:
    looped: bool
    top_ngram: str            # the most repeated 6-gram ("" when the answer has none)
    top_count: int
    distinct2: float          # 1.0 for answers with fewer than MIN_BIGRAMS bigrams
    words: int


def words(text: str) -> list[str]:
    return [w.lower() for w in _WORD.findall(text)]


def check(text: str) -> LoopCheck:
    ws = words(text)
    grams = Counter(tuple(ws[i:i + NGRAM]) for i in range(len(ws) - NGRAM + 1))
    top, count = grams.most_common(1)[0] if grams else ((), 0)
    bigrams = [tuple(ws[i:i + 2]) for i in range(len(ws) - 1)]
    d2 = len(set(bigrams)) / len(bigrams) if len(bigrams) >= MIN_BIGRAMS else 1.0
    return LoopCheck(count > MAX_REPEATS or d2 < MIN_DISTINCT2, " ".join(top), count, round(d2, 4), len(ws))


def looped(text: str) -> bool:
    return check(text).looped


# --- measuring a prompt set through the app's own answer path ---------------------------------------------
PROMPTS = "prompts/chat-quality.jsonl"      # under assets/: everyday chat, writing, the profile's topics, both tasks


def load_prompts(path: Path | None = None) -> list[dict]:
    """[{id, kind, content}]: task items rendered with the trained task prompts (app.prompts.task_messages)."""
    from .paths import assets_dir
    from .prompts import task_messages
    path = path or assets_dir() / PROMPTS
    out = []
    for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        try:
            p = json.loads(line)
            content = p["prompt"] if "prompt" in p else \
                task_messages(p["task"], p.get("title", ""), p.get("text", ""))[0]["content"]
            out.append({"id": str(p.get("id", n)), "kind": p.get("kind", p.get("task", "prompt")), "content": content})
        except (ValueError, KeyError, TypeError) as e:
            raise ValueError(f"{path}:{n}: not a prompt line ({e}); expected {{\"prompt\": ...}} or "
                             f"{{\"task\": \"headline\"|\"writing\", \"title\"/\"text\": ...}}") from e
    return out


SIDES = ("base", "personalized")


def measure(tailor, prompts: list[dict], *, sampling=None, max_tokens: int = ANSWER_TOKENS, scale: float | None = None,
            progress=None, sides: tuple[str, ...] = SIDES) -> dict:
    """Each prompt answered by the base model and the personalized one (the latest adapter at ``scale``), through
    ``Tailor.ask`` (the code a person runs), each prompt with its own fixed seed so the table reproduces.
    ``sides`` may leave out the base model (it does not depend on ``scale``) when comparing strengths.
    Returns {"rows": [...], "summary": {side: {answers, loops, loop_share, mean_words}}}."""
    sampling = sampling or tailor.sampling()      # the chat default unless the caller measures another setting
    rows = []
    unknown = set(sides) - set(SIDES)
    if unknown or not sides:
        raise ValueError(f"sides must be among {SIDES}, got {sides}")
    total = len(sides) * len(prompts)
    for side in sides:
        use = side == "personalized"
        for i, p in enumerate(prompts):
            s = replace(sampling, seed=i) if sampling.temperature > 0 else sampling
            ans = tailor.ask(p["content"], use_adapter=use, scale=scale, max_tokens=max_tokens, sampling=s, rag=False)
            c = check(ans.text)
            rows.append({"side": side, "id": p["id"], "kind": p["kind"], "looped": c.looped, "words": c.words,
                         "top_ngram": c.top_ngram, "top_count": c.top_count, "distinct2": c.distinct2,
                         "adapter_version": ans.adapter_version, "strength": ans.strength, "your_words": ans.words,
                         "text": ans.text})
            if progress:
                progress(len(rows), total)
    summary = {}
    for side in sides:
        rs = [r for r in rows if r["side"] == side]
        loops = sum(r["looped"] for r in rs)
        summary[side] = {"answers": len(rs), "loops": loops, "loop_share": round(loops / max(1, len(rs)), 4),
                         "mean_words": round(sum(r["words"] for r in rs) / max(1, len(rs)), 1)}
    return {"rows": rows, "summary": summary, "sampling": asdict(sampling), "max_tokens": max_tokens, "scale": scale,
            "adapter_version": next((r["adapter_version"] for r in rows if r["side"] == "personalized"), None)}
