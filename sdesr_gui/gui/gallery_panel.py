"""Gallery panel: index a folder of known faces (incrementally, with progress) and list the
candidates for the selected sample (or the mean estimate), the consensus over all samples and
the bicubic baseline. The mean estimate is matched as its own probe: the consensus table
marks, per candidate, its rank for the mean estimate, but the mean is never counted as a sample.

Candidates are investigative leads for a trained examiner, never identifications; the panel
says so wherever candidates are shown. The gallery folder is only read: the index cache lives
in the application's data folder.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Optional

import numpy as np
from PySide6.QtCore import QSize, Qt, Signal
from PySide6.QtGui import QIcon
from PySide6.QtWidgets import (
    QComboBox,
    QDialog,
    QDialogButtonBox,
    QFileDialog,
    QFormLayout,
    QLineEdit,
    QHBoxLayout,
    QHeaderView,
    QLabel,
    QProgressBar,
    QPushButton,
    QSpinBox,
    QSplitter,
    QTableWidget,
    QTableWidgetItem,
    QVBoxLayout,
    QWidget,
)

from ..core.report import CANDIDATE_NOTICE
from .imaging import pixmap_from_rgb
from ..core.calibration import short_rate
from ..core.metrics import metric_tooltip
from ..core.matching import MEAN_PROBE, MatchResult, run_match
from .worker import FunctionJob

THUMB = 32
#: the consensus table's column for the mean estimate, and what it means
MEAN_COLUMN = "mean est."
MEAN_COLUMN_TIP = ("The candidate's rank for the mean estimate (the model's posterior-mean estimate, matched as its "
                   "own probe; an estimate, not a sample, and not counted in the consensus). – = not in its top-K.")


#: the false-match-rate column and what it means
FMR_COLUMN = "strangers ≥"
FMR_TIP = ("False-match rate: how often a stranger's photo scores at least this high, measured for this kind of "
           "probe (generated sample, bicubic, mean estimate) on identities the app was not validated on. "
           "\"1 in 350\": about one stranger's photo in 350 compared scores this high, so a gallery of 35,000 "
           "photos holds about 100 such strangers. Hover a row for the likelihood ratio.")
CONSENSUS_FMR_TIP = FMR_TIP + " For the consensus (a mean over samples) the rate is an upper bound."


def calibration_tooltip(row: dict) -> str:
    """A candidate row's tooltip: its file and, when calibrated, what its score means."""
    lines = [row.get("file", "")]
    cal = row.get("calibration")
    if cal:
        lines.append(cal.get("text", ""))
        if cal.get("note"):
            lines.append(f"Note: {cal['note']}.")
    return "\n".join(x for x in lines if x)


def summarize_report(rep: Any) -> str:
    """'added 3, updated 0, …' from an IndexReport (fields may be counts or lists)."""
    if callable(getattr(rep, "summary", None)):
        return rep.summary()
    parts = []
    for name in ("added", "updated", "removed", "unchanged", "skipped"):
        v = getattr(rep, name, None) if not isinstance(rep, dict) else rep.get(name)
        if v is None:
            continue
        n = v if isinstance(v, int) else len(v)
        parts.append(f"{name} {n}")
    return " · ".join(parts) if parts else str(rep)


class CandidateTable(QTableWidget):
    def __init__(self, columns: list[str], parent=None):
        super().__init__(0, len(columns) + 1, parent)
        self.setHorizontalHeaderLabels([""] + columns)
        self.verticalHeader().setVisible(True)
        self.setIconSize(QSize(THUMB, THUMB))
        self.setEditTriggers(QTableWidget.EditTrigger.NoEditTriggers)
        self.setSelectionBehavior(QTableWidget.SelectionBehavior.SelectRows)
        self.verticalHeader().setDefaultSectionSize(THUMB + 4)
        hh = self.horizontalHeader()
        hh.setSectionResizeMode(0, QHeaderView.ResizeMode.Fixed)
        self.setColumnWidth(0, THUMB + 8)
        hh.setSectionResizeMode(1, QHeaderView.ResizeMode.Stretch)
        for c in range(2, len(columns) + 1):
            hh.setSectionResizeMode(c, QHeaderView.ResizeMode.ResizeToContents)

    def fill(self, rows: list[dict], keys: list[str], thumbs: dict) -> None:
        self.setRowCount(len(rows))
        for r, row in enumerate(rows):
            thumb = thumbs.get(row.get("file"))
            icon_item = QTableWidgetItem()
            if thumb is not None:
                icon_item.setIcon(QIcon(pixmap_from_rgb(thumb, THUMB, smooth=True)))
            tip = calibration_tooltip(row)
            icon_item.setToolTip(tip)
            self.setItem(r, 0, icon_item)
            for c, k in enumerate(keys, 1):
                v = row.get(k)
                if k == "fmr":
                    text = short_rate(row.get("calibration"))
                elif k == "mean_estimate_rank":
                    text = "–" if v is None else f"✓ {v}"
                elif isinstance(v, float):
                    text = f"{v:.3f}" if k != "rank1_frequency" else f"{v:.0%}"
                elif isinstance(v, list):
                    text = " ".join("–" if x is None else str(x) for x in v)
                else:
                    text = "" if v is None else str(v)
                item = QTableWidgetItem(text)
                item.setToolTip(tip)
                self.setItem(r, c, item)

    def identities(self) -> list[str]:
        return [self.item(r, 1).text() for r in range(self.rowCount()) if self.item(r, 1)]


#: (settings value, label) of the search backends offered (core.search.BACKENDS)
BACKEND_CHOICES = (("auto", "Automatic (exact below 200,000 faces, faiss above)"),
                   ("exact", "Exact (all faces in memory)"),
                   ("faiss", "faiss index on disk (approximate above 50,000 faces)"),
                   ("milvus", "Milvus server"))


class SearchSettingsDialog(QDialog):
    """How the gallery is searched and indexed: backend, Milvus URI, indexing workers."""

    def __init__(self, backend: str, milvus_uri: str, workers: int, parent=None):
        import os

        super().__init__(parent)
        self.setWindowTitle("Gallery search settings")
        self.backend = QComboBox()
        for value, label in BACKEND_CHOICES:
            self.backend.addItem(label, value)
        self.backend.setCurrentIndex(max(0, self.backend.findData(backend)))
        self.uri = QLineEdit(milvus_uri)
        self.uri.setPlaceholderText("http://host:19530, or a local .db file for milvus-lite")
        self.uri.setToolTip("The Milvus server or cluster holding a collection per gallery and embedder. "
                            "Credentials come from the MILVUS_TOKEN environment variable.")
        self.workers = QSpinBox()
        self.workers.setRange(1, max(1, os.cpu_count() or 1))
        self.workers.setValue(max(1, min(int(workers), self.workers.maximum())))
        self.workers.setToolTip("Processes embedding gallery faces in parallel; each loads the embedder once. "
                                "A cancelled or interrupted run keeps every face stored.")
        form = QFormLayout(self)
        form.addRow("Search backend", self.backend)
        form.addRow("Milvus URI", self.uri)
        form.addRow("Indexing workers", self.workers)
        note = QLabel("Every score shown is the exact cosine: an approximate backend only proposes the "
                      "candidates, which are re-scored from the stored embeddings.")
        note.setWordWrap(True)
        form.addRow(note)
        buttons = QDialogButtonBox(QDialogButtonBox.StandardButton.Ok | QDialogButtonBox.StandardButton.Cancel)
        buttons.accepted.connect(self._accept)
        buttons.rejected.connect(self.reject)
        form.addRow(buttons)
        self.backend.currentIndexChanged.connect(self._update)
        self._update()

    def _update(self) -> None:
        self.uri.setEnabled(self.backend.currentData() == "milvus")

    def _accept(self) -> None:
        if self.backend.currentData() == "milvus" and not self.uri.text().strip():
            self.uri.setFocus()
            self.uri.setStyleSheet("QLineEdit{border:1px solid #d9534f}")
            return
        self.accept()

    def values(self) -> tuple[str, str, int]:
        return str(self.backend.currentData()), self.uri.text().strip(), int(self.workers.value())


class GalleryPanel(QWidget):
    indexed = Signal(object)  # the IndexReport
    matched = Signal(object)  # MatchResult
    errorOccurred = Signal(str)
    statusMessage = Signal(str)

    def __init__(self, embedder: Any = None, index_factory: Optional[Callable] = None,
                 cache_dir: Optional[Path] = None, parent=None):
        """``cache_dir``: where indexes live (default: core.gallery's user cache folder, shared with
        the CLI; never inside the gallery)."""
        super().__init__(parent)
        self._embedder = embedder
        self._index_factory = index_factory
        self.cache_dir = Path(cache_dir) if cache_dir else None
        self.folder: Optional[Path] = None
        self.index = None
        self.result: Optional[MatchResult] = None
        self.selected_key: Optional[str] = None
        self._probes: Optional[tuple] = None
        self._model_sha256: Optional[str] = None
        self._job: Optional[FunctionJob] = None
        self._match_job: Optional[FunctionJob] = None
        self._rematch = False
        self._jobs: set = set()
        self.backend = "auto"
        self.milvus_uri = ""
        self.workers = 1

        self.folder_label = QLabel("No folder chosen.")
        self.folder_label.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.folder_label.setMinimumWidth(100)  # a long path is clipped (its tooltip has it whole)
        self.choose_btn = QPushButton("Choose gallery folder…")
        self.index_btn = QPushButton("Index")
        self.index_btn.setToolTip("Scan the folder for new, changed and removed faces (only those are embedded)")
        self.cancel_btn = QPushButton("Cancel")
        self.search_btn = QPushButton("Search…")
        self.search_btn.setToolTip("Search backend (exact, faiss, Milvus) and indexing workers")
        self.search_btn.clicked.connect(self.edit_search_settings)
        self.match_btn = QPushButton("Match samples")
        self.top_k = QSpinBox()
        self.top_k.setRange(1, 50)
        self.top_k.setValue(10)
        self.top_k.setPrefix("top ")
        self.progress = QProgressBar()
        self.progress.setMaximumWidth(160)
        self.progress.setRange(0, 1)
        self.progress.setValue(0)
        self.progress.setFormat("")
        self.status = QLabel("")
        self.status.setWordWrap(True)  # a long sentence wraps instead of widening the window
        self.choose_btn.clicked.connect(self.choose_folder)
        self.index_btn.clicked.connect(self.start_index)
        self.cancel_btn.clicked.connect(self.cancel)
        self.match_btn.clicked.connect(self.match)
        self.top_k.valueChanged.connect(lambda _: self.match() if self.result is not None else None)
        row = QHBoxLayout()
        row.addWidget(self.choose_btn)
        row.addWidget(self.folder_label, 1)  # the path gets the row's spare width, not empty space
        for w in (self.index_btn, self.cancel_btn, self.progress, self.search_btn, self.top_k, self.match_btn):
            row.addWidget(w)

        self.notice = QLabel(f"⚠ {CANDIDATE_NOTICE} A generated face can resemble someone it is not.")
        self.notice.setWordWrap(True)
        self.notice.setStyleSheet("QLabel{background:#fde7e4;color:#5a1410;border:1px solid #d9534f;"
                                  "border-radius:4px;padding:1px 8px;font-weight:600}")

        self.sample_title = QLabel("Selected sample: candidates")
        self.sample_table = CandidateTable(["identity", "cosine", FMR_COLUMN])
        self.consensus_title = QLabel("Consensus over all samples")
        self.consensus_table = CandidateTable(["identity", "mean cos", FMR_COLUMN, "rank-1", "in top-K", "ranks",
                                               MEAN_COLUMN])
        self.consensus_table.horizontalHeaderItem(3).setToolTip(CONSENSUS_FMR_TIP)
        self.consensus_table.horizontalHeaderItem(7).setToolTip(MEAN_COLUMN_TIP)
        self.consensus_table.setColumnHidden(7, True)  # shown when the run has a mean estimate
        self.stability_label = QLabel("")  # short; the full sentence is its tooltip
        font = self.stability_label.font()
        font.setItalic(True)
        self.stability_label.setFont(font)
        self.bicubic_title = QLabel("Bicubic baseline: candidates")
        self.bicubic_table = CandidateTable(["identity", "cosine", FMR_COLUMN])
        for t in (self.sample_table, self.bicubic_table):
            t.horizontalHeaderItem(3).setToolTip(FMR_TIP)
            t.horizontalHeaderItem(2).setToolTip(metric_tooltip("score"))
        self.consensus_table.horizontalHeaderItem(2).setToolTip(metric_tooltip("mean_score"))
        split = QSplitter(Qt.Orientation.Horizontal)
        for title, table, extra in ((self.sample_title, self.sample_table, None),
                                    (self.consensus_title, self.consensus_table, self.stability_label),
                                    (self.bicubic_title, self.bicubic_table, None)):
            host = QWidget()
            v = QVBoxLayout(host)
            v.setContentsMargins(0, 0, 8, 0)  # a gap between this title line and the next panel's
            head = QHBoxLayout()  # the stability summary shares the title's line: rows stay visible
            head.addWidget(title)
            if extra is not None:
                head.addStretch(1)
                head.addWidget(extra)
            v.addLayout(head)
            v.addWidget(table, 1)
            split.addWidget(host)
        split.setSizes([300, 420, 300])  # the consensus has the most columns (it scrolls sideways)

        lay = QVBoxLayout(self)
        lay.addLayout(row)
        lay.addWidget(self.status)
        lay.addWidget(self.notice)
        lay.addWidget(split, 1)
        self._update_buttons()

    # ---------------------------------------------------------------- pieces
    def embedder(self):
        """The face embedder (the real one from core.gallery unless one was injected)."""
        if self._embedder is None:
            from ..core.gallery import get_embedder  # heavy: called from a worker thread

            self._embedder = get_embedder()
        return self._embedder

    def _make_index(self, folder: Path):
        if self._index_factory is not None:
            return self._index_factory(folder, self.embedder(), self.cache_dir)
        from ..core.gallery import GalleryIndex

        return GalleryIndex(folder, self.embedder(), cache_dir=self.cache_dir, backend=self.backend,
                            backend_options={"milvus_uri": self.milvus_uri})

    def edit_search_settings(self) -> None:
        dlg = SearchSettingsDialog(self.backend, self.milvus_uri, self.workers, self)
        if dlg.exec() != QDialog.DialogCode.Accepted:
            return
        backend, uri, workers = dlg.values()
        changed = (backend, uri) != (self.backend, self.milvus_uri)
        self.backend, self.milvus_uri, self.workers = backend, uri, workers
        if changed and self.index is not None and self._job is None:
            self.index = None  # opened again with the new backend
            self._update_buttons()
            self.status.setText("Search settings changed: press Index to open the gallery with them.")

    def _busy(self) -> bool:
        return any(j.isRunning() for j in self._jobs)

    def _update_buttons(self) -> None:
        busy = self._job is not None
        self.index_btn.setEnabled(self.folder is not None and not busy)
        self.choose_btn.setEnabled(not busy)
        self.search_btn.setEnabled(not busy)
        self.cancel_btn.setEnabled(busy or self._match_job is not None)
        self.match_btn.setEnabled(self.index is not None and self._probes is not None and not busy)

    def _track(self, job: FunctionJob, attr: str) -> None:
        self._jobs.add(job)
        setattr(self, attr, job)

        def done(j=job, a=attr):
            self._jobs.discard(j)
            if getattr(self, a) is j:
                setattr(self, a, None)
            j.deleteLater()
            self._update_buttons()
            if a == "_match_job" and self._rematch:
                self._rematch = False
                self.match()

        job.finished.connect(done)
        self._update_buttons()
        job.start()

    # ---------------------------------------------------------------- folder and index
    def choose_folder(self) -> None:
        start = str(self.folder) if self.folder else ""
        path = QFileDialog.getExistingDirectory(self, "Choose a gallery folder of known faces", start)
        if path:
            self.set_folder(path, index=True)

    def set_folder(self, path, index: bool = True) -> None:
        p = Path(path).expanduser()
        if not p.is_dir():
            self.errorOccurred.emit(f"The gallery folder {p} does not exist.")
            return
        self.folder = p
        self.index = None
        self.result = None
        self.folder_label.setText(str(p))
        self.folder_label.setToolTip(str(p))
        self._clear_tables()
        self._update_buttons()
        if index:
            self.start_index()

    def start_index(self) -> None:
        if self.folder is None or self._job is not None:
            return
        folder = self.folder
        self.progress.setRange(0, 0)
        self.status.setText(f"Indexing {folder.name}…")

        def work(report, cancel):
            idx = self.index if (self.index is not None and Path(getattr(self.index, "folder", folder)) == folder) \
                else self._make_index(folder)
            kw = {"workers": self.workers} if self.workers > 1 else {}
            rep = idx.update(progress=report, cancel=cancel, **kw)
            if hasattr(idx, "search_backend"):  # build or catch up the search index (a while, the first time)
                idx.search_backend(progress=report, cancel=cancel)
            return idx, rep

        job = FunctionJob(work, "Indexing the gallery", self)
        job.progressed.connect(self._on_index_progress)
        job.succeeded.connect(self._on_indexed)
        job.failed.connect(self._on_failed)
        job.cancelled.connect(self._on_index_cancelled)
        self._track(job, "_job")

    def _on_index_progress(self, args) -> None:
        if len(args) >= 2 and isinstance(args[0], int) and isinstance(args[1], int) and args[1] > 0:
            self.progress.setRange(0, args[1])
            self.progress.setValue(args[0])
            self.progress.setFormat("%v / %m")
            self.status.setText(f"Indexing: {args[0]}/{args[1]} files")
        elif len(args) >= 2 and isinstance(args[0], str):  # the search backend: (stage, fraction)
            self.progress.setRange(0, 100)
            self.progress.setValue(int(100 * float(args[1])))
            self.progress.setFormat("%p%")
            self.status.setText(f"Search index: {args[0]}…")

    def _on_indexed(self, result) -> None:
        idx, rep = result
        self.index = idx
        self.progress.setRange(0, 1)
        self.progress.setValue(1)
        n = len(idx) if hasattr(idx, "__len__") else None
        self.progress.setFormat(f"{n} faces" if n is not None else "indexed")
        text = summarize_report(rep)
        if n is not None and "in the index" not in text:
            text += f" · {n} faces in the index"
        info = idx.backend_info() if hasattr(idx, "backend_info") else {}
        if info.get("backend"):
            text += f" · search: {info['backend']}" + (f" {info['spec']}" if info.get("spec") else "")
        self.status.setText(f"Indexed {self.folder.name}: {text}")
        skipped = getattr(rep, "skipped", None)
        if skipped and not isinstance(skipped, int):
            self.status.setToolTip("Skipped:\n" + "\n".join(
                f"{f}: {why}" if isinstance(f, str) else str(f) for f, why in list(skipped)[:40]))
        self.statusMessage.emit("Gallery indexed.")
        self.indexed.emit(rep)
        self._update_buttons()
        if self._probes is not None:
            self.match()

    def _on_index_cancelled(self) -> None:
        self.progress.setRange(0, 1)
        self.progress.setValue(0)
        self.progress.setFormat("cancelled")
        self.status.setText("Indexing cancelled; what was indexed so far is kept for next time.")

    def _on_failed(self, msg: str) -> None:
        self.progress.setRange(0, 1)
        self.progress.setValue(0)
        self.progress.setFormat("")
        self.status.setText(msg)
        self.errorOccurred.emit(msg)

    def cancel(self) -> None:
        for j in list(self._jobs):
            j.cancel()

    # ---------------------------------------------------------------- matching
    def set_probes(self, probes: list[tuple[str, str, np.ndarray]], bicubic: Optional[np.ndarray],
                   reference: Optional[np.ndarray], auto: bool = True, mean: Optional[np.ndarray] = None,
                   model_sha256: Optional[str] = None) -> None:
        """Samples to match: (key, label, 128x128 uint8) each, plus the bicubic, the reference and
        the run's mean estimate (``mean``: matched as its own probe, never as a sample);
        ``model_sha256``: the score model that made them (for the calibrated rates)."""
        self._probes = (list(probes), bicubic, reference, mean) if probes and bicubic is not None else None
        self._model_sha256 = model_sha256
        self.result = None
        self._clear_tables()
        self._update_buttons()
        if auto and self._probes is not None and self.index is not None:
            self.match()

    def match(self) -> None:
        if self.index is None or self._probes is None:
            return
        if self._match_job is not None:
            self._rematch = True  # run again with the latest probes when this one ends
            self._match_job.cancel()
            return
        probes, bicubic, reference, mean = self._probes
        index, k, gallery, sha = self.index, int(self.top_k.value()), str(self.folder), self._model_sha256
        self.status.setText(f"Matching {len(probes)} sample(s){' and the mean estimate' if mean is not None else ''} "
                            "against the gallery…")

        def work(report, cancel):
            return run_match(index, self.embedder(), probes, bicubic, reference, k, report, cancel, gallery,
                             mean=mean, model_sha256=sha)

        job = FunctionJob(work, "Matching", self)
        job.succeeded.connect(self._on_matched)
        job.failed.connect(self._on_failed)
        self._track(job, "_match_job")

    def _on_matched(self, res: MatchResult) -> None:
        if self._rematch:
            return
        self.result = res
        st = res.stability
        self.consensus_title.setText(f"Consensus ({len(res.per_sample)} samples)")
        self.consensus_table.setColumnHidden(7, res.mean is None)
        self.consensus_table.fill(res.consensus, ["identity", "mean_score", "fmr", "rank1_frequency", "in_top_k",
                                                  "ranks", "mean_estimate_rank"], res.thumbs)
        if st.get("consensus_rank1") is not None:
            self.stability_label.setText(
                f"lead is rank-1 in {st['rank1_agreement']:.0%} · top-{res.top_k} overlap {st['top_k_overlap']:.0%}")
            self.stability_label.setToolTip(
                f"Rank stability: the consensus lead is rank 1 for {st['rank1_agreement']:.0%} of samples; "
                f"on average {st['top_k_overlap']:.0%} of the consensus top-{res.top_k} is in each sample's "
                f"top-{res.top_k}. " + self.mean_words(res))
        self.bicubic_table.fill(res.bicubic, ["identity", "score", "fmr"], res.thumbs)
        self.show_sample(self.selected_key)
        self.status.setText(f"Matched {len(res.per_sample)} sample(s)"
                            f"{' and the mean estimate' if res.mean is not None else ''} against "
                            f"{Path(res.gallery).name}. " + self.mean_words(res))
        self.matched.emit(res)

    @staticmethod
    def mean_words(res: MatchResult) -> str:
        """Whether the mean estimate agrees with the consensus lead, in one sentence ("" when the
        run has no mean estimate or there is no lead)."""
        ag = res.mean_agreement
        if res.mean is None or not ag.get("lead"):
            return ""
        who = "The mean estimate (matched on its own, not counted as a sample)"
        if ag.get("agrees_on_lead"):
            return f"{who} agrees: it ranks the consensus lead {ag['lead']} first too."
        where = (f"ranks the consensus lead {ag['lead']} {ag['lead_rank']}" if ag.get("lead_rank")
                 else f"does not have the consensus lead {ag['lead']} in its top-{res.top_k}")
        first = f"its own rank-1 is {ag['rank1']}" if ag.get("rank1") else "it has no candidates"
        return f"{who} disagrees: it {where}; {first}."

    def show_sample(self, key: Optional[str]) -> None:
        self.selected_key = key
        res = self.result
        if res is None:
            return
        if key == MEAN_PROBE and res.mean is not None:  # its own list, titled so it is never taken for a sample
            self.sample_title.setText(f"Mean estimate (not a sample): top-{res.top_k} candidates")
            self.sample_table.fill(res.mean, ["identity", "score", "fmr"], res.thumbs)
            return
        if key not in res.per_sample:
            key = next(iter(res.per_sample), None)
        if key is None:
            self.sample_table.setRowCount(0)
            return
        self.sample_title.setText(f"{res.labels.get(key, key)}: top-{res.top_k} candidates")
        self.sample_table.fill(res.per_sample[key], ["identity", "score", "fmr"], res.thumbs)

    def _clear_tables(self) -> None:
        for t in (self.sample_table, self.consensus_table, self.bicubic_table):
            t.setRowCount(0)
        self.stability_label.setText("")
        self.stability_label.setToolTip("")

    def candidates_for_export(self, keys=None) -> Optional[dict]:
        return self.result.to_export(keys) if self.result is not None else None

    def save(self, s) -> None:
        s.setValue("gallery/folder", str(self.folder) if self.folder else "")
        s.setValue("gallery/top_k", self.top_k.value())
        s.setValue("gallery/backend", self.backend)
        s.setValue("gallery/milvus_uri", self.milvus_uri)
        s.setValue("gallery/workers", self.workers)

    def restore(self, s) -> None:
        try:
            self.top_k.setValue(int(s.value("gallery/top_k", 10)))
            self.workers = max(1, int(s.value("gallery/workers", 1)))
        except (TypeError, ValueError):
            pass
        backend = str(s.value("gallery/backend", "auto") or "auto")
        self.backend = backend if backend in dict(BACKEND_CHOICES) else "auto"
        self.milvus_uri = str(s.value("gallery/milvus_uri", "") or "")
        folder = s.value("gallery/folder", "")
        if folder and Path(folder).is_dir():
            # remember the folder; index only when the analyst asks (it may be large)
            self.folder = Path(folder)
            self.folder_label.setText(str(folder))
            self.status.setText("Press Index to (re)scan the gallery; unchanged files are not embedded again.")
            self._update_buttons()

    def shutdown(self) -> None:
        for j in list(self._jobs):
            j.cancel()
        for j in list(self._jobs):
            j.wait(15000)
