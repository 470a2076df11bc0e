"""Settings: data directory, threads, GPU layers, retrieval k, worked examples, model file.

The dialog edits a copy of the core's settings and hands the changed values
back; the window applies them on the worker. The base model is built once per
process, so the model file, threads and GPU layers take effect on the next
start, and the dialog says so instead of silently doing nothing.

The data directory is chosen before the core starts (the database lives in
it), so a new one is recorded with app.paths.choose_data_dir -- the one setting
the CLI reads too -- and used from the next start; $TAILOR_HOME, when set, wins.
"""
from __future__ import annotations

import os
from pathlib import Path

from PySide6.QtCore import QSettings
from PySide6.QtGui import QPalette
from PySide6.QtWidgets import (QCheckBox, QDialog, QDialogButtonBox, QFileDialog, QFormLayout, QHBoxLayout, QLabel,
                               QLineEdit, QPushButton, QSpinBox, QVBoxLayout, QWidget)

from ..paths import choose_data_dir, chosen_data_dir

RESTART_KEYS = ("model_path", "threads", "gpu_layers")


def migrate_qsettings_data_dir() -> None:
    """Earlier versions kept the chosen data directory in QSettings only, where the CLI could not see it
    (so `tailor wipe` missed the person's data): move it to the shared setting once."""
    qs = QSettings("Tailor", "Tailor")
    old = qs.value("data_dir")
    if old and chosen_data_dir() is None:
        choose_data_dir(Path(str(old)))
    if old:
        qs.remove("data_dir")


class SettingsDialog(QDialog):
    def __init__(self, settings: dict, home: str, parent: QWidget | None = None):
        super().__init__(parent)
        self.setWindowTitle("Tailor settings")
        self.setAccessibleName("Settings")
        self._orig = dict(settings)
        self._home = home
        self.new_data_dir: str | None = None
        lay = QVBoxLayout(self)
        form = QFormLayout()

        drow = QHBoxLayout()
        self.data_dir = QLineEdit(home)
        self.data_dir.setReadOnly(True)
        self.data_dir.setAccessibleName("Data directory")
        self.data_dir.setMinimumWidth(360)
        self.data_btn = QPushButton("Change…")
        self.data_btn.setAccessibleName("Choose another data directory")
        self.data_btn.clicked.connect(self._choose_dir)
        self.data_btn.setEnabled(not os.environ.get("TAILOR_HOME"))
        if os.environ.get("TAILOR_HOME"):
            self.data_btn.setToolTip("Set by $TAILOR_HOME")
        drow.addWidget(self.data_dir, 1)
        drow.addWidget(self.data_btn)
        form.addRow("Data directory:", drow)

        self.threads = QSpinBox()
        self.threads.setRange(0, max(64, os.cpu_count() or 1))
        self.threads.setSpecialValueText(f"All cores ({os.cpu_count() or 1})")
        self.threads.setValue(int(settings.get("threads") or 0))
        self.threads.setAccessibleName("CPU threads")
        form.addRow("CPU threads:", self.threads)

        self.gpu = QSpinBox()
        self.gpu.setRange(0, 999)
        self.gpu.setSpecialValueText("None (CPU only)")
        self.gpu.setValue(int(settings.get("gpu_layers") or 0))
        self.gpu.setAccessibleName("GPU layers")
        form.addRow("GPU layers:", self.gpu)

        self.k = QSpinBox()
        self.k.setRange(1, 20)
        self.k.setValue(int(settings.get("rag_k") or 4))
        self.k.setAccessibleName("Passages retrieved per answer")
        form.addRow("Sources per answer:", self.k)

        self.examples = QCheckBox("Answer title and abstract requests after my closest documents")
        self.examples.setChecked(bool(settings.get("examples", True)))
        self.examples.setAccessibleName("Worked examples from my documents")
        self.examples.setToolTip("A request worded as one of the two tasks (the Compare tab offers both) is answered "
                                 "after your closest titled documents, shown as earlier turns of the same task: "
                                 "with the adapter, the best-scoring form in the evaluation")
        form.addRow("Worked examples:", self.examples)

        self.words = QCheckBox("Raise the words of my documents where none is in the prompt")
        self.words.setChecked(bool(settings.get("words", True)))
        self.words.setAccessibleName("My words")
        self.words.setToolTip("With Personalize on, an answer whose prompt holds none of your documents (an "
                              "everyday question, a request without worked examples) leans toward the vocabulary "
                              "your documents use more than other people's, at the adapter's strength")
        form.addRow("My words:", self.words)

        mrow = QHBoxLayout()
        self.model = QLineEdit(settings.get("model_path") or "")
        self.model.setPlaceholderText("Bundled SmolLM2-135M-Instruct")
        self.model.setAccessibleName("Base model file")
        self.model_btn = QPushButton("Browse…")
        self.model_btn.setAccessibleName("Choose a base model file")
        self.model_btn.clicked.connect(self._choose_model)
        self.model_reset = QPushButton("Default")
        self.model_reset.setAccessibleName("Use the bundled base model")
        self.model_reset.clicked.connect(self.model.clear)
        mrow.addWidget(self.model, 1)
        mrow.addWidget(self.model_btn)
        mrow.addWidget(self.model_reset)
        form.addRow("Base model:", mrow)
        lay.addLayout(form)

        self.note = QLabel("Model, threads and GPU layers take effect the next time Tailor starts. "
                           "Adapters are made for one base model; a different model needs a matching "
                           "hypernetwork.")
        self.note.setWordWrap(True)
        self.note.setForegroundRole(QPalette.ColorRole.PlaceholderText)
        lay.addWidget(self.note)
        buttons = QDialogButtonBox(QDialogButtonBox.StandardButton.Ok | QDialogButtonBox.StandardButton.Cancel)
        buttons.button(QDialogButtonBox.StandardButton.Ok).setAccessibleName("Save settings")
        buttons.button(QDialogButtonBox.StandardButton.Cancel).setAccessibleName("Discard changes")
        buttons.accepted.connect(self.accept)
        buttons.rejected.connect(self.reject)
        lay.addWidget(buttons)

    def _choose_dir(self) -> None:
        d = QFileDialog.getExistingDirectory(self, "Data directory", self._home)
        if d:
            self.new_data_dir = d
            self.data_dir.setText(d)
            self.note.setText(f"Tailor will keep its data in {d} from the next start. "
                              f"Nothing is moved; {self._home} stays as it is.")

    def _choose_model(self) -> None:
        f, _ = QFileDialog.getOpenFileName(self, "Base model", str(Path.home()), "GGUF models (*.gguf)")
        if f:
            self.model.setText(f)

    def values(self) -> dict:
        return {"threads": self.threads.value(), "gpu_layers": self.gpu.value(), "rag_k": self.k.value(),
                "examples": self.examples.isChecked(), "words": self.words.isChecked(), "model_path": self.model.text().strip() or None}

    def changed(self) -> dict:
        return {k: v for k, v in self.values().items() if self._orig.get(k) != v}

    def needs_restart(self) -> bool:
        return any(k in RESTART_KEYS for k in self.changed()) or bool(self.new_data_dir)

    def accept(self) -> None:
        if self.new_data_dir:
            choose_data_dir(Path(self.new_data_dir))
        super().accept()
