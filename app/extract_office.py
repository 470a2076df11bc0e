"""Read PDF and Word (.docx) documents: binary containers opened by third-party parsers.

Both formats are parsed by large libraries (pypdf, python-docx) that were not
written for hostile input, so each reader first refuses what it can recognise
cheaply (a password-protected PDF, a zip bomb posing as a .docx, an old .doc
renamed) with a message the person can act on, and only then parses. The
libraries are imported inside the readers, so they are loaded only when such a
file is read (in the app, that is inside the extraction worker of
:mod:`app.sandbox`). The readers return ``(title or "", raw text)`` for
:func:`app.ingest.extract`.
"""

from __future__ import annotations

import io
import zipfile
import zlib
from pathlib import Path

from .extract_text import MAX_TEXT_CHARS, IngestError, detail, read_bytes, too_much_text

# A .docx is a zip; these bound what we are willing to inflate.
MAX_DOCX_UNCOMPRESSED_BYTES = 200 * 1024 * 1024
MAX_DOCX_COMPRESSION_RATIO = 100


# PDF ----------------------------------------------------------------------


def read_pdf(path: Path) -> tuple[str, str]:
    """Join the text of all pages; refuse encrypted and image-only PDFs."""
    import pypdf
    from pypdf.errors import PdfReadError

    try:
        reader = pypdf.PdfReader(io.BytesIO(read_bytes(path)))
        _unlock_pdf(reader)
        pages = reader.pages
        page_count = len(pages)
    except PdfReadError as exc:
        raise IngestError(f"PDF is damaged or incomplete: {detail(exc)}") from exc
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
            too_much_text(total)
    text = "\n\n".join(texts)
    if failure is not None and not texts:
        raise IngestError(f"PDF is damaged: no page could be read ({detail(failure)})")
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
        raise IngestError(f"Word document is damaged: {detail(exc)}") from exc
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


def read_docx(path: Path) -> tuple[str, str]:
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
        raise IngestError(f"Word document is damaged: {detail(exc)}") from exc
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
