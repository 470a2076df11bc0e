"""The first-run page: what Tailor does, what to do now, and a sample profile to try.

Shown while the profile is empty, because an empty chat box does not explain
that the point is to bring your own writing.
"""
from __future__ import annotations

from PySide6.QtCore import Qt, Signal
from PySide6.QtGui import QFont
from PySide6.QtWidgets import QFrame, QHBoxLayout, QLabel, QPushButton, QVBoxLayout, QWidget

from ..paths import assets_dir


def sample_profile_dir():
    return assets_dir() / "samples" / "interpreter-performance"


class WelcomePage(QWidget):
    addFiles = Signal()
    addFolder = Signal()
    useSample = Signal()
    skip = Signal()

    def __init__(self, parent: QWidget | None = None):
        super().__init__(parent)
        outer = QVBoxLayout(self)
        outer.addStretch(1)
        card = QFrame()
        card.setObjectName("dropCard")
        # palette() keeps the dashed drop zone in the system theme's colours, light or dark
        card.setStyleSheet("#dropCard { border: 2px dashed palette(mid); border-radius: 12px; }")
        card.setMaximumWidth(640)
        lay = QVBoxLayout(card)
        lay.setContentsMargins(32, 28, 32, 28)
        lay.setSpacing(12)
        title = QLabel("Make the model write like you")
        f = QFont(title.font())
        f.setPointSizeF(f.pointSizeF() * 1.8)
        f.setBold(True)
        title.setFont(f)
        title.setAlignment(Qt.AlignmentFlag.AlignCenter)
        title.setWordWrap(True)
        lay.addWidget(title)
        body = QLabel(
            "Drop a folder of your writing here — notes, papers, mail, posts (txt, md, html, pdf, docx, eml, "
            "mbox, json). Tailor reads them on this computer, turns them into a small adapter for its "
            "language model in seconds, and from then on answers in your style.\n\n"
            "Nothing leaves your machine. You can forget any document later, and the adapter is "
            "regenerated without it.")
        body.setWordWrap(True)
        body.setAlignment(Qt.AlignmentFlag.AlignCenter)
        lay.addWidget(body)
        row = QHBoxLayout()
        row.addStretch(1)
        self.files_btn = QPushButton("Add files…")
        self.files_btn.setAccessibleName("Add files to your profile")
        self.files_btn.clicked.connect(self.addFiles)
        self.folder_btn = QPushButton("Add folder…")
        self.folder_btn.setAccessibleName("Add a folder to your profile")
        self.folder_btn.clicked.connect(self.addFolder)
        self.folder_btn.setDefault(True)
        row.addWidget(self.files_btn)
        row.addWidget(self.folder_btn)
        row.addStretch(1)
        lay.addLayout(row)
        sample = QLabel("No documents at hand? Try a sample profile: six abstracts of Python Enhancement "
                        "Proposals on interpreter performance, all by one author (public domain).")
        sample.setWordWrap(True)
        sample.setAlignment(Qt.AlignmentFlag.AlignCenter)
        lay.addWidget(sample)
        row2 = QHBoxLayout()
        row2.addStretch(1)
        self.sample_btn = QPushButton("Use the sample profile")
        self.sample_btn.setAccessibleName("Use the bundled sample profile")
        self.sample_btn.clicked.connect(self.useSample)
        self.sample_btn.setEnabled(sample_profile_dir().is_dir())
        self.skip_btn = QPushButton("Chat with the base model")
        self.skip_btn.setAccessibleName("Skip and chat with the base model")
        self.skip_btn.setFlat(True)
        self.skip_btn.clicked.connect(self.skip)
        row2.addWidget(self.sample_btn)
        row2.addWidget(self.skip_btn)
        row2.addStretch(1)
        lay.addLayout(row2)
        h = QHBoxLayout()
        h.addStretch(1)
        h.addWidget(card, 10)
        h.addStretch(1)
        outer.addLayout(h)
        outer.addStretch(2)
