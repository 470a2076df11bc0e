"""Text extraction in a separate, limited process.

Parsers for PDF, Word, HTML and email are large and run on files of unknown
origin. A hostile or merely broken file can make one of them allocate
gigabytes, spin for minutes or crash the interpreter. So the core never calls
:func:`app.ingest.extract` in its own process: an :class:`Extractor` keeps one
persistent worker process (a fresh interpreter that shares no state with the
app) whose address space is capped with ``RLIMIT_AS`` and which has no
network. Each file gets a wall-clock limit; a worker that overruns it is
killed and a fresh one is started for the next file. Whatever happens in the
worker, the caller gets an :class:`~app.ingest.Extracted` or an
:class:`~app.ingest.IngestError` with one line for the person.

Messages both ways are JSON (``send_bytes``), never pickle: unpickling a
reply runs whatever code the bytes name, so a parser exploit that took over
the worker could otherwise run code in the app. The app accepts only
``{"ok": {"title": str, "text": str}}`` or ``{"error": str}``.

What this isolates: memory blow-ups, endless loops, interpreter crashes and
stray network access of a parser, and code execution stays in the worker. What
it does not: the worker runs as the same user with the same file-system
access (no chroot, seccomp or container), so an exploited parser could read or
write the person's files; it cannot make the app run code or see more than a
title and a text.

The worker is persistent (not one process per file) so importing thousands of
small notes stays fast. It exits by itself when the app goes away: its end of
the pipe closes, and a watchdog notices when its parent is gone.

The worker is started as ``python -c ...`` rather than with multiprocessing's
``spawn``, which re-runs the caller's ``__main__`` module in the child (a script
without an ``if __name__ == "__main__"`` guard would start importing itself).
Frozen builds, which have no separate interpreter, use ``spawn`` and must call
``multiprocessing.freeze_support()`` first thing in their entry point.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from pathlib import Path

from .ingest import Extracted, IngestError


def _send(conn, obj) -> None:
    conn.send_bytes(json.dumps(obj).encode("utf-8"))


def _recv(conn):
    return json.loads(conn.recv_bytes().decode("utf-8"))

EXTRACT_TIMEOUT_S: float = 60.0            # per file, wall clock (Settings.extract_timeout_s overrides)
EXTRACT_MEMORY_BYTES: int = 1 << 30         # address-space cap of the worker (RLIMIT_AS)

_BOOT = """\
import sys
from multiprocessing.connection import Connection
rd = Connection(int(sys.argv[1]), writable=False)
wr = Connection(int(sys.argv[2]), readable=False)
import json
sys.path[:] = json.loads(rd.recv_bytes())
from app.sandbox import _serve
_serve(rd, wr, int(sys.argv[3]))
"""


# --- the worker side ---------------------------------------------------------------

def _limit_memory(limit: int) -> None:
    try:
        import resource
    except ImportError:      # Windows: no rlimits; the time limit still holds
        return
    try:
        _soft, hard = resource.getrlimit(resource.RLIMIT_AS)
        if hard != resource.RLIM_INFINITY:
            limit = min(limit, hard)
        resource.setrlimit(resource.RLIMIT_AS, (limit, hard))
    except (ValueError, OSError):
        pass


def _deny_network() -> None:
    """Parsers have no business on the network (external entities, remote images...)."""
    import socket

    def refuse(*_a, **_k):
        raise OSError("network access is disabled in Tailor's file reader")

    for name in ("connect", "connect_ex", "sendto"):
        setattr(socket.socket, name, refuse)
    socket.getaddrinfo = refuse
    socket.create_connection = refuse
    socket.gethostbyname = refuse


def _watch_parent() -> None:
    """Exit as soon as the app that started us is gone, even in the middle of a file."""
    parent = os.getppid()

    def watch():
        import time
        while True:
            time.sleep(0.5)
            if os.getppid() != parent:
                os._exit(0)
    threading.Thread(target=watch, name="tailor-extract-watchdog", daemon=True).start()


def _serve(rd, wr, memory_bytes: int) -> None:
    """Worker loop: receive a path, send back {"ok": {"title", "text"}} or {"error": message}."""
    _limit_memory(memory_bytes)
    _deny_network()
    _watch_parent()
    from . import ingest
    too_big = f"reading it needs more than {memory_bytes // 2**20} MB of memory; skipped"
    while True:
        try:
            request = _recv(rd)
        except (EOFError, OSError, KeyboardInterrupt, ValueError):
            return
        if request is None:
            return
        try:
            doc = ingest.extract(Path(request))
            reply = {"ok": {"title": doc.title, "text": doc.text}}
        except ingest.IngestError as exc:
            reply = {"error": str(exc)}
        except MemoryError:
            reply = {"error": too_big}
        except BaseException as exc:    # noqa: BLE001 — the worker answers whatever happened
            reply = {"error": f"could not read file: {type(exc).__name__}: {' '.join(str(exc).split())[:160]}"}
        try:
            _send(wr, reply)
        except MemoryError:
            _send(wr, {"error": too_big})
        except (OSError, EOFError):
            return


def _serve_mp(conn, memory_bytes: int) -> None:       # multiprocessing target (frozen builds)
    _serve(conn, conn, memory_bytes)


# --- the app side ------------------------------------------------------------------

class _Subprocess:
    """The worker as ``python -c``, talking over two pipes."""

    def __init__(self, memory_bytes: int):
        from multiprocessing.connection import Connection
        to_child_r, to_child_w = os.pipe()
        from_child_r, from_child_w = os.pipe()
        try:
            self.proc = subprocess.Popen(
                [sys.executable, "-c", _BOOT, str(to_child_r), str(from_child_w), str(memory_bytes)],
                pass_fds=(to_child_r, from_child_w), stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                # parsers' warnings would litter the terminal; TAILOR_DEBUG=1 shows them (and boot failures)
                stderr=None if os.environ.get("TAILOR_DEBUG") else subprocess.DEVNULL, close_fds=True)
        except BaseException:
            for fd in (to_child_r, to_child_w, from_child_r, from_child_w):
                os.close(fd)
            raise
        os.close(to_child_r)
        os.close(from_child_w)
        self.wr = Connection(to_child_w, readable=False)
        self.rd = Connection(from_child_r, writable=False)
        _send(self.wr, list(sys.path))     # the child finds app/ exactly where this process did

    pid = property(lambda self: self.proc.pid)
    exitcode = property(lambda self: self.proc.poll())

    def alive(self) -> bool:
        return self.proc.poll() is None

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()

    def join(self, timeout: float) -> None:
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()

    def close_pipes(self) -> None:
        self.wr.close()
        self.rd.close()


class _MPProcess:
    """The worker via multiprocessing's spawn (frozen builds, Windows)."""

    def __init__(self, memory_bytes: int):
        import multiprocessing
        ctx = multiprocessing.get_context("spawn")
        parent, child = ctx.Pipe(duplex=True)
        self.proc = ctx.Process(target=_serve_mp, args=(child, memory_bytes), name="tailor-extract", daemon=True)
        self.proc.start()
        child.close()
        self.wr = self.rd = parent

    pid = property(lambda self: self.proc.pid)
    exitcode = property(lambda self: self.proc.exitcode)

    def alive(self) -> bool:
        return self.proc.is_alive()

    def kill(self) -> None:
        self.proc.kill()
        self.proc.join(5)

    def join(self, timeout: float) -> None:
        self.proc.join(timeout)
        if self.proc.is_alive():
            self.kill()

    def close_pipes(self) -> None:
        self.wr.close()


class Extractor:
    """``extract(path)`` in a persistent, memory- and time-limited worker process.

    ``timeout_s`` and ``memory_bytes`` default to the module constants (read at each
    call / worker start, so tests may monkeypatch them). Thread-safe: one file at a time.
    """

    def __init__(self, timeout_s: float | None = None, memory_bytes: int | None = None):
        self.timeout_s = timeout_s
        self.memory_bytes = memory_bytes
        self._worker: _Subprocess | _MPProcess | None = None
        self._lock = threading.Lock()
        self.restarts = 0     # workers replaced after a timeout or crash (for tests and diagnostics)

    @property
    def pid(self) -> int | None:
        w = self._worker
        return w.pid if w is not None and w.alive() else None

    def _start(self) -> None:
        mem = int(self.memory_bytes if self.memory_bytes is not None else EXTRACT_MEMORY_BYTES)
        frozen = getattr(sys, "frozen", False) or os.name != "posix"
        self._worker = (_MPProcess if frozen else _Subprocess)(mem)

    def _stop(self, kill: bool) -> None:
        w, self._worker = self._worker, None
        if w is None:
            return
        if not kill:
            try:
                _send(w.wr, None)
            except (OSError, EOFError, ValueError):
                pass
        w.close_pipes()
        if kill:
            w.kill()
        else:
            w.join(5)

    def extract(self, path: Path) -> Extracted:
        """The text of one file, or IngestError (timeout, crash and memory limit included)."""
        with self._lock:
            for attempt in (0, 1):
                if self._worker is not None and not self._worker.alive():
                    self._stop(kill=True)     # died while idle (e.g. killed by the OS): start afresh
                    self.restarts += 1
                if self._worker is None:
                    try:
                        self._start()
                    except OSError as exc:
                        raise IngestError(f"the file reader could not be started ({exc})") from None
                try:
                    _send(self._worker.wr, str(Path(path).absolute()))
                    break
                except (OSError, EOFError):
                    self._stop(kill=True)
                    if attempt:
                        raise IngestError("the file reader could not be started; try again") from None
            timeout = float(self.timeout_s if self.timeout_s is not None else EXTRACT_TIMEOUT_S)
            w = self._worker
            try:
                ready = w.rd.poll(timeout)
            except (OSError, EOFError):
                ready = True
            if not ready:
                self._stop(kill=True)
                self.restarts += 1
                raise IngestError(f"took longer than {timeout:g} s to read; skipped")
            try:
                reply = _recv(w.rd)
            except (OSError, EOFError, ValueError):
                w.join(2)
                code = w.exitcode
                self._stop(kill=True)
                self.restarts += 1
                how = f"signal {-code}" if code is not None and code < 0 else f"exit code {code}"
                raise IngestError(f"the file crashed the reader ({how}); skipped") from None
            return _reply_to_result(reply)

    def close(self) -> None:
        with self._lock:
            self._stop(kill=False)


def _reply_to_result(reply) -> Extracted:
    """The worker's JSON reply, checked field by field: nothing else is believed."""
    if isinstance(reply, dict) and len(reply) == 1:
        ok, err = reply.get("ok"), reply.get("error")
        if isinstance(ok, dict) and isinstance(ok.get("title"), str) and isinstance(ok.get("text"), str):
            return Extracted(ok["title"], ok["text"])
        if isinstance(err, str):
            raise IngestError(err)
    raise IngestError("the file reader sent a malformed reply; skipped")

    def __del__(self):   # best effort; the worker also exits when its pipe closes
        try:
            self._stop(kill=True)
        except Exception:
            pass
