"""The chat: a history of conversations, streaming answers, stop, copy, regenerate.

Messages are one widget each (not one big rich-text document) so a streamed
answer only relayouts its own label, and each answer carries its own copy
button, adapter badge and sources. Colours come from the palette roles (Base,
AlternateBase), so light and dark system themes both work.
"""
from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from PySide6.QtCore import Qt, QTimer, Signal
from PySide6.QtGui import QFont, QGuiApplication, QPalette, QTextCursor, QTextOption
from PySide6.QtWidgets import (QFrame, QHBoxLayout, QLabel, QListWidget, QListWidgetItem, QMenu, QPlainTextEdit,
                               QPushButton, QScrollArea, QSizePolicy, QSplitter, QTextEdit, QToolButton, QVBoxLayout,
                               QWidget)

from ..core import adapter_badge
from ..prompts import ANSWER_TOKENS, parse_task, task_request
from . import jobs
from .qt import emit
from .worker import Cancel, Runner


class MessageText(QTextEdit):
    """Read-only text that is as tall as its content and wraps anywhere.

    A QLabel cannot break a long unbroken run (URLs, code, a model repeating one token), which
    would widen the whole conversation; this wraps at word boundaries or, failing that, anywhere.
    """

    def __init__(self, parent: QWidget | None = None):
        super().__init__(parent)
        self.setReadOnly(True)
        self.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse
                                     | Qt.TextInteractionFlag.TextSelectableByKeyboard)
        self.setFrameShape(QFrame.Shape.NoFrame)
        self.setVerticalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
        self.setHorizontalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
        self.setWordWrapMode(QTextOption.WrapMode.WrapAtWordBoundaryOrAnywhere)
        self.viewport().setAutoFillBackground(False)      # the message frame's palette shows through
        self.setSizePolicy(QSizePolicy.Policy.Expanding, QSizePolicy.Policy.Fixed)
        self.document().setDocumentMargin(0)
        self.document().documentLayout().documentSizeChanged.connect(self._fit)

    def _fit(self, *_a) -> None:
        h = int(self.document().size().height()) + 2
        if h != self.height():
            self.setFixedHeight(h)

    def resizeEvent(self, e) -> None:
        super().resizeEvent(e)
        self._fit()


class MessageWidget(QFrame):
    """One turn. Assistant turns show which adapter answered, their sources and a Copy button."""

    def __init__(self, role: str, text: str = "", meta: str = "", sources: list[dict] | None = None,
                 parent: QWidget | None = None):
        super().__init__(parent)
        self.role = role
        self.setFrameShape(QFrame.Shape.StyledPanel)
        self.setAutoFillBackground(True)
        self.setBackgroundRole(QPalette.ColorRole.AlternateBase if role == "user" else QPalette.ColorRole.Base)
        self.setSizePolicy(QSizePolicy.Policy.Preferred, QSizePolicy.Policy.Maximum)
        lay = QVBoxLayout(self)
        lay.setContentsMargins(10, 6, 10, 8)
        head = QHBoxLayout()
        who = QLabel("You" if role == "user" else "Tailor")
        f = QFont(who.font())
        f.setBold(True)
        who.setFont(f)
        head.addWidget(who)
        self.meta = QLabel(meta)
        self.meta.setForegroundRole(QPalette.ColorRole.PlaceholderText)
        head.addWidget(self.meta)
        head.addStretch(1)
        self.copy_btn = None
        if role == "assistant":
            self.copy_btn = QToolButton()
            self.copy_btn.setText("Copy")
            self.copy_btn.setAccessibleName("Copy this answer")
            self.copy_btn.setAutoRaise(True)
            self.copy_btn.clicked.connect(self.copy)
            head.addWidget(self.copy_btn)
        lay.addLayout(head)
        self.body = MessageText()
        self.body.setAccessibleName("Your message" if role == "user" else "Answer")
        lay.addWidget(self.body)
        self.sources = QLabel()
        self.sources.setWordWrap(True)
        self.sources.setForegroundRole(QPalette.ColorRole.PlaceholderText)
        self.sources.setAccessibleName("Sources")
        self.sources.hide()
        lay.addWidget(self.sources)
        self._text = ""
        self.set_text(text)
        if sources:
            self.set_sources(sources)

    def text(self) -> str:
        return self._text

    def set_text(self, text: str) -> None:
        self._text = text
        self.body.setPlainText(text if text else "…")

    def append(self, piece: str) -> None:
        """Add a streamed piece at the end (no re-layout of the whole text)."""
        if not self._text:
            piece = piece.lstrip()
            if not piece:
                return
            self._text = piece
            self.body.setPlainText(piece)
            return
        self._text += piece
        cur = QTextCursor(self.body.document())
        cur.movePosition(QTextCursor.MoveOperation.End)
        cur.insertText(piece)

    def set_meta(self, meta: str) -> None:
        self.meta.setText(meta)

    def set_sources(self, sources: list[dict]) -> None:
        names = list(dict.fromkeys(Path(s["path"]).name for s in sources))
        if not names:
            self.sources.hide()
            return
        self.sources.setText("Sources: " + ", ".join(names))
        self.sources.setToolTip("\n\n".join(f"{Path(s['path']).name}: {s['text'][:200]}…" for s in sources))
        self.sources.show()

    def copy(self) -> None:
        QGuiApplication.clipboard().setText(self._text)


class ChatInput(QPlainTextEdit):
    """The prompt box. File drops go to the window (they import), not into the text."""

    def dragEnterEvent(self, e):
        if e.mimeData().hasUrls():
            e.ignore()
        else:
            super().dragEnterEvent(e)

    def dragMoveEvent(self, e):
        if e.mimeData().hasUrls():
            e.ignore()
        else:
            super().dragMoveEvent(e)


class ChatView(QWidget):
    answerStarted = Signal()
    answerPiece = Signal(str)
    answerFinished = Signal(dict)
    answerFailed = Signal(str)
    generatingChanged = Signal(bool)

    def __init__(self, runner: Runner, options: Callable[[], dict], parent: QWidget | None = None):
        super().__init__(parent)
        self.runner = runner
        self.options = options          # -> {"use_adapter", "scale", "rag"} from the window's controls
        self.max_tokens = ANSWER_TOKENS
        self.chat_id: int | None = None
        self.history: list[dict] = []   # {"role", "content"} of the open chat, as sent to the model
        self.widgets: list[MessageWidget] = []
        self._stop: Cancel | None = None
        self._current: MessageWidget | None = None
        self._build()

    # --- layout -------------------------------------------------------------------------
    def _build(self) -> None:
        outer = QHBoxLayout(self)
        outer.setContentsMargins(6, 6, 6, 6)
        split = QSplitter(Qt.Orientation.Horizontal)
        outer.addWidget(split)

        left = QWidget()
        ll = QVBoxLayout(left)
        ll.setContentsMargins(0, 0, 4, 0)
        self.new_btn = QPushButton("New chat")
        self.new_btn.setAccessibleName("Start a new chat")
        self.new_btn.clicked.connect(self.new_chat)
        ll.addWidget(self.new_btn)
        self.chat_list = QListWidget()
        self.chat_list.setAccessibleName("Chat history")
        self.chat_list.setHorizontalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
        self.chat_list.setTextElideMode(Qt.TextElideMode.ElideRight)
        self.chat_list.setWordWrap(False)
        self.chat_list.itemClicked.connect(lambda it: self.open_chat(it.data(Qt.ItemDataRole.UserRole)))
        self.chat_list.setContextMenuPolicy(Qt.ContextMenuPolicy.CustomContextMenu)
        self.chat_list.customContextMenuRequested.connect(self._chat_menu)
        ll.addWidget(self.chat_list, 1)
        split.addWidget(left)

        right = QWidget()
        rl = QVBoxLayout(right)
        rl.setContentsMargins(4, 0, 0, 0)
        self.scroll = QScrollArea()
        self.scroll.setWidgetResizable(True)
        self.scroll.setFrameShape(QFrame.Shape.NoFrame)
        self.scroll.setAccessibleName("Conversation")
        self.scroll.setHorizontalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
        holder = QWidget()
        self.msg_layout = QVBoxLayout(holder)
        self.msg_layout.setContentsMargins(0, 0, 6, 0)
        self.msg_layout.setSpacing(8)
        self.empty_label = QLabel("Ask anything. With personalization on, answers come from the model "
                                  "adapted to your documents.\nCtrl+Enter sends · Esc stops.")
        self.empty_label.setWordWrap(True)
        self.empty_label.setAlignment(Qt.AlignmentFlag.AlignCenter)
        self.empty_label.setForegroundRole(QPalette.ColorRole.PlaceholderText)
        self.msg_layout.addWidget(self.empty_label)
        self.msg_layout.addStretch(1)
        self.scroll.setWidget(holder)
        self.scroll.verticalScrollBar().rangeChanged.connect(self._stick_to_bottom)
        rl.addWidget(self.scroll, 1)

        self.input = ChatInput()
        self.input.setAccessibleName("Message")
        self.input.setPlaceholderText("Message Tailor…   (Ctrl+Enter to send)")
        self.input.setTabChangesFocus(True)
        fm = self.input.fontMetrics()
        self.input.setFixedHeight(fm.lineSpacing() * 4 + 14)
        rl.addWidget(self.input)
        row = QHBoxLayout()
        self.status = QLabel("")
        self.status.setForegroundRole(QPalette.ColorRole.PlaceholderText)
        self.status.setAccessibleName("Answer status")
        row.addWidget(self.status, 1)
        self.task_btn = QToolButton()
        self.task_btn.setText("Task")
        self.task_btn.setAccessibleName("Ask for a title or an abstract")
        self.task_btn.setToolTip("Write the request the adapter was trained on around what is in the box: it gets "
                                 "the whole strength and your nearest documents as worked examples")
        self.task_btn.setPopupMode(QToolButton.ToolButtonPopupMode.InstantPopup)
        tasks = QMenu(self.task_btn)
        tasks.addAction("Title for this abstract", lambda: self.start_task("headline"))
        tasks.addAction("Abstract for this title", lambda: self.start_task("writing"))
        self.task_btn.setMenu(tasks)
        row.addWidget(self.task_btn)
        self.regen_btn = QPushButton("Regenerate")
        self.regen_btn.setAccessibleName("Regenerate the last answer")
        self.regen_btn.clicked.connect(self.regenerate)
        self.stop_btn = QPushButton("Stop")
        self.stop_btn.setAccessibleName("Stop the answer")
        self.stop_btn.setToolTip("Stop (Esc)")
        self.stop_btn.clicked.connect(self.stop)
        self.send_btn = QPushButton("Send")
        self.send_btn.setAccessibleName("Send the message")
        self.send_btn.setToolTip("Send (Ctrl+Enter)")
        self.send_btn.setDefault(True)
        self.send_btn.clicked.connect(lambda: self.send())   # not `checked` as the text
        for b in (self.regen_btn, self.stop_btn, self.send_btn):
            row.addWidget(b)
        rl.addLayout(row)
        split.addWidget(right)
        split.setStretchFactor(1, 1)
        split.setSizes([170, 600])
        self._set_generating(False)

    def start_task(self, task: str) -> None:
        """Puts what is in the box (an abstract, a title; or an earlier task request's) into the task's
        request, word for word as trained, with the cursor where the person goes on typing. Only that
        wording gets the whole strength and the worked examples (app.prompts.request_strength)."""
        before, after = task_request(task)
        typed = self.input.toPlainText().strip()
        asked = parse_task(typed)
        if asked:
            typed = asked[2] or asked[1]
        self.input.setPlainText(before + typed + after)
        cursor = self.input.textCursor()
        cursor.setPosition(len((before + typed).encode("utf-16-le")) // 2)     # Qt counts UTF-16 units
        self.input.setTextCursor(cursor)
        self.input.setFocus()

    def _stick_to_bottom(self, _lo, hi) -> None:
        if self._current is not None:
            self.scroll.verticalScrollBar().setValue(hi)

    # --- history --------------------------------------------------------------------------
    def set_chats(self, chats: list[dict]) -> None:
        self.chat_list.clear()
        for c in chats:
            it = QListWidgetItem(c["title"])
            it.setData(Qt.ItemDataRole.UserRole, c["id"])
            it.setToolTip(c["title"])
            self.chat_list.addItem(it)
            if c["id"] == self.chat_id:
                it.setSelected(True)

    def _chat_menu(self, pos) -> None:
        it = self.chat_list.itemAt(pos)
        if it is None:
            return
        menu = QMenu(self)
        menu.addAction("Delete chat", lambda: self.delete_chat(it.data(Qt.ItemDataRole.UserRole)))
        menu.popup(self.chat_list.mapToGlobal(pos))

    def delete_chat(self, chat_id: int) -> None:
        if self.generating:
            return
        if chat_id == self.chat_id:
            self.new_chat()
        self.runner.submit(jobs.delete_chat(chat_id), done=self.set_chats)

    def clear_messages(self) -> None:
        for w in self.widgets:
            w.setParent(None)
            w.deleteLater()
        self.widgets = []
        self.empty_label.show()

    def new_chat(self) -> None:
        if self.generating:
            return
        self.chat_id = None
        self.history = []
        self.clear_messages()
        self.chat_list.clearSelection()
        self.input.setFocus()

    def open_chat(self, chat_id: int) -> None:
        if self.generating or chat_id == self.chat_id:
            return

        def done(msgs):
            self.chat_id = chat_id
            self.clear_messages()
            self.history = [{"role": m["role"], "content": m["content"]} for m in msgs]
            for m in msgs:
                meta = adapter_badge(m["adapter_version"]) if m["role"] == "assistant" else ""
                self._add(MessageWidget(m["role"], m["content"] or "(stopped)", meta, m["sources"]))
            QTimer.singleShot(0, lambda: self.scroll.verticalScrollBar().setValue(
                self.scroll.verticalScrollBar().maximum()))
        self.runner.submit(jobs.load_chat(chat_id), done=done)

    def _add(self, w: MessageWidget) -> MessageWidget:
        self.empty_label.hide()
        self.msg_layout.insertWidget(self.msg_layout.count() - 1, w)
        self.widgets.append(w)
        return w

    # --- answering ------------------------------------------------------------------------
    @property
    def generating(self) -> bool:
        return self._stop is not None

    def _set_generating(self, on: bool) -> None:
        self.send_btn.setEnabled(not on)
        self.stop_btn.setEnabled(on)
        self.regen_btn.setEnabled(not on and bool(self.history) and self.history[-1]["role"] == "assistant")
        self.new_btn.setEnabled(not on)
        emit(self.generatingChanged, on)

    def send(self, text: str | None = None) -> bool:
        text = (text if text is not None else self.input.toPlainText()).strip()
        if not text or self.generating:
            return False
        self.input.clear()
        self._add(MessageWidget("user", text))
        prior = list(self.history)
        self.history.append({"role": "user", "content": text})
        self._start(prompt=text, prior=prior, title=text.splitlines()[0][:60])
        return True

    def regenerate(self) -> None:
        if self.generating or not self.history or self.history[-1]["role"] != "assistant":
            return
        self.history.pop()
        last = self.widgets.pop()
        last.setParent(None)
        last.deleteLater()
        if self.chat_id is not None:
            self.runner.submit(jobs.drop_last_answer(self.chat_id))
        self._start(prompt=None, prior=list(self.history), title="")

    def _start(self, prompt: str | None, prior: list[dict], title: str) -> None:
        opts = self.options()
        self._stop = Cancel()
        w = self._current = self._add(MessageWidget("assistant", "", "thinking…"))
        self.scroll.verticalScrollBar().setValue(self.scroll.verticalScrollBar().maximum())
        self._set_generating(True)
        self.status.setText("Loading the model…" if not self.runner.engine else "Answering…")
        emit(self.answerStarted)

        def progress(p):
            if p["kind"] == "start":
                w.set_meta(adapter_badge(p["adapter_version"], p["strength"], p["words"]))
                self.status.setText("Answering…")
            else:
                w.append(p["text"])
                emit(self.answerPiece, p["text"])

        def done(out):
            self._end()
            self.chat_id = out["chat_id"]
            w.set_text(out["text"] or ("(stopped)" if out["stopped"] else "(no answer)"))
            w.set_sources(out["sources"])
            self.history.append({"role": "assistant", "content": out["text"]})
            self.status.setText(f"{out['tokens']} tokens · first after {out['first_token_ms'] / 1000:.1f} s"
                                + (f" · {out['tokens_per_s']:.0f} tokens/s" if out["tokens_per_s"] else "")
                                + (" · stopped" if out["stopped"] else ""))
            self.set_chats(out["chats"])
            self._set_generating(False)
            emit(self.answerFinished, out)

        def failed(msg):
            self._end()
            w.set_text(f"Could not answer: {msg}")
            w.set_meta("error")
            self.status.setText("")
            self._set_generating(False)
            emit(self.answerFailed, msg)

        job = jobs.answer(self.runner, chat_id=self.chat_id, title=title, history=prior, prompt=prompt,
                          opts=opts | {"max_tokens": self.max_tokens}, stop=self._stop)
        self.runner.submit(job, done=done, failed=failed, progress=progress)

    def _end(self) -> None:
        self._stop = None
        self._current = None

    def stop(self) -> None:
        if self._stop is not None:
            self._stop.set()
            self.runner.stop_generation()
            self.status.setText("Stopping…")
