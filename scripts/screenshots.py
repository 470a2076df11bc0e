#!/usr/bin/env python
"""Render Tailor's main states in a real X server (Xvfb) and save docs/screenshots/*.png.

    .venv/bin/python scripts/screenshots.py [--out docs/screenshots] [--dark]

Assumes Xvfb and Qt's xcb libraries are installed (Debian/Ubuntu:
``apt-get install -y xvfb libxcb-cursor0 libxcb-icccm4 libxcb-keysyms1``).
It starts its own Xvfb on a free display, uses a throw-away data directory,
and drives the real window through the real core and models, so the pictures
show what a person sees: first run, importing, chat with personalization,
compare, settings, the profile switcher. Answers depend on the shipped hypernetwork; refresh the
screenshots whenever it or the UI changes.
"""
from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

SIZE = (1280, 800)
CHAT_PROMPTS = [
    ("What does vectorcall change about calling functions in CPython?", True),
    ('Write the abstract of a paper titled "Faster dictionaries for instances".', False),
]
COMPARE_PROMPT = 'Write the abstract of a paper titled "Faster attribute lookup in the interpreter".'


def start_xvfb() -> tuple[subprocess.Popen, str]:
    if not shutil.which("Xvfb"):
        sys.exit("Xvfb is not installed: apt-get install -y xvfb")
    for n in range(99, 140):
        if not Path(f"/tmp/.X11-unix/X{n}").exists() and not Path(f"/tmp/.X{n}-lock").exists():
            break
    else:
        sys.exit("no free X display")
    proc = subprocess.Popen(["Xvfb", f":{n}", "-screen", "0", f"{SIZE[0] + 160}x{SIZE[1] + 160}x24",
                             "-nolisten", "tcp"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    for _ in range(100):
        if Path(f"/tmp/.X11-unix/X{n}").exists():
            return proc, f":{n}"
        time.sleep(0.05)
    proc.kill()
    sys.exit("Xvfb did not start")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=REPO / "docs" / "screenshots")
    ap.add_argument("--dark", action="store_true", help="also render the chat in the dark colour scheme")
    ap.add_argument("--max-tokens", type=int, default=70)
    args = ap.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    xvfb, display = start_xvfb()
    home = Path(tempfile.mkdtemp(prefix="tailor-shots-"))
    os.environ.update(DISPLAY=display, QT_QPA_PLATFORM="xcb", TAILOR_HOME=str(home / "data"),
                      HF_HUB_OFFLINE="1")
    try:
        return _render(args)
    finally:
        xvfb.terminate()
        xvfb.wait(5)
        shutil.rmtree(home, ignore_errors=True)


def _dark_palette():
    """A dark desktop theme's palette, for the screenshot only (the app never sets colours)."""
    from PySide6.QtGui import QColor, QPalette
    R, G = QPalette.ColorRole, QPalette.ColorGroup
    pal = QPalette()
    for role, colour in {R.Window: "#2b2b2d", R.WindowText: "#e8e8e8", R.Base: "#1f1f21", R.AlternateBase: "#313136",
                         R.Text: "#e8e8e8", R.Button: "#3a3a3d", R.ButtonText: "#e8e8e8", R.Highlight: "#3d6fd6",
                         R.HighlightedText: "#ffffff", R.PlaceholderText: "#9a9aa0", R.Mid: "#5a5a5e",
                         R.Midlight: "#4a4a4e", R.Dark: "#1a1a1c", R.Light: "#505054", R.Shadow: "#101012",
                         R.ToolTipBase: "#3a3a3d", R.ToolTipText: "#e8e8e8", R.Link: "#7aa7ff"}.items():
        pal.setColor(role, QColor(colour))
    for role in (R.WindowText, R.Text, R.ButtonText):
        pal.setColor(G.Disabled, role, QColor("#77777c"))
    return pal


def _render(args) -> int:
    from PySide6.QtCore import QEventLoop, Qt, QTimer
    from PySide6.QtGui import QPalette
    from PySide6.QtWidgets import QApplication

    from app.ui.main import MainWindow
    from app.ui.selftest import _wait

    app = QApplication([sys.argv[0]])
    app.setApplicationName("Tailor")
    win = MainWindow(os.environ["TAILOR_HOME"])
    win.resize(*SIZE)
    win.move(0, 0)
    win.chat.max_tokens = args.max_tokens
    win.compare.max_tokens = args.max_tokens
    win.show()
    saved: list[str] = []

    def settle(ms: int = 400) -> None:
        loop = QEventLoop()
        QTimer.singleShot(ms, loop.quit)
        loop.exec()

    def save(widget, name: str) -> None:
        path = args.out / f"{name}.png"
        widget.grab().save(str(path))
        saved.append(path.name)
        print(f"saved {path}", flush=True)

    _wait(win.ready)
    settle()
    save(win, "01-first-run")

    # importing: capture mid-way, from inside the progress callback, so the bar is really moving
    def on_progress(done: int, total: int, _path: str) -> None:
        if done == total // 2 and "02-importing" not in {Path(s).stem for s in saved}:
            save(win, "02-importing")
    win.profile.importProgress.connect(on_progress)
    win.use_sample()
    _wait(win.profile.importFinished)
    win.profile.importProgress.disconnect(on_progress)
    settle(150)
    save(win, "03-regenerating")
    _wait(win.profile.adapterReady)

    for prompt, rag in CHAT_PROMPTS:
        win.rag.setChecked(rag)
        win.chat.send(prompt)
        _wait(win.chat.answerFinished)
    win.rag.setChecked(False)
    settle()
    save(win, "04-chat-personalized")

    win.tabs.setCurrentWidget(win.compare)
    win.compare.run(COMPARE_PROMPT)
    _wait(win.compare.finished)
    settle()
    save(win, "05-compare")
    win.tabs.setCurrentWidget(win.chat)

    dlg = win.open_settings()
    settle()
    save(dlg, "06-settings")
    dlg.reject()

    # profiles: a second person's (or a second role's) profile beside the first, chosen in the toolbar
    win.switch_profile("work", create=True)
    _wait(win.ready)
    win.switch_profile("default")
    _wait(win.ready)
    settle()
    win.profile_box.showPopup()
    settle()
    shot = app.primaryScreen().grabWindow(0, 0, 0, *SIZE)      # the whole screen: the open list is its own window
    shot.save(str(args.out / "08-profiles.png"))
    saved.append("08-profiles.png")
    print(f"saved {args.out / '08-profiles.png'}", flush=True)
    win.profile_box.hidePopup()

    if args.dark:
        # what a dark desktop theme does: the app only uses palette roles, so it follows
        app.styleHints().setColorScheme(Qt.ColorScheme.Dark)
        settle(300)
        if app.palette().color(QPalette.ColorRole.Window).lightness() > 128:
            app.setPalette(_dark_palette())     # Xvfb has no desktop theme to switch; supply its palette
        settle(600)
        save(win, "07-chat-dark")
    win.close()
    print(f"{len(saved)} screenshots in {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
