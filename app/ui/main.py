"""The main window, wiring the panels to one worker that owns the core.

Layout: the profile (documents, adapter status) on the left; on the right the
first-run page until there is a profile, then Chat and Compare tabs. The
personalization switch, strength and retrieval sit in the toolbar because they
apply to both tabs.
"""
from __future__ import annotations

from pathlib import Path

from PySide6.QtCore import Qt, QTimer, Signal
from PySide6.QtGui import QAction, QKeySequence, QPalette, QShortcut
from PySide6.QtWidgets import (QCheckBox, QComboBox, QFrame, QHBoxLayout, QInputDialog, QLabel, QMainWindow,
                               QPushButton, QSizePolicy, QSlider, QSplitter, QStackedWidget, QTabWidget, QToolBar,
                               QVBoxLayout, QWidget)

from ..prompts import CHAT_STRENGTH
from . import jobs
from .chat import ChatView
from .compare import CompareView
from .profile import ProfilePanel
from .qt import emit
from .settings import SettingsDialog
from .welcome import WelcomePage, sample_profile_dir
from .worker import Runner

SAVE_DELAY_MS = 600


class Banner(QFrame):
    """A dismissable one-line message for failures: readable, non-modal, never a traceback."""

    def __init__(self, parent: QWidget | None = None):
        super().__init__(parent)
        self.setFrameShape(QFrame.Shape.StyledPanel)
        self.setAutoFillBackground(True)
        self.setBackgroundRole(QPalette.ColorRole.ToolTipBase)
        self.setForegroundRole(QPalette.ColorRole.ToolTipText)
        lay = QHBoxLayout(self)
        lay.setContentsMargins(10, 4, 4, 4)
        self.label = QLabel()
        self.label.setWordWrap(True)
        self.label.setForegroundRole(QPalette.ColorRole.ToolTipText)
        self.label.setAccessibleName("Message")
        close = QPushButton("Dismiss")
        close.setAccessibleName("Dismiss the message")
        close.setFlat(True)
        close.clicked.connect(self.hide)
        lay.addWidget(self.label, 1)
        lay.addWidget(close)
        self.hide()

    def show_message(self, text: str) -> None:
        self.label.setText(text)
        self.show()


class MainWindow(QMainWindow):
    ready = Signal(dict)        # the first snapshot arrived: the core is up

    def __init__(self, home: str | Path | None = None, tailor_factory=None):
        super().__init__()
        self.setWindowTitle("Tailor")
        self.setAcceptDrops(True)
        self.resize(1180, 760)
        from ..core import Tailor
        self.runner = Runner(tailor_factory or (lambda: Tailor(Path(home) if home else None)), self)
        self.settings: dict = {}
        self.home = str(home or "")
        self.root = ""              # the data dir: the default profile's home, the named ones under it
        self.current_profile = "default"
        self._skipped_welcome = False
        self._loading = True

        self.banner = Banner()
        self.runner.failed.connect(self.banner.show_message)
        self.profile = ProfilePanel(self.runner)
        self.chat = ChatView(self.runner, self.answer_options)
        self.compare = CompareView(self.runner, self.answer_options)
        self.welcome = WelcomePage()
        self.tabs = QTabWidget()
        self.tabs.setAccessibleName("Chat and compare")
        self.tabs.addTab(self.chat, "Chat")
        self.tabs.addTab(self.compare, "Compare")
        self.stack = QStackedWidget()
        self.stack.addWidget(self.welcome)
        self.stack.addWidget(self.tabs)

        right = QWidget()
        rl = QVBoxLayout(right)
        rl.setContentsMargins(4, 8, 8, 8)
        rl.addWidget(self.stack)
        split = QSplitter(Qt.Orientation.Horizontal)
        split.addWidget(self.profile)
        split.addWidget(right)
        split.setStretchFactor(1, 1)
        split.setCollapsible(0, False)
        split.setCollapsible(1, False)
        split.setSizes([360, 820])
        central = QWidget()
        cl = QVBoxLayout(central)
        cl.setContentsMargins(0, 0, 0, 0)
        cl.setSpacing(0)
        cl.addWidget(self.banner)
        cl.addWidget(split, 1)
        self.setCentralWidget(central)
        self._build_toolbar()
        self._status = QLabel("Starting…")
        self._status.setAccessibleName("Status")
        self.statusBar().addWidget(self._status, 1)

        self.welcome.addFiles.connect(self.profile.choose_files)
        self.welcome.addFolder.connect(self.profile.choose_folder)
        self.welcome.useSample.connect(self.use_sample)
        self.welcome.skip.connect(self._skip_welcome)
        self.profile.snapshotChanged.connect(self._on_snapshot)
        self.profile.adapterReady.connect(self._on_adapter)
        self.profile.regeneratingChanged.connect(self._update_status)
        self.profile.importFinished.connect(lambda _o: self._update_status())
        self.chat.generatingChanged.connect(lambda _on: self._update_status())
        self.compare.generatingChanged.connect(lambda _on: self._update_status())
        self.runner.busyChanged.connect(lambda _b: self._update_status())

        for seq in ("Ctrl+Return", "Ctrl+Enter"):
            QShortcut(QKeySequence(seq), self, self.send_current)
        QShortcut(QKeySequence(Qt.Key.Key_Escape), self, self.stop)

        self._save_timer = QTimer(self, singleShot=True, interval=SAVE_DELAY_MS)
        self._save_timer.timeout.connect(self._save_controls)
        self.runner.submit(jobs.snapshot, done=self._first_snapshot)

    # --- toolbar: personalization -----------------------------------------------------------
    def _build_toolbar(self) -> None:
        tb = QToolBar("Personalization")
        tb.setObjectName("personalization")
        tb.setMovable(False)
        self.addToolBar(tb)
        tb.addWidget(QLabel(" Profile "))
        self.profile_box = QComboBox()
        self.profile_box.setAccessibleName("Profile")
        self.profile_box.setToolTip("Whose documents, adapter and chats: each profile keeps its own")
        self.profile_box.setMinimumContentsLength(10)
        self.profile_box.activated.connect(self._profile_chosen)
        tb.addWidget(self.profile_box)
        tb.addSeparator()
        self.personalize = QCheckBox("Personalize")
        self.personalize.setAccessibleName("Personalize answers")
        self.personalize.setToolTip("Answer with your adapter (off: the base model)")
        self.personalize.setChecked(True)
        tb.addWidget(self.personalize)
        tb.addSeparator()
        self.strength_label = QLabel("  Strength ")
        tb.addWidget(self.strength_label)
        self.strength = QSlider(Qt.Orientation.Horizontal)
        self.strength.setRange(0, 200)
        self.strength.setValue(100)
        self.strength.setSingleStep(5)
        self.strength.setPageStep(25)
        self.strength.setFixedWidth(160)
        self.strength.setAccessibleName("Personalization strength")
        self.strength.setToolTip("Adapter scale: 0 is the base model, 1 as trained, 2 exaggerated. Title and "
                                 "abstract requests get all of it, anything else "
                                 f"{CHAT_STRENGTH:.0%} (it pulls everyday chat toward its two tasks)")
        tb.addWidget(self.strength)
        self.strength_value = QLabel("1.00")
        self.strength_value.setMinimumWidth(36)
        tb.addWidget(self.strength_value)
        tb.addSeparator()
        self.rag = QCheckBox("Cite my documents")
        self.rag.setAccessibleName("Use retrieval from my documents")
        self.rag.setToolTip("Put the passages of your documents closest to the question into the prompt, "
                            "and show them as sources. A title or abstract request in the examples' words "
                            "gets your closest documents as worked examples instead (on by default: Settings)")
        tb.addWidget(self.rag)
        spacer = QWidget()
        spacer.setSizePolicy(QSizePolicy.Policy.Expanding, QSizePolicy.Policy.Preferred)
        tb.addWidget(spacer)
        self.settings_action = QAction("Settings…", self)
        self.settings_action.setShortcut(QKeySequence(QKeySequence.StandardKey.Preferences))
        self.settings_action.triggered.connect(self.open_settings)
        tb.addAction(self.settings_action)
        tb.widgetForAction(self.settings_action).setAccessibleName("Open settings")
        self.personalize.toggled.connect(self._controls_changed)
        self.strength.valueChanged.connect(self._controls_changed)
        self.rag.toggled.connect(self._controls_changed)

    def _controls_changed(self, *_a) -> None:
        self.strength_value.setText(f"{self.strength.value() / 100:.2f}")
        self.strength.setEnabled(self.personalize.isChecked())
        if not self._loading:
            self._save_timer.start()

    def _save_controls(self) -> None:
        o = self.answer_options()
        self.runner.submit(jobs.update_settings(o), done=lambda s: self.settings.update(s))

    def answer_options(self) -> dict:
        return {"use_adapter": self.personalize.isChecked(), "scale": self.strength.value() / 100,
                "rag": self.rag.isChecked()}

    # --- profiles ---------------------------------------------------------------------------
    NEW_PROFILE = "New profile…"

    def set_profiles(self, names: list[str], current: str) -> None:
        self.profile_box.blockSignals(True)
        self.profile_box.clear()
        self.profile_box.addItems(names + [self.NEW_PROFILE])
        self.profile_box.setCurrentText(current)
        self.profile_box.blockSignals(False)
        self.current_profile = current

    def _profile_chosen(self, _index: int) -> None:
        name = self.profile_box.currentText()
        if name == self.NEW_PROFILE:
            name, ok = QInputDialog.getText(self, "New profile", "Name (letters, digits, - or _):")
            if not ok or not name.strip():
                self.profile_box.setCurrentText(self.current_profile)
                return
            self.switch_profile(name.strip(), create=True)
        elif name != self.current_profile:
            self.switch_profile(name)

    def _profiles_listed(self, out: dict) -> None:
        """At start: the profiles for the toolbar, and the app reopens on the one the person used last."""
        self.set_profiles(out["names"], self.current_profile)
        if out["last"] != self.current_profile:
            self.switch_profile(out["last"])

    def switch_profile(self, name: str, create: bool = False) -> None:
        """Everything the window shows moves to the other profile; the base model stays loaded."""
        from ..paths import ProfileError, check_profile_name
        try:
            check_profile_name(name)
        except ProfileError as e:
            self.banner.show_message(str(e))
            self.profile_box.setCurrentText(self.current_profile)
            return
        self.chat.new_chat()
        self.runner.submit(jobs.switch_profile(self.root, name, create), done=self._switched,
                           failed=lambda _m: self.profile_box.setCurrentText(self.current_profile))

    def _switched(self, snap: dict) -> None:
        self.set_profiles(snap["profiles"], snap["profile"])
        self._loading = True
        self.profile.update_watcher()        # the folders watched are the new profile's (none: none)
        self._first_snapshot(snap)
        self._on_snapshot(snap)

    # --- state ------------------------------------------------------------------------------
    def _first_snapshot(self, snap: dict) -> None:
        self.home = snap["home"]
        if not self.root:               # the app opens on the default profile, which lives in the data dir
            self.root = snap["home"]
            self.set_profiles(["default"], "default")
            self.runner.submit(jobs.profiles(self.root), done=self._profiles_listed)
        s = snap["settings"]
        self.personalize.setChecked(bool(s.get("use_adapter", True)))
        self.strength.setValue(round(float(s.get("scale", 1.0)) * 100))
        self.rag.setChecked(bool(s.get("rag", False)))
        self._loading = False
        self._controls_changed()
        self._save_timer.stop()
        self.profile.apply_snapshot(snap)
        self.chat.set_chats(snap["chats"])
        if s.get("watched"):
            self.profile.update_watcher()
            self.profile.rescan_watched()       # catch up on what changed while Tailor was closed
        if snap["stats"]["documents"]:
            self.runner.submit(jobs.warm_up)
        if snap["adapter_stale"]:           # the core's one rule (Tailor.adapter_stale)
            self.profile.regenerate()
        emit(self.ready, snap)
        self._update_status()

    def _on_snapshot(self, snap: dict) -> None:
        self.settings = snap["settings"]
        has_docs = bool(snap["stats"]["documents"])
        if has_docs or snap.get("chats") or self._skipped_welcome or self.profile.importing:
            self.stack.setCurrentWidget(self.tabs)
        else:
            self.stack.setCurrentWidget(self.welcome)
        a = snap.get("adapter")
        self.compare.set_adapter(a["version"] if a else None)

    def _on_adapter(self, a: dict) -> None:
        self.compare.set_adapter(a["version"])
        self._update_status()

    def _skip_welcome(self) -> None:
        self._skipped_welcome = True
        self.stack.setCurrentWidget(self.tabs)
        self.chat.input.setFocus()

    def _update_status(self, *_a) -> None:
        if self.profile.importing:
            text = "Importing documents…"
        elif self.profile.regenerating:
            text = "Regenerating the adapter…"
        elif self.chat.generating or self.compare.generating:
            text = "Answering…"
        elif self.runner.busy:
            text = "Working…"
        else:
            a = self.profile.snapshot.get("adapter")
            on = self.personalize.isChecked() and a is not None
            text = (f"Ready · personalized with adapter v{a['version']}" if on else
                    "Ready · base model" + (" (personalization off)" if a is not None else ""))
        self._status.setText(text)

    # --- actions ------------------------------------------------------------------------------
    def import_paths(self, paths) -> None:
        self.profile.import_paths(paths)
        self.stack.setCurrentWidget(self.tabs)

    def use_sample(self) -> None:
        self.import_paths([sample_profile_dir()])

    def send_current(self) -> None:
        if self.stack.currentWidget() is not self.tabs:
            return
        if self.tabs.currentWidget() is self.compare:
            self.compare.run()
        else:
            self.chat.send()

    def stop(self) -> None:
        self.chat.stop()
        self.compare.stop()

    def open_settings(self) -> SettingsDialog:
        dlg = SettingsDialog(self.settings, self.home, self)

        def accepted():
            changed = dlg.changed()
            restart = dlg.needs_restart()
            if changed:
                self.runner.submit(jobs.update_settings(changed), done=lambda s: self.settings.update(s))
            if restart:
                self.banner.show_message("Saved. The new model, threads, GPU layers or data directory take "
                                         "effect the next time Tailor starts.")
        dlg.accepted.connect(accepted)
        dlg.open()
        return dlg

    # --- drag and drop ------------------------------------------------------------------------
    @staticmethod
    def _local_paths(mime) -> list[str]:
        return [u.toLocalFile() for u in mime.urls() if u.isLocalFile()] if mime.hasUrls() else []

    def dragEnterEvent(self, e) -> None:
        if self._local_paths(e.mimeData()):
            e.acceptProposedAction()
        else:
            e.ignore()

    def dragMoveEvent(self, e) -> None:
        self.dragEnterEvent(e)

    def dropEvent(self, e) -> None:
        paths = self._local_paths(e.mimeData())
        if paths:
            e.acceptProposedAction()
            self.import_paths(paths)

    def closeEvent(self, e) -> None:
        self.profile.cancel_import()
        self.runner.shutdown()
        super().closeEvent(e)
