"""Turn a person's documents into clean plain text.

This is the only module that touches user files of arbitrary origin, so it is
defensive by design: every *expected* way a file can be bad (empty, too big,
binary, corrupt, encrypted, a zip bomb, not the format its name claims) ends in
an :class:`IngestError` whose message is one line a non-technical person can
act on. Unexpected parser failures are converted to ``IngestError`` too, so the
UI can list "skipped: <reason>" per file instead of showing a traceback.

Public API: :data:`SUPPORTED_SUFFIXES`, :data:`MAX_FILE_BYTES`,
:data:`MAX_TEXT_CHARS`, :class:`IngestError`, :class:`Extracted`,
:func:`iter_files`, :func:`extract` and :func:`normalise`.
"""

from __future__ import annotations

import email
import email.policy
import errno
import io
import json
import mailbox
import os
import re
import stat
import zipfile
import zlib
from dataclasses import dataclass
from email.message import EmailMessage
from pathlib import Path
from typing import Callable, Iterable, Iterator, NoReturn

SUPPORTED_SUFFIXES: frozenset[str] = frozenset(
    {".txt", ".md", ".markdown", ".html", ".htm", ".pdf", ".docx",
     ".eml", ".mbox", ".json", ".jsonl"}
)
MAX_FILE_BYTES: int = 50 * 1024 * 1024
MAX_TEXT_CHARS: int = 5_000_000

# A .docx is a zip; these bound what we are willing to inflate.
MAX_DOCX_UNCOMPRESSED_BYTES = 200 * 1024 * 1024
MAX_DOCX_COMPRESSION_RATIO = 100
# Deeper JSON than this is ignored: real exports are shallow, and a cap keeps
# the walk cheap on adversarial input.
MAX_JSON_DEPTH = 64
MAX_TITLE_CHARS = 200

# Keys (compared case-insensitively) whose string values are a person's writing.
JSON_TEXT_KEYS = frozenset(
    {"text", "content", "body", "full_text", "note", "message", "abstract"}
)
JSON_TITLE_KEYS = ("title", "subject")

_KIND = {
    ".txt": "text file", ".md": "Markdown file", ".markdown": "Markdown file",
    ".html": "HTML file", ".htm": "HTML file", ".pdf": "PDF",
    ".docx": "Word document", ".eml": "email", ".mbox": "mailbox",
    ".json": "JSON file", ".jsonl": "JSON Lines file",
}


class IngestError(Exception):
    """A file could not be turned into text; ``str(err)`` is a user-facing line."""


@dataclass(frozen=True)
class Extracted:
    """Text pulled out of one document."""

    title: str
    text: str


# --------------------------------------------------------------------------
# Normalisation
# --------------------------------------------------------------------------

# C0/C1 control characters (tab and newline are handled separately) and lone
# surrogates, which can come out of JSON "\ud800" escapes and would make the
# text unencodable later.
_CONTROL_CHARS = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f\ud800-\udfff]")
_BLANK_RUN = re.compile(r"\n{3,}")


def normalise(text: str) -> str:
    """Return ``text`` with tidy whitespace and no control characters.

    Every line break flavour (\\r\\n, \\r, \\v, \\f, U+2028, ...) becomes \\n;
    within a line, runs of whitespace (tabs included) become one space and the
    line is stripped; paragraphs stay separated by exactly one blank line.
    The function is idempotent, so callers may apply it more than once.
    """
    lines = []
    for line in text.splitlines():
        line = _CONTROL_CHARS.sub("", line)
        lines.append(" ".join(line.split()))
    return _BLANK_RUN.sub("\n\n", "\n".join(lines)).strip()


def _one_line(text: str) -> str:
    """Squash a title candidate into a single short line."""
    return " ".join(_CONTROL_CHARS.sub("", text).split())[:MAX_TITLE_CHARS].strip()


# --------------------------------------------------------------------------
# File access and text decoding
# --------------------------------------------------------------------------


def _check_file(path: Path) -> None:
    """Refuse missing, special, empty or oversized files before reading a byte."""
    try:
        st = path.stat()
    except OSError as exc:
        raise IngestError(_os_reason(exc, path)) from exc
    if not stat.S_ISREG(st.st_mode):
        raise IngestError("not a regular file")
    if st.st_size == 0:
        raise IngestError("file is empty")
    if st.st_size > MAX_FILE_BYTES:
        raise IngestError(
            f"file is too large: {st.st_size / 2**20:.1f} MB "
            f"(limit {MAX_FILE_BYTES // 2**20} MB); split it into smaller files"
        )


def _read_bytes(path: Path) -> bytes:
    """Read at most the size limit, in case the file grew after _check_file."""
    with path.open("rb") as fh:
        data = fh.read(MAX_FILE_BYTES + 1)
    if len(data) > MAX_FILE_BYTES:
        raise IngestError(f"file is too large (limit {MAX_FILE_BYTES // 2**20} MB)")
    if not data:
        raise IngestError("file is empty")
    return data


_ACCESS_ERRNOS = frozenset({errno.ENOENT, errno.ELOOP, errno.EACCES, errno.EPERM})


def _os_reason(exc: OSError, path: Path) -> str:
    """Describe an OSError without a traceback, naming broken links plainly."""
    if exc.errno == errno.ELOOP:
        return "symbolic link loop (the link points back at itself)"
    if exc.errno == errno.ENOENT:
        if path.is_symlink():
            return "broken symbolic link (its target does not exist)"
        return "file not found"
    if exc.errno in (errno.EACCES, errno.EPERM):
        return "permission denied"
    return f"cannot read file: {exc.strerror or exc}"


def _detail(exc: BaseException) -> str:
    """A parser's complaint as one short line, for "could not read X: ..." messages."""
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text if len(text) <= 160 else text[:157] + "..."


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


def _read_txt(path: Path) -> tuple[str, str]:
    return "", decode_text(_read_bytes(path))


_MD_IMAGE = re.compile(r"!\[([^\]\n]*)\]\([^)\n]*\)")
_MD_LINK = re.compile(r"\[([^\]\n]*)\]\([^)\n]*\)")
_MD_H1 = re.compile(r"^#[ \t]+(.+?)[ \t#]*$", re.MULTILINE)


def _read_markdown(path: Path) -> tuple[str, str]:
    """Keep Markdown mostly as written; only link/image targets are dropped,
    since URLs are noise for learning someone's writing style."""
    text = decode_text(_read_bytes(path))
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


def _read_html(path: Path) -> tuple[str, str]:
    # Bytes, not str: bs4 then honours <meta charset> and BOMs itself.
    data = _read_bytes(path)
    if b"\x00" in data and not data.startswith((b"\xff\xfe", b"\xfe\xff", b"\x00\x00\xfe\xff")):
        raise IngestError("looks like binary data, not HTML")
    return html_to_text(data)


# PDF ----------------------------------------------------------------------


def _read_pdf(path: Path) -> tuple[str, str]:
    """Join the text of all pages; refuse encrypted and image-only PDFs."""
    import pypdf
    from pypdf.errors import PdfReadError

    try:
        reader = pypdf.PdfReader(io.BytesIO(_read_bytes(path)))
        _unlock_pdf(reader)
        pages = reader.pages
        page_count = len(pages)
    except PdfReadError as exc:
        raise IngestError(f"PDF is damaged or incomplete: {_detail(exc)}") from exc
    if page_count == 0:
        raise IngestError("PDF has no pages (it may be damaged)")
    texts, total, failure = [], 0, None
    for page in pages:
        try:
            page_text = page.extract_text() or ""
        except Exception as exc:  # one bad page should not cost the whole document
            failure = failure or exc
            continue
        texts.append(page_text)
        total += len(page_text)
        if total > MAX_TEXT_CHARS * 2:  # normalisation shrinks text, so margin
            _too_much_text(total)
    text = "\n\n".join(texts)
    if failure is not None and not texts:
        raise IngestError(f"PDF is damaged: no page could be read ({_detail(failure)})")
    if not text.strip():
        raise IngestError(
            f"PDF has no extractable text ({page_count} page(s); scanned image?); "
            "run it through OCR first"
        )
    return _pdf_title(reader), text


def _unlock_pdf(reader) -> None:
    """Many 'encrypted' PDFs only restrict printing and open with an empty password."""
    if not reader.is_encrypted:
        return
    from pypdf import PasswordType
    from pypdf.errors import DependencyError

    try:
        result = reader.decrypt("")
    except DependencyError as exc:
        raise IngestError(
            "PDF uses encryption that needs the 'cryptography' package to open"
        ) from exc
    if result == PasswordType.NOT_DECRYPTED:
        raise IngestError(
            "PDF is encrypted (password-protected); remove the password and import again"
        )


def _pdf_title(reader) -> str:
    try:
        title = reader.metadata.title if reader.metadata else None
    except Exception:  # broken /Info dictionaries are common and harmless
        return ""
    return title if isinstance(title, str) else ""


# DOCX ---------------------------------------------------------------------


# What zipfile raises for corrupt archives (a bad offset surfaces as OSError
# EINVAL, a missing member as KeyError).
_DAMAGED_ZIP = (zipfile.BadZipFile, zlib.error, EOFError, OSError, ValueError, KeyError)


def _check_docx_zip(path: Path) -> None:
    """Refuse non-zips and zip bombs *before* python-docx inflates anything.

    Declared sizes are trustworthy enough here because Python's zipfile stops
    at the declared size and fails the CRC check if the data runs longer.
    """
    if not zipfile.is_zipfile(path):
        raise IngestError(
            "not a valid .docx file (not a zip archive); if it is an old .doc "
            "file, save it as .docx first"
        )
    try:
        with zipfile.ZipFile(path) as zf:
            infos = zf.infolist()
    except _DAMAGED_ZIP as exc:
        raise IngestError(f"Word document is damaged: {_detail(exc)}") from exc
    unpacked = sum(i.file_size for i in infos)
    packed = sum(i.compress_size for i in infos)
    if unpacked > MAX_DOCX_UNCOMPRESSED_BYTES:
        raise IngestError(
            f"Word document unpacks to {unpacked / 2**20:.0f} MB "
            f"(limit {MAX_DOCX_UNCOMPRESSED_BYTES // 2**20} MB); refusing (zip bomb?)"
        )
    if unpacked / max(packed, 1) > MAX_DOCX_COMPRESSION_RATIO:
        raise IngestError(
            f"Word document is suspiciously compressed ({unpacked // max(packed, 1)}:1, "
            f"limit {MAX_DOCX_COMPRESSION_RATIO}:1); refusing (zip bomb?)"
        )
    if "[Content_Types].xml" not in {i.filename for i in infos}:
        raise IngestError("not a valid .docx file (the zip holds no Word document)")


def _read_docx(path: Path) -> tuple[str, str]:
    """Body paragraphs and table cells in document order."""
    import docx
    from docx.opc.exceptions import PackageNotFoundError
    from docx.table import Table

    _check_docx_zip(path)
    try:
        document = docx.Document(str(path))
    except PackageNotFoundError as exc:
        raise IngestError("not a valid .docx file (no Word document inside the zip)") from exc
    except _DAMAGED_ZIP as exc:
        raise IngestError(f"Word document is damaged: {_detail(exc)}") from exc
    blocks: list[str] = []
    heading = ""
    for item in document.iter_inner_content():
        if isinstance(item, Table):
            blocks.extend(_docx_table_lines(item))
            continue
        blocks.append(item.text)
        if not heading and item.text.strip() and _is_heading(item):
            heading = item.text
    return _docx_core_title(document) or heading, "\n\n".join(blocks)


def _docx_core_title(document) -> str:
    try:
        return (document.core_properties.title or "").strip()
    except Exception:  # a broken docProps/core.xml should not cost the body text
        return ""


def _is_heading(paragraph) -> bool:
    try:
        name = paragraph.style.name or ""
    except Exception:  # missing/odd style definitions
        return False
    return name == "Title" or name.startswith("Heading")


def _docx_table_lines(table) -> list[str]:
    """One line per row; merged cells are reported once (python-docx repeats them)."""
    lines = []
    for row in table.rows:
        seen, cells = set(), []
        for cell in row.cells:
            if id(cell._tc) in seen:
                continue
            seen.add(id(cell._tc))
            if cell.text.strip():
                cells.append(cell.text)
        if cells:
            lines.append(" | ".join(cells))
    return lines


# Email --------------------------------------------------------------------


def _message_subject(msg: EmailMessage) -> str:
    """Subject, tolerating headers the modern policy refuses to parse."""
    try:
        return str(msg.get("subject") or "")
    except Exception:
        raw = [value for name, value in msg.raw_items() if name.lower() == "subject"]
        return str(raw[0]) if raw else ""


def _message_body(msg: EmailMessage) -> str:
    """The person's writing: text/plain preferred, else HTML reduced to text.

    Headers (From, Date, ...) are deliberately left out.
    """
    part = msg.get_body(preferencelist=("plain", "html"))
    if part is None:  # e.g. only text parts marked as attachments or odd types
        part = next(
            (p for p in msg.walk() if p.get_content_maintype() == "text"), None
        )
    if part is None:
        return ""
    content = _part_text(part)
    if part.get_content_subtype() == "html":
        return html_to_text(content)[1]
    return content


def _part_text(part: EmailMessage) -> str:
    """Decode a text part ourselves: get_content() raises on unknown charsets
    and turns non-ASCII into U+FFFD when the charset is missing."""
    payload = part.get_payload(decode=True) or b""
    charset = part.get_content_charset()
    if charset:
        try:
            return payload.decode(charset, errors="replace")
        except LookupError:  # unknown charset name: fall through to guessing
            pass
    return decode_text(payload) if payload else ""


def _parse_email(data: bytes) -> EmailMessage:
    if b"\x00" in data:
        raise IngestError("looks like binary data, not an email")
    msg = email.message_from_bytes(data, policy=email.policy.default)
    if not msg.keys():
        raise IngestError("not an email message: no headers found")
    return msg


def _read_eml(path: Path) -> tuple[str, str]:
    msg = _parse_email(_read_bytes(path))
    text = _message_body(msg)
    if not text.strip():
        raise IngestError("email has no readable text body")
    return _message_subject(msg), text


def _read_mbox(path: Path) -> tuple[str, str]:
    """Every message body, in file order; unreadable messages are skipped."""
    box = mailbox.mbox(str(path), create=False)
    try:
        bodies, total, keys = [], 0, box.keys()
        for key in keys:
            try:
                body = _message_body(_parse_email(box.get_bytes(key)))
            except Exception:
                continue
            if body.strip():
                bodies.append(body)
                total += len(body)
                if total > MAX_TEXT_CHARS * 2:
                    _too_much_text(total)
    finally:
        box.close()
    if not keys:
        raise IngestError("no messages found (an mbox file has lines starting with 'From ')")
    if not bodies:
        raise IngestError(f"none of the {len(keys)} message(s) has readable text")
    noun = "message" if len(bodies) == 1 else "messages"
    return f"{path.stem} ({len(bodies)} {noun})", "\n\n".join(bodies)


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


def _read_json(path: Path) -> tuple[str, str]:
    value = _load_json(_read_bytes(path))
    return _json_title(value), _json_text_or_fail([value])


def _read_jsonl(path: Path) -> tuple[str, str]:
    """One JSON value per line; bad lines are skipped unless every line is bad."""
    lines = [ln for ln in decode_text(_read_bytes(path)).splitlines() if ln.strip()]
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


# --------------------------------------------------------------------------
# Public entry points
# --------------------------------------------------------------------------

_READERS: dict[str, Callable[[Path], tuple[str, str]]] = {
    ".txt": _read_txt, ".md": _read_markdown, ".markdown": _read_markdown,
    ".html": _read_html, ".htm": _read_html, ".pdf": _read_pdf,
    ".docx": _read_docx, ".eml": _read_eml, ".mbox": _read_mbox,
    ".json": _read_json, ".jsonl": _read_jsonl,
}


def _unsupported(suffix: str) -> IngestError:
    shown = suffix or "(no extension)"
    return IngestError(
        f"unsupported file type {shown}; supported: {', '.join(sorted(SUPPORTED_SUFFIXES))}"
    )


def _too_much_text(n: int) -> NoReturn:
    raise IngestError(
        f"too much text: {n:,} characters (limit {MAX_TEXT_CHARS:,}); "
        "split the file into smaller parts"
    )


def extract(path: Path) -> Extracted:
    """Extract the title and clean text of one file, or raise IngestError.

    The caller can always show ``str(err)`` to the user: expected failures have
    specific messages and anything unexpected becomes "could not read <kind>: ...".
    """
    path = Path(path)
    suffix = path.suffix.lower()
    reader = _READERS.get(suffix)
    if reader is None:
        raise _unsupported(suffix)
    _check_file(path)
    kind = _KIND[suffix]
    try:
        title, raw = reader(path)
    except IngestError:
        raise
    except OSError as exc:
        if exc.errno in _ACCESS_ERRNOS:  # e.g. no read permission, file vanished
            raise IngestError(_os_reason(exc, path)) from exc
        # Otherwise a parser tripped over the content (zipfile seeks, ...).
        raise IngestError(f"could not read {kind}: {_detail(exc)}") from exc
    except RecursionError as exc:
        raise IngestError(f"could not read {kind}: it is nested too deeply") from exc
    except MemoryError as exc:
        raise IngestError(f"could not read {kind}: not enough memory") from exc
    except Exception as exc:
        raise IngestError(f"could not read {kind}: {_detail(exc)}") from exc
    if len(raw) > MAX_TEXT_CHARS * 2:    # as the PDF and mbox readers: normalising seldom halves real text,
        _too_much_text(len(raw))         # and it would cost ~10 bytes per word of a hopeless 50 MB file
    text = normalise(raw)
    if not text:
        raise IngestError(f"no text found in this {kind}")
    if len(text) > MAX_TEXT_CHARS:
        _too_much_text(len(text))
    return Extracted(title=_one_line(title) or path.stem, text=text)


def iter_files(paths: Iterable[Path]) -> Iterator[tuple[Path, IngestError | None]]:
    """Expand files and folders into the supported files to import.

    Folders are walked depth-first in sorted order so imports are repeatable.
    Hidden entries are skipped inside folders (but honoured when named
    explicitly), unsupported files inside folders are skipped silently, and
    each real folder and file is visited once even when symlinks reach it
    twice. Problems are yielded as ``(path, IngestError)`` rather than raised,
    so one bad entry never stops an import.
    """
    seen_dirs: set[str] = set()
    seen_files: set[str] = set()
    for raw in paths:
        path = Path(raw)
        try:
            st = path.stat()
        except OSError as exc:
            yield path, IngestError(_os_reason(exc, path))
            continue
        if stat.S_ISDIR(st.st_mode):
            yield from _walk(path, seen_dirs, seen_files)
        elif path.suffix.lower() not in SUPPORTED_SUFFIXES:
            yield path, _unsupported(path.suffix.lower())
        elif not stat.S_ISREG(st.st_mode):
            yield path, IngestError("not a regular file")
        elif _first_visit(path, seen_files):
            yield path, None


def _first_visit(path: Path, seen: set[str]) -> bool:
    real = os.path.realpath(path)
    if real in seen:
        return False
    seen.add(real)
    return True


def _walk(
    root: Path, seen_dirs: set[str], seen_files: set[str]
) -> Iterator[tuple[Path, IngestError | None]]:
    """Iterative depth-first walk (no recursion limit on deep trees)."""
    if not _first_visit(root, seen_dirs):
        return
    stack: list[Iterator[Path]] = []
    entries, error = _list_dir(root)
    if error:
        yield root, error
    stack.append(iter(entries))
    while stack:
        path = next(stack[-1], None)
        if path is None:
            stack.pop()
            continue
        try:
            st = path.stat()
        except OSError as exc:
            yield path, IngestError(_os_reason(exc, path))
            continue
        if stat.S_ISDIR(st.st_mode):
            if not _first_visit(path, seen_dirs):
                if path.is_symlink():
                    yield path, IngestError(
                        "skipped: symbolic link to a folder that is already included (loop?)"
                    )
                continue
            entries, error = _list_dir(path)
            if error:
                yield path, error
            stack.append(iter(entries))
        elif (
            stat.S_ISREG(st.st_mode)
            and path.suffix.lower() in SUPPORTED_SUFFIXES
            and _first_visit(path, seen_files)
        ):
            yield path, None


def _list_dir(folder: Path) -> tuple[list[Path], IngestError | None]:
    """Sorted, non-hidden children of ``folder``, or the reason it can't be listed."""
    try:
        with os.scandir(folder) as it:
            names = [entry.name for entry in it if not entry.name.startswith(".")]
    except OSError as exc:
        reason = "permission denied" if isinstance(exc, PermissionError) else exc.strerror
        return [], IngestError(f"cannot open folder: {reason or exc}")
    names.sort(key=lambda n: (n.casefold(), n))
    return [folder / n for n in names], None
