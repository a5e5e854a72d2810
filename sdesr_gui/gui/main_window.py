"""The main window: the analyst's loop of open, pick a face, set what is known, run, watch,
compare, match and export.

Layout: the source (footage, scrubber, faces, crop) docks left, the controls (and the live
sampler frames) dock right, the comparison view is central, the gallery docks at the bottom.
Docks, sizes, sliders, last folders and recent files persist in QSettings.
"""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path
from typing import Any, Optional

import numpy as np
from PySide6.QtCore import QSettings, Qt, Signal
from PySide6.QtGui import QAction, QKeySequence
from PySide6.QtWidgets import (
    QApplication,
    QDockWidget,
    QFileDialog,
    QLabel,
    QMainWindow,
    QMessageBox,
    QScrollArea,
)

from .. import __version__
from .compare_view import CompareItem, CompareView
from .controls import ControlsPanel
from .gallery_panel import GalleryPanel
from .source_panel import SourcePanel
from .worker import FunctionJob, SamplerJob, SamplerRequest

MAX_RECENT = 10
OPEN_FILTER = ("Images and videos (*.png *.jpg *.jpeg *.bmp *.tif *.tiff *.webp *.gif *.ppm *.pgm "
               "*.mp4 *.avi *.mov *.mkv *.m4v *.webm *.mpg *.mpeg *.wmv *.ts);;All files (*)")


@dataclasses.dataclass
class RunSnapshot:
    """What a set of samples was produced from (the selection may change afterwards)."""

    selection: Any  # FaceSelection
    input_path: Optional[Path]
    input_kind: str
    frame: dict
    settings: dict
    model: dict
    classifier: Optional[dict]
    device: str
    timings: dict
    bicubic: np.ndarray
    bicubic_metrics: dict
    reference: Optional[np.ndarray] = None  # the reference HR the metrics refer to
    reference_loaded: bool = False  # loaded by the user (else the aligned crop itself)
    source_info: dict = dataclasses.field(default_factory=dict)  # size, fps, frame count of the input


class MainWindow(QMainWindow):
    runFinished = Signal()  # samples arrived
    runCancelled = Signal()
    runFailed = Signal(str)
    exported = Signal(str)

    def __init__(self, settings: Optional[QSettings] = None, gallery_embedder=None, gallery_index_factory=None,
                 gallery_cache_dir=None, restore: bool = True):
        super().__init__()
        self.settings = settings if settings is not None else QSettings()
        self.setWindowTitle(f"SDE-SR Studio {__version__}")
        self.setAcceptDrops(True)
        self.setDockNestingEnabled(True)
        self.last_error: Optional[str] = None
        self._exporting = None  # the export job while one runs
        self._dialogs: list = []
        self._enhancers: dict[tuple, Any] = {}
        self._job: Optional[SamplerJob] = None
        self._jobs: set = set()
        self._last_preview = None
        self._preview_index = 0
        self.preview_steps: list[int] = []  # steps of the live frames shown in the current run
        self.run: Optional[RunSnapshot] = None
        self._sample_counter = 0
        self.input_hashes: dict[str, str] = {}
        self.reference_override: Optional[np.ndarray] = None
        self.last_export: Optional[Path] = None

        self.source_panel = SourcePanel()
        self.controls = ControlsPanel()
        self.compare = CompareView()
        self.gallery = GalleryPanel(embedder=gallery_embedder, index_factory=gallery_index_factory,
                                    cache_dir=gallery_cache_dir)
        self.setCentralWidget(self.compare)
        # the controls (with the live frames) run the full height; the gallery spans the rest
        self.setCorner(Qt.Corner.BottomRightCorner, Qt.DockWidgetArea.RightDockWidgetArea)
        self.source_dock = self._dock("Source", "source", self.source_panel, Qt.DockWidgetArea.LeftDockWidgetArea)
        scroll = QScrollArea()
        scroll.setWidgetResizable(True)
        scroll.setWidget(self.controls)
        scroll.setHorizontalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
        scroll.setMinimumWidth(self.controls.sizeHint().width() + 20)
        self.controls_dock = self._dock("Controls", "controls", scroll, Qt.DockWidgetArea.RightDockWidgetArea)
        self.gallery_dock = self._dock("Gallery", "gallery", self.gallery, Qt.DockWidgetArea.BottomDockWidgetArea)
        self.resizeDocks([self.source_dock, self.controls_dock], [360, 300], Qt.Orientation.Horizontal)
        self.resizeDocks([self.gallery_dock], [240], Qt.Orientation.Vertical)

        self.status_label = QLabel("")
        self.statusBar().addWidget(self.status_label, 1)

        self._build_actions()
        self._wire()
        if restore:
            self._restore()
        self._update_actions()
        if self.settings.value("window/geometry") is None:
            self.resize(1400, 900)

    # ---------------------------------------------------------------- construction
    def _dock(self, title: str, name: str, widget, area) -> QDockWidget:
        d = QDockWidget(title, self)
        d.setObjectName(f"dock_{name}")
        d.setWidget(widget)
        d.setFeatures(QDockWidget.DockWidgetFeature.DockWidgetMovable
                      | QDockWidget.DockWidgetFeature.DockWidgetFloatable
                      | QDockWidget.DockWidgetFeature.DockWidgetClosable)
        self.addDockWidget(area, d)
        return d

    def _action(self, text: str, slot, shortcut=None, tip: str = "") -> QAction:
        a = QAction(text, self)
        if shortcut is not None:
            seqs = shortcut if isinstance(shortcut, list) else [shortcut]
            a.setShortcuts([QKeySequence(s) for s in seqs])
        a.setStatusTip(tip or text)
        a.triggered.connect(slot)
        self.addAction(a)
        return a

    def _build_actions(self) -> None:
        self.act_open = self._action("&Open…", self.open_dialog, QKeySequence.StandardKey.Open,
                                     "Open a still image or a video")
        self.act_reference = self._action("Load &reference HR…", self.load_reference_dialog, None,
                                          "A known 128×128 aligned face for PSNR / SSIM / CS")
        self.act_export = self._action("&Export…", self.export_dialog, "Ctrl+E",
                                       "Export samples, the run record and an HTML report")
        self.act_quit = self._action("&Quit", self.close, QKeySequence.StandardKey.Quit)
        self.act_run = self._action("&Run", self.run_clicked, ["Ctrl+R", "Ctrl+Return"], "Run the sampler")
        self.act_cancel = self._action("&Cancel", self.cancel_run, "Esc", "Cancel the running sampler")
        self.act_prev = self._action("&Previous frame", self.source_panel.step_back, [",", "Alt+Left"])
        self.act_next = self._action("&Next frame", self.source_panel.step_forward, [".", "Alt+Right"])
        self.act_play = self._action("&Play / pause", lambda: self.source_panel.play_btn.toggle(), "Ctrl+P")
        self.act_about = self._action("&About SDE-SR Studio", lambda: self.show_about(0), QKeySequence.StandardKey.HelpContents)
        self.act_card = self._action("&Model card", lambda: self.show_about(1))
        self.act_reset = self._action("&Reset layout", self.reset_layout)

        mb = self.menuBar()
        m = mb.addMenu("&File")
        m.addAction(self.act_open)
        self.recent_menu = m.addMenu("Open &recent")
        m.addAction(self.act_reference)
        m.addSeparator()
        m.addAction(self.act_export)
        m.addSeparator()
        m.addAction(self.act_quit)
        m = mb.addMenu("&Run")
        for a in (self.act_run, self.act_cancel):
            m.addAction(a)
        m.addSeparator()
        for a in (self.act_prev, self.act_next, self.act_play):
            m.addAction(a)
        m = mb.addMenu("&View")
        for d in (self.source_dock, self.controls_dock, self.gallery_dock):
            m.addAction(d.toggleViewAction())
        m.addSeparator()
        m.addAction(self.act_reset)
        m = mb.addMenu("&Help")
        m.addAction(self.act_about)
        m.addAction(self.act_card)

        tb = self.addToolBar("Main")
        tb.setObjectName("toolbar_main")
        for a in (self.act_open, self.act_run, self.act_cancel, self.act_export):
            tb.addAction(a)
        self._default_state = self.saveState()

    def _wire(self) -> None:
        sp = self.source_panel
        sp.opened.connect(self._on_opened)
        sp.selectionChanged.connect(self._on_selection)
        sp.errorOccurred.connect(lambda m: self.show_error("Input", m))
        sp.statusMessage.connect(self.set_status)
        sp.frameChanged.connect(lambda _: self._update_actions())
        c = self.controls
        c.runRequested.connect(self.run_clicked)
        c.cancelRequested.connect(self.cancel_run)
        c.modelChanged.connect(self._update_actions)
        c.previewSampleChanged.connect(self._on_preview_sample)
        cv = self.compare
        cv.sampleSelected.connect(self.gallery.show_sample)
        cv.rerunRequested.connect(self.rerun_sample)
        g = self.gallery
        g.errorOccurred.connect(lambda m: self.show_error("Gallery", m))
        g.statusMessage.connect(self.set_status)
        g.matched.connect(self._on_matched)

    # ---------------------------------------------------------------- messages
    def set_status(self, text: str) -> None:
        self.status_label.setText(text)

    def show_error(self, title: str, message: str) -> None:
        """A non-blocking warning dialog (and the status bar) with one sentence."""
        self.last_error = message
        self.set_status(message)
        box = QMessageBox(QMessageBox.Icon.Warning, title, message, QMessageBox.StandardButton.Ok, self)
        box.setAttribute(Qt.WidgetAttribute.WA_DeleteOnClose)
        box.finished.connect(lambda _=None, b=box: self._dialogs.remove(b) if b in self._dialogs else None)
        self._dialogs.append(box)
        box.open()

    def show_about(self, tab: int = 0) -> None:
        from .about import AboutDialog

        dlg = AboutDialog(self, tab)
        dlg.setAttribute(Qt.WidgetAttribute.WA_DeleteOnClose)
        dlg.open()

    # ---------------------------------------------------------------- opening
    def open_dialog(self) -> None:
        start = str(self.settings.value("paths/open_dir", ""))
        path, _ = QFileDialog.getOpenFileName(self, "Open an image or video", start, OPEN_FILTER)
        if path:
            self.open_path(path)

    def open_path(self, path) -> bool:
        return self.source_panel.open_path(path)

    def _on_opened(self, path: str) -> None:
        p = Path(path)
        self.setWindowTitle(f"{p.name} — SDE-SR Studio {__version__}")
        self.settings.setValue("paths/open_dir", str(p.parent))
        self._add_recent(str(p))
        self.reference_override = None
        if self.run is None:
            self._set_items_for_selection(None)
        self._hash_input(p)
        kind = self.source_panel.kind
        n = self.source_panel.frame_count
        self.set_status(f"Opened {p.name} ({'video, %d frames' % n if kind == 'video' else 'still image'}).")
        self._update_actions()

    def _hash_input(self, p: Path) -> None:
        key = str(p.resolve())
        if key in self.input_hashes:
            return

        def work(report, cancel):
            from ..core.provenance import sha256_file

            return key, sha256_file(p)

        job = FunctionJob(work, "Hashing the input", self)
        job.succeeded.connect(lambda r: self.input_hashes.__setitem__(r[0], r[1]))
        self._start_job(job)

    def _start_job(self, job) -> None:
        self._jobs.add(job)
        job.finished.connect(lambda j=job: (self._jobs.discard(j), j.deleteLater()))
        job.start()

    def _recent(self) -> list[str]:
        v = self.settings.value("paths/recent", [])
        if isinstance(v, str):
            v = [v] if v else []
        return [str(x) for x in (v or [])]

    def _add_recent(self, path: str) -> None:
        items = [path] + [r for r in self._recent() if r != path]
        self.settings.setValue("paths/recent", items[:MAX_RECENT])
        self._fill_recent()

    def _fill_recent(self) -> None:
        self.recent_menu.clear()
        items = self._recent()
        for i, p in enumerate(items):
            a = self.recent_menu.addAction(f"&{i + 1} {Path(p).name}")
            a.setToolTip(p)
            a.setStatusTip(p)
            a.triggered.connect(lambda _=False, p=p: self.open_path(p))
        if not items:
            a = self.recent_menu.addAction("(none)")
            a.setEnabled(False)
        else:
            self.recent_menu.addSeparator()
            self.recent_menu.addAction("Clear list", lambda: (self.settings.setValue("paths/recent", []),
                                                              self._fill_recent()))

    def dragEnterEvent(self, e) -> None:
        if e.mimeData().hasUrls() and any(u.isLocalFile() for u in e.mimeData().urls()):
            e.acceptProposedAction()

    def dropEvent(self, e) -> None:
        files = [u.toLocalFile() for u in e.mimeData().urls() if u.isLocalFile()]
        if files:
            e.acceptProposedAction()
            if Path(files[0]).is_dir():
                self.gallery.set_folder(files[0])
            else:
                self.open_path(files[0])

    def load_reference_dialog(self) -> None:
        path, _ = QFileDialog.getOpenFileName(self, "Load a reference HR face (128×128, aligned)",
                                              str(self.settings.value("paths/open_dir", "")),
                                              "Images (*.png *.jpg *.jpeg *.bmp *.tif *.tiff *.webp)")
        if path:
            self.load_reference(path)

    def load_reference(self, path) -> bool:
        from ..core.video import InputError, load_still

        try:
            img = load_still(path)
        except InputError as e:
            self.show_error("Reference", str(e))
            return False
        if img.shape[:2] != (128, 128):
            self.show_error("Reference", f"The reference must be an aligned 128×128 face frame; "
                                         f"{Path(path).name} is {img.shape[1]}×{img.shape[0]}.")
            return False
        self.reference_override = img
        if self.run is not None:  # the shown samples are measured against it too
            self.run.reference, self.run.reference_loaded = img, True
            self._recompute_reference_metrics()
        else:
            self._set_items_for_selection(self.source_panel.selection)
        self.set_status(f"Reference HR: {Path(path).name}")
        return True

    def selection_reference(self, sel) -> tuple[Optional[np.ndarray], bool]:
        """The reference HR for a new run on ``sel``: a loaded one, else the crop when it is genuine HR."""
        if self.reference_override is not None:
            return self.reference_override, True
        return (sel.reference if sel is not None else None), False

    def current_reference(self) -> Optional[np.ndarray]:
        """The reference of what the comparison view shows (the last run, else the selection)."""
        if self.run is not None:
            return self.run.reference
        return self.selection_reference(self.source_panel.selection)[0]

    # ---------------------------------------------------------------- selection
    def _on_selection(self, sel) -> None:
        if self.run is None:
            self._set_items_for_selection(sel)
        else:  # results stay until the next run; say what they belong to
            self.compare.set_header(self._run_header(current_differs=sel is not self.run.selection))
        self._update_actions()

    def _run_header(self, current_differs: bool = False) -> str:
        run = self.run
        where = run.input_path.name if run.input_path else "the input"
        if run.input_kind == "video":
            where += f", frame {run.frame.get('index', 0)}"
        text = (f"Samples of {where} ({run.selection.kind} face). Generated samples are plausible faces, "
                "not recovered detail.")
        if current_differs:
            text += " The selected face has changed: press Run to sample it."
        return text

    def _base_items(self, sel, bicubic_metrics: Optional[dict] = None, reference=None,
                    reference_loaded: bool = False) -> list[CompareItem]:
        if sel is None:
            return []
        items = [CompareItem("lr", "LR input (nearest)", sel.lr, "lr", note="16×16, shown ×8"),
                 CompareItem("bicubic", "Bicubic", sel.bicubic, "bicubic", metrics=dict(bicubic_metrics or {}))]
        if reference is not None:
            items.append(CompareItem("reference", "Reference HR", reference, "reference",
                                     note="loaded" if reference_loaded else "from the input"))
        return items

    def _set_items_for_selection(self, sel) -> None:
        ref, loaded = self.selection_reference(sel)
        self.compare.set_items(self._base_items(sel, reference=ref, reference_loaded=loaded))
        self.compare.set_header("Select a face and press Run. Generated samples are plausible faces, "
                                "not recovered detail.")

    # ---------------------------------------------------------------- running
    def _update_actions(self) -> None:
        running = self._job is not None
        self.act_run.setEnabled(not running)
        self.act_cancel.setEnabled(running)
        self.act_export.setEnabled(self.run is not None and bool(self.compare.samples()) and not running
                                   and self._exporting is None)
        video = self.source_panel.kind == "video"
        for a in (self.act_prev, self.act_next, self.act_play):
            a.setEnabled(video)

    @staticmethod
    def _enhancer_key(weights, classifier, device) -> tuple:
        """Cache key of a loaded model: paths, modification times (a retrained file reloads), device."""
        def stamp(p):
            try:
                return Path(p).stat().st_mtime_ns if p else 0
            except OSError:
                return 0

        return (str(weights), stamp(weights), str(classifier or ""), stamp(classifier), str(device))

    def run_clicked(self) -> None:
        self.start_run()

    def start_run(self, rerun_key: Optional[str] = None) -> bool:
        """Start the sampler on the selected face (or re-run one sample); False with a message if not possible."""
        if self._job is not None:
            return False
        sel = self.source_panel.selection if rerun_key is None else (self.run.selection if self.run else None)
        if sel is None:
            self.show_error("Run", "Select a face first: open an image or video, then click a detected face "
                                   "or draw a box around one.")
            return False
        weights = self.controls.weights_path()
        if weights is None:
            from ..core.enhance import SCORE_WEIGHTS_NAME, weights_dir

            self.show_error("No model", f"No trained model is installed ({weights_dir() / SCORE_WEIGHTS_NAME} "
                                        "is missing); choose a model file in the Controls panel or train one "
                                        "with `sdesr train score`.")
            return False
        settings = self.controls.take_settings()
        tag = None
        if rerun_key is not None:
            item = self.compare.item(rerun_key)
            if item is None or item.seed is None:
                return False
            settings.seed, settings.samples = int(item.seed), 1
            tag = ("rerun", rerun_key)
        try:
            settings.validate()
        except ValueError as e:
            self.show_error("Settings", str(e))
            return False
        classifier = self.controls.classifier_path()
        device = self.controls.device_name()
        key = self._enhancer_key(weights, classifier, device)
        if rerun_key is None:
            ref, loaded = self.selection_reference(sel)
            src = self.source_panel.source
            info = dict(src.info()) if callable(getattr(src, "info", None)) else {}
            context = {"input_path": self.source_panel.path, "input_kind": self.source_panel.kind,
                       "frame": self.source_panel.frame_info(), "reference": ref, "reference_loaded": loaded,
                       "source_info": {k: v for k, v in info.items() if k not in ("path", "kind")}}
        else:
            ref, context = self.run.reference, None
        req = SamplerRequest(weights, classifier, device, sel.lr, settings, reference=ref,
                             enhancer=self._enhancers.get(key), tag=tag)
        job = SamplerJob(req, self)
        job.status.connect(self.set_status)
        job.progress.connect(self.controls.show_progress)
        job.preview.connect(self._on_preview)
        job.enhancerReady.connect(lambda enh, k=key: self._keep_enhancer(k, enh))
        job.done.connect(lambda out, s=sel, k=key, c=context: self._on_done(out, s, k, c))
        job.failed.connect(self._on_failed)
        job.cancelled.connect(self._on_cancelled)
        self._job = job
        self._start_job_tracking(job)
        self._preview_index = 0
        self.preview_steps = []
        self.controls.live_sample.setValue(1)
        self.controls.set_running(True)
        self._update_actions()
        job.start()
        return True

    def _keep_enhancer(self, key: tuple, enh) -> None:
        self._enhancers = {key: enh}  # one loaded model at a time: weights can be large

    def _start_job_tracking(self, job) -> None:
        self._jobs.add(job)
        job.finished.connect(lambda j=job: (self._jobs.discard(j), j.deleteLater()))

    def rerun_sample(self, key: str) -> None:
        self.start_run(rerun_key=key)

    def cancel_run(self) -> None:
        if self._job is not None:
            self._job.cancel()
            self.set_status("Cancelling…")

    def _on_preview(self, frame, record: bool = True) -> None:
        self._last_preview = frame
        if record:
            self.preview_steps.append(frame.step)
        i = min(self._preview_index, len(frame.x) - 1)
        self.controls.show_preview(frame.x[i], frame.denoised[i], frame.step, frame.total, frame.sigma, len(frame.x))

    def _on_preview_sample(self, i: int) -> None:
        self._preview_index = max(i, 0)
        if self._last_preview is not None:
            self._on_preview(self._last_preview, record=False)

    def _end_run(self) -> None:
        """The run is over for the user (its thread may still be returning)."""
        self._job = None
        self.controls.set_running(False)
        self._update_actions()

    def _on_failed(self, msg: str) -> None:
        self._end_run()
        self.controls.finish_progress("Failed")
        self.show_error("Sampling failed", msg)
        self.runFailed.emit(msg)

    def _on_cancelled(self) -> None:
        self._end_run()
        self.controls.finish_progress("Cancelled")
        self.set_status("Sampling cancelled; nothing was changed.")
        self.runCancelled.emit()

    def _on_done(self, out, sel, key, context=None) -> None:
        self._end_run()
        rerun = isinstance(out.tag, tuple) and out.tag[0] == "rerun"
        enh = self._enhancers.get(key)
        model = dict(enh.model_info) if enh is not None else {"path": key[0]}
        classifier = dict(enh.classifier_info) if enh is not None and enh.classifier_info else None
        if not rerun or self.run is None:
            ctx = context or {"input_path": None, "input_kind": "", "frame": {}, "reference": None,
                              "reference_loaded": False}
            self.run = RunSnapshot(
                selection=sel, input_path=ctx["input_path"], input_kind=ctx["input_kind"], frame=ctx["frame"],
                settings=out.settings, model=model, classifier=classifier, device=out.device,
                timings={"load_seconds": round(out.load_seconds, 4), "sampling_seconds": round(out.seconds, 4),
                         "nfe": out.nfe},
                bicubic=out.bicubic, bicubic_metrics=out.bicubic_metrics,
                reference=ctx["reference"], reference_loaded=ctx["reference_loaded"],
                source_info=ctx.get("source_info") or {})
            self._sample_counter = 0
            items = self._base_items(sel, out.bicubic_metrics, self.run.reference, self.run.reference_loaded)
            for img, seed, m in zip(out.samples, out.seeds, out.metrics):
                self._sample_counter += 1
                items.append(CompareItem(f"s{self._sample_counter}", f"Sample {self._sample_counter}", img,
                                         "sample", seed=int(seed), metrics=dict(m), generated=True))
            self.compare.set_items(items)
            self.compare.set_header(self._run_header(sel is not self.source_panel.selection))
        else:
            src = self.compare.item(out.tag[1])
            self._sample_counter += 1
            differs = {k: v for k, v in out.settings.items()
                       if k not in ("seed", "seeds", "samples") and self.run.settings.get(k) != v}
            own = dict(out.settings)
            if model.get("sha256") != self.run.model.get("sha256") or classifier != self.run.classifier:
                differs["model"] = model.get("name") or model.get("path")
                own["model"], own["classifier"] = model, classifier
            note = (f"re-run of {src.title if src else out.tag[1]}"
                    + (": " + ", ".join(f"{k}={v}" for k, v in differs.items()) if differs else ", same settings"))
            items = list(self.compare.items)
            items.append(CompareItem(f"s{self._sample_counter}", f"Sample {self._sample_counter}", out.samples[0],
                                     "sample", seed=int(out.seeds[0]), metrics=dict(out.metrics[0]), generated=True,
                                     note=note, settings=own))
            self.compare.set_items(items)
            self.compare.select(f"s{self._sample_counter}")
        self.controls.finish_progress(f"Done: {len(out.samples)} sample(s) in {out.seconds:.1f} s")
        self.set_status(f"{len(out.samples)} sample(s), {out.nfe} network evaluations, {out.seconds:.1f} s "
                        f"on {out.device}. Generated faces are leads, not identifications.")
        self._send_probes()
        self._update_actions()
        self.runFinished.emit()

    def _send_probes(self) -> None:
        if self.run is None:
            return
        probes = [(it.key, it.title, it.image) for it in self.compare.samples()]
        ref = self.current_reference()
        self.gallery.set_probes(probes, self.run.bicubic, ref)
        if ref is not None and self.gallery.index is None:
            self._compute_cs(probes, self.run.bicubic, ref)  # matching would measure CS too

    def _compute_cs(self, probes, bicubic, ref) -> None:
        """CS (face-embedding cosine to the reference HR) in a worker; skipped if no embedder exists."""
        gallery = self.gallery
        run = self.run

        def work(report, cancel):
            try:
                emb = gallery.embedder()
            except ImportError:
                return None  # no face embedder installed: CS stays unmeasured
            e = np.asarray(emb.embed_aligned([img for _, _, img in probes] + [bicubic, ref]), dtype=np.float64)
            e = e / np.maximum(np.linalg.norm(e, axis=1, keepdims=True), 1e-12)
            out = {key: float(e[i] @ e[-1]) for i, (key, _, _) in enumerate(probes)}
            out["bicubic"] = float(e[-2] @ e[-1])
            return out

        job = FunctionJob(work, "Measuring CS", self)
        job.succeeded.connect(lambda cs, r=run: self._apply_cs(cs) if cs and self.run is r else None)
        job.failed.connect(lambda m: self.set_status(f"CS was not measured: {m}"))
        self._start_job(job)

    def _apply_cs(self, cs: dict) -> None:
        for it in self.compare.items:
            if it.key in cs:
                it.metrics["cs"] = cs[it.key]
                self.compare.refresh_item(it.key)

    def _on_matched(self, res) -> None:
        if res.cs:
            self._apply_cs(res.cs)

    def _recompute_reference_metrics(self) -> None:
        """PSNR / SSIM of the run's images against its (new) reference; CS is measured again."""
        from ..core import faces, metrics

        run = self.run
        ref = run.reference
        bic = next((it for it in self.compare.items if it.kind == "bicubic"), None)
        samples = [it for it in self.compare.items if it.kind == "sample"]
        for it in ([bic] if bic else []) + samples:
            for k in ("psnr", "ssim", "cs"):
                it.metrics.pop(k, None)
            if ref is not None:
                a, b = faces.to_tensor(it.image), faces.to_tensor(ref)
                it.metrics["psnr"] = float(metrics.psnr(a, b)[0])
                it.metrics["ssim"] = float(metrics.ssim(a, b)[0])
        if bic is not None:
            run.bicubic_metrics = dict(bic.metrics)
        base = self._base_items(run.selection, run.bicubic_metrics, ref, run.reference_loaded)
        self.compare.set_items(base + samples)
        self._send_probes()

    # ---------------------------------------------------------------- export
    def export_dialog(self) -> None:
        from .export import ExportDialog, forbidden_folders

        if self.run is None or not self.compare.samples():
            self.show_error("Export", "There is nothing to export yet; run the sampler first.")
            return
        forbidden = forbidden_folders(self.run.input_path, self.gallery.folder)
        start = str(self.settings.value("paths/export_dir", "") or Path.home())
        dlg = ExportDialog(self.compare.samples(), start, forbidden, self.gallery.result is not None, self)
        if dlg.exec() != ExportDialog.DialogCode.Accepted:
            return
        self.export_async(dlg.folder.text().strip(), dlg.keys(), with_candidates=dlg.with_candidates.isChecked())

    def build_export_job(self, keys: list[str], with_candidates: bool = True):
        from ..core.report import ExportImage, ExportJob

        run = self.run
        sel = run.selection
        images = []
        if sel.crop is not None:
            images.append(ExportImage("input_crop", sel.crop, "crop", False, "Aligned face crop from the input"))
        images.append(ExportImage("input_lr_16x16", sel.lr, "lr", False, "LR input (16×16) given to the model"))
        if run.reference_loaded and run.reference is not None:
            images.append(ExportImage("reference_hr", run.reference, "reference", False,
                                      "Reference HR (loaded by the user)"))
        bic = next((it for it in self.compare.items if it.kind == "bicubic"), None)
        images.append(ExportImage("bicubic", run.bicubic, "bicubic", False, "Bicubic baseline (interpolation)",
                                  info={k: round(float(v), 6) for k, v in (bic.metrics if bic else {}).items()}))
        chosen = [it for it in self.compare.samples() if it.key in keys]
        for it in chosen:
            info: dict[str, Any] = {"seed": it.seed, "favourite": it.favourite, "sample": it.title}
            info.update({k: round(float(v), 6) for k, v in it.metrics.items()})
            if it.settings is not None:
                info["sampler"] = it.settings
            if it.note:
                info["note"] = it.note
            images.append(ExportImage(f"{it.key}_seed{it.seed}", it.image, "sample", True, it.title, info))
        inp: dict[str, Any] = {}
        if run.input_path is not None:
            # the hash of a large video may still be computing: _export_work fills it in off the GUI thread
            sha = self.input_hashes.get(str(Path(run.input_path).resolve()))
            inp = {"path": str(run.input_path), "sha256": sha, "kind": run.input_kind, **run.source_info}
        notes = [sel.note] if sel.note else []
        if run.reference_loaded:
            notes.append("PSNR / SSIM / CS are measured against a reference HR loaded by the user.")
        cands = self.gallery.candidates_for_export(keys) if with_candidates else None
        title = f"SDE-SR Studio run — {run.input_path.name if run.input_path else 'face'}"
        return ExportJob(images=images, input=inp, frame=run.frame, face=sel.to_dict(), model=run.model,
                         classifier=run.classifier, sampler=run.settings, device=run.device, candidates=cands,
                         timings=run.timings, notes=notes, title=title)

    def _prepare_export(self, folder, keys: Optional[list[str]], with_candidates: bool):
        """On the GUI thread: check there is something to export and snapshot it (cheap)."""
        from .export import forbidden_folders

        if self.run is None or not self.compare.samples():
            self.show_error("Export", "There is nothing to export yet; run the sampler first.")
            return None
        if keys is None:
            favs = [it.key for it in self.compare.samples() if it.favourite]
            keys = favs or [it.key for it in self.compare.samples()]
        forbidden = forbidden_folders(self.run.input_path, self.gallery.folder)
        stem = self.run.input_path.stem if self.run.input_path else "face"
        name = f"{stem}_f{self.run.frame.get('index', 0)}_{time.strftime('%Y%m%d-%H%M%S')}"
        job = self.build_export_job(keys, with_candidates)
        return job, Path(folder), name, forbidden, list(keys)

    @staticmethod
    def _export_work(job, folder: Path, name: str, forbidden):
        """Off the GUI thread: hash the input if still needed, write the folder atomically."""
        from ..core.provenance import sha256_file
        from ..core.report import ExportError, export_run

        if job.input and not job.input.get("sha256"):
            job.input["sha256"] = sha256_file(job.input["path"])
        try:
            return export_run(job, folder, folder_name=name, forbidden=forbidden)
        except ExportError as e:  # the user's choice was refused: one sentence, no "unexpectedly"
            raise ValueError(str(e)) from e

    def _finish_export(self, res, folder: Path, keys: list[str]) -> None:
        if res.record.get("inputs") and self.run is not None and self.run.input_path is not None:
            sha = res.record["inputs"][0].get("sha256")
            if sha:
                self.input_hashes.setdefault(str(Path(self.run.input_path).resolve()), sha)
        self.settings.setValue("paths/export_dir", str(folder))
        self.last_export = res.folder
        self.set_status(f"Exported {len(keys)} sample(s) to {res.folder}.")
        self.exported.emit(str(res.folder))

    def export_to(self, folder, keys: Optional[list[str]] = None, with_candidates: bool = True) -> Optional[Path]:
        """Export and wait (scripts, tests); returns the new folder or None. The dialog uses
        :meth:`export_async`, which does the same work in a thread."""
        from .worker import user_message

        prep = self._prepare_export(folder, keys, with_candidates)
        if prep is None:
            return None
        job, folder, name, forbidden, keys = prep
        QApplication.setOverrideCursor(Qt.CursorShape.WaitCursor)
        try:
            res = self._export_work(job, folder, name, forbidden)
        except Exception as e:  # noqa: BLE001
            self.show_error("Export", user_message(e, "The export"))
            return None
        finally:
            QApplication.restoreOverrideCursor()
        self._finish_export(res, folder, keys)
        return res.folder

    def export_async(self, folder, keys: Optional[list[str]] = None, with_candidates: bool = True):
        """Export in a worker thread (hashing a long video and encoding PNGs never block the
        window); ``exported`` or an error dialog follows. Returns the job, or None."""
        prep = self._prepare_export(folder, keys, with_candidates)
        if prep is None:
            return None
        job, folder, name, forbidden, keys = prep
        work = FunctionJob(lambda report, cancel: self._export_work(job, folder, name, forbidden),
                           "The export", self)
        work.succeeded.connect(lambda res: self._finish_export(res, folder, keys))
        work.failed.connect(lambda msg: self.show_error("Export", msg))
        work.finished.connect(self._export_ended)
        self._exporting = work
        self.act_export.setEnabled(False)
        self.set_status(f"Exporting {len(keys)} sample(s)…")
        self._start_job(work)
        return work

    def _export_ended(self) -> None:
        self._exporting = None
        self._update_actions()

    # ---------------------------------------------------------------- settings and lifecycle
    def _restore(self) -> None:
        s = self.settings
        geo = s.value("window/geometry")
        if geo is not None:
            self.restoreGeometry(geo)
        state = s.value("window/state")
        if state is not None:
            self.restoreState(state)
        self.controls.restore(s)
        self.gallery.restore(s)
        try:
            self.compare.set_zoom(int(s.value("compare/zoom", self.compare.zoom)))
            self.compare.zoom_combo.setCurrentIndex(max(self.compare.zoom_combo.findData(self.compare.zoom), 0))
        except (TypeError, ValueError):
            pass
        self._fill_recent()

    def save_settings(self) -> None:
        s = self.settings
        s.setValue("window/geometry", self.saveGeometry())
        s.setValue("window/state", self.saveState())
        s.setValue("compare/zoom", self.compare.zoom)
        self.controls.save(s)
        self.gallery.save(s)
        s.sync()

    def reset_layout(self) -> None:
        self.restoreState(self._default_state)
        for d in (self.source_dock, self.controls_dock, self.gallery_dock):
            d.show()

    def shutdown(self) -> None:
        """Cancel and join every worker (closing the window, or tests)."""
        if self._job is not None:
            self._job.cancel()
        for j in list(self._jobs):
            j.wait(30000)
        self.source_panel.shutdown()
        self.gallery.shutdown()

    def closeEvent(self, e) -> None:
        self.save_settings()
        self.shutdown()
        super().closeEvent(e)
