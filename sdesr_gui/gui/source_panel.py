"""Source panel: the footage, a frame scrubber, detected faces and the selected aligned crop.

Nothing here decodes on the GUI thread: opening a file (a video may be decoded to the end to
count its frames) and reading a frame run in worker threads (:class:`FunctionJob`). One frame
read runs at a time; requests made meanwhile are coalesced, so only the last requested frame
is shown and stale results are dropped. A slow open or seek shows a busy bar, and a file
that cannot be read is one sentence (``errorOccurred``; ``openFailed`` for an open).
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Optional

import numpy as np
from PySide6.QtCore import Qt, QTimer, Signal
from PySide6.QtWidgets import (
    QFrame,
    QGridLayout,
    QHBoxLayout,
    QLabel,
    QListWidget,
    QListWidgetItem,
    QProgressBar,
    QSizePolicy,
    QSlider,
    QSpinBox,
    QStyle,
    QToolButton,
    QVBoxLayout,
    QWidget,
)

from ..core import selection as sel_mod
from ..core.errors import SdesrError, check_cancel
from ..core.faces import image_role
from ..core.media import check_media, open_media, source_kind
from .frame_view import FrameView
from .imaging import nearest_upscale, pixmap_from_rgb
from .worker import FunctionJob

DETECT_DELAY_MS = 180  # scrubbing settles this long before faces are detected
SEEK_COALESCE_MS = 30  # slider drags decode at most one frame per this interval
BUSY_DELAY_MS = 250  # a frame read taking longer than this shows the busy bar
SHUTDOWN_WAIT_MS = 10_000  # closing waits this long for each worker

#: Workers that outlived their panel (a read that cannot be cancelled was still running when the
#: window closed): kept referenced until they end, since destroying a running QThread aborts.
_ORPHANS: set = set()


def _fmt_time(t: float) -> str:
    m, s = divmod(max(t, 0.0), 60.0)
    return f"{int(m):02d}:{s:05.2f}"


class SourcePanel(QWidget):
    opened = Signal(str)
    openFailed = Signal(str)  # one sentence (errorOccurred carries it too)
    frameChanged = Signal(int)
    selectionChanged = Signal(object)  # FaceSelection or None
    detectionFinished = Signal(int, int)  # frame, number of faces
    errorOccurred = Signal(str)
    statusMessage = Signal(str)
    boxFaceChecked = Signal(bool)  # a hand-drawn box's crop was searched for a face: found?

    def __init__(self, parent=None):
        super().__init__(parent)
        self.source = None
        self.path: Optional[Path] = None
        self.frame_index = 0
        self.image: Optional[np.ndarray] = None
        self.faces: list = []
        self.detected_frame: Optional[int] = None
        self.manual_box: Optional[tuple] = None
        self.selection: Optional[sel_mod.FaceSelection] = None
        self._sel_key: Optional[tuple] = None
        self._prev_box: Optional[tuple] = None
        self._detect_job: Optional[FunctionJob] = None
        self._detect_pending: Optional[int] = None
        self._jobs: set = set()
        self.opening: Optional[Path] = None  # the file being opened in a worker
        self._open_job: Optional[FunctionJob] = None
        self._open_gen = 0  # counts open requests: a superseded open's result is dropped
        self._source_gen = 0  # the open request the current source came from
        self._read_job: Optional[FunctionJob] = None  # the one frame read in flight
        self._wanted: Optional[int] = None  # the frame to show next (the latest request)
        self._read_index = 0  # the frame the read in flight decodes
        self._shut = False

        self.view = FrameView()
        # what was done to the input on opening that the analyst should know (e.g. transparency
        # filled with mid-grey): stays while the file is open, unlike the status bar
        self.source_note = QLabel("")
        self.source_note.setWordWrap(True)
        self.source_note.setSizePolicy(QSizePolicy.Policy.Ignored, QSizePolicy.Policy.Preferred)
        self.source_note.setStyleSheet("QLabel { background: palette(alternate-base); border: 1px solid palette(mid);"
                                       " border-radius: 3px; padding: 3px; }")
        self.source_note.setVisible(False)
        self.view.faceClicked.connect(self._on_view_click)
        self.view.boxDrawn.connect(self.set_manual_box)
        self.view.pointClicked.connect(self._on_eye_click)
        self.eye_points: list[tuple[float, float]] = []
        self.source_notes: list[str] = []
        # hand-drawn boxes whose crop is (being) searched for a face, (frame, box) -> "pending" |
        # "face" | "none" | "kept" (no face, used as the reference HR anyway); cleared with the
        # frame's faces
        self._box_verdicts: dict[tuple, str] = {}
        self._box_job: Optional[FunctionJob] = None

        # scrubber
        st = self.style()
        self._icons = {k: st.standardIcon(v) for k, v in (
            ("prev", QStyle.StandardPixmap.SP_MediaSkipBackward), ("next", QStyle.StandardPixmap.SP_MediaSkipForward),
            ("play", QStyle.StandardPixmap.SP_MediaPlay), ("pause", QStyle.StandardPixmap.SP_MediaPause))}
        self.prev_btn = QToolButton(toolTip="Previous frame (,)")
        self.prev_btn.setIcon(self._icons["prev"])
        self.play_btn = QToolButton(toolTip="Play / pause (Ctrl+P)", checkable=True)
        self.play_btn.setIcon(self._icons["play"])
        self.next_btn = QToolButton(toolTip="Next frame (.)")
        self.next_btn.setIcon(self._icons["next"])
        self.slider = QSlider(Qt.Orientation.Horizontal)
        self.slider.setToolTip("Frame")
        self.spin = QSpinBox()
        self.spin.setToolTip("Frame number (0-based)")
        self.spin.setKeyboardTracking(False)
        self.time_label = QLabel("")
        self.time_label.setMinimumWidth(90)
        self.prev_btn.clicked.connect(self.step_back)
        self.next_btn.clicked.connect(self.step_forward)
        self.play_btn.toggled.connect(self._on_play_toggled)
        self.slider.valueChanged.connect(self._request_frame)
        self.spin.valueChanged.connect(self.set_frame)
        buttons = QHBoxLayout()
        for w in (self.prev_btn, self.play_btn, self.next_btn):
            buttons.addWidget(w)
        buttons.addWidget(QLabel("Frame"))
        buttons.addWidget(self.spin)
        buttons.addWidget(self.time_label, 1)
        scrub = QVBoxLayout()
        scrub.addWidget(self.slider)
        scrub.addLayout(buttons)
        self.scrubber = QWidget()
        self.scrubber.setLayout(scrub)
        scrub.setContentsMargins(0, 0, 0, 0)

        self.play_timer = QTimer(self)
        self.play_timer.timeout.connect(self._play_tick)
        self.seek_timer = QTimer(self, singleShot=True, interval=SEEK_COALESCE_MS)
        self.seek_timer.timeout.connect(lambda: self.set_frame(self._pending_frame))
        self._pending_frame = 0
        self.detect_timer = QTimer(self, singleShot=True, interval=DETECT_DELAY_MS)
        self.detect_timer.timeout.connect(self._detect_now)
        self.busy_timer = QTimer(self, singleShot=True, interval=BUSY_DELAY_MS)
        self.busy_timer.timeout.connect(self._update_busy)

        # "opening…" / "decoding frame…" while a worker reads the file
        self.busy_label = QLabel("")
        self.busy_bar = QProgressBar()
        self.busy_bar.setRange(0, 0)  # busy: how long an open takes is not known
        self.busy_bar.setTextVisible(False)
        self.busy_bar.setMaximumHeight(10)
        busy_row = QHBoxLayout()
        busy_row.setContentsMargins(0, 0, 0, 0)
        busy_row.addWidget(self.busy_label)
        busy_row.addWidget(self.busy_bar, 1)
        self.busy = QWidget()
        self.busy.setLayout(busy_row)
        self.busy.setVisible(False)

        # faces and crop
        self.face_list = QListWidget()
        self.face_list.setMaximumHeight(96)
        self.face_list.setToolTip("Faces in this frame: detected, hand-drawn, or the whole image")
        self.face_list.currentRowChanged.connect(self._on_list_row)
        self.crop_label = QLabel()
        self.lr_label = QLabel()
        for lab in (self.crop_label, self.lr_label):
            lab.setFixedSize(128, 128)
            lab.setFrameShape(QFrame.Shape.StyledPanel)
            lab.setAlignment(Qt.AlignmentFlag.AlignCenter)
        self.crop_caption = QLabel("Aligned crop 128×128")
        self.lr_caption = QLabel("LR input 16×16 (nearest ×8)")
        self.note_label = QLabel("")
        self.note_label.setWordWrap(True)
        self.note_label.setSizePolicy(QSizePolicy.Policy.Ignored, QSizePolicy.Policy.Preferred)
        crops = QGridLayout()
        crops.addWidget(self.crop_caption, 0, 0)
        crops.addWidget(self.lr_caption, 0, 1)
        crops.addWidget(self.crop_label, 1, 0)
        crops.addWidget(self.lr_label, 1, 1)
        crops.addWidget(self.note_label, 2, 0, 1, 2)
        crops.setColumnStretch(2, 1)

        lay = QVBoxLayout(self)
        lay.addWidget(self.view, 1)
        lay.addWidget(self.source_note)
        lay.addWidget(self.busy)
        lay.addWidget(self.scrubber)
        self.eyes_btn = QToolButton(text="Click eyes", checkable=True)
        self.eyes_btn.setToolTip("Align by the eyes: click the face's two eyes (fixes tilt and scale; "
                                 "refines a hand-drawn box)")
        self.eyes_btn.toggled.connect(self._on_eye_mode)
        faces_row = QHBoxLayout()
        faces_row.addWidget(QLabel("Faces  <small>(click a box · drag to draw one)</small>"), 1)
        faces_row.addWidget(self.eyes_btn)
        lay.addLayout(faces_row)
        lay.addWidget(self.face_list)
        lay.addLayout(crops)
        self._set_scrub_enabled(False)
        self._show_selection(None)

    # ---------------------------------------------------------------- opening
    def open_path(self, path) -> bool:
        """Start opening a still or video in a worker; False (and ``errorOccurred`` with one
        sentence) when the file fails the cheap checks (missing, empty, unreadable). Otherwise
        ``opened`` follows, or ``errorOccurred`` and ``openFailed`` for a file that cannot be decoded."""
        try:
            p = check_media(path)
        except SdesrError as e:
            self._open_failed(str(e))
            return False
        self._open_gen += 1
        gen = self._open_gen
        if self._open_job is not None:
            self._open_job.cancel()  # superseded: stop counting its frames
        self.stop()
        self.opening = p

        def work(report, cancel):
            src = open_media(p, cancel=cancel)
            try:
                first = src.frame(0)
                check_cancel(cancel)  # superseded meanwhile: nobody takes the source
            except BaseException:
                src.close()
                raise
            return src, first

        job = FunctionJob(work, "Opening the file", self)
        job.succeeded.connect(lambda res, g=gen: self._on_open_done(g, res))
        job.failed.connect(lambda msg, g=gen: self._on_open_error(g, msg))
        job.finished.connect(lambda j=job: self._on_open_job_finished(j))
        self._open_job = job
        self._start(job)
        self._set_busy(f"Opening {p.name}…")
        self.statusMessage.emit(f"Opening {p.name}…")
        return True

    @property
    def is_busy(self) -> bool:
        """True while a file is being opened or a frame read (the busy bar may not show yet)."""
        return self.opening is not None or self._read_job is not None

    def _start(self, job) -> None:
        self._jobs.add(job)
        job.start()

    def _open_failed(self, msg: str) -> None:
        self.errorOccurred.emit(msg)
        self.openFailed.emit(msg)

    def _on_open_error(self, gen: int, msg: str) -> None:
        if gen != self._open_gen:
            return  # superseded by a later open
        self.opening = None
        self._update_busy()
        self._open_failed(msg)

    def _on_open_job_finished(self, job) -> None:
        self._jobs.discard(job)
        if job is self._open_job:
            self._open_job = None
        job.deleteLater()

    def _close_later(self, src) -> None:
        """Close a source in a worker: a frame read in flight holds its lock."""
        if src is None or not hasattr(src, "close"):
            return
        if self._shut:  # closing the window: no new threads
            src.close()
            return
        job = FunctionJob(lambda report, cancel: src.close(), "Closing the file", self)
        job.finished.connect(lambda j=job: (self._jobs.discard(j), j.deleteLater()))
        self._start(job)

    def _on_open_done(self, gen: int, result) -> None:
        src, first = result
        if gen != self._open_gen:  # superseded by a later open
            self._close_later(src)
            return
        self.opening = None
        self._update_busy()
        self.stop()
        self._close_later(self.source)
        self.source = src
        self._source_gen = gen
        self._wanted = None
        self.path = Path(getattr(src, "path", "")).expanduser().absolute()
        n = int(src.frame_count)
        for w in (self.slider, self.spin):
            w.blockSignals(True)
            w.setRange(0, max(n - 1, 0))
            w.setValue(0)
            w.blockSignals(False)
        self._set_scrub_enabled(n > 1)
        self.set_source_notes(getattr(src, "notes", ()))
        self.frame_index = -1
        self._prev_box = None
        self._clear_faces()
        self.opened.emit(str(self.path))
        self._show_frame(0, first)

    def set_source_notes(self, notes) -> None:
        """Show what opening the file changed (one sentence each); hidden when there is nothing."""
        notes = [str(n) for n in notes]
        self.source_notes = notes
        self.source_note.setText("\n".join(f"Note: {n}" for n in notes))
        self.source_note.setToolTip("How the file was read; the file itself is not changed." if notes else "")
        self.source_note.setVisible(bool(notes))

    @property
    def frame_count(self) -> int:
        return int(self.source.frame_count) if self.source is not None else 0

    @property
    def kind(self) -> str:
        return source_kind(self.source) if self.source is not None else ""

    def source_info(self) -> dict:
        """Size, fps and frame count of the open input (for the run record)."""
        src = self.source
        info = dict(src.info()) if callable(getattr(src, "info", None)) else {}
        return {k: v for k, v in info.items() if k not in ("path", "kind")}

    def frame_info(self) -> dict:
        if self.source is None:
            return {}
        d = {"index": int(self.frame_index), "count": self.frame_count}
        if self.kind == "video":
            d["timestamp_s"] = round(float(self.source.timestamp(self.frame_index)), 4)
            d["fps"] = float(getattr(self.source, "fps", 0.0) or 0.0)
        return d

    # ---------------------------------------------------------------- frames
    def _set_scrub_enabled(self, on: bool) -> None:
        for w in (self.prev_btn, self.play_btn, self.next_btn, self.slider, self.spin):
            w.setEnabled(on)
        self.scrubber.setVisible(on or self.source is None)

    def set_frame(self, i: int) -> None:
        """Show frame ``i``; it is read in a worker. While a read is in flight only the latest
        request is remembered, and a result that is no longer wanted is dropped."""
        if self.source is None:
            return
        i = int(min(max(i, 0), self.frame_count - 1))
        self._wanted = i
        if self._read_job is not None:
            return  # read when the one in flight ends
        if i == self.frame_index:
            self._wanted = None
            return
        self._start_read(i)

    def _start_read(self, i: int) -> None:
        src, gen = self.source, self._source_gen

        def work(report, cancel):
            return src.frame(i)

        job = FunctionJob(work, "Reading the frame", self)
        job.succeeded.connect(lambda img, g=gen, i=i: self._on_frame_read(g, i, img))
        job.failed.connect(lambda msg, g=gen, i=i: self._on_read_failed(g, i, msg))
        job.finished.connect(lambda j=job: self._on_read_job_finished(j))
        self._read_job = job
        self._read_index = i
        self._start(job)
        if not self.busy.isHidden():
            self._update_busy()  # already slow: say which frame now
        else:
            self.busy_timer.start()

    def _on_frame_read(self, gen: int, i: int, img) -> None:
        if gen != self._source_gen or self._wanted not in (None, i):
            return  # another file, or the user moved on: a newer request follows
        self._wanted = None
        self._show_frame(i, img)

    def _on_read_failed(self, gen: int, i: int, msg: str) -> None:
        if gen != self._source_gen or self._wanted not in (None, i):
            return  # the user has moved on: the frame is no longer wanted
        self._wanted = None
        self.stop()
        self.errorOccurred.emit(msg)

    def _on_read_job_finished(self, job) -> None:
        self._jobs.discard(job)
        job.deleteLater()
        if job is not self._read_job:
            return
        self._read_job = None
        if self._shut:
            return
        w = self._wanted
        if w is not None and self.source is not None and 0 <= w < self.frame_count and w != self.frame_index:
            self._start_read(w)
        else:
            self._wanted = None
            self.busy_timer.stop()
            self._update_busy()

    def _set_busy(self, text: str) -> None:
        self.busy_label.setText(text)
        self.busy.setVisible(True)

    def _update_busy(self) -> None:
        """The busy bar: while opening, and while a frame read takes longer than BUSY_DELAY_MS."""
        if self.opening is not None:
            self._set_busy(f"Opening {self.opening.name}…")
        elif self._read_job is not None and not self.busy_timer.isActive():
            self._set_busy(f"Decoding frame {self._read_index}…")
        else:
            self.busy.setVisible(False)

    def _show_frame(self, i: int, img: np.ndarray) -> None:
        """Show frame ``i`` (already decoded) and schedule face detection on it."""
        self.frame_index = i
        self.image = img
        for w in (self.slider, self.spin):
            if w.value() != i and not (w is self.slider and self.slider.isSliderDown()):
                w.blockSignals(True)
                w.setValue(i)
                w.blockSignals(False)
        if self.kind == "video":
            total = self.source.timestamp(self.frame_count - 1) if self.frame_count else 0.0
            self.time_label.setText(f"{_fmt_time(self.source.timestamp(i))} / {_fmt_time(total)}")
        else:
            self.time_label.setText("still image")
        self.view.set_image(img, keep_view=True)
        if self.selection is not None and self.selection.box is not None:
            self._prev_box = self.selection.box
        self._clear_faces()
        self.frameChanged.emit(i)
        if self.play_timer.isActive():
            return  # detect when playback stops
        self.detect_timer.start()

    def _request_frame(self, i: int) -> None:
        """Slider moves: decode only the latest position (seeking in long videos can be slow)."""
        self._pending_frame = int(i)
        if not self.seek_timer.isActive():
            self.seek_timer.start()

    def _target(self) -> int:
        """The frame being shown, or the one asked for last while it is read."""
        return self._wanted if self._wanted is not None else self.frame_index

    def step_back(self) -> None:
        self.set_frame(self._target() - 1)

    def step_forward(self) -> None:
        self.set_frame(self._target() + 1)

    def play(self) -> None:
        if self.frame_count > 1:
            self.play_btn.setChecked(True)

    def stop(self) -> None:
        self.play_btn.setChecked(False)

    def _on_play_toggled(self, on: bool) -> None:
        self.play_btn.setIcon(self._icons["pause" if on else "play"])
        if on:
            fps = float(getattr(self.source, "fps", 0.0) or 25.0)
            if self.frame_index >= self.frame_count - 1:
                self.set_frame(0)
            self.play_timer.start(int(max(15, 1000.0 / min(max(fps, 1.0), 60.0))))
        else:
            self.play_timer.stop()
            if self.source is not None and self.detected_frame != self.frame_index:
                self.detect_timer.start()

    def _play_tick(self) -> None:
        if self._read_job is not None:
            return  # decoding is slower than the frame rate: play as fast as it goes
        if self.frame_index >= self.frame_count - 1:
            self.stop()
            return
        self.set_frame(self.frame_index + 1)

    # ---------------------------------------------------------------- detection
    def _detect_now(self) -> None:
        if self.image is None:
            return
        if self._detect_job is not None and self._detect_job.isRunning():
            self._detect_pending = self.frame_index
            self._detect_job.cancel()  # a stale frame: stop its tiled pass early
            return
        frame, image = self.frame_index, self.image
        self.statusMessage.emit(f"Detecting faces in frame {frame}…")

        def work(report, cancel):
            from ..core import faces

            find = getattr(faces, "detect_faces_in_frame", None)  # small faces in large frames
            return frame, (find(image, cancel=cancel) if find else faces.detect_faces(image))

        job = FunctionJob(work, "Face detection", self)
        job.succeeded.connect(self._on_detected)
        job.failed.connect(self._on_detect_failed)
        job.finished.connect(lambda j=job: self._on_detect_job_finished(j))
        self._detect_job = job
        self._jobs.add(job)
        job.start()

    def _on_detect_job_finished(self, job) -> None:
        self._jobs.discard(job)
        if job is self._detect_job:
            self._detect_job = None
        job.deleteLater()
        if self._detect_pending is not None:
            self._detect_pending = None
            if self.detected_frame != self.frame_index:
                self._detect_now()

    def _on_detect_failed(self, msg: str) -> None:
        self.errorOccurred.emit(msg)

    def _on_detected(self, result) -> None:
        frame, found = result
        if frame != self.frame_index or self.image is None:
            return  # stale: the user moved on
        self.faces = list(found)
        self.detected_frame = frame
        self.view.set_boxes([(f.box, f"{f.prob:.3f}") for f in self.faces])
        self._fill_list()
        n = len(self.faces)
        self.statusMessage.emit(f"Frame {frame}: {n} face{'s' if n != 1 else ''} detected"
                                + ("" if n else " — draw a box by hand around the face"))
        if self.selection is None or self.selection.frame_index != frame:
            self._auto_select()
        self.detectionFinished.emit(frame, n)

    def _auto_select(self) -> None:
        if self.faces:
            idx = 0
            if self._prev_box is not None:  # follow the face the analyst had selected
                px = (self._prev_box[0] + self._prev_box[2]) / 2
                py = (self._prev_box[1] + self._prev_box[3]) / 2
                idx = int(np.argmin([((f.box[0] + f.box[2]) / 2 - px) ** 2 + ((f.box[1] + f.box[3]) / 2 - py) ** 2
                                     for f in self.faces]))
            self.select_face(idx)
        elif self.image is not None and sel_mod.whole_image(self.image) is not None:
            self.select_whole_image()
        else:
            self._show_selection(None)

    # ---------------------------------------------------------------- selection
    def _clear_faces(self) -> None:
        had_selection = self.selection is not None
        self.faces = []
        self.detected_frame = None
        self.manual_box = None
        self._box_verdicts = {}
        self.eye_points = []
        self.view.set_points([])
        if self.eyes_btn.isChecked():
            self.eyes_btn.setChecked(False)
        self.view.set_boxes([])
        self.view.set_manual_box(None)
        self.view.set_selected(None)
        self._sel_key = None
        self.selection = None
        self._fill_list()
        self._show_selection(None)
        if had_selection:  # the face belonged to the previous frame
            self.selectionChanged.emit(None)

    def _fill_list(self) -> None:
        self.face_list.blockSignals(True)
        self.face_list.clear()
        self._rows: list[tuple] = []
        for i, f in enumerate(self.faces):
            item = QListWidgetItem(f"Face {i + 1} · p = {f.prob:.3f} · {f.width:.0f}×{f.height:.0f} px")
            self.face_list.addItem(item)
            self._rows.append(("det", i))
        if self.manual_box is not None:
            b = self.manual_box
            self.face_list.addItem(f"Hand-drawn box · {b[2] - b[0]:.0f}×{b[3] - b[1]:.0f} px")
            self._rows.append(("manual",))
        if len(self.eye_points) == 2:
            self.face_list.addItem("Aligned by eye clicks" + (" in the hand-drawn box" if self.manual_box else ""))
            self._rows.append(("eyes",))
        if self.image is not None:
            role = image_role(self.image)
            if role == "frame":
                self.face_list.addItem("Whole image as an aligned face frame (128×128)")
                self._rows.append(("whole",))
            elif role == "lr" or image_role(self.image, 128, 8) == "lr":
                n = self.image.shape[0]
                self.face_list.addItem(f"Whole image as the LR input ({n}×{n})"
                                       + (", for the 16× model" if n == 8 else ""))
                self._rows.append(("whole",))
        if self._sel_key in self._rows:
            self.face_list.setCurrentRow(self._rows.index(self._sel_key))
        self.face_list.blockSignals(False)

    def _on_list_row(self, row: int) -> None:
        if 0 <= row < len(getattr(self, "_rows", [])):
            key = self._rows[row]
            if key[0] == "det":
                self.select_face(key[1])
            elif key[0] == "manual":
                self._select_manual()
            elif key[0] == "eyes":
                self._select_eyes()
            else:
                self.select_whole_image()

    def _on_view_click(self, idx: int) -> None:
        if idx == -1:
            self._select_manual()
        else:
            self.select_face(idx)

    def select_face(self, idx: int) -> None:
        if not 0 <= idx < len(self.faces) or self.image is None:
            return
        self._apply(("det", idx), sel_mod.from_detection(self.image, self.faces[idx], self.frame_index), idx)

    def set_manual_box(self, box) -> None:
        if self.image is None:
            return
        self.manual_box = tuple(float(v) for v in box)
        self.view.set_manual_box(self.manual_box)
        self._sel_key = None
        self._fill_list()
        self._select_manual()

    def _select_manual(self) -> None:
        if self.manual_box is None or self.image is None:
            return
        s = sel_mod.from_box(self.image, self.manual_box, self.frame_index)
        key = (self.frame_index, self.manual_box)
        verdict = self._box_verdicts.get(key)
        if s.reference is not None and verdict == "none":
            s = sel_mod.without_reference(s)
        elif s.reference is not None and verdict == "kept":
            s = dataclasses.replace(s, note=sel_mod.NO_FACE_KEPT_NOTE, details={**s.details, "face_in_box": False})
        self._apply(("manual",), s, -1)
        if s.reference is not None and verdict is None:
            self._check_box_face(key, s.crop)

    def _check_box_face(self, key: tuple, crop: np.ndarray) -> None:
        """Look for a face in a hand-drawn box's crop (MTCNN, in a worker) before it counts as a
        reference HR; with none, the selection loses its reference and ``boxFaceChecked(False)``
        lets the window ask whether to use it anyway (:meth:`keep_box_as_reference`)."""
        self._box_verdicts[key] = "pending"
        self.statusMessage.emit("Looking for a face in the drawn box…")

        def work(report, cancel):
            return sel_mod.crop_has_face(crop)

        job = FunctionJob(work, "Face check of the drawn box", self)
        job.succeeded.connect(lambda found, k=key: self._on_box_checked(k, bool(found)))
        job.failed.connect(lambda msg, k=key: (self._box_verdicts.pop(k, None), self.errorOccurred.emit(msg)))
        job.finished.connect(lambda j=job: self._on_box_job_finished(j))
        self._box_job = job
        self._start(job)

    def _on_box_job_finished(self, job) -> None:
        self._jobs.discard(job)
        if job is self._box_job:
            self._box_job = None
        job.deleteLater()

    def _on_box_checked(self, key: tuple, found: bool) -> None:
        if self._box_verdicts.get(key) != "pending":
            return  # another frame since: the box (and its verdict) is gone
        self._box_verdicts[key] = "face" if found else "none"
        if not found and self._sel_key == ("manual",) and (self.frame_index, self.manual_box) == key:
            self._select_manual()  # still the shown selection: without its reference now
        if found:
            self.statusMessage.emit("A face was found in the drawn box.")
        self.boxFaceChecked.emit(found)

    def keep_box_as_reference(self) -> None:
        """The analyst's answer to "use it anyway?": the box's crop (no face found) is the
        reference HR after all; the selection's note and record say so."""
        key = (self.frame_index, self.manual_box)
        if self.manual_box is None or self._box_verdicts.get(key) != "none":
            return
        self._box_verdicts[key] = "kept"
        if self._sel_key == ("manual",):
            self._select_manual()

    def _on_eye_mode(self, on: bool) -> None:
        self.view.set_eye_mode(on)
        if on:
            self.eye_points = []
            self.view.set_points([])
            self.statusMessage.emit("Click the centre of one eye, then the other.")

    def _on_eye_click(self, x: float, y: float) -> None:
        if not self.eyes_btn.isChecked():
            return
        self.eye_points.append((x, y))
        self.view.set_points(self.eye_points)
        if len(self.eye_points) == 2:
            self.eyes_btn.setChecked(False)
            self.set_eyes(self.eye_points)

    def set_eyes(self, points) -> None:
        """Align by two eye positions (image pixels), inside the hand-drawn box if there is one."""
        if self.image is None:
            return
        self.eye_points = [tuple(map(float, p)) for p in points][:2]
        self.view.set_points(self.eye_points)
        self._sel_key = None
        self._fill_list()
        self._select_eyes()

    def _select_eyes(self) -> None:
        if len(self.eye_points) != 2 or self.image is None:
            return
        try:
            s = sel_mod.from_eyes(self.image, self.eye_points, box=self.manual_box, frame_index=self.frame_index)
        except ValueError as e:  # e.g. both clicks on one spot
            self.errorOccurred.emit(f"The eye clicks cannot align the face ({e}); click the two eyes again.")
            return
        self._apply(("eyes",), s, -1 if self.manual_box is not None else None)

    def select_whole_image(self) -> None:
        if self.image is None:
            return
        s = sel_mod.whole_image(self.image, self.frame_index)
        if s is not None:
            self._apply(("whole",), s, None)

    def _apply(self, key, selection, view_index) -> None:
        self._sel_key = key
        self.selection = selection
        self.view.set_selected(view_index)
        rows = getattr(self, "_rows", [])
        if key in rows:
            self.face_list.blockSignals(True)
            self.face_list.setCurrentRow(rows.index(key))
            self.face_list.blockSignals(False)
        self._show_selection(selection)
        self.selectionChanged.emit(selection)

    def _show_selection(self, s) -> None:
        if s is None:
            self.crop_label.setPixmap(pixmap_from_rgb(np.full((128, 128, 3), 40, np.uint8)))
            self.lr_label.setPixmap(pixmap_from_rgb(np.full((128, 128, 3), 40, np.uint8)))
            self.note_label.setText("No face selected." if self.source is not None else "")
            return
        if s.crop is not None:
            self.crop_label.setPixmap(pixmap_from_rgb(s.crop))
        else:
            self.crop_label.setPixmap(pixmap_from_rgb(np.full((128, 128, 3), 40, np.uint8)))
        self.lr_label.setPixmap(pixmap_from_rgb(nearest_upscale(s.lr, 128)))
        n = int(s.lr.shape[0])
        self.lr_caption.setText(f"LR input {n}×{n} (nearest ×{128 // n})")
        self.note_label.setText(s.note)

    # ---------------------------------------------------------------- lifecycle
    def shutdown(self) -> None:
        self.stop()
        self.detect_timer.stop()
        self.busy_timer.stop()
        self._shut = True
        self._open_gen += 1  # whatever is still opening or reading is dropped
        self._source_gen = -1
        self._wanted = None
        for job in list(self._jobs):
            job.cancel()
            if not job.wait(SHUTDOWN_WAIT_MS):
                job.setParent(None)
                _ORPHANS.add(job)
                job.finished.connect(lambda j=job: _ORPHANS.discard(j))
        if self.source is not None and hasattr(self.source, "close"):
            self.source.close()
