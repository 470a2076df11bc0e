"""One worker thread that owns the core; the UI talks to it by jobs and signals.

Why one thread: llama.cpp has a single context, the hypernet and the embedder
are loaded once, and jobs queued one after another (import, then adapt, then an
answer) run in the order the person asked for them. The UI thread only ever
submits a job and receives its result, failure or progress through queued
signals, so the event loop never blocks on a model or the database.

A job is ``fn(tailor, report) -> result``; ``report(payload)`` sends progress
(import counts, streamed text pieces) back to the UI thread.
"""
from __future__ import annotations

import gc
import itertools
import sys
import threading
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from PySide6.QtCore import QObject, QThread, Signal, Slot

from ..log import log
from .qt import emit

Job = Callable[[Any, Callable[[Any], None]], Any]


def friendly(exc: BaseException) -> str:
    """One line for the person. Expected errors carry their own message; anything else keeps its
    type name (its traceback goes to tailor.log in the data dir), never a traceback dialog."""
    from ..core import TailorError
    from ..hypernet import HypernetError
    from ..ingest import IngestError
    from ..lora_gguf import AdapterError
    from ..models import ModelError
    if isinstance(exc, (TailorError, HypernetError, IngestError, AdapterError, ModelError)):
        return str(exc)
    if isinstance(exc, MemoryError):
        return "out of memory; close other programs or use a smaller model"
    if isinstance(exc, OSError):
        return f"could not access a file: {exc.strerror or exc}"
    return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__


def preload_libraries() -> None:
    """Import the native libraries (onnxruntime, llama.cpp, tokenizers, gguf) on the worker at start-up.

    Loading a big extension module holds the GIL for tens of milliseconds; done here, while the
    window has just appeared and nothing animates, it cannot stutter an import's progress bar later.
    """
    import gguf  # noqa: F401
    import llama_cpp  # noqa: F401
    import onnxruntime  # noqa: F401
    import tokenizers  # noqa: F401


class _Worker(QObject):
    """Lives on the worker QThread; builds the core on the first job and runs jobs in order."""

    done = Signal(int, object)
    failed = Signal(int, str)
    progress = Signal(int, object)

    def __init__(self, factory: Callable[[], Any]):
        super().__init__()
        self._factory = factory
        self.tailor = None

    @Slot(int, object)
    def run(self, jid: int, fn: Job) -> None:
        # The cyclic GC is paused while a job runs. Reading the base GGUF's metadata (gguf.GGUFReader)
        # creates ~500k short-lived objects; with the GC on, each full collection of that heap holds the
        # GIL for 100-250 ms and freezes the UI thread. Refcounting still frees them; the GC resumes after.
        gc_on = gc.isenabled()
        gc.disable()
        try:
            if self.tailor is None:
                preload_libraries()
                self.tailor = self._factory()
            out = fn(self.tailor, lambda payload: emit(self.progress, jid, payload))
            if isinstance(out, NewCore):      # a profile switch: from now on jobs run on the other profile's core
                old, self.tailor, out = self.tailor, out.tailor, out.result
                old.close()
        except BaseException as exc:   # noqa: BLE001 - every failure must reach the UI as a message
            log.error("job %s failed", getattr(fn, "__qualname__", fn), exc_info=True)   # tailor.log
            traceback.print_exc(file=sys.stderr)
            emit(self.failed, jid, friendly(exc))
        else:
            emit(self.done, jid, out)
        finally:
            if gc_on:
                gc.enable()

    @Slot()
    def shutdown(self) -> None:
        try:
            if self.tailor is not None:
                self.tailor.close()
        finally:
            QThread.currentThread().quit()


@dataclass
class NewCore:
    """What a job returns to make the worker continue on another core (a profile switch)."""
    tailor: Any
    result: Any


@dataclass
class _Callbacks:
    done: Callable[[Any], None] | None
    failed: Callable[[str], None] | None
    progress: Callable[[Any], None] | None


class Runner(QObject):
    """The UI-side handle: ``submit`` a job with callbacks that run on the UI thread."""

    busyChanged = Signal(bool)
    failed = Signal(str)            # every failure, for a window-wide message banner
    _post = Signal(int, object)
    _stop = Signal()

    def __init__(self, factory: Callable[[], Any], parent: QObject | None = None):
        super().__init__(parent)
        self._ids = itertools.count(1)
        self._pending: dict[int, _Callbacks] = {}
        self._thread = QThread()
        self._thread.setObjectName("tailor-worker")
        self._worker = _Worker(factory)
        self._worker.moveToThread(self._thread)
        self._post.connect(self._worker.run)
        self._stop.connect(self._worker.shutdown)
        self._worker.done.connect(self._on_done)
        self._worker.failed.connect(self._on_failed)
        self._worker.progress.connect(self._on_progress)
        self._thread.start()
        self.engine = None          # set by answer jobs so Stop never waits on the core's model lock
        self._closed = False

    @property
    def busy(self) -> bool:
        return bool(self._pending)

    def submit(self, fn: Job, *, done=None, failed=None, progress=None) -> int:
        if self._closed:
            return 0
        jid = next(self._ids)
        was_busy = self.busy
        self._pending[jid] = _Callbacks(done, failed, progress)
        emit(self._post, jid, fn)
        if not was_busy:
            emit(self.busyChanged, True)
        return jid

    def stop_generation(self) -> None:
        """Ask the engine to end the current answer (thread-safe: it only sets an event)."""
        if self.engine is not None:
            self.engine.stop()

    def _finish(self, jid: int) -> _Callbacks | None:
        cb = self._pending.pop(jid, None)
        if not self._pending:
            emit(self.busyChanged, False)
        return cb

    @Slot(int, object)
    def _on_done(self, jid, out) -> None:
        cb = self._finish(jid)
        if cb and cb.done:
            cb.done(out)

    @Slot(int, str)
    def _on_failed(self, jid, msg) -> None:
        cb = self._finish(jid)
        if cb and cb.failed:
            cb.failed(msg)
        emit(self.failed, msg)

    @Slot(int, object)
    def _on_progress(self, jid, payload) -> None:
        cb = self._pending.get(jid)
        if cb and cb.progress:
            cb.progress(payload)

    def shutdown(self, timeout_ms: int = 60_000) -> None:
        """Stop any answer, let queued jobs finish, close the core on its own thread, join it."""
        if self._closed:
            return
        self._closed = True
        self.stop_generation()
        emit(self._stop)
        self._thread.wait(timeout_ms)


class Cancel(threading.Event):
    """A cancel flag shared by the UI (sets it) and a job (checks it)."""
