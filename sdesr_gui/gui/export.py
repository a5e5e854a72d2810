"""Export dialog: which samples, where (never an input or gallery folder), with candidates."""

from __future__ import annotations

from pathlib import Path
from typing import Iterable

from PySide6.QtCore import Qt
from PySide6.QtWidgets import (
    QCheckBox,
    QDialog,
    QDialogButtonBox,
    QFileDialog,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QListWidget,
    QListWidgetItem,
    QPushButton,
    QVBoxLayout,
)

from ..core.errors import SdesrError
from ..core.report import check_export_parent


class ExportDialog(QDialog):
    """Pick the samples (favourites first) and the destination folder."""

    def __init__(self, samples: Iterable, start_dir: str, forbidden: list[Path], has_candidates: bool,
                 parent=None):
        super().__init__(parent)
        self.setWindowTitle("Export samples, run record and report")
        self.forbidden = forbidden
        samples = list(samples)
        any_fav = any(s.favourite for s in samples)
        self.list = QListWidget()
        for s in samples:
            item = QListWidgetItem(f"{'★ ' if s.favourite else ''}{s.title} · seed {s.seed}")
            item.setData(Qt.ItemDataRole.UserRole, s.key)
            item.setFlags(item.flags() | Qt.ItemFlag.ItemIsUserCheckable)
            item.setCheckState(Qt.CheckState.Checked if (s.favourite or not any_fav) else Qt.CheckState.Unchecked)
            self.list.addItem(item)
        self.folder = QLineEdit(start_dir)
        browse = QPushButton("Browse…")
        browse.clicked.connect(self._browse)
        self.with_candidates = QCheckBox("Include the gallery candidates (labelled as leads, not identifications)")
        self.with_candidates.setChecked(has_candidates)
        self.with_candidates.setEnabled(has_candidates)
        self.error = QLabel("")
        self.error.setStyleSheet("color: #c62828")
        self.error.setWordWrap(True)
        note = QLabel("A new folder is created inside the destination with the samples (marked GENERATED), "
                      "the mean estimate (marked GENERATED, an estimate), with 2 or more ticked samples the map of "
                      "where they disagree (bright = invented detail), the aligned crop, its LR, the bicubic "
                      "baseline, run.json, report.html and SHA256SUMS. "
                      "Input and gallery folders are refused: inputs are evidence.")
        note.setWordWrap(True)
        row = QHBoxLayout()
        row.addWidget(self.folder, 1)
        row.addWidget(browse)
        buttons = QDialogButtonBox(QDialogButtonBox.StandardButton.Ok | QDialogButtonBox.StandardButton.Cancel)
        buttons.button(QDialogButtonBox.StandardButton.Ok).setText("Export")
        buttons.accepted.connect(self._accept)
        buttons.rejected.connect(self.reject)
        lay = QVBoxLayout(self)
        lay.addWidget(QLabel("Samples to export"))
        lay.addWidget(self.list)
        lay.addWidget(QLabel("Destination folder"))
        lay.addLayout(row)
        lay.addWidget(self.with_candidates)
        lay.addWidget(note)
        lay.addWidget(self.error)
        lay.addWidget(buttons)
        self.resize(560, 460)

    def _browse(self) -> None:
        d = QFileDialog.getExistingDirectory(self, "Export into", self.folder.text())
        if d:
            self.folder.setText(d)

    def keys(self) -> list[str]:
        return [self.list.item(i).data(Qt.ItemDataRole.UserRole) for i in range(self.list.count())
                if self.list.item(i).checkState() == Qt.CheckState.Checked]

    def _accept(self) -> None:
        text = self.folder.text().strip()
        if not text:
            self.error.setText("Choose a destination folder.")
            return
        if not self.keys():
            self.error.setText("Tick at least one sample.")
            return
        try:
            check_export_parent(text, self.forbidden)
        except SdesrError as e:
            self.error.setText(str(e))
            return
        self.accept()
