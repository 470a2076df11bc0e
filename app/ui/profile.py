"""The profile panel: what Tailor knows about the person, and the adapter made from it.

It is also the controller for profile changes, because every change (import,
forget, a watched folder changing) must end the same way: the adapter is
regenerated and the status says so ("regenerating…", then version and time).
Regenerations requested while one runs are coalesced into one more.
"""
from __future__ import annotations

import time
from pathlib import Path

from PySide6.QtCore import QFileSystemWatcher, Qt, QTimer, Signal
from PySide6.QtGui import QFont, QKeySequence, QShortcut
from PySide6.QtWidgets import (QAbstractItemView, QFileDialog, QFrame, QGroupBox, QHBoxLayout, QHeaderView, QLabel,
                               QProgressBar, QPushButton, QTreeWidget, QTreeWidgetItem, QVBoxLayout, QWidget)

from . import jobs
from .qt import emit
from .worker import Cancel, Runner

STATUS_TEXT = {"ok": "ready", "failed": "failed", "duplicate": "duplicate"}
RESCAN_DELAY_MS = 1500      # a folder being written to fires many change events; wait for it to settle


def _seconds(ms: float | None) -> str:
    return f"{ms / 1000:.1f} s" if ms is not None else "?"


class ProfilePanel(QWidget):
    snapshotChanged = Signal(dict)      # docs, stats, adapter, settings, chats (see jobs.snapshot)
    importProgress = Signal(int, int, str)   # done, total, current file
    importFinished = Signal(dict)
    adapterReady = Signal(dict)         # {"version", "path", "ms"}
    adapterFailed = Signal(str)
    regeneratingChanged = Signal(bool)

    def __init__(self, runner: Runner, parent: QWidget | None = None):
        super().__init__(parent)
        self.runner = runner
        self.snapshot: dict = {}
        self._cancels: list[Cancel] = []
        self._imports = 0
        self._adapting = False
        self._adapt_again = False
        self._watcher = QFileSystemWatcher(self)
        self._watcher.directoryChanged.connect(lambda _p: self._rescan_timer.start())
        self._rescan_timer = QTimer(self, singleShot=True, interval=RESCAN_DELAY_MS)
        self._rescan_timer.timeout.connect(self.rescan_watched)
        self._build()

    # --- layout -----------------------------------------------------------------
    def _build(self) -> None:
        self.setMinimumWidth(280)
        lay = QVBoxLayout(self)
        lay.setContentsMargins(8, 8, 8, 8)
        title = QLabel("Your profile")
        f = QFont(title.font())
        f.setPointSizeF(f.pointSizeF() * 1.3)
        f.setBold(True)
        title.setFont(f)
        lay.addWidget(title)

        box = QGroupBox("Adapter")
        box.setAccessibleName("Adapter status")
        bl = QVBoxLayout(box)
        self.adapter_label = QLabel("No adapter yet")
        self.adapter_label.setAccessibleName("Adapter version")
        bf = QFont(self.adapter_label.font())
        bf.setBold(True)
        self.adapter_label.setFont(bf)
        self.stats_label = QLabel("0 documents · 0 chunks")
        self.stats_label.setAccessibleName("Profile size")
        self.time_label = QLabel("Import your writing to make one.")
        self.time_label.setAccessibleName("Adapter timing")
        self.time_label.setWordWrap(True)
        self.adapt_bar = QProgressBar()
        self.adapt_bar.setRange(0, 0)
        self.adapt_bar.setTextVisible(False)
        self.adapt_bar.setMaximumHeight(8)
        self.adapt_bar.setAccessibleName("Regenerating the adapter")
        self.adapt_bar.hide()
        for w in (self.adapter_label, self.stats_label, self.time_label, self.adapt_bar):
            bl.addWidget(w)
        lay.addWidget(box)

        row = QHBoxLayout()
        self.add_files_btn = QPushButton("Add files…")
        self.add_files_btn.setAccessibleName("Add files to your profile")
        self.add_files_btn.clicked.connect(self.choose_files)
        self.add_folder_btn = QPushButton("Add folder…")
        self.add_folder_btn.setAccessibleName("Add a folder to your profile")
        self.add_folder_btn.clicked.connect(self.choose_folder)
        row.addWidget(self.add_files_btn)
        row.addWidget(self.add_folder_btn)
        lay.addLayout(row)

        self.import_box = QFrame()
        il = QVBoxLayout(self.import_box)
        il.setContentsMargins(0, 0, 0, 0)
        self.import_label = QLabel("")
        self.import_label.setAccessibleName("Import progress")
        self.import_label.setWordWrap(True)
        prow = QHBoxLayout()
        self.import_bar = QProgressBar()
        self.import_bar.setAccessibleName("Import progress bar")
        self.cancel_btn = QPushButton("Cancel")
        self.cancel_btn.setAccessibleName("Cancel the import")
        self.cancel_btn.clicked.connect(self.cancel_import)
        prow.addWidget(self.import_bar, 1)
        prow.addWidget(self.cancel_btn)
        il.addWidget(self.import_label)
        il.addLayout(prow)
        self.import_box.hide()
        lay.addWidget(self.import_box)

        self.summary_label = QLabel("")
        self.summary_label.setAccessibleName("Last import")
        self.summary_label.setWordWrap(True)
        self.summary_label.hide()
        lay.addWidget(self.summary_label)

        self.tree = QTreeWidget()
        self.tree.setAccessibleName("Documents in your profile")
        self.tree.setHeaderLabels(["Document", "Chunks", "Status"])
        self.tree.setRootIsDecorated(False)
        self.tree.setSelectionMode(QAbstractItemView.SelectionMode.ExtendedSelection)
        self.tree.setUniformRowHeights(False)
        self.tree.setWordWrap(True)
        hdr = self.tree.header()
        hdr.setStretchLastSection(False)
        hdr.setSectionResizeMode(0, QHeaderView.ResizeMode.Stretch)
        hdr.setSectionResizeMode(1, QHeaderView.ResizeMode.ResizeToContents)
        hdr.setSectionResizeMode(2, QHeaderView.ResizeMode.ResizeToContents)
        self.tree.itemSelectionChanged.connect(self._selection_changed)
        lay.addWidget(self.tree, 1)

        brow = QHBoxLayout()
        self.forget_btn = QPushButton("Forget selected")
        self.forget_btn.setAccessibleName("Forget the selected documents")
        self.forget_btn.setToolTip("Remove the documents, their text and every adapter made from them")
        self.forget_btn.setEnabled(False)
        self.forget_btn.clicked.connect(self.forget_selected)
        brow.addWidget(self.forget_btn)
        brow.addStretch(1)
        lay.addLayout(brow)
        QShortcut(QKeySequence(QKeySequence.StandardKey.Delete), self.tree, self.forget_selected,
                  context=Qt.ShortcutContext.WidgetShortcut)

        wrow = QHBoxLayout()
        self.watch_label = QLabel("")
        self.watch_label.setAccessibleName("Watched folders")
        self.watch_label.setWordWrap(True)
        self.unwatch_btn = QPushButton("Stop watching")
        self.unwatch_btn.setAccessibleName("Stop watching folders")
        self.unwatch_btn.setFlat(True)
        self.unwatch_btn.clicked.connect(self.stop_watching)
        wrow.addWidget(self.watch_label, 1)
        wrow.addWidget(self.unwatch_btn)
        lay.addLayout(wrow)
        self._show_watched([])

    # --- state --------------------------------------------------------------------
    @property
    def importing(self) -> bool:
        return self._imports > 0

    @property
    def regenerating(self) -> bool:
        return self._adapting

    def has_documents(self) -> bool:
        return bool(self.snapshot.get("stats", {}).get("documents"))

    def refresh(self) -> None:
        self.runner.submit(jobs.snapshot, done=self.apply_snapshot)

    def apply_snapshot(self, snap: dict) -> None:
        self.snapshot = snap
        self._fill_tree(snap["docs"])
        st = snap["stats"]
        self.stats_label.setText(f"{st['documents']} document{'s' * (st['documents'] != 1)} · "
                                 f"{st['chunks']} chunk{'s' * (st['chunks'] != 1)}"
                                 + (f" · {st['failed']} failed" if st.get("failed") else ""))
        if not self._adapting:
            self._show_adapter(snap.get("adapter"))
        self._show_watched(snap["settings"].get("watched", []))
        emit(self.snapshotChanged, snap)

    def _fill_tree(self, docs: list[dict]) -> None:
        self.tree.clear()
        for d in docs:
            name = d.get("title") or Path(d["path"]).name
            item = QTreeWidgetItem([Path(d["path"]).name, str(d["n_chunks"]) if d["status"] == "ok" else "",
                                    STATUS_TEXT.get(d["status"], d["status"])])
            item.setData(0, Qt.ItemDataRole.UserRole, d["id"])
            item.setToolTip(0, f"{name}\n{d['path']}")
            item.setTextAlignment(1, Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter)
            if d.get("error"):
                item.setToolTip(2, d["error"])
                note = QTreeWidgetItem([d["error"]])
                note.setFlags(Qt.ItemFlag.ItemIsEnabled)
                note.setToolTip(0, d["error"])
                f = QFont(note.font(0))
                f.setItalic(True)
                note.setFont(0, f)
                item.addChild(note)
            self.tree.addTopLevelItem(item)
            if item.childCount():
                item.child(0).setFirstColumnSpanned(True)
                item.setExpanded(True)

    def _show_adapter(self, adapter: dict | None, ms: float | None = None) -> None:
        if adapter is None:
            self.adapter_label.setText("No adapter yet")
            self.time_label.setText("Import your writing and Tailor makes one in seconds."
                                    if not self.has_documents() else "Not generated yet.")
            return
        self.adapter_label.setText(f"Adapter v{adapter['version']} · active")
        total = ms if ms is not None else (adapter.get("timings") or adapter.get("ms") or {}).get("total")
        when = adapter.get("created_at")
        stamp = time.strftime("%H:%M", time.localtime(when)) if when else time.strftime("%H:%M")
        self.time_label.setText(f"Generated in {_seconds(total)} at {stamp}")

    def _show_watched(self, watched: list[str]) -> None:
        self.watch_label.setText(f"Watching {len(watched)} folder{'s' * (len(watched) != 1)} for changes"
                                 if watched else "")
        self.watch_label.setToolTip("\n".join(watched))
        self.watch_label.setVisible(bool(watched))
        self.unwatch_btn.setVisible(bool(watched))

    def _selection_changed(self) -> None:
        self.forget_btn.setEnabled(bool(self.selected_ids()))

    def selected_ids(self) -> list[int]:
        out = []
        for item in self.tree.selectedItems():
            ident = item.data(0, Qt.ItemDataRole.UserRole)
            if ident is None and item.parent() is not None:
                ident = item.parent().data(0, Qt.ItemDataRole.UserRole)
            if ident is not None and ident not in out:
                out.append(ident)
        return out

    # --- import ---------------------------------------------------------------------
    def choose_files(self) -> None:
        files, _ = QFileDialog.getOpenFileNames(
            self, "Add files to your profile", str(Path.home()),
            "Documents (*.txt *.md *.markdown *.html *.htm *.pdf *.docx *.eml *.mbox *.json *.jsonl);;All files (*)")
        if files:
            self.import_paths(files)

    def choose_folder(self) -> None:
        folder = QFileDialog.getExistingDirectory(self, "Add a folder to your profile", str(Path.home()))
        if folder:
            self.import_paths([folder])

    def import_paths(self, paths: list[str | Path]) -> None:
        """Import in the background; the adapter is regenerated when something new came in."""
        paths = [str(p) for p in paths]
        if not paths:
            return
        cancel = Cancel()
        self._cancels.append(cancel)
        self._imports += 1
        self.import_label.setText(f"Importing {Path(paths[0]).name}" + (f" and {len(paths) - 1} more"
                                                                         if len(paths) > 1 else "") + "…")
        self.import_bar.setRange(0, 0)
        self.cancel_btn.setEnabled(True)
        self.import_box.show()

        def progress(p):
            done, total, path = p
            self.import_bar.setRange(0, max(total, 1))
            self.import_bar.setValue(done)
            if path:
                self.import_label.setText(f"Importing {done + 1} of {total}: {Path(path).name}")
            emit(self.importProgress, done, total, path)

        def finished(out):
            self._import_ended(cancel)
            self._show_summary(out)
            self.apply_snapshot(out["snapshot"])
            emit(self.importFinished, out)
            if out["snapshot"]["settings"].get("watched"):
                self.update_watcher()
            if out["snapshot"]["adapter_stale"]:       # the core's one rule (Tailor.adapter_stale)
                self.regenerate()

        def failed(msg):
            self._import_ended(cancel)
            self.summary_label.setText(f"Import failed: {msg}")
            self.summary_label.show()

        self.runner.submit(jobs.import_paths(paths, cancel), done=finished, failed=failed, progress=progress)

    def _import_ended(self, cancel: Cancel) -> None:
        self._imports -= 1
        if cancel in self._cancels:
            self._cancels.remove(cancel)
        if not self._imports:
            self.import_box.hide()

    def _show_summary(self, out: dict) -> None:
        parts = [f"{out['imported']} imported"]
        if out["unchanged"]:
            parts.append(f"{out['unchanged']} unchanged")
        if out["duplicates"]:
            parts.append(f"{out['duplicates']} duplicate{'s' * (out['duplicates'] != 1)}")
        if out["failed"]:
            parts.append(f"{len(out['failed'])} failed (see the list)")
        text = ("Import cancelled: " if out.get("cancelled") else "Last import: ") + ", ".join(parts) + "."
        self.summary_label.setText(text)
        self.summary_label.show()

    def cancel_import(self) -> None:
        for c in self._cancels:
            c.set()
        self.cancel_btn.setEnabled(False)
        self.import_label.setText("Cancelling…")

    # --- adapter ---------------------------------------------------------------------
    def regenerate(self) -> None:
        if self._adapting:
            self._adapt_again = True
            return
        self._set_adapting(True)

        def done(out):
            self._set_adapting(False)
            a = out["adapter"]
            self.apply_snapshot(out["snapshot"])
            self._show_adapter(out["snapshot"]["adapter"] or a, a["ms"].get("total"))
            emit(self.adapterReady, a)
            self.runner.submit(jobs.build_contexts)       # the new documents' contexts, before the next answer
            self._again()

        def failed(msg):
            self._set_adapting(False)
            self._show_adapter(self.snapshot.get("adapter"))
            self.time_label.setText(f"Could not regenerate: {msg}")
            emit(self.adapterFailed, msg)
            self._again()

        self.runner.submit(jobs.adapt, done=done, failed=failed)

    def _again(self) -> None:
        if self._adapt_again:
            self._adapt_again = False
            self.regenerate()

    def _set_adapting(self, on: bool) -> None:
        self._adapting = on
        self.adapt_bar.setVisible(on)
        if on:
            self.adapter_label.setText("Regenerating…")
            self.time_label.setText("Turning your profile into an adapter")
        emit(self.regeneratingChanged, on)

    # --- forget ----------------------------------------------------------------------
    def forget_selected(self) -> None:
        ids = self.selected_ids()
        if ids:
            self.forget(ids)

    def forget(self, ids: list[int]) -> None:
        self.forget_btn.setEnabled(False)
        self._set_adapting(True)

        def done(out):
            self._set_adapting(False)
            self.apply_snapshot(out["snapshot"])
            a = out.get("adapter")
            if a:
                self._show_adapter(out["snapshot"]["adapter"] or a, a["ms"].get("total"))
                emit(self.adapterReady, a)
            n = len(out["forgotten"])
            self.summary_label.setText(f"Forgot {n} document{'s' * (n != 1)} and the adapters made from "
                                       f"{'them' if n != 1 else 'it'}.")
            self.summary_label.show()
            self._again()

        def failed(msg):
            self._set_adapting(False)
            self.refresh()
            self._again()

        self.runner.submit(jobs.forget(ids), done=done, failed=failed)

    # --- watched folders --------------------------------------------------------------
    def update_watcher(self) -> None:
        def done(dirs):
            if self._watcher.directories():
                self._watcher.removePaths(self._watcher.directories())
            if dirs:
                self._watcher.addPaths(dirs)
        self.runner.submit(jobs.watch_dirs, done=done)

    def rescan_watched(self) -> None:
        def done(out):
            self.apply_snapshot(out["snapshot"])
            s = out["summary"]
            if s and s["imported"]:
                self._show_summary(s)
            if out["snapshot"]["adapter_stale"]:
                self.regenerate()
        self.runner.submit(jobs.rescan_watched, done=done)

    def stop_watching(self) -> None:
        def done(snap):
            self.apply_snapshot(snap)
            if self._watcher.directories():
                self._watcher.removePaths(self._watcher.directories())
        self.runner.submit(jobs.unwatch, done=done)
