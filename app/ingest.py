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

This module decides *which* files are read (walking folders, the size check
before a byte is read) and turns each reader's output into an
:class:`Extracted`; the readers themselves are per kind of format, in
:mod:`app.extract_text` (plain text, Markdown, HTML, JSON),
:mod:`app.extract_email` (.eml, .mbox) and :mod:`app.extract_office` (PDF,
.docx). ``IngestError`` and the two limits are defined in ``extract_text``,
which every reader imports and which imports nothing from here (so there is no
import cycle); they are part of this module's API and callers import them from
here.
"""

from __future__ import annotations

import errno
import os
import re
import stat
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable, Iterator

from .extract_email import read_eml, read_mbox
from .extract_office import read_docx, read_pdf
from .extract_text import (
    MAX_FILE_BYTES,
    MAX_TEXT_CHARS,
    IngestError,
    detail,
    read_html,
    read_json,
    read_jsonl,
    read_markdown,
    read_txt,
    too_much_text,
)

SUPPORTED_SUFFIXES: frozenset[str] = frozenset(
    {".txt", ".md", ".markdown", ".html", ".htm", ".pdf", ".docx",
     ".eml", ".mbox", ".json", ".jsonl"}
)
MAX_TITLE_CHARS = 200

_KIND = {
    ".txt": "text file", ".md": "Markdown file", ".markdown": "Markdown file",
    ".html": "HTML file", ".htm": "HTML file", ".pdf": "PDF",
    ".docx": "Word document", ".eml": "email", ".mbox": "mailbox",
    ".json": "JSON file", ".jsonl": "JSON Lines file",
}


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
# File access
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


# --------------------------------------------------------------------------
# Public entry points
# --------------------------------------------------------------------------

_READERS: dict[str, Callable[[Path], tuple[str, str]]] = {
    ".txt": read_txt, ".md": read_markdown, ".markdown": read_markdown,
    ".html": read_html, ".htm": read_html, ".pdf": read_pdf,
    ".docx": read_docx, ".eml": read_eml, ".mbox": read_mbox,
    ".json": read_json, ".jsonl": read_jsonl,
}


def _unsupported(suffix: str) -> IngestError:
    shown = suffix or "(no extension)"
    return IngestError(
        f"unsupported file type {shown}; supported: {', '.join(sorted(SUPPORTED_SUFFIXES))}"
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
        raise IngestError(f"could not read {kind}: {detail(exc)}") from exc
    except RecursionError as exc:
        raise IngestError(f"could not read {kind}: it is nested too deeply") from exc
    except MemoryError as exc:
        raise IngestError(f"could not read {kind}: not enough memory") from exc
    except Exception as exc:
        raise IngestError(f"could not read {kind}: {detail(exc)}") from exc
    if len(raw) > MAX_TEXT_CHARS * 2:    # as the PDF and mbox readers: normalising seldom halves real text,
        too_much_text(len(raw))          # and it would cost ~10 bytes per word of a hopeless 50 MB file
    text = normalise(raw)
    if not text:
        raise IngestError(f"no text found in this {kind}")
    if len(text) > MAX_TEXT_CHARS:
        too_much_text(len(text))
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
