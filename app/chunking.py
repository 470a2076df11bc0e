"""Split text into chunks for embedding.

This is the one chunker: the app chunks imported documents with it and the
hypernetwork is trained on profiles chunked by it, so a profile at run time
looks like the profiles seen in training. Never copy it.

Chunks follow sentence boundaries and hold at most ``max_words`` words, which
keeps them inside all-MiniLM-L6-v2's 256-wordpiece window (about 1.3 wordpieces
per English word, so 160 words leaves room for long technical words).
"""
from __future__ import annotations

import re

MAX_WORDS = 160
MIN_WORDS = 8  # a trailing fragment shorter than this joins the previous chunk

_TITLE_HEADING = re.compile(r"\A\s*#+[ \t]*(.*?)[ \t#]*(?:\n|\Z)")    # a Markdown heading as the first line
_SENTENCE_END = re.compile(r"(?<=[.!?…])\s+(?=[\"'(\[]?[A-Z0-9])")


def _sentences(paragraph: str) -> list[str]:
    return [s for s in _SENTENCE_END.split(paragraph) if s.strip()]


def _split_long(words: list[str], max_words: int) -> list[list[str]]:
    return [words[i:i + max_words] for i in range(0, len(words), max_words)]


def chunk_text(text: str, max_words: int = MAX_WORDS) -> list[str]:
    """Greedy packing of whole sentences into chunks of <= max_words words.

    Paragraph breaks are soft boundaries: a chunk may span paragraphs, so short
    notes are not scattered into one-line chunks. A sentence longer than
    max_words (tables, code, run-on text) is cut at word boundaries.
    """
    chunks: list[list[str]] = []
    current: list[str] = []
    for paragraph in re.split(r"\n\s*\n", text):
        for sentence in _sentences(" ".join(paragraph.split())):
            words = sentence.split()
            if len(words) > max_words:
                if current:
                    chunks.append(current)
                    current = []
                pieces = _split_long(words, max_words)
                chunks.extend(pieces[:-1])
                current = pieces[-1]
                continue
            if len(current) + len(words) > max_words:
                chunks.append(current)
                current = []
            current = current + words
    if current:
        if chunks and len(current) < MIN_WORDS and len(chunks[-1]) + len(current) <= max_words:
            chunks[-1] = chunks[-1] + current
        else:
            chunks.append(current)
    return [" ".join(c) for c in chunks]


def document_text(title: str, text: str) -> str:
    """The text of one profile item as the chunker sees it: title, blank line, body.

    Training data items (title + text) and imported documents (extracted title +
    text) both go through here, so both sides agree on what a chunk contains: a
    Markdown note that opens with its title heading ("# Title") chunks as the
    same item given as (title, text) does, without the heading's marks.
    """
    title = " ".join(title.split())
    if not title:
        return text
    heading = _TITLE_HEADING.match(text)
    if heading and " ".join(heading.group(1).split()) == title:    # the heading is the title: drop its marks
        text = text[heading.end():].lstrip()
    if text.lstrip("# \t").startswith(title):    # the text already opens with its title
        return text
    return f"{title}\n\n{text}"


def chunk_document(title: str, text: str, max_words: int = MAX_WORDS) -> list[str]:
    return chunk_text(document_text(title, text), max_words)
