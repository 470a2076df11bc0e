"""The desktop app against the real core and models, headless (QT_QPA_PLATFORM=offscreen).

One window (and one core) is shared by the module's tests, which run in file
order like a person's session: first run, import, chat, compare, forget. The
stall test builds its own cold window so model loading is measured too.
Answers are kept short and the engine uses one thread, so the module stays
fast and steady on a busy two-core machine.
"""
from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

pytest.importorskip("PySide6")
pytest.importorskip("pytestqt")

from PySide6.QtCore import QElapsedTimer, QMimeData, QPointF, Qt, QTimer, QUrl  # noqa: E402
from PySide6.QtGui import QDropEvent  # noqa: E402
from PySide6.QtWidgets import QAbstractButton, QCheckBox, QLineEdit, QPlainTextEdit, QSlider, QSpinBox  # noqa: E402

from conftest import SAMPLES  # noqa: E402

from app.prompts import CHAT_STRENGTH  # noqa: E402

pytestmark = pytest.mark.slow

STEP_MS = 120_000
PROMPT = "Write a short title for a paper on making Python function calls faster."


def _make_window(home, qapp):
    from app.ui.main import MainWindow
    home.mkdir(parents=True, exist_ok=True)
    (home / "settings.json").write_text(json.dumps({"threads": 1}))
    win = MainWindow(home)
    win.chat.max_tokens = 16
    win.compare.max_tokens = 16
    win.show()
    return win


def _close(win) -> None:
    win.close()
    win.deleteLater()


@pytest.fixture(scope="module")
def window(qapp, tmp_path_factory):
    win = _make_window(tmp_path_factory.mktemp("ui") / "tailor-home", qapp)
    yield win
    _close(win)


def _drop(win, paths) -> None:
    mime = QMimeData()
    mime.setUrls([QUrl.fromLocalFile(str(p)) for p in paths])
    ev = QDropEvent(QPointF(20, 20), Qt.DropAction.CopyAction, mime, Qt.MouseButton.LeftButton,
                    Qt.KeyboardModifier.NoModifier)
    win.dropEvent(ev)


def test_first_run_explains_and_offers_sample(window, qtbot):
    with qtbot.waitSignal(window.ready, timeout=STEP_MS):
        pass
    assert window.stack.currentWidget() is window.welcome
    assert window.welcome.sample_btn.isEnabled()
    assert "0 documents" in window.profile.stats_label.text()
    # an adapter from an empty profile fails with a readable message in the banner, no traceback
    with qtbot.waitSignal(window.profile.adapterFailed, timeout=STEP_MS) as sig:
        window.profile.regenerate()
    assert "empty" in sig.args[0]
    qtbot.waitUntil(window.banner.isVisible)
    assert "Traceback" not in window.banner.label.text()
    window.banner.hide()


def test_controls_have_accessible_names(window):
    kinds = (QAbstractButton, QLineEdit, QPlainTextEdit, QSlider, QSpinBox, QCheckBox)
    unnamed = [f"{type(w).__name__}:{getattr(w, 'text', lambda: '')()}" for kind in kinds
               for w in window.findChildren(kind) if w.isVisibleTo(window) and not w.accessibleName()
               and w.objectName() not in ("qt_toolbar_ext_button",)]
    assert not unnamed, unnamed


def test_import_adapt_chat_compare_end_to_end(window, qtbot):
    sample = SAMPLES / "interpreter-performance"
    with qtbot.waitSignal(window.profile.adapterReady, timeout=STEP_MS) as adapted:
        with qtbot.waitSignal(window.profile.importFinished, timeout=STEP_MS) as imported:
            _drop(window, [sample])                       # drag and drop, as a person would
            assert window.stack.currentWidget() is window.tabs
            assert window.profile.import_box.isVisible()
        assert imported.args[0]["imported"] == len(list(sample.glob("*.md")))
        assert window.profile.regenerating
        assert window.profile.adapter_label.text() == "Regenerating…"
    assert adapted.args[0]["version"] == 1
    assert "Adapter v1" in window.profile.adapter_label.text()
    assert "Generated in" in window.profile.time_label.text()
    assert window.profile.tree.topLevelItemCount() == imported.args[0]["imported"]
    assert "6 documents" in window.profile.stats_label.text()

    pieces: list[str] = []
    window.chat.answerPiece.connect(pieces.append)
    window.chat.input.setPlainText(PROMPT)
    with qtbot.waitSignal(window.chat.answerFinished, timeout=STEP_MS) as answered:
        window.send_current()                             # what Ctrl+Enter does
        assert window.chat.generating and window.chat.stop_btn.isEnabled()
    window.chat.answerPiece.disconnect(pieces.append)
    out = answered.args[0]
    assert out["text"] and len(pieces) > 1, "the answer should arrive in pieces (streamed)"
    assert out["adapter_version"] == 1
    shown = window.chat.widgets[-1]
    assert shown.role == "assistant" and shown.text() == out["text"]
    assert "adapter v1" in shown.meta.text()
    assert out["strength"] == window.strength.value() / 100 * CHAT_STRENGTH     # an everyday request (a task
    assert f"strength {out['strength']:.2f}" in shown.meta.text()                # request gets the whole)
    assert out["words"] and shown.meta.text().endswith("· your words")         # no document in its prompt
    assert window.chat.chat_list.count() == 1             # persisted as a chat
    assert window.chat.regen_btn.isEnabled()

    # Both sides of a comparison sample with one fresh seed, so on an everyday request (the chat strength) one
    # draw can land on the same words; an adapter that changes the model differs within three draws.
    window.tabs.setCurrentWidget(window.compare)
    try:
        for _ in range(3):
            with qtbot.waitSignal(window.compare.finished, timeout=STEP_MS) as compared:
                window.compare.run(PROMPT)
            base, personal = compared.args[0]["base"], compared.args[0]["personal"]
            assert base["adapter_version"] is None and personal["adapter_version"] == 1
            assert base["text"] and personal["text"]
            assert window.compare.base.text.toPlainText() == base["text"]
            assert window.compare.personal.text.toPlainText() == personal["text"]
            assert f"strength {personal['strength']:.2f}" in window.compare.personal.info.text()
            if base["text"] != personal["text"]:
                break
        assert base["text"] != personal["text"], "three draws alike: the adapter should change the answer"
    finally:
        window.tabs.setCurrentWidget(window.chat)          # the next tests type into the chat


def test_the_task_menu_asks_as_trained_and_gets_the_whole_strength(window, qtbot):
    """A person pastes an abstract and picks "Title for this abstract": the box holds the trained request around
    it (cursor after it), and the answer gets the slider's whole strength and worked examples as sources."""
    from app.prompts import parse_task
    abstract = "We speed up Python function calls by caching method lookups per call site. 🚀"
    window.chat.input.setPlainText(abstract)
    actions = window.chat.task_btn.menu().actions()
    assert [a.text() for a in actions] == ["Title for this abstract", "Abstract for this title"]
    actions[1].trigger()                                  # the wrong one first: the text moves over
    actions[0].trigger()
    typed = window.chat.input.toPlainText()
    assert parse_task(typed) == ("headline", "", abstract)
    assert window.chat.input.textCursor().position() == len(typed.encode("utf-16-le")) // 2
    with qtbot.waitSignal(window.chat.answerFinished, timeout=STEP_MS) as answered:
        window.send_current()
    out = answered.args[0]
    assert out["strength"] == window.strength.value() / 100
    assert out["sources"], "a task request is answered after the person's nearest titled documents"
    window.chat.input.clear()
    actions[1].trigger()                                  # an empty box: the cursor waits inside the quotes
    typed = window.chat.input.toPlainText()
    assert typed[window.chat.input.textCursor().position():].startswith('". Reply with the abstract only.')


def test_keyboard_copy_and_sources(window, qtbot):
    """Ctrl+Enter sends and Esc stops (window shortcuts); Copy puts the answer on the clipboard; with
    retrieval on the answer names its sources."""
    from PySide6.QtTest import QTest
    from PySide6.QtWidgets import QApplication
    window.activateWindow()
    window.chat.input.setFocus()
    window.rag.setChecked(True)
    try:
        window.chat.input.setPlainText("What is vectorcall?")
        with qtbot.waitSignal(window.chat.answerFinished, timeout=STEP_MS) as answered:
            QTest.keyClick(window.chat.input, Qt.Key.Key_Return, Qt.KeyboardModifier.ControlModifier)
            assert window.chat.generating, "Ctrl+Enter should send"
            QTest.keyClick(window.chat.input, Qt.Key.Key_Escape)
        assert answered.args[0]["stopped"], "Esc should stop"
        assert answered.args[0]["sources"], "retrieval on: sources expected"
        shown = window.chat.widgets[-1]
        assert shown.sources.isVisibleTo(window) and "Sources:" in shown.sources.text()
        shown.copy_btn.click()
        assert QApplication.clipboard().text() == shown.text()
    finally:
        window.rag.setChecked(False)


def test_import_cancel(window, qtbot):
    import threading
    gate = threading.Event()
    window.runner.submit(lambda t, _r: gate.wait(30))          # hold the worker so the import waits in line
    with qtbot.waitSignal(window.profile.importFinished, timeout=STEP_MS) as imported:
        window.import_paths([SAMPLES / "packaging"])
        assert window.profile.cancel_btn.isVisible()
        window.profile.cancel_btn.click()
        gate.set()
    assert imported.args[0]["cancelled"] and imported.args[0]["imported"] == 0
    assert "cancelled" in window.profile.summary_label.text()
    assert not window.profile.import_box.isVisible()


def test_watched_folder_is_rescanned(window, qtbot, tmp_path):
    folder = tmp_path / "notes"
    folder.mkdir()
    (folder / "a.txt").write_text("Notes on caching attribute lookups in a bytecode interpreter. " * 5)
    with qtbot.waitSignal(window.profile.adapterReady, timeout=STEP_MS):
        window.import_paths([folder])
    qtbot.waitUntil(lambda: window.profile.watch_label.isVisibleTo(window), timeout=STEP_MS)
    qtbot.waitUntil(lambda: str(folder) in window.profile._watcher.directories(), timeout=STEP_MS)
    before = window.profile.snapshot["stats"]["documents"]
    with qtbot.waitSignal(window.profile.adapterReady, timeout=STEP_MS):
        (folder / "b.txt").write_text("A second note, on inline caches and their invalidation. " * 5)
    assert window.profile.snapshot["stats"]["documents"] == before + 1
    with qtbot.waitSignal(window.profile.snapshotChanged, timeout=STEP_MS):
        window.profile.unwatch_btn.click()
    assert not window.profile.watch_label.isVisibleTo(window)


def test_personalization_off_answers_with_base_model(window, qtbot):
    window.personalize.setChecked(False)
    assert not window.strength.isEnabled()
    try:
        window.chat.input.setPlainText("Say hello.")
        with qtbot.waitSignal(window.chat.answerFinished, timeout=STEP_MS) as answered:
            window.chat.send_btn.click()
        assert answered.args[0]["adapter_version"] is None
        assert window.chat.widgets[-1].meta.text() == "base model"
    finally:
        window.personalize.setChecked(True)


def test_stop_regenerate_and_history(window, qtbot):
    window.chat.max_tokens = 200
    with qtbot.waitSignal(window.chat.answerFinished, timeout=STEP_MS) as answered:
        window.chat.send("Tell me a long story about an interpreter.")
        qtbot.waitSignal(window.chat.answerPiece, timeout=STEP_MS).wait()
        window.stop()                                     # what Esc does
    window.chat.max_tokens = 16
    assert answered.args[0]["stopped"] and answered.args[0]["tokens"] < 200
    n = len(window.chat.widgets)
    with qtbot.waitSignal(window.chat.answerFinished, timeout=STEP_MS):
        window.chat.regenerate()
    assert len(window.chat.widgets) == n                  # the answer was replaced, not added
    chat_id = window.chat.chat_id
    msgs: list = []
    window.runner.submit(lambda t, _r: t.store.messages(chat_id), done=msgs.extend)
    qtbot.waitUntil(lambda: bool(msgs), timeout=STEP_MS)
    assert [m["role"] for m in msgs] == ["user", "assistant"] * (len(msgs) // 2)

    window.chat.new_chat()
    assert not window.chat.widgets and window.chat.chat_id is None
    window.chat.open_chat(chat_id)
    qtbot.waitUntil(lambda: len(window.chat.widgets) == len(msgs), timeout=STEP_MS)
    assert window.chat.widgets[-1].text() == msgs[-1]["content"]


def test_forget_regenerates_adapter(window, qtbot):
    before = window.profile.snapshot["stats"]["documents"]
    version = window.profile.snapshot["adapter"]["version"]
    window.profile.tree.topLevelItem(0).setSelected(True)
    assert window.profile.forget_btn.isEnabled()
    with qtbot.waitSignal(window.profile.adapterReady, timeout=STEP_MS) as adapted:
        window.profile.forget_btn.click()
        assert window.profile.adapter_label.text() == "Regenerating…"
    assert adapted.args[0]["version"] == version + 1
    assert window.profile.snapshot["stats"]["documents"] == before - 1
    assert window.profile.tree.topLevelItemCount() == before - 1
    assert f"Adapter v{version + 1}" in window.profile.adapter_label.text()


def test_failed_file_shows_its_error(window, qtbot, tmp_path):
    bad = tmp_path / "broken.pdf"
    bad.write_bytes(b"%PDF-1.4 this is not really a pdf")
    with qtbot.waitSignal(window.profile.importFinished, timeout=STEP_MS) as imported:
        window.import_paths([bad])
    assert len(imported.args[0]["failed"]) == 1
    rows = [window.profile.tree.topLevelItem(i) for i in range(window.profile.tree.topLevelItemCount())]
    row = next(r for r in rows if r.text(0) == "broken.pdf")
    assert row.text(2) == "failed" and row.childCount() == 1 and row.child(0).text(0)


def test_settings_dialog_saves(window, qtbot):
    dlg = window.open_settings()
    assert dlg.data_dir.text() == window.home
    dlg.k.setValue(7)
    assert dlg.examples.isChecked()                       # worked examples are on by default
    dlg.examples.setChecked(False)
    assert dlg.words.isChecked()                          # so are the person's words
    dlg.words.setChecked(False)
    dlg.accept()
    path = Path(window.home) / "settings.json"
    qtbot.waitUntil(lambda: json.loads(path.read_text()).get("rag_k") == 7, timeout=STEP_MS)
    assert json.loads(path.read_text())["examples"] is False
    assert json.loads(path.read_text())["words"] is False
    assert not window.banner.isVisible()                  # k applies at once: no restart note


def test_a_data_dir_chosen_in_settings_is_the_one_the_cli_uses(window, qtbot, tmp_path, monkeypatch):
    """The dialog records the choice with app.paths.choose_data_dir, the setting `tailor` reads too."""
    from app.paths import data_dir
    monkeypatch.setenv("TAILOR_CONFIG", str(tmp_path / "config"))
    dlg = window.open_settings()
    dlg.new_data_dir = str(tmp_path / "chosen")        # what the folder picker sets
    dlg.accept()
    monkeypatch.delenv("TAILOR_HOME")
    assert data_dir() == tmp_path / "chosen"


def test_event_loop_never_stalls(qapp, qtbot, tmp_path):
    """A 10 ms timer must never be late by more than 100 ms while the worker imports (cold: the
    embedder, hypernet and base model load too), adapts and streams an answer."""
    win = _make_window(tmp_path / "tailor-home", qapp)
    try:
        with qtbot.waitSignal(win.ready, timeout=STEP_MS):
            pass
        gaps: list[float] = []
        clock = QElapsedTimer()
        clock.start()
        last = [clock.elapsed()]

        def tick():
            now = clock.elapsed()
            gaps.append(now - last[0])
            last[0] = now
        timer = QTimer(interval=10)
        timer.timeout.connect(tick)
        timer.start()
        t0 = time.perf_counter()
        with qtbot.waitSignal(win.profile.adapterReady, timeout=STEP_MS):
            win.import_paths([SAMPLES / "packaging"])
        with qtbot.waitSignal(win.chat.answerFinished, timeout=STEP_MS) as answered:
            win.chat.send(PROMPT)
        timer.stop()
        assert answered.args[0]["text"]
        assert time.perf_counter() - t0 > 0.3 and len(gaps) > 20   # the timer really ran through the work
        worst = max(gaps)
        assert worst < 100, f"event loop stalled {worst} ms (ticks: {len(gaps)}, " \
                            f"over 50 ms: {sum(g > 50 for g in gaps)})"
    finally:
        _close(win)


BUNDLE = Path(__file__).resolve().parent.parent / "dist" / "tailor" / "tailor-app"


@pytest.mark.skipif(not BUNDLE.is_file(), reason="no bundle: `make bundle` builds dist/tailor")
def test_bundle_self_test(tmp_path):
    """When the PyInstaller bundle is built, its headless self-test must pass (smoke test of the bundle)."""
    import os
    import subprocess
    env = {k: v for k, v in os.environ.items() if k not in ("TAILOR_HOME", "PYTHONPATH")}
    proc = subprocess.run([str(BUNDLE), "--self-test", "--threads", "1"], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert result["self_test"] == "ok" and result["tokens"] > 0


def test_compare_examples_are_the_trained_task_prompts(window):
    """The examples menu offers each task exactly as the hypernetwork was trained on it (app.prompts)."""
    from app.prompts import TASKS, parse_task
    cmp = window.compare
    offered = [cmp.examples.itemData(i) for i in range(1, cmp.examples.count())]
    assert {t[0] for t in map(parse_task, offered) if t} == set(TASKS)
    cmp._example(1)
    assert cmp.prompt.text() == offered[0] and cmp.examples.currentIndex() == 0


def test_profiles_switch_in_the_window_without_reloading(window, qtbot):
    """issue 13: a second profile from the toolbar; its own (empty) documents and chats; back again; the base
    model is loaded once."""
    from app.engine import Engine
    from app.paths import PROFILES_DIR
    loads = Engine.loads
    docs_before = window.profile.tree.topLevelItemCount()
    chats_before = window.chat.chat_list.count()
    assert docs_before and window.profile_box.currentText() == "default"
    with qtbot.waitSignal(window.ready, timeout=STEP_MS):
        window.switch_profile("work", create=True)
    assert window.profile_box.currentText() == "work"
    assert [window.profile_box.itemText(i) for i in range(window.profile_box.count())] == \
        ["default", "work", window.NEW_PROFILE]
    assert window.profile.tree.topLevelItemCount() == 0 and window.chat.chat_list.count() == 0
    assert Path(window.home) == Path(window.root) / PROFILES_DIR / "work"
    window.chat.input.setPlainText("Say hello.")
    with qtbot.waitSignal(window.chat.answerFinished, timeout=STEP_MS) as answered:
        window.chat.send_btn.click()
    assert answered.args[0]["adapter_version"] is None                 # no documents here: the base model
    with qtbot.waitSignal(window.ready, timeout=STEP_MS):
        window.switch_profile("../bad")                                # refused before any job
        window.switch_profile("default")
    assert window.profile_box.currentText() == "default" and "profile name" in window.banner.label.text()
    assert window.profile.tree.topLevelItemCount() == docs_before
    assert window.chat.chat_list.count() == chats_before
    assert Engine.loads == loads


def test_the_app_reopens_on_the_last_profile(qapp, qtbot, tmp_path):
    """issue 13: a person who works in "work" finds it again after a restart; a profile deleted meanwhile, or a
    damaged note of it, opens the default one."""
    from app.paths import last_profile, profile_home, remember_profile
    home = tmp_path / "tailor-home"
    profile_home("work", create=True, root=home)
    remember_profile(home, "work")
    win = _make_window(home, qapp)
    try:
        qtbot.waitUntil(lambda: win.profile_box.currentText() == "work" and Path(win.home).name == "work",
                        timeout=STEP_MS)
        with qtbot.waitSignal(win.ready, timeout=STEP_MS):
            win.switch_profile("default")
        assert last_profile(home) == "default"
    finally:
        _close(win)
    remember_profile(home, "gone")
    assert last_profile(home) == "default"
    (home / "last-profile").write_bytes(b"\xff\xfe")
    assert last_profile(home) == "default"
