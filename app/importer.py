"""Import: files in, documents and chunks in the store, one typed outcome per file.

Every bad input fails alone with a message for the person and loses nothing: a file that was imported before
keeps its stored text when a later version fails to read. The store is the only thing written, one transaction
per file, so a crash between files leaves it consistent.
"""
from __future__ import annotations

import threading
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field
from enum import Enum
from pathlib import Path

from . import ingest
from .chunking import chunk_document
from .models import sha256_file
from .sandbox import Extractor
from .store import Store

MAX_PROFILE_CHUNKS = 200_000     # documented profile limit (README); beyond it imports are refused per file
file_sha256 = sha256_file        # module-level name so tests can simulate an unreadable file


class Outcome(str, Enum):
    IMPORTED = "imported"
    UNCHANGED = "unchanged"      # same size and mtime, or same content: nothing to do
    DUPLICATE = "duplicate"      # same content as another imported file: kept as a pointer to it
    FAILED = "failed"


@dataclass(frozen=True)
class FileResult:
    path: str
    outcome: Outcome
    error: str | None = None     # for FAILED: what the person reads


@dataclass
class ImportSummary:
    imported: int = 0
    unchanged: int = 0
    duplicates: int = 0
    failed: list[dict] = field(default_factory=list)      # {"path", "error"}
    cancelled: bool = False

    def add(self, r: FileResult) -> None:
        if r.outcome is Outcome.IMPORTED:
            self.imported += 1
        elif r.outcome is Outcome.UNCHANGED:
            self.unchanged += 1
        elif r.outcome is Outcome.DUPLICATE:
            self.duplicates += 1
        else:
            self.failed.append({"path": r.path, "error": r.error})

    def as_dict(self) -> dict:
        return asdict(self)


def import_paths(store: Store, extractor: Extractor, paths: Iterable[Path],
                 progress: Callable[[int, int, str], None] | None = None,
                 cancel: threading.Event | None = None) -> ImportSummary:
    """Import files and folders; one bad file fails alone and nothing stored is lost."""
    summary = ImportSummary()
    entries = list(ingest.iter_files([Path(p).expanduser() for p in paths]))
    for i, (path, err) in enumerate(entries):
        if cancel is not None and cancel.is_set():
            summary.cancelled = True
            break
        if progress:
            progress(i, len(entries), str(path))
        summary.add(import_one(store, extractor, path, err))
    if progress:
        progress(len(entries), len(entries), "")
    return summary


def import_one(store: Store, extractor: Extractor, path: Path, err: Exception | None = None) -> FileResult:
    key, shown = str(path.absolute()), str(path)     # stored by absolute path; reported as the person gave it
    existing = store.document_by_path(key)
    if err is not None:
        return _fail(store, key, shown, existing, str(err))
    try:
        st = path.stat()
        if existing and existing.status in ("ok", "duplicate") and existing.mtime == st.st_mtime \
                and existing.size == st.st_size:
            return FileResult(shown, Outcome.UNCHANGED)
        if st.st_size > ingest.MAX_FILE_BYTES:
            raise ingest.IngestError(f"file is {st.st_size / 2**20:.0f} MB; the limit is "
                                     f"{ingest.MAX_FILE_BYTES // 2**20} MB per file")
        sha = file_sha256(path)
    except OSError as exc:
        return _fail(store, key, shown, existing, f"cannot read file: {exc.strerror or exc}")
    except ingest.IngestError as exc:
        return _fail(store, key, shown, existing, str(exc))
    if existing and existing.sha256 == sha and existing.status in ("ok", "duplicate"):
        store.write(lambda c: c.execute(   # (a file restored after a failed change: clear that error)
            "UPDATE documents SET mtime=?, size=?, error=CASE WHEN status='ok' THEN NULL ELSE error END "
            "WHERE id=?", (st.st_mtime, st.st_size, existing.id)))
        return FileResult(shown, Outcome.UNCHANGED)
    twin = store.find_by_sha(sha, key)
    if twin is not None:
        store.put_document(path=key, sha256=sha, mtime=st.st_mtime, size=st.st_size, title=twin.title,
                           status="duplicate", error=f"same content as {twin.path}", duplicate_of=twin.id)
        return FileResult(shown, Outcome.DUPLICATE)
    try:
        doc = extractor.extract(path)
        chunks = chunk_document(doc.title, doc.text)
        if not chunks:
            raise ingest.IngestError("no text found")
        total = store.profile_stats()["chunks"]
        if total + len(chunks) > MAX_PROFILE_CHUNKS:
            raise ingest.IngestError(f"the profile is full ({total} chunks; limit {MAX_PROFILE_CHUNKS}); "
                                     "forget some documents first")
    except ingest.IngestError as exc:
        return _fail(store, key, shown, existing, str(exc), sha=sha, st=st)
    except (RecursionError, MemoryError, UnicodeError, ValueError, OSError) as exc:
        return _fail(store, key, shown, existing, f"could not read file: {type(exc).__name__}: {exc}", sha=sha, st=st)
    store.put_document(path=key, sha256=sha, mtime=st.st_mtime, size=st.st_size, title=doc.title,
                       status="ok", chunks=chunks)
    return FileResult(shown, Outcome.IMPORTED)


def _fail(store: Store, key: str, shown: str, existing, error: str, sha=None, st=None) -> FileResult:
    """Record a failure; a document that was good before keeps its stored text."""
    if existing is None or existing.status == "failed":
        store.put_document(path=key, sha256=sha, mtime=st.st_mtime if st else None,
                           size=st.st_size if st else None, title=None, status="failed", error=error)
    elif existing.status == "ok":     # shown by `tailor docs`; cleared by the next good import
        store.write(lambda c: c.execute("UPDATE documents SET error=? WHERE id=?",
                                        (f"kept the previous import; the file now fails: {error}", existing.id)))
    return FileResult(shown, Outcome.FAILED, error)
