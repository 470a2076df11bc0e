"""Read one file's bytes safely and decode them as text; the readers of the text formats.

Every per-format reader in :mod:`app.ingest`'s table needs the same few things:
the error type whose message a person can act on (:class:`IngestError`), the
two size limits, a read that never takes more than the limit, and decoding
that refuses binary data instead of passing mojibake on. They live here, at the
bottom of the ingest modules, so that :mod:`app.extract_email` and
:mod:`app.extract_office` can use them and :mod:`app.ingest` can dispatch to
all the readers without an import cycle; ``app.ingest`` re-exports the error
and the limits as its own API, and callers import them from there.

The readers here are for formats that are text to begin with (plain text,
Markdown, HTML, JSON and JSON Lines). Each returns ``(title or "", raw text)``;
:func:`app.ingest.extract` normalises the text and turns any unexpected
exception into an ``IngestError``.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import NoReturn

MAX_FILE_BYTES: int = 50 * 1024 * 1024
MAX_TEXT_CHARS: int = 5_000_000

# Deeper JSON than this is ignored: real exports are shallow, and a cap keeps
# the walk cheap on adversarial input.
MAX_JSON_DEPTH = 64

# Keys (compared case-insensitively) whose string values are a person's writing.
JSON_TEXT_KEYS = frozenset(
    {"text", "content", "body", "full_text", "note", "message", "abstract"}
)
JSON_TITLE_KEYS = ("title", "subject")


class IngestError(Exception):
    """A file could not be turned into text; ``str(err)`` is a user-facing line."""


# --------------------------------------------------------------------------
# Reading within the limits, and errors as one line
# --------------------------------------------------------------------------


def read_bytes(path: Path) -> bytes:
    """Read at most the size limit, in case the file grew after app.ingest checked its size."""
    with path.open("rb") as fh:
        data = fh.read(MAX_FILE_BYTES + 1)
    if len(data) > MAX_FILE_BYTES:
        raise IngestError(f"file is too large (limit {MAX_FILE_BYTES // 2**20} MB)")
    if not data:
        raise IngestError("file is empty")
    return data


def detail(exc: BaseException) -> str:
    """A parser's complaint as one short line, for "could not read X: ..." messages."""
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text if len(text) <= 160 else text[:157] + "..."


def too_much_text(n: int) -> NoReturn:
    raise IngestError(
        f"too much text: {n:,} characters (limit {MAX_TEXT_CHARS:,}); "
        "split the file into smaller parts"
    )


# --------------------------------------------------------------------------
# Text decoding
# --------------------------------------------------------------------------


_BOMS = (  # UTF-32 first: its LE BOM starts with the UTF-16 LE BOM.
    (b"\xff\xfe\x00\x00", "utf-32"),
    (b"\x00\x00\xfe\xff", "utf-32"),
    (b"\xef\xbb\xbf", "utf-8-sig"),
    (b"\xff\xfe", "utf-16"),
    (b"\xfe\xff", "utf-16"),
)
# Controls that never appear in real prose (tab, newlines, form feed excluded).
_BINARY_CHARS = re.compile(r"[\x00-\x08\x0b\x0e-\x1f\x7f\ufffd]")
_BINARY_RATIO = 0.10
# Western prose in an 8-bit code page is mostly ASCII; above this share of
# high bytes the file is in some encoding we would only turn into mojibake.
_LEGACY_HIGH_BYTE_RATIO = 0.30
_HIGH_BYTES = bytes(range(0x80, 0x100))
_NON_ASCII_DECODED = re.compile(r"[^\x00-\x7f\ufffd]")


def decode_text(data: bytes) -> str:
    """Decode bytes from a "text" file, refusing data that is really binary.

    A BOM decides the encoding when present; otherwise UTF-8 is tried. NUL
    bytes, or more than 10% control/undecodable characters, mean binary data.
    Invalid UTF-8 with *no* valid multi-byte sequence is most likely a legacy
    Western file, so it is read as Windows-1252 instead of turning every
    accented letter into U+FFFD; if such a file is mostly high bytes it is some
    other legacy encoding (Cyrillic, CJK...) that we cannot guess reliably.
    """
    for bom, codec in _BOMS:
        if data.startswith(bom):
            text = data.decode(codec, errors="replace")
            _reject_binary(text)
            return text
    if b"\x00" in data:
        raise IngestError("looks like binary data, not text")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        text = data.decode("utf-8", errors="replace")
        if not _NON_ASCII_DECODED.search(text):
            text = _decode_legacy(data)
    _reject_binary(text)
    return text


def _decode_legacy(data: bytes) -> str:
    high = len(data) - len(data.translate(None, _HIGH_BYTES))
    if high / len(data) > _LEGACY_HIGH_BYTE_RATIO:
        _reject_binary(data.decode("cp1252", errors="replace"))
        raise IngestError(
            "text is not UTF-8 and its encoding could not be recognised; "
            "save it as UTF-8 and import again"
        )
    return data.decode("cp1252", errors="replace")


def _reject_binary(text: str) -> None:
    """Raise if decoded text is dominated by characters prose never has."""
    if "\x00" in text:
        raise IngestError("looks like binary data, not text")
    bad = len(text) - len(_BINARY_CHARS.sub("", text))
    if text and bad / len(text) > _BINARY_RATIO:
        raise IngestError("looks like binary data, not text")


# --------------------------------------------------------------------------
# Per-format readers: each returns (title or "", raw text)
# --------------------------------------------------------------------------


def read_txt(path: Path) -> tuple[str, str]:
    return "", decode_text(read_bytes(path))


_MD_IMAGE = re.compile(r"!\[([^\]\n]*)\]\([^)\n]*\)")
_MD_LINK = re.compile(r"\[([^\]\n]*)\]\([^)\n]*\)")
_MD_H1 = re.compile(r"^#[ \t]+(.+?)[ \t#]*$", re.MULTILINE)


def read_markdown(path: Path) -> tuple[str, str]:
    """Keep Markdown mostly as written; only link/image targets are dropped,
    since URLs are noise for learning someone's writing style."""
    text = decode_text(read_bytes(path))
    text = _MD_IMAGE.sub(r"\1", text)
    text = _MD_LINK.sub(r"\1", text)
    heading = _MD_H1.search(text)
    return (heading.group(1) if heading else ""), text


# HTML ---------------------------------------------------------------------

_HTML_DROP = frozenset({"script", "style", "nav", "noscript", "template", "head"})
_HTML_BLOCKS = frozenset({
    "p", "div", "section", "article", "main", "aside", "header", "footer",
    "h1", "h2", "h3", "h4", "h5", "h6", "li", "ul", "ol", "dl", "dt", "dd",
    "blockquote", "pre", "table", "tr", "figure", "figcaption", "hr",
    "address", "details", "summary", "form", "fieldset",
})
# Layout markers emitted while walking the tree. They are control characters,
# so a stray one in the source only adds a break and normalise() removes it.
_PARA, _LINE = "\x1e", "\x1f"
_HTML_SPACE = re.compile(r"[^\S\x1e\x1f]+")


def html_to_text(markup: str | bytes) -> tuple[str, str]:
    """Return (title, text) of an HTML document, paragraphs kept.

    Source whitespace is insignificant in HTML, so it is collapsed and line
    structure comes only from block elements and <br>. lxml is used because
    html.parser can hit RecursionError on deeply nested markup; the error is
    still caught in case some tree operation recurses.
    """
    from bs4 import BeautifulSoup  # imported lazily: only HTML needs it

    try:
        try:
            soup = BeautifulSoup(markup, "lxml")
        except Exception as exc:  # bs4.FeatureNotFound when lxml is missing
            if type(exc).__name__ != "FeatureNotFound":
                raise
            soup = BeautifulSoup(markup, "html.parser")
        title = soup.title.get_text() if soup.title else ""
        raw = _html_walk(soup)
        if not title and (h1 := soup.find("h1")):
            title = h1.get_text()
    except RecursionError as exc:
        raise IngestError("HTML is nested too deeply to read") from exc
    raw = _HTML_SPACE.sub(" ", raw)
    return title, raw.replace(_PARA, "\n\n").replace(_LINE, "\n")


def _html_walk(soup) -> str:
    """Visible text with layout markers, in one linear pass over the tree.

    Mutating the tree (insert_before/decompose per block) is quadratic in
    bs4 for wide or deep documents, so instead we walk ``descendants`` and
    recover "end of element" events with a stack: in document order a node's
    parent is always open, so everything above it on the stack has closed.
    """
    from bs4.element import NavigableString, PreformattedString, Tag

    out: list[str] = []
    open_tags: list = []
    dropped = 0  # open elements whose content is not prose (script, nav, ...)

    def close(tag) -> None:
        nonlocal dropped
        if tag.name in _HTML_DROP:
            dropped -= 1
        elif tag.name in _HTML_BLOCKS and not dropped:
            out.append(_PARA)

    for node in soup.descendants:
        while open_tags and open_tags[-1] is not node.parent:
            close(open_tags.pop())
        if isinstance(node, Tag):
            open_tags.append(node)
            if node.name in _HTML_DROP:
                dropped += 1
            elif not dropped and node.name in _HTML_BLOCKS:
                out.append(_PARA)
            elif not dropped and node.name == "br":
                out.append(_LINE)
        elif (not dropped and isinstance(node, NavigableString)
              and not isinstance(node, PreformattedString)):  # comments, doctype...
            out.append(str(node))
    while open_tags:
        close(open_tags.pop())
    return "".join(out)


def read_html(path: Path) -> tuple[str, str]:
    # Bytes, not str: bs4 then honours <meta charset> and BOMs itself.
    data = read_bytes(path)
    if b"\x00" in data and not data.startswith((b"\xff\xfe", b"\xfe\xff", b"\x00\x00\xfe\xff")):
        raise IngestError("looks like binary data, not HTML")
    return html_to_text(data)


# JSON ---------------------------------------------------------------------

_HTML_HINT = re.compile(r"<(p|br|div|span|a|em|strong|b|i)\b[^>]*>", re.IGNORECASE)


def _json_texts(value: object) -> list[str]:
    """Strings stored under text-like keys, in document order, depth-capped.

    Iterative rather than recursive so hostile nesting cannot blow the stack.
    Strings that look like HTML (Mastodon, WordPress exports) are reduced to text.
    """
    found: list[str] = []
    stack: list[tuple[object, int, bool]] = [(value, 0, False)]
    while stack:
        node, depth, under_text_key = stack.pop()
        if isinstance(node, str):
            if under_text_key and node.strip():
                found.append(html_to_text(node)[1] if _HTML_HINT.search(node) else node)
        elif depth >= MAX_JSON_DEPTH:
            continue
        elif isinstance(node, dict):
            children = [(v, depth + 1, str(k).lower() in JSON_TEXT_KEYS) for k, v in node.items()]
            stack.extend(reversed(children))
        elif isinstance(node, list):
            stack.extend((v, depth + 1, under_text_key) for v in reversed(node))
    return found


def _json_title(value: object) -> str:
    if not isinstance(value, dict):
        return ""
    lowered = {str(k).lower(): v for k, v in value.items()}
    for key in JSON_TITLE_KEYS:
        if isinstance(lowered.get(key), str):
            return lowered[key]
    return ""


def _json_text_or_fail(values: list[object]) -> str:
    texts = [t for v in values for t in _json_texts(v)]
    if not texts:
        keys = ", ".join(sorted(JSON_TEXT_KEYS))
        raise IngestError(f"no text found in JSON (looked for keys: {keys})")
    return "\n\n".join(texts)


def _load_json(data: bytes | str) -> object:
    try:
        return json.loads(data)
    except json.JSONDecodeError as exc:
        raise IngestError(f"not valid JSON: {exc.msg} (line {exc.lineno}, column {exc.colno})") from exc
    except RecursionError as exc:
        raise IngestError("JSON is nested too deeply to read") from exc
    except UnicodeDecodeError as exc:
        raise IngestError("not valid JSON: the file is not UTF-8/16/32 text") from exc


def read_json(path: Path) -> tuple[str, str]:
    value = _load_json(read_bytes(path))
    return _json_title(value), _json_text_or_fail([value])


def read_jsonl(path: Path) -> tuple[str, str]:
    """One JSON value per line; bad lines are skipped unless every line is bad."""
    lines = [ln for ln in decode_text(read_bytes(path)).splitlines() if ln.strip()]
    values, first_error = [], None
    for line in lines:
        try:
            values.append(_load_json(line))
        except IngestError as exc:
            first_error = first_error or str(exc)
    if not lines:
        raise IngestError("no text found in JSON Lines file (all lines are blank)")
    if not values:
        raise IngestError(f"no valid JSON lines ({len(lines)} line(s); first problem: {first_error})")
    return "", _json_text_or_fail(values)
