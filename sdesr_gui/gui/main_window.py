"""The main window: the analyst's loop of open, pick a face, set what is known, run, watch,
compare, match and export.

The state of that loop (input, selected face, run, samples, favourites, reference, metrics,
export plan) is a Qt-free :class:`core.session.Session`; the window feeds it from the widgets,
shows it by subscribing to its events, and runs the slow parts (sampling, hashing, CS,
exporting) in worker threads.

Layout: the source (footage, scrubber, faces, crop) docks left, the controls (and the live
sampler frames) dock right, the comparison view is central, the gallery docks at the bottom.
Docks, sizes, sliders, last folders and recent files persist in QSettings.
"""

from __future__ import annotations

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
from ..core.errors import SdesrError
from ..core.session import RunSnapshot, Session, write_export
from .compare_view import CompareView
from .controls import ControlsPanel
from .gallery_panel import GalleryPanel
from .source_panel import SourcePanel
from .worker import FunctionJob, SamplerJob, SamplerRequest

MAX_RECENT = 10
OPEN_FILTER = ("Images and videos (*.png *.jpg *.jpeg *.bmp *.tif *.tiff *.webp *.gif *.ppm *.pgm "
               "*.mp4 *.avi *.mov *.mkv *.m4v *.webm *.mpg *.mpeg *.wmv *.ts);;All files (*)")


#: the gallery dock's first height (px): about six candidate rows visible at 1400x900
GALLERY_DOCK_HEIGHT = 380


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
        self.last_question: Optional[str] = None  # the last yes/no question asked (for tests and logs)
        self._exporting = None  # the export job while one runs
        self._dialogs: list = []
        self._enhancers: dict[tuple, Any] = {}
        self._job: Optional[SamplerJob] = None
        self._jobs: set = set()
        self._last_preview = None
        self._preview_index = 0
        self.preview_steps: list[int] = []  # steps of the live frames shown in the current run
        self.session = Session()

        self.source_panel = SourcePanel()
        self.controls = ControlsPanel()
        self.compare = CompareView()
        self.gallery = GalleryPanel(embedder=gallery_embedder, index_factory=gallery_index_factory,
                                    cache_dir=gallery_cache_dir)
        self.setCentralWidget(self.compare)
        # the controls (with the live frames) run the full height; the gallery spans the rest
        self.setCorner(Qt.Corner.BottomRightCorner, Qt.DockWidgetArea.RightDockWidgetArea)
        # both side panels scroll vertically rather than holding the window's height: the gallery
        # below the source panel needs the room for its candidate rows
        self.source_dock = self._dock("Source", "source", self._scrolled(self.source_panel, minimum=True),
                                      Qt.DockWidgetArea.LeftDockWidgetArea)
        self.controls_dock = self._dock("Controls", "controls", self._scrolled(self.controls),
                                        Qt.DockWidgetArea.RightDockWidgetArea)
        self.gallery_dock = self._dock("Gallery", "gallery", self.gallery, Qt.DockWidgetArea.BottomDockWidgetArea)
        self.resizeDocks([self.source_dock, self.controls_dock], [360, 300], Qt.Orientation.Horizontal)
        # tall enough for about six of the top-10 candidates at 1400x900 (the comparison scrolls)
        self.resizeDocks([self.gallery_dock], [GALLERY_DOCK_HEIGHT], Qt.Orientation.Vertical)

        self.status_label = QLabel("")
        self.statusBar().addWidget(self.status_label, 1)

        self._build_actions()
        self._wire()
        if restore:
            self._restore()
        self._update_actions()
        if self.settings.value("window/geometry") is None:
            self.resize(1400, 900)
            self.resizeDocks([self.gallery_dock], [GALLERY_DOCK_HEIGHT], Qt.Orientation.Vertical)

    # ---------------------------------------------------------------- construction
    @staticmethod
    def _scrolled(widget, minimum: bool = False) -> QScrollArea:
        """``widget`` in a vertical-only scroll area as wide as the widget's (minimum) size hint."""
        scroll = QScrollArea()
        scroll.setWidgetResizable(True)
        scroll.setWidget(widget)
        scroll.setHorizontalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
        hint = widget.minimumSizeHint() if minimum else widget.sizeHint()
        scroll.setMinimumWidth(hint.width() + 20)
        return scroll

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
        sp.boxFaceChecked.connect(self._on_box_face_checked)
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
        cv.favouriteToggled.connect(self.session.set_favourite)
        ss = self.session
        ss.subscribe("items", lambda: self.compare.set_items(ss.items))
        ss.subscribe("item", self.compare.refresh_item)
        ss.subscribe("header", self.compare.set_header)
        ss.subscribe("added", self.compare.select)
        ss.subscribe("run", self._send_probes)

    # ---------------------------------------------------------------- the session's state
    @property
    def run(self) -> Optional[RunSnapshot]:
        """What the shown samples were produced from (None before the first run)."""
        return self.session.run

    @property
    def input_hashes(self) -> dict[str, str]:
        return self.session.input_hashes

    @property
    def reference_override(self) -> Optional[np.ndarray]:
        return self.session.reference_override

    @property
    def last_export(self) -> Optional[Path]:
        return self.session.last_export

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

    def ask(self, title: str, question: str, on_yes) -> QMessageBox:
        """A non-blocking yes/no question (No is the default); ``on_yes()`` runs on Yes."""
        self.last_question = question
        box = QMessageBox(QMessageBox.Icon.Warning, title, question,
                          QMessageBox.StandardButton.Yes | QMessageBox.StandardButton.No, self)
        box.setDefaultButton(QMessageBox.StandardButton.No)
        box.setAttribute(Qt.WidgetAttribute.WA_DeleteOnClose)
        box.finished.connect(lambda _=None, b=box: self._dialogs.remove(b) if b in self._dialogs else None)
        box.accepted.connect(on_yes)  # Yes has the accept role
        self._dialogs.append(box)
        box.open()
        return box

    def _on_box_face_checked(self, found: bool) -> None:
        """A hand-drawn box without a face has lost its reference HR: say so, offer to keep it."""
        if found:
            return
        from ..core.selection import NO_FACE_NOTE, NO_FACE_QUESTION

        self.set_status(NO_FACE_NOTE)
        self.ask("No face in the drawn box", NO_FACE_QUESTION, self.source_panel.keep_box_as_reference)

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
        """Start opening a still or video (decoded in a worker; the window stays live). False
        with a one-sentence dialog if the file fails the quick checks; a file that cannot be
        decoded is reported the same way when the worker finds out (``source_panel.openFailed``)."""
        return self.source_panel.open_path(path)

    def _on_opened(self, path: str) -> None:
        p = Path(path)
        self.setWindowTitle(f"{p.name} — SDE-SR Studio {__version__}")
        self.settings.setValue("paths/open_dir", str(p.parent))
        self._add_recent(str(p))
        kind = self.source_panel.kind
        self.session.set_input(p, kind, self.source_panel.source_info())
        self._hash_input(p)
        n = self.source_panel.frame_count
        self.set_status(f"Opened {p.name} ({'video, %d frames' % n if kind == 'video' else 'still image'})."
                        + "".join(f" {note}" for note in self.source_panel.source_notes))
        self._update_actions()

    def _hash_input(self, p: Path) -> None:
        if self.session.input_hash(p) is not None:
            return

        def work(report, cancel):
            from ..core.provenance import sha256_file

            return sha256_file(p)

        job = FunctionJob(work, "Hashing the input", self)
        job.succeeded.connect(lambda sha: self.session.record_hash(p, sha))
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
        """Use a known aligned 128×128 face as the reference HR (PSNR / SSIM / CS); False with a
        message if it cannot be."""
        notes: list[str] = []
        try:
            self.session.load_reference(path, notes=notes)
        except SdesrError as e:
            self.show_error("Reference", str(e))
            return False
        self.set_status(f"Reference HR: {Path(path).name}" + "".join(f". {n}" for n in notes))
        return True

    def selection_reference(self, sel) -> tuple[Optional[np.ndarray], bool]:
        """The reference HR for a new run on ``sel``: a loaded one, else the crop when it is genuine HR."""
        return self.session.selection_reference(sel)

    def current_reference(self) -> Optional[np.ndarray]:
        """The reference of what the comparison view shows (the last run, else the selection)."""
        return self.session.current_reference()

    # ---------------------------------------------------------------- selection
    def _on_selection(self, sel) -> None:
        self.session.set_selection(sel, self.source_panel.frame_info() if sel is not None else None)
        self._update_actions()

    # ---------------------------------------------------------------- running
    def _update_actions(self) -> None:
        running = self._job is not None
        self.act_run.setEnabled(not running)
        self.act_cancel.setEnabled(running)
        self.act_export.setEnabled(self.session.can_export and not running
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
        try:
            plan = self.session.plan_run(rerun_key)
        except SdesrError as e:
            self.show_error("Run", str(e))
            return False
        choice = self.controls.weights_path()
        if choice is None:
            from ..core.enhance import SCORE_WEIGHTS_NAME, weights_dir

            self.show_error("No model", f"No trained model is installed ({weights_dir() / SCORE_WEIGHTS_NAME} "
                                        "is missing); choose a model file in the Controls panel or train one "
                                        "with `sdesr train score`.")
            return False
        if plan is None:  # no such sample to re-run
            return False
        # which model (8x or 16x) reads this face, and why: the user's file, or by the face's size
        from ..core.enhance import pick_score_model

        try:
            pick = pick_score_model(choice, plan.selection.lr.shape, plan.selection.details.get("face_width"))
            plan = plan.at_scale(pick.scale, pick.why)
        except SdesrError as e:
            self.show_error("Model", str(e))
            return False
        weights = str(pick.weights)
        if pick.automatic:
            self.set_status(f"{pick.scale}× model: {pick.why}.")
        # a re-run uses its sample's own seed: no new random seed is drawn (or shown) for it
        settings = self.controls.take_settings(draw_seed=rerun_key is None)
        plan.apply(settings)
        try:
            settings.validate()
        except ValueError as e:
            self.show_error("Settings", str(e))
            return False
        classifier = self.controls.classifier_path()
        device = self.controls.device_name()
        key = self._enhancer_key(weights, classifier, device)
        footage = str(pick.footage) if pick.footage is not None and plan.tag is None else None
        if plan.tag is not None and isinstance(self.session.run.model if self.session.run else None, dict):
            ran = self.session.run.model.get("path")  # a re-run uses the model its run used
            if ran and Path(ran).is_file() and ran != weights:
                weights, key = ran, self._enhancer_key(ran, classifier, device)
        req = SamplerRequest(weights, classifier, device, plan.lr, settings, reference=plan.reference,
                             enhancer=self._enhancers.get(key), tag=plan.tag, footage=footage)
        job = SamplerJob(req, self)
        job.status.connect(self.set_status)
        job.progress.connect(self.controls.show_progress)
        job.preview.connect(self._on_preview)
        job.enhancerReady.connect(lambda enh, k=key: self._keep_enhancer(k, enh))
        job.done.connect(lambda out, s=plan.selection, k=key, c=plan.context, o=plan.origin:
                         self._on_done(out, s, k, c, o))
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
        self.controls.show_preview(frame.x[i], frame.denoised[i], frame.step, frame.total, frame.sigma, len(frame.x),
                                   frame.std_rgb)

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

    def _on_done(self, out, sel, key, context=None, origin=None) -> None:
        """A run finished: the session records it (the views follow its events)."""
        self._end_run()
        enh = self._enhancers.get(key)
        model = dict(out.model) if out.model else (dict(enh.model_info) if enh is not None else {"path": key[0]})
        if out.choice:
            model["choice"] = dict(out.choice)
        classifier = dict(enh.classifier_info) if enh is not None and enh.classifier_info else None
        self.session.record_result(out, sel, context, model, classifier, origin=origin)
        self.controls.finish_progress(f"Done: {len(out.samples)} sample(s) in {out.seconds:.1f} s")
        scale = getattr(sel, "scale", 8)
        why = (sel.details or {}).get("scale_why", "") if scale != 8 or "not installed" in \
            str((sel.details or {}).get("scale_why", "")) else ""
        chose = f"; {out.choice['text']}" if out.choice else ""
        capped = out.settings.get("guidance_capped") or {}
        cap = (f"; the guidance cap acted at {capped['capped']} of {capped['evaluations']} guided steps "
               "(samples × evaluations)") if capped.get("capped") else ""
        self.set_status(f"{len(out.samples)} sample(s), {out.nfe} network evaluations, {out.seconds:.1f} s "
                        f"on {out.device}" + (f" with the {scale}× model ({why})" if why else "") + chose + cap
                        + ". Generated faces are leads, not identifications.")
        self._update_actions()
        self.runFinished.emit()

    def _send_probes(self) -> None:
        """The run's samples to the gallery, with the mean estimate as its own probe (matching
        measures CS too), else CS alone."""
        run = self.session.run
        if run is None:
            return
        probes = [(it.key, it.title, it.image) for it in self.session.samples()]
        ref = self.session.current_reference()
        self.gallery.set_probes(probes, run.bicubic, ref, mean=run.mean,
                                model_sha256=(run.model or {}).get("sha256"))
        if ref is not None and self.gallery.index is None:
            self._compute_cs(probes, run.bicubic, ref, run.mean)  # matching would measure CS too

    def _compute_cs(self, probes, bicubic, ref, mean=None) -> None:
        """CS (face-embedding cosine to the reference HR) in a worker; skipped if no embedder exists."""
        gallery = self.gallery
        run = self.session.run

        def work(report, cancel):
            from ..core.matching import cs_to_reference

            try:
                emb = gallery.embedder()
            except ImportError:
                return None  # no face embedder installed: CS stays unmeasured
            return cs_to_reference(emb, probes, bicubic, ref, mean)

        job = FunctionJob(work, "Measuring CS", self)
        job.succeeded.connect(lambda cs, r=run: self._apply_cs(cs) if cs and self.session.run is r else None)
        job.failed.connect(lambda m: self.set_status(f"CS was not measured: {m}"))
        self._start_job(job)

    def _apply_cs(self, cs: dict) -> None:
        self.session.set_metrics("cs", cs)

    def _on_matched(self, res) -> None:
        if res.cs:
            self._apply_cs(res.cs)

    # ---------------------------------------------------------------- export
    def export_dialog(self) -> None:
        from .export import ExportDialog

        if not self.session.can_export:
            self.show_error("Export", "There is nothing to export yet; run the sampler first.")
            return
        forbidden = self.session.forbidden_folders(self.gallery.folder)
        start = str(self.settings.value("paths/export_dir", "") or Path.home())
        dlg = ExportDialog(self.session.samples(), start, forbidden, self.gallery.result is not None, self)
        if dlg.exec() != ExportDialog.DialogCode.Accepted:
            return
        self.export_async(dlg.folder.text().strip(), dlg.keys(), with_candidates=dlg.with_candidates.isChecked())

    def build_export_job(self, keys: list[str], with_candidates: bool = True):
        """The run's ``core.report.ExportJob`` for samples ``keys`` (with the gallery candidates)."""
        cands = self.gallery.candidates_for_export(keys) if with_candidates else None
        return self.session.build_export_job(keys, cands)

    def _plan_export(self, folder, keys: Optional[list[str]], with_candidates: bool):
        """On the GUI thread: check there is something to export and snapshot it (cheap)."""
        try:
            return self.session.plan_export(folder, keys,
                                            self.gallery.candidates_for_export if with_candidates else None,
                                            self.gallery.folder)
        except SdesrError as e:
            self.show_error("Export", str(e))
            return None

    def _finish_export(self, plan, res) -> None:
        self.session.export_done(plan, res)
        self.settings.setValue("paths/export_dir", str(plan.folder))
        self.set_status(f"Exported {len(plan.keys)} sample(s) to {res.folder}.")
        self.exported.emit(str(res.folder))

    def export_to(self, folder, keys: Optional[list[str]] = None, with_candidates: bool = True) -> Optional[Path]:
        """Export and wait (scripts, tests); returns the new folder or None. The dialog uses
        :meth:`export_async`, which does the same work in a thread."""
        from .worker import user_message

        plan = self._plan_export(folder, keys, with_candidates)
        if plan is None:
            return None
        QApplication.setOverrideCursor(Qt.CursorShape.WaitCursor)
        try:
            res = write_export(plan)
        except Exception as e:  # noqa: BLE001
            self.show_error("Export", user_message(e, "The export"))
            return None
        finally:
            QApplication.restoreOverrideCursor()
        self._finish_export(plan, res)
        return res.folder

    def export_async(self, folder, keys: Optional[list[str]] = None, with_candidates: bool = True):
        """Export in a worker thread (hashing a long video and encoding PNGs never block the
        window); ``exported`` or an error dialog follows. Returns the job, or None."""
        plan = self._plan_export(folder, keys, with_candidates)
        if plan is None:
            return None
        work = FunctionJob(lambda report, cancel: write_export(plan), "The export", self)
        work.succeeded.connect(lambda res: self._finish_export(plan, res))
        work.failed.connect(lambda msg: self.show_error("Export", msg))
        work.finished.connect(self._export_ended)
        self._exporting = work
        self.act_export.setEnabled(False)
        self.set_status(f"Exporting {len(plan.keys)} sample(s)…")
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
            self.compare.opacity.setValue(int(s.value("compare/overlay_opacity", self.compare.opacity.value())))
        except (TypeError, ValueError):
            pass
        self._fill_recent()

    def save_settings(self) -> None:
        s = self.settings
        s.setValue("window/geometry", self.saveGeometry())
        s.setValue("window/state", self.saveState())
        s.setValue("compare/zoom", self.compare.zoom)
        s.setValue("compare/overlay_opacity", self.compare.opacity.value())
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
