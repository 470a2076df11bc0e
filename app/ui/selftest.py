"""`tailor-app --self-test [--threads N]`: the whole app, headless, on a throw-away data directory.

It drives the real window (not just the core) so a bundle that lacks a Qt
plugin, a shared library or a model file fails here: import the sample
profile, generate the adapter, answer one prompt, print one JSON line with
timings, exit 0 (1 on any failure).
"""
from __future__ import annotations

import json
import os
import shutil
import sys
import tempfile
import time

from PySide6.QtCore import QEventLoop, QTimer, qInstallMessageHandler
from PySide6.QtWidgets import QApplication

PROMPT = "Write a short title for a paper on making Python function calls faster."
STEP_TIMEOUT_S = 300


class SelfTestFailed(RuntimeError):
    pass


def _quiet_offscreen(_mode, _context, message: str) -> None:
    """The offscreen platform warns on every window resize; keep stderr for real problems."""
    if "propagateSizeHints" not in message:
        print(message, file=sys.stderr)


def _wait(ok_signal, fail_signals=(), timeout_s: float = STEP_TIMEOUT_S):
    """Run the event loop until ``ok_signal`` fires (returns its argument) or a failure or timeout."""
    loop = QEventLoop()
    box: dict = {}

    def ok(*args):
        box["ok"] = args[0] if args else None
        loop.quit()

    def bad(msg=""):
        box["error"] = str(msg)
        loop.quit()
    conns = [(ok_signal, ok)] + [(s, bad) for s in fail_signals]
    for sig, slot in conns:
        sig.connect(slot)
    timer = QTimer(singleShot=True)
    timer.timeout.connect(lambda: bad(f"timed out after {timeout_s:.0f} s"))
    timer.start(int(timeout_s * 1000))
    loop.exec()
    timer.stop()
    for sig, slot in conns:
        sig.disconnect(slot)
    if "error" in box:
        raise SelfTestFailed(box["error"])
    return box.get("ok")


def _process_age_ms() -> int | None:
    """Milliseconds since this process started (Linux /proc), so the bundle's unpacking counts too."""
    try:
        ticks = os.sysconf("SC_CLK_TCK")
        with open("/proc/self/stat") as f:
            start = int(f.read().rsplit(")", 1)[1].split()[19]) / ticks
        with open("/proc/uptime") as f:
            uptime = float(f.read().split()[0])
        return round((uptime - start) * 1000)
    except (OSError, ValueError, IndexError):
        return None


def run_self_test(t0: float, threads: int = 0) -> int:
    """``threads`` > 0 pins the model's CPU threads (steadier timings on a busy machine)."""
    home = tempfile.mkdtemp(prefix="tailor-selftest-")
    os.environ["TAILOR_HOME"] = home
    if threads:
        with open(os.path.join(home, "settings.json"), "w") as f:
            json.dump({"threads": threads}, f)
    out: dict = {"self_test": "fail"}
    win = None
    qInstallMessageHandler(_quiet_offscreen)
    try:
        _app = QApplication.instance() or QApplication([sys.argv[0]])  # noqa: F841 - kept alive
        from .main import MainWindow
        from .welcome import sample_profile_dir
        win = MainWindow(home)
        win.show()
        out["window_ms"] = round((time.perf_counter() - t0) * 1000)
        out["window_since_process_start_ms"] = _process_age_ms()
        _wait(win.ready, [win.runner.failed])
        out["startup_ms"] = round((time.perf_counter() - t0) * 1000)
        if not sample_profile_dir().is_dir():
            raise SelfTestFailed(f"sample profile missing: {sample_profile_dir()}")
        t = time.perf_counter()
        win.use_sample()
        imp = _wait(win.profile.importFinished, [win.runner.failed])
        if imp["imported"] == 0:
            raise SelfTestFailed(f"nothing imported: {imp}")
        out["import_ms"] = imp["ms"]
        out["documents"] = imp["snapshot"]["stats"]["documents"]
        adapter = _wait(win.profile.adapterReady, [win.profile.adapterFailed, win.runner.failed])
        out["adapter_version"] = adapter["version"]
        out["adapt_ms"] = adapter["ms"]
        out["import_and_adapt_ms"] = round((time.perf_counter() - t) * 1000)
        t = time.perf_counter()
        win.chat.max_tokens = 32
        win.chat.send(PROMPT)
        ans = _wait(win.chat.answerFinished, [win.chat.answerFailed, win.runner.failed])
        if not ans["text"]:
            raise SelfTestFailed("the answer was empty")
        out.update(answer_ms=round((time.perf_counter() - t) * 1000), first_token_ms=ans["first_token_ms"],
                   tokens=ans["tokens"], tokens_per_s=ans["tokens_per_s"],
                   answered_with_adapter=ans["adapter_version"], answer=ans["text"][:120])
        out["self_test"] = "ok"
    except Exception as exc:     # noqa: BLE001 - any failure is reported as one JSON line and exit 1
        out["error"] = f"{type(exc).__name__}: {exc}" if not isinstance(exc, SelfTestFailed) else str(exc)
    finally:
        if win is not None:
            win.close()
        out["total_ms"] = round((time.perf_counter() - t0) * 1000)
        shutil.rmtree(home, ignore_errors=True)
    print(json.dumps(out), flush=True)
    return 0 if out["self_test"] == "ok" else 1
