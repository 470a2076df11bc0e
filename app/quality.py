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

import re
from collections import Counter
from dataclasses import dataclass

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
