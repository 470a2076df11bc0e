"""Compare: one prompt, answered by the base model and by the personalized model, side by side.

Both answers are greedy (no sampling), so the difference on screen is the
adapter's doing and not chance. They run one after the other on the single
worker because the engine has one context.
"""
from __future__ import annotations

from collections.abc import Callable

from PySide6.QtCore import Qt, Signal
from PySide6.QtGui import QPalette
from PySide6.QtWidgets import (QComboBox, QGroupBox, QHBoxLayout, QLabel, QLineEdit, QPlainTextEdit, QPushButton,
                               QSplitter, QVBoxLayout, QWidget)

from ..prompts import task_messages
from . import jobs
from .qt import emit
from .worker import Cancel, Runner

# The two task prompts come from app.prompts, word for word as in training and evaluation: the adapter was
# trained under exactly these requests, so they show what it does best.
EXAMPLES = [
    task_messages("writing", title="Faster attribute lookup in the interpreter")[0]["content"],
    task_messages("headline", text="We propose caching method lookups per call site so repeated calls skip the "
                                   "dictionary search.")[0]["content"],
    "Explain what a calling convention is, in two sentences.",
]


class _Pane(QGroupBox):
    def __init__(self, title: str, name: str):
        super().__init__(title)
        self.setAccessibleName(name)
        lay = QVBoxLayout(self)
        self.text = QPlainTextEdit()
        self.text.setReadOnly(True)
        self.text.setAccessibleName(name + " answer")
        self.text.setPlaceholderText("The answer appears here.")
        self.info = QLabel("")
        self.info.setForegroundRole(QPalette.ColorRole.PlaceholderText)
        lay.addWidget(self.text, 1)
        lay.addWidget(self.info)

    def clear(self) -> None:
        self.text.clear()
        self.info.setText("")


class CompareView(QWidget):
    finished = Signal(dict)
    failed = Signal(str)
    generatingChanged = Signal(bool)

    def __init__(self, runner: Runner, options: Callable[[], dict], parent: QWidget | None = None):
        super().__init__(parent)
        self.runner = runner
        self.options = options
        self.max_tokens = 160
        self._stop: Cancel | None = None
        lay = QVBoxLayout(self)
        lay.setContentsMargins(6, 6, 6, 6)
        intro = QLabel("Ask one thing; see how the base model and your personalized model answer it.")
        intro.setWordWrap(True)
        lay.addWidget(intro)
        row = QHBoxLayout()
        self.prompt = QLineEdit()
        self.prompt.setAccessibleName("Prompt to compare")
        self.prompt.setPlaceholderText("A prompt for both models…")
        self.prompt.returnPressed.connect(lambda: self.run())
        self.examples = QComboBox()
        self.examples.setAccessibleName("Example prompts")
        self.examples.addItem("Examples…")
        self.examples.setSizeAdjustPolicy(QComboBox.SizeAdjustPolicy.AdjustToMinimumContentsLengthWithIcon)
        self.examples.setMinimumContentsLength(10)
        for e in EXAMPLES:
            self.examples.addItem(e.splitlines()[0][:60] + ("…" if len(e) > 60 else ""), e)
        self.examples.activated.connect(self._example)
        self.run_btn = QPushButton("Compare")
        self.run_btn.setAccessibleName("Compare the two models")
        self.run_btn.clicked.connect(lambda: self.run())
        self.stop_btn = QPushButton("Stop")
        self.stop_btn.setAccessibleName("Stop comparing")
        self.stop_btn.clicked.connect(self.stop)
        self.stop_btn.setEnabled(False)
        row.addWidget(self.prompt, 1)
        row.addWidget(self.examples)
        row.addWidget(self.run_btn)
        row.addWidget(self.stop_btn)
        lay.addLayout(row)
        split = QSplitter(Qt.Orientation.Horizontal)
        self.base = _Pane("Base model", "Base model")
        self.personal = _Pane("Personalized", "Personalized model")
        for p in (self.base, self.personal):
            split.addWidget(p)
        lay.addWidget(split, 1)
        self.set_adapter(None)

    def _example(self, index: int) -> None:
        data = self.examples.itemData(index)
        if data:
            self.prompt.setText(data)
        self.examples.setCurrentIndex(0)

    def set_adapter(self, version: int | None) -> None:
        self.personal.setTitle(f"Personalized · adapter v{version}" if version else "Personalized (no adapter yet)")

    @property
    def generating(self) -> bool:
        return self._stop is not None

    def run(self, prompt: str | None = None) -> bool:
        prompt = (prompt if prompt is not None else self.prompt.text()).strip()
        if not prompt or self.generating:
            return False
        self.prompt.setText(prompt)
        opts = self.options()
        scale = opts["scale"] if opts["scale"] > 0 else 1.0     # comparing at strength 0 would show nothing
        self.base.clear()
        self.personal.clear()
        self._stop = Cancel()
        self.run_btn.setEnabled(False)
        self.stop_btn.setEnabled(True)
        emit(self.generatingChanged, True)
        self.base.info.setText("waiting…")
        self.personal.info.setText("waiting…")
        panes = {"base": self.base, "personal": self.personal}

        def progress(p):
            pane = panes[p["side"]]
            if p["kind"] == "start":
                pane.info.setText("answering…")
                if p["side"] == "personal":
                    self.set_adapter(p["adapter_version"])
            else:
                pane.text.moveCursor(pane.text.textCursor().MoveOperation.End)
                pane.text.insertPlainText(p["text"])

        def done(out):
            self._end()
            for side, pane in panes.items():
                r = out.get(side)
                if r is None:
                    pane.info.setText("stopped")
                    continue
                pane.text.setPlainText(r["text"])
                pane.info.setText(f"{r['tokens']} tokens · {r['tokens_per_s']:.1f} tokens/s"
                                  + (f" · strength {r['strength']:.2f}" if side == "personal" and r["adapter_version"]
                                     else "") + (" · stopped" if r["stopped"] else ""))
            if out.get("personal") and out["personal"]["adapter_version"] is None:
                self.personal.info.setText("No adapter yet: import documents first, so this is the base model.")
            emit(self.finished, out)

        def failed(msg):
            self._end()
            self.personal.info.setText(f"Could not compare: {msg}")
            emit(self.failed, msg)

        job = jobs.compare(self.runner, prompt, {"rag": False, "max_tokens": self.max_tokens}, scale, self._stop)
        self.runner.submit(job, done=done, failed=failed, progress=progress)
        return True

    def _end(self) -> None:
        self._stop = None
        self.run_btn.setEnabled(True)
        self.stop_btn.setEnabled(False)
        emit(self.generatingChanged, False)

    def stop(self) -> None:
        if self._stop is not None:
            self._stop.set()
            self.runner.stop_generation()
